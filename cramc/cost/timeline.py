"""Timeline cost model: when each instruction of one inference runs, and what a layer pipeline sustains.

cramc.cost.model sums the time of every instruction: each waits for the one
before it.  The arrays of the CRAM-ER hybrid have two units that can work at
once: the *gate unit* (a CRAM gate's preset and switching pulse, ``and``,
``maj3``, ...) and the *adder tree* beside the array (``tadd``, ``tsub``, ...,
which senses one column over the active rows and counts it).  This model is a
list scheduler over the linked program (loops unrolled, micro-programs
inlined) with those resources, per array:

- a gate-unit instruction starts when the gate unit of every array it names is
  free, a tree instruction when their adder trees are: each unit issues its
  instructions in program order;
- hazards on columns, from the opcode table's operand access (cramc.isa.opcodes):
  an instruction that reads a column waits for the end of the instruction that
  last wrote it on an array both name (read after write); one that writes a
  column waits for the end of the last reader (write after read: a gate's
  preset would destroy the value the tree is still sensing) and of the last
  writer (write after write);
- every other instruction (periphery writes and reads through the chip-wide
  port, accumulator clears and reads, the CMOS vector unit) is a barrier: it
  starts when everything before it has ended, and everything after it waits
  for it.  Their overlap is not modelled (the figure stays an upper bound for a
  machine that could overlap them too).

So a gate and a tree count proceed together on one array exactly when they
touch different columns: the double-buffered MAC micro-programs
(cramc.backend.lower_tiles) let term k+1's AND run while term k is counted.
The single-buffer program writes the one scratch column that the previous
tree count senses, and the schedule is the serial sum of cramc.cost.model
(the tests check the equality on compiled programs).  Each instruction's
duration is its cost in cramc.cost.model (OpCost.time of one instruction and
its row operations), so the two models share every figure.

Loops are not unrolled blindly: the state after an iteration, taken relative
to its end, repeats once the loop is periodic (the compiler's round loops
start with a barrier, so from the first iteration on), and the remaining
iterations are then added in one step.

Latency and throughput.  `latency_s` is the critical path of one inference.
A weight-stationary chip can also pipeline: the arrays of each layer start the
next sample while later layers finish this one.  The *stages* are the layers
(the ONNX nodes the compiler names in comments, as in cramc.cost.static);
layers whose arrays overlap (time-multiplexed layers, which reload their
weights into shared arrays) are merged into one stage, because they cannot
hold two samples at once.  A stage's time is the part of the critical path
its non-CMOS instructions take.  The CMOS vector unit and the chip-wide
periphery port are shared by all stages, so their busy time per inference
bounds the interval too; the pipeline interval is the largest of these (the
resource bound of modulo scheduling: every sample needs every stage and every
shared unit once), the throughput its inverse, at least 1 / latency.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cramc.cost.model import active_rows
from cramc.cost.params import OpCost, Tech
from cramc.cost.static import _Counter, _defines, _layer_labels
from cramc.isa import ast
from cramc.isa.counting import Factor, instruction_factors, rule
from cramc.isa.linked import BoundOp, Linked, Loop, Node
from cramc.isa.opcodes import Kind, Opcode, Unit

#: The units that overlap with each other (per array); every other unit is a barrier.
OVERLAPPING = (Unit.GATE, Unit.TREE)
#: The units that move data through the chip-wide periphery port.
PORT_UNITS = (Unit.WRITE, Unit.READ)

Span = tuple[int, int]


@functools.cache
def _col_access(op: Opcode) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The positions of the column operands an opcode reads, and of those it writes (the opcode table)."""
    cols = [(i, o) for i, o in enumerate(op.operands) if o.kind is Kind.COL]
    return tuple(i for i, o in cols if o.reads), tuple(i for i, o in cols if o.writes)


