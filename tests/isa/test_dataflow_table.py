"""The verifier's dataflow walks the opcode table: what each operand reads and writes is declared there.

The programs here are built from the table itself (cramc.isa.opcodes), so a new
opcode is covered by its declarations: every read operand left undefined is
rejected at that operand, every bound and every distinct-column rule declared is
enforced, and a declared column span is the span checked.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from cramc.errors import UserError
from cramc.isa.opcodes import (
    COPIES,
    INPUT_CELLS,
    OPCODES,
    OUTPUT_CELL,
    Access,
    AKind,
    Attr,
    Kind,
    Opcode,
    Operand,
    Shape,
    Unit,
)
from cramc.isa.parser import parse
from cramc.isa.verifier import verify

HEADER = ".machine arrays=2 rows=8 cols=64 accs=8\n.input t : i8[2,8]\n"
ARRAY_OPS = [op for op in OPCODES.values() if op.on_arrays and op.unit is not Unit.CONTROL]
DATAFLOW_OPS = [op for op in OPCODES.values() if op.unit is not Unit.CONTROL]


def _column(pos: int) -> int:
    """The column operand `pos` names: eight apart, so a span of a few columns never overlaps the next one."""
    return 8 + 8 * pos


def _attr_value(a: Attr) -> str:
    """A value of the attribute's kind that its bounds allow."""
    return {
        AKind.INT: str(a.bounds.lo if a.bounds else 1),
        AKind.FLOAT: "1.0",
        AKind.SCALAR_OR_DATA: "1.0",
        AKind.INTS: "[1, 1]",
        AKind.RANGE: "0:1",
        AKind.DTYPE: "i8",
    }[a.kind]


@dataclass
class Instr:
    """One instruction written from the table: its text and the 1-based column where each operand starts."""

    text: str
    cols: list[int]


def _instr(op: Opcode, values: dict[int, str] | None = None, attrs: dict[str, str] | None = None) -> Instr:
    values = values or {}
    head = f"  {op.mnemonic} " + ("@0:2 " if op.on_arrays else "")
    parts: list[str] = []
    for pos, o in enumerate(op.operands):
        parts.append(values.get(pos) or _default(o, pos))
    cols, at = [], len(head) + 1
    for p in parts:
        cols.append(at)
        at += len(p) + 2
    given = {a.name: _attr_value(a) for a in op.attrs if a.required}
    given.update(attrs or {})
    tail = "".join(f" {k}={v}" for k, v in given.items())
    return Instr(head + ", ".join(parts) + tail, cols)


def _default(o: Operand, pos: int) -> str:
    if o.kind is Kind.COL:
        return f"c{_column(pos)}"
    if o.kind is Kind.ACC:
        return "acc1"
    if o.kind is Kind.ACCS:
        return "acc0:4"
    if o.kind is Kind.INT:
        return str(o.bounds.lo if o.bounds else 1)
    if o.kind in (Kind.TENSOR, Kind.SOURCE):
        return "%out" if o.writes else "%t"
    raise AssertionError(o.kind)


def _program(op: Opcode, ins: Instr, undefined: int | None = None) -> tuple[str, int]:
    """A program that writes every column `ins` reads, except operand `undefined`'s; the instruction's line."""
    lines = [f"  fill @0:2 c{_column(pos)}, 0" for pos, o in enumerate(op.operands) if _reads_column(o)]
    if undefined is not None and _reads_column(op.operands[undefined]):
        lines.remove(f"  fill @0:2 c{_column(undefined)}, 0")
    text = HEADER + ".main {\n" + "".join(f"{line}\n" for line in lines) + ins.text + "\n}\n"
    return text, HEADER.count("\n") + 2 + len(lines)


def _reads_column(o: Operand) -> bool:
    return o.kind is Kind.COL and o.reads


def _error(text: str) -> UserError:
    with pytest.raises(UserError) as ei:
        verify(parse(text, "t.cram"))
    return ei.value


