"""The prepared GPU baseline: batch-1 and batch-64 inference time and energy of the comparison's models on a GPU.

Standalone (numpy, onnx, and onnxruntime and/or PyTorch; no cramc import), so it runs on a
device machine without installing cramc.  The models are the ONNX files that
``python bench/bench_baselines.py --export bench/out/baselines`` writes (the float model and
cramc's QDQ model of each, batch axis N); carry ``bench/out/baselines`` to the device machine.

Backends (``--backend``, default ``auto``: every one available):

- ``ort-cuda``: onnxruntime's CUDAExecutionProvider (needs onnxruntime-gpu);
- ``torch-cuda``: the ONNX graph run op by op in PyTorch on CUDA (the ops of these models:
  Gemm, MatMul, Conv, Relu, MaxPool, Add, GlobalAveragePool, Flatten, Reshape,
  QuantizeLinear/DequantizeLinear with QDQ semantics in float), eager (one kernel or more per
  node) and, with ``--cuda-graph``, replayed as one CUDA graph;
- ``ort-cpu`` / ``torch-cpu``: the same on the CPU, for ``--dry-run`` and for checking that the
  PyTorch interpreter matches onnxruntime (max |difference| is printed and checked).

Time: best of --repeat runs after --warmup runs (CUDA synchronised after each run), per
inference.  Energy: NVML's total-energy counter (pynvml, ``nvmlDeviceGetTotalEnergyConsumption``,
mJ, Volta and later) over the timed runs; without pynvml, ``nvidia-smi --query-gpu=power.draw``
sampled every 20 ms during the timed runs, mean power x time; on the CPU, none.

    python bench/gpu_baseline.py --dry-run                         # CPU backends only, 2 repeats: a check
    python bench/gpu_baseline.py --json $OUT/gpu_baseline.json     # on the device machine
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "bench" / "out" / "baselines"
INPUT_SHAPES = {
    "digits_mlp": (64,),
    "digits_cnn": (1, 8, 8),
    "mnist_lenet5": (1, 28, 28),
    "resnet50_light": (3, 32, 32),
}


# ---------------------------------------------------------------- ONNX -> PyTorch, op by op
class TorchGraph:
    """An ONNX graph evaluated node by node with torch operations (the ops the comparison's models use)."""

    def __init__(self, path: Path, device: str):
        import onnx
        import torch
        from onnx import numpy_helper

        self.torch = torch
        m = onnx.load(str(path))
        self.device = device
        self.consts = {
            t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).to(device) for t in m.graph.initializer
        }
        self.nodes = list(m.graph.node)
        self.inputs = [i.name for i in m.graph.input if i.name not in self.consts]
        self.outputs = [o.name for o in m.graph.output]
        for n in self.nodes:
            if n.op_type not in self.OPS:
                raise SystemExit(f"{path}: op {n.op_type} (node {n.name}) not supported by the PyTorch interpreter")
            if n.op_type == "Constant":
                self.consts[n.output[0]] = torch.from_numpy(numpy_helper.to_array(n.attribute[0].t).copy()).to(device)

    OPS = {
        "Gemm", "MatMul", "Conv", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Reshape",
        "QuantizeLinear", "DequantizeLinear", "Constant", "Identity",
    }  # fmt: skip

    @staticmethod
    def _attrs(n: Any) -> dict[str, Any]:
        import onnx

        return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}

    def __call__(self, feed: dict[str, Any]) -> list[Any]:  # noqa: C901 - one branch per op
        torch = self.torch
        F = torch.nn.functional
        env = dict(self.consts)
        env.update(feed)
        for n in self.nodes:
            a = self._attrs(n)
            x = [env[i] if i else None for i in n.input]
            op = n.op_type
            if op == "Constant":
                continue
            if op == "Identity":
                y = x[0]
            elif op == "Gemm":
                A = x[0].T if a.get("transA", 0) else x[0]
                B = x[1].T if a.get("transB", 0) else x[1]
                y = a.get("alpha", 1.0) * (A @ B)
                if len(x) > 2 and x[2] is not None:
                    y = y + a.get("beta", 1.0) * x[2]
            elif op == "MatMul":
                y = x[0] @ x[1]
            elif op == "Conv":
                pads = a.get("pads", [0, 0, 0, 0])
                if pads[0] != pads[2] or pads[1] != pads[3]:
                    raise SystemExit(f"{n.name}: asymmetric padding not supported")
                y = F.conv2d(
                    x[0], x[1], x[2] if len(x) > 2 else None, stride=a.get("strides", [1, 1]),
                    padding=pads[:2], dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1),
                )  # fmt: skip
            elif op == "Relu":
                y = torch.relu(x[0])
            elif op == "MaxPool":
                pads = a.get("pads", [0, 0, 0, 0])
                y = F.max_pool2d(x[0], a["kernel_shape"], stride=a.get("strides", a["kernel_shape"]), padding=pads[:2])
            elif op == "Add":
                y = x[0] + x[1]
            elif op == "GlobalAveragePool":
                y = x[0].mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                ax = a.get("axis", 1)
                y = x[0].reshape(int(np.prod(x[0].shape[:ax])), -1)
            elif op == "Reshape":
                shape = [int(s) for s in x[1].tolist()]
                y = x[0].reshape([x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)])
            elif op in ("QuantizeLinear", "DequantizeLinear"):
                scale = x[1].float()
                zp = x[2] if len(x) > 2 and x[2] is not None else torch.zeros((), dtype=torch.uint8, device=self.device)
                ax = a.get("axis", 1)
                if scale.dim() == 1 and x[0].dim() > 1:
                    shape = [1] * x[0].dim()
                    shape[ax] = -1
                    scale, zp = scale.reshape(shape), zp.reshape(shape)
                if op == "QuantizeLinear":
                    lo, hi = (-128, 127) if zp.dtype == torch.int8 else (0, 255)
                    q = torch.round(x[0] / scale) + zp.float()  # round half to even, as ONNX specifies
                    y = q.clamp(lo, hi).to(zp.dtype)
                else:
                    y = (x[0].float() - zp.float()) * scale
            else:  # pragma: no cover - rejected in __init__
                raise SystemExit(op)
            env[n.output[0]] = y
        return [env[o] for o in self.outputs]


