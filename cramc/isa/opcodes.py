"""The CRAM-ER instruction set: one declarative table.

Parser checks, the canonical printer, the verifier, the interpreter's dispatch,
the cost counters and docs/isa.md are all derived from `OPCODES`.  Adding an
instruction means adding one `Opcode` here (plus its interpreter function,
which a test insists on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from cramc.isa.cmos import CMOS_OPS, CmosFn


class Unit(Enum):
    """The hardware block that executes an instruction (drives cost and fault models)."""

    GATE = "gate"  # row-parallel CRAM logic gate: preset write + switching pulse
    WRITE = "write"  # periphery write of host data into array columns
    READ = "read"  # periphery read (sense) of array columns
    TREE = "tree"  # CMOS adder tree beside each array: popcount, shift, accumulate
    ACC = "acc"  # accumulator file beside each array (CMOS)
    CMOS = "cmos"  # CMOS vector unit between MVMs
    CONTROL = "control"  # sequencing: micro-program calls


class Kind(Enum):
    """What an operand position accepts."""

    COL = "col"  # an array column: c12, or in a micro-program a col parameter +/- offset
    ACC = "acc"  # one accumulator slot: acc3, or an acc parameter +/- offset
    ACCS = "accs"  # a slot range: acc0:16 (end exclusive) or a single slot
    INT = "int"  # an integer immediate, or an int parameter +/- offset
    TENSOR = "tensor"  # a CMOS tensor, %name, optionally indexed %name[i] on its first axis
    SOURCE = "source"  # a CMOS tensor or a data constant $name
    MICRO = "micro"  # the name of a micro-program


class AKind(Enum):
    """What an attribute value accepts."""

    INT = "int"
    FLOAT = "float"  # an int is accepted as a float
    SCALAR_OR_DATA = "scalar|$data"  # a number or a data constant (per-channel)
    INTS = "ints"  # [1, 2, 3]
    RANGE = "range"  # lo:hi
    DTYPE = "dtype"


@dataclass(frozen=True)
class Operand:
    name: str
    kind: Kind
    writes: bool = False  # True when the instruction defines/writes this operand
    doc: str = ""


@dataclass(frozen=True)
class Attr:
    name: str
    kind: AKind
    required: bool = False
    doc: str = ""


ROWS_ATTR = Attr("rows", AKind.RANGE, doc="active row range lo:hi (end exclusive); default all rows")

GateFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Opcode:
    mnemonic: str
    unit: Unit
    summary: str
    operands: tuple[Operand, ...] = ()
    attrs: tuple[Attr, ...] = ()
    on_arrays: bool = False  # takes an array set @lo:hi (implicit inside a micro-program)
    variadic: bool = False  # the last operand may repeat
    logic: GateFn | None = None  # gates: the boolean function on packed words
    cmos: CmosFn | None = None  # CMOS ops: reference semantics
    semantics: str = ""

    @property
    def attr_map(self) -> dict[str, Attr]:
        return {a.name: a for a in self.attrs}


def _gate(mn: str, n_in: int, logic: GateFn, meaning: str) -> Opcode:
    ins = tuple(Operand(f"in{i}", Kind.COL) for i in range(n_in))
    return Opcode(
        mn,
        Unit.GATE,
        f"row-parallel CRAM gate: dst = {meaning}",
        (Operand("dst", Kind.COL, writes=True), *ins),
        (ROWS_ATTR,),
        on_arrays=True,
        logic=logic,
        semantics=(
            f"In every array of the set and every active row: preset the dst cell, then pulse the "
            f"inputs so that dst = {meaning}. Counts one gate evaluation (which includes the preset "
            f"write of the output cell) per active row per array. Output bits may flip per the "
            f"fault model for `{mn}`."
        ),
    )


def _maj3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (a & b) | (a & c) | (b & c)


def _maj5(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray) -> np.ndarray:
    # majority of five: at least three set; built from the sorted-network identity
    ab, a_b = a & b, a | b
    cd, c_d = c & d, c | d
    two = ab | cd | (a_b & c_d)  # at least two among a..d
    three = (ab & c_d) | (cd & a_b)  # at least three among a..d
    return three | (two & e)


GATES: tuple[Opcode, ...] = (
    _gate("not", 1, lambda a: ~a, "NOT in0"),
    _gate("copy", 1, lambda a: a | a, "in0 (buffer)"),  # a fresh array equal to a, in any array library
    _gate("and", 2, lambda a, b: a & b, "in0 AND in1"),
    _gate("nand", 2, lambda a, b: ~(a & b), "NOT (in0 AND in1)"),
    _gate("or", 2, lambda a, b: a | b, "in0 OR in1"),
    _gate("nor", 2, lambda a, b: ~(a | b), "NOT (in0 OR in1)"),
    _gate("maj3", 3, _maj3, "MAJ(in0, in1, in2)"),
    _gate("min3", 3, lambda a, b, c: ~_maj3(a, b, c), "NOT MAJ(in0, in1, in2)"),
    _gate("maj5", 5, _maj5, "MAJ(in0, .., in4)"),
    _gate("min5", 5, lambda a, b, c, d, e: ~_maj5(a, b, c, d, e), "NOT MAJ(in0, .., in4)"),
)

DTYPE_ATTR = Attr("dtype", AKind.DTYPE, doc="i4, u4, i8, u8, i16, u16 or i32 (saturation range)")


def _c(
    mn: str,
    summary: str,
    n_src: int = 1,
    attrs: tuple[Attr, ...] = (),
    variadic: bool = False,
    semantics: str = "",
) -> Opcode:
    srcs = tuple(Operand(f"src{i}" if n_src > 1 else "src", Kind.SOURCE) for i in range(n_src))
    return Opcode(
        mn,
        Unit.CMOS,
        summary,
        (Operand("dst", Kind.TENSOR, writes=True), *srcs),
        attrs,
        variadic=variadic,
        cmos=CMOS_OPS[mn],
        semantics=semantics or summary,
    )


_axis = Attr("axis", AKind.INT, doc="per-channel axis (default 1)")
_kernel = Attr("kernel", AKind.INTS, required=True, doc="[kh, kw]")
_strides = Attr("strides", AKind.INTS, doc="[sh, sw], default [1, 1]")
_pads = Attr("pads", AKind.INTS, doc="[top, left, bottom, right] (ONNX order), default 0")
_dil = Attr("dilations", AKind.INTS, doc="[dh, dw], default [1, 1]")

CMOS: tuple[Opcode, ...] = (
    _c("mov", "dst = src (copy a tensor or load a data constant into the CMOS buffer)"),
    _c(
        "quant",
        "QuantizeLinear: dst = saturate(round_half_even(src / scale) + zp)",
        attrs=(
            Attr("scale", AKind.SCALAR_OR_DATA, required=True, doc="float, or $data per channel"),
            Attr("zp", AKind.SCALAR_OR_DATA, doc="zero point, default 0"),
            DTYPE_ATTR,
            _axis,
        ),
        semantics="Exactly ONNX QuantizeLinear (float32 division, round half to even, saturate to dtype).",
    ),
    _c(
        "dequant",
        "DequantizeLinear: dst = (src - zp) * scale, float32",
        attrs=(
            Attr("scale", AKind.SCALAR_OR_DATA, required=True, doc="float, or $data per channel"),
            Attr("zp", AKind.SCALAR_OR_DATA, doc="zero point, default 0"),
            _axis,
        ),
    ),
    _c("relu", "dst = max(src, 0)"),
    _c(
        "clip",
        "dst = min(max(src, min), max)",
        attrs=(Attr("min", AKind.FLOAT), Attr("max", AKind.FLOAT)),
    ),
    _c("leakyrelu", "dst = src if src >= 0 else alpha * src", attrs=(Attr("alpha", AKind.FLOAT),)),
    _c("add", "dst = src0 + src1 (numpy broadcasting; int64 or float32)", 2),
    _c("sub", "dst = src0 - src1 (numpy broadcasting)", 2),
    _c("mul", "dst = src0 * src1 (numpy broadcasting)", 2),
    _c("max", "dst = max(src0, src1) element-wise", 2),
    _c(
        "sum",
        "dst = sum of src over one axis (e.g. partial sums of K chunks)",
        attrs=(Attr("axis", AKind.INT, required=True), Attr("keepdims", AKind.INT)),
    ),
    _c("maxpool", "2-D max pooling of an NCHW tensor", attrs=(_kernel, _strides, _pads, _dil)),
    _c(
        "avgpool",
        "2-D average pooling of an NCHW tensor",
        attrs=(_kernel, _strides, _pads, _dil, Attr("count_include_pad", AKind.INT)),
    ),
    _c("gavgpool", "global average pooling over the spatial axes (keeps them as size 1)"),
    _c(
        "im2col",
        "gather patches: [B,C,H,W] -> [B*OH*OW, C*kh*kw], K ordered (c, kh, kw) like ONNX weights",
        attrs=(_kernel, _strides, _pads, _dil, Attr("value", AKind.FLOAT, doc="padding value (the zero point)")),
    ),
    _c(
        "reshape",
        "dst = src reshaped (per-inference shape; one -1 allowed)",
        attrs=(Attr("shape", AKind.INTS, required=True),),
    ),
    _c("transpose", "dst = src with axes permuted", attrs=(Attr("perm", AKind.INTS, required=True),)),
    _c(
        "slice",
        "dst = src[start:end:step] along one axis",
        attrs=(
            Attr("axis", AKind.INT, required=True),
            Attr("start", AKind.INT, required=True),
            Attr("end", AKind.INT, required=True),
            Attr("step", AKind.INT),
        ),
    ),
    _c(
        "concat",
        "dst = concatenation of the sources along axis",
        2,
        (Attr("axis", AKind.INT, required=True),),
        variadic=True,
    ),
    _c(
        "pad",
        "constant padding; pads = all begins then all ends (ONNX order)",
        attrs=(Attr("pads", AKind.INTS, required=True), Attr("value", AKind.FLOAT)),
    ),
    _c("tile", "dst = src repeated reps[i] times along each axis", attrs=(Attr("reps", AKind.INTS, required=True),)),
    _c("softmax", "softmax along axis (default -1)", attrs=(Attr("axis", AKind.INT),)),
    _c(
        "lrn",
        "local response normalisation across channels (ONNX LRN)",
        attrs=(
            Attr("size", AKind.INT, required=True),
            Attr("alpha", AKind.FLOAT),
            Attr("beta", AKind.FLOAT),
            Attr("bias", AKind.FLOAT),
        ),
    ),
    _c(
        "cast",
        "convert between float32 (f32) and int64 (i64, rounding half to even)",
        attrs=(Attr("dtype", AKind.DTYPE, required=True),),
    ),
)

ARRAY_OPS: tuple[Opcode, ...] = (
    Opcode(
        "fill",
        Unit.WRITE,
        "write the constant 0 or 1 into a column",
        (Operand("dst", Kind.COL, writes=True), Operand("value", Kind.INT)),
        (ROWS_ATTR,),
        on_arrays=True,
        semantics="Every active row of dst in every array of the set is written with value (0 or 1). "
        "Counts one write per active row per array; write faults apply.",
    ),
    Opcode(
        "wr",
        Unit.WRITE,
        "write a bit-sliced integer tensor into columns",
        (Operand("dst", Kind.COL, writes=True), Operand("src", Kind.SOURCE)),
        (
            Attr("bits", AKind.INT, required=True, doc="bits per value (two's complement, LSB first)"),
            Attr("repeat", AKind.INT, doc="each source entry feeds this many consecutive arrays (default 1)"),
            ROWS_ATTR,
        ),
        on_arrays=True,
        semantics="src has shape [n, rows] or [n, rows, F], n = the number of arrays in the set divided by "
        "`repeat` (or 1, broadcast to every array), rows = the active row count. Bit b of field f of row r of "
        "entry i goes to column dst + f*bits + b, row r, of arrays i*repeat .. i*repeat+repeat-1 of the set "
        "(the periphery drives the same data into several arrays). Counts one write per bit written into "
        "each array; write faults apply per array.",
    ),
    Opcode(
        "rd",
        Unit.READ,
        "read columns back into a CMOS tensor",
        (Operand("dst", Kind.TENSOR, writes=True), Operand("src", Kind.COL)),
        (
            Attr("bits", AKind.INT, required=True),
            Attr("fields", AKind.INT, doc="number of consecutive fields of `bits` columns (default: no field axis)"),
            Attr("signed", AKind.INT, doc="1: two's complement (default), 0: unsigned"),
            ROWS_ATTR,
        ),
        on_arrays=True,
        semantics="dst[i, r(, f)] = the integer in columns src + f*bits .. + bits-1 of row r of the i-th "
        "array. Counts one read per bit; read (sense) faults apply.",
    ),
    Opcode(
        "tadd",
        Unit.TREE,
        "adder tree: acc += popcount(column) << shift",
        (Operand("acc", Kind.ACC, writes=True), Operand("src", Kind.COL), Operand("shift", Kind.INT)),
        (ROWS_ATTR,),
        on_arrays=True,
        semantics="In each array of the set, the CMOS adder tree counts the ones of column src over the "
        "active rows (a sensed read of the column), shifts the count left by shift and adds it to "
        "accumulator acc of that array. Exact unless tree faults are configured; read faults apply to "
        "the sensed bits.",
    ),
    Opcode(
        "tsub",
        Unit.TREE,
        "adder tree: acc -= popcount(column) << shift (two's-complement sign bits)",
        (Operand("acc", Kind.ACC, writes=True), Operand("src", Kind.COL), Operand("shift", Kind.INT)),
        (ROWS_ATTR,),
        on_arrays=True,
        semantics="As tadd, but subtracts: used for partial products that involve exactly one sign bit.",
    ),
    *(
        Opcode(
            mn,
            Unit.TREE,
            f"adder tree behind a CMOS majority voter: acc {sign}= popcount(MAJ(c0, c1, c2)) << shift",
            (
                Operand("acc", Kind.ACC, writes=True),
                Operand("c0", Kind.COL),
                Operand("c1", Kind.COL),
                Operand("c2", Kind.COL),
                Operand("shift", Kind.INT),
            ),
            (ROWS_ATTR,),
            on_arrays=True,
            semantics="Triple redundancy voted in the CMOS periphery: the tree senses the three copies c0, c1, c2 "
            "of a partial-product column, a CMOS majority voter (exact: it does not fail the way a CRAM gate "
            "does) combines them row by row, and the tree counts the voted ones, shifts and "
            f"{'adds' if sign == '+' else 'subtracts'}. c0, c1, c2 must be distinct columns (verified). Read faults "
            "apply to each sensed bit.",
        )
        for mn, sign in (("tvadd", "+"), ("tvsub", "-"))
    ),
    *(
        Opcode(
            mn,
            Unit.TREE,
            f"adder tree with duplicate-and-compare: acc {sign}= popcount(c0 if c0 == c1 else w AND x) << shift",
            (
                Operand("acc", Kind.ACC, writes=True),
                Operand("c0", Kind.COL),
                Operand("c1", Kind.COL),
                Operand("w", Kind.COL),
                Operand("x", Kind.COL),
                Operand("shift", Kind.INT),
            ),
            (ROWS_ATTR,),
            on_arrays=True,
            semantics="Detect and recompute: the tree senses two copies c0, c1 of a partial-product column; in "
            "rows where they differ, the periphery senses the operand cells w and x and recomputes the product "
            "bit in CMOS (counted as extra sensed bits and as recomputes). Cheaper than triple redundancy; "
            "a fault that hits both copies the same way goes undetected, so c0 and c1 must be distinct columns "
            "(verified). Read faults apply to each sensed bit.",
        )
        for mn, sign in (("tdadd", "+"), ("tdsub", "-"))
    ),
    Opcode(
        "aclr",
        Unit.ACC,
        "clear accumulators",
        (Operand("accs", Kind.ACCS, writes=True),),
        on_arrays=True,
        semantics="Set the accumulator slots to 0 in every array of the set.",
    ),
    Opcode(
        "ard",
        Unit.ACC,
        "read accumulators into a CMOS tensor",
        (Operand("dst", Kind.TENSOR, writes=True), Operand("accs", Kind.ACCS)),
        on_arrays=True,
        semantics="dst[i, j] = slot j of the range in the i-th array of the set (int64).",
    ),
    Opcode(
        "call",
        Unit.CONTROL,
        "run a micro-program on a set of arrays",
        (Operand("micro", Kind.MICRO),),
        (ROWS_ATTR,),
        on_arrays=True,
        semantics="Runs the body of the micro-program on the given array set, binding its parameters to "
        "the name=value arguments (columns, accumulator slots, integers). Instructions in the body that "
        "name no rows inherit the call's row range.",
    ),
)

OPCODES: dict[str, Opcode] = {op.mnemonic: op for op in (*GATES, *ARRAY_OPS, *CMOS)}
