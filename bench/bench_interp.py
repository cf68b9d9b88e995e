"""Interpreter throughput against numpy's own bitwise limit.

Builds a dense micro-program of AND/NAND/MAJ3/OR gates as .cram text, runs it
through the normal parse -> verify -> run path on 256 arrays x 256 rows, and
prints row-level gate evaluations per second, fault-free and at a gate error
rate p, beside numpy's own AND + popcount throughput on the same amount of
data measured in the same process:

    numpy limit = np.bitwise_and(a, b, out=c); np.bitwise_count(c, out=n)

on two uint64 arrays that hold exactly the bits one gate instruction touches
(arrays x rows x lanes), repeated once per gate instruction the program runs,
expressed as row-level bit evaluations per second.  That is the ceiling for
any interpreter that issues at least one vector operation per instruction; the
ratios say how close the interpreter gets to it.

Single-lane (one sample) is the honest default; ``--lanes 1 8`` also measures
with 8 sample lanes side by side (more data per vector operation), labelled.

Then, unless ``--no-resnet50``, the wall and CPU time of a fault-free
gate-level run of light ResNet-50 (onnx/backend/test/data/light of the
installed onnx, compiled with the default options: no calibration data, the
default 1024-array chip, time-multiplexed layers) on one input, its first
embedded validation input, checked against the embedded onnxruntime output
(target: under 10 minutes).

    python bench/bench_interp.py [--arrays 256] [--rows 256] [--gates 64] [--reps 64] [--p 1e-3] [--no-resnet50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cramc.errmodel import FaultModel
from cramc.isa.parser import parse
from cramc.isa.verifier import Linked, verify
from cramc.sim.interp import RunResult, run

TARGET_FAULT_FREE = 0.5
TARGET_FAULTY = 0.5
TARGET_RESNET_S = 600.0
GATE_MIX = (("and", 2), ("nand", 2), ("maj3", 3), ("or", 2))
STATE = 8  # columns of initial data
WINDOW = 16  # a gate reads among the last WINDOW written columns: a dependent chain
OUT_COLS = 48  # gate outputs rotate over this many columns


def program_text(arrays: int, rows: int, gates: int, reps: int, seed: int = 1) -> str:
    """The benchmark program: `reps` calls of a micro-program of `gates` gates on every array."""
    rng = np.random.default_rng(seed)
    body: list[str] = []
    written = list(range(STATE))
    for k in range(gates):
        mn, n_in = GATE_MIX[k % len(GATE_MIX)]
        dst = STATE + k % OUT_COLS
        pool = [c for c in written[-WINDOW:] if c != dst]
        srcs = rng.choice(pool, size=n_in, replace=False)
        body.append(f"  {mn} x+{dst}, " + ", ".join(f"x+{int(s)}" for s in srcs))
        if dst in written:
            written.remove(dst)
        written.append(dst)
    last = written[-1]
    cols = STATE + OUT_COLS
    return "\n".join(
        [
            f"; bench_interp: {reps} x {gates} gates on {arrays} arrays x {rows} rows",
            f".machine arrays={arrays} rows={rows} cols={cols} accs=1",
            f".output y : i64[{arrays},1]",
            f".input x : u8[1,{rows},{STATE}]",
            "",
            ".micro dense(col x) {",
            *body,
            "}",
            "",
            ".init {",
            f"  wr @0:{arrays} c0, %x bits=1",
            "}",
            "",
            ".main {",
            f"  repeat i {reps} {{",
            f"    call @0:{arrays} dense x=c0",
            "  }",
            f"  aclr @0:{arrays} acc0",
            f"  tadd @0:{arrays} acc0, c{last}, 0",
            f"  ard @0:{arrays} %y, acc0",
            "}",
            "",
        ]
    )


def numpy_and_popcount(arrays: int, rows: int, lanes: int, calls: int) -> Callable[[], None]:
    """`calls` rounds of np.bitwise_and + np.bitwise_count on one gate's worth of uint64 words."""
    words = arrays * lanes * ((rows + 63) // 64)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=words, dtype=np.uint64)
    b = rng.integers(0, 2**63, size=words, dtype=np.uint64)
    c = np.empty_like(a)
    n = np.empty(words, dtype=np.uint8)

    def loop() -> None:
        for _ in range(calls):
            np.bitwise_and(a, b, out=c)
            np.bitwise_count(c, out=n)

    return loop


def program_run(
    results: dict[str, RunResult], name: str, linked: Linked, inputs: dict[str, np.ndarray], fm: FaultModel, lanes: int
) -> Callable[[], None]:
    """One run of the program through cramc.sim.interp.run, its result kept under `name`."""

    def go() -> None:
        results[name] = run(linked, dict(inputs), fm, seed=0, lanes=lanes)

    return go


def interleaved_best(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each function, timed round-robin so that machine noise hits all alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", type=int, default=256)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--gates", type=int, default=64, help="gates in the micro-program body")
    ap.add_argument("--reps", type=int, default=64, help="calls of the micro-program")
    ap.add_argument("--p", type=float, default=1e-3, help="gate error rate of the faulty run")
    ap.add_argument("--lanes", type=int, nargs="+", default=[1], help="sample lanes to measure (1 = honest default)")
    ap.add_argument("--repeat", type=int, default=5, help="timing repeats (best of)")
    ap.add_argument("--no-resnet50", action="store_true", help="skip the light ResNet-50 run (about 2 minutes)")
    args = ap.parse_args()

    text = program_text(args.arrays, args.rows, args.gates, args.reps)
    t0 = time.perf_counter()
    linked = verify(parse(text, "<bench>"))
    t_front = time.perf_counter() - t0
    print(
        f"program: {args.reps} calls x {args.gates} gates ({', '.join(m for m, _ in GATE_MIX)}) "
        f"on {args.arrays} arrays x {args.rows} rows; parse+verify {t_front * 1e3:.1f} ms"
    )
    print(f"numpy {np.__version__}")

    for lanes in args.lanes:
        label = "single lane" if lanes == 1 else f"{lanes} sample lanes"
        inputs = {"x": np.random.default_rng(2).integers(0, 2, size=(lanes, 1, args.rows, STATE), dtype=np.uint8)}
        faulty = FaultModel.uniform(args.p)
        results: dict[str, RunResult] = {}
        instrs = args.gates * args.reps
        t = interleaved_best(
            {
                "ff": program_run(results, "ff", linked, inputs, FaultModel(), lanes),
                "p": program_run(results, "p", linked, inputs, faulty, lanes),
                "numpy": numpy_and_popcount(args.arrays, args.rows, lanes, instrs),
            },
            args.repeat,
        )
        evals = results["ff"].counts.gate_evals
        nfaults = results["p"].counts.faults_injected
        assert results["p"].counts.gate_evals == evals
        lim = instrs * args.arrays * args.rows * lanes / t["numpy"]
        r_ff, r_p = evals / t["ff"], evals / t["p"]
        print(f"\n[{label}] {instrs} gate instructions, {evals:.3e} row-level gate evaluations per run")
        print(
            f"  interpreter fault-free : {r_ff:.3e} gate evals/s  ({t['ff'] * 1e6 / instrs:.2f} us per gate "
            "instruction)"
        )
        print(
            f"  interpreter p={args.p:g}   : {r_p:.3e} gate evals/s  ({t['p'] * 1e6 / instrs:.2f} us per gate "
            f"instruction, {nfaults} faults, {nfaults / evals:.2e} per eval)"
        )
        print(
            f"  numpy AND+popcount     : {lim:.3e} bit evals/s  ({t['numpy'] * 1e6 / instrs:.2f} us per call "
            f"pair on {args.arrays * lanes * ((args.rows + 63) // 64)} words, {instrs} calls)"
        )
        print(f"  ratio fault-free: {r_ff / lim:.3f} (target {TARGET_FAULT_FREE})")
        print(f"  ratio p={args.p:g}: {r_p / lim:.3f} (target {TARGET_FAULTY})")

    if not args.no_resnet50:
        resnet50_one_input()


def resnet50_one_input() -> None:
    """Compile light ResNet-50 (subprocess), then time a fault-free gate-level run on one input, in-process."""
    import onnx

    from cramc.isa.parser import parse_file
    from cramc.sim.report import compare

    model = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    print(f"\n[light ResNet-50] {model}")
    with tempfile.TemporaryDirectory() as tmp:
        prog = Path(tmp) / "light_resnet50.cram"
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "cramc.cli", "compile", str(model), "-o", str(prog), "--no-trace"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"compile failed: {done.stderr.strip()}")
        print(f"  compiled in {time.perf_counter() - t0:.1f} s: {done.stdout.strip()}")
        linked = verify(parse_file(str(prog)))
    assert linked.expect is not None
    one = {k: v[:1] for k, v in linked.expect.inputs.items()}
    t0, c0 = time.perf_counter(), os.times()
    res = run(linked, one, FaultModel(), seed=0)
    wall, c1 = time.perf_counter() - t0, os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    for o in linked.outputs:
        c = compare(o.name, res.outputs[o.name], linked.expect.outputs[o.name][:1], linked.expect.tol)
        verdict = "match" if c.ok else f"{c.elements - c.within_tol} of {c.elements} outside tol"
        print(f"  output {o.name}: {c.elements} elements, max |diff| {c.max_abs_diff:.3g} (tol {c.tol:.3g}): {verdict}")
    print(
        f"  gate-level run on one input: {wall:.1f} s wall, {cpu:.1f} s CPU, {res.counts.gate_evals:.3e} gate evals "
        f"(target {TARGET_RESNET_S:.0f} s; ratio {wall / TARGET_RESNET_S:.2f})"
    )


if __name__ == "__main__":
    main()
