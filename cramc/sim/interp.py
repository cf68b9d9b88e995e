"""The interpreter: executes a linked program, batch by batch of sample lanes, with stochastic faults.

`run` is the entry point (`cramc run`, the sweep, the tests): it checks the
inputs, plans how many samples run side by side within the memory budget
(cramc.sim.memory), and for each batch builds a `Machine` (cramc.sim.machine),
executes ``.init`` and ``.main`` and collects the outputs and `Counts`.
`execute` walks a node list: each instruction's runner (cramc.sim.ops, one
small function per opcode, grouped by unit) is built on its first execution
and called directly afterwards; long multiply-accumulate runs execute fused
(cramc.sim.fuse rewrites them, cramc.sim.ops.tree runs them) when nothing can
observe the difference.

Speed: an instruction costs a few microseconds of Python plus its ufunc calls,
so the per-instruction work is done once, and the counts that depend only on
the program (`Tally`) are added once per node list rather than per
instruction.  (Importing any module of cramc.sim.ops, as this one does, registers
every opcode implementation.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cramc.errors import UserError
from cramc.isa import counting
from cramc.isa.counting import Counts
from cramc.isa.linked import BoundOp, Linked, Loop, Node, TRef
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim.backend import Backend, get_backend
from cramc.sim.chip import CHIP_KEY, ChipDefects, apply_stuck, draw_defects
from cramc.sim.faults import FaultModel
from cramc.sim.fuse import FusedMac, fused_of
from cramc.sim.machine import Extent, Machine, extent, lane_columns, walk
from cramc.sim.memory import footprint, plan_lanes
from cramc.sim.ops.registry import runner
from cramc.sim.ops.tree import prepare_fused

#: Opcodes whose counts the instruction alone fixes (cramc.isa.counting): `Tally` counts them once per node
#: list and their runners count nothing but what they measure (the recomputes of duplicate-and-compare).
#: The others (``wr``, whose columns follow its source's shape, and the CMOS ops) evaluate the same rule
#: in their runners, with the shapes they executed.
TALLIED = frozenset(mn for mn, op in OPCODES.items() if op.unit is not Unit.CONTROL and not counting.needs_shapes(op))


@dataclass
class Tally:
    """The counts of the `TALLIED` instructions of a node list, per sample lane, by the counting rule.

    They depend on nothing but the program (loops are unrolled by their trip
    counts), so they are added once per `execute` instead of once per
    instruction: the hot runners stay free of bookkeeping, and fused and
    unfused execution count alike by construction.
    """

    counters: dict[str, int] = field(default_factory=dict)  # gate_evals, writes, ... (all but row_ops)
    ops: dict[str, list[int]] = field(default_factory=dict)  # mnemonic -> [instructions, row operations]

    @staticmethod
    def of(nodes: tuple[Node, ...], rows: int, _seen: dict[Any, dict[str, int]] | None = None) -> Tally:
        t = Tally()
        # what one instruction counts depends on its opcode and factors only: most instructions repeat them
        seen: dict[Any, dict[str, int]] = {} if _seen is None else _seen
        for node in nodes:
            if isinstance(node, Loop):
                t.add(Tally.of(node.body, rows, seen), node.count)
                continue
            mn = node.op.mnemonic
            if mn not in TALLIED:
                continue
            factors = counting.instruction_factors(node, rows)
            key = (mn, *factors.items())
            static = seen.get(key)
            if static is None:
                static = seen[key] = counting.rule(node.op).static(factors)
            for counter, v in static.items():
                if counter == "row_ops":
                    d = t.ops.setdefault(mn, [0, 0])
                    d[0] += 1
                    d[1] += v
                else:
                    t.counters[counter] = t.counters.get(counter, 0) + v
        return t

    def add(self, other: Tally, times: int) -> None:
        for counter, v in other.counters.items():
            self.counters[counter] = self.counters.get(counter, 0) + times * v
        for mn, (k, n) in other.ops.items():
            mine = self.ops.setdefault(mn, [0, 0])
            mine[0] += times * k
            mine[1] += times * n

    def count(self, c: Counts, lanes: int) -> None:
        for counter, v in self.counters.items():
            setattr(c, counter, getattr(c, counter) + lanes * v)
        for mn, (k, n) in self.ops.items():
            c.op(mn, lanes * k, lanes * n)


def execute(m: Machine, nodes: tuple[Node, ...]) -> None:
    """Run `nodes` on the machine and count them."""
    _execute(m, nodes)
    got = m._tallies.get(id(nodes))
    if got is None:
        got = m._tallies[id(nodes)] = (nodes, Tally.of(nodes, m.spec.rows))
    got[1].count(m._counts, m.lanes)


def _execute(m: Machine, nodes: tuple[Node, ...]) -> None:
    runners = m._runners
    if m.fusable:
        nodes = fused_of(m._fused, nodes)
    for node in nodes:
        # exact type tests, not isinstance: this loop runs once per instruction executed
        if type(node) is FusedMac:
            fn = runners.get(node)
            if fn is None:
                fn = runners[node] = _prepare_mac(m, node)
            fn()
        elif type(node) is Loop:
            var = node.var
            for i in range(node.count):
                m.loopvars[var] = i
                _execute(m, node.body)
            del m.loopvars[var]
        else:
            assert type(node) is BoundOp
            fn = runners.get(node)
            if fn is None:
                fn = runner(m, node)
            fn()
            if m.trace is not None:
                m.trace(node, m)


def _prepare_mac(m: Machine, f: FusedMac) -> Callable[[], None]:
    """The fused runner of a MAC run, or, when the chip has a defect in a scratch column (which the run's
    gates write: each write meets the defect), its pairs one by one, each behind the defect hook."""
    g = f.first
    assert g.arrays is not None  # a gate always has its array set
    lo, hi = g.arrays
    if m.defects is not None and any(m.defects.region(range(c, c + 1), lo, hi, *m.rows(g)).size for c in f.scratch):
        fns = [runner(m, op) for pair in f.pairs for op in pair]

        def run_pairs() -> None:
            for fn in fns:
                fn()

        return run_pairs
    return prepare_fused(m, f)


def lanes_for(
    linked: Linked, samples: int, budget: int, faults: FaultModel | None = None, inputs_bytes: int = 0
) -> int:
    """How many samples to run side by side within the memory budget (cramc.sim.memory)."""
    fp = footprint(linked, faults or FaultModel(), samples=samples, inputs_bytes=inputs_bytes)
    return plan_lanes(linked, samples, budget, fp)


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    counts: Counts
    samples: int
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    init: dict[str, int] = field(default_factory=dict)  # events of .init (weight loading), summed over lanes
    chip_seed: int = 0
    #: the chip instance: its .init events once (not per lane) and, with [defects], its defects by kind
    chip: dict[str, object] = field(default_factory=dict)


@dataclass
class Chip:
    """One chip instance: the state `.init` left on it (one lane, on the backend) and its static defects.

    Every batch of inference lanes starts from a copy of this state, so what `.init` wrote (and its
    write faults) is the same for every inference on the chip; the defects act in every batch.
    """

    seed: int
    cells: Any
    acc: Any
    tensors: dict[str, np.ndarray]
    init: Counts  # the .init events on this chip, once
    defects: ChipDefects | None

    def load(self, m: Machine) -> None:
        """Put this chip's state into a fresh machine of any number of lanes (its lanes share the chip).

        A machine with lane-invariant columns (`Machine.shared`, this chip's cells) gets its own copy of the
        per-lane columns only.  A fresh machine's state is zero, so on the host a part of the chip that is
        all zero (what `.init` leaves in the per-lane columns and accumulators, typically) is not copied."""
        cells = self.cells[: m.lane_cols] if m.shared is not None else self.cells
        for dst, src in ((m.cells, cells), (m.acc, self.acc)):
            if m.be.name != "numpy" or src.any():
                m.be.copyto(dst, src)
        for name, t in self.tensors.items():
            m.tensors[name] = np.repeat(t, m.lanes, axis=0)
        m.defects = self.defects
        if self.defects is not None:
            m._counts.faults.setdefault("defect", 0)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "chip_seed": self.seed,
            "init": {"gate_evals": self.init.gate_evals, "writes": self.init.writes, "reads": self.init.reads},
            "init_faults": dict(self.init.faults),
        }
        if self.defects is not None:
            out["defects"] = self.defects.counts
        return out


def make_chip(
    linked: Linked,
    faults: FaultModel,
    chip_seed: int,
    *,
    reference: bool = False,
    backend: Backend | None = None,
    used: Extent | None = None,
    trace: Callable[[BoundOp, Machine], None] | None = None,
    run_init: bool = True,
) -> Chip:
    """Chip `chip_seed`: its defects drawn (cramc.sim.chip), `.init` run once on one lane with its own faults
    (unless not `run_init`)."""
    used = used or extent(linked)
    rng = np.random.default_rng(np.random.SeedSequence([chip_seed, CHIP_KEY]))
    m = Machine(linked, 1, faults, rng, reference=reference, backend=backend, used=used)
    m.trace = trace
    m.defects = draw_defects(linked.machine, used.arrays, used.cols, faults.defects, chip_seed)
    if m.defects is not None:
        m._counts.faults.setdefault("defect", 0)
        apply_stuck(m)
    if run_init:
        execute(m, linked.init)
    chip = Chip(chip_seed, m.cells, m.acc, dict(m.tensors), m.counts, m.defects)
    m.close()
    return chip


def init_reads_inputs(linked: Linked) -> bool:
    """Whether `.init` reads an inference's input.  A chip's `.init` loads what its inferences share (the
    weights) once, so such a program's `.init` cannot run per chip: `run` runs it in every inference, after
    the inputs, as it ran before chips existed (its faults are then per inference, the defects still per chip)."""
    names = {s.name for s in linked.inputs}
    return any(isinstance(v, TRef) and v.name in names for b in walk(linked.init) for v in b.operands)


def _times(c: Counts, k: int) -> Counts:
    """c counted k times (a chip's .init, once in each of k lanes)."""
    out = Counts(
        {mn: {key: k * v for key, v in d.items()} for mn, d in c.per_opcode.items()},
        **{f: k * getattr(c, f) for f in ("gate_evals", "writes", "reads", "tree_sensed", "reduces", "recomputes")},
        faults={kind: k * v for kind, v in c.faults.items()},
    )
    return out


def run(
    linked: Linked,
    inputs: dict[str, np.ndarray],
    faults: FaultModel | None = None,
    seed: int = 0,
    max_memory: int | None = None,
    lanes: int | None = None,
    keep_tensors: bool = False,
    trace: Callable[[BoundOp, Machine], None] | None = None,
    progress: Callable[[int], None] | None = None,
    reference: bool = False,
    backend: Backend | str | None = None,
    chip_seed: int = 0,
) -> RunResult:
    """Run every sample of `inputs` (name -> [N, *shape]) through the program, on chip instance `chip_seed`.

    The chip (`make_chip`) is built once: its static defects (the fault model's [defects]) and `.init`,
    whose writes and faults come from `chip_seed` and stay for every inference.  Samples then run `lanes`
    at a time from a copy of that state (default: as many as fit in `max_memory` bytes, by default the
    backend's budget: 2 GiB on the host, 40% of a GPU's free memory; the budget covers everything the run
    holds, cramc.sim.memory); the per-inference faults of `.main` in each batch come from its own generator
    spawned from `seed`, so the same seed, chip seed, inputs and lanes give the same outputs, counts and
    faults, and the per-inference faults do not depend on the chip seed.

    Counts are summed over inferences, each charged its chip's `.init` (its events and faults once per lane:
    a weight written wrong is a wrong bit in every inference's state); `RunResult.init` lists them to
    subtract and `RunResult.chip` gives them once.
    `reference=True` runs gates on the plain path (see `Machine`); `backend` picks where the machine state
    lives (cramc.sim.backend: numpy, torch, torch:cuda, ...).
    """
    faults = faults or FaultModel()
    be = get_backend(backend)
    if max_memory is None:
        max_memory = be.memory_budget()
    n = _check_inputs(linked, inputs)
    fp = footprint(
        linked,
        faults,
        samples=n,
        inputs_bytes=sum(int(v.nbytes) for v in inputs.values()),
        fused=Machine.fuse_mac and trace is None,
        reference=reference,
        keep_tensors=keep_tensors,
    )
    planned = plan_lanes(linked, n, max_memory, fp)  # raises when one lane does not fit
    lanes = lanes or planned
    used = extent(linked)
    # With .init per chip and no trace, the columns .main never writes stay the chip's in every lane: the
    # batches read them from the chip's one-lane state and hold only the others per lane.
    split = not init_reads_inputs(linked) and trace is None
    lane_cols = lane_columns(linked) if split else used.cols
    # the fuse rewrite, the tallies and the product coefficients depend on the program and the chip only
    fused_nodes: dict[int, Any] = linked.memo.setdefault("fused", {})
    tallies: dict[int, Any] = linked.memo.setdefault("tallies", {})
    run_cache: dict[Any, Any] = {}
    total = Counts()
    outs: dict[str, list[np.ndarray]] = {o.name: [] for o in linked.outputs}
    kept: dict[str, list[np.ndarray]] = {}
    init_events: dict[str, int] = {}
    seeds = np.random.SeedSequence(seed)
    # The fused MAC path's matrix products are small (tens of slots by a few thousand pairs): BLAS
    # threads only spin against each other and against other runs (measured: light ResNet-50 28 s
    # on one thread, 34 s wall and 58 s CPU on two), so the simulator keeps BLAS to one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        shared = not init_reads_inputs(linked)
        chip = make_chip(linked, faults, chip_seed, reference=reference, backend=be, used=used, trace=trace,
                         run_init=shared)  # fmt: skip
        for start in range(0, n, lanes):
            stop = min(n, start + lanes)
            rng = np.random.default_rng(seeds.spawn(1)[0])
            m = Machine(linked, stop - start, faults, rng, reference=reference, backend=be, used=used,
                        shared=chip.cells if lane_cols < used.cols else None, lane_cols=lane_cols)  # fmt: skip
            m.trace = trace
            m._fused, m._tallies, m.run_cache = fused_nodes, tallies, run_cache
            chip.load(m)
            for spec in linked.inputs:
                m.tensors[spec.name] = _as_lane_input(inputs[spec.name][start:stop], spec.dtype)
            if not shared:
                m.counts = Counts(faults=dict(m._counts.faults))  # the chip's .init events are this batch's
                execute(m, linked.init)
                chip.init = m.counts
                m.counts = Counts(faults={k: 0 for k in m._counts.faults})
            c = _times(chip.init, m.lanes if shared else 1)
            for k, v in (("gate_evals", c.gate_evals), ("writes", c.writes), ("reads", c.reads)):
                init_events[k] = init_events.get(k, 0) + v
            init_events["faults"] = init_events.get("faults", 0) + c.faults_injected
            execute(m, linked.main)
            for o in linked.outputs:
                outs[o.name].append(_own(m.tensors[o.name]))
            if keep_tensors:
                for name, t in m.tensors.items():
                    kept.setdefault(name, []).append(_own(t))
            total.merge(c)
            total.merge(m.counts)
            m.close()  # before the next batch's machine: never two batches' state at once
            del m
            if progress is not None:
                progress(stop - start)
    result = {k: np.concatenate(v) for k, v in outs.items()}
    outs.clear()
    tensors = {k: np.concatenate(v) for k, v in kept.items()}
    return RunResult(result, total, n, tensors, init_events, chip_seed, chip.as_dict())


def _own(x: np.ndarray) -> np.ndarray:
    """x, or a copy when it is a view: kept past its batch, a view would keep the batch's larger array alive."""
    return x if x.base is None else x.copy()


def _as_lane_input(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype.startswith("f"):
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(x).astype(np.int64)


def _check_inputs(linked: Linked, inputs: dict[str, np.ndarray]) -> int:
    names = {s.name for s in linked.inputs}
    extra = set(inputs) - names
    if extra:
        raise UserError(
            f"input data has no program input named {', '.join(sorted(extra))} "
            f"(the program's inputs: {', '.join(sorted(names)) or 'none'})"
        )
    n: int | None = None
    for spec in linked.inputs:
        if spec.name not in inputs:
            raise UserError(f"input data lacks '{spec.name}' (shape [N, {', '.join(map(str, spec.shape))}])")
        x = inputs[spec.name]
        if tuple(x.shape[1:]) != spec.shape:
            if spec.shape[:1] == (1,) and tuple(x.shape[1:]) == spec.shape[1:]:
                x = x.reshape(x.shape[0], *spec.shape)
                inputs[spec.name] = x
            else:
                raise UserError(
                    f"input '{spec.name}' has shape {list(x.shape)}; expected [N, {', '.join(map(str, spec.shape))}]"
                )
        if spec.dtype.startswith("f") and not np.issubdtype(x.dtype, np.number):
            raise UserError(f"input '{spec.name}' must be numeric")
        if not spec.dtype.startswith("f") and not np.issubdtype(x.dtype, np.integer):
            raise UserError(f"input '{spec.name}' must hold integers ({spec.dtype})")
        if n is not None and x.shape[0] != n:
            raise UserError("inputs have different numbers of samples")
        n = x.shape[0]
    if n is None:
        n = 1
    return n