#: Scheduler keys: (column or unit index) * _K + span index, one int per (column or unit, array range).
_K = 1 << 24
_NEG = -math.inf
#: The units whose counting (cramc.cost.static._Counter.row_ops) defines tensor shapes as it goes: the
#: counter must see them in program order.  Every other instruction's row_ops depends on it alone.
_SHAPING = (Unit.CMOS, Unit.ACC, Unit.READ)
#: Record kinds: an instruction of an overlapping unit (hazards per column and array range), a barrier on
#: the arrays, one through the periphery port, one on the CMOS unit.
_OVER, _BAR, _PORT, _CMOS = 0, 1, 2, 3

#: A compiled node list: runs of instructions ([nodes, entries]) and loops (trip count, compiled body).
_Items = list[Any]


@dataclass(frozen=True)
class _OpInfo:
    """What the scheduler needs of one opcode."""

    cost: OpCost
    kind: int  # _OVER (when overlap is on), _BAR, _PORT or _CMOS
    unit: int  # index in OVERLAPPING (for _OVER)
    reads: tuple[int, ...]  # positions of the column operands read
    writes: tuple[int, ...]  # ... and written
    defines: bool  # cramc.cost.static._defines
    shaping: bool  # its counting defines tensor shapes (_SHAPING)
    pure: bool  # row_ops a function of the arrays and rows alone (the rule multiplies no other factor)


def _meets(spans: list[Span]) -> list[tuple[int, ...]]:
    """For each span (by index), the indices of the spans that meet it (a < hi and lo < b), itself included
    when it is not empty: per span length, the candidates are a range of the spans sorted by start."""
    by_len: dict[int, list[tuple[int, int]]] = {}
    for i, (a, b) in enumerate(spans):
        by_len.setdefault(b - a, []).append((a, i))
    groups = []
    for n, g in by_len.items():
        g.sort()
        groups.append((n, [a for a, _ in g], [i for _, i in g]))
    out = []
    for lo, hi in spans:
        m: list[int] = []
        for n, starts, idx in groups:  # a span (a, a + n) meets [lo, hi) when lo - n < a < hi
            m.extend(idx[bisect.bisect_right(starts, lo - n) : bisect.bisect_left(starts, hi)])
        out.append(tuple(sorted(m)))
    return out


def _same(a: tuple[Any, ...], b: tuple[Any, ...], tol: float) -> bool:
    """Whether two snapshots are equal: the same keys, every time within `tol`."""
    if abs(a[0] - b[0]) > tol:
        return False
    for x, y in zip(a[1:], b[1:], strict=True):
        if x.keys() != y.keys():
            return False
        for k, t in x.items():
            if abs(t - y[k]) > tol:
                return False
    return True


@dataclass(frozen=True)
class Stage:
    """One stage of the layer pipeline: its layers and its time per sample."""

    layers: tuple[str, ...]
    time_s: float


@dataclass
class Timeline:
    """The timeline of one inference and the layer pipeline's steady state."""

    latency_s: float  # critical path with gate/tree overlap
    serial_s: float  # every instruction after the one before: cramc.cost.model's latency
    layers: dict[str, float]  # each layer's share of the critical path (sums to latency_s)
    stages: list[Stage]
    cmos_s: float  # busy time of the CMOS vector unit per inference (shared by every stage)
    port_s: float  # busy time of the chip-wide periphery port per inference (shared)
    energy_j: float = 0.0  # per inference (cramc.cost.model; overlap changes no energy)

    @property
    def interval_s(self) -> float:
        """Pipeline interval: the busiest stage or shared unit."""
        return max([s.time_s for s in self.stages] + [self.cmos_s, self.port_s, 1e-300])

    @property
    def throughput(self) -> float:
        """Inferences per second in the steady state of the layer pipeline."""
        return 1.0 / self.interval_s

    @property
    def bottleneck(self) -> str:
        best = max(self.stages, key=lambda s: s.time_s, default=None)
        cands = [("CMOS unit", self.cmos_s), ("periphery port", self.port_s)]
        if best is not None:
            cands.append(("stage " + "+".join(best.layers), best.time_s))
        return max(cands, key=lambda c: c[1])[0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_overlap_s": self.latency_s,
            "latency_no_overlap_s": self.serial_s,
            "interval_s": self.interval_s,
            "throughput_per_s": self.throughput,
            "energy_per_inference_j": self.energy_j,
            "bottleneck": self.bottleneck,
            "cmos_busy_s": self.cmos_s,
            "port_busy_s": self.port_s,
            "stages": [{"layers": list(s.layers), "time_s": s.time_s} for s in self.stages],
        }