# ------------------------------------------------------------------ the table itself
@pytest.mark.parametrize("op", OPCODES.values(), ids=lambda op: op.mnemonic)
def test_every_operand_declares_its_dataflow(op: Opcode) -> None:
    names = {o.name for o in op.operands}
    for o in op.operands:
        assert isinstance(o.access, Access), (op.mnemonic, o.name)
        state = o.kind not in (Kind.INT, Kind.MICRO)
        assert (o.access is not Access.VALUE) == state, (op.mnemonic, o.name)
        if o.kind is Kind.TENSOR and o.writes:
            assert o.shape is not None, f"{op.mnemonic} {o.name}: a written tensor declares its shape"
        if o.span is not None:
            assert o.span.bits in op.attr_map and op.attr_map[o.span.bits].required, (op.mnemonic, o.name)
            assert bool(o.span.fields) != bool(o.span.fields_of), (op.mnemonic, o.name)
            assert not o.span.fields or o.span.fields in op.attr_map
            assert not o.span.repeat or o.span.repeat in op.attr_map
            if o.span.fields_of:
                src = next(p for p in op.operands if p.name == o.span.fields_of)
                assert src.shape is Shape.SLICED and src.reads, (op.mnemonic, o.name)
        if o.distinct is not None and o.distinct.of_reads:  # one written operand, apart from the columns read
            assert o.writes and sum(p.distinct == o.distinct for p in op.operands) == 1, (op.mnemonic, o.name)
            assert any(p.kind is Kind.COL and p.reads for p in op.operands), (op.mnemonic, o.name)
        elif o.distinct is not None:
            assert sum(p.distinct == o.distinct for p in op.operands) >= 2, (op.mnemonic, o.name)
    sliced = [o for o in op.operands if o.shape is Shape.SLICED]
    spans = [o for o in op.operands if o.span is not None]
    assert len(sliced) == len(spans) <= 1, f"{op.mnemonic}: a bit-sliced tensor needs exactly one column span"
    if any(o.shape is Shape.SLOTS for o in op.operands):
        assert any(o.kind is Kind.ACCS for o in op.operands), op.mnemonic
    if any(o.shape is Shape.SEMANTIC for o in op.operands):
        assert op.cmos is not None, op.mnemonic
    for a in op.attrs:
        assert a.bounds is None or a.kind is AKind.INT, (op.mnemonic, a.name)
    assert len(names) == len(op.operands)


# ------------------------------------------------------------------ reads
@pytest.mark.parametrize("op", ARRAY_OPS, ids=lambda op: op.mnemonic)
def test_an_instruction_with_everything_defined_verifies(op: Opcode) -> None:
    ins = _instr(op)
    text, _ = _program(op, ins)
    verify(parse(text, "t.cram"))


READS = [
    (op, pos)
    for op in DATAFLOW_OPS
    for pos, o in enumerate(op.operands)
    if o.reads and o.kind in (Kind.COL, Kind.TENSOR, Kind.SOURCE)
]


@pytest.mark.parametrize(("op", "pos"), READS, ids=[f"{op.mnemonic}-{op.operands[p].name}" for op, p in READS])
def test_an_undefined_read_is_rejected_at_its_operand(op: Opcode, pos: int) -> None:
    o = op.operands[pos]
    ins = _instr(op, {pos: "%undef"} if o.kind is not Kind.COL else None)
    text, line = _program(op, ins, undefined=pos)
    e = _error(text)
    if o.kind is Kind.COL:
        assert e.message == f"column c{_column(pos)} of array 0 is read before anything is written to it"
    else:
        assert e.message.startswith("tensor %undef is used before it is defined"), e.message
    assert e.loc is not None and (e.loc.line, e.loc.col) == (line, ins.cols[pos]), (e.loc, ins.text)


def test_accumulators_are_declared_but_not_tracked() -> None:
    """They start at 0, so `ard` of slots nothing wrote is legal (Access's docstring says why)."""
    op = OPCODES["ard"]
    assert [o.access for o in op.operands] == [Access.WRITE, Access.READ]
    assert OPCODES["tadd"].operands[0].access is Access.UPDATE
    linked = verify(parse(HEADER + ".main {\n  ard @0:2 %o, acc2:5\n}\n", "t.cram"))
    assert linked.tensor_shapes["o"] == ((2, 3), True)  # Shape.SLOTS: [arrays, slots]