# ---------------------------------------------------------------- energy
class GpuEnergy:
    """Energy of the timed runs: NVML's counter if pynvml is importable, else nvidia-smi power sampling, else none."""

    def __init__(self) -> None:
        self.kind = "none"
        self.handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.pynvml = pynvml
            self.kind = "NVML total energy counter (pynvml)"
        except Exception:  # noqa: BLE001 - not installed, no driver, or a GPU without the counter
            if shutil.which("nvidia-smi"):
                self.kind = "nvidia-smi power.draw sampled every 20 ms"

    def measure(self, fn: Callable[[], None]) -> tuple[float | None, float]:
        """Run fn; (joules or None, seconds)."""
        if self.kind.startswith("NVML"):
            e0 = self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
            return (self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - e0) * 1e-3, t
        if self.kind.startswith("nvidia-smi"):
            samples: list[float] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    out = subprocess.run(
                        ["nvidia-smi", "--query-gpu=power.draw", "--format=csv,noheader,nounits", "-i", "0"],
                        capture_output=True, text=True, timeout=5,
                    )  # fmt: skip
                    try:
                        samples.append(float(out.stdout.strip().splitlines()[0]))
                    except (ValueError, IndexError):
                        pass
                    stop.wait(0.02)

            th = threading.Thread(target=sample, daemon=True)
            th.start()
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
            stop.set()
            th.join()
            return (float(np.mean(samples)) * t if samples else None), t
        t0 = time.perf_counter()
        fn()
        return None, time.perf_counter() - t0


