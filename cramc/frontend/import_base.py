"""What the ONNX importer knows while it walks a graph, and the registry of its operator handlers.

The importer (cramc.frontend.importer) walks the nodes of a quantised ONNX graph in order and hands
each to the handler registered for its operator with ``@handles("Relu", ...)``: the MVM layers in
cramc.frontend.import_mvm, everything that becomes CMOS operations in cramc.frontend.import_cmos.
The registry is also the list of supported operators that legalisation (cramc.frontend.quantize)
checks models against, so an operator is supported exactly when it has a handler.

A handler reads its inputs as `Entry`s of `ImportState.env` (constants, dequantised constants,
IR values, lazily dequantised activations) and emits IR operations with `ImportState.emit`, which
infers each result's shape as it goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from cramc.errors import InternalError, UserError
from cramc.ir.graph import Graph, Op, sanitize
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
        s, z = bcast(self.scale, self.q, self.axis), bcast(self.zp, self.q, self.axis)
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


def bcast(v: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    v = np.asarray(v)
    if v.size <= 1:
        return v.reshape(())
    shape = [1] * like.ndim
    shape[axis % like.ndim] = v.size
    return v.reshape(shape)


def attrs_of(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def scalar(v: np.ndarray, what: str, node: onnx.NodeProto) -> float | int:
    a = np.asarray(v)
    if a.size != 1:
        raise UserError(
            f"node '{node.name or node.output[0]}' ({node.op_type}): {what} must be per-tensor (got {a.size} values)"
        )
    return a.reshape(()).item()


def auto_pad(
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


Handler = Callable[["ImportState", onnx.NodeProto], None]


@dataclass(frozen=True)
class OpHandler:
    """How the importer lowers one ONNX operator."""

    op_type: str
    fn: Handler
    #: the operator only occurs in models that are already quantised (QDQ or QOperator), so its
    #: presence tells the frontend not to quantise the model again
    quantised: bool = False


#: ONNX operator -> its handler; filled by @handles when import_mvm and import_cmos are imported.
HANDLERS: dict[str, OpHandler] = {}


def handles(*op_types: str, quantised: bool = False) -> Callable[[Handler], Handler]:
    """Register a function `fn(imp, node)` as the importer of the ONNX operators `op_types`."""

    def register(fn: Handler) -> Handler:
        taken = [t for t in op_types if t in HANDLERS]
        if taken:
            raise InternalError(f"two importer handlers for ONNX operator {', '.join(taken)}")
        for t in op_types:
            HANDLERS[t] = OpHandler(t, fn, quantised)
        return fn

    return register


@dataclass
class ImportState:
    """The graph being built and what each ONNX tensor has become so far."""

    model: onnx.ModelProto
    g: Graph = field(default_factory=Graph)
    env: dict[str, Entry] = field(default_factory=dict)
    shapes: dict[str, tuple[tuple[int, ...], bool]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    skip: set[int] = field(default_factory=set)  # nodes an earlier handler consumed (fused requantisation)
    users: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)  # ONNX tensor -> the nodes reading it
    graph_outputs: set[str] = field(default_factory=set)

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

    def alias(self, node: onnx.NodeProto, e: Entry) -> None:
        self.env[node.output[0]] = e

    def int_dtype(self, name: str) -> str:
        """The element type the model declares for an integer tensor (u8 if it declares none)."""
        for vi in [*self.model.graph.input, *self.model.graph.value_info, *self.model.graph.output]:
            if vi.name == name:
                return ONNX_QTYPES.get(vi.type.tensor_type.elem_type, "u8")
        e = self.env.get(name)
        return "u8" if e is None else "i8"

    def zp(self, node: onnx.NodeProto, idx: int) -> np.ndarray:
        """The zero point given as input `idx` of a QOperator node (0 when omitted), as int64."""
        if len(node.input) > idx and node.input[idx]:
            return np.asarray(self.const_value(node.input[idx], node)).astype(np.int64)
        return np.zeros((), np.int64)

    def opset(self) -> int:
        """The model's opset of the default ONNX domain."""
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 1)
