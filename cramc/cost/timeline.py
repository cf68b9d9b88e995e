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

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cramc.cost.model import active_rows
from cramc.cost.params import OpCost, Tech
from cramc.cost.static import _Counter, _layer_labels
from cramc.isa import ast
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


def _latest(entries: dict[Span, float], lo: int, hi: int) -> float:
    """The latest time of the entries whose array range meets [lo, hi)."""
    return max((t for (a, b), t in entries.items() if a < hi and lo < b), default=-math.inf)


@dataclass
class _State:
    """The scheduler's state: times since the start of the inference."""

    bar: float = 0.0  # end of the last barrier: nothing after it starts before
    end: float = 0.0  # the latest end of any instruction so far
    units: dict[Unit, dict[Span, float]] = field(default_factory=dict)  # when each unit of an array range is free
    written: dict[int, dict[Span, float]] = field(default_factory=dict)  # column -> end of its last writer
    read: dict[int, dict[Span, float]] = field(default_factory=dict)  # column -> end of its last reader
    #: accumulated durations: ("layer", name) critical-path share, ("cmos",), ("port",), ("serial",)
    acc: dict[tuple[str, ...], float] = field(default_factory=dict)

    def barrier(self, start_at: float) -> None:
        self.bar = self.end = start_at
        self.units.clear()
        self.written.clear()
        self.read.clear()

    def snapshot(self) -> tuple[Any, ...]:
        """The state relative to `end`: equal snapshots of two iterations mean the loop repeats."""
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


def _same(a: tuple[Any, ...], b: tuple[Any, ...], tol: float) -> bool:
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
    def __init__(self, linked: Linked, tech: Tech, overlap: bool = True):
        self.costs: dict[str, OpCost] = tech.op_costs(linked.machine.rows)
        self.machine_rows = linked.machine.rows
        self.overlap = overlap
        self.rows: dict[int, int] = {}
        self.arrays: dict[str, set[Span]] = {}  # layer -> array ranges its instructions name
        counter = _Counter(linked)
        self._count(counter, linked.init)  # the counter's shapes, in the order cramc.cost.static walks
        self._count(counter, linked.main)
        self.st = _State()

    def _count(self, counter: _Counter, nodes: Iterable[Node]) -> None:
        """Row operations of every instruction (in program order: the counter infers CMOS shapes as it goes)."""
        for n in nodes:
            if isinstance(n, Loop):
                self._count(counter, n.body)
            else:
                self.rows[id(n)] = counter.row_ops(n)

    def _add(self, key: tuple[str, ...], v: float) -> None:
        self.st.acc[key] = self.st.acc.get(key, 0.0) + v

    def instr(self, b: BoundOp, layer: str) -> None:
        cost = self.costs[b.op.mnemonic]
        rows = self.rows[id(b)]
        d = cost.time(1, rows)
        if cost.per_array and b.arrays is not None:
            d += cost.array_excess(b.arrays[1] - b.arrays[0], active_rows(b, self.machine_rows), rows)
        st = self.st
        before = st.end
        if b.arrays is not None:
            self.arrays.setdefault(layer, set()).add(b.arrays)
        if self.overlap and b.op.unit in OVERLAPPING and b.arrays is not None:
            self._overlapping(b, d)
        else:  # starts when everything before it has ended; everything after waits for it
            st.barrier(st.end + d)
        self._add(("serial",), d)
        self._add(("layer", layer, "cmos" if b.op.unit is Unit.CMOS else "arrays"), st.end - before)
        if b.op.unit is Unit.CMOS:
            self._add(("cmos",), d)
        elif b.op.unit in PORT_UNITS:
            self._add(("port",), rows * cost.op_time_s)  # the chip-wide port's share (per-array limits are not shared)

    def _overlapping(self, b: BoundOp, d: float) -> None:
        st = self.st
        lo, hi = b.arrays  # type: ignore[misc]
        ri, wi = _col_access(b.op)
        reads, writes = [b.operands[i] for i in ri], [b.operands[i] for i in wi]
        unit = st.units.setdefault(b.op.unit, {})
        start = max(st.bar, _latest(unit, lo, hi))
        for c in reads:
            start = max(start, _latest(st.written.get(c, {}), lo, hi))
        for c in writes:
            start = max(start, _latest(st.written.get(c, {}), lo, hi), _latest(st.read.get(c, {}), lo, hi))
        end = start + d
        unit[(lo, hi)] = end
        for c in reads:
            e = st.read.setdefault(c, {})
            e[(lo, hi)] = max(e.get((lo, hi), -math.inf), end)
        for c in writes:
            st.written.setdefault(c, {})[(lo, hi)] = end
        st.end = max(st.end, end)

    def nodes(self, nodes: Iterable[Node], layer: str) -> None:
        for n in nodes:
            if isinstance(n, Loop):
                self.loop(n, layer)
            else:
                self.instr(n, layer)

    def loop(self, lp: Loop, layer: str) -> None:
        st = self.st
        prev: tuple[Any, ...] | None = None
        prev_end, prev_acc = st.end, dict(st.acc)
        for i in range(lp.count):
            self.nodes(lp.body, layer)
            snap = st.snapshot()
            step = st.end - prev_end
            tol = 1e-12 * max(st.end, 1e-9)
            if prev is not None and _same(snap, prev, tol):
                left = lp.count - 1 - i
                inc = {k: v - prev_acc.get(k, 0.0) for k, v in st.acc.items()}
                st.shift(step * left)
                for k, v in inc.items():
                    st.acc[k] = st.acc.get(k, 0.0) + v * left
                return
            prev, prev_end, prev_acc = snap, st.end, dict(st.acc)


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
    sections = {s.name: s for s in linked.program.items if isinstance(s, ast.Section)}
    labels = _layer_labels(sections.get("main"))
    sch = _Scheduler(linked, tech, overlap)
    for n in linked.main:
        sch.nodes((n,), _layer_of(labels, n))
    acc = sch.st.acc
    layers: dict[str, float] = {}
    arrays_share: dict[str, float] = {}
    for key, v in acc.items():
        if key[0] == "layer":
            layers[key[1]] = layers.get(key[1], 0.0) + v
            if key[2] == "arrays":
                arrays_share[key[1]] = arrays_share.get(key[1], 0.0) + v
    return Timeline(
        latency_s=sch.st.end,
        serial_s=acc.get(("serial",), 0.0),
        layers=layers,
        stages=_stages(sch.arrays, arrays_share),
        cmos_s=acc.get(("cmos",), 0.0),
        port_s=acc.get(("port",), 0.0),
    )
