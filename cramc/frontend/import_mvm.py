"""Importer handlers of the MVM layers: Conv, Gemm, MatMul and their QOperator forms.

Every Conv/Gemm/MatMul whose activation and weights are quantised becomes an
exact integer `conv`/`mvm` on the raw quantised activation, with:
- weights stored zero-point-free (w - zw, in as few bits as they need),
- the activation zero point folded into an integer bias (-zx * sum(w')),
  with padding filled with zx so the correction holds at the borders,
- the integer bias added in the accumulator domain, as onnxruntime does,
- requantisation to the next QuantizeLinear fused when that is the only user
  (one float multiply by sx*sw/sy, round half to even, saturate).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from cramc.errors import InternalError, UserError
from cramc.frontend.import_base import (
    NP_QTYPES,
    ONNX_QTYPES,
    Const,
    Entry,
    ImportState,
    QConst,
    Val,
    attrs_of,
    auto_pad,
    bcast,
    handles,
    scalar,
)
from cramc.ir.graph import bits_for


def _fused_quant(imp: ImportState, out: str) -> onnx.NodeProto | None:
    users = imp.users.get(out, [])
    if len(users) == 1 and users[0].op_type == "QuantizeLinear" and out not in imp.graph_outputs:
        q = users[0]
        if np.asarray(imp.const_value(q.input[1], q)).size == 1:
            return q
    return None


def _finish_mvm(
    imp: ImportState,
    node: onnx.NodeProto,
    acc: Val,
    wp: np.ndarray,
    sx: float,
    zx: int,
    sw: np.ndarray,
    bias: Entry | None,
    channel_axis: int,
    out_name: str,
    requant: tuple[float, int, str] | None = None,
    scale_mul: float = 1.0,
    int_out: bool = False,
) -> Val:
    """Bias, zero-point correction and requantisation after an integer MVM; returns the result."""
    origin = node.name or out_name
    rank = len(imp.shape(acc.ref))
    n = wp.shape[0]
    corr = -zx * wp.reshape(n, -1).sum(axis=1).astype(np.int64)
    sxw = (np.float32(sx) * np.asarray(sw, dtype=np.float32).reshape(-1) * np.float32(scale_mul)).astype(np.float32)
    float_bias: np.ndarray | None = None
    if isinstance(bias, QConst) and not int_out:
        bs = np.asarray(bias.scale, dtype=np.float32).reshape(-1)
        bz = np.asarray(bias.zp).reshape(-1)
        if (
            np.all(bz == 0)
            and np.allclose(bs, sxw if bs.size > 1 else sxw[:1], rtol=1e-5)
            and (bs.size == sxw.size or bs.size == 1 == sxw.size)
            and scale_mul == 1.0
        ):
            corr = corr + _vec(bias.q.astype(np.int64), n)
        else:
            float_bias = _vec(bias.real(), n)
    elif isinstance(bias, Const) and not int_out:
        if np.issubdtype(bias.value.dtype, np.integer):
            corr = corr + _vec(bias.value.astype(np.int64), n)
        else:
            float_bias = _vec(bias.value.astype(np.float32), n)
    elif isinstance(bias, Const) and int_out:
        corr = corr + _vec(bias.value.astype(np.int64), n)
    bshape = [1] * rank
    bshape[channel_axis] = n
    if np.any(corr != 0):
        cref = imp.g.const(out_name + "_bias", corr.reshape(bshape), "i32" if np.abs(corr).max() < 2**31 else "i64")
        acc = imp.emit("add", out_name + "_acc", [acc.ref, cref], {}, origin)
    if int_out:
        return acc
    if requant is not None and float_bias is None:
        sy, zy, dt = requant
        mult = (sxw / np.float32(sy)).astype(np.float32)
        f = imp.emit(
            "dequant",
            out_name + "_rq",
            [acc.ref],
            {"scale": imp.const_attr(out_name + "_mult", mult), "axis": channel_axis},
            origin,
        )
        return imp.emit("quant", out_name + "_q", [f.ref], {"scale": 1.0, "zp": zy, "dtype": dt}, origin)
    f = imp.emit(
        "dequant",
        out_name,
        [acc.ref],
        {"scale": imp.const_attr(out_name + "_scale", sxw), "axis": channel_axis},
        origin,
    )
    if float_bias is not None:
        bref = imp.g.const(out_name + "_fbias", float_bias.reshape(bshape), "f32")
        f = imp.emit("add", out_name + "_b", [f.ref, bref], {}, origin)
    if requant is not None:
        sy, zy, dt = requant
        return imp.emit("quant", out_name + "_q", [f.ref], {"scale": sy, "zp": zy, "dtype": dt}, origin)
    return f


def _quant_params(imp: ImportState, q: onnx.NodeProto) -> tuple[float, int, str]:
    sy = float(scalar(imp.const_value(q.input[1], q), "y_scale", q))
    zarr = np.asarray(imp.get(q.input[2], q).value) if len(q.input) > 2 and q.input[2] else np.uint8(0)  # type: ignore[union-attr]
    t = next((t for t in imp.model.graph.initializer if len(q.input) > 2 and t.name == q.input[2]), None)
    dt = (
        ONNX_QTYPES[t.data_type]
        if t is not None and t.data_type in ONNX_QTYPES
        else NP_QTYPES.get(np.asarray(zarr).dtype, "u8")
    )
    return sy, int(np.asarray(zarr).reshape(())), dt


def _conv_attrs(
    imp: ImportState, node: onnx.NodeProto, xshape: tuple[int, ...], wshape: tuple[int, ...]
) -> dict[str, Any]:
    a = attrs_of(node)
    if len(xshape) != 4:
        raise UserError(
            f"node '{node.name or node.output[0]}' ({node.op_type}): only 2-D convolutions are "
            f"supported (input rank {len(xshape)})"
        )
    kh, kw = a.get("kernel_shape", list(wshape[2:]))
    strides = list(a.get("strides", [1, 1]))
    dil = list(a.get("dilations", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    pads = auto_pad(a, xshape[2:], [kh, kw], strides, dil, pads)
    return {
        "kernel": [int(kh), int(kw)],
        "strides": strides,
        "pads": pads,
        "dilations": dil,
        "group": int(a.get("group", 1)),
    }


def _emit_conv(imp: ImportState, node: onnx.NodeProto, xq: Val, zx: int, xdt: str, w: QConst) -> tuple[Val, np.ndarray]:
    wq = w.q.astype(np.int64)
    wp = wq - bcast(np.asarray(w.zp).astype(np.int64), wq, 0) if np.asarray(w.zp).size else wq
    if np.asarray(w.zp).size > 1 and w.axis % wq.ndim != 0:
        raise UserError(
            f"node '{node.name or node.output[0]}': per-channel weight quantisation must be along the output axis"
        )
    wbits, _ = bits_for(wp, signed=True)
    attrs = _conv_attrs(imp, node, imp.shape(xq.ref), wq.shape)
    wref = imp.g.const((node.name or node.output[0]) + "_w", wp, _int_type(wbits))
    attrs.update({"w": wref, "xzp": zx, "wbits": wbits, "xbits": _xbits(xdt), "xsigned": int(xdt.startswith("i"))})
    acc = imp.emit("conv", node.output[0] + "_mvm", [xq.ref], attrs, node.name or node.output[0])
    return acc, wp


def _matmul(
    imp: ImportState, node: onnx.NodeProto, xq: Val, zx: int, xdt: str, wq: np.ndarray, wzp: np.ndarray
) -> tuple[Val, np.ndarray, Any]:
    """Activation x [..., K] (or [K]) times constant w [..., K, N] (or [K]) as one integer mvm.

    Returns the accumulator [R, C] (outputs on axis 1), the zero-point-free weights [C, K] and a
    function that restores ONNX's output layout.  Batched weights become a block-diagonal
    (grouped) mvm with one group per batch entry.
    """
    origin = node.name or node.output[0]
    out = node.output[0]
    xshape = imp.shape(xq.ref)
    a1d, b1d = len(xshape) == 1, wq.ndim == 1
    xs = (1, *xshape) if a1d else xshape
    w = wq.reshape(-1, 1) if b1d else wq
    k, n = w.shape[-2:]
    if xs[-1] != k:
        raise UserError(f"node '{origin}': inner dimensions differ ({xs[-1]} vs {k})")
    zp = np.broadcast_to(np.asarray(wzp, dtype=np.int64).reshape(-1), (n,))
    batch = np.broadcast_shapes(xs[:-2], w.shape[:-2])
    ident = lambda v: v  # noqa: E731
    if not w.shape[:-2]:
        rows = int(np.prod(xs[:-1]))
        wp = (w.astype(np.int64) - zp.reshape(1, -1)).T
        x2 = xq if xshape == (rows, k) else imp.emit("reshape", out + "_rows", [xq.ref], {"shape": [rows, k]}, origin)
        final = [*xs[:-1], n]
        groups = 1
    else:
        bt = int(np.prod(batch))
        m = xs[-2]
        x = xq
        if xs[:-2] != batch:
            lead = (1,) * (len(batch) - len(xs[:-2])) + tuple(xs[:-2])
            x = imp.emit("reshape", out + "_a", [x.ref], {"shape": [*lead, m, k]}, origin)
            reps = [b if a == 1 else 1 for a, b in zip(lead, batch, strict=False)]
            x = imp.emit("tile", out + "_ab", [x.ref], {"reps": [*reps, 1, 1]}, origin)
        x = imp.emit("reshape", out + "_a3", [x.ref], {"shape": [bt, m, k]}, origin)
        x = imp.emit("transpose", out + "_at", [x.ref], {"perm": [1, 0, 2]}, origin)
        x2 = imp.emit("reshape", out + "_rows", [x.ref], {"shape": [m, bt * k]}, origin)
        wb = np.broadcast_to(w, (*batch, k, n)).reshape(bt, k, n).astype(np.int64) - zp.reshape(1, 1, -1)
        wp = wb.transpose(0, 2, 1).reshape(bt * n, k)
        groups = bt
        final = [*batch, m, n]
    wbits, _ = bits_for(wp, signed=True)
    wref = imp.g.const(origin + "_w", wp, _int_type(wbits))
    attrs: dict[str, Any] = {"w": wref, "wbits": wbits, "xbits": _xbits(xdt), "xsigned": int(xdt.startswith("i"))}
    if groups > 1:
        attrs["groups"] = groups
    acc = imp.emit("mvm", out + "_mvm", [x2.ref], attrs, origin)
    if a1d:
        final = final[:-2] + final[-1:]
    if b1d:
        final = final[:-1]

    def post(v: Val) -> Val:
        if groups > 1:
            m_ = imp.shape(v.ref)[0]
            v = imp.emit("reshape", out + "_o3", [v.ref], {"shape": [m_, groups, n]}, origin)
            v = imp.emit("transpose", out + "_ot", [v.ref], {"perm": [1, 0, 2]}, origin)
        if list(imp.shape(v.ref)) != list(final):
            v = imp.emit("reshape", out, [v.ref], {"shape": list(final)}, origin)
        return v

    return acc, wp, post if (groups > 1 or list(imp.shape(acc.ref)) != list(final)) else ident


@handles("Conv")
def op_conv(imp: ImportState, node: onnx.NodeProto) -> None:
    xq, sx, zx, xdt = imp.activation(node.input[0], node)
    w = imp.weights(node.input[1], node)
    acc, wp = _emit_conv(imp, node, xq, zx, xdt, w)
    bias = imp.get(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
    q = _fused_quant(imp, node.output[0])
    sw = _per_out(w.scale, wp.shape[0])
    if q is not None:
        imp.env[q.output[0]] = _finish_mvm(
            imp, node, acc, wp, sx, zx, sw, bias, 1, node.output[0], _quant_params(imp, q)
        )
        imp.skip.add(id(q))
    else:
        imp.env[node.output[0]] = _finish_mvm(imp, node, acc, wp, sx, zx, sw, bias, 1, node.output[0])


@handles("Gemm")
def op_gemm(imp: ImportState, node: onnx.NodeProto) -> None:
    a = attrs_of(node)
    if a.get("transA", 0):
        raise UserError(f"node '{node.name or node.output[0]}' (Gemm): transA=1 is not supported")
    xq, sx, zx, xdt = imp.activation(node.input[0], node)
    w = imp.weights(node.input[1], node)
    wq = w.q.astype(np.int64)
    trans_b = a.get("transB", 0)
    n_axis = 0 if trans_b else 1
    if np.asarray(w.scale).size > 1 and w.axis % 2 != n_axis:
        raise UserError(f"node '{node.name or node.output[0]}': weight scales must be per output column")
    wkn = wq.T if trans_b else wq
    zp = np.asarray(w.zp) if np.asarray(w.zp).size else np.zeros((), np.int64)
    acc, wp, post = _matmul(imp, node, xq, zx, xdt, wkn, zp)
    bias = imp.get(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
    beta = float(a.get("beta", 1.0))
    if bias is not None and beta != 1.0:
        bias = Const((imp.const_value(node.input[2], node) * beta).astype(np.float32))
    alpha = float(a.get("alpha", 1.0))
    sw = _per_out(w.scale, wp.shape[0])
    q = _fused_quant(imp, node.output[0])
    if q is not None:
        out = _finish_mvm(imp, node, acc, wp, sx, zx, sw, bias, 1, node.output[0], _quant_params(imp, q), alpha)
        imp.env[q.output[0]] = post(out)
        imp.skip.add(id(q))
    else:
        imp.env[node.output[0]] = post(
            _finish_mvm(imp, node, acc, wp, sx, zx, sw, bias, 1, node.output[0], scale_mul=alpha)
        )


@handles("MatMul")
def op_mat_mul(imp: ImportState, node: onnx.NodeProto) -> None:
    xq, sx, zx, xdt = imp.activation(node.input[0], node)
    w = imp.weights(node.input[1], node)
    wq = w.q.astype(np.int64)
    if np.asarray(w.scale).size > 1 and w.axis % wq.ndim != wq.ndim - 1:
        raise UserError(f"node '{node.name or node.output[0]}': weight scales must be per output column")
    acc, wp, post = _matmul(imp, node, xq, zx, xdt, wq, np.asarray(w.zp))
    sw = _tile_out(w.scale, wp.shape[0])
    q = _fused_quant(imp, node.output[0])
    if q is not None:
        out = _finish_mvm(imp, node, acc, wp, sx, zx, sw, None, 1, node.output[0], _quant_params(imp, q))
        imp.env[q.output[0]] = post(out)
        imp.skip.add(id(q))
    else:
        imp.env[node.output[0]] = post(_finish_mvm(imp, node, acc, wp, sx, zx, sw, None, 1, node.output[0]))


def _qact(imp: ImportState, name: str, node: onnx.NodeProto) -> tuple[Val, str]:
    e = imp.get(name, node)
    if not isinstance(e, Val) or not e.is_int:
        raise UserError(
            f"node '{node.name or node.output[0]}' ({node.op_type}): input '{name}' must be a quantised tensor"
        )
    return e, imp.int_dtype(name)


def int_const(imp: ImportState, name: str, node: onnx.NodeProto) -> np.ndarray:
    e = imp.get(name, node)
    if isinstance(e, Const) and np.issubdtype(e.value.dtype, np.integer):
        return e.value
    raise UserError(
        f"node '{node.name or node.output[0]}' ({node.op_type}): '{name}' must be an integer "
        "constant (cramc keeps weights stationary in the arrays)"
    )


@handles("QLinearConv", quantised=True)
def op_q_linear_conv(imp: ImportState, node: onnx.NodeProto) -> None:
    x, xdt = _qact(imp, node.input[0], node)
    sx = float(scalar(imp.const_value(node.input[1], node), "x_scale", node))
    zx = int(scalar(imp.zp(node, 2), "x_zero_point", node))
    w = QConst(int_const(imp, node.input[3], node), imp.const_value(node.input[4], node), imp.zp(node, 5), 0)
    sy = float(scalar(imp.const_value(node.input[6], node), "y_scale", node))
    zy = int(scalar(imp.zp(node, 7), "y_zero_point", node))
    zv = imp.get(node.input[7], node) if len(node.input) > 7 and node.input[7] else None
    ydt = NP_QTYPES.get(np.asarray(zv.value).dtype, "u8") if isinstance(zv, Const) else xdt
    acc, wp = _emit_conv(imp, node, x, zx, xdt, w)
    bias = Const(int_const(imp, node.input[8], node)) if len(node.input) > 8 and node.input[8] else None
    sw = _per_out(w.scale, wp.shape[0])
    imp.env[node.output[0]] = _finish_mvm(imp, node, acc, wp, sx, zx, sw, bias, 1, node.output[0], (sy, zy, ydt))


@handles("QLinearMatMul", quantised=True)
def op_q_linear_mat_mul(imp: ImportState, node: onnx.NodeProto) -> None:
    x, xdt = _qact(imp, node.input[0], node)
    sx = float(scalar(imp.const_value(node.input[1], node), "a_scale", node))
    zx = int(scalar(imp.zp(node, 2), "a_zero_point", node))
    wq = int_const(imp, node.input[3], node)
    sw = np.asarray(imp.const_value(node.input[4], node)).reshape(-1)
    wzp = imp.zp(node, 5).reshape(-1)
    sy = float(scalar(imp.const_value(node.input[6], node), "y_scale", node))
    zy = int(scalar(imp.zp(node, 7), "y_zero_point", node))
    ydt = NP_QTYPES.get(np.asarray(imp.get(node.input[7], node).value).dtype, "u8")  # type: ignore[union-attr]
    acc, wp, post = _matmul(imp, node, x, zx, xdt, wq, wzp)
    out = _finish_mvm(imp, node, acc, wp, sx, zx, _tile_out(sw, wp.shape[0]), None, 1, node.output[0], (sy, zy, ydt))
    imp.env[node.output[0]] = post(out)


@handles("MatMulInteger", quantised=True)
def op_mat_mul_integer(imp: ImportState, node: onnx.NodeProto) -> None:
    x, xdt = _qact(imp, node.input[0], node)
    wq = int_const(imp, node.input[1], node)
    zx = int(scalar(imp.zp(node, 2), "a_zero_point", node))
    wzp = imp.zp(node, 3).reshape(-1)
    acc, wp, post = _matmul(imp, node, x, zx, xdt, wq, wzp)
    imp.env[node.output[0]] = post(
        _finish_mvm(imp, node, acc, wp, 1.0, zx, np.ones(wp.shape[0]), None, 1, node.output[0], int_out=True)
    )


@handles("ConvInteger", quantised=True)
def op_conv_integer(imp: ImportState, node: onnx.NodeProto) -> None:
    x, xdt = _qact(imp, node.input[0], node)
    wq = int_const(imp, node.input[1], node)
    zx = int(scalar(imp.zp(node, 2), "x_zero_point", node))
    w = QConst(wq, np.ones(1), imp.zp(node, 3), 0)
    acc, wp = _emit_conv(imp, node, x, zx, xdt, w)
    imp.env[node.output[0]] = _finish_mvm(
        imp, node, acc, wp, 1.0, zx, np.ones(wp.shape[0]), None, 1, node.output[0], int_out=True
    )


def _vec(v: np.ndarray, n: int) -> np.ndarray:
    """A bias given as a scalar, [N] or [1, N] -> [N]."""
    return np.broadcast_to(np.asarray(v).reshape(-1), (n,)).copy()


def _tile_out(scale: Any, n: int) -> np.ndarray:
    """Per-output scales [N] repeated over the groups of a batched mvm with n = groups * N outputs."""
    s = np.asarray(scale, dtype=np.float32).reshape(-1)
    return np.full(n, s[0], dtype=np.float32) if s.size == 1 else np.tile(s, n // s.size)


def _per_out(scale: Any, n: int) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float32).reshape(-1)
    return np.full(n, s[0], dtype=np.float32) if s.size == 1 else s


def _xbits(dt: str) -> int:
    return {"i4": 4, "u4": 4, "i8": 8, "u8": 8, "i16": 16, "u16": 16, "i32": 32, "i64": 32}.get(dt, 8)


def _int_type(bits: int) -> str:
    if bits <= 8:
        return "i8"
    if bits <= 16:
        return "i16"
    if bits <= 32:
        return "i32"
    raise InternalError(f"weights need {bits} bits")
