"""One counting rule per unit (cramc.isa.counting), and it is the rule everything counts by.

For every array opcode of the table (gates and tree ops generated from the table, so a new one is
covered without editing this file) and a few CMOS ops, one small program runs instruction by
instruction on the interpreter, and for each instruction

- what the interpreter counted equals what the rule says for the instruction (``RULES`` evaluated on
  its factors) equals what the static cost model counts for it;
- the counts are checked against the effects: a gate or write counted is a cell written (run once
  with the written columns cleared, once with them set: the cells that changed), a bit read is a
  bit of the tensor `rd` stored, an adder-tree row counted is a one the accumulator received, a
  recompute is a row whose copies differ, an accumulator slot counted is a slot cleared or stored,
  a CMOS element counted is an element produced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
from cramtest import link

from cramc.cost.static import count_program
from cramc.isa import counting
from cramc.isa.counting import RULES, Counts, Factor
from cramc.isa.linked import BoundOp, Linked, Loop, Node
from cramc.isa.opcodes import OPCODES, Kind, Unit
from cramc.sim.faults import FaultModel
from cramc.sim.interp import execute, run
from cramc.sim.machine import Machine

LANES = 2
ROWS = 100
GATE_ROWS = (5, 70)
ONES = (10, 90)  # rows where c0 (and the copies) hold ones
DIFF = (60, 90)  # rows where the second copy of the duplicate-and-compare ops is 0 while c0 is 1


def _program() -> str:
    gates = []
    for i, op in enumerate(o for o in OPCODES.values() if o.unit is Unit.GATE):
        n_in = len(op.operands) - 1
        ins = ", ".join(f"c{k}" for k in range(n_in))
        gates.append(f"  {op.mnemonic} @0:3 c{20 + i}, {ins} rows={GATE_ROWS[0]}:{GATE_ROWS[1]}")
    trees, slot = [], 0
    for op in OPCODES.values():
        if op.tree is None:
            continue
        copies = ["c0", *(f"c{10 + k}" for k in range(1, op.tree.copies))]
        if op.tree.recompute:
            copies[1] = "c15"  # differs from c0 on DIFF
        rec = [f"c{16 + k}" for k in range(len(op.tree.recompute))]
        trees.append(f"  {op.mnemonic} @0:3 acc{slot}, {', '.join(copies + rec)}, {slot % 3}")
        slot += 1
    return "\n".join(
        [
            f".machine arrays=4 rows={ROWS} cols=40 accs={slot}",
            f".input x : i64[3,{ROWS}]",
            ".input z : i64[1,37,2]",
            ".output y : i64[3,4]",
            ".main {",
            f"  fill @0:3 c0, 1 rows={ONES[0]}:{ONES[1]}",
            "  wr @0:3 c1, %x bits=3",
            "  fill @0:3 c4, 0",
            "  wr @0:2 c5, %z bits=2 repeat=2 rows=3:40",
            *gates,
            *(f"  fill @0:3 c{c}, 1 rows={ONES[0]}:{ONES[1]}" for c in (11, 12, 16, 17)),
            f"  fill @0:3 c15, 1 rows={ONES[0]}:{DIFF[0]}",
            f"  aclr @0:3 acc0:{slot}",
            *trees,
            "  rd @0:3 %r, c1 bits=3 rows=7:50",
            "  rd @0:2 %q, c5 bits=2 fields=2 rows=3:40",
            f"  ard @0:3 %a, acc0:{slot}",
            "  add %s, %a, %a",
            "  relu %t, %s",
            "  slice %y, %t axis=1 start=0 end=4",
            "}",
        ]
    )


def _walk(m: Machine, nodes: tuple[Node, ...]) -> Iterator[BoundOp]:
    for n in nodes:
        if isinstance(n, Loop):
            for i in range(n.count):
                m.loopvars[n.var] = i
                yield from _walk(m, n.body)
            del m.loopvars[n.var]
        else:
            yield n


def _written_columns(m: Machine, b: BoundOp) -> list[int]:
    """The columns b writes, from the operand declarations of the table (not from the counting rule)."""
    out = []
    for spec, v in zip(b.op.operands, b.operands, strict=False):
        if spec.kind is Kind.COL and spec.writes:
            width = 1
            if spec.span is not None:
                names = [o.name for o in b.op.operands]
                src = m.load(b.operands[names.index(spec.span.fields_of)])
                width = int(b.attrs[spec.span.bits]) * (src.shape[3] if src.ndim == 4 else 1)
            out += range(v, v + width)
    return out


def _snapshot(c: Counts) -> Counts:
    return dataclasses.replace(c, per_opcode={k: dict(v) for k, v in c.per_opcode.items()}, faults=dict(c.faults))


def _diff(after: Counts, before: Counts, mn: str) -> dict[str, int]:
    """What one execution of an instruction of `mn` added to each counter."""
    d = {k: getattr(after, k) - getattr(before, k) for k in counting.COUNTERS if k != "row_ops"}
    d["row_ops"] = after.per_opcode.get(mn, {}).get("row_ops", 0) - before.per_opcode.get(mn, {}).get("row_ops", 0)
    return d


def _rows(m: Machine, words: np.ndarray) -> np.ndarray:
    """Packed words [..., W] -> the bits of the chip's rows [..., rows] (the padding of the last word is no cell)."""
    return np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., : m.spec.rows]


