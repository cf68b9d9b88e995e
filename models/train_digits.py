"""Train and export two small float ONNX models on scikit-learn's digits data.

The scikit-learn bundled handwritten digits (``sklearn.datasets.load_digits``:
1797 greyscale 8x8 images, pixel values 0..16, 10 classes) are normalised to
float32 in [0, 1] (divided by 16) and split with a fixed, stratified
``train_test_split(test_size=0.2, random_state=0)`` into 1437 training and 360
test samples.

Two models are trained with plain numpy (hand-written forward/backward passes
and Adam), so the script only needs numpy, scikit-learn and onnx (plus
onnxruntime for the final check):

* ``digits_mlp.onnx``: ``input`` [N,64] -> Gemm(64->64) -> Relu ->
  Gemm(64->10) -> ``logits`` [N,10].
* ``digits_cnn.onnx``: ``input`` [N,1,8,8] -> Conv(1->8, 3x3, pad 1) -> Relu ->
  MaxPool(2x2/2) -> Conv(8->16, 3x3, pad 1) -> Relu -> MaxPool(2x2/2) ->
  Flatten -> Gemm(64->10) -> ``logits`` [N,10].

The script also writes the test set, a 64-sample calibration set drawn from the
training split, and ``digits_accuracy.json``.  After export it checks with
onnxruntime (CPUExecutionProvider) that each ONNX model reproduces the numpy
model's logits and predictions.

Usage::

    python models/train_digits.py
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
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

MODELS_DIR = Path(__file__).resolve().parent

SPLIT_SEED = 0
TEST_SIZE = 0.2
N_CALIB = 64
OPSET = 17
IR_VERSION = 8
PRODUCER = "cramc/models/train_digits.py"

SPLIT_DESCRIPTION = (
    "sklearn.datasets.load_digits, X/16 as float32; "
    "train_test_split(X, y, test_size=0.2, random_state=0, stratify=y) "
    "-> 1437 train / 360 test; calibration = first 64 samples of the train split"
)

Params = dict[str, np.ndarray]
Grads = dict[str, np.ndarray]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, x_test, y_train, y_test)`` with x as float32 [n, 64]."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)
    return x_train, x_test, y_train, y_test


# --------------------------------------------------------------------------
# Numpy layers
# --------------------------------------------------------------------------


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy loss and its gradient w.r.t. ``logits``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
    dlogits = probs
    dlogits[np.arange(n), y] -= 1.0
    return loss, (dlogits / n).astype(np.float32)


def im2col_3x3(x: np.ndarray) -> np.ndarray:
    """[N,C,H,W] -> [N*H*W, C*9] patches of a 3x3, stride 1, pad 1 convolution."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    # windows: [N,C,H,W,3,3] -> [N,H,W,C,3,3] -> rows ordered (n,h,w), cols (c,kh,kw)
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    win = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5))
    return win.reshape(n * h * w, c * 9)


