"""The table of IR operation kinds: inputs and attributes, checked by the IR verifier and the parser.

Two kinds are the compiler's own: ``conv`` (an integer convolution, before conv-to-mvm) and ``mvm``
(an exact integer matrix product, later annotated with how it runs on the chip).  Every other kind
is a CMOS instruction of the ISA, with the operands and attributes its entry in the opcode table
(cramc.isa.opcodes) declares, because that is what the emitter writes it as: adding a CMOS
instruction there adds the IR kind here.

An attribute is either semantic (what the operation computes: it enters the reference semantics and
the shape cache) or an *annotation* (how it runs on the chip: ``tile``, ``cols``, ``place``,
``ecc``, ``dbuf``, ``cram_cols``).  The typed annotations are frozen records (cramc.ir.tiling) that the text
form prints as integer lists; `decode_attr` turns such a list back into its record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cramc.errors import InternalError
from cramc.ir.graph import Op
from cramc.ir.tiling import Cols, Place, Tile
from cramc.isa import data as tdata
from cramc.isa.opcodes import OPCODES, AKind, Unit

#: An attribute kind beyond the ISA's (cramc.isa.opcodes.AKind): a reference to a constant, "$name".
CONST = "$const"


@dataclass(frozen=True)
class AttrDef:
    name: str
    kind: AKind | str | type  # an ISA attribute kind, CONST, or a record class
    required: bool = False
    annotation: bool = False  # how the op runs on the chip, not what it computes

    def accepts(self, v: Any) -> bool:
        """Whether `v` has this attribute's type (that a referenced constant exists is the verifier's check)."""
        k = self.kind
        if isinstance(k, type):
            return isinstance(v, k)
        if k == CONST:
            return _is_ref(v)
        if k is AKind.INT:
            return _is_int(v)
        if k is AKind.FLOAT:
            return _is_num(v)
        if k is AKind.SCALAR_OR_DATA:
            return _is_num(v) or _is_ref(v)
        if k is AKind.INTS:
            return isinstance(v, list) and all(_is_int(x) for x in v)
        if k is AKind.RANGE:
            return isinstance(v, tuple) and len(v) == 2 and all(_is_int(x) for x in v)
        if k is AKind.DTYPE:
            return isinstance(v, str) and v in tdata.DTYPES
        raise InternalError(f"attribute kind {k!r}")

    @property
    def what(self) -> str:
        k = self.kind
        if isinstance(k, type):
            return f"a {k.__name__} record"
        if k == CONST:
            return "a constant ($name)"
        return {
            AKind.INT: "an integer",
            AKind.FLOAT: "a number",
            AKind.SCALAR_OR_DATA: "a number or a constant ($name)",
            AKind.INTS: "a list of integers",
            AKind.RANGE: "a range lo:hi",
            AKind.DTYPE: "an element type",
        }[k]  # type: ignore[index]


@dataclass(frozen=True)
class OpDef:
    """One IR operation kind: how many inputs it takes and which attributes."""

    kind: str
    inputs: int  # inputs taken (at least this many when variadic)
    attrs: tuple[AttrDef, ...]
    variadic: bool = False
    integer_input: bool = False  # the first input must be an integer value

    @property
    def attr_map(self) -> dict[str, AttrDef]:
        return {a.name: a for a in self.attrs}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating))


def _is_ref(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("$") and len(v) > 1


_WINDOW = (
    AttrDef("kernel", AKind.INTS, required=True),
    AttrDef("strides", AKind.INTS),
    AttrDef("pads", AKind.INTS),
    AttrDef("dilations", AKind.INTS),
)
_BITS = (
    AttrDef("w", CONST, required=True),
    AttrDef("wbits", AKind.INT, required=True),
    AttrDef("xbits", AKind.INT, required=True),
    AttrDef("xsigned", AKind.INT, required=True),
)

MVM_OPS: tuple[OpDef, ...] = (
    OpDef(
        "conv",
        1,
        (*_BITS, *_WINDOW, AttrDef("group", AKind.INT), AttrDef("xzp", AKind.INT)),
        integer_input=True,
    ),
    OpDef(
        "mvm",
        1,
        (
            *_BITS,
            AttrDef("groups", AKind.INT),
            AttrDef("ecc", AKind.INTS, annotation=True),  # cramc.ir.passes.insert_ecc
            AttrDef("tile", Tile, annotation=True),
            AttrDef("dbuf", AKind.INT, annotation=True),  # 1: double-buffered scratch (cramc.ir.passes.tile_mvm)
            AttrDef("cols", Cols, annotation=True),
            AttrDef("place", Place, annotation=True),
            AttrDef("cram_cols", AKind.INTS, annotation=True),  # cramc.backend.cram_only.Layout
        ),
        integer_input=True,
    ),
)


def _cmos(mn: str) -> OpDef:
    isa = OPCODES[mn]
    srcs = len(isa.operands) - 1  # operand 0 is the destination: the op's result
    return OpDef(mn, srcs, tuple(AttrDef(a.name, a.kind, a.required) for a in isa.attrs), variadic=isa.variadic)


#: kind -> its definition: the compiler's MVM kinds and every CMOS instruction of the ISA.
IR_OPS: dict[str, OpDef] = {
    **{d.kind: d for d in MVM_OPS},
    **{mn: _cmos(mn) for mn, op in OPCODES.items() if op.unit is Unit.CMOS},
}
#: Attributes that say how an op runs on the chip; the semantics and the shape cache ignore them.
ANNOTATIONS: frozenset[tuple[str, str]] = frozenset(
    (d.kind, a.name) for d in IR_OPS.values() for a in d.attrs if a.annotation
)


def check_op(op: Op) -> None:
    """`op` is a known kind with the inputs and attributes the table allows (InternalError otherwise)."""
    d = IR_OPS.get(op.kind)
    where = f"IR: {op.kind} %{op.out}"
    if d is None:
        raise InternalError(f"IR: %{op.out} has an unknown operation kind '{op.kind}'")
    n = len(op.ins)
    if n < d.inputs or (n > d.inputs and not d.variadic):
        need = f"at least {d.inputs}" if d.variadic else str(d.inputs)
        raise InternalError(f"{where} takes {need} input(s), got {n}")
    allowed = d.attr_map
    for k, v in op.attrs.items():
        a = allowed.get(k)
        if a is None:
            raise InternalError(f"{where} has no attribute '{k}' (allowed: {', '.join(allowed) or 'none'})")
        if not a.accepts(v):
            raise InternalError(f"{where}: {k} must be {a.what}, got {v!r}")
    for a in d.attrs:
        if a.required and a.name not in op.attrs:
            raise InternalError(f"{where} needs the attribute {a.name}=")


def decode_attr(kind: str, name: str, value: Any) -> Any:
    """An attribute as the IR text spells it -> its value in the graph (records from their lists)."""
    d = IR_OPS.get(kind)
    a = d.attr_map.get(name) if d is not None else None
    if a is not None and isinstance(a.kind, type):
        return a.kind.from_attr(value)  # type: ignore[attr-defined]
    return value


def semantic_attrs(op: Op) -> dict[str, Any]:
    """The attributes that say what `op` computes (annotations left out)."""
    return {k: v for k, v in op.attrs.items() if (op.kind, k) not in ANNOTATIONS}