def test_an_instruction_reads_before_it_writes() -> None:
    """Reads come first: a gate reading its own unwritten output is a read error (written, it is the output rule)."""
    e = _error(HEADER + ".main {\n  not @0:2 c1, c1\n}\n")
    assert e.message == "column c1 of array 0 is read before anything is written to it"
    assert e.loc is not None and e.loc.col == len("  not @0:2 c1, ") + 1
    e = _error(HEADER + ".main {\n  fill @0:2 c1, 1\n  not @0:2 c1, c1\n}\n")
    assert e.message.startswith("not: the output operand dst and the input operand in0 both name column c1;")
    # an accumulator the tree adds into is read and written by one instruction
    verify(parse(HEADER + ".main {\n  fill @0:2 c1, 1\n  tadd @0:2 acc0, c1, 0\n  tadd @0:2 acc0, c1, 1\n}\n"))


# ------------------------------------------------------------------ spans
def test_rd_reads_bits_times_fields_columns() -> None:
    op = OPCODES["rd"]
    assert op.operands[1].span is not None and op.operands[1].span.fields == "fields"
    fills = "".join(f"  fill @0:2 c{c}, 1\n" for c in range(8, 13))  # c8 .. c12: one short of 2 x 3
    text = HEADER + ".main {\n" + fills + "  rd @0:2 %o, c8 bits=2 fields=3\n}\n"
    e = _error(text)
    assert e.message == "column c13 of array 0 is read before anything is written to it"
    assert e.loc is not None and e.loc.col == len("  rd @0:2 %o, ") + 1
    fills += "  fill @0:2 c13, 1\n"
    linked = verify(parse(HEADER + ".main {\n" + fills + "  rd @0:2 %o, c8 bits=2 fields=3\n}\n", "t.cram"))
    assert linked.tensor_shapes["o"] == ((2, 8, 3), True)  # Shape.SLICED with the field axis


def test_wr_writes_bits_times_the_fields_of_its_source() -> None:
    op = OPCODES["wr"]
    assert op.operands[0].span is not None and op.operands[0].span.fields_of == "src"
    data = ".data $d : i8[1,8,3] = [" + ", ".join(["1"] * 24) + "]\n"
    body = "  wr @0:2 c8, $d bits=2\n"
    verify(parse(HEADER + data + ".main {\n" + body + "  not @0:2 c0, c13\n}\n", "t.cram"))
    e = _error(HEADER + data + ".main {\n" + body + "  not @0:2 c0, c14\n}\n")
    assert e.message == "column c14 of array 0 is read before anything is written to it"


# ------------------------------------------------------------------ distinct columns and bounds
DISTINCT = [
    (op, a, b)
    for op in OPCODES.values()
    for a, b in itertools.combinations(range(len(op.operands)), 2)
    if op.operands[a].distinct is not None
    and not op.operands[a].distinct.of_reads
    and op.operands[a].distinct == op.operands[b].distinct
]
#: (opcode, the written operand declaring a distinct-from-the-reads rule, a column operand it reads)
APART = [
    (op, a, b)
    for op in OPCODES.values()
    for a, oa in enumerate(op.operands)
    if oa.distinct is not None and oa.distinct.of_reads
    for b, ob in enumerate(op.operands)
    if ob.kind is Kind.COL and ob.reads
]


@pytest.mark.parametrize(
    ("op", "a", "b"),
    DISTINCT,
    ids=[f"{op.mnemonic}-{op.operands[a].name}-{op.operands[b].name}" for op, a, b in DISTINCT],
)
def test_operands_declared_distinct_must_name_different_columns(op: Opcode, a: int, b: int) -> None:
    ins = _instr(op, {b: f"c{_column(a)}"})
    text, line = _program(op, ins)
    e = _error(text)
    oa, ob = op.operands[a], op.operands[b]
    assert oa.distinct is not None
    assert e.message == (
        f"{op.mnemonic}: the {oa.distinct.what} operands {oa.name} and {ob.name} both name column "
        f"c{_column(a)}; {oa.distinct.why}"
    )
    assert e.loc is not None and (e.loc.line, e.loc.col) == (line, ins.cols[b])