class _Scheduler:
    """The list scheduler over the program compiled once.

    Compiled: per run of instructions the list of its nodes and of their *entries*, one entry shared by
    every instruction of an opcode on the same arrays and rows (its record kind, duration, unit key, array
    range index, the positions of its column operands), so that compiling allocates nothing per
    instruction; the keys of an instruction's columns are taken from its operands as it is scheduled.
    Loops are compiled once and run until periodic.

    State (times since the start of the inference): `bar`, the end of the last barrier (nothing after it
    starts before); `end`, the latest end of any instruction so far; `units`, `written`, `read`: key (unit
    or column, array range; `_K`) -> when that unit of those arrays is free, the end of the column's last
    writer, of its last reader there.  Accumulated durations: `serial` (every instruction after the one
    before), `cmos`, `port` (busy times of the shared units), and per layer its critical-path share on the
    arrays and on the CMOS unit (`la`, `lc` for the layer being scheduled)."""

    def __init__(self, linked: Linked, tech: Tech, overlap: bool = True):
        self.costs: dict[str, OpCost] = tech.op_costs(linked.machine.rows)
        self.machine_rows = linked.machine.rows
        self.overlap = overlap
        self.bar = self.end = 0.0
        self.units: dict[int, float] = {}
        self.written: dict[int, float] = {}
        self.read: dict[int, float] = {}
        self.serial = self.cmos = self.port = 0.0
        self.la = self.lc = 0.0
        self.shares: dict[str, tuple[float, float]] = {}  # layer -> its shares on the arrays, on the CMOS unit
        self.arrays: dict[str, set[Span]] = {}  # layer -> array ranges its (executed) instructions name
        self.layer_order: list[str] = []  # layers in the order of their first executed instruction
        self.arrays_order: list[str] = []  # ... of their first executed instruction not on the CMOS unit
        self._infos: dict[int, _OpInfo] = {}
        self._shared: dict[tuple[Any, ...], list[Any]] = {}  # (id(opcode), arrays, rows) -> entry
        self._span_ix: dict[Span, int] = {}
        self._pending: list[tuple[BoundOp, _OpInfo, list[Any]]] = []  # entries the counter fills, in order
        self.meets: list[tuple[int, ...]] | None = None  # per array range, those it meets (None: only itself)
        self.top = self._compile(linked)

    # ------------------------------------------------------------ compile
    def _info(self, op: Opcode) -> _OpInfo:
        got = self._infos.get(id(op))
        if got is None:
            ri, wi = _col_access(op)
            if self.overlap and op.unit in OVERLAPPING:
                kind = _OVER
            else:
                kind = _CMOS if op.unit is Unit.CMOS else _PORT if op.unit in PORT_UNITS else _BAR
            fields_of = any(o.span is not None and o.span.fields_of for o in op.operands)
            factors = {f for e in rule(op).events if e.counter == "row_ops" for f in e.factors}
            shaping, defines = op.unit in _SHAPING, _defines(op)
            pure = not (shaping or defines or fields_of) and factors <= {Factor.ARRAYS, Factor.ROWS}
            unit = OVERLAPPING.index(op.unit) if kind == _OVER else 0
            got = self._infos[id(op)] = _OpInfo(self.costs[op.mnemonic], kind, unit, ri, wi, defines, shaping, pure)
        return got

    def _entry(self, b: BoundOp) -> list[Any]:
        """A new entry for b: shared by the instructions of its opcode on its arrays and rows when its
        row_ops depends on nothing else (`_OpInfo.pure`), else b's own, filled once the counter has seen it.
        [kind, duration, unit key, array range index, read positions, write positions, port share, arrays]"""
        info = self._info(b.op)
        over = info.kind == _OVER and b.arrays is not None
        kind = _OVER if over else _BAR if info.kind == _OVER else info.kind
        si = self._span_ix.setdefault(b.arrays, len(self._span_ix)) if over else 0  # type: ignore[arg-type]
        g = [kind, 0.0, info.unit * _K + si, si, info.reads, info.writes, 0.0, b.arrays]
        if info.pure:
            self._fill(g, b, info, rule(b.op).row_ops(instruction_factors(b, self.machine_rows)))
            self._shared[(id(b.op), b.arrays, b.rows)] = g
        else:
            self._pending.append((b, info, g))
        return g

    def _fill(self, g: list[Any], b: BoundOp, info: _OpInfo, rows: int) -> None:
        """An entry's duration (the instruction's cost in cramc.cost.model) and port share, from its row_ops."""
        cost = info.cost
        d = cost.time(1, rows)
        if cost.per_array and b.arrays is not None:
            d += cost.array_excess(b.arrays[1] - b.arrays[0], active_rows(b, self.machine_rows), rows)
        g[1] = d
        if g[0] == _PORT:
            g[6] = rows * cost.op_time_s  # the chip-wide port's share (per-array limits are not shared)

    def _straight_run(self, nodes: Iterable[BoundOp], out: _Items, live: list[Any] | None) -> None:
        shared, entry = self._shared, self._entry
        entries = [shared.get((id(n.op), n.arrays, n.rows)) or entry(n) for n in nodes]
        if out and isinstance(out[-1], list):
            out[-1][0].extend(nodes)
            out[-1][1].extend(entries)
        else:
            out.append([list(nodes), entries])
        if live is not None:
            live.append(entries)

    def _walk(self, nodes: tuple[Node, ...], out: _Items, live: list[Any] | None) -> None:
        """Compile `nodes` into `out`; `live`: where the entries of executed runs go (None: never executed)."""
        if Loop not in map(type, nodes):  # a loop body: one run
            self._straight_run(nodes, out, live)  # type: ignore[arg-type]
            return
        run: list[BoundOp] = []
        for n in nodes:
            if isinstance(n, Loop):
                if run:
                    self._straight_run(run, out, live)
                    run = []
                body: _Items = []
                self._walk(n.body, body, live if n.count > 0 else None)
                out.append((n.count, body))
            else:
                run.append(n)
        if run:
            self._straight_run(run, out, live)

    def _compile(self, linked: Linked) -> list[tuple[str, _Items]]:
        """.main compiled: (layer, items) per run of top-level nodes of one layer."""
        init: list[tuple[BoundOp, _OpInfo]] = []  # .init's instructions that define tensors or their shapes

        def walk_init(nodes: Iterable[Node]) -> None:
            for n in nodes:
                if isinstance(n, Loop):
                    walk_init(n.body)
                elif not self._info(n.op).pure:
                    init.append((n, self._info(n.op)))

        walk_init(linked.init)
        sections = {s.name: s for s in linked.program.items if isinstance(s, ast.Section)}
        labels = _layer_labels(sections.get("main"))
        top: list[tuple[str, _Items]] = []
        executed: list[tuple[str, list[Any]]] = []  # (layer, entries) of the runs that execute, in order
        for n in linked.main:
            name = _layer_of(labels, n)
            if not top or top[-1][0] != name:
                top.append((name, []))
            live: list[Any] = []
            self._walk((n,), top[-1][1], live)
            executed.extend((name, e) for e in live)
        # row_ops where they need the counter: .init's then .main's, in program order (it infers shapes)
        pending = [(b, info) for b, info, _ in self._pending]
        defs: dict[str, int] = defaultdict(int)
        for b, info in init + pending:
            if info.defines and b.operands[0].index is None:
                defs[b.operands[0].name] += 1
        counter = _Counter(linked, dict(defs))
        for b, info in init:
            if info.shaping:
                counter.row_ops(b)
        counted = {id(b): counter.row_ops(b) for b, _ in pending}  # a node met twice: its last count
        for b, info, g in self._pending:
            self._fill(g, b, info, counted[id(b)])
        for name, entries in executed:
            self._close(name, entries)
        meets = _meets(list(self._span_ix))
        if any(m != (i,) for i, m in enumerate(meets)):
            self.meets = meets
        return top

    def _close(self, layer: str, entries: list[Any]) -> None:
        """Layer bookkeeping of one executed run (the order layers first execute in, their array ranges)."""
        distinct = dict(zip(map(id, entries), entries, strict=True)).values()
        kinds = {g[0] for g in distinct}
        if kinds and layer not in self.layer_order:
            self.layer_order.append(layer)
        if kinds - {_CMOS} and layer not in self.arrays_order:
            self.arrays_order.append(layer)
        spans = {g[7] for g in distinct if g[7] is not None}
        if spans:
            self.arrays.setdefault(layer, set()).update(spans)

    # ------------------------------------------------------------ run
    def run(self) -> None:
        for layer, items in self.top:
            self.la, self.lc = self.shares.get(layer, (0.0, 0.0))
            self._items(items)
            self.shares[layer] = (self.la, self.lc)

    def _items(self, items: _Items) -> None:
        for it in items:
            if isinstance(it, list):
                (self._straight if self.meets is None else self._straight_meets)(it[0], it[1])
            else:
                self._loop(*it)

    def _straight(self, nodes: list[BoundOp], entries: list[Any]) -> None:  # noqa: C901 (the hot loop, whole)
        """Schedule a run of instructions, the state in locals (each array range meets only itself)."""
        units, written, read = self.units, self.written, self.read
        bar, end = self.bar, self.end
        serial, cmos, port, la, lc = self.serial, self.cmos, self.port, self.la, self.lc
        neg, K = _NEG, _K
        for n, g in zip(nodes, entries, strict=True):
            before = end
            d = g[1]
            if g[0] == _OVER:  # starts when its unit is free on its arrays and its columns' hazards are over
                ops, si, uk = n.operands, g[3], g[2]
                start = bar
                t = units.get(uk, neg)
                if t > start:
                    start = t
                for i in g[4]:  # read after write
                    t = written.get(ops[i] * K + si, neg)
                    if t > start:
                        start = t
                for i in g[5]:  # write after write, write after read
                    k = ops[i] * K + si
                    t = written.get(k, neg)
                    if t > start:
                        start = t
                    t = read.get(k, neg)
                    if t > start:
                        start = t
                e = start + d
                units[uk] = e
                for i in g[4]:
                    k = ops[i] * K + si
                    if read.get(k, neg) < e:
                        read[k] = e
                for i in g[5]:
                    written[ops[i] * K + si] = e
                if e > end:
                    end = e
                la += end - before
            else:  # a barrier: starts when everything before it has ended; everything after waits for it
                end = bar = end + d
                units.clear()
                written.clear()
                read.clear()
                if g[0] == _CMOS:
                    lc += end - before
                    cmos += d
                else:
                    la += end - before
                    port += g[6]
            serial += d
        self.bar, self.end = bar, end
        self.serial, self.cmos, self.port, self.la, self.lc = serial, cmos, port, la, lc

    def _straight_meets(self, nodes: list[BoundOp], entries: list[Any]) -> None:
        """`_straight` where array ranges partly meet: every lookup takes each range that meets the own."""
        meets = self.meets
        assert meets is not None
        units, written, read = self.units, self.written, self.read
        neg, K = _NEG, _K
        for n, g in zip(nodes, entries, strict=True):
            if g[0] != _OVER:
                self._straight([n], [g])
                continue
            ops, si, uk, d = n.operands, g[3], g[2], g[1]
            m = meets[si]
            start = max([self.bar, *(units.get(uk - si + j, neg) for j in m)])
            for i in g[4]:
                start = max([start, *(written.get(ops[i] * K + j, neg) for j in m)])
            for i in g[5]:
                start = max([start, *(written.get(ops[i] * K + j, neg) for j in m)])
                start = max([start, *(read.get(ops[i] * K + j, neg) for j in m)])
            e = start + d
            units[uk] = e
            for i in g[4]:
                k = ops[i] * K + si
                read[k] = max(read.get(k, neg), e)
            for i in g[5]:
                written[ops[i] * K + si] = e
            before = self.end
            self.end = max(self.end, e)
            self.la += self.end - before
            self.serial += d

    def _acc(self) -> tuple[float, ...]:
        return (self.serial, self.cmos, self.port, self.la, self.lc)

    def _snapshot(self) -> tuple[Any, ...]:
        """The state relative to `end`: equal snapshots of two iterations mean the loop repeats."""
        rel = self.end
        return (
            self.bar - rel,
            {k: t - rel for k, t in self.units.items()},
            {k: t - rel for k, t in self.written.items()},
            {k: t - rel for k, t in self.read.items()},
        )

    def _shift(self, by: float) -> None:
        self.bar += by
        self.end += by
        for d in (self.units, self.written, self.read):
            for k in d:
                d[k] += by

    def _loop(self, count: int, body: _Items) -> None:
        """Iterations until the state repeats (relative to the end, within 1e-12 of it), then the remaining
        ones in one step: the state shifted by their time, each accumulated duration by their share."""
        prev: tuple[Any, ...] | None = None
        prev_end, prev_acc = self.end, self._acc()
        for i in range(count):
            self._items(body)
            snap = self._snapshot()
            step = self.end - prev_end
            tol = 1e-12 * max(self.end, 1e-9)
            if prev is not None and _same(snap, prev, tol):
                left = count - 1 - i
                now = self._acc()
                self._shift(step * left)
                self.serial, self.cmos, self.port, self.la, self.lc = (
                    v + (v - p) * left for v, p in zip(now, prev_acc, strict=True)
                )
                return
            prev, prev_end, prev_acc = snap, self.end, self._acc()


