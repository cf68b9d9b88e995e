"""Reduce benchmark: the CRAM-ER hybrid (``--reduce tree``) against the CRAM-only baseline (``--reduce cram``).

Compiles the shipped digits MLP and CNN with both lowerings (default chip,
their calibration sets), then on the whole test split (360 images):
- fault-free: checks that both lowerings give identical outputs, and prints
  the accuracy, the simulator's wall time and the work per inference
  (row-level gate evaluations, bits written and read, adder-tree operations);
- under a uniform gate error (every CRAM gate flips its output with
  probability P; writes, reads and the adder tree exact), for each rate and
  seed: the accuracy of both lowerings at the same rate and seed.

    python bench/bench_reduce.py [--rates 1e-3,1e-4,1e-5] [--seeds 0] [--images 360] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from cramc.compiler import Options, compile_model
from cramc.errmodel import FaultModel
from cramc.fileio import load_npy, load_npz
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.interp import run
from cramc.sim.report import accuracy

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"mlp": "flat", "cnn": "img"}
REDUCE = {"tree": "hybrid", "cram": "CRAM-only"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1e-3,1e-4,1e-5", help="comma-separated uniform gate error rates")
    ap.add_argument("--seeds", default="0", help="comma-separated fault seeds")
    ap.add_argument("--images", type=int, default=360, help="test images (the first N of the split)")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--json", help="write every figure to this file")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; {os.cpu_count()} CPUs")
    labels_all = load_npy(str(ROOT / "models" / "digits_test_labels.npy"))
    out: dict[str, object] = {"images": args.images, "rates": rates, "seeds": seeds, "models": {}}
    for name in args.models.split(","):
        layout = MODELS[name]
        x = {k: v[: args.images] for k, v in load_npz(str(ROOT / "models" / f"digits_test_x_{layout}.npz")).items()}
        labels = labels_all[: args.images]
        n = labels.shape[0]
        calib = load_npz(str(ROOT / "models" / f"digits_calib_{layout}.npz"))
        fig: dict[str, dict[str, object]] = {}
        outputs = {}
        for reduce in REDUCE:
            t0 = time.perf_counter()
            text = compile_model(
                str(ROOT / "models" / f"digits_{name}.onnx"), calib, Options(reduce=reduce), log=io.StringIO()
            )
            linked = verify(parse(text, f"digits_{name}_{reduce}.cram"))
            t1 = time.perf_counter()
            res = run(linked, x, FaultModel(), seed=0)
            t2 = time.perf_counter()
            c = res.counts
            outputs[reduce] = res.outputs
            fig[reduce] = {
                "compile_s": t1 - t0,
                "program_mb": len(text) / 1e6,
                "run_s": t2 - t1,
                "accuracy": accuracy(res.outputs[linked.outputs[0].name], labels),
                "gate_evals": c.gate_evals // n,
                "writes": c.writes // n,
                "reads": c.reads // n,
                "reduces": c.reduces // n,
                "tree_sensed_bits": c.tree_sensed // n,
                "faulty": {},
            }
            for rate in rates:
                for seed in seeds:
                    t0 = time.perf_counter()
                    r = run(linked, x, FaultModel.uniform(rate), seed=seed)
                    fig[reduce]["faulty"][f"{rate:g}/{seed}"] = {  # type: ignore[index]
                        "accuracy": accuracy(r.outputs[linked.outputs[0].name], labels),
                        "gate_faults": r.counts.faults["gate"],
                        "run_s": time.perf_counter() - t0,
                    }
        same = all(np.array_equal(outputs["tree"][k], outputs["cram"][k]) for k in outputs["tree"])
        h, c = fig["tree"], fig["cram"]
        print(
            f"\ndigits {name}, {n} test images, fault-free: outputs {'IDENTICAL' if same else 'DIFFER'}; "
            f"accuracy hybrid {h['accuracy']:.4f}, CRAM-only {c['accuracy']:.4f}"
        )
        print(f"  {'per inference':<22} {'hybrid':>14} {'CRAM-only':>14} {'ratio':>8}")
        for k in ("gate_evals", "writes", "reads", "reduces", "tree_sensed_bits"):
            a, b = int(h[k]), int(c[k])  # type: ignore[call-overload]
            print(f"  {k:<22} {a:>14,} {b:>14,} {(f'{b / a:.2f}x' if a else '-'):>8}")
        print(f"  {'simulator wall (s)':<22} {h['run_s']:>14.2f} {c['run_s']:>14.2f}   ({n} images, fault-free)")
        print(f"  {'program (MB)':<22} {h['program_mb']:>14.3f} {c['program_mb']:>14.3f}")
        print(f"  {'uniform gate error':<22} {'hybrid acc':>14} {'CRAM-only acc':>14}   seed")
        for key in h["faulty"]:  # type: ignore[union-attr]
            rate_s, seed_s = key.split("/")
            print(
                f"  {rate_s:<22} {h['faulty'][key]['accuracy']:>14.4f} {c['faulty'][key]['accuracy']:>14.4f}"  # type: ignore[index]
                f"   {seed_s}"
            )
        fig["identical"] = same  # type: ignore[assignment]
        out["models"][name] = fig  # type: ignore[index]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