# ---------------------------------------------------------------- runners
def runners(path: Path, backend: str, x: np.ndarray, cuda_graph: bool) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(run once and return the output as numpy, synchronise) for one model file and backend."""
    if backend.startswith("ort"):
        import onnxruntime as ort

        prov = "CUDAExecutionProvider" if backend == "ort-cuda" else "CPUExecutionProvider"
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if backend == "ort-cpu" and path.stem.endswith("_qdq"):
            # the QDQ graph as written (cramc's reference semantics): the CPU's fused integer kernels saturate
            # on AVX2 without VNNI (docs/comparison.md), so they would not be a reference for the check
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(path), so, providers=[prov])
        if prov not in sess.get_providers():
            raise RuntimeError(f"onnxruntime did not take {prov}")
        name = sess.get_inputs()[0].name
        return (lambda: sess.run(None, {name: x})[0]), (lambda: None)
    import torch

    dev = "cuda" if backend == "torch-cuda" else "cpu"
    g = TorchGraph(path, dev)
    xt = torch.from_numpy(x).to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def eager() -> Any:
        with torch.inference_mode():
            return g({g.inputs[0]: xt})[0]

    if cuda_graph and dev == "cuda":
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                eager()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = eager()

        def replay() -> Any:
            graph.replay()
            return static_out

        return (lambda: replay().float().cpu().numpy()), sync
    return (lambda: eager().float().cpu().numpy()), sync


def available(backends: list[str]) -> list[str]:
    out = []
    for b in backends:
        try:
            if b.startswith("ort"):
                import onnxruntime as ort

                want = "CUDAExecutionProvider" if b == "ort-cuda" else "CPUExecutionProvider"
                if want in ort.get_available_providers():
                    out.append(b)
            else:
                import torch

                if b == "torch-cpu" or torch.cuda.is_available():
                    out.append(b)
        except ImportError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - the measurement loop
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    ap.add_argument("--backend", nargs="*", default=["auto"], help="ort-cuda torch-cuda ort-cpu torch-cpu, or auto")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 64])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--cuda-graph", action="store_true", help="torch-cuda: also replay the model as one CUDA graph")
    ap.add_argument("--dry-run", action="store_true", help="CPU backends, 2 repeats: check the script and models")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    files = sorted(args.models_dir.glob("*_float.onnx")) + sorted(args.models_dir.glob("*_qdq.onnx"))
    if not files:
        ap.error(f"no models in {args.models_dir}: run python bench/bench_baselines.py --export {args.models_dir}")
    if args.dry_run:
        backends, args.repeat, args.warmup = available(["ort-cpu", "torch-cpu"]), 2, 1
    elif args.backend == ["auto"]:
        backends = available(["ort-cuda", "torch-cuda"]) or []
        if not backends:
            print("no GPU backend available (onnxruntime CUDA provider or PyTorch with CUDA): nothing measured")
            return 1
    else:
        backends = available(args.backend)
    energy = GpuEnergy() if any("cuda" in b for b in backends) else None
    print(f"backends {backends}; energy: {energy.kind if energy else 'none (CPU)'}", flush=True)
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    reference: dict[tuple[str, int], np.ndarray] = {}
    variants = [(b, False) for b in backends] + [(b, True) for b in backends if b == "torch-cuda" and args.cuda_graph]
    for f in files:
        model = f.stem.rsplit("_", 1)[0]
        shape = INPUT_SHAPES.get(model)
        if shape is None:
            print(f"{f.name}: unknown input shape, skipped")
            continue
        for batch in args.batches:
            x = rng.random((batch, *shape), dtype=np.float32)
            for backend, graph in variants:
                label = backend + (" + CUDA graph" if graph else "")
                try:
                    run, sync = runners(f, backend, x, graph)
                    y = run()
                except Exception as e:  # noqa: BLE001 - one backend failing on one model is reported, not fatal
                    print(f"{f.name} batch {batch} {label}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                    results.append({"model": f.stem, "batch": batch, "backend": label, "error": str(e)[:300]})
                    continue
                ref = reference.setdefault((f.stem, batch), y)
                diff = float(np.max(np.abs(y - ref)))
                for _ in range(args.warmup):
                    run()
                sync()
                best = float("inf")

                def timed(run: Callable[[], Any] = run, sync: Callable[[], None] = sync) -> None:
                    nonlocal best
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        run()
                        sync()
                        best = min(best, time.perf_counter() - t0)

                joules, wall = energy.measure(timed) if energy and "cuda" in backend else (None, 0.0)
                if not ("cuda" in backend and energy):
                    timed()
                r = {
                    "model": f.stem, "batch": batch, "backend": label, "best_s": best, "per_inference_s": best / batch,
                    "max_abs_diff_vs_first_backend": diff,
                    "energy_per_inference_j": None if joules is None else joules / args.repeat / batch,
                    "energy_source": energy.kind if energy and "cuda" in backend else "none",
                }  # fmt: skip
                results.append(r)
                e = r["energy_per_inference_j"]
                print(
                    f"{f.stem:26s} batch {batch:3d} {label:24s} {best / batch * 1e6:10.2f} us/inference"
                    f"  energy {'-' if e is None else f'{e * 1e6:.2f} uJ'}  max|diff| {diff:.3g}",
                    flush=True,
                )
    # the backends agree to float32 rounding on float models, and on QDQ models where the reference is the CPU's
    # as-written graph (a GPU's fused integer kernels may round a tie the other way: reported, not checked)
    disagree = [
        (r["model"], r["backend"])
        for r in results
        if "error" not in r
        and r["max_abs_diff_vs_first_backend"] > 1e-3
        and (r["model"].endswith("_float") or backends[0] == "ort-cpu")
    ]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"backends": backends, "results": results}, indent=1), encoding="utf-8")
    if disagree:
        print(f"backends disagree: {disagree}")
        return 1
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
