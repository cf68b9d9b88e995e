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

    python bench/bench_interp.py [--arrays 256] [--rows 256] [--gates 64] [--reps 64] [--p 1e-3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cramc.isa.parser import parse
from cramc.isa.verifier import Linked, verify
from cramc.sim.faults import FaultModel
from cramc.sim.interp import run

TARGET_FAULT_FREE = 0.25
TARGET_FAULTY = 0.2
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


def best_of(fn, repeat: int) -> float:  # noqa: ANN001 - any zero-argument callable
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def timed_run(
    linked: Linked, inputs: dict[str, np.ndarray], fm: FaultModel, lanes: int, repeat: int
) -> tuple[float, int, int, np.ndarray]:
    """Best time of run() over `repeat` tries; the counts and output of the last."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = run(linked, dict(inputs), fm, seed=0, lanes=lanes)
        best = min(best, time.perf_counter() - t0)
    return best, res.counts.gate_evals, res.counts.faults_injected, res.outputs["y"]


def numpy_limit(arrays: int, rows: int, lanes: int, calls: int, repeat: int) -> float:
    """Row-level bit evaluations per second of np.bitwise_and + np.bitwise_count at one gate's size."""
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

    return calls * arrays * rows * lanes / best_of(loop, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", type=int, default=256)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--gates", type=int, default=64, help="gates in the micro-program body")
    ap.add_argument("--reps", type=int, default=64, help="calls of the micro-program")
    ap.add_argument("--p", type=float, default=1e-3, help="gate error rate of the faulty run")
    ap.add_argument("--lanes", type=int, nargs="+", default=[1], help="sample lanes to measure (1 = honest default)")
    ap.add_argument("--repeat", type=int, default=5, help="timing repeats (best of)")
    args = ap.parse_args()

    text = program_text(args.arrays, args.rows, args.gates, args.reps)
    t0 = time.perf_counter()
    linked = verify(parse(text, "<bench>"))
    t_front = time.perf_counter() - t0
    print(f"program: {args.reps} calls x {args.gates} gates ({', '.join(m for m, _ in GATE_MIX)}) "
          f"on {args.arrays} arrays x {args.rows} rows; parse+verify {t_front * 1e3:.1f} ms")
    print(f"numpy {np.__version__}")

    for lanes in args.lanes:
        label = "single lane" if lanes == 1 else f"{lanes} sample lanes"
        inputs = {"x": np.random.default_rng(2).integers(0, 2, size=(lanes, 1, args.rows, STATE), dtype=np.uint8)}

        t_ff, evals, _, y_ff = timed_run(linked, inputs, FaultModel(), lanes, args.repeat)
        t_p, evals_p, nfaults, _ = timed_run(linked, inputs, FaultModel.uniform(args.p), lanes, args.repeat)
        assert evals == evals_p
        instrs = args.gates * args.reps
        lim = numpy_limit(args.arrays, args.rows, lanes, instrs, args.repeat)
        r_ff, r_p = evals / t_ff, evals / t_p
        print(f"\n[{label}] {instrs} gate instructions, {evals:.3e} row-level gate evaluations per run")
        print(f"  interpreter fault-free : {r_ff:.3e} gate evals/s  ({t_ff * 1e6 / instrs:.2f} us per gate "
              "instruction)")
        print(f"  interpreter p={args.p:g}   : {r_p:.3e} gate evals/s  ({t_p * 1e6 / instrs:.2f} us per gate "
              f"instruction, {nfaults} faults, {nfaults / evals:.2e} per eval)")
        print(f"  numpy AND+popcount     : {lim:.3e} bit evals/s  (same data per call, {instrs} calls)")
        print(f"  ratio fault-free: {r_ff / lim:.3f} (target {TARGET_FAULT_FREE})")
        print(f"  ratio p={args.p:g}: {r_p / lim:.3f} (target {TARGET_FAULTY})")
        del y_ff


if __name__ == "__main__":
    main()
