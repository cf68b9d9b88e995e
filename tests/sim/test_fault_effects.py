"""Every counted fault is a bit that is wrong: counts against effects, instruction by instruction.

For every instruction that can fault (each gate of the opcode table, alone and
in a multiply-accumulate run that fuses, `fill`, `wr` from a tensor and from a
data constant, per array, with `repeat=` and broadcast to every array, `rd`,
and every adder-tree instruction, with read faults and with tree faults), on
one array and on a range of four, on all rows and on a row range with partial
edge words, with one lane and with three, on every backend, fused, unfused and
on the plain reference path, a program is run twice on the same inputs: once
fault-free, once at a high fault rate with one fault kind switched on.  The
faults the machine counts must equal the bits that differ:

- gates, `fill`, `wr`: the cell state (only the written columns, arrays and
  active rows may differ);
- a gate in a MAC run: its accumulator slot.  Inside a run every gate writes
  the same scratch column, so a fault of an earlier gate is overwritten in the
  cells and lives on only in what the adder tree counted.  The inputs are
  constant along the rows of each array and lane, so every flip of one gate
  moves that popcount the same way and |change of the slot| / 2^shift is the
  number of flips exactly (no 0->1 and 1->0 pair can cancel); the scratch
  column keeps the last gate's flips, and they must be those of its slot;
- `rd`: the bits of the tensor it produced (the cells must not change);
- `tadd`/`tsub` with read faults: the accumulators (inputs constant along the
  rows, as for MAC runs), and the sensed copies of the column;
- the protected tree instructions (`tv*`, `td*`) with read faults: the sensed
  copies.  Their voter and their compare-and-recompute exist to mask a sensed
  fault, so the accumulators cannot show every one; the test records what the
  tree sensed and checks both that the flips in it are the counted faults and
  that the accumulators hold exactly the vote (or recompute) of what was sensed;
- every tree instruction with tree faults: the bits of the count, recovered
  from the accumulator (one instruction per slot, count = +-acc >> shift).

The cases are built from the opcode table, and a test fails when an opcode of
a unit that can fault has no case.  Seeds are fixed; the rates are high (0.2
symmetric, or 0.3 / 0.08 asymmetric, and for the gates an input-dependent rate
per number of inputs at 1, by_ones) so that every run injects many faults.
tests/sim/test_by_ones_sampling.py checks where and how often the by_ones faults land.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cramtest import link

from cramc.isa.opcodes import OPCODES, Kind, Unit
from cramc.isa.verifier import Linked
from cramc.sim.faults import FaultModel, Rate
from cramc.sim.fuse import FusedMac, fuse
from cramc.sim.interp import execute, run
from cramc.sim.machine import Machine
from cramc.sim.ops import tree as tree_ops

ROWS = 150  # three words, the last one partial
MACHINE_ARRAYS = 6
ARRAY_SETS = {"one array": (2, 3), "four arrays": (1, 5)}
ROW_RANGES: dict[str, tuple[int, int] | None] = {"all rows": None, "rows 5:130": (5, 130)}
LANES = (1, 3)
EXECUTIONS = ("fused", "unfused", "reference")
RATES = {"symmetric": Rate(0.2, 0.2), "asymmetric": Rate(0.3, 0.08)}
PAIRS = 6  # gate + tree pairs of a MAC run (fuse.MIN_PAIRS is 4)
TREE_OPS = 4  # tree instructions per program, one accumulator slot each

#: The fault kinds each unit can inject; a unit not listed never faults.
UNIT_FAULTS = {Unit.GATE: ("gate",), Unit.WRITE: ("write",), Unit.READ: ("read",), Unit.TREE: ("read", "tree")}


def popcount(a: np.ndarray) -> int:
    """Set bits of an unsigned or non-negative integer array."""
    assert a.dtype.kind == "u" or not (a < 0).any()
    return int(np.bitwise_count(a).sum())


def active_words(g: Geometry) -> np.ndarray:
    """uint64 [nw]: the active rows of g within the words that hold them."""
    w0, w1 = g.r0 >> 6, (g.r1 + 63) >> 6
    active = np.zeros(64 * (w1 - w0), dtype=bool)
    active[g.r0 - 64 * w0 : g.r1 - 64 * w0] = True
    return np.packbits(active, bitorder="little").view(np.uint64)


def row_bits(words: np.ndarray) -> np.ndarray:
    """uint64 [..., W] -> uint8 [..., 64 W], row r at index r."""
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")


@dataclass(frozen=True)
class Geometry:
    lo: int
    hi: int
    rows: tuple[int, int] | None
    lanes: int

    @property
    def n(self) -> int:
        return self.hi - self.lo

    @property
    def at(self) -> str:
        return f"@{self.lo}:{self.hi}"

    @property
    def r0(self) -> int:
        return 0 if self.rows is None else self.rows[0]

    @property
    def r1(self) -> int:
        return ROWS if self.rows is None else self.rows[1]

    @property
    def nrows(self) -> int:
        return self.r1 - self.r0

    @property
    def attr(self) -> str:
        return "" if self.rows is None else f" rows={self.r0}:{self.r1}"


@dataclass
class Runs:
    """The fault-free and the faulty machine after the same program and inputs, and what the tree sensed."""

    ok: Machine
    bad: Machine
    g: Geometry
    sensed: list[np.ndarray]  # words the trees of the faulty run sensed with read faults, in order
    sense_flips: int  # bits in which those differ from the cells


@dataclass(frozen=True)
class Case:
    """One faulting instruction in a small program whose effect stays observable."""

    name: str
    mnemonic: str
    kind: str  # the fault kind switched on: gate, write, read or tree
    program: Callable[[Geometry], str]
    inputs: Callable[[Geometry, np.random.Generator], dict[str, np.ndarray]]
    effect: Callable[[Runs], int]  # the number of bits that differ; asserts where they may be
    fuses: bool = False  # a MAC run that fuses when fusion is on


def machine(cols: int, accs: int = 1) -> str:
    return f".machine arrays={MACHINE_ARRAYS} rows={ROWS} cols={cols} accs={accs}"


def cell_diff(r: Runs) -> np.ndarray:
    """Bits [col, array, lane, row] in which the two machines' cells differ."""
    return row_bits(r.ok.be.get_words(r.ok.cells) ^ r.bad.be.get_words(r.bad.cells))


