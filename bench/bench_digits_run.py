"""Run benchmark: the digits CNN, gate by gate, fault-free, over its whole test split (360 images).

Compiles ``models/digits_cnn.onnx`` with its calibration set (as the README's
quick start does), then times ``cramc.sim.interp.run`` on all 360 test images
with the fault-free model: every CRAM gate, every adder-tree count and every
CMOS operation of every image is simulated, exactly as ``cramc run`` does it.
Prints the wall time of the run against the 60 s target, the accuracy
against the labels, the throughput in row-level gate evaluations per second,
and whether the simulator's logits agree with onnxruntime's on the quantised
(QDQ) model for every image, within one output quantisation step.

    python bench/bench_digits_run.py [--program PROG.cram] [--repeat 3] [--max-memory 2]

``--program`` times an already compiled program instead of compiling one.
``--repeat`` runs it several times and reports the best and the median (the
machine may be shared).

``--fault-models`` then times the same run under sparse fault models, to show
that sampling costs what the faults cost, not what the bits do: every gate at
p = 1e-6 as output-conditioned rates (p01 = 1e-6, p10 = 5e-7: thinned by the
output bit) and as input-dependent rates (by_ones, at most 1e-6: thinned by
the gate's input count read at each candidate), each against the fault-free
run, ratios side by side (best of --repeat each).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cramc.compiler import Options, compile_model, run_onnxruntime
from cramc.errmodel import FaultModel
from cramc.fileio import load_npy, load_npz
from cramc.frontend.pipeline import run_frontend
from cramc.frontend.quantize import check_calibration
from cramc.isa.parser import parse, parse_file
from cramc.isa.verifier import verify
from cramc.sim.interp import lanes_for, run
from cramc.sim.report import accuracy

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "digits_cnn.onnx"
CALIB = ROOT / "models" / "digits_calib_img.npz"
TEST_X = ROOT / "models" / "digits_test_x_img.npz"
TEST_Y = ROOT / "models" / "digits_test_labels.npy"
TARGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--program", help="an already compiled digits CNN program (default: compile it here)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (best and median are printed)")
    ap.add_argument("--max-memory", type=float, default=2.0, help="GiB of simulator state, as cramc run (default 2)")
    ap.add_argument(
        "--fault-models",
        action="store_true",
        help="also time p = 1e-6 as p01/p10 and as by_ones against the fault-free run (ratios side by side)",
    )
    args = ap.parse_args()

    import onnxruntime

    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, onnxruntime {onnxruntime.__version__}; "
        f"{os.cpu_count()} CPUs"
    )
    t0 = time.perf_counter()
    if args.program:
        linked = verify(parse_file(args.program))
        print(f"program {args.program}: parse + verify {time.perf_counter() - t0:.2f} s")
    else:
        text = compile_model(str(MODEL), load_npz(str(CALIB)), Options(), log=io.StringIO())
        t1 = time.perf_counter()
        linked = verify(parse(text, "digits_cnn.cram"))
        t2 = time.perf_counter()
        print(
            f"compiled {MODEL.relative_to(ROOT)} in {t1 - t0:.2f} s ({len(text) / 1e6:.2f} MB); "
            f"parse + verify {t2 - t1:.2f} s"
        )

    x = load_npz(str(TEST_X))
    labels = load_npy(str(TEST_Y))
    n = labels.shape[0]
    budget = int(args.max_memory * 2**30)
    lanes = lanes_for(linked, n, budget)
    print(
        f"chip {linked.machine.arrays} arrays of {linked.machine.rows} x {linked.machine.cols}; "
        f"{n} images, {lanes} sample lanes per batch ({-(-n // lanes)} batch(es)); fault-free"
    )

    walls = []
    res = None
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        res = run(linked, dict(x), FaultModel(), seed=0, max_memory=budget)
        walls.append(time.perf_counter() - t0)
    assert res is not None
    logits = res.outputs[linked.outputs[0].name]
    acc = accuracy(logits, labels)
    best, med = min(walls), statistics.median(walls)
    evals = res.counts.gate_evals
    print(f"run: best {best:.2f} s, median {med:.2f} s of {len(walls)} ({', '.join(f'{w:.2f}' for w in walls)} s)")
    print(
        f"  {evals:.3e} row-level gate evaluations ({evals / n:.3e} per image), "
        f"{evals / best:.3e} per second at the best time"
    )
    print(
        f"  target {TARGET_S:.0f} s: best/target = {best / TARGET_S:.3f}, median/target = {med / TARGET_S:.3f} "
        f"({'met' if med <= TARGET_S else 'NOT met'})"
    )
    print(f"accuracy: {acc:.4f} ({int(round(acc * n))}/{n})")

    # the same images through onnxruntime on the quantised model the compiler derived
    fe = run_frontend(str(MODEL), load_npz(str(CALIB)), log=io.StringIO())
    ref = run_onnxruntime(fe.qmodel, check_calibration(fe.qmodel, dict(x), str(TEST_X)))
    want = ref[fe.qmodel.graph.output[0].name].reshape(logits.shape)
    diff = np.abs(logits.astype(np.float64) - want.astype(np.float64))
    ort_acc = accuracy(want, labels)
    within = int((diff <= fe.output_tol + 1e-9).sum())
    print(
        f"onnxruntime (QDQ model): accuracy {ort_acc:.4f}; simulator logits equal to onnxruntime's in "
        f"{int((diff == 0).sum())} of {diff.size} elements, within one output step ({fe.output_tol:.4g}) in "
        f"{within} of {diff.size}; same argmax in {int((logits.argmax(-1) == want.argmax(-1)).sum())} of {n} images"
    )
    if args.fault_models:
        sparse_fault_models(linked, x, budget, max(1, args.repeat))


def sparse_models(p: float) -> dict[str, FaultModel]:
    """Every gate at about p: output-conditioned (p01 = p, p10 = p/2) and input-dependent (by_ones at most p:
    p next to the threshold, i.e. at the middle input counts, p/10 elsewhere)."""
    from cramc.errmodel import Rate
    from cramc.errmodel.model import GATE_NAMES, gate_inputs

    def table(n: int) -> tuple[float, ...]:
        return tuple(p if k in (n // 2, (n + 1) // 2) else p / 10 for k in range(n + 1))

    return {
        f"p01/p10 {p:g}": FaultModel({g: Rate(p, p / 2) for g in GATE_NAMES}, name="p01/p10"),
        f"by_ones {p:g}": FaultModel({g: Rate(by_ones=table(gate_inputs(g))) for g in GATE_NAMES}, name="by_ones"),
    }


def sparse_fault_models(linked: Any, x: dict[str, np.ndarray], budget: int, repeat: int) -> None:
    """Best-of-`repeat` wall and CPU time of the run fault-free and under each sparse model, interleaved (one
    run of each per round, so that the load of a shared machine weighs on all alike), and the ratios."""
    models = {"fault-free": FaultModel(), **sparse_models(1e-6)}
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    faults = dict.fromkeys(models, 0)
    for seed in range(repeat):
        for name, fm in models.items():
            t0, c0 = time.perf_counter(), time.process_time()
            res = run(linked, dict(x), fm, seed=seed, max_memory=budget)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            faults[name] = res.counts.faults["gate"]
    w0, c0 = min(wall["fault-free"]), min(cpu["fault-free"])
    print(f"sparse fault models (interleaved, best of {repeat} each):")
    print(f"  {'model':<18} {'wall s':>7} {'x clean':>8} {'CPU s':>7} {'x clean':>8} {'gate faults':>12}")
    for name in models:
        w, c = min(wall[name]), min(cpu[name])
        print(f"  {name:<18} {w:7.2f} {w / w0:8.3f} {c:7.2f} {c / c0:8.3f} {faults[name]:12d}")


if __name__ == "__main__":
    main()
