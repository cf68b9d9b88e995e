"""Simulator throughput of a backend (a GPU: torch:cuda) against the numpy CPU backend, on the same work.

Two workloads, each run on both backends in this one process, fault-free and
at a gate error rate p (default 1e-3), best of --repeat runs, timed
round-robin so machine noise hits both alike:

- ``dense``: the gate micro-program of bench_interp.py (AND/NAND/MAJ3/OR
  chains, 64 gates x 64 calls) on --arrays x --rows with --lanes sample lanes:
  row-level gate evaluations per second;
- ``digits``: the compiled digits CNN (models/digits_cnn.onnx) on --images
  test images run --lanes at a time: images per second (the fused
  multiply-accumulate path, trees, reads and CMOS layers included).

It prints each throughput and the ratio backend / numpy (target: >= 100 on a
GPU), the card, the versions, and checks on the way that the fault-free
outputs of the two backends are identical.  On a machine without a GPU,
``--backend torch:cpu --quick`` runs the same script end to end (the tests
do that).

    python bench/bench_backends.py [--backend torch:cuda] [--lanes 1024] [--images 2048] [--p 1e-3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_interp import STATE, program_text  # noqa: E402

from cramc.errmodel import FaultModel  # noqa: E402
from cramc.isa.parser import parse, parse_file  # noqa: E402
from cramc.isa.verifier import Linked, verify  # noqa: E402
from cramc.sim.backend import Backend, get_backend  # noqa: E402
from cramc.sim.interp import RunResult, run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET = 100.0


def best_of(fns: dict[str, Callable[[], RunResult]], repeat: int) -> tuple[dict[str, float], dict[str, RunResult]]:
    """Best wall time of each run, round-robin; the last result of each."""
    best = dict.fromkeys(fns, float("inf"))
    last: dict[str, RunResult] = {}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            last[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best, last


def measure(
    title: str,
    unit: str,
    amount: Callable[[RunResult], float],
    linked: Linked,
    inputs: dict[str, np.ndarray],
    lanes: int,
    be: Backend,
    p: float,
    repeat: int,
) -> list[float]:
    """Both backends, fault-free and at p; prints a table and returns the ratios."""
    ratios = []
    for fm in (FaultModel(), FaultModel.uniform(p)):
        fns = {
            name: (lambda b=b, fm=fm: run(linked, dict(inputs), fm, seed=0, lanes=lanes, backend=b, max_memory=1 << 40))
            for name, b in (("numpy", "numpy"), (be.label, be))
        }
        # one untimed run each: imports, first-call set-up, device warm-up
        for fn in fns.values():
            fn()
        t, res = best_of(fns, repeat)
        ref, got = res["numpy"], res[be.label]
        if fm.fault_free:
            for k, v in ref.outputs.items():
                if not np.array_equal(v, got.outputs[k]):
                    raise SystemExit(f"{title}: {be.label} outputs differ from numpy's at zero faults")
        rate = {k: amount(r) / t[k] for k, r in res.items()}
        ratio = rate[be.label] / rate["numpy"]
        ratios.append(ratio)
        label = "fault-free" if fm.fault_free else f"p={p:g}"
        faults = (
            ""
            if fm.fault_free
            else f"; faults numpy {ref.counts.faults_injected}, {be.label} {got.counts.faults_injected}"
        )
        print(
            f"  {label:<10} numpy {rate['numpy']:.3e} {unit}/s ({t['numpy']:.3f} s)   "
            f"{be.label} {rate[be.label]:.3e} {unit}/s ({t[be.label]:.3f} s)   ratio {ratio:.1f}{faults}"
        )
    return ratios


def compile_digits(out: Path) -> Linked:
    from cramc.cli import main

    prog = out / "digits_cnn.cram"
    rc = main(
        [
            "compile",
            str(REPO / "models" / "digits_cnn.onnx"),
            "-o",
            str(prog),
            "--calibration",
            str(REPO / "models" / "digits_calib_img.npz"),
            "--no-trace",
        ]
    )
    if rc:
        raise SystemExit("compiling the digits CNN failed")
    return verify(parse_file(str(prog)))


def describe(be: Backend) -> str:
    if be.name != "torch":
        return be.label
    import torch

    dev = torch.device(be.device)
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    return f"{be.label} ({card}; torch {torch.__version__})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="torch", help="the backend to measure against numpy (default torch)")
    ap.add_argument("--arrays", type=int, default=256)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--lanes", type=int, default=1024, help="sample lanes per run (both workloads)")
    ap.add_argument("--images", type=int, default=2048, help="digits test images (the split repeated as needed)")
    ap.add_argument("--p", type=float, default=1e-3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script on any machine")
    args = ap.parse_args()
    if args.quick:
        args.arrays, args.rows, args.lanes, args.images, args.repeat = 16, 128, 4, 16, 1
    be = get_backend(args.backend)
    print(f"backend {describe(be)} against numpy {np.__version__} on {os.cpu_count()} CPU cores")
    ratios: list[float] = []

    gates, reps = (8, 4) if args.quick else (64, 64)
    linked = verify(parse(program_text(args.arrays, args.rows, gates, reps), "<bench>"))
    x = np.random.default_rng(2).integers(0, 2, size=(args.lanes, 1, args.rows, STATE), dtype=np.uint8)
    print(f"\n[dense] {reps} x {gates} gates on {args.arrays} arrays x {args.rows} rows x {args.lanes} lanes")
    ratios += measure(
        "dense", "gate evals", lambda r: r.counts.gate_evals, linked, {"x": x}, args.lanes, be, args.p, args.repeat
    )

    with tempfile.TemporaryDirectory() as tmp:
        linked = compile_digits(Path(tmp))
    test = np.load(REPO / "models" / "digits_test_x_img.npz")["input"]
    imgs = np.resize(test, (args.images, *test.shape[1:]))
    print(f"\n[digits] CNN, {args.images} images, {args.lanes} lanes per run")
    ratios += measure(
        "digits", "images", lambda r: r.samples, linked, {"input": imgs}, args.lanes, be, args.p, args.repeat
    )
    print(f"\nratios {' '.join(f'{r:.1f}' for r in ratios)} (target {TARGET:g} on a GPU)")


if __name__ == "__main__":
    main()