def cells_effect(cols: range) -> Callable[[Runs], int]:
    """The flipped cells, which must lie in `cols`, the instruction's arrays and its active rows."""

    def effect(r: Runs) -> int:
        d = cell_diff(r)
        g = r.g
        inside = d[cols.start : cols.stop, g.lo : g.hi, :, g.r0 : g.r1]
        assert int(d.sum()) == int(inside.sum()), "cells changed outside the instruction"
        return int(inside.sum())

    return effect


def slot_flips(ok: np.ndarray, bad: np.ndarray, shift: int) -> np.ndarray:
    """|change| / 2^shift of accumulator values [..] whose every flip moved them the same way (exact)."""
    delta = bad.astype(np.int64) - ok.astype(np.int64)
    assert not (delta % (1 << shift)).any(), "an accumulator moved by less than its shift"
    return np.abs(delta) >> shift


def shifts(k: int) -> list[int]:
    return [i % 3 for i in range(k)]


def row_constant_bits(g: Geometry, rng: np.random.Generator, fields: int) -> np.ndarray:
    """Random 0/1 inputs [lanes, arrays, ROWS, fields], constant along the rows of each array and lane."""
    x = rng.integers(0, 2, (g.lanes, g.n, 1, fields), dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(x, (g.lanes, g.n, ROWS, fields)))


