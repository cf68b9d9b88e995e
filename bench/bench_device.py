"""The GPU check of issue 14: LeNet-5 and light ResNet-50 on the numpy backend and on torch:cuda, same seed.

For each workload both backends run the same program on the same inputs in
this one process (one untimed warm-up on the device backend for its kernels,
then best of --repeat, round-robin) and it prints:

- the wall time of each and the throughput ratio numpy time / backend time
  (target for LeNet-5: at least 100);
- fault-free: whether the outputs are identical (they must be: the backends
  compute the same bits);
- at p: the fault counts of each and their difference in standard deviations
  (the backends draw from different generators, so the counts agree in
  distribution, not bit for bit: |a - b| <= 5 sqrt(a + b) passes) and the
  accuracy of each on the labels.

Workloads: models/mnist_lenet5.onnx compiled with models/mnist_calib_img.npz
on --images MNIST test images (default 1000), fault-free and at --p (1e-3);
onnx's light ResNet-50 (compiled without calibration, as bench_interp.py
does) on its one validation input at --p.  ``--cpu-dry-run`` runs the whole
script with torch:cpu in place of torch:cuda on 32 LeNet images and skips
ResNet-50 (unless --resnet): the check that it works end to end on a machine
without a GPU.

    python bench/bench_device.py                       # on the device machine (bench/device_check.sh)
    python bench/bench_device.py --cpu-dry-run         # anywhere, about a minute
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backends import best_of  # noqa: E402

from cramc.errmodel import FaultModel  # noqa: E402
from cramc.isa.parser import parse_file  # noqa: E402
from cramc.isa.verifier import Linked, verify  # noqa: E402
from cramc.sim.backend import get_backend  # noqa: E402
from cramc.sim.interp import RunResult, run  # noqa: E402
from cramc.sim.layout import program_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET = 100.0


def compile_program(args: list[str], out: Path) -> Linked:
    cmd = [sys.executable, "-m", "cramc.cli", "compile", *args, "-o", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"compile failed: {done.stderr.strip()}")
    print(f"  compiled in {time.perf_counter() - t0:.1f} s: {done.stdout.strip()}", flush=True)
    return verify(parse_file(str(out)))


def side_by_side(
    name: str, linked: Linked, inputs: dict[str, np.ndarray], fm: FaultModel, backend: str, repeat: int, seed: int
) -> dict[str, Any]:
    """numpy and `backend` on the same run; times, ratio and the results' comparison."""
    fns: dict[str, Callable[[], RunResult]] = {
        "numpy": lambda: run(linked, dict(inputs), fm, seed=seed, backend="numpy"),
        backend: lambda: run(linked, dict(inputs), fm, seed=seed, backend=backend),
    }
    fns[backend]()  # warm-up: the device's kernels and allocator
    best, last = best_of(fns, repeat)
    a, b = last["numpy"], last[backend]
    ratio = best["numpy"] / best[backend]
    line = f"  [{name}] numpy {best['numpy']:.3f} s, {backend} {best[backend]:.3f} s: ratio {ratio:.1f}"
    out: dict[str, Any] = {"numpy_s": best["numpy"], "backend_s": best[backend], "ratio": ratio}
    if fm.fault_free:
        same = all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
        line += f"; outputs {'identical' if same else 'DIFFER'}"
        out["identical"] = same
    else:
        fa, fb = a.counts.faults_injected, b.counts.faults_injected
        sd = abs(fa - fb) / math.sqrt(max(fa + fb, 1))
        line += f"; faults numpy {fa}, {backend} {fb} ({sd:.1f} sd: {'ok' if sd <= 5 else 'FAIL'})"
        out.update(faults_numpy=fa, faults_backend=fb, sd=sd)
    print(line, flush=True)
    out["results"] = (a, b)
    return out


def accuracy(res: RunResult, labels: np.ndarray) -> float:
    logits = next(iter(res.outputs.values()))
    return float((logits.reshape(labels.shape[0], -1).argmax(1) == labels).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="torch:cuda")
    ap.add_argument("--cpu-dry-run", action="store_true", help="torch:cpu, 32 LeNet images, no ResNet-50")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--p", type=float, default=1e-3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resnet", action=argparse.BooleanOptionalAction, default=None, help="light ResNet-50 too")
    a = ap.parse_args(argv)
    backend = "torch:cpu" if a.cpu_dry_run else a.backend
    images = min(a.images, 32) if a.cpu_dry_run else a.images
    resnet = (not a.cpu_dry_run) if a.resnet is None else a.resnet
    be = get_backend(backend)
    print(f"backend {be.label} against numpy {np.__version__}; seed {a.seed}, p = {a.p:g}", flush=True)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\n[LeNet-5] {images} MNIST test images")
        prog = Path(tmp) / "mnist_lenet5.cram"
        linked = compile_program(
            ["models/mnist_lenet5.onnx", "--calibration", "models/mnist_calib_img.npz"], prog
        )  # fmt: skip
        with np.load(REPO / "models/mnist_test_x_img.npz") as z:
            data = {k: z[k][:images] for k in z.files}
        labels = np.load(REPO / "models/mnist_test_labels.npy")[:images]
        inputs = program_inputs(linked, data, "models/mnist_test_x_img.npz")  # as cramc run --input reads it
        for label, fm in (("fault-free", FaultModel()), (f"p={a.p:g}", FaultModel.uniform(a.p))):
            got = side_by_side(f"lenet {label}", linked, inputs, fm, backend, a.repeat, a.seed)
            ra, rb = got["results"]
            print(f"    accuracy numpy {accuracy(ra, labels):.4f}, {backend} {accuracy(rb, labels):.4f}")
            failed += int(not got.get("identical", True) or got.get("sd", 0) > 5)
            if label == "fault-free":
                print(f"    throughput ratio {got['ratio']:.1f} (target {TARGET:.0f} on a GPU)")
        if resnet:
            import onnx

            model = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
            print(f"\n[light ResNet-50] {model.name}, one input")
            rl = compile_program([str(model), "--no-trace"], Path(tmp) / "light_resnet50.cram")
            assert rl.expect is not None
            one = {k: v[:1] for k, v in rl.expect.inputs.items()}
            got = side_by_side("resnet50 p", rl, one, FaultModel.uniform(a.p), backend, 1, a.seed)
            failed += int(got.get("sd", 0) > 5)
    print(f"\n{'all checks pass' if not failed else f'{failed} check(s) FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