def _effects(m: Machine, b: BoundOp) -> dict[str, int]:
    """What b did, measured on the machine state (numpy backend), per counter it should have counted."""
    op, unit = b.op, b.op.unit
    snap = (m.cells.copy(), m.acc.copy())
    got: dict[str, int] = {}
    cols = _written_columns(m, b)
    if cols:  # cells written: the ones appearing in cleared columns plus the zeros appearing in set ones
        written = 0
        for fill, want in ((np.uint64(0), 1), (~np.uint64(0), 0)):
            m.cells[...] = snap[0]
            m.cells[cols] = fill
            execute(m, (b,))
            bits = _rows(m, m.cells[cols])
            written += int((bits == want).sum())
        got["gate_evals" if unit is Unit.GATE else "writes"] = written
        got["row_ops"] = written
    m.cells[...], m.acc[...] = snap
    if unit is Unit.TREE:  # rows counted: with every copy holding ones, what the accumulator received
        lo, hi = b.arrays  # type: ignore[misc]
        copies = [v for o, v in zip(op.operands, b.operands, strict=False) if o.kind is Kind.COL][: op.tree.copies]  # type: ignore[union-attr]
        for c in copies:
            m.cells[c] = ~np.uint64(0)
        slot, shift = b.operands[0], b.operands[-1]
        before = m.acc[lo:hi, slot].copy()
        execute(m, (b,))
        counted = np.abs(m.acc[lo:hi, slot] - before) >> shift
        got["row_ops"] = int(counted.sum())
        got["reduces"] = int((counted > 0).sum())
        got["tree_sensed"] = op.tree.copies * int(counted.sum())  # type: ignore[union-attr]
        m.cells[...], m.acc[...] = snap
        if op.tree.recompute:  # type: ignore[union-attr]
            a, c = _rows(m, m.cells[copies[0], lo:hi]), _rows(m, m.cells[copies[1], lo:hi])
            got["recomputes"] = int((a != c).sum())
            got["tree_sensed"] += len(op.tree.recompute) * got["recomputes"]  # type: ignore[union-attr]
    if op.mnemonic == "aclr":
        m.acc[...] = 1
        execute(m, (b,))
        got["row_ops"] = int((m.acc == 0).sum())
        m.cells[...], m.acc[...] = snap
    return got


def test_every_unit_has_one_rule_and_every_counter_a_report_key() -> None:
    assert set(RULES) == set(Unit)
    for unit, rule in RULES.items():
        counters = [e.counter for e in rule.events]
        assert unit is Unit.CONTROL or counters[0] == "row_ops", unit
        assert set(counters) <= set(counting.COUNTERS)


def test_tree_specs_follow_the_operands() -> None:
    """Every adder-tree op declares its spec, and its column operands are the copies then the recompute operands."""
    for op in OPCODES.values():
        assert (op.tree is not None) == (op.unit is Unit.TREE), op.mnemonic
        if op.tree is not None:
            cols = [o.name for o in op.operands if o.kind is Kind.COL]
            assert len(cols) == op.tree.copies + len(op.tree.recompute), op.mnemonic
            assert tuple(cols[op.tree.copies :]) == op.tree.recompute, op.mnemonic
            assert op.mnemonic.endswith("add") == (op.tree.sign == 1), op.mnemonic


def _linked() -> tuple[Linked, dict[str, np.ndarray]]:
    linked = link(_program())
    rng = np.random.default_rng(3)
    inputs = {"x": rng.integers(0, 8, (LANES, 3, ROWS)), "z": rng.integers(-2, 2, (LANES, 1, 37, 2))}
    return linked, inputs


