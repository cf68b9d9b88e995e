"""What an instruction counts: one rule per unit of the opcode table, and the record runs fill.

`RULES` says, for each unit, what one execution of an instruction adds to
each counter (``row_ops`` of its opcode, ``gate_evals``, ``writes``,
``reads``, ``tree_sensed``, ``reduces``, ``recomputes``), as a product of
`Factor`s of the instruction: its arrays, active rows, columns, slots, the
copies an adder tree senses, the elements a CMOS operation produces.  The rule
is written once and read by everything that counts or describes counts:

- the interpreter (cramc.sim.interp ``Tally`` adds the counts of every
  instruction whose factors the instruction itself fixes, once per node list;
  the runners of the others, and the measured part of duplicate-and-compare,
  evaluate the same rule with what they executed);
- the static cost model (cramc.cost.static: ``row_ops`` from the program alone);
- the ISA reference (cramc.isa.docgen writes each opcode's counts from it).

Factors a run measures (`Factor.RECOMPUTED`, the rows whose duplicated copies
disagreed) are only known to the interpreter; faults are counted by the fault
streams, not here.  `Counts` is the record the interpreter fills (summed over
sample lanes) and that REPORT.json, the sweep and the dynamic cost estimate
read.  It lives in the ISA layer, upstream of both the simulator (which
counts) and the cost model (which prices what is counted), so that neither
imports the other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from cramc.isa.linked import BoundOp
from cramc.isa.opcodes import Kind, Opcode, Span, Unit


class Factor(Enum):
    """A quantity the counts of an instruction multiply (the value is how the ISA reference names it)."""

    ARRAYS = "arrays"  # arrays of the set
    ROWS = "active rows"
    COLUMNS = "columns"  # of the column operand's span: bits x fields (1 without a span)
    SLOTS = "slots"  # accumulator slots named (the largest ACC or ACCS operand)
    COPIES = "copies sensed"  # an adder tree's `Tree.copies`
    RECOMPUTE_SENSED = "operands sensed per recompute"  # len(`Tree.recompute`)
    ELEMENTS = "elements produced"  # of a CMOS result, per sample
    RECOMPUTED = "rows recomputed"  # measured by the run: rows whose duplicated copies disagreed


# Factors key the dicts of every instruction's factors (and the interpreter's tally keys): hashed by
# identity, as enum members compare, instead of Enum.__hash__'s Python-level hash of the name (the same
# lookups; no order depends on the hash: dicts keep insertion order and the one set is sorted).
Factor.__hash__ = object.__hash__  # type: ignore[method-assign]


#: Factors only a run knows.
MEASURED = frozenset((Factor.RECOMPUTED,))

#: The counters of `Counts` a rule adds to, and the REPORT.json key of each (``row_ops`` is per opcode).
COUNTERS: dict[str, str] = {
    "row_ops": "opcodes.<mnemonic>.row_ops",
    "gate_evals": "gate_evals",
    "writes": "writes",
    "reads": "reads",
    "tree_sensed": "tree_sensed_bits",
    "reduces": "reduces",
    "recomputes": "recomputes",
}


@dataclass(frozen=True)
class Event:
    """One counter of a rule: each execution adds the product of `factors` to `counter`."""

    counter: str
    factors: tuple[Factor, ...]

    def __post_init__(self) -> None:
        if self.counter not in COUNTERS:
            raise AssertionError(f"unknown counter {self.counter}")

    @property
    def measured(self) -> bool:
        return any(f in MEASURED for f in self.factors)

    def value(self, factors: Mapping[Factor, int]) -> int:
        return math.prod(factors[f] for f in self.factors)


@dataclass(frozen=True)
class Rule:
    """What one execution of an instruction of a unit counts, per sample (`events`, ``row_ops`` first)."""

    events: tuple[Event, ...]

    def static(self, factors: Mapping[Factor, int]) -> dict[str, int]:
        """counter -> what one execution adds, for the events no run needs to measure."""
        out: dict[str, int] = {}
        for e in self.events:
            if not e.measured:
                out[e.counter] = out.get(e.counter, 0) + e.value(factors)
        return out

    def row_ops(self, factors: Mapping[Factor, int]) -> int:
        return self.static(factors).get("row_ops", 0)

    def per_measured(self, factors: Mapping[Factor, int], measured: Factor) -> list[tuple[str, int]]:
        """(counter, coefficient) of each event that multiplies `measured`: the run adds coefficient x what it
        measured (the other factors taken from `factors`); events whose coefficient is 0 are left out."""
        out = []
        for e in self.events:
            if measured in e.factors:
                k = math.prod(factors[f] for f in e.factors if f is not measured)
                if k:
                    out.append((e.counter, k))
        return out


def _rule(*events: tuple[str, tuple[Factor, ...]]) -> Rule:
    return Rule(tuple(Event(c, f) for c, f in events))


_A, _R = Factor.ARRAYS, Factor.ROWS

#: The one counting rule of each unit.
RULES: dict[Unit, Rule] = {
    Unit.GATE: _rule(("row_ops", (_A, _R)), ("gate_evals", (_A, _R))),
    Unit.WRITE: _rule(("row_ops", (_A, _R, Factor.COLUMNS)), ("writes", (_A, _R, Factor.COLUMNS))),
    Unit.READ: _rule(("row_ops", (_A, _R, Factor.COLUMNS)), ("reads", (_A, _R, Factor.COLUMNS))),
    Unit.TREE: _rule(
        ("row_ops", (_A, _R)),
        ("reduces", (_A,)),
        ("tree_sensed", (_A, _R, Factor.COPIES)),
        ("tree_sensed", (Factor.RECOMPUTED, Factor.RECOMPUTE_SENSED)),
        ("recomputes", (Factor.RECOMPUTED,)),
    ),
    Unit.ACC: _rule(("row_ops", (_A, Factor.SLOTS))),
    Unit.CMOS: _rule(("row_ops", (Factor.ELEMENTS,))),
    Unit.CONTROL: _rule(),  # calls are inlined by the linker: their bodies count
}


if set(RULES) != set(Unit):
    raise AssertionError(f"no counting rule for {', '.join(u.name for u in Unit if u not in RULES)}")


def rule(op: Opcode) -> Rule:
    """The counting rule of op's unit."""
    return RULES[op.unit]