def _layer_of(labels: dict[int, str], n: Node) -> str:
    loc = n.site[0] if isinstance(n, BoundOp) and n.site else n.loc
    return labels.get(loc.line, "main") if loc is not None else "main"


def _stages(arrays: dict[str, set[Span]], share: dict[str, float]) -> list[Stage]:
    """Layers grouped into stages: layers whose array ranges meet share one (union-find, program order)."""
    names = [k for k in share if k in arrays]
    parent = {k: k for k in names}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if any(x < q and p < y for x, y in arrays[a] for p, q in arrays[b]):
                parent[find(b)] = find(a)
    groups: dict[str, list[str]] = {}
    for k in names:
        groups.setdefault(find(k), []).append(k)
    return [Stage(tuple(g), sum(share[k] for k in g)) for g in groups.values()]


def timeline(linked: Linked, tech: Tech, overlap: bool = True) -> Timeline:
    """The timeline of one inference (`.main`) of a linked program; `overlap=False`: every instruction serial."""
    sch = _Scheduler(linked, tech, overlap)
    sch.run()
    shares = sch.shares
    layers = {k: shares[k][0] + shares[k][1] for k in sch.layer_order}
    arrays_share = {k: shares[k][0] for k in sch.arrays_order}
    return Timeline(
        latency_s=sch.end,
        serial_s=sch.serial,
        layers=layers,
        stages=_stages(sch.arrays, arrays_share),
        cmos_s=sch.cmos,
        port_s=sch.port,
    )
