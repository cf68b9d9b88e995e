"""Import a quantised ONNX graph (QDQ or QOperator) into the MVM-tiling IR.

Every Conv/Gemm/MatMul whose activation and weights are quantised becomes an
exact integer `conv`/`mvm` on the raw quantised activation, with:
- weights stored zero-point-free (w - zw, in as few bits as they need),
- the activation zero point folded into an integer bias (-zx * sum(w')),
  with padding filled with zx so the correction holds at the borders,
- the integer bias added in the accumulator domain, as onnxruntime does,
- requantisation to the next QuantizeLinear fused when that is the only user
  (one float multiply by sx*sw/sy, round half to even, saturate).
Everything else becomes CMOS operations with ISA semantics.  DequantizeLinear
of activations is materialised lazily, only where a float value is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cramc.errors import InternalError, UserError
from cramc.ir.graph import Graph, IOValue, Op, bits_for, sanitize
from cramc.ir.semantics import eval_op

ONNX_QTYPES = {
    onnx.TensorProto.INT8: "i8",
    onnx.TensorProto.UINT8: "u8",
    onnx.TensorProto.INT16: "i16",
    onnx.TensorProto.UINT16: "u16",
    onnx.TensorProto.INT32: "i32",
    onnx.TensorProto.INT4: "i4",
    onnx.TensorProto.UINT4: "u4",
    onnx.TensorProto.INT64: "i64",
}
NP_QTYPES = {
    np.dtype("int8"): "i8",
    np.dtype("uint8"): "u8",
    np.dtype("int16"): "i16",
    np.dtype("uint16"): "u16",
    np.dtype("int32"): "i32",
    np.dtype("int64"): "i64",
}


@dataclass
class Const:
    value: np.ndarray


@dataclass
class QConst:
    """DequantizeLinear of a constant: float value = (q - zp) * scale along axis."""

    q: np.ndarray
    scale: np.ndarray
    zp: np.ndarray
    axis: int

    def real(self) -> np.ndarray:
        s, z = _bcast(self.scale, self.q, self.axis), _bcast(self.zp, self.q, self.axis)
        return ((self.q.astype(np.int64) - z).astype(np.float32) * s.astype(np.float32)).astype(np.float32)


@dataclass
class Val:
    ref: str  # "%name"
    is_int: bool


@dataclass
class DQ:
    """A float activation that is DequantizeLinear of an integer IR value."""

    q: Val
    scale: float
    zp: int
    dtype: str
    float_ref: str | None = None


Entry = Const | QConst | Val | DQ


def _bcast(v: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    v = np.asarray(v)
    if v.size <= 1:
        return v.reshape(())
    shape = [1] * like.ndim
    shape[axis % like.ndim] = v.size
    return v.reshape(shape)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _scalar(v: np.ndarray, what: str, node: onnx.NodeProto) -> float | int:
    a = np.asarray(v)
    if a.size != 1:
        raise UserError(
            f"node '{node.name or node.output[0]}' ({node.op_type}): {what} must be per-tensor (got {a.size} values)"
        )
    return a.reshape(()).item()


@dataclass
class Importer:
    model: onnx.ModelProto
    g: Graph = field(default_factory=Graph)
    env: dict[str, Entry] = field(default_factory=dict)
    shapes: dict[str, tuple[tuple[int, ...], bool]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    skip: set[int] = field(default_factory=set)

    # ------------------------------------------------------------- building
    def fresh(self, base: str) -> str:
        b = sanitize(base)
        n, i = b, 1
        while n in self.names:
            n = f"{b}.{i}"
            i += 1
        self.names.add(n)
        return n

    def emit(self, kind: str, base: str, ins: list[str], attrs: dict[str, Any], origin: str) -> Val:
        name = self.fresh(base)
        op = Op(kind, name, tuple(ins), attrs, origin)
        args = []
        for r in ins:
            if r.startswith("%"):
                shape, is_int = self.shapes[r]
                args.append(np.zeros((1, *shape), dtype=np.int64 if is_int else np.float32))
            else:
                args.append(self.g.consts[r[1:]][None])
        try:
            res = eval_op(self.g, op, args, shape_only=True)
        except (ValueError, IndexError, KeyError) as e:
            raise UserError(f"node '{origin}': cannot lower {kind}: {e}") from None
        self.g.ops.append(op)
        ref = "%" + name
        is_int = bool(np.issubdtype(res.dtype, np.integer))
        self.shapes[ref] = (tuple(res.shape[1:]), is_int)
        return Val(ref, is_int)

    def const_attr(self, base: str, v: np.ndarray | float | int, dtype: str = "f32") -> Any:
        """A scalar stays inline; a vector becomes a constant reference."""
        a = np.asarray(v)
        if a.size == 1:
            x = a.reshape(()).item()
            return float(x) if dtype.startswith("f") else int(x)
        arr = a.astype(np.float32 if dtype.startswith("f") else np.int64).reshape(-1)
        return self.g.const(base, arr, "f32" if dtype.startswith("f") else "i64")

    def shape(self, ref: str) -> tuple[int, ...]:
        return self.shapes[ref][0]

    # ------------------------------------------------------------- entries
    def get(self, name: str, node: onnx.NodeProto) -> Entry:
        if name not in self.env:
            raise UserError(f"node '{node.name or node.output[0]}': input '{name}' is not produced by any node")
        return self.env[name]

    def float_ref(self, name: str, node: onnx.NodeProto) -> str:
        e = self.get(name, node)
        if isinstance(e, Const):
            return self.g.const(name, np.asarray(e.value, dtype=np.float32), "f32")
        if isinstance(e, QConst):
            return self.g.const(name, e.real(), "f32")
        if isinstance(e, DQ):
            if e.float_ref is None:
                v = self.emit("dequant", name, [e.q.ref], {"scale": e.scale, "zp": e.zp}, node.name or name)
                e.float_ref = v.ref
            return e.float_ref
        if e.is_int:
            raise UserError(
                f"node '{node.name or node.output[0]}' ({node.op_type}) needs a float input but "
                f"'{name}' is quantised; dequantise it first"
            )
        return e.ref

    def any_ref(self, name: str, node: onnx.NodeProto) -> tuple[str, bool]:
        """Integer values stay integer (layout/monotone ops), everything else as float."""
        e = self.get(name, node)
        if isinstance(e, Val):
            return e.ref, e.is_int
        if isinstance(e, Const) and np.issubdtype(e.value.dtype, np.integer):
            return self.g.const(name, e.value.astype(np.int64), "i64"), True
        return self.float_ref(name, node), False

    def const_value(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        e = self.get(name, node) if name else None
        if isinstance(e, Const):
            return e.value
        if isinstance(e, QConst):
            return e.real()
        raise UserError(f"node '{node.name or node.output[0]}' ({node.op_type}): input '{name}' must be a constant")

    def activation(self, name: str, node: onnx.NodeProto) -> tuple[Val, float, int, str]:
        """The quantised activation behind a float input: (int value, scale, zero point, dtype)."""
        e = self.get(name, node)
        if isinstance(e, DQ):
            return e.q, e.scale, e.zp, e.dtype
        raise UserError(
            f"node '{node.name or node.output[0]}' ({node.op_type}): input '{name}' is not quantised "
            "(expected DequantizeLinear of an activation); quantise the model (QDQ) first"
        )

    def weights(self, name: str, node: onnx.NodeProto) -> QConst:
        e = self.get(name, node)
        if isinstance(e, QConst):
            return e
        if isinstance(e, Const) and np.issubdtype(e.value.dtype, np.integer):
            return QConst(e.value, np.ones(1, np.float32), np.zeros(1, np.int64), 0)
        what = "float" if isinstance(e, Const) else "not constant"
        raise UserError(
            f"node '{node.name or node.output[0]}' ({node.op_type}): weights '{name}' are {what}; "
            "cramc keeps quantised weights stationary in the arrays, so they must be quantised constants"
        )

    # ------------------------------------------------------------- driver
    def run(self) -> Graph:
        m = self.model
        for t in m.graph.initializer:
            self.env[t.name] = Const(numpy_helper.to_array(t))
        for inp in m.graph.input:
            tt = inp.type.tensor_type
            shape = tuple(d.dim_value for d in tt.shape.dim)
            if tt.elem_type == onnx.TensorProto.FLOAT:
                dt = "f32"
            elif tt.elem_type in ONNX_QTYPES:
                dt = ONNX_QTYPES[tt.elem_type]
            else:
                raise UserError(f"input '{inp.name}': element type {tt.elem_type} is not supported (float or int)")
            name = self.fresh(inp.name)
            self.g.inputs.append(IOValue(name, dt, shape))
            self.shapes["%" + name] = (shape, dt != "f32")
            self.env[inp.name] = Val("%" + name, dt != "f32")
        self.users: dict[str, list[onnx.NodeProto]] = {}
        for n in m.graph.node:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in m.graph.output}
        for node in m.graph.node:
            if id(node) in self.skip:
                continue
            handler = getattr(self, "op_" + node.op_type, None)
            if handler is None:
                raise UserError(f"node '{node.name or node.output[0]}': operator {node.op_type} is not supported")
            handler(node)
        for o in m.graph.output:
            ref, is_int = self.any_ref(o.name, o)  # type: ignore[arg-type]
            want = sanitize(o.name)
            if ref != "%" + want:
                if want in self.names:
                    want = self.fresh(o.name)
                else:
                    self.names.add(want)
                self.g.ops.append(Op("mov", want, (ref,), {}, o.name))
                self.shapes["%" + want] = (
                    self.shapes[ref] if ref.startswith("%") else (tuple(self.g.consts[ref[1:]].shape), is_int)
                )
            tt = o.type.tensor_type
            dt = "f32" if not is_int else ONNX_QTYPES.get(tt.elem_type, "i64")
            self.g.outputs.append(IOValue(want, dt, self.shapes["%" + want][0]))
        return self.g

    def trace_map(self) -> dict[str, str]:
        """IR value name -> the ONNX tensor it equals (quantised values and float layer outputs)."""
        out: dict[str, str] = {}
        node_outputs = {o for n in self.model.graph.node for o in n.output}
        for onnx_name, e in self.env.items():
            if onnx_name in node_outputs and isinstance(e, Val):
                out.setdefault(e.ref[1:], onnx_name)
        return out

    def output_tol(self) -> float:
        """One quantisation step of the (dequantised) outputs; 0 when outputs are integers."""
        prod = self.g.producers()
        tol = 0.0
        for o in self.g.outputs:
            ref = o.name
            for _ in range(64):
                op = prod.get(ref)
                if op is None:
                    break
                if op.kind == "dequant":
                    s = op.attrs["scale"]
                    tol = max(tol, float(np.max(self.g.consts[s[1:]])) if isinstance(s, str) else float(s))
                    break
                if not op.ins or not op.ins[0].startswith("%"):
                    break
                ref = op.ins[0][1:]
        return tol

    def alias(self, node: onnx.NodeProto, e: Entry) -> None:
        self.env[node.output[0]] = e

    # ------------------------------------------------------------- quantisation
    def op_QuantizeLinear(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        x = self.get(node.input[0], node)
        scale = self.const_value(node.input[1], node)
        zp = self.get(node.input[2], node).value if len(node.input) > 2 and node.input[2] else np.uint8(0)  # type: ignore[union-attr]
        zp = np.asarray(zp)
        dt = NP_QTYPES.get(zp.dtype) or ONNX_QTYPES.get(a.get("output_dtype", 0), "u8")
        if len(node.input) > 2 and node.input[2]:
            t = next((t for t in self.model.graph.initializer if t.name == node.input[2]), None)
            if t is not None and t.data_type in ONNX_QTYPES:
                dt = ONNX_QTYPES[t.data_type]
        if isinstance(x, (Const, QConst)):
            val = x.value if isinstance(x, Const) else x.real()
            s, z = _bcast(scale, val, a.get("axis", 1)), _bcast(zp, val, a.get("axis", 1))
            from cramc.isa.cmos import QRANGES

            lo, hi = QRANGES[dt]
            q = np.clip(np.rint(val.astype(np.float32) / s.astype(np.float32)) + z.astype(np.int64), lo, hi)
            self.env[node.output[0]] = Const(q.astype(np.int64))
            return
        src = self.float_ref(node.input[0], node)
        attrs = {
            "scale": self.const_attr(node.output[0] + "_scale", scale),
            "zp": self.const_attr(node.output[0] + "_zp", zp, "i64"),
            "dtype": dt,
        }
        if np.asarray(scale).size > 1:
            attrs["axis"] = a.get("axis", 1)
        v = self.emit("quant", node.output[0], [src], attrs, node.name or node.output[0])
        self.env[node.output[0]] = v

    def op_DequantizeLinear(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        x = self.get(node.input[0], node)
        scale = np.asarray(self.const_value(node.input[1], node))
        zp = (
            np.asarray(self.get(node.input[2], node).value)  # type: ignore[union-attr]
            if len(node.input) > 2 and node.input[2]
            else np.zeros((), np.int64)
        )
        if isinstance(x, Const):
            self.env[node.output[0]] = QConst(x.value, scale, zp, a.get("axis", 1))
            return
        if not isinstance(x, Val) or not x.is_int:
            raise UserError(f"node '{node.name or node.output[0]}': DequantizeLinear of a non-integer value")
        if scale.size > 1:
            attrs = {
                "scale": self.const_attr(node.output[0] + "_scale", scale),
                "zp": self.const_attr(node.output[0] + "_zp", zp, "i64"),
                "axis": a.get("axis", 1),
            }
            self.env[node.output[0]] = self.emit("dequant", node.output[0], [x.ref], attrs, node.name)
            return
        dt = NP_QTYPES.get(zp.dtype, "u8")
        self.env[node.output[0]] = DQ(x, float(scale.reshape(())), int(zp.reshape(())), dt)

    # ------------------------------------------------------------- MVM layers
    def _fused_quant(self, out: str) -> onnx.NodeProto | None:
        users = self.users.get(out, [])
        if len(users) == 1 and users[0].op_type == "QuantizeLinear" and out not in self.graph_outputs:
            q = users[0]
            if np.asarray(self.const_value(q.input[1], q)).size == 1:
                return q
        return None

    def _finish_mvm(
        self,
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
        rank = len(self.shape(acc.ref))
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
            cref = self.g.const(
                out_name + "_bias", corr.reshape(bshape), "i32" if np.abs(corr).max() < 2**31 else "i64"
            )
            acc = self.emit("add", out_name + "_acc", [acc.ref, cref], {}, origin)
        if int_out:
            return acc
        if requant is not None and float_bias is None:
            sy, zy, dt = requant
            mult = (sxw / np.float32(sy)).astype(np.float32)
            f = self.emit(
                "dequant",
                out_name + "_rq",
                [acc.ref],
                {"scale": self.const_attr(out_name + "_mult", mult), "axis": channel_axis},
                origin,
            )
            return self.emit("quant", out_name + "_q", [f.ref], {"scale": 1.0, "zp": zy, "dtype": dt}, origin)
        f = self.emit(
            "dequant",
            out_name,
            [acc.ref],
            {"scale": self.const_attr(out_name + "_scale", sxw), "axis": channel_axis},
            origin,
        )
        if float_bias is not None:
            bref = self.g.const(out_name + "_fbias", float_bias.reshape(bshape), "f32")
            f = self.emit("add", out_name + "_b", [f.ref, bref], {}, origin)
        if requant is not None:
            sy, zy, dt = requant
            return self.emit("quant", out_name + "_q", [f.ref], {"scale": sy, "zp": zy, "dtype": dt}, origin)
        return f

    def _quant_params(self, q: onnx.NodeProto) -> tuple[float, int, str]:
        sy = float(_scalar(self.const_value(q.input[1], q), "y_scale", q))
        zarr = np.asarray(self.get(q.input[2], q).value) if len(q.input) > 2 and q.input[2] else np.uint8(0)  # type: ignore[union-attr]
        t = next((t for t in self.model.graph.initializer if len(q.input) > 2 and t.name == q.input[2]), None)
        dt = (
            ONNX_QTYPES[t.data_type]
            if t is not None and t.data_type in ONNX_QTYPES
            else NP_QTYPES.get(np.asarray(zarr).dtype, "u8")
        )
        return sy, int(np.asarray(zarr).reshape(())), dt

    def _conv_attrs(self, node: onnx.NodeProto, xshape: tuple[int, ...], wshape: tuple[int, ...]) -> dict[str, Any]:
        a = _attrs(node)
        if len(xshape) != 4:
            raise UserError(
                f"node '{node.name or node.output[0]}' ({node.op_type}): only 2-D convolutions are "
                f"supported (input rank {len(xshape)})"
            )
        kh, kw = a.get("kernel_shape", list(wshape[2:]))
        strides = list(a.get("strides", [1, 1]))
        dil = list(a.get("dilations", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        pads = _auto_pad(a, xshape[2:], [kh, kw], strides, dil, pads)
        return {
            "kernel": [int(kh), int(kw)],
            "strides": strides,
            "pads": pads,
            "dilations": dil,
            "group": int(a.get("group", 1)),
        }

    def _emit_conv(self, node: onnx.NodeProto, xq: Val, zx: int, xdt: str, w: QConst) -> tuple[Val, np.ndarray]:
        wq = w.q.astype(np.int64)
        wp = wq - _bcast(np.asarray(w.zp).astype(np.int64), wq, 0) if np.asarray(w.zp).size else wq
        if np.asarray(w.zp).size > 1 and w.axis % wq.ndim != 0:
            raise UserError(
                f"node '{node.name or node.output[0]}': per-channel weight quantisation must be along the output axis"
            )
        wbits, _ = bits_for(wp, signed=True)
        attrs = self._conv_attrs(node, self.shape(xq.ref), wq.shape)
        wref = self.g.const((node.name or node.output[0]) + "_w", wp, _int_type(wbits))
        attrs.update({"w": wref, "xzp": zx, "wbits": wbits, "xbits": _xbits(xdt), "xsigned": int(xdt.startswith("i"))})
        acc = self.emit("conv", node.output[0] + "_mvm", [xq.ref], attrs, node.name or node.output[0])
        return acc, wp

    def op_Conv(self, node: onnx.NodeProto) -> None:
        xq, sx, zx, xdt = self.activation(node.input[0], node)
        w = self.weights(node.input[1], node)
        acc, wp = self._emit_conv(node, xq, zx, xdt, w)
        bias = self.get(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
        q = self._fused_quant(node.output[0])
        sw = _per_out(w.scale, wp.shape[0])
        if q is not None:
            self.env[q.output[0]] = self._finish_mvm(
                node, acc, wp, sx, zx, sw, bias, 1, node.output[0], self._quant_params(q)
            )
            self.skip.add(id(q))
        else:
            self.env[node.output[0]] = self._finish_mvm(node, acc, wp, sx, zx, sw, bias, 1, node.output[0])

    def _matmul(
        self, node: onnx.NodeProto, xq: Val, zx: int, xdt: str, wq: np.ndarray, wzp: np.ndarray
    ) -> tuple[Val, np.ndarray, Any]:
        """Activation x [..., K] (or [K]) times constant w [..., K, N] (or [K]) as one integer mvm.

        Returns the accumulator [R, C] (outputs on axis 1), the zero-point-free weights [C, K] and a
        function that restores ONNX's output layout.  Batched weights become a block-diagonal
        (grouped) mvm with one group per batch entry.
        """
        origin = node.name or node.output[0]
        out = node.output[0]
        xshape = self.shape(xq.ref)
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
            x2 = (
                xq
                if xshape == (rows, k)
                else self.emit("reshape", out + "_rows", [xq.ref], {"shape": [rows, k]}, origin)
            )
            final = [*xs[:-1], n]
            groups = 1
        else:
            bt = int(np.prod(batch))
            m = xs[-2]
            x = xq
            if xs[:-2] != batch:
                lead = (1,) * (len(batch) - len(xs[:-2])) + tuple(xs[:-2])
                x = self.emit("reshape", out + "_a", [x.ref], {"shape": [*lead, m, k]}, origin)
                reps = [b if a == 1 else 1 for a, b in zip(lead, batch, strict=False)]
                x = self.emit("tile", out + "_ab", [x.ref], {"reps": [*reps, 1, 1]}, origin)
            x = self.emit("reshape", out + "_a3", [x.ref], {"shape": [bt, m, k]}, origin)
            x = self.emit("transpose", out + "_at", [x.ref], {"perm": [1, 0, 2]}, origin)
            x2 = self.emit("reshape", out + "_rows", [x.ref], {"shape": [m, bt * k]}, origin)
            wb = np.broadcast_to(w, (*batch, k, n)).reshape(bt, k, n).astype(np.int64) - zp.reshape(1, 1, -1)
            wp = wb.transpose(0, 2, 1).reshape(bt * n, k)
            groups = bt
            final = [*batch, m, n]
        wbits, _ = bits_for(wp, signed=True)
        wref = self.g.const(origin + "_w", wp, _int_type(wbits))
        attrs: dict[str, Any] = {"w": wref, "wbits": wbits, "xbits": _xbits(xdt), "xsigned": int(xdt.startswith("i"))}
        if groups > 1:
            attrs["groups"] = groups
        acc = self.emit("mvm", out + "_mvm", [x2.ref], attrs, origin)
        if a1d:
            final = final[:-2] + final[-1:]
        if b1d:
            final = final[:-1]

        def post(v: Val) -> Val:
            if groups > 1:
                m_ = self.shape(v.ref)[0]
                v = self.emit("reshape", out + "_o3", [v.ref], {"shape": [m_, groups, n]}, origin)
                v = self.emit("transpose", out + "_ot", [v.ref], {"perm": [1, 0, 2]}, origin)
            if list(self.shape(v.ref)) != list(final):
                v = self.emit("reshape", out, [v.ref], {"shape": list(final)}, origin)
            return v

        return acc, wp, post if (groups > 1 or list(self.shape(acc.ref)) != list(final)) else ident

    def op_Gemm(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if a.get("transA", 0):
            raise UserError(f"node '{node.name or node.output[0]}' (Gemm): transA=1 is not supported")
        xq, sx, zx, xdt = self.activation(node.input[0], node)
        w = self.weights(node.input[1], node)
        wq = w.q.astype(np.int64)
        trans_b = a.get("transB", 0)
        n_axis = 0 if trans_b else 1
        if np.asarray(w.scale).size > 1 and w.axis % 2 != n_axis:
            raise UserError(f"node '{node.name or node.output[0]}': weight scales must be per output column")
        wkn = wq.T if trans_b else wq
        zp = np.asarray(w.zp) if np.asarray(w.zp).size else np.zeros((), np.int64)
        acc, wp, post = self._matmul(node, xq, zx, xdt, wkn, zp)
        bias = self.get(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
        beta = float(a.get("beta", 1.0))
        if bias is not None and beta != 1.0:
            bias = Const((self.const_value(node.input[2], node) * beta).astype(np.float32))
        alpha = float(a.get("alpha", 1.0))
        sw = _per_out(w.scale, wp.shape[0])
        q = self._fused_quant(node.output[0])
        if q is not None:
            out = self._finish_mvm(node, acc, wp, sx, zx, sw, bias, 1, node.output[0], self._quant_params(q), alpha)
            self.env[q.output[0]] = post(out)
            self.skip.add(id(q))
        else:
            self.env[node.output[0]] = post(
                self._finish_mvm(node, acc, wp, sx, zx, sw, bias, 1, node.output[0], scale_mul=alpha)
            )

    def op_MatMul(self, node: onnx.NodeProto) -> None:
        xq, sx, zx, xdt = self.activation(node.input[0], node)
        w = self.weights(node.input[1], node)
        wq = w.q.astype(np.int64)
        if np.asarray(w.scale).size > 1 and w.axis % wq.ndim != wq.ndim - 1:
            raise UserError(f"node '{node.name or node.output[0]}': weight scales must be per output column")
        acc, wp, post = self._matmul(node, xq, zx, xdt, wq, np.asarray(w.zp))
        sw = _tile_out(w.scale, wp.shape[0])
        q = self._fused_quant(node.output[0])
        if q is not None:
            out = self._finish_mvm(node, acc, wp, sx, zx, sw, None, 1, node.output[0], self._quant_params(q))
            self.env[q.output[0]] = post(out)
            self.skip.add(id(q))
        else:
            self.env[node.output[0]] = post(self._finish_mvm(node, acc, wp, sx, zx, sw, None, 1, node.output[0]))

    # QOperator layers
    def _qact(self, name: str, node: onnx.NodeProto) -> tuple[Val, str]:
        e = self.get(name, node)
        if not isinstance(e, Val) or not e.is_int:
            raise UserError(
                f"node '{node.name or node.output[0]}' ({node.op_type}): input '{name}' must be a quantised tensor"
            )
        return e, self._int_dtype(name)

    def _int_dtype(self, name: str) -> str:
        for vi in [*self.model.graph.input, *self.model.graph.value_info, *self.model.graph.output]:
            if vi.name == name:
                return ONNX_QTYPES.get(vi.type.tensor_type.elem_type, "u8")
        e = self.env.get(name)
        return "u8" if e is None else "i8"

    def _zp(self, node: onnx.NodeProto, idx: int) -> np.ndarray:
        if len(node.input) > idx and node.input[idx]:
            return np.asarray(self.const_value(node.input[idx], node)).astype(np.int64)
        return np.zeros((), np.int64)

    def op_QLinearConv(self, node: onnx.NodeProto) -> None:
        x, xdt = self._qact(node.input[0], node)
        sx = float(_scalar(self.const_value(node.input[1], node), "x_scale", node))
        zx = int(_scalar(self._zp(node, 2), "x_zero_point", node))
        w = QConst(self.get_int_const(node.input[3], node), self.const_value(node.input[4], node), self._zp(node, 5), 0)
        sy = float(_scalar(self.const_value(node.input[6], node), "y_scale", node))
        zy = int(_scalar(self._zp(node, 7), "y_zero_point", node))
        ydt = (
            NP_QTYPES.get(np.asarray(self.get(node.input[7], node).value).dtype, "u8")
            if len(node.input) > 7 and node.input[7]
            else xdt
        )  # type: ignore[union-attr]
        acc, wp = self._emit_conv(node, x, zx, xdt, w)
        bias = Const(self.get_int_const(node.input[8], node)) if len(node.input) > 8 and node.input[8] else None
        sw = _per_out(w.scale, wp.shape[0])
        self.env[node.output[0]] = self._finish_mvm(node, acc, wp, sx, zx, sw, bias, 1, node.output[0], (sy, zy, ydt))

    def get_int_const(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        e = self.get(name, node)
        if isinstance(e, Const) and np.issubdtype(e.value.dtype, np.integer):
            return e.value
        raise UserError(
            f"node '{node.name or node.output[0]}' ({node.op_type}): '{name}' must be an integer "
            "constant (cramc keeps weights stationary in the arrays)"
        )

    def op_QLinearMatMul(self, node: onnx.NodeProto) -> None:
        x, xdt = self._qact(node.input[0], node)
        sx = float(_scalar(self.const_value(node.input[1], node), "a_scale", node))
        zx = int(_scalar(self._zp(node, 2), "a_zero_point", node))
        wq = self.get_int_const(node.input[3], node)
        sw = np.asarray(self.const_value(node.input[4], node)).reshape(-1)
        wzp = self._zp(node, 5).reshape(-1)
        sy = float(_scalar(self.const_value(node.input[6], node), "y_scale", node))
        zy = int(_scalar(self._zp(node, 7), "y_zero_point", node))
        ydt = NP_QTYPES.get(np.asarray(self.get(node.input[7], node).value).dtype, "u8")  # type: ignore[union-attr]
        acc, wp, post = self._matmul(node, x, zx, xdt, wq, wzp)
        out = self._finish_mvm(
            node, acc, wp, sx, zx, _tile_out(sw, wp.shape[0]), None, 1, node.output[0], (sy, zy, ydt)
        )
        self.env[node.output[0]] = post(out)

    def op_MatMulInteger(self, node: onnx.NodeProto) -> None:
        x, xdt = self._qact(node.input[0], node)
        wq = self.get_int_const(node.input[1], node)
        zx = int(_scalar(self._zp(node, 2), "a_zero_point", node))
        wzp = self._zp(node, 3).reshape(-1)
        acc, wp, post = self._matmul(node, x, zx, xdt, wq, wzp)
        self.env[node.output[0]] = post(
            self._finish_mvm(node, acc, wp, 1.0, zx, np.ones(wp.shape[0]), None, 1, node.output[0], int_out=True)
        )

    def op_ConvInteger(self, node: onnx.NodeProto) -> None:
        x, xdt = self._qact(node.input[0], node)
        wq = self.get_int_const(node.input[1], node)
        zx = int(_scalar(self._zp(node, 2), "x_zero_point", node))
        w = QConst(wq, np.ones(1), self._zp(node, 3), 0)
        acc, wp = self._emit_conv(node, x, zx, xdt, w)
        self.env[node.output[0]] = self._finish_mvm(
            node, acc, wp, 1.0, zx, np.ones(wp.shape[0]), None, 1, node.output[0], int_out=True
        )

    # com.microsoft QLinear element-wise ops: dequantise, operate, quantise
    def _dq_input(self, node: onnx.NodeProto, i: int) -> str:
        x = self.get(node.input[i], node)
        s = self.const_value(node.input[i + 1], node)
        z = self._zp(node, i + 2)
        if isinstance(x, (Const, QConst)):
            val = QConst(x.value if isinstance(x, Const) else x.q, np.asarray(s), z, 1).real()
            return self.g.const(node.input[i], val, "f32")
        if not isinstance(x, Val) or not x.is_int:
            raise UserError(
                f"node '{node.name or node.output[0]}' ({node.op_type}): input '{node.input[i]}' must be quantised"
            )
        return self.emit(
            "dequant",
            node.input[i] + "_dq",
            [x.ref],
            {"scale": self.const_attr(node.input[i] + "_s", s), "zp": self.const_attr(node.input[i] + "_z", z, "i64")},
            node.name,
        ).ref

    def _requant(self, node: onnx.NodeProto, f: Val, si: int, dt_from: int) -> None:
        sy = self.const_value(node.input[si], node)
        zy = self._zp(node, si + 1)
        zv = self.get(node.input[si + 1], node) if len(node.input) > si + 1 and node.input[si + 1] else None
        dt = (
            NP_QTYPES.get(np.asarray(zv.value).dtype, "u8")
            if isinstance(zv, Const)
            else self._int_dtype(node.input[dt_from])
        )  # type: ignore[union-attr]
        self.env[node.output[0]] = self.emit(
            "quant",
            node.output[0],
            [f.ref],
            {
                "scale": self.const_attr(node.output[0] + "_s", sy),
                "zp": self.const_attr(node.output[0] + "_z", zy, "i64"),
                "dtype": dt,
            },
            node.name,
        )

    def op_QLinearAdd(self, node: onnx.NodeProto) -> None:
        a, b = self._dq_input(node, 0), self._dq_input(node, 3)
        self._requant(node, self.emit("add", node.output[0] + "_f", [a, b], {}, node.name), 6, 0)

    def op_QLinearMul(self, node: onnx.NodeProto) -> None:
        a, b = self._dq_input(node, 0), self._dq_input(node, 3)
        self._requant(node, self.emit("mul", node.output[0] + "_f", [a, b], {}, node.name), 6, 0)

    def op_QLinearGlobalAveragePool(self, node: onnx.NodeProto) -> None:
        if _attrs(node).get("channels_last", 0):
            raise UserError(
                f"node '{node.name or node.output[0]}': channels_last QLinearGlobalAveragePool is not supported"
            )
        x = self._dq_input(node, 0)
        self._requant(node, self.emit("gavgpool", node.output[0] + "_f", [x], {}, node.name), 3, 0)

    def op_QLinearLeakyRelu(self, node: onnx.NodeProto) -> None:
        x = self._dq_input(node, 0)
        f = self.emit(
            "leakyrelu", node.output[0] + "_f", [x], {"alpha": float(_attrs(node).get("alpha", 0.01))}, node.name
        )
        self._requant(node, f, 3, 0)

    def op_QLinearConcat(self, node: onnx.NodeProto) -> None:
        parts = [self._dq_input(node, i) for i in range(2, len(node.input), 3)]
        f = self.emit("concat", node.output[0] + "_f", parts, {"axis": int(_attrs(node)["axis"])}, node.name)
        sy, zy = self.const_value(node.input[0], node), self._zp(node, 1)
        zv = self.get(node.input[1], node)
        dt = NP_QTYPES.get(np.asarray(zv.value).dtype, "u8") if isinstance(zv, Const) else "u8"  # type: ignore[union-attr]
        self.env[node.output[0]] = self.emit(
            "quant",
            node.output[0],
            [f.ref],
            {"scale": float(np.asarray(sy).reshape(())), "zp": int(zy.reshape(())), "dtype": dt},
            node.name,
        )

    def op_QLinearAveragePool(self, node: onnx.NodeProto) -> None:
        x = self._dq_input(node, 0)
        f = self.emit("avgpool", node.output[0] + "_f", [x], self._pool_attrs(node, x), node.name)
        self._requant(node, f, 3, 0)

    # ------------------------------------------------------------- CMOS layers
    def _unary(self, node: onnx.NodeProto, kind: str, attrs: dict[str, Any], keep_int: bool = False) -> None:
        if keep_int:
            ref, _ = self.any_ref(node.input[0], node)
        else:
            ref = self.float_ref(node.input[0], node)
        self.env[node.output[0]] = self.emit(kind, node.output[0], [ref], attrs, node.name or node.output[0])

    def op_Relu(self, node: onnx.NodeProto) -> None:
        self._unary(node, "relu", {}, keep_int=isinstance(self.get(node.input[0], node), Val))

    def op_Clip(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        lo = a.get("min", -np.inf)
        hi = a.get("max", np.inf)
        if len(node.input) > 1 and node.input[1]:
            lo = float(np.asarray(self.const_value(node.input[1], node)).reshape(()))
        if len(node.input) > 2 and node.input[2]:
            hi = float(np.asarray(self.const_value(node.input[2], node)).reshape(()))
        self._unary(node, "clip", {"min": float(lo), "max": float(hi)})

    def op_LeakyRelu(self, node: onnx.NodeProto) -> None:
        self._unary(node, "leakyrelu", {"alpha": float(_attrs(node).get("alpha", 0.01))})

    def op_Softmax(self, node: onnx.NodeProto) -> None:
        axis = int(_attrs(node).get("axis", -1 if self._opset() >= 13 else 1))
        ref = self.float_ref(node.input[0], node)
        shape = self.shape(ref) if ref.startswith("%") else ()
        if self._opset() < 13 and len(shape) > 2 and axis not in (-1, len(shape) - 1):
            flat = self.emit(
                "reshape",
                node.output[0] + "_2d",
                [ref],
                {"shape": [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))]},
                node.name,
            )
            s = self.emit("softmax", node.output[0] + "_s", [flat.ref], {"axis": -1}, node.name)
            self.env[node.output[0]] = self.emit("reshape", node.output[0], [s.ref], {"shape": list(shape)}, node.name)
            return
        self.env[node.output[0]] = self.emit("softmax", node.output[0], [ref], {"axis": axis}, node.name)

    def op_LRN(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        self._unary(
            node,
            "lrn",
            {
                "size": int(a["size"]),
                "alpha": float(a.get("alpha", 1e-4)),
                "beta": float(a.get("beta", 0.75)),
                "bias": float(a.get("bias", 1.0)),
            },
        )

    def _opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 1)

    def _binary(self, node: onnx.NodeProto, kind: str, names: list[str]) -> None:
        refs = [self.float_ref(n, node) for n in names]
        cur = refs[0]
        for i, r in enumerate(refs[1:]):
            base = node.output[0] if i == len(refs) - 2 else f"{node.output[0]}_{i}"
            cur = self.emit(kind, base, [cur, r], {}, node.name or node.output[0]).ref
        if len(refs) == 1:
            cur = self.emit("mov", node.output[0], [cur], {}, node.name).ref
        self.env[node.output[0]] = Val(cur, False)

    def op_Add(self, node: onnx.NodeProto) -> None:
        self._binary(node, "add", list(node.input))

    def op_Sum(self, node: onnx.NodeProto) -> None:
        self._binary(node, "add", list(node.input))

    def op_Sub(self, node: onnx.NodeProto) -> None:
        self._binary(node, "sub", list(node.input))

    def op_Mul(self, node: onnx.NodeProto) -> None:
        self._binary(node, "mul", list(node.input))

    def op_BatchNormalization(self, node: onnx.NodeProto) -> None:
        x = self.float_ref(node.input[0], node)
        eps = float(_attrs(node).get("epsilon", 1e-5))
        gamma, beta, mean, var = (np.asarray(self.const_value(n, node), dtype=np.float64) for n in node.input[1:5])
        k = gamma / np.sqrt(var + eps)
        shape = [1, -1] + [1] * (len(self.shape(x)) - 2)
        kref = self.g.const(node.output[0] + "_k", k.astype(np.float32).reshape(shape), "f32")
        bref = self.g.const(node.output[0] + "_b", (beta - mean * k).astype(np.float32).reshape(shape), "f32")
        y = self.emit("mul", node.output[0] + "_m", [x, kref], {}, node.name)
        self.env[node.output[0]] = self.emit("add", node.output[0], [y.ref, bref], {}, node.name)

    def _pool_attrs(self, node: onnx.NodeProto, ref: str) -> dict[str, Any]:
        a = _attrs(node)
        shape = self.shape(ref)
        k = list(a["kernel_shape"])
        if len(k) != 2:
            raise UserError(f"node '{node.name or node.output[0]}' ({node.op_type}): only 2-D pooling is supported")
        strides = list(a.get("strides", [1, 1]))
        dil = list(a.get("dilations", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        pads = _auto_pad(a, shape[2:], k, strides, dil, pads)
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
        out = {"kernel": k, "strides": strides, "pads": pads, "dilations": dil}
        if node.op_type in ("AveragePool", "QLinearAveragePool"):
            out["count_include_pad"] = int(a.get("count_include_pad", 0))
        return out

    def op_MaxPool(self, node: onnx.NodeProto) -> None:
        if len(node.output) > 1 and node.output[1]:
            raise UserError(f"node '{node.name or node.output[0]}': MaxPool with an Indices output is not supported")
        e = self.get(node.input[0], node)
        ref, _ = (
            self.any_ref(node.input[0], node) if isinstance(e, Val) else (self.float_ref(node.input[0], node), False)
        )
        self.env[node.output[0]] = self.emit("maxpool", node.output[0], [ref], self._pool_attrs(node, ref), node.name)

    def op_AveragePool(self, node: onnx.NodeProto) -> None:
        ref = self.float_ref(node.input[0], node)
        self.env[node.output[0]] = self.emit("avgpool", node.output[0], [ref], self._pool_attrs(node, ref), node.name)

    def op_GlobalAveragePool(self, node: onnx.NodeProto) -> None:
        self._unary(node, "gavgpool", {})

    def op_GlobalMaxPool(self, node: onnx.NodeProto) -> None:
        ref = self.float_ref(node.input[0], node)
        h, w = self.shape(ref)[2:]
        self.env[node.output[0]] = self.emit("maxpool", node.output[0], [ref], {"kernel": [h, w]}, node.name)

    def _layout(self, node: onnx.NodeProto, kind: str, attrs_fn: Any) -> None:
        e = self.get(node.input[0], node)
        if isinstance(e, DQ):
            # layout ops commute with dequantisation: keep the integer value and its quantisation
            v = self.emit(kind, node.output[0], [e.q.ref], attrs_fn(self.shape(e.q.ref)), node.name or node.output[0])
            self.env[node.output[0]] = DQ(v, e.scale, e.zp, e.dtype)
            return
        if isinstance(e, (Const, QConst)):
            ref = self.float_ref(node.input[0], node)
            v = self.emit(kind, node.output[0], [ref], attrs_fn(tuple(self.g.consts[ref[1:]].shape)), node.name)
            self.env[node.output[0]] = v
            return
        self.env[node.output[0]] = self.emit(kind, node.output[0], [e.ref], attrs_fn(self.shape(e.ref)), node.name)

    def op_Flatten(self, node: onnx.NodeProto) -> None:
        axis = int(_attrs(node).get("axis", 1))

        def attrs(shape: tuple[int, ...]) -> dict[str, Any]:
            ax = axis % len(shape) if axis < 0 else axis
            return {"shape": [int(np.prod(shape[:ax])), int(np.prod(shape[ax:]))]}

        self._layout(node, "reshape", attrs)

    def op_Reshape(self, node: onnx.NodeProto) -> None:
        target = [int(v) for v in np.asarray(self.const_value(node.input[1], node)).reshape(-1)]
        allowzero = int(_attrs(node).get("allowzero", 0))

        def attrs(shape: tuple[int, ...]) -> dict[str, Any]:
            out = [shape[i] if (v == 0 and not allowzero) else v for i, v in enumerate(target)]
            return {"shape": list(np.empty(shape, dtype=np.uint8).reshape(out).shape)}

        self._layout(node, "reshape", attrs)

    def _out_shape(self, name: str) -> list[int] | None:
        for vi in [*self.model.graph.value_info, *self.model.graph.output]:
            if vi.name == name:
                dims = vi.type.tensor_type.shape.dim
                if all(d.HasField("dim_value") for d in dims):
                    return [d.dim_value for d in dims]
        return None

    def op_Squeeze(self, node: onnx.NodeProto) -> None:
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = list(np.asarray(self.const_value(node.input[1], node)).reshape(-1))

        def attrs(shape: tuple[int, ...]) -> dict[str, Any]:
            ax = [a % len(shape) for a in axes] if axes is not None else [i for i, d in enumerate(shape) if d == 1]
            return {"shape": [d for i, d in enumerate(shape) if i not in ax]}

        self._layout(node, "reshape", attrs)

    def op_Unsqueeze(self, node: onnx.NodeProto) -> None:
        axes = _attrs(node).get("axes")
        if axes is None:
            axes = list(np.asarray(self.const_value(node.input[1], node)).reshape(-1))

        def attrs(shape: tuple[int, ...]) -> dict[str, Any]:
            r = len(shape) + len(axes)
            ax = sorted(int(a) % r for a in axes)
            out = list(shape)
            for a in ax:
                out.insert(a, 1)
            return {"shape": out}

        self._layout(node, "reshape", attrs)

    def op_Transpose(self, node: onnx.NodeProto) -> None:
        perm = _attrs(node).get("perm")
        self._layout(node, "transpose", lambda shape: {"perm": list(perm) if perm else list(range(len(shape)))[::-1]})

    def op_Concat(self, node: onnx.NodeProto) -> None:
        axis = int(_attrs(node)["axis"])
        entries = [self.get(n, node) for n in node.input]
        if all(isinstance(e, Val) and e.is_int for e in entries):
            refs = [e.ref for e in entries]  # type: ignore[union-attr]
        else:
            refs = [self.float_ref(n, node) for n in node.input]
        self.env[node.output[0]] = (
            self.emit("concat", node.output[0], refs, {"axis": axis}, node.name)
            if len(refs) > 1
            else self.emit("mov", node.output[0], refs, {}, node.name)
        )

    def op_Pad(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise UserError(
                f"node '{node.name or node.output[0]}' (Pad): only constant padding is supported, not {mode}"
            )
        pads = a.get("pads")
        if pads is None:
            pads = [int(v) for v in np.asarray(self.const_value(node.input[1], node)).reshape(-1)]
        value = float(a.get("value", 0.0))
        if len(node.input) > 2 and node.input[2]:
            value = float(np.asarray(self.const_value(node.input[2], node)).reshape(()))
        self._unary(node, "pad", {"pads": list(pads), "value": value})

    def op_Dropout(self, node: onnx.NodeProto) -> None:
        self.alias(node, self.get(node.input[0], node))

    def op_Identity(self, node: onnx.NodeProto) -> None:
        self.alias(node, self.get(node.input[0], node))

    def op_Cast(self, node: onnx.NodeProto) -> None:
        to = _attrs(node)["to"]
        self._unary(node, "cast", {"dtype": "f32" if to == onnx.TensorProto.FLOAT else "i64"}, keep_int=True)


def _auto_pad(
    a: dict[str, Any], spatial: Any, kernel: list[int], strides: list[int], dil: list[int], pads: list[int]
) -> list[int]:
    """ONNX auto_pad (SAME_UPPER, SAME_LOWER, VALID) as explicit [top, left, bottom, right] pads."""
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        return pads
    out_pads = [0, 0, 0, 0]
    for i, (size, k, s, d) in enumerate(zip(spatial, kernel, strides, dil, strict=True)):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        out_pads[i], out_pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    return out_pads


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


def import_model(model: onnx.ModelProto) -> Graph:
    return Importer(model).run()
