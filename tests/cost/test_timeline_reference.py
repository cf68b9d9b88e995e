"""The compiled list scheduler of cramc/cost/timeline.py against a plain one written from its definition.

`_reference` below is the scheduler as first written (per instruction: its row_ops from the static
counter, its duration, its hazards looked up over every array range of the state).  With the periodic
shortcut on it is what `timeline` must give bit for bit: every figure of `Timeline.as_dict`, the layer
shares, the serial sum.  With the shortcut off it steps every iteration: the fast timeline's loops then
agree to 1e-12 relative (the shortcut adds the remaining iterations' time in one product, not one
iteration at a time).

Cases: loops that repeat from their second iteration, one whose tree falls behind its gates for a few
iterations first, one that never repeats (a column written before the loop stays in the state), array
ranges that partly meet (the lookups over every range that meets an instruction's), a nested loop, a
loop that never runs; the golden compiled programs under several technology files, with and without
overlap; and digits_cnn compiled for a small chip (loops of 16 rounds) and without double buffering.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np
import pytest
from cramtest import REPO, link

from cramc.compiler import Options, compile_model
from cramc.cost.model import active_rows
from cramc.cost.params import Tech
from cramc.cost.static import _Counter, _layer_labels
from cramc.cost.timeline import (
    OVERLAPPING,
    PORT_UNITS,
    Timeline,
    _col_access,
    _layer_of,
    _Scheduler,
    _stages,
    timeline,
)
from cramc.isa import ast
from cramc.isa.linked import BoundOp, Linked, Loop, Node
from cramc.isa.opcodes import Unit
from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify

GOLDEN = REPO / "tests" / "golden" / "programs"
TECH = Tech.load()
TECHS = {
    "default": TECH,
    "per_array": Tech.load("per_array"),
    "slow_tree": TECH.with_overrides({"tree": {"latency_s": 10e-9}}),
}

Span = tuple[int, int]


def _latest(entries: dict[Span, float], lo: int, hi: int) -> float:
    return max((t for (a, b), t in entries.items() if a < hi and lo < b), default=-math.inf)


def _same(a: Any, b: Any, tol: float) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple) and isinstance(y, tuple):
            if not _same(x, y, tol):
                return False
        elif isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > tol:
                return False
        elif x != y:
            return False
    return True


class _Reference:
    """The plain scheduler: nested dicts of array ranges, every instruction looked up as it comes."""

    def __init__(self, linked: Linked, tech: Tech, overlap: bool, shortcut: bool):
        self.costs = tech.op_costs(linked.machine.rows)
        self.machine_rows = linked.machine.rows
        self.overlap, self.shortcut = overlap, shortcut
        self.rows: dict[int, int] = {}
        self.arrays: dict[str, set[Span]] = {}
        counter = _Counter(linked)
        self._count(counter, linked.init)
        self._count(counter, linked.main)
        self.bar = self.end = 0.0
        self.units: dict[Unit, dict[Span, float]] = {}
        self.written: dict[int, dict[Span, float]] = {}
        self.read: dict[int, dict[Span, float]] = {}
        self.acc: dict[tuple[str, ...], float] = {}
        self.stopped: list[tuple[int, int]] = []  # per loop run: (trip count, iterations stepped)

    def _count(self, counter: _Counter, nodes: tuple[Node, ...]) -> None:
        for n in nodes:
            if isinstance(n, Loop):
                self._count(counter, n.body)
            else:
                self.rows[id(n)] = counter.row_ops(n)

    def _add(self, key: tuple[str, ...], v: float) -> None:
        self.acc[key] = self.acc.get(key, 0.0) + v

    def instr(self, b: BoundOp, layer: str) -> None:
        cost = self.costs[b.op.mnemonic]
        rows = self.rows[id(b)]
        d = cost.time(1, rows)
        if cost.per_array and b.arrays is not None:
            d += cost.array_excess(b.arrays[1] - b.arrays[0], active_rows(b, self.machine_rows), rows)
        before = self.end
        if b.arrays is not None:
            self.arrays.setdefault(layer, set()).add(b.arrays)
        if self.overlap and b.op.unit in OVERLAPPING and b.arrays is not None:
            lo, hi = b.arrays
            ri, wi = _col_access(b.op)
            reads, writes = [b.operands[i] for i in ri], [b.operands[i] for i in wi]
            unit = self.units.setdefault(b.op.unit, {})
            start = max(self.bar, _latest(unit, lo, hi))
            for c in reads:
                start = max(start, _latest(self.written.get(c, {}), lo, hi))
            for c in writes:
                start = max(start, _latest(self.written.get(c, {}), lo, hi), _latest(self.read.get(c, {}), lo, hi))
            end = start + d
            unit[(lo, hi)] = end
            for c in reads:
                e = self.read.setdefault(c, {})
                e[(lo, hi)] = max(e.get((lo, hi), -math.inf), end)
            for c in writes:
                self.written.setdefault(c, {})[(lo, hi)] = end
            self.end = max(self.end, end)
        else:
            self.bar = self.end = self.end + d
            self.units.clear()
            self.written.clear()
            self.read.clear()
        self._add(("serial",), d)
        self._add(("layer", layer, "cmos" if b.op.unit is Unit.CMOS else "arrays"), self.end - before)
        if b.op.unit is Unit.CMOS:
            self._add(("cmos",), d)
        elif b.op.unit in PORT_UNITS:
            self._add(("port",), rows * cost.op_time_s)

    def snapshot(self) -> tuple[Any, ...]:
        rel = self.end

        def norm(d: dict[Any, dict[Span, float]]) -> tuple[Any, ...]:
            return tuple(sorted((k, s, t - rel) for k, e in d.items() for s, t in e.items()))

        units = {u.value: e for u, e in self.units.items()}
        return (self.bar - rel, norm(units), norm(self.written), norm(self.read))

    def shift(self, by: float) -> None:
        self.bar += by
        self.end += by
        for d in (*self.units.values(), *self.written.values(), *self.read.values()):
            for k in d:
                d[k] += by

    def nodes(self, nodes: tuple[Node, ...], layer: str) -> None:
        for n in nodes:
            if isinstance(n, Loop):
                self.loop(n, layer)
            else:
                self.instr(n, layer)

    def loop(self, lp: Loop, layer: str) -> None:
        prev: tuple[Any, ...] | None = None
        prev_end, prev_acc = self.end, dict(self.acc)
        for i in range(lp.count):
            self.nodes(lp.body, layer)
            snap = self.snapshot()
            step = self.end - prev_end
            tol = 1e-12 * max(self.end, 1e-9)
            if self.shortcut and prev is not None and _same(snap, prev, tol):
                left = lp.count - 1 - i
                inc = {k: v - prev_acc.get(k, 0.0) for k, v in self.acc.items()}
                self.shift(step * left)
                for k, v in inc.items():
                    self.acc[k] = self.acc.get(k, 0.0) + v * left
                self.stopped.append((lp.count, i + 1))
                return
            prev, prev_end, prev_acc = snap, self.end, dict(self.acc)
        self.stopped.append((lp.count, lp.count))


def _reference(linked: Linked, tech: Tech, overlap: bool = True, shortcut: bool = True) -> tuple[Timeline, _Reference]:
    sections = {s.name: s for s in linked.program.items if isinstance(s, ast.Section)}
    labels = _layer_labels(sections.get("main"))
    sch = _Reference(linked, tech, overlap, shortcut)
    for n in linked.main:
        sch.nodes((n,), _layer_of(labels, n))
    layers: dict[str, float] = {}
    arrays_share: dict[str, float] = {}
    for key, v in sch.acc.items():
        if key[0] == "layer":
            layers[key[1]] = layers.get(key[1], 0.0) + v
            if key[2] == "arrays":
                arrays_share[key[1]] = arrays_share.get(key[1], 0.0) + v
    tl = Timeline(
        latency_s=sch.end,
        serial_s=sch.acc.get(("serial",), 0.0),
        layers=layers,
        stages=_stages(sch.arrays, arrays_share),
        cmos_s=sch.acc.get(("cmos",), 0.0),
        port_s=sch.acc.get(("port",), 0.0),
    )
    return tl, sch


def _figures(tl: Timeline) -> tuple[Any, ...]:
    return (tl.as_dict(), list(tl.layers.items()), tl.serial_s)


def _check(linked: Linked, tech: Tech = TECH, overlap: bool = True) -> _Reference:
    """The fast timeline equals the reference bit for bit, and the fully stepped one to 1e-12."""
    fast = timeline(linked, tech, overlap)
    ref, sch = _reference(linked, tech, overlap)
    assert _figures(fast) == _figures(ref)
    stepped, _ = _reference(linked, tech, overlap, shortcut=False)
    a, b = fast.as_dict(), stepped.as_dict()
    for k, v in a.items():
        if isinstance(v, float):
            assert v == pytest.approx(b[k], rel=1e-12, abs=0.0), k
    assert [s["layers"] for s in a["stages"]] == [s["layers"] for s in b["stages"]]
    assert [s["time_s"] for s in a["stages"]] == pytest.approx([s["time_s"] for s in b["stages"]], rel=1e-12)
    assert fast.layers == pytest.approx(stepped.layers, rel=1e-12)
    return sch


_HEAD = ".machine arrays=4 rows=8 cols=8 accs=2\n.input x : i8[4,8]\n.output y : i64[4,1]\n\n.main {\n"
_TAIL = "  ard @0:4 %y, acc0\n}\n"


def _program(body: str, pre: str = "", count: int = 50, post: str = "") -> Linked:
    """x written, accumulators cleared, `pre`, then `body` in a loop of `count` (none: 0), `post`, the read."""
    loop = f"  repeat r {count} {{\n{body}  }}\n" if count > 0 else ""
    return link(_HEAD + "  wr @0:4 c0, %x bits=2\n  aclr @0:4 acc0\n" + pre + loop + post + _TAIL)


def _terms(n: int, arrays: str = "@0", double: bool = True) -> str:
    """n MAC terms (AND into a scratch column, tadd of it), alternating two scratch columns if `double`."""
    cols = [3 + (k % 2 if double else 0) for k in range(n)]
    return "".join(f"    and {arrays} c{c}, c0, c1\n    tadd {arrays} acc0, c{c}, 0\n" for c in cols)


@pytest.mark.parametrize("tech", list(TECHS))
@pytest.mark.parametrize("double", [True, False])
def test_loops_that_repeat_at_once(tech: str, double: bool) -> None:
    # a barrier (the accumulator clear) clears the state: every iteration after it is the same
    sch = _check(_program("    aclr @0:4 acc1\n" + _terms(4, double=double)), TECHS[tech])
    assert sch.stopped == [(50, 2)]  # the second iteration repeats the first


def _transient(count: int) -> Linked:
    # the body's first AND waits for the gate unit, free before the last tadd of the previous iteration
    # ends: it hides behind that tadd, but not in the first iteration, which follows a barrier; the
    # barrier after it makes every later iteration the same
    return _program("    and @0 c5, c0, c1\n    aclr @0:4 acc1\n" + _terms(3), count=count)


@pytest.mark.parametrize("tech", list(TECHS))
def test_a_first_iteration_unlike_the_others(tech: str) -> None:
    sch = _check(_transient(50), TECHS[tech])
    assert sch.stopped == [(50, 2)]
    t = [timeline(_transient(n), TECHS[tech]).latency_s for n in (0, 1, 2, 3)]
    first, second, third = t[1] - t[0], t[2] - t[1], t[3] - t[2]
    assert first > second * (1 + 1e-6)  # the transient: the shortcut must add the second's time, not the first's
    assert third == pytest.approx(second, rel=1e-12)


@pytest.mark.parametrize("tech", list(TECHS))
def test_a_loop_that_never_repeats(tech: str) -> None:
    # no barrier in the body: the last barrier, before the loop, falls further behind every iteration
    sch = _check(_program(_terms(2)), TECHS[tech])
    assert sch.stopped == [(50, 50)]
    sch = _check(_program(_terms(2), pre="  and @1 c7, c0, c1\n", count=20), TECHS[tech])
    assert sch.stopped == [(20, 20)]


def test_array_ranges_that_partly_meet() -> None:
    body = "    and @0:2 c3, c0, c1\n    tadd @1:3 acc0, c3, 0\n    and @2:4 c4, c0, c1\n    tadd @0:4 acc1, c4, 0\n"
    pre = "  and @0:4 c3, c0, c1\n  and @0:4 c4, c0, c1\n"
    assert _Scheduler(_program(body, pre=pre), TECH).meets is not None  # the lookups over every range met
    for tech in TECHS.values():
        _check(_program(body, pre=pre), tech)
        _check(_program("    aclr @0:4 acc1\n" + body, pre=pre), tech)
        _check(_program(body, pre=pre, count=3), tech, overlap=False)


def test_nested_and_empty_loops() -> None:
    inner = "    repeat s 3 {\n" + _terms(2).replace("    ", "      ") + "    }\n"
    _check(_program(inner + "    and @1 c5, c0, c1\n", count=7))
    sch = _check(_program("    aclr @0:4 acc1\n" + inner.replace("_terms", ""), count=9))
    assert sch.stopped[:3] == [(3, 3), (3, 3), (9, 2)]
    once = _program(_terms(2), count=1, post="  and @0 c6, c0, c1\n")
    never = [Loop(n.var, 0, n.body, n.loc) if isinstance(n, Loop) else n for n in once.main]
    sch = _check(dataclasses.replace(once, main=tuple(never)))  # a loop of no iterations (the parser has none)
    assert sch.stopped == [(0, 0)]
    _check(_program(_terms(2), count=1))


@pytest.mark.parametrize(
    "case", ["digits_cnn", "digits_cnn-small_chip", "digits_mlp-ecc_tmr", "digits_mlp-reduce_cram", "mnist_lenet5"]
)
def test_golden_programs(case: str) -> None:
    linked = verify(parse_file(str(GOLDEN / f"{case}.cram")))
    for name, tech in TECHS.items():
        for overlap in (True, False):
            if name == "slow_tree" and not overlap:
                continue  # the tree's latency changes nothing a serial schedule does not show already
            fast, (ref, _) = timeline(linked, tech, overlap), _reference(linked, tech, overlap)
            assert _figures(fast) == _figures(ref), (name, overlap)


@pytest.mark.parametrize(
    "opts",
    [dict(arrays=16, rows=64, cols=64, accs=16), dict(arrays=24, rows=64, cols=64, accs=16, double_buffer=False)],
    ids=["small_chip", "small_chip-single_buffer"],
)
def test_compiled_digits_cnn_with_round_loops(opts: dict[str, Any]) -> None:
    m = REPO / "models"
    cal = dict(np.load(m / "digits_calib_img.npz"))
    text = compile_model(
        str(m / "digits_cnn.onnx"), cal, Options(n_validation=1, trace=False, **opts), log=io.StringIO()
    )
    linked = link(text)
    assert any(isinstance(n, Loop) and n.count > 1 for n in linked.main)
    for tech in TECHS.values():
        sch = _check(linked, tech)
        assert any(count > 1 for count, _ in sch.stopped)