@pytest.mark.parametrize(
    ("op", "a", "b"), APART, ids=[f"{op.mnemonic}-{op.operands[a].name}-{op.operands[b].name}" for op, a, b in APART]
)
def test_a_written_operand_declared_apart_names_no_column_read(op: Opcode, a: int, b: int) -> None:
    """A gate's output on one of its inputs: rejected at the output operand."""
    ins = _instr(op, {a: f"c{_column(b)}"})
    text, line = _program(op, ins)
    e = _error(text)
    oa, ob = op.operands[a], op.operands[b]
    assert oa.distinct is not None
    assert e.message == (
        f"{op.mnemonic}: the {oa.distinct.what} operand {oa.name} and the input operand {ob.name} both name "
        f"column c{_column(b)}; {oa.distinct.why}"
    )
    assert e.loc is not None and (e.loc.line, e.loc.col) == (line, ins.cols[a])


def test_the_protected_tree_ops_declare_their_copies_distinct() -> None:
    for mn, copies in (("tvadd", 3), ("tvsub", 3), ("tdadd", 2), ("tdsub", 2)):
        assert sum(o.distinct == COPIES for o in OPCODES[mn].operands) == copies, mn
    assert DISTINCT, "no opcode declares distinct operands"


def test_every_gate_declares_one_mtj_per_terminal() -> None:
    """dst apart from every input; two or more inputs pairwise distinct (docs/isa.md states it)."""
    gates = [op for op in OPCODES.values() if op.unit is Unit.GATE]
    assert gates
    for op in gates:
        dst, *ins = op.operands
        assert dst.writes and dst.distinct == OUTPUT_CELL, op.mnemonic
        assert all(o.reads and o.distinct == (INPUT_CELLS if len(ins) > 1 else None) for o in ins), op.mnemonic
    assert {(op.mnemonic, op.operands[b].name) for op, a, b in APART} == {
        (op.mnemonic, o.name) for op in gates for o in op.operands[1:]
    }


BOUNDED = [
    (op, pos, v)
    for op in ARRAY_OPS
    for pos, o in enumerate(op.operands)
    if o.bounds is not None
    for v in (o.bounds.lo - 1, *(() if o.bounds.hi is None else (o.bounds.hi + 1,)))
]


@pytest.mark.parametrize(
    ("op", "pos", "v"), BOUNDED, ids=[f"{op.mnemonic}-{op.operands[p].name}={v}" for op, p, v in BOUNDED]
)
def test_an_integer_operand_out_of_its_bounds_is_rejected_at_it(op: Opcode, pos: int, v: int) -> None:
    o = op.operands[pos]
    assert o.bounds is not None
    ins = _instr(op, {pos: str(v)})
    text, line = _program(op, ins)
    e = _error(text)
    assert e.message == o.bounds.error(o.name)
    assert e.loc is not None and (e.loc.line, e.loc.col) == (line, ins.cols[pos])


BOUNDED_ATTRS = [
    (op, a, v)
    for op in ARRAY_OPS
    for a in op.attrs
    if a.bounds is not None
    for v in (a.bounds.lo - 1, *(() if a.bounds.hi is None else (a.bounds.hi + 1,)))
]


@pytest.mark.parametrize(
    ("op", "a", "v"), BOUNDED_ATTRS, ids=[f"{op.mnemonic}-{a.name}={v}" for op, a, v in BOUNDED_ATTRS]
)
def test_an_attribute_out_of_its_bounds_is_rejected(op: Opcode, a: Attr, v: int) -> None:
    assert a.bounds is not None
    ins = _instr(op, attrs={a.name: str(v)})
    text, line = _program(op, ins)
    e = _error(text)
    assert e.message == a.bounds.error(a.name)
    assert e.loc is not None and (e.loc.line, e.loc.col) == (line, 3)


def test_declared_messages() -> None:
    """The messages the bounds give (fill's and the golden ones stay as they were)."""
    assert OPCODES["fill"].operands[1].bounds.error("value") == "fill writes 0 or 1"  # type: ignore[union-attr]
    assert OPCODES["tadd"].operands[2].bounds.error("shift") == "shift must be between 0 and 62"  # type: ignore[union-attr]
    assert OPCODES["wr"].attr_map["bits"].bounds.error("bits") == "bits must be between 1 and 64"  # type: ignore[union-attr]
    assert OPCODES["rd"].attr_map["bits"].bounds.error("bits") == "bits must be between 1 and 63"  # type: ignore[union-attr]
    assert OPCODES["rd"].attr_map["fields"].bounds.error("fields") == "fields must be at least 0"  # type: ignore[union-attr]
