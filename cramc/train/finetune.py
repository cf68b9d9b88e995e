"""`cramc finetune`: retrain a float ONNX classifier with the CRAM error distribution injected.

The model keeps its graph, inputs and outputs; only the float weights and
biases of its Conv, Gemm and MatMul nodes change.  Training is quantisation-
aware with the scales cramc compile will use: at the start of every epoch the
current model goes through the same frontend as `cramc compile` (onnxruntime's
static QDQ quantiser on the calibration data), and its activation scales and
zero points are what the forward pass fake-quantises with (cramc.train.qat).
Every MVM output gets an accumulator error drawn from the gate-level fault
model for its integer operands (cramc.train.noise), fresh for every batch.
The loss is the cross-entropy of the first output against the labels.

PyTorch is imported here only, and only when fine-tuning runs: it is the
optional extra ``cramc[train]``.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnx
from onnx import numpy_helper

from cramc.errmodel import FaultModel
from cramc.errors import UserError
from cramc.frontend import fold_constants, quantize
from cramc.frontend.load import load_model

NEEDS_TORCH = "cramc finetune needs PyTorch: pip install 'cramc[train]'"
#: Calibration samples taken from the training data when no --calibration is given.
DEFAULT_CALIBRATION = 64


@dataclass(frozen=True)
class Options:
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    rows: int = 256  # rows per CRAM array, as given to cramc compile: sets the rows a K chunk is counted over
    noise: str = "binomial"  # exact binomial draws, or "normal" with the exact mean and variance
    range_grad: bool = True  # the error's float scale sx * sw keeps its gradient (cramc.train.qat)
    # PyTorch threads while fine-tuning (0: PyTorch's default).  One: the networks are small and the injected
    # error is drawn in numpy on one core; on a shared machine a second torch thread waiting for a busy core made
    # LeNet-5's steps 6 to 20 times slower.  The float sums, and so the result for a seed, depend on the thread
    # count: a fixed default also gives the same result on machines with different core counts.
    threads: int = 1
    # Threads of the exact noise sampler (numba's loop, cramc[fast]; it releases the GIL): the samples of an MVM
    # are drawn in two blocks from two child streams whatever this is, so the result does not depend on it.
    noise_threads: int = 2


@dataclass
class Result:
    model: onnx.ModelProto
    log: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch (and epoch 0: before training)
    wall_s: float = 0.0


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise UserError(NEEDS_TORCH) from None
    return torch


def finetune(
    model_path: str,
    data: dict[str, np.ndarray],
    labels: np.ndarray,
    faults: FaultModel,
    opts: Options = Options(),
    calibration: dict[str, np.ndarray] | None = None,
    log: TextIO = sys.stderr,
) -> Result:
    """Fine-tune the float model at `model_path`; return the tuned model and the training log."""
    torch = _torch()
    _check_options(opts)
    threads = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    try:
        return _finetune(torch, model_path, data, labels, faults, opts, calibration, log)
    finally:
        torch.set_num_threads(threads)


def _finetune(
    torch: Any,
    model_path: str,
    data: dict[str, np.ndarray],
    labels: np.ndarray,
    faults: FaultModel,
    opts: Options,
    calibration: dict[str, np.ndarray] | None,
    log: TextIO,
) -> Result:
    from cramc.train.qat import QatGraph

    t0 = time.perf_counter()
    model = load_model(model_path)
    if quantize.is_quantised(model):
        raise UserError(f"{model_path}: cramc finetune needs a float model (this one is already quantised)")
    shapes = _input_shapes(model)
    x = _inputs(model, data, shapes, "--data")
    n = next(iter(x.values())).shape[0]
    y = _labels(labels, n)
    calib = (
        _inputs(model, calibration, shapes, "--calibration")
        if calibration is not None
        else {k: v[:DEFAULT_CALIBRATION] for k, v in x.items()}
    )
    net = QatGraph(model, faults, opts.rows, opts.noise, opts.range_grad)
    net.noise_threads = opts.noise_threads
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    opt = Adam(torch, list(net.parameters()), lr=opts.lr)
    xt = {k: torch.from_numpy(v) for k, v in x.items()}
    yt = torch.from_numpy(y)
    first = net.graph.output[0].name
    result = Result(model)
    quantised: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None  # the last weights quantised, and how
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(opts.epochs + 1):
            t_ep = time.perf_counter()  # an epoch's time includes its quantisation (reused by epoch 1: ~0)
            c_ep = time.process_time()  # and its CPU time (the process's, all threads): the figure under load
            state = net.state()
            if quantised is None or any(not np.array_equal(v, quantised[0][k]) for k, v in state.items()):
                quantised = (state, _qparams(export(model, state), calib, Path(tmp)))
            net.qparams = quantised[1]  # epoch 1 starts from the weights epoch 0 quantised: the same result
            if epoch == 0:
                acc = _accuracy(net, xt, yt, first, gen)
                entry = {
                    "epoch": 0,
                    "accuracy_faulty": acc,
                    "wall_s": time.perf_counter() - t_ep,
                    "cpu_s": time.process_time() - c_ep,
                }
                print(
                    f"before: accuracy on the training data under injected faults {acc:.4f} "
                    f"({faults.name}; {opts.noise} noise; {entry['wall_s']:.2f} s, CPU {entry['cpu_s']:.2f} s)",
                    file=log,
                )
                result.log.append(entry)
                continue
            net.train()
            losses, correct = [], 0
            order = rng.permutation(n)
            for start in range(0, n, opts.batch_size):
                idx = torch.from_numpy(order[start : start + opts.batch_size])
                out = net({k: v[idx] for k, v in xt.items()}, gen)[first]
                out = out.reshape(out.shape[0], -1)
                loss = torch.nn.functional.cross_entropy(out, yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                correct += int((out.argmax(1) == yt[idx]).sum())
            entry = {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "accuracy_faulty": correct / n,
                "wall_s": time.perf_counter() - t_ep,
                "cpu_s": time.process_time() - c_ep,
            }
            result.log.append(entry)
            print(
                f"epoch {epoch}/{opts.epochs}: loss {entry['loss']:.4f}, training accuracy under injected "
                f"faults {entry['accuracy_faulty']:.4f} ({entry['wall_s']:.2f} s, CPU {entry['cpu_s']:.2f} s)",
                file=log,
            )
    result.model = export(model, net.state())
    result.wall_s = time.perf_counter() - t0
    return result


class Adam:
    """torch.optim.Adam's default update (no weight decay, amsgrad, foreach or fused), step for step the same.

    torch.optim.Optimizer imports torch._dynamo when it is first constructed (about 3 s of start-up, more
    than a plain LeNet-5 epoch on this data); this is the same arithmetic, the same in-place ops in the same
    order as torch's _single_tensor_adam (tests/finetune/test_finetune_torch.py compares them bit for bit).
    """

    def __init__(
        self, torch: Any, params: list[Any], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        self.torch, self.params, self.lr, self.betas, self.eps = torch, params, lr, betas, eps
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.steps = [0.0 for _ in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        beta1, beta2 = self.betas
        with self.torch.no_grad():
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                grad, exp_avg, exp_avg_sq = p.grad, self.exp_avg[i], self.exp_avg_sq[i]
                self.steps[i] = step = float(np.float32(self.steps[i] + 1))  # torch counts in a float32 tensor
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = self.lr / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(self.eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)


def export(model: onnx.ModelProto, params: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The model with the named initializers replaced (same graph, names, shapes and types)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in params:
            old = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(params[t.name].astype(old.dtype).reshape(old.shape), t.name))
    onnx.checker.check_model(out)
    return out


def _check_options(opts: Options) -> None:
    if opts.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if not opts.lr > 0:
        raise UserError("--lr must be positive")
    if opts.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if opts.seed < 0:
        raise UserError("--seed must be non-negative")
    if opts.rows < 1:
        raise UserError("--rows must be at least 1")
    if opts.noise_threads < 1:
        raise UserError("noise_threads must be at least 1")
    if opts.threads < 0:
        raise UserError("threads must be non-negative (0: PyTorch's default)")


def _input_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Per-sample input shapes: the batch axis (size 1 or symbolic) dropped."""
    static = onnx.ModelProto()
    static.CopyFrom(model)
    fold_constants.static_batch(static)
    out = {}
    for vi in static.graph.input:
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise UserError(f"input '{vi.name}': cramc finetune needs float inputs")
        shape = [d.dim_value for d in tt.shape.dim]
        if not shape or shape[0] != 1:
            raise UserError(
                f"input '{vi.name}' has shape {shape}: cramc finetune needs a leading batch axis (size 1 or symbolic)"
            )
        out[vi.name] = shape[1:]
    return out