def col2im_3x3(dcols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col_3x3`: scatter-add patch gradients back to [N,C,H,W]."""
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, 3, 3)
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i : i + h, j : j + w] += d[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, 1:-1, 1:-1]


def conv3x3_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3/stride 1/pad 1 convolution; returns output [N,O,H,W] and the im2col cache."""
    n, _, h, wd = x.shape
    cols = im2col_3x3(x)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def conv3x3_backward(
    dout: np.ndarray,
    cols: np.ndarray,
    w: np.ndarray,
    x_shape: tuple[int, int, int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dw, db)`` of :func:`conv3x3_forward`."""
    o = w.shape[0]
    d2 = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (d2.T @ cols).reshape(w.shape)
    db = d2.sum(axis=0)
    dcols = d2 @ w.reshape(o, -1)
    return col2im_3x3(dcols, x_shape), dw, db


def maxpool2_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2/stride 2 max pool; returns output and the one-hot argmax mask."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, c, h // 2, w // 2, 4)
    idx = win.argmax(axis=-1)
    mask = np.zeros_like(win)
    np.put_along_axis(mask, idx[..., None], 1.0, axis=-1)
    return np.take_along_axis(win, idx[..., None], axis=-1)[..., 0], mask


def maxpool2_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient of :func:`maxpool2_forward` w.r.t. its input."""
    n, c, h2, w2, _ = mask.shape
    d = (mask * dout[..., None]).reshape(n, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return d.reshape(n, c, h2 * 2, w2 * 2)


# --------------------------------------------------------------------------
# Models (Gemm weights are stored [out, in], i.e. ONNX Gemm with transB=1)
# --------------------------------------------------------------------------


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """He-normal float32 initialisation."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def init_mlp(rng: np.random.Generator, hidden: int = 64) -> Params:
    """MLP parameters; Gemm weights are [out, in]."""
    return {
        "fc1.weight": he_normal(rng, (hidden, 64), 64),
        "fc1.bias": np.zeros(hidden, np.float32),
        "fc2.weight": he_normal(rng, (10, hidden), hidden),
        "fc2.bias": np.zeros(10, np.float32),
    }


def mlp_forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """x: [N,64] -> logits [N,10] and the activations needed for backward."""
    h_pre = x @ p["fc1.weight"].T + p["fc1.bias"]
    h = np.maximum(h_pre, 0.0)
    logits = h @ p["fc2.weight"].T + p["fc2.bias"]
    return logits, {"x": x, "h_pre": h_pre, "h": h}


def mlp_backward(p: Params, cache: dict[str, np.ndarray], dlogits: np.ndarray) -> Grads:
    """Parameter gradients of :func:`mlp_forward`."""
    g: Grads = {
        "fc2.weight": dlogits.T @ cache["h"],
        "fc2.bias": dlogits.sum(axis=0),
    }
    dh = (dlogits @ p["fc2.weight"]) * (cache["h_pre"] > 0)
    g["fc1.weight"] = dh.T @ cache["x"]
    g["fc1.bias"] = dh.sum(axis=0)
    return g


def init_cnn(rng: np.random.Generator) -> Params:
    """CNN parameters; Conv weights are [out, in, 3, 3], Gemm weights [out, in]."""
    return {
        "conv1.weight": he_normal(rng, (8, 1, 3, 3), 1 * 9),
        "conv1.bias": np.zeros(8, np.float32),
        "conv2.weight": he_normal(rng, (16, 8, 3, 3), 8 * 9),
        "conv2.bias": np.zeros(16, np.float32),
        "fc.weight": he_normal(rng, (10, 64), 64),
        "fc.bias": np.zeros(10, np.float32),
    }


def cnn_forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """x: [N,1,8,8] -> logits [N,10]."""
    a1, cols1 = conv3x3_forward(x, p["conv1.weight"], p["conv1.bias"])  # N,8,8,8
    r1 = np.maximum(a1, 0.0)
    p1, m1 = maxpool2_forward(r1)  # N,8,4,4
    a2, cols2 = conv3x3_forward(p1, p["conv2.weight"], p["conv2.bias"])  # N,16,4,4
    r2 = np.maximum(a2, 0.0)
    p2, m2 = maxpool2_forward(r2)  # N,16,2,2
    flat = p2.reshape(p2.shape[0], -1)  # N,64 (C,H,W order == ONNX Flatten)
    logits = flat @ p["fc.weight"].T + p["fc.bias"]
    cache = {
        "x": x,
        "cols1": cols1,
        "a1": a1,
        "m1": m1,
        "p1": p1,
        "cols2": cols2,
        "a2": a2,
        "m2": m2,
        "flat": flat,
    }
    return logits, cache


def cnn_backward(p: Params, c: dict[str, np.ndarray], dlogits: np.ndarray) -> Grads:
    """Parameter gradients of :func:`cnn_forward`."""
    g: Grads = {"fc.weight": dlogits.T @ c["flat"], "fc.bias": dlogits.sum(axis=0)}
    n = dlogits.shape[0]
    dp2 = (dlogits @ p["fc.weight"]).reshape(n, 16, 2, 2)
    da2 = maxpool2_backward(dp2, c["m2"]) * (c["a2"] > 0)
    dp1, g["conv2.weight"], g["conv2.bias"] = conv3x3_backward(da2, c["cols2"], p["conv2.weight"], c["p1"].shape)
    da1 = maxpool2_backward(dp1, c["m1"]) * (c["a1"] > 0)
    _, g["conv1.weight"], g["conv1.bias"] = conv3x3_backward(da1, c["cols1"], p["conv1.weight"], c["x"].shape)
    return g


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


class Adam:
    """Adam with decoupled weight decay on weight tensors (AdamW)."""

    def __init__(
        self,
        params: Params,
        lr: float,
        weight_decay: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        self.lr = lr
        self.wd = weight_decay
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: Params, grads: Grads, lr: float) -> None:
        """Update ``params`` in place with learning rate ``lr`` (for scheduling)."""
        self.t += 1
        c1 = 1.0 - self.b1**self.t
        c2 = 1.0 - self.b2**self.t
        for k, p in params.items():
            g = grads[k].astype(np.float32)
            self.m[k] = self.b1 * self.m[k] + (1.0 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1.0 - self.b2) * g * g
            update = (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)
            if k.endswith("weight") and self.wd > 0.0:
                update = update + self.wd * p
            params[k] = (p - lr * update).astype(np.float32)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (all runs are seeded, hence reproducible)."""

    epochs: int
    lr: float
    weight_decay: float = 1e-4
    batch_size: int = 32
    init_seed: int = 0
    shuffle_seed: int = 1


ForwardFn = Callable[[Params, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
BackwardFn = Callable[[Params, dict[str, np.ndarray], np.ndarray], Grads]


def train(
    name: str,
    params: Params,
    forward: ForwardFn,
    backward: BackwardFn,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
) -> Params:
    """Mini-batch AdamW with a cosine learning-rate schedule."""
    epochs, lr, batch_size = cfg.epochs, cfg.lr, cfg.batch_size
    rng = np.random.default_rng(cfg.shuffle_seed)
    opt = Adam(params, lr, cfg.weight_decay)
    n = x.shape[0]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        losses = []
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits, cache = forward(params, x[idx])
            loss, dlogits = softmax_cross_entropy(logits, y[idx])
            grads = backward(params, cache, dlogits)
            cur_lr = lr * 0.5 * (1.0 + np.cos(np.pi * step / total))
            opt.step(params, grads, float(cur_lr))
            losses.append(loss)
            step += 1
        if (epoch + 1) % max(1, epochs // 5) == 0:
            print(f"  [{name}] epoch {epoch + 1:3d}/{epochs}  loss {np.mean(losses):.4f}")
    return params


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float((logits.argmax(axis=1) == y).mean())


# --------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------


def _initializers(params: Params) -> list[TensorProto]:
    return [numpy_helper.from_array(v.astype(np.float32), name=k) for k, v in params.items()]


def _finish(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def export_mlp(params: Params) -> onnx.ModelProto:
    """ONNX graph input[N,64] -> Gemm -> Relu -> Gemm -> logits[N,10]."""
    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node(
            "Gemm",
            ["relu1", "fc2.weight", "fc2.bias"],
            ["logits"],
            name="fc2",
            transB=1,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=_initializers(params),
    )
    return _finish(graph, "Digits MLP 64-64-10 (Gemm/Relu/Gemm), input = 8x8 digit / 16.")


def export_cnn(params: Params) -> onnx.ModelProto:
    """ONNX graph input[N,1,8,8] -> 2x(Conv/Relu/MaxPool) -> Flatten -> Gemm."""
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "conv1.weight", "conv1.bias"],
            ["conv1"],
            name="conv1",
            **conv,
        ),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", **pool),
        helper.make_node(
            "Conv",
            ["pool1", "conv2.weight", "conv2.bias"],
            ["conv2"],
            name="conv2",
            **conv,
        ),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], name="pool2", **pool),
        helper.make_node("Flatten", ["pool2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=_initializers(params),
    )
    return _finish(
        graph,
        "Digits CNN: Conv(1->8,3x3)/Relu/MaxPool2 -> Conv(8->16,3x3)/Relu/MaxPool2 "
        "-> Flatten -> Gemm(64->10), input = 8x8 digit / 16.",
    )


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """Run a model with onnxruntime on the CPU and return its ``logits``."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def verify(name: str, path: Path, x: np.ndarray, y: np.ndarray, ref_logits: np.ndarray) -> float:
    """Check ONNX Runtime against the numpy model; return the ONNX test accuracy."""
    ort_logits = run_onnx(path, x)
    max_diff = float(np.abs(ort_logits - ref_logits).max())
    same_pred = bool((ort_logits.argmax(1) == ref_logits.argmax(1)).all())
    if not same_pred or max_diff > 1e-3:
        msg = f"{name}: ONNX != numpy (max diff {max_diff:.3g}, argmax ok {same_pred})"
        raise RuntimeError(msg)
    acc = accuracy(ort_logits, y)
    print(f"  [{name}] onnxruntime == numpy (max |diff| {max_diff:.2e}); acc {acc:.4f}")
    return acc


def build(
    name: str,
    init: Callable[[np.random.Generator], Params],
    forward: ForwardFn,
    backward: BackwardFn,
    export: Callable[[Params], onnx.ModelProto],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cfg: TrainConfig,
) -> float:
    """Train one model, export it to ``digits_<name>.onnx`` and verify it."""
    x_train, x_test, y_train, y_test = data
    t = time.perf_counter()
    params = init(np.random.default_rng(cfg.init_seed))
    params = train(name, params, forward, backward, x_train, y_train, cfg)
    ref = forward(params, x_test)[0]
    elapsed = time.perf_counter() - t
    print(f"  [{name}] numpy test accuracy {accuracy(ref, y_test):.4f} ({elapsed:.1f}s)")
    path = MODELS_DIR / f"digits_{name}.onnx"
    onnx.save(export(params), path)
    return verify(name, path, x_test, y_test, ref)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main() -> None:
    """Write the data files, train/export/verify both models, write the JSON."""
    t0 = time.perf_counter()
    x_train, x_test, y_train, y_test = load_split()
    x_calib = x_train[:N_CALIB]
    img = (-1, 1, 8, 8)
    print(f"digits: {len(x_train)} train / {len(x_test)} test")

    np.savez(MODELS_DIR / "digits_test_x_flat.npz", input=x_test)
    np.savez(MODELS_DIR / "digits_test_x_img.npz", input=x_test.reshape(img))
    np.save(MODELS_DIR / "digits_test_labels.npy", y_test)
    np.savez(MODELS_DIR / "digits_calib_flat.npz", input=x_calib)
    np.savez(MODELS_DIR / "digits_calib_img.npz", input=x_calib.reshape(img))

    mlp_acc = build(
        "mlp",
        init_mlp,
        mlp_forward,
        mlp_backward,
        export_mlp,
        (x_train, x_test, y_train, y_test),
        TrainConfig(epochs=100, lr=1e-3, init_seed=1, shuffle_seed=2),
    )
    cnn_acc = build(
        "cnn",
        init_cnn,
        cnn_forward,
        cnn_backward,
        export_cnn,
        (x_train.reshape(img), x_test.reshape(img), y_train, y_test),
        TrainConfig(epochs=60, lr=5e-3, init_seed=3, shuffle_seed=4),
    )

    results = {
        "mlp": {"test_accuracy": mlp_acc},
        "cnn": {"test_accuracy": cnn_acc},
        "split": SPLIT_DESCRIPTION,
        "n_test": len(y_test),
    }
    text = json.dumps(results, indent=2) + "\n"
    (MODELS_DIR / "digits_accuracy.json").write_text(text)
    print(text, end="")
    print(f"done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