def test_the_interpreter_the_static_model_and_the_rule_count_alike() -> None:
    linked, inputs = _linked()
    covered = {b.op.mnemonic for b in linked.main if isinstance(b, BoundOp)}
    assert {mn for mn, op in OPCODES.items() if op.unit not in (Unit.CMOS, Unit.CONTROL)} <= covered
    m = Machine(linked, LANES, FaultModel(), np.random.default_rng(0))
    for spec in linked.inputs:
        m.tensors[spec.name] = inputs[spec.name]
    checked = 0
    for b in _walk(m, linked.main):
        effects = _effects(m, b)
        before = _snapshot(m.counts)
        execute(m, (b,))
        measured = _diff(m.counts, before, b.op.mnemonic)
        # the rule, on the instruction's factors (the shapes a wr or a CMOS op needs, from what it executed)
        fields = None
        if b.op.mnemonic == "wr":
            src = m.load(b.operands[1])
            fields = src.shape[3] if src.ndim == 4 else 1
        factors = counting.instruction_factors(b, linked.machine.rows, fields)
        dst = b.operands[0]
        if b.op.unit is Unit.CMOS:
            factors[Factor.ELEMENTS] = m.tensors[dst.name].size // LANES
        rule = counting.rule(b.op).static(factors)
        if b.op.tree is not None and b.op.tree.recompute:
            rule["recomputes"] = effects["recomputes"] // LANES
            rule["tree_sensed"] += len(b.op.tree.recompute) * effects["recomputes"] // LANES
        for counter, v in measured.items():
            assert v == LANES * rule.get(counter, 0), (b.text, counter, v, rule)
        for counter, v in effects.items():
            assert measured[counter] == v, (b.text, counter, measured[counter], v)
        # what an rd stored, an ard or a CMOS op produced: one read per bit, one row operation per element
        if b.op.unit in (Unit.READ, Unit.ACC, Unit.CMOS) and b.op.mnemonic != "aclr":
            per_element = int(b.attrs["bits"]) if b.op.unit is Unit.READ else 1
            assert measured["row_ops"] == per_element * m.tensors[dst.name].size, b.text
        checked += 1
    assert checked == len(linked.main)


@pytest.mark.parametrize("fused", [True, False])
def test_a_whole_run_counts_what_the_static_model_counts(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tallied (once per node list) and runner-counted opcodes together give the static model's counts, and
    the totals are what the program does: every gate on its rows, one reduce per array per tree op, the
    DIFF rows recomputed by each duplicate-and-compare op."""
    linked, inputs = _linked()
    monkeypatch.setattr(Machine, "fuse_mac", fused)
    res = run(linked, dict(inputs), FaultModel(), seed=1)
    static = count_program(linked).main_total.as_dict()
    assert {mn: {k: v * LANES for k, v in d.items()} for mn, d in static.items()} == res.counts.per_opcode
    gates = sum(1 for op in OPCODES.values() if op.unit is Unit.GATE)
    assert res.counts.gate_evals == LANES * gates * 3 * (GATE_ROWS[1] - GATE_ROWS[0])
    trees = [op.tree for op in OPCODES.values() if op.tree is not None]
    assert res.counts.reduces == LANES * 3 * len(trees)
    assert res.counts.recomputes == LANES * 3 * (DIFF[1] - DIFF[0]) * sum(1 for t in trees if t.recompute)


def test_the_isa_reference_renders_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/isa.md says what each opcode counts from the rule itself: change the rule, the text follows."""
    from cramc.isa.docgen import render_isa_reference

    text = render_isa_reference()
    assert (
        "`opcodes.tvadd.row_ops` += arrays x active rows; `reduces` += arrays; `tree_sensed_bits` += arrays x "
        "active rows x 3 |" in text
    )
    assert "`opcodes.wr.row_ops` += arrays x active rows x `bits` x the fields of `src`" in text
    changed = dict(RULES)
    changed[Unit.GATE] = counting.Rule((*RULES[Unit.GATE].events, counting.Event("writes", (Factor.ARRAYS,))))
    monkeypatch.setattr(counting, "RULES", changed)
    assert (
        "`opcodes.and.row_ops` += arrays x active rows; `gate_evals` += arrays x active rows; `writes` += arrays"
        in (render_isa_reference())
    )