def needs_shapes(op: Opcode) -> tuple[Factor, ...]:
    """The static factors of `op`'s rule that the instruction alone does not fix (they need tensor shapes):
    the elements of a CMOS result, the columns of a span whose fields come from a tensor."""
    out = []
    for f in {f for e in rule(op).events if not e.measured for f in e.factors}:
        if f is Factor.ELEMENTS or (f is Factor.COLUMNS and any(o.span and o.span.fields_of for o in op.operands)):
            out.append(f)
    return tuple(sorted(out, key=lambda f: f.name))


def instruction_factors(b: BoundOp, rows: int, tensor_fields: int | None = None) -> dict[Factor, int]:
    """The factors instruction b fixes by itself (`rows`: the chip's, the default row range).

    COLUMNS needs `tensor_fields` (the fields of the span's tensor operand: its third axis, or 1) when the
    span takes its fields from a tensor; without it COLUMNS is left out, as is ELEMENTS (the caller knows
    the shapes) and every measured factor.
    """
    op = b.op
    got = _FACTS.get(id(op))
    if got is None or got[0] is not op:
        got = _FACTS[id(op)] = (op, _opcode_facts(op))
    acc_at, accs_at, spans, copies, recompute = got[1]
    f: dict[Factor, int] = {}
    arrays = b.arrays
    if arrays is not None:
        f[Factor.ARRAYS] = arrays[1] - arrays[0]
    r = b.rows
    f[Factor.ROWS] = r[1] - r[0] if r is not None else rows
    ops = b.operands
    n = len(ops)
    slots = 0
    for i in accs_at:
        if i < n:
            slots = max(slots, ops[i][1] - ops[i][0])
    for i in acc_at:
        if i < n:
            slots = max(slots, 1)
    columns: int | None = 1
    for i, span in spans:  # in operand order: the last span counts
        if i < n:
            if span.fields_of:
                fields = tensor_fields
            else:
                fields = max(int(b.attrs.get(span.fields, 0)), 1) if span.fields else 1
            columns = None if fields is None else int(b.attrs[span.bits]) * fields
    f[Factor.SLOTS] = slots
    if columns is not None:
        f[Factor.COLUMNS] = columns
    f[Factor.COPIES] = copies
    f[Factor.RECOMPUTE_SENSED] = recompute
    return f


_OpFacts = tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, Span], ...], int, int]
_FACTS: dict[int, tuple[Opcode, _OpFacts]] = {}  # id(opcode) -> (the opcode, what instruction_factors reads of it)


def _opcode_facts(op: Opcode) -> _OpFacts:
    """The positions of op's ACC and ACCS operands and of its spans, and its tree's copies and recompute."""
    acc_at = tuple(i for i, o in enumerate(op.operands) if o.kind is Kind.ACC)
    accs_at = tuple(i for i, o in enumerate(op.operands) if o.kind is Kind.ACCS)
    spans = tuple((i, o.span) for i, o in enumerate(op.operands) if o.span is not None)
    t = op.tree
    return acc_at, accs_at, spans, t.copies if t is not None else 0, len(t.recompute) if t is not None else 0


@dataclass
class Counts:
    """Row-level event counts, summed over sample lanes."""

    per_opcode: dict[str, dict[str, int]] = field(default_factory=dict)
    gate_evals: int = 0
    writes: int = 0  # host-data bits written (wr, fill)
    reads: int = 0  # bits sensed by rd
    tree_sensed: int = 0  # bits sensed by the adder trees
    reduces: int = 0  # adder-tree operations (one per array per tadd/tsub)
    recomputes: int = 0  # rows whose duplicated partial products disagreed and were recomputed in CMOS (td*)
    faults: dict[str, int] = field(default_factory=lambda: {"gate": 0, "write": 0, "read": 0, "tree": 0})

    def op(self, mnemonic: str, instrs: int, rows: int) -> None:
        d = self.per_opcode.get(mnemonic)
        if d is None:
            d = self.per_opcode[mnemonic] = {"instructions": 0, "row_ops": 0}
        d["instructions"] += instrs
        d["row_ops"] += rows

    def add(self, op: Opcode, factors: Mapping[Factor, int], lanes: int) -> None:
        """Count one execution of an instruction of `op` on `lanes` sample lanes, by its unit's rule."""
        for counter, v in rule(op).static(factors).items():
            if counter == "row_ops":
                self.op(op.mnemonic, lanes, lanes * v)
            else:
                setattr(self, counter, getattr(self, counter) + lanes * v)

    def merge(self, other: Counts) -> None:
        for k, d in other.per_opcode.items():
            mine = self.per_opcode.setdefault(k, {"instructions": 0, "row_ops": 0})
            for kk, v in d.items():
                mine[kk] += v
        self.gate_evals += other.gate_evals
        self.writes += other.writes
        self.reads += other.reads
        self.tree_sensed += other.tree_sensed
        self.reduces += other.reduces
        self.recomputes += other.recomputes
        for k, v in other.faults.items():  # a run with static defects adds the kind "defect" (cramc.sim.chip)
            self.faults[k] = self.faults.get(k, 0) + v

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())
