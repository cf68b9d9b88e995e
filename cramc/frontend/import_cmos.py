"""Importer handlers of everything that becomes CMOS operations.

Quantisation (QuantizeLinear, DequantizeLinear: DequantizeLinear of an
activation is materialised lazily, only where a float value is needed), the
com.microsoft QLinear element-wise operators (dequantise, operate, quantise),
activations, element-wise arithmetic, BatchNormalization that was not folded,
pooling and layout operators.  Each becomes IR operations whose semantics are
those of the ISA's CMOS instruction of the same name (cramc.isa.cmos).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from cramc.errors import UserError
from cramc.frontend.import_base import (
    DQ,
    NP_QTYPES,
    ONNX_QTYPES,
    Const,
    ImportState,
    QConst,
    Val,
    attrs_of,
    auto_pad,
    bcast,
    handles,
)
from cramc.isa.cmos import QRANGES


@handles("QuantizeLinear", quantised=True)
def op_quantize_linear(imp: ImportState, node: onnx.NodeProto) -> None:
    a = attrs_of(node)
    x = imp.get(node.input[0], node)
    scale = imp.const_value(node.input[1], node)
    zp = imp.get(node.input[2], node).value if len(node.input) > 2 and node.input[2] else np.uint8(0)  # type: ignore[union-attr]
    zp = np.asarray(zp)
    dt = NP_QTYPES.get(zp.dtype) or ONNX_QTYPES.get(a.get("output_dtype", 0), "u8")
    if len(node.input) > 2 and node.input[2]:
        t = next((t for t in imp.model.graph.initializer if t.name == node.input[2]), None)
        if t is not None and t.data_type in ONNX_QTYPES:
            dt = ONNX_QTYPES[t.data_type]
    if isinstance(x, (Const, QConst)):
        val = x.value if isinstance(x, Const) else x.real()
        s, z = bcast(scale, val, a.get("axis", 1)), bcast(zp, val, a.get("axis", 1))
        lo, hi = QRANGES[dt]
        q = np.clip(np.rint(val.astype(np.float32) / s.astype(np.float32)) + z.astype(np.int64), lo, hi)
        imp.env[node.output[0]] = Const(q.astype(np.int64))
        return
    src = imp.float_ref(node.input[0], node)
    attrs = {
        "scale": imp.const_attr(node.output[0] + "_scale", scale),
        "zp": imp.const_attr(node.output[0] + "_zp", zp, "i64"),
        "dtype": dt,
    }
    if np.asarray(scale).size > 1:
        attrs["axis"] = a.get("axis", 1)
    v = imp.emit("quant", node.output[0], [src], attrs, node.name or node.output[0])
    imp.env[node.output[0]] = v


@handles("DequantizeLinear", quantised=True)
def op_dequantize_linear(imp: ImportState, node: onnx.NodeProto) -> None:
    a = attrs_of(node)
    x = imp.get(node.input[0], node)
    scale = np.asarray(imp.const_value(node.input[1], node))
    zp = (
        np.asarray(imp.get(node.input[2], node).value)  # type: ignore[union-attr]
        if len(node.input) > 2 and node.input[2]
        else np.zeros((), np.int64)
    )
    if isinstance(x, Const):
        imp.env[node.output[0]] = QConst(x.value, scale, zp, a.get("axis", 1))
        return
    if not isinstance(x, Val) or not x.is_int:
        raise UserError(f"node '{node.name or node.output[0]}': DequantizeLinear of a non-integer value")
    if scale.size > 1:
        attrs = {
            "scale": imp.const_attr(node.output[0] + "_scale", scale),
            "zp": imp.const_attr(node.output[0] + "_zp", zp, "i64"),
            "axis": a.get("axis", 1),
        }
        imp.env[node.output[0]] = imp.emit("dequant", node.output[0], [x.ref], attrs, node.name)
        return
    dt = NP_QTYPES.get(zp.dtype, "u8")
    imp.env[node.output[0]] = DQ(x, float(scale.reshape(())), int(zp.reshape(())), dt)


def _dq_input(imp: ImportState, node: onnx.NodeProto, i: int) -> str:
    x = imp.get(node.input[i], node)
    s = imp.const_value(node.input[i + 1], node)
    z = imp.zp(node, i + 2)
    if isinstance(x, (Const, QConst)):
        val = QConst(x.value if isinstance(x, Const) else x.q, np.asarray(s), z, 1).real()
        return imp.g.const(node.input[i], val, "f32")
    if not isinstance(x, Val) or not x.is_int:
        raise UserError(
            f"node '{node.name or node.output[0]}' ({node.op_type}): input '{node.input[i]}' must be quantised"
        )
    return imp.emit(
        "dequant",
        node.input[i] + "_dq",
        [x.ref],
        {"scale": imp.const_attr(node.input[i] + "_s", s), "zp": imp.const_attr(node.input[i] + "_z", z, "i64")},
        node.name,
    ).ref


def _requant(imp: ImportState, node: onnx.NodeProto, f: Val, si: int, dt_from: int) -> None:
    sy = imp.const_value(node.input[si], node)
    zy = imp.zp(node, si + 1)
    zv = imp.get(node.input[si + 1], node) if len(node.input) > si + 1 and node.input[si + 1] else None
    dt = (
        NP_QTYPES.get(np.asarray(zv.value).dtype, "u8") if isinstance(zv, Const) else imp.int_dtype(node.input[dt_from])
    )
    imp.env[node.output[0]] = imp.emit(
        "quant",
        node.output[0],
        [f.ref],
        {
            "scale": imp.const_attr(node.output[0] + "_s", sy),
            "zp": imp.const_attr(node.output[0] + "_z", zy, "i64"),
            "dtype": dt,
        },
        node.name,
    )


@handles("QLinearAdd", quantised=True)
def op_q_linear_add(imp: ImportState, node: onnx.NodeProto) -> None:
    a, b = _dq_input(imp, node, 0), _dq_input(imp, node, 3)
    _requant(imp, node, imp.emit("add", node.output[0] + "_f", [a, b], {}, node.name), 6, 0)


@handles("QLinearMul", quantised=True)
def op_q_linear_mul(imp: ImportState, node: onnx.NodeProto) -> None:
    a, b = _dq_input(imp, node, 0), _dq_input(imp, node, 3)
    _requant(imp, node, imp.emit("mul", node.output[0] + "_f", [a, b], {}, node.name), 6, 0)


@handles("QLinearGlobalAveragePool", quantised=True)
def op_q_linear_global_average_pool(imp: ImportState, node: onnx.NodeProto) -> None:
    if attrs_of(node).get("channels_last", 0):
        raise UserError(
            f"node '{node.name or node.output[0]}': channels_last QLinearGlobalAveragePool is not supported"
        )
    x = _dq_input(imp, node, 0)
    _requant(imp, node, imp.emit("gavgpool", node.output[0] + "_f", [x], {}, node.name), 3, 0)


@handles("QLinearLeakyRelu", quantised=True)
def op_q_linear_leaky_relu(imp: ImportState, node: onnx.NodeProto) -> None:
    x = _dq_input(imp, node, 0)
    f = imp.emit(
        "leakyrelu", node.output[0] + "_f", [x], {"alpha": float(attrs_of(node).get("alpha", 0.01))}, node.name
    )
    _requant(imp, node, f, 3, 0)


@handles("QLinearConcat", quantised=True)
def op_q_linear_concat(imp: ImportState, node: onnx.NodeProto) -> None:
    parts = [_dq_input(imp, node, i) for i in range(2, len(node.input), 3)]
    f = imp.emit("concat", node.output[0] + "_f", parts, {"axis": int(attrs_of(node)["axis"])}, node.name)
    sy, zy = imp.const_value(node.input[0], node), imp.zp(node, 1)
    zv = imp.get(node.input[1], node)
    dt = NP_QTYPES.get(np.asarray(zv.value).dtype, "u8") if isinstance(zv, Const) else "u8"
    imp.env[node.output[0]] = imp.emit(
        "quant",
        node.output[0],
        [f.ref],
        {"scale": float(np.asarray(sy).reshape(())), "zp": int(zy.reshape(())), "dtype": dt},
        node.name,
    )


@handles("QLinearAveragePool", quantised=True)
def op_q_linear_average_pool(imp: ImportState, node: onnx.NodeProto) -> None:
    x = _dq_input(imp, node, 0)
    f = imp.emit("avgpool", node.output[0] + "_f", [x], _pool_attrs(imp, node, x), node.name)
    _requant(imp, node, f, 3, 0)


def _unary(imp: ImportState, node: onnx.NodeProto, kind: str, attrs: dict[str, Any], keep_int: bool = False) -> None:
    if keep_int:
        ref, _ = imp.any_ref(node.input[0], node)
    else:
        ref = imp.float_ref(node.input[0], node)
    imp.env[node.output[0]] = imp.emit(kind, node.output[0], [ref], attrs, node.name or node.output[0])


@handles("Relu")
def op_relu(imp: ImportState, node: onnx.NodeProto) -> None:
    _unary(imp, node, "relu", {}, keep_int=isinstance(imp.get(node.input[0], node), Val))


@handles("Clip")
def op_clip(imp: ImportState, node: onnx.NodeProto) -> None:
    a = attrs_of(node)
    lo = a.get("min", -np.inf)
    hi = a.get("max", np.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(np.asarray(imp.const_value(node.input[1], node)).reshape(()))
    if len(node.input) > 2 and node.input[2]:
        hi = float(np.asarray(imp.const_value(node.input[2], node)).reshape(()))
    _unary(imp, node, "clip", {"min": float(lo), "max": float(hi)})


@handles("LeakyRelu")
def op_leaky_relu(imp: ImportState, node: onnx.NodeProto) -> None:
    _unary(imp, node, "leakyrelu", {"alpha": float(attrs_of(node).get("alpha", 0.01))})


@handles("Softmax")
def op_softmax(imp: ImportState, node: onnx.NodeProto) -> None:
    axis = int(attrs_of(node).get("axis", -1 if imp.opset() >= 13 else 1))
    ref = imp.float_ref(node.input[0], node)
    shape = imp.shape(ref) if ref.startswith("%") else ()
    if imp.opset() < 13 and len(shape) > 2 and axis not in (-1, len(shape) - 1):
        flat = imp.emit(
            "reshape",
            node.output[0] + "_2d",
            [ref],
            {"shape": [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))]},
            node.name,
        )
        s = imp.emit("softmax", node.output[0] + "_s", [flat.ref], {"axis": -1}, node.name)
        imp.env[node.output[0]] = imp.emit("reshape", node.output[0], [s.ref], {"shape": list(shape)}, node.name)
        return
    imp.env[node.output[0]] = imp.emit("softmax", node.output[0], [ref], {"axis": axis}, node.name)


@handles("LRN")
def op_lrn(imp: ImportState, node: onnx.NodeProto) -> None:
    a = attrs_of(node)
    _unary(
        imp,
        node,
        "lrn",
        {
            "size": int(a["size"]),
            "alpha": float(a.get("alpha", 1e-4)),
            "beta": float(a.get("beta", 0.75)),
            "bias": float(a.get("bias", 1.0)),
        },
    )


def _binary(imp: ImportState, node: onnx.NodeProto, kind: str, names: list[str]) -> None:
    refs = [imp.float_ref(n, node) for n in names]
    cur = refs[0]
    for i, r in enumerate(refs[1:]):
        base = node.output[0] if i == len(refs) - 2 else f"{node.output[0]}_{i}"
        cur = imp.emit(kind, base, [cur, r], {}, node.name or node.output[0]).ref
    if len(refs) == 1:
        cur = imp.emit("mov", node.output[0], [cur], {}, node.name).ref
    imp.env[node.output[0]] = Val(cur, False)


@handles("Add")
def op_add(imp: ImportState, node: onnx.NodeProto) -> None:
    _binary(imp, node, "add", list(node.input))


@handles("Sum")
def op_sum(imp: ImportState, node: onnx.NodeProto) -> None:
    _binary(imp, node, "add", list(node.input))


@handles("Sub")
def op_sub(imp: ImportState, node: onnx.NodeProto) -> None:
    _binary(imp, node, "sub", list(node.input))


@handles("Mul")
def op_mul(imp: ImportState, node: onnx.NodeProto) -> None:
    _binary(imp, node, "mul", list(node.input))


@handles("BatchNormalization")
def op_batch_normalization(imp: ImportState, node: onnx.NodeProto) -> None:
    x = imp.float_ref(node.input[0], node)
    eps = float(attrs_of(node).get("epsilon", 1e-5))
    gamma, beta, mean, var = (np.asarray(imp.const_value(n, node), dtype=np.float64) for n in node.input[1:5])
    k = gamma / np.sqrt(var + eps)
    shape = [1, -1] + [1] * (len(imp.shape(x)) - 2)
    kref = imp.g.const(node.output[0] + "_k", k.astype(np.float32).reshape(shape), "f32")
    bref = imp.g.const(node.output[0] + "_b", (beta - mean * k).astype(np.float32).reshape(shape), "f32")
    y = imp.emit("mul", node.output[0] + "_m", [x, kref], {}, node.name)
    imp.env[node.output[0]] = imp.emit("add", node.output[0], [y.ref, bref], {}, node.name)


def _pool_attrs(imp: ImportState, node: onnx.NodeProto, ref: str) -> dict[str, Any]:
    a = attrs_of(node)
    shape = imp.shape(ref)
    k = list(a["kernel_shape"])
    if len(k) != 2:
        raise UserError(f"node '{node.name or node.output[0]}' ({node.op_type}): only 2-D pooling is supported")
    strides = list(a.get("strides", [1, 1]))
    dil = list(a.get("dilations", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    pads = auto_pad(a, shape[2:], k, strides, dil, pads)
    if a.get("ceil_mode", 0):
        for i in range(2):
            size = shape[2 + i] + pads[i] + pads[i + 2]
            eff = dil[i] * (k[i] - 1) + 1
            out_ceil = -(-(size - eff) // strides[i]) + 1
            if (out_ceil - 1) * strides[i] >= shape[2 + i] + pads[i]:
                out_ceil -= 1
            need = (out_ceil - 1) * strides[i] + eff - size
            if need > 0:
                pads[i + 2] += need
    out: dict[str, Any] = {"kernel": k, "strides": strides, "pads": pads, "dilations": dil}
    if node.op_type in ("AveragePool", "QLinearAveragePool"):
        out["count_include_pad"] = int(a.get("count_include_pad", 0))
    return out


@handles("MaxPool")
def op_max_pool(imp: ImportState, node: onnx.NodeProto) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise UserError(f"node '{node.name or node.output[0]}': MaxPool with an Indices output is not supported")
    e = imp.get(node.input[0], node)
    ref, _ = imp.any_ref(node.input[0], node) if isinstance(e, Val) else (imp.float_ref(node.input[0], node), False)
    imp.env[node.output[0]] = imp.emit("maxpool", node.output[0], [ref], _pool_attrs(imp, node, ref), node.name)


@handles("AveragePool")
def op_average_pool(imp: ImportState, node: onnx.NodeProto) -> None:
    ref = imp.float_ref(node.input[0], node)
    imp.env[node.output[0]] = imp.emit("avgpool", node.output[0], [ref], _pool_attrs(imp, node, ref), node.name)


@handles("GlobalAveragePool")
def op_global_average_pool(imp: ImportState, node: onnx.NodeProto) -> None:
    _unary(imp, node, "gavgpool", {})


@handles("GlobalMaxPool")
def op_global_max_pool(imp: ImportState, node: onnx.NodeProto) -> None:
    ref = imp.float_ref(node.input[0], node)
    h, w = imp.shape(ref)[2:]
    imp.env[node.output[0]] = imp.emit("maxpool", node.output[0], [ref], {"kernel": [h, w]}, node.name)


def _layout(imp: ImportState, node: onnx.NodeProto, kind: str, attrs_fn: Any) -> None:
    e = imp.get(node.input[0], node)
    if isinstance(e, DQ):
        # layout ops commute with dequantisation: keep the integer value and its quantisation
        v = imp.emit(kind, node.output[0], [e.q.ref], attrs_fn(imp.shape(e.q.ref)), node.name or node.output[0])
        imp.env[node.output[0]] = DQ(v, e.scale, e.zp, e.dtype)
        return
    if isinstance(e, (Const, QConst)):
        ref = imp.float_ref(node.input[0], node)
        v = imp.emit(kind, node.output[0], [ref], attrs_fn(tuple(imp.g.consts[ref[1:]].shape)), node.name)
        imp.env[node.output[0]] = v
        return
    imp.env[node.output[0]] = imp.emit(kind, node.output[0], [e.ref], attrs_fn(imp.shape(e.ref)), node.name)


@handles("Flatten")
def op_flatten(imp: ImportState, node: onnx.NodeProto) -> None:
    axis = int(attrs_of(node).get("axis", 1))

    def attrs(shape: tuple[int, ...]) -> dict[str, Any]:
        ax = axis % len(shape) if axis < 0 else axis
        return {"shape": [int(np.prod(shape[:ax])), int(np.prod(shape[ax:]))]}

    _layout(imp, node, "reshape", attrs)


@handles("Reshape")
def op_reshape(imp: ImportState, node: onnx.NodeProto) -> None:
    target = [int(v) for v in np.asarray(imp.const_value(node.input[1], node)).reshape(-1)]
    allowzero = int(attrs_of(node).get("allowzero", 0))

    def attrs(shape: tuple[int, ...]) -> dict[str, Any]:
        out = [shape[i] if (v == 0 and not allowzero) else v for i, v in enumerate(target)]
        return {"shape": list(np.empty(shape, dtype=np.uint8).reshape(out).shape)}

    _layout(imp, node, "reshape", attrs)


@handles("Squeeze")
def op_squeeze(imp: ImportState, node: onnx.NodeProto) -> None:
    axes = attrs_of(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = list(np.asarray(imp.const_value(node.input[1], node)).reshape(-1))

    def attrs(shape: tuple[int, ...]) -> dict[str, Any]:
        ax = [a % len(shape) for a in axes] if axes is not None else [i for i, d in enumerate(shape) if d == 1]
        return {"shape": [d for i, d in enumerate(shape) if i not in ax]}

    _layout(imp, node, "reshape", attrs)


@handles("Unsqueeze")
def op_unsqueeze(imp: ImportState, node: onnx.NodeProto) -> None:
    axes = attrs_of(node).get("axes")
    if axes is None:
        axes = list(np.asarray(imp.const_value(node.input[1], node)).reshape(-1))

    def attrs(shape: tuple[int, ...]) -> dict[str, Any]:
        r = len(shape) + len(axes)
        ax = sorted(int(a) % r for a in axes)
        out = list(shape)
        for a in ax:
            out.insert(a, 1)
        return {"shape": out}

    _layout(imp, node, "reshape", attrs)


@handles("Transpose")
def op_transpose(imp: ImportState, node: onnx.NodeProto) -> None:
    perm = attrs_of(node).get("perm")
    _layout(imp, node, "transpose", lambda shape: {"perm": list(perm) if perm else list(range(len(shape)))[::-1]})


@handles("Concat")
def op_concat(imp: ImportState, node: onnx.NodeProto) -> None:
    axis = int(attrs_of(node)["axis"])
    entries = [imp.get(n, node) for n in node.input]
    if all(isinstance(e, Val) and e.is_int for e in entries):
        refs = [e.ref for e in entries]  # type: ignore[union-attr]
    else:
        refs = [imp.float_ref(n, node) for n in node.input]
    imp.env[node.output[0]] = (
        imp.emit("concat", node.output[0], refs, {"axis": axis}, node.name)
        if len(refs) > 1
        else imp.emit("mov", node.output[0], refs, {}, node.name)
    )


@handles("Pad")
def op_pad(imp: ImportState, node: onnx.NodeProto) -> None:
    a = attrs_of(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise UserError(f"node '{node.name or node.output[0]}' (Pad): only constant padding is supported, not {mode}")
    pads = a.get("pads")
    if pads is None:
        pads = [int(v) for v in np.asarray(imp.const_value(node.input[1], node)).reshape(-1)]
    value = float(a.get("value", 0.0))
    if len(node.input) > 2 and node.input[2]:
        value = float(np.asarray(imp.const_value(node.input[2], node)).reshape(()))
    _unary(imp, node, "pad", {"pads": list(pads), "value": value})


@handles("Dropout")
def op_dropout(imp: ImportState, node: onnx.NodeProto) -> None:
    imp.alias(node, imp.get(node.input[0], node))


@handles("Identity")
def op_identity(imp: ImportState, node: onnx.NodeProto) -> None:
    imp.alias(node, imp.get(node.input[0], node))


@handles("Cast")
def op_cast(imp: ImportState, node: onnx.NodeProto) -> None:
    to = attrs_of(node)["to"]
    _unary(imp, node, "cast", {"dtype": "f32" if to == onnx.TensorProto.FLOAT else "i64"}, keep_int=True)
