"""Warnings for calibration data that cannot be what a float model expects.

onnxruntime's quantiser takes every activation range from the calibration data, so data unlike the
inputs the model was trained on give a quantised model that fails on real inputs, while cramc's
self-validation (onnxruntime on that same quantised model) still says "match".  Two mistakes are
common and can be recognised without the training data:

- **constant data**: every sample the same (all zeros, say).  Every range is that of one input.
- **the wrong scale**: raw pixels 0..255 (or 0..16) for a model trained on [0, 1].  What the model
  expects is seen in its weights: training keeps the pre-activations of the first linear layer (Conv,
  Gemm, MatMul; after any reshaping or normalisation the model does itself) of order 1 on its training
  data (0.7 .. 1.0 for the shipped digits and MNIST models, measured as below; the light models' random
  weights give 0.002 .. 0.12 on [0, 1) inputs).  Inputs 255 times too large make that spread about 200.

The spread is the median over the layer's output channels of each channel's standard deviation over
the calibration samples (and positions).  A spread above SPREAD_LIMIT warns; so does one above
SPREAD_WHOLE when the data are whole numbers over a range of at least 2 (raw counts or pixels, not
[0, 1] values).  When the model has no first linear layer to look at, whole numbers over a range of at
least WHOLE_RANGE warn on their own.
"""

from __future__ import annotations

import numpy as np
import onnx

#: Median first-layer pre-activation spread beyond which the inputs are far larger than trained ones.
SPREAD_LIMIT = 50.0
#: The same for whole-number data (raw pixels or counts): a lower bar, as the data already look raw.
SPREAD_WHOLE = 4.0
#: Range of whole-number data that warns when no first layer can be measured.
WHOLE_RANGE = 16.0
#: Calibration samples the first layer is run on.
MAX_SAMPLES = 64

#: Operators between an input and the first linear layer that the spread is measured through.
_PASS = {
    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast",
    "Sub", "Add", "Mul", "Div", "BatchNormalization", "Pad",
}  # fmt: skip
_LINEAR = {"Conv", "Gemm", "MatMul", "ConvTranspose"}


def calibration_warnings(model: onnx.ModelProto, calibration: dict[str, np.ndarray]) -> list[str]:
    """Why the calibration data of a float model look unlike its training data (empty if they do not)."""
    out: list[str] = []
    for name, x in calibration.items():
        if x.size == 0 or x.shape[0] == 0:
            continue
        n = x.shape[0]
        flat = x.reshape(n, -1)
        what = None
        if np.ptp(flat) == 0:
            what = f"every value of the {n} sample(s) is {float(flat[0, 0]):g}"
        elif n > 1 and (flat == flat[:1]).all():
            what = f"all {n} samples are identical"
        if what:
            out.append(
                f"calibration data '{name}': {what}; the quantiser takes every activation range from them, so "
                "real inputs will be quantised badly (give representative samples of the real inputs)"
            )
            continue
        if not np.issubdtype(x.dtype, np.floating):
            continue
        lo, hi = float(x.min()), float(x.max())
        whole = bool((x == np.round(x)).all()) and hi - lo >= 2
        values = f"{'whole numbers ' if whole else 'values '}{lo:g} .. {hi:g}"
        layer = first_layer_spread(model, name, x[:MAX_SAMPLES])
        if layer is None:
            if whole and hi - lo >= WHOLE_RANGE:
                out.append(
                    f"calibration data '{name}' hold {values}, like raw pixels or counts; if the model was trained "
                    "on scaled inputs (e.g. [0, 1]), scale the calibration data the same way"
                )
            continue
        node, spread = layer
        if spread > SPREAD_LIMIT or (whole and spread > SPREAD_WHOLE):
            out.append(
                f"calibration data '{name}' ({values}) look unlike the model's training data: its first layer, "
                f"{node}, sees pre-activations with a spread of {spread:.3g} (median standard deviation per channel) "
                "where trained networks see about 1; the data are probably scaled differently (e.g. 0 .. 255 pixels "
                "for a model trained on [0, 1])"
            )
    return out


def _first_linear(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    """The first Conv/Gemm/MatMul the input reaches through reshaping and elementwise normalisation."""
    reached = {name}
    for node in model.graph.node:  # topologically sorted (ONNX requires it)
        if not any(i in reached for i in node.input):
            continue
        if node.op_type in _LINEAR:
            return node
        if node.op_type in _PASS:
            reached.update(node.output)
    return None


def first_layer_spread(model: onnx.ModelProto, name: str, x: np.ndarray) -> tuple[str, float] | None:
    """(node name, median per-channel standard deviation of its output over the samples x), or None."""
    node = _first_linear(model, name)
    if node is None:
        return None
    try:
        import onnxruntime as ort

        sub = onnx.utils.Extractor(model).extract_model([name], [node.output[0]])
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
        z = np.concatenate([np.asarray(sess.run(None, {name: x[i]})[0]) for i in range(x.shape[0])])
    except Exception:  # noqa: BLE001 - a layer that cannot be cut out or run alone: no measurement, no warning
        return None
    if z.ndim < 2 or not np.issubdtype(z.dtype, np.floating):
        return None
    axis = 1 if node.op_type in ("Conv", "ConvTranspose") else -1
    per = np.moveaxis(z, axis, -1).reshape(-1, z.shape[axis]).astype(np.float64)
    return node.name or node.output[0], float(np.median(per.std(axis=0)))
