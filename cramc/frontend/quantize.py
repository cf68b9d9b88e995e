"""ONNX pass: legalisation and quantisation.

Legalisation checks every operator against what cramc lowers (the importer's
handler registry, cramc.frontend.importer.SUPPORTED_OPS; the error names the op
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
from cramc.frontend.importer import QUANTISED_OPS, SUPPORTED_OPS

NAME = "legalize-quantize"


def is_quantised(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QUANTISED_OPS for n in model.graph.node)


def legalise(model: onnx.ModelProto) -> onnx.ModelProto:
    for n in model.graph.node:
        if n.op_type not in SUPPORTED_OPS or n.domain not in ("", "ai.onnx", "com.microsoft"):
            raise UserError(
                f"node '{n.name or n.output[0]}': operator {n.op_type}"
                f"{' (domain ' + n.domain + ')' if n.domain else ''} is not supported; supported operators: "
                f"{', '.join(sorted(SUPPORTED_OPS))}"
            )
    _drop_noops(model)
    _legal_gemm(model)
    _legal_matmul(model)
    return model


def _legal_matmul(model: onnx.ModelProto) -> None:
    """A constant 1-D right operand [K] becomes [K, 1] and the result is reshaped back, so its
    per-channel scales lie along the output axis."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*g.value_info, *g.output]
        if vi.type.tensor_type.HasField("shape")
    }
    new_nodes: list[onnx.NodeProto] = []
    for n in g.node:
        new_nodes.append(n)
        if n.op_type != "MatMul" or n.input[1] not in inits or len(inits[n.input[1]].dims) != 1:
            continue
        out = n.output[0]
        if out not in shapes:
            continue
        b = numpy_helper.to_array(inits[n.input[1]])
        g.initializer.append(numpy_helper.from_array(b.reshape(-1, 1), n.input[1] + "_col"))
        g.initializer.append(numpy_helper.from_array(np.array(shapes[out], dtype=np.int64), out + "_shape"))
        n.input[1] = n.input[1] + "_col"
        n.output[0] = out + "_col"
        new_nodes.append(
            helper.make_node("Reshape", [out + "_col", out + "_shape"], [out], name=(n.name or out) + "_squeeze")
        )
    del g.node[:]
    g.node.extend(new_nodes)


def _legal_gemm(model: onnx.ModelProto) -> None:
    """Give every Gemm the form onnxruntime's quantiser handles: A not transposed, bias 1-D [N].

    transA becomes an explicit Transpose; a constant bias that broadcasts along the rows becomes
    a vector, any other bias a separate Add after the Gemm.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes: list[onnx.NodeProto] = []
    for n in g.node:
        if n.op_type != "Gemm":
            new_nodes.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        # fold alpha into the weights and beta into the bias, so onnxruntime sees a plain Gemm
        for idx, key, factor in ((1, "alpha", alpha), (2, "beta", beta)):
            if factor != 1.0 and len(n.input) > idx and n.input[idx] in inits:
                name = f"{n.input[idx]}_{key}"
                scaled = numpy_helper.to_array(inits[n.input[idx]]) * np.float32(factor)
                g.initializer.append(numpy_helper.from_array(scaled, name))
                inits[name] = g.initializer[-1]
                n.input[idx] = name
                _set_attr(n, key, 1.0)
        if attrs.get("transA", 0):
            t_out = n.output[0] + "_transA"
            new_nodes.append(
                helper.make_node("Transpose", [n.input[0]], [t_out], name=(n.name or t_out) + "_transA", perm=[1, 0])
            )
            n.input[0] = t_out
            for a in n.attribute:
                if a.name == "transA":
                    a.i = 0
        new_nodes.append(n)
        if len(n.input) > 2 and n.input[2] in inits and n.input[1] in inits:
            c = numpy_helper.to_array(inits[n.input[2]])
            b = numpy_helper.to_array(inits[n.input[1]])
            nout = b.shape[0] if attrs.get("transB", 0) else b.shape[1]
            if c.size == 1 or c.shape in ((nout,), (1, nout)):
                vec = np.broadcast_to(c.reshape(-1), (nout,)).astype(c.dtype)
                name = n.input[2] + "_vec"
                g.initializer.append(numpy_helper.from_array(vec, name))
                n.input[2] = name
            else:
                cname = n.input[2]
                out = n.output[0]
                n.output[0] = out + "_nobias"
                del n.input[2]
                new_nodes.append(helper.make_node("Add", [n.output[0], cname], [out], name=(n.name or out) + "_bias"))
    del g.node[:]
    g.node.extend(new_nodes)


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


def _set_attr(node: onnx.NodeProto, name: str, value: float) -> None:
    for a in node.attribute:
        if a.name == name:
            a.f = value


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _upgrade(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    if _opset(model) >= version:
        return model
    try:
        return version_converter.convert_version(model, version)
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise UserError(
            f"cannot convert the model from opset {_opset(model)} to {version} for quantisation: {e}"
        ) from None


def check_calibration(model: onnx.ModelProto, data: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """Calibration/validation arrays must match the model's inputs (leading axis = samples).

    A model input of shape [1, ...] (batch 1) takes data [N, ...] or [N, 1, ...]; any other shape S
    takes [N, *S].  The result is always [N, *S].
    """
    inputs = {i.name: i for i in model.graph.input}
    out: dict[str, np.ndarray] = {}
    for name, vi in inputs.items():
        if name not in data:
            raise UserError(f"{what}: no array named '{name}' (the model's inputs: {', '.join(inputs)})")
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        x = data[name]
        if shape and shape[0] == 1 and list(x.shape[1:]) == shape[1:]:
            x = x.reshape(x.shape[0], *shape)
        if list(x.shape[1:]) != shape:
            want = shape[1:] if shape and shape[0] == 1 else shape
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
        out[vi.name] = rng.random((n, *shape), dtype=np.float32)
    return out


WEIGHT_BITS = (8, 4)  # onnxruntime's QInt8 / QInt4
ACT_BITS = (8, 16)  # onnxruntime's QUInt8 / QUInt16


def check_bits(weight_bits: int, act_bits: int) -> None:
    """Reject precisions onnxruntime cannot quantise to, whether or not the model still needs quantising."""
    if weight_bits not in WEIGHT_BITS:
        raise UserError(f"--weight-bits {weight_bits}: onnxruntime quantises weights to 8 or 4 bits")
    if act_bits not in ACT_BITS:
        raise UserError(f"--act-bits {act_bits}: onnxruntime quantises activations to 8 or 16 bits")


def quantise(
    model: onnx.ModelProto,
    calibration: dict[str, np.ndarray],
    weight_bits: int = 8,
    act_bits: int = 8,
) -> onnx.ModelProto:
    """Quantise a float model to QDQ with onnxruntime.quantization.quantize_static."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    check_bits(weight_bits, act_bits)
    wtypes = {8: QuantType.QInt8, 4: QuantType.QInt4}
    atypes = {8: QuantType.QUInt8, 16: QuantType.QUInt16}
    model = _upgrade(model, 21 if weight_bits == 4 or act_bits == 16 else 13)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            n = next(iter(calibration.values())).shape[0]
            self.batches = iter([{k: v[i] for k, v in calibration.items()} for i in range(n)])

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
                    # per-channel scales must follow the output axis so they fold into requantisation
                    extra_options={"QDQOpTypePerChannelSupportToAxis": {"MatMul": -1}},
                )
            except Exception as e:  # noqa: BLE001 - surface onnxruntime's reason
                raise UserError(f"onnxruntime could not quantise the model: {e}") from None
        return onnx.load(dst)