def _inputs(
    model: onnx.ModelProto, data: dict[str, np.ndarray], shapes: dict[str, list[int]], what: str
) -> dict[str, np.ndarray]:
    for name in data:
        if name not in shapes:
            raise UserError(f"{what}: array '{name}' matches no model input (inputs: {', '.join(shapes)})")
    out = {}
    for name, shape in shapes.items():
        if name not in data:
            raise UserError(f"{what}: no array named '{name}' (the model's inputs: {', '.join(shapes)})")
        v = np.asarray(data[name])
        if v.ndim >= 2 and list(v.shape[1:]) == [1, *shape]:
            v = v.reshape(v.shape[0], *shape)  # [N, 1, ...]: the batch axis of size 1 included, as compile accepts
        if not np.issubdtype(v.dtype, np.number) or list(v.shape[1:]) != shape:
            raise UserError(f"{what}: '{name}' has shape {list(v.shape)}; expected [N, {', '.join(map(str, shape))}]")
        out[name] = np.ascontiguousarray(v, dtype=np.float32)
    if len({v.shape[0] for v in out.values()}) > 1:
        raise UserError(f"{what}: the arrays have different numbers of samples")
    return out


def _labels(labels: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise UserError(
            f"--labels: expected {n} non-negative integer class labels, got shape {list(y.shape)} of {y.dtype}"
        )
    return y.astype(np.int64)


def _qparams(model: onnx.ModelProto, calib: dict[str, np.ndarray], tmp: Path) -> dict[str, Any]:
    """Activation quantisation of the current model, exactly as cramc compile's frontend chooses it."""
    from cramc.frontend.pipeline import run_frontend
    from cramc.train.qat import activation_qparams

    path = tmp / "current.onnx"
    onnx.save(model, str(path))
    fe = run_frontend(str(path), dict(calib), log=io.StringIO())
    return activation_qparams(fe.qmodel)


def _accuracy(net: Any, x: dict[str, Any], y: Any, first: str, gen: Any, batch: int = 256) -> float:
    import torch

    net.eval()
    correct = 0
    n = y.shape[0]
    with torch.no_grad():
        for s in range(0, n, batch):
            out = net({k: v[s : s + batch] for k, v in x.items()}, gen)[first]
            correct += int((out.reshape(out.shape[0], -1).argmax(1) == y[s : s + batch]).sum())
    return correct / max(n, 1)
