"""ONNX pass: legalisation and quantisation.

Legalisation checks every operator against what cramc lowers (naming the op
type, the node and the supported list), removes inference no-ops (Dropout,
Identity) and brings the opset to one that per-channel QDQ needs.  A float
model is then quantised with onnxruntime's own static quantiser (QDQ format,
per-channel weights) on the calibration data; cramc never quantises by hand.
Already-quantised models (QDQ or QOperator) pass through unchanged.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings

import numpy as np
import onnx
from onnx import version_converter

from cramc.errors import UserError

NAME = "legalize-quantize"

FLOAT_OPS = {
    "Gemm", "MatMul", "Conv", "Relu", "Clip", "LeakyRelu", "Add", "Sum", "Sub", "Mul", "BatchNormalization",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Concat",
    "Dropout", "Identity", "Softmax", "LRN", "Squeeze", "Unsqueeze", "Pad",
}
QUANT_OPS = {
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
    "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearLeakyRelu",
    "QLinearAveragePool", "Cast",
}
SUPPORTED = FLOAT_OPS | QUANT_OPS
QUANTISED_MARKERS = QUANT_OPS - {"Cast"}


def is_quantised(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QUANTISED_MARKERS for n in model.graph.node)


def legalise(model: onnx.ModelProto) -> onnx.ModelProto:
    for n in model.graph.node:
        if n.op_type not in SUPPORTED or n.domain not in ("", "ai.onnx", "com.microsoft"):
            raise UserError(
                f"node '{n.name or n.output[0]}': operator {n.op_type}"
                f"{' (domain ' + n.domain + ')' if n.domain else ''} is not supported; supported operators: "
                f"{', '.join(sorted(SUPPORTED))}"
            )
    _drop_noops(model)
    return model


def _drop_noops(model: onnx.ModelProto) -> None:
    g = model.graph
    outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    keep = []
    for n in g.node:
        if n.op_type in ("Dropout", "Identity") and n.output[0] not in outputs:
            rename[n.output[0]] = rename.get(n.input[0], n.input[0])
            continue
        keep.append(n)
    for n in keep:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    del g.node[:]
    g.node.extend(keep)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _upgrade(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    if _opset(model) >= version:
        return model
    try:
        return version_converter.convert_version(model, version)
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise UserError(f"cannot convert the model from opset {_opset(model)} to {version} for quantisation: {e}") from None


def check_calibration(model: onnx.ModelProto, data: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """Calibration/validation arrays must match the model's inputs (leading axis = samples)."""
    inputs = {i.name: i for i in model.graph.input}
    out: dict[str, np.ndarray] = {}
    for name, vi in inputs.items():
        if name not in data:
            raise UserError(f"{what}: no array named '{name}' (the model's inputs: {', '.join(inputs)})")
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        x = data[name]
        want = shape[1:] if shape and shape[0] == 1 else shape
        if list(x.shape[1:]) != want:
            raise UserError(f"{what}: '{name}' has shape {list(x.shape)}; expected [N, {', '.join(map(str, want))}]")
        out[name] = x.astype(np.float32) if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT else x
    extra = set(data) - set(inputs)
    if extra:
        raise UserError(f"{what}: arrays {', '.join(sorted(extra))} match no model input")
    return out


def synthetic_calibration(model: onnx.ModelProto, n: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = rng.random((n, *shape[1:]), dtype=np.float32)
    return out


def quantise(
    model: onnx.ModelProto,
    calibration: dict[str, np.ndarray],
    weight_bits: int = 8,
    act_bits: int = 8,
) -> onnx.ModelProto:
    """Quantise a float model to QDQ with onnxruntime.quantization.quantize_static."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    wtypes = {8: QuantType.QInt8, 4: QuantType.QInt4}
    atypes = {8: QuantType.QUInt8, 16: QuantType.QUInt16}
    if weight_bits not in wtypes:
        raise UserError(f"--weight-bits {weight_bits}: onnxruntime quantises weights to 8 or 4 bits")
    if act_bits not in atypes:
        raise UserError(f"--act-bits {act_bits}: onnxruntime quantises activations to 8 or 16 bits")
    model = _upgrade(model, 21 if weight_bits == 4 or act_bits == 16 else 13)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            n = next(iter(calibration.values())).shape[0]
            self.batches = iter([{k: v[i : i + 1] for k, v in calibration.items()} for i in range(n)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "qdq.onnx")
        onnx.save(model, src)
        logging.getLogger().setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                quantize_static(
                    src,
                    dst,
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    weight_type=wtypes[weight_bits],
                    activation_type=atypes[act_bits],
                )
            except Exception as e:  # noqa: BLE001 - surface onnxruntime's reason
                raise UserError(f"onnxruntime could not quantise the model: {e}") from None
        return onnx.load(dst)