# ---------------------------------------------------------------------------- gates
def gate_alone(mn: str) -> Case:
    k = len(OPCODES[mn].operands) - 1

    def program(g: Geometry) -> str:
        ins = ", ".join(f"c{i}" for i in range(k))
        return "\n".join(
            [
                machine(k + 1),
                f".input x : u8[{g.n},{ROWS},{k}]",
                ".main {",
                f"  wr {g.at} c0, %x bits=1",
                f"  {mn} {g.at} c{k}, {ins}{g.attr}",
                "}",
                "",
            ]
        )

    def inputs(g: Geometry, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": rng.integers(0, 2, (g.lanes, g.n, ROWS, k), dtype=np.uint8)}

    return Case(f"{mn} alone", mn, "gate", program, inputs, cells_effect(range(k, k + 1)))


def gate_in_mac_run(mn: str) -> Case:
    """PAIRS x (gate into scratch column t, tadd/tsub of t into its own slot): fuses for 2-input gates."""
    k = len(OPCODES[mn].operands) - 1
    ncols = PAIRS + k - 1
    t = ncols

    def program(g: Geometry) -> str:
        body = []
        for i, s in enumerate(shifts(PAIRS)):
            ins = ", ".join(f"c{i + j}" for j in range(k))
            body.append(f"  {mn} {g.at} c{t}, {ins}{g.attr}")
            body.append(f"  {'tsub' if i % 2 else 'tadd'} {g.at} acc{i}, c{t}, {s}{g.attr}")
        return "\n".join(
            [
                machine(ncols + 1, PAIRS),
                f".input x : u8[{g.n},{ROWS},{ncols}]",
                f".output y : i64[{g.n},{PAIRS}]",
                ".main {",
                f"  wr {g.at} c0, %x bits=1",
                f"  aclr {g.at} acc0:{PAIRS}",
                *body,
                f"  ard {g.at} %y, acc0:{PAIRS}",
                "}",
                "",
            ]
        )

    def inputs(g: Geometry, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": row_constant_bits(g, rng, ncols)}

    def effect(r: Runs) -> int:
        g = r.g
        flips = np.stack(
            [slot_flips(r.ok.tensors["y"][..., i], r.bad.tensors["y"][..., i], s) for i, s in enumerate(shifts(PAIRS))]
        )  # [pair, lane, array]
        # the scratch column holds the last gate's output, its flips and no other
        d = cell_diff(r)
        assert not d[:t].any(), "a gate input changed"
        last = d[t, g.lo : g.hi, :, g.r0 : g.r1].sum(axis=-1)  # [array, lane]
        np.testing.assert_array_equal(last.T, flips[-1], err_msg="the scratch column's flips are not the last slot's")
        assert int(d[t].sum()) == int(last.sum()), "the scratch column changed outside the active rows or arrays"
        return int(flips.sum())

    return Case(f"{mn} in a MAC run", mn, "gate", program, inputs, effect, fuses=k == 2)


# ---------------------------------------------------------------------------- writes
def fill_case() -> Case:
    def program(g: Geometry) -> str:
        return "\n".join(
            [machine(2), ".main {", f"  fill {g.at} c0, 0{g.attr}", f"  fill {g.at} c1, 1{g.attr}", "}", ""]
        )

    return Case("fill 0 and 1", "fill", "write", program, lambda g, rng: {}, cells_effect(range(0, 2)))


WR_BITS, WR_FIELDS = 3, 2


def wr_case(source: str, spread: str) -> Case:
    """wr of 3-bit two's-complement values in 2 fields (6 columns), from %x or from $w.

    spread: "per array" (one entry per array), "repeat" (each entry feeds 2 consecutive arrays, or 1
    on one array), "broadcast" (one entry for every array, no repeat=).
    """

    def entries(g: Geometry) -> tuple[int, str]:
        if spread == "per array":
            return g.n, ""
        if spread == "repeat":
            rep = 2 if g.n % 2 == 0 else 1
            return g.n // rep, f" repeat={rep}"
        return 1, ""

    def values(g: Geometry, rng: np.random.Generator, lead: tuple[int, ...]) -> np.ndarray:
        n, _ = entries(g)
        return rng.integers(-4, 4, (*lead, n, g.nrows, WR_FIELDS), dtype=np.int8)

    def program(g: Geometry) -> str:
        n, rep = entries(g)
        if source == "tensor":
            decl, src = f".input x : i8[{n},{g.nrows},{WR_FIELDS}]", "%x"
        else:
            w = values(g, np.random.default_rng(99), ())
            decl = f".data $w : i8[{n},{g.nrows},{WR_FIELDS}] = [{', '.join(map(str, w.reshape(-1)))}]"
            src = "$w"
        return "\n".join(
            [
                machine(WR_BITS * WR_FIELDS),
                decl,
                ".main {",
                f"  wr {g.at} c0, {src} bits={WR_BITS}{rep}{g.attr}",
                "}",
                "",
            ]
        )

    def inputs(g: Geometry, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": values(g, rng, (g.lanes,))} if source == "tensor" else {}

    name = f"wr from a {'tensor' if source == 'tensor' else 'data constant'}, {spread}"
    return Case(name, "wr", "write", program, inputs, cells_effect(range(0, WR_BITS * WR_FIELDS)))


# ---------------------------------------------------------------------------- reads
def rd_case() -> Case:
    def program(g: Geometry) -> str:
        return "\n".join(
            [
                machine(WR_BITS * WR_FIELDS),
                f".input x : i8[{g.n},{ROWS},{WR_FIELDS}]",
                ".main {",
                f"  wr {g.at} c0, %x bits={WR_BITS}",
                f"  rd {g.at} %y, c0 bits={WR_BITS} fields={WR_FIELDS}{g.attr}",
                f"  rd {g.at} %z, c0 bits={WR_BITS} fields={WR_FIELDS} signed=0{g.attr}",
                "}",
                "",
            ]
        )

    def inputs(g: Geometry, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": rng.integers(-4, 4, (g.lanes, g.n, ROWS, WR_FIELDS), dtype=np.int8)}

    def effect(r: Runs) -> int:
        assert not cell_diff(r).any(), "a read fault changed the cells"
        low = (1 << WR_BITS) - 1
        return sum(popcount((r.ok.tensors[k] ^ r.bad.tensors[k]) & low) for k in ("y", "z"))

    return Case("rd, signed and unsigned", "rd", "read", program, inputs, effect)


# ---------------------------------------------------------------------------- adder trees
def tree_columns(mn: str) -> int:
    """Column operands of a tree instruction (1 for tadd/tsub, 3 for tv*, 4 for td*)."""
    return sum(1 for o in OPCODES[mn].operands if o.kind is Kind.COL)


def tree_case(mn: str, kind: str) -> Case:
    """TREE_OPS instructions `mn` over the same columns, slot i shifted by shifts()[i], read out by ard.

    Columns: tadd/tsub c0; tv* the copies c0, c1, c2; td* the copies c0, c1 and the operands c2 = w,
    c3 = x (c0 = w AND x, c1 = c0 with some rows flipped, so that the compare finds differences even
    without faults).
    """
    ncols = tree_columns(mn)
    sign = 1 if mn.endswith("add") else -1

    def program(g: Geometry) -> str:
        ops = []
        for i, s in enumerate(shifts(TREE_OPS)):
            ops.append(f"  {mn} {g.at} acc{i}, " + ", ".join(f"c{c}" for c in range(ncols)) + f", {s}{g.attr}")
        return "\n".join(
            [
                machine(ncols, TREE_OPS),
                f".input x : u8[{g.n},{ROWS},{ncols}]",
                f".output y : i64[{g.n},{TREE_OPS}]",
                ".main {",
                f"  wr {g.at} c0, %x bits=1",
                f"  aclr {g.at} acc0:{TREE_OPS}",
                *ops,
                f"  ard {g.at} %y, acc0:{TREE_OPS}",
                "}",
                "",
            ]
        )

    def inputs(g: Geometry, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if ncols == 1 and kind == "read":
            return {"x": row_constant_bits(g, rng, 1)}  # every read fault of a slot moves it the same way
        x = rng.integers(0, 2, (g.lanes, g.n, ROWS, ncols), dtype=np.uint8)
        if ncols == 4:
            x[..., 0] = x[..., 2] & x[..., 3]
            x[..., 1] = x[..., 0] ^ (rng.random(x.shape[:-1]) < 0.1)
        return {"x": x}

    def effect(r: Runs) -> int:
        assert not cell_diff(r).any(), "a tree instruction changed the cells"
        ok, bad = r.ok.tensors["y"], r.bad.tensors["y"]  # [lane, array, slot]
        if kind == "tree":
            n = 0
            for i, s in enumerate(shifts(TREE_OPS)):
                a, b = sign * ok[..., i], sign * bad[..., i]
                assert (a >= 0).all() and (b >= 0).all() and not ((a | b) % (1 << s)).any()
                n += popcount((a >> s) ^ (b >> s))
            return n
        want = replay_senses(r, mn, sign)
        np.testing.assert_array_equal(bad, want, err_msg="the accumulators are not what the tree sensed")
        if ncols == 1:
            flips = sum(int(slot_flips(ok[..., i], bad[..., i], s).sum()) for i, s in enumerate(shifts(TREE_OPS)))
            assert flips == r.sense_flips, "the accumulators moved by other than the sensed flips"
        return r.sense_flips

    return Case(f"{mn} with {kind} faults", mn, kind, program, inputs, effect)


def replay_senses(r: Runs, mn: str, sign: int) -> np.ndarray:
    """The accumulators [lane, array, slot] that the recorded sensed words give under mn's semantics."""
    mask = active_words(r.g)
    senses = iter(r.sensed)
    acc = np.zeros((r.g.n, r.g.lanes, TREE_OPS), dtype=np.int64)
    for i, s in enumerate(shifts(TREE_OPS)):
        words = next(senses)
        if mn.startswith("tv"):
            a, c, d = words, next(senses), next(senses)
            words = (a & c) | (a & d) | (c & d)
        elif mn.startswith("td"):
            a, c = words, next(senses)
            diff = (a ^ c) & mask
            if diff.any():
                words = (a & ~diff) | (next(senses) & next(senses) & diff)
        acc[..., i] = sign * (np.bitwise_count(words & mask).sum(axis=-1, dtype=np.int64) << s)
    assert next(senses, None) is None, "the trees sensed more than their instructions say"
    return acc.transpose(1, 0, 2)


def tree_mnemonics() -> list[str]:
    return [mn for mn, op in OPCODES.items() if op.unit is Unit.TREE]


#: Builders for the non-gate instructions that can fault, by mnemonic: a new one needs its case here.
CASES_BY_MNEMONIC: dict[str, Callable[[], list[Case]]] = {
    "fill": lambda: [fill_case()],
    "wr": lambda: [
        wr_case(src, spread) for src in ("tensor", "data") for spread in ("per array", "repeat", "broadcast")
    ],
    "rd": lambda: [rd_case()],
    **{mn: (lambda mn=mn: [tree_case(mn, "read"), tree_case(mn, "tree")]) for mn in ("tadd", "tsub")},
    **{mn: (lambda mn=mn: [tree_case(mn, "read"), tree_case(mn, "tree")]) for mn in ("tvadd", "tvsub")},
    **{mn: (lambda mn=mn: [tree_case(mn, "read"), tree_case(mn, "tree")]) for mn in ("tdadd", "tdsub")},
}


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for mn, op in OPCODES.items():
        if op.unit is Unit.GATE:
            cases += [gate_alone(mn), gate_in_mac_run(mn)]
        elif mn in CASES_BY_MNEMONIC:
            cases += CASES_BY_MNEMONIC[mn]()
    return cases


CASES = {c.name: c for c in all_cases()}


def test_every_instruction_that_can_fault_has_a_case() -> None:
    """Each opcode of a unit that faults, with each fault kind of its unit, is covered (table-driven)."""
    need = {(mn, k) for mn, op in OPCODES.items() for k in UNIT_FAULTS.get(op.unit, ())}
    have = {(c.mnemonic, c.kind) for c in CASES.values()}
    assert need <= have, f"instructions that can fault without a case in {__file__}: {sorted(need - have)}"
    assert {c.mnemonic for c in CASES.values() if c.fuses} == {
        mn for mn, op in OPCODES.items() if op.unit is Unit.GATE and len(op.operands) == 3
    }


def fault_model(kind: str, mn: str, rate: Rate) -> FaultModel:
    if kind == "gate":
        return FaultModel({mn: rate})
    if kind == "tree":
        return FaultModel(tree=rate.pmax)
    return FaultModel(**{kind: rate})


def run_pair(
    linked: Linked,
    inputs: dict[str, np.ndarray],
    fm: FaultModel,
    g: Geometry,
    execution: str,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Runs:
    monkeypatch.setattr(Machine, "fuse_mac", execution == "fused")
    sensed: list[np.ndarray] = []
    flips = [0]
    orig = tree_ops._sense
    outside = ~active_words(g)

    def record(be: Any, src: Any, read: Any) -> Any:
        got = orig(be, src, read)
        if read is not None:
            s, w = be.get_words(src), be.get_words(got).copy()
            assert not popcount((s ^ w) & outside), "a read fault outside the active rows"
            flips[0] += popcount(s ^ w)
            sensed.append(w)
        return got

    machines = []
    for model, seed in ((FaultModel(), 0), (fm, 5)):
        monkeypatch.setattr(tree_ops, "_sense", record if model is fm else orig)
        m = Machine(
            linked, g.lanes, model, np.random.default_rng(seed), reference=execution == "reference", backend=backend
        )
        for k, v in inputs.items():
            m.tensors[k] = v.astype(np.int64)
        execute(m, linked.init)
        execute(m, linked.main)
        machines.append(m)
    monkeypatch.setattr(tree_ops, "_sense", orig)
    return Runs(machines[0], machines[1], g, sensed, flips[0])


#: (case, execution) pairs: the plain reference path differs from the prepared one only for gates.
CASE_EXECUTIONS = [
    pytest.param(name, ex, id=f"{name}-{ex}")
    for name, c in CASES.items()
    for ex in EXECUTIONS
    if ex != "reference" or c.kind == "gate"
]


@functools.cache
def linked_program(text: str, name: str) -> Linked:
    return link(text, f"<{name}>")


@pytest.mark.parametrize("rate", list(RATES))
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("rows", list(ROW_RANGES))
@pytest.mark.parametrize("arrays", list(ARRAY_SETS))
@pytest.mark.parametrize(("case", "execution"), CASE_EXECUTIONS)
def test_counted_faults_are_the_bits_that_differ(
    case: str,
    execution: str,
    arrays: str,
    rows: str,
    lanes: int,
    rate: str,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = CASES[case]
    lo, hi = ARRAY_SETS[arrays]
    g = Geometry(lo, hi, ROW_RANGES[rows], lanes)
    linked = linked_program(c.program(g), case)
    if c.fuses:
        assert any(isinstance(n, FusedMac) for n in fuse(linked.main)), "the MAC run should fuse"
    inputs = c.inputs(g, np.random.default_rng(3))
    fm = fault_model(c.kind, c.mnemonic, RATES[rate])
    r = run_pair(linked, inputs, fm, g, execution, backend, monkeypatch)
    assert r.ok.counts.faults_injected == 0
    counted = r.bad.counts.faults
    assert counted[c.kind] > 0, "no fault injected: the case tests nothing"
    assert counted == {**{k: 0 for k in counted}, c.kind: counted[c.kind]}, "a fault of another kind"
    if c.fuses and execution == "fused":
        assert any(isinstance(n, FusedMac) for n in r.bad._runners), "the MAC run did not run fused"
    assert c.effect(r) == counted[c.kind]


#: An input-dependent gate rate (by_ones): P(output wrong | k inputs at 1), the first n + 1 of these for a
#: gate of n inputs (high, and different per k, so that every run injects many faults at several rates).
BY_ONES = (0.3, 0.08, 0.2, 0.05, 0.25, 0.12)
GATE_CASE_EXECUTIONS = [p for p in CASE_EXECUTIONS if CASES[p.values[0]].kind == "gate"]


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("rows", list(ROW_RANGES))
@pytest.mark.parametrize("arrays", list(ARRAY_SETS))
@pytest.mark.parametrize(("case", "execution"), GATE_CASE_EXECUTIONS)
def test_counted_input_dependent_faults_are_the_bits_that_differ(
    case: str, execution: str, arrays: str, rows: str, lanes: int, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate cases again with a by_ones rate: its faults are thinned by the inputs at each candidate, and
    every one counted is still a wrong bit (in the cells, or in the slot of a MAC run)."""
    c = CASES[case]
    lo, hi = ARRAY_SETS[arrays]
    g = Geometry(lo, hi, ROW_RANGES[rows], lanes)
    linked = linked_program(c.program(g), case)
    inputs = c.inputs(g, np.random.default_rng(3))
    fan_in = len(OPCODES[c.mnemonic].operands) - 1
    fm = FaultModel({c.mnemonic: Rate(by_ones=BY_ONES[: fan_in + 1])})
    r = run_pair(linked, inputs, fm, g, execution, backend, monkeypatch)
    counted = r.bad.counts.faults
    assert counted["gate"] > 0, "no fault injected: the case tests nothing"
    assert counted == {**{k: 0 for k in counted}, "gate": counted["gate"]}, "a fault of another kind"
    if c.fuses and execution == "fused":
        assert any(isinstance(n, FusedMac) for n in r.bad._runners), "the MAC run did not run fused"
    assert c.effect(r) == counted["gate"]


# ---------------------------------------------------------------------------- the report, end to end
def _weights_program(rows: int) -> str:
    w = ", ".join(str(v) for v in np.random.default_rng(1).integers(0, 2, rows))
    return "\n".join(
        [
            f".machine arrays=1 rows={rows} cols=2 accs=1",
            f".input x : u8[1,{rows}]",
            f".output y : i64[1,{rows}]",
            f".output z : i64[1,{rows}]",
            f".data $w : u8[1,{rows}] = [{w}]",
            ".init {",
            "  wr @0 c0, $w bits=1  ; weights: a data constant",
            "}",
            ".main {",
            "  wr @0 c1, %x bits=1",
            "  rd @0 %y, c0 bits=1 signed=0",
            "  rd @0 %z, c1 bits=1 signed=0",
            "}",
            "",
        ]
    )


def test_report_counts_the_write_faults_that_landed(cli, tmp_path: Path) -> None:  # noqa: ANN001
    """issue 10, section 9: weights written from a data constant under [write] p = 0.05, 20 samples.

    REPORT.json's faults.write must be the bits read back wrong (no read faults), for the weights
    (.init) as for the tensor; and so must run() when the samples go in several batches.
    """
    rows, samples = 4096, 20
    text = _weights_program(rows)
    (tmp_path / "w.cram").write_text(text, encoding="utf-8")
    (tmp_path / "em.toml").write_text("[write]\np = 0.05\n", encoding="utf-8")
    x = np.random.default_rng(2).integers(0, 2, (samples, 1, rows), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    r = cli(
        "run",
        str(tmp_path / "w.cram"),
        "--input",
        str(tmp_path / "x.npz"),
        "--error-model",
        str(tmp_path / "em.toml"),
        "--report",
        str(tmp_path / "R.json"),
        "--output",
        str(tmp_path / "o.npz"),
    )
    assert r.rc == 0, r.err
    report = json.loads((tmp_path / "R.json").read_text())
    out = np.load(tmp_path / "o.npz")
    w = np.random.default_rng(1).integers(0, 2, rows)  # as _weights_program draws them
    wrong_w = int((out["y"].reshape(samples, rows) != w).sum())
    wrong_x = int((out["z"].reshape(samples, rows) != x.reshape(samples, rows)).sum())
    assert wrong_w > 0.5 * 0.05 * samples * rows  # the weight faults land (they did not: issue 10)
    assert report["faults"] == {"gate": 0, "write": wrong_w + wrong_x, "read": 0, "tree": 0}
    res = run(link(text), {"x": x}, FaultModel(write=Rate(0.05, 0.05)), seed=3, lanes=7)
    bad = sum(
        int((res.outputs[k].reshape(samples, rows) != v).sum()) for k, v in (("y", w), ("z", x.reshape(samples, rows)))
    )
    assert res.counts.faults["write"] == bad > 0
