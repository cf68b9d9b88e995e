"""The CRAM-ER instruction set: one declarative table.

`OPCODES` drives the verifier (operand counts and kinds, attributes, and the
dataflow: what each operand reads or writes and over which extent, see
`Operand`), the interpreter's dispatch and the memory estimate (one function per
mnemonic, checked against the table), the unit costs of the cost model, the
per-gate fault rates, and docs/isa.md (cramc.isa.docgen).  It does not drive the
parser or the canonical printer: the instruction syntax is uniform
(`MNEMONIC [@lo:hi] OPERANDS [ATTR=VALUE ...]`), so both work without it and
the verifier checks a parsed instruction against its entry.  Adding an
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


class Access(Enum):
    """What an instruction does with the machine state an operand names (the verifier's dataflow reads it).

    The verifier reads the READ (and UPDATE) operands of an instruction first, in
    operand order, then writes the WRITE (and UPDATE) ones: a column must have been
    written before it is read, a tensor defined before it is used.  Accumulator
    slots start at 0 (the file is cleared with the chip), so they are declared but
    not tracked.
    """

    READ = "read"
    WRITE = "written"  # written (a column, an accumulator) or defined (a tensor)
    UPDATE = "read and written"  # an accumulator the adder tree adds into
    VALUE = "value"  # an immediate or a name: no machine state


class Shape(Enum):
    """How a tensor operand's shape follows from the instruction (checked on a read, inferred on a write)."""

    # an integer tensor [n, rows] or [n, rows, F]: entry i of the first axis is array i of the set (for a
    # source: one entry per `repeat` arrays, or a single entry for every array), r an active row, F the
    # fields of the instruction's column operand (its `Span`)
    SLICED = "[n, rows] or [n, rows, F]"
    SLOTS = "[n, slots]"  # an integer tensor: array i of the set, slot j of the accumulator range operand
    SEMANTIC = "reference semantics"  # what the opcode's `cmos` function computes from its sources


@dataclass(frozen=True)
class Span:
    """The consecutive columns a column operand covers: `bits` columns per field, field after field.

    It relates the column operand to the instruction's `Shape.SLICED` tensor
    operand: bit b of field f is column (operand + f*bits + b).
    """

    bits: str  # the attribute that gives the columns per field
    fields: str = ""  # the attribute that gives the number of fields (0 or absent: one, and no field axis)
    fields_of: str = ""  # or the SLICED tensor operand whose third axis gives it (a 2-D tensor: one)
    repeat: str = ""  # the attribute: each first-axis entry of the tensor feeds this many consecutive arrays


@dataclass(frozen=True)
class Bounds:
    """The values an integer operand or attribute may take, lo..hi inclusive (hi None: no upper bound)."""

    lo: int
    hi: int | None = None
    message: str = ""  # the verifier's error; default "<name> must be between lo and hi"

    def holds(self, v: int) -> bool:
        return self.lo <= v and (self.hi is None or v <= self.hi)

    def error(self, name: str) -> str:
        if self.message:
            return self.message
        if self.hi is None:
            return f"{name} must be at least {self.lo}"
        return f"{name} must be between {self.lo} and {self.hi}"

    @property
    def text(self) -> str:
        return f"{self.lo}..{self.hi}" if self.hi is not None else f">= {self.lo}"


@dataclass(frozen=True)
class Distinct:
    """A rule that column operands of one instruction name different columns (verified; docs/isa.md shows it).

    The operands that declare the same `Distinct` must name pairwise different
    columns.  With `of_reads`, the one operand that declares it (a written one)
    must also name none of the columns the instruction reads.  Inside a
    micro-program the verifier checks the rule where the columns are known, at
    each call's bindings, and at once when two operands are the same expression.
    """

    what: str  # what the operands are, for the error: "the copy operands c0 and c1 both name column ..."
    why: str  # the reason, one clause, after the error
    of_reads: bool = False


#: The redundant copies of one partial-product column read by the protected tree ops (tvadd, tdadd, ...).
COPIES = Distinct("copy", "the protection needs distinct copies (a fault in one column would agree with itself)")
#: One MTJ per terminal (a CRAM gate's circuit): the output cell is not one of the inputs ...
OUTPUT_CELL = Distinct(
    "output",
    "the output cell is preset and then carries the logic current in series with the inputs, so it cannot be one "
    "of them",
    of_reads=True,
)
#: ... and no cell is two of the inputs.
INPUT_CELLS = Distinct(
    "input",
    "each input is its own MTJ, in parallel with the others in the gate's circuit, so one cell cannot be two "
    "inputs of one gate",
)


@dataclass(frozen=True)
class Operand:
    """One operand position: what it accepts (`kind`) and what the instruction does with it (`access`).

    `span` (columns), `shape` (tensors), `bounds` (integers) and `distinct`
    (columns) declare the rest of what the verifier checks; docs/isa.md shows them.
    """

    name: str
    kind: Kind
    access: Access
    span: Span | None = None
    shape: Shape | None = None
    bounds: Bounds | None = None
    distinct: Distinct | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        state = self.kind not in (Kind.INT, Kind.MICRO)
        if state == (self.access is Access.VALUE):
            raise AssertionError(f"operand {self.name}: a {self.kind.value} operand cannot have access {self.access}")
        if (self.span or self.distinct) and self.kind is not Kind.COL:
            raise AssertionError(f"operand {self.name}: span and distinct are for column operands")
        if self.distinct is not None and self.distinct.of_reads and not self.writes:
            raise AssertionError(f"operand {self.name}: a distinct-from-the-reads rule is for a written operand")
        if self.shape and self.kind not in (Kind.TENSOR, Kind.SOURCE):
            raise AssertionError(f"operand {self.name}: shape is for tensor operands")
        if self.bounds and self.kind is not Kind.INT:
            raise AssertionError(f"operand {self.name}: bounds are for integer operands")

    @property
    def writes(self) -> bool:
        """True when the instruction writes or defines this operand."""
        return self.access in (Access.WRITE, Access.UPDATE)

    @property
    def reads(self) -> bool:
        return self.access in (Access.READ, Access.UPDATE)


@dataclass(frozen=True)
class Attr:
    name: str
    kind: AKind
    required: bool = False
    doc: str = ""
    bounds: Bounds | None = None  # an INT attribute's allowed values (checked by the verifier)


ROWS_ATTR = Attr("rows", AKind.RANGE, doc="active row range lo:hi (end exclusive); default all rows")

GateFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Tree:
    """What an adder-tree instruction computes (the interpreter, the fused runner and the counting rule read it).

    The tree senses `copies` column operands per active row (the first `copies`
    COL operands, in order): one is counted as it is; three are combined by an
    exact CMOS majority voter; two are compared, and in rows where they differ
    the periphery senses the `recompute` operands as well and recomputes the
    product bit (their AND) in CMOS.  The count is shifted and added into the
    accumulator (`sign` +1) or subtracted from it (-1).
    """

    sign: int  # +1: acc += count << shift; -1: acc -= count << shift
    copies: int = 1  # columns sensed per row: 1 (plain), 2 (duplicate-and-compare), 3 (majority vote)
    recompute: tuple[str, ...] = ()  # duplicate-and-compare: the operands sensed where the copies differ

    def __post_init__(self) -> None:
        if self.sign not in (1, -1) or self.copies not in (1, 2, 3) or bool(self.recompute) != (self.copies == 2):
            raise AssertionError(f"bad adder-tree spec {self}")

    @property
    def vote(self) -> bool:
        """Whether a majority voter combines the copies."""
        return self.copies == 3


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
    tree: Tree | None = None  # adder-tree ops: sign, copies sensed, recompute
    semantics: str = ""

    @property
    def attr_map(self) -> dict[str, Attr]:
        return {a.name: a for a in self.attrs}


def _gate(mn: str, n_in: int, logic: GateFn, meaning: str) -> Opcode:
    # one MTJ per terminal: dst is none of the inputs, and (two or more of them) the inputs are different cells
    inputs = INPUT_CELLS if n_in > 1 else None
    ins = tuple(Operand(f"in{i}", Kind.COL, Access.READ, distinct=inputs) for i in range(n_in))
    return Opcode(
        mn,
        Unit.GATE,
        f"row-parallel CRAM gate: dst = {meaning}",
        (Operand("dst", Kind.COL, Access.WRITE, distinct=OUTPUT_CELL), *ins),
        (ROWS_ATTR,),
        on_arrays=True,
        logic=logic,
        semantics=(
            f"In every array of the set and every active row: preset the dst cell, then pulse the "
            f"inputs so that dst = {meaning}. dst is a column apart from every input"
            + (", and the inputs are different columns" if n_in > 1 else "")
            + f" (one MTJ per terminal; verified). Counts one gate evaluation (which includes the preset "
            f"write of the output cell) per active row per array. Output bits may flip per the "
            f"fault model for `{mn}`."
        ),
    )


def _maj3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (a & b) | (c & (a | b))  # four operations: the simulator's kernel is compiled from this


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
    srcs = tuple(Operand(f"src{i}" if n_src > 1 else "src", Kind.SOURCE, Access.READ) for i in range(n_src))
    return Opcode(
        mn,
        Unit.CMOS,
        summary,
        (Operand("dst", Kind.TENSOR, Access.WRITE, shape=Shape.SEMANTIC), *srcs),
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

#: The shift operand of the adder-tree ops: at most 62, so a shifted count stays inside the int64 accumulator.
_SHIFT = Operand("shift", Kind.INT, Access.VALUE, bounds=Bounds(0, 62))

ARRAY_OPS: tuple[Opcode, ...] = (
    Opcode(
        "fill",
        Unit.WRITE,
        "write the constant 0 or 1 into a column",
        (
            Operand("dst", Kind.COL, Access.WRITE),
            Operand("value", Kind.INT, Access.VALUE, bounds=Bounds(0, 1, "fill writes 0 or 1")),
        ),
        (ROWS_ATTR,),
        on_arrays=True,
        semantics="Every active row of dst in every array of the set is written with value (0 or 1). "
        "Counts one write per active row per array; write faults apply.",
    ),
    Opcode(
        "wr",
        Unit.WRITE,
        "write a bit-sliced integer tensor into columns",
        (
            Operand("dst", Kind.COL, Access.WRITE, span=Span("bits", fields_of="src", repeat="repeat")),
            Operand("src", Kind.SOURCE, Access.READ, shape=Shape.SLICED),
        ),
        (
            Attr(
                "bits",
                AKind.INT,
                required=True,
                doc="bits per value (two's complement, LSB first)",
                bounds=Bounds(1, 64),
            ),
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
        (
            Operand("dst", Kind.TENSOR, Access.WRITE, shape=Shape.SLICED),
            Operand("src", Kind.COL, Access.READ, span=Span("bits", fields="fields")),
        ),
        (
            Attr("bits", AKind.INT, required=True, bounds=Bounds(1, 63)),
            Attr(
                "fields",
                AKind.INT,
                doc="number of consecutive fields of `bits` columns (default: no field axis)",
                bounds=Bounds(0),
            ),
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
        (Operand("acc", Kind.ACC, Access.UPDATE), Operand("src", Kind.COL, Access.READ), _SHIFT),
        (ROWS_ATTR,),
        on_arrays=True,
        tree=Tree(+1),
        semantics="In each array of the set, the CMOS adder tree counts the ones of column src over the "
        "active rows (a sensed read of the column), shifts the count left by shift and adds it to "
        "accumulator acc of that array. Exact unless tree faults are configured; read faults apply to "
        "the sensed bits.",
    ),
    Opcode(
        "tsub",
        Unit.TREE,
        "adder tree: acc -= popcount(column) << shift (two's-complement sign bits)",
        (Operand("acc", Kind.ACC, Access.UPDATE), Operand("src", Kind.COL, Access.READ), _SHIFT),
        (ROWS_ATTR,),
        on_arrays=True,
        tree=Tree(-1),
        semantics="As tadd, but subtracts: used for partial products that involve exactly one sign bit.",
    ),
    *(
        Opcode(
            mn,
            Unit.TREE,
            f"adder tree behind a CMOS majority voter: acc {sign}= popcount(MAJ(c0, c1, c2)) << shift",
            (
                Operand("acc", Kind.ACC, Access.UPDATE),
                Operand("c0", Kind.COL, Access.READ, distinct=COPIES),
                Operand("c1", Kind.COL, Access.READ, distinct=COPIES),
                Operand("c2", Kind.COL, Access.READ, distinct=COPIES),
                _SHIFT,
            ),
            (ROWS_ATTR,),
            on_arrays=True,
            tree=Tree(1 if sign == "+" else -1, copies=3),
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
                Operand("acc", Kind.ACC, Access.UPDATE),
                Operand("c0", Kind.COL, Access.READ, distinct=COPIES),
                Operand("c1", Kind.COL, Access.READ, distinct=COPIES),
                Operand("w", Kind.COL, Access.READ),
                Operand("x", Kind.COL, Access.READ),
                _SHIFT,
            ),
            (ROWS_ATTR,),
            on_arrays=True,
            tree=Tree(1 if sign == "+" else -1, copies=2, recompute=("w", "x")),
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
        (Operand("accs", Kind.ACCS, Access.WRITE),),
        on_arrays=True,
        semantics="Set the accumulator slots to 0 in every array of the set.",
    ),
    Opcode(
        "ard",
        Unit.ACC,
        "read accumulators into a CMOS tensor",
        (Operand("dst", Kind.TENSOR, Access.WRITE, shape=Shape.SLOTS), Operand("accs", Kind.ACCS, Access.READ)),
        on_arrays=True,
        semantics="dst[i, j] = slot j of the range in the i-th array of the set (int64).",
    ),
    Opcode(
        "call",
        Unit.CONTROL,
        "run a micro-program on a set of arrays",
        (Operand("micro", Kind.MICRO, Access.VALUE),),
        (ROWS_ATTR,),
        on_arrays=True,
        semantics="Runs the body of the micro-program on the given array set, binding its parameters to "
        "the name=value arguments (columns, accumulator slots, integers). Instructions in the body that "
        "name no rows inherit the call's row range.",
    ),
)

OPCODES: dict[str, Opcode] = {op.mnemonic: op for op in (*GATES, *ARRAY_OPS, *CMOS)}
