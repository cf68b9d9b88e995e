"""What a simulator run holds in memory, so that ``--max-memory`` bounds the process and not only the cells.

A batch of S sample lanes holds, per lane:

- the **state**: the cells and accumulators of the arrays, columns and slots the
  program uses (cramc.sim.machine.extent; the machine allocates no more than that);
- the **tensors**: every CMOS tensor of the program, kept until the batch ends;
- the **temporaries** of the instruction that needs the most while it runs (the
  fused MAC's stacked blocks, a write's bit planes, a read's unpacked bits, a
  CMOS operation's intermediates, ...), and the scratch buffers the prepared
  gates keep.

Beside the lanes, whatever their number, it holds the inputs and outputs of all
samples, the program's data constants, the fault sampler's buffers and the
prepared runner of every instruction, and the chip: the one-lane state `.init` left, which every
batch starts from, and its defect tables (`Footprint.fixed`).  `plan_lanes` picks the lane count
that fits all of it in a budget.  The estimates below sit next to the allocations they describe in
cramc/sim/machine.py and cramc/sim/ops: tests/sim/test_memory.py measures every
instruction's temporaries on the shipped programs against them, and the peak
resident memory of ``cramc run`` against the budget.

What is not in the budget: the Python interpreter with its modules and the
parsed program text (about 100 MB; --max-memory bounds the process to within
0.5 GB).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cramc.errors import UserError
from cramc.isa.linked import BoundOp, Linked, Loop, Node, TRef
from cramc.isa.opcodes import OPCODES, Kind, Opcode, Unit
from cramc.sim.backend import NUMPY
from cramc.sim.chip import DEFECT_BYTES, expected_defects
from cramc.sim.faults import CHUNK_CANDIDATES, STREAM_BATCH, WINDOW_WORDS, FaultModel
from cramc.sim.fuse import MIN_PAIRS, FusedMac, fused_of
from cramc.sim.machine import extent, source_shape, walk
from cramc.sim.ops.gates import kernels
from cramc.sim.ops.tree import FUSED_TEMP_BLOCKS, chunk_pairs

#: The most lanes a batch runs side by side.
MAX_LANES = 1024
WORD = 8  # bytes per cell word and per int64
#: A CMOS operation's intermediates, in multiples of its operands and result (numpy keeps at most a couple
#: of full-size temporaries alive per expression; measured on the shipped models by tests/sim/test_memory.py).
CMOS_TEMP = 3
#: Bytes per candidate fault the host sampler keeps (position, mask, uniform) and a region's injection
#: materialises at once (positions, masks, filters), at most CHUNK_CANDIDATES (+10%) of them.
STREAM_BYTES = 24 * (CHUNK_CANDIDATES + CHUNK_CANDIDATES // 10 + STREAM_BATCH) + WORD * WINDOW_WORDS
INJECT_BYTES = 64 * (CHUNK_CANDIDATES + CHUNK_CANDIDATES // 10)
#: A prepared runner per instruction (its closure, the views of its operand columns, masks): measured about
#: 1.5 KiB on the CRAM-only digits CNN, whose 20,000 instructions are nearly all gates over row ranges.
RUNNER_BYTES = 2048
#: The run's own bookkeeping (generators, counts, tallies, the fused plan): measured about 100 KB.
RUN_BYTES = 256 << 10


@dataclass(frozen=True)
class Footprint:
    """Bytes a run holds: per sample lane, and fixed (whatever the lane count)."""

    state: int  # cells and accumulators
    tensors: int  # CMOS tensors
    temporaries: int  # the largest instruction's temporaries, and the prepared gates' scratch buffers
    fixed: int  # inputs, outputs, data constants, fault sampler
    worst: str  # the instruction with the largest temporaries (for messages)

    @property
    def lane(self) -> int:
        return self.state + self.tensors + self.temporaries

    def need(self, lanes: int) -> int:
        return self.fixed + lanes * self.lane


@dataclass(frozen=True)
class Sizes:
    """What the estimates need to know about the machine and the run."""

    linked: Linked
    faults: FaultModel
    words: int  # words per column
    rows: int
    reference: bool = False  # gates run the plain path

    def nw(self, b: BoundOp) -> int:
        r0, r1 = b.rows if b.rows is not None else (0, self.rows)
        return ((r1 + 63) >> 6) - (r0 >> 6)

    def nrows(self, b: BoundOp) -> int:
        r0, r1 = b.rows if b.rows is not None else (0, self.rows)
        return r1 - r0

    def narrays(self, b: BoundOp) -> int:
        lo, hi = b.arrays  # type: ignore[misc]
        return hi - lo

    def tensor_bytes(self, ref: Any) -> int:
        """Per-lane bytes of a tensor operand (0 for a data constant: it is not per lane)."""
        if not isinstance(ref, TRef):
            return 0
        shape, is_int = self.linked.tensor_shapes[ref.name]
        if ref.index is not None:
            shape = shape[1:]
        return math.prod(shape) * (WORD if is_int else 4)


#: mnemonic -> (sizes, instruction) -> (bytes per lane, fixed bytes) of its temporaries
TempFn = Callable[[Sizes, BoundOp], tuple[int, int]]
TEMPORARIES: dict[str, TempFn] = {}


def temporaries(*mnemonics: str) -> Callable[[TempFn], TempFn]:
    """Files an estimate of the temporaries of the named opcodes (every opcode has one; a test checks it)."""

    def register(fn: TempFn) -> TempFn:
        for mn in mnemonics:
            if mn not in OPCODES:
                raise AssertionError(f"@temporaries for unknown opcode {mn}")
            TEMPORARIES[mn] = fn
        return fn

    return register


@temporaries(*(mn for mn, op in OPCODES.items() if op.unit is Unit.GATE))
def _gate(z: Sizes, b: BoundOp) -> tuple[int, int]:
    # Prepared kernels write in place (their scratch buffers are counted with the pools); the plain path
    # (reference runs) evaluates the table's logic into fresh arrays: up to ten full column blocks for maj5.
    # Both: the injected region once more (the device sampler's flip mask) and a row-range merge.
    block = z.narrays(b) * z.words * WORD
    return (12 if z.reference else 2) * block, 0


@temporaries("fill")
def _fill(z: Sizes, b: BoundOp) -> tuple[int, int]:
    block = z.narrays(b) * z.words * WORD
    return 3 * block, 0  # the filled block, the injected region, the edge-word merges


@temporaries("wr")
def _wr(z: Sizes, b: BoundOp) -> tuple[int, int]:
    src = b.operands[1]
    shape = source_shape(z.linked, src)
    n, nrows = shape[0], shape[1]
    nf = shape[2] if len(shape) == 3 else 1
    planes = nf * b.attrs["bits"]  # columns written
    values = n * nrows * nf
    # the source as int64 (a copy of an indexed or narrower source), one byte per bit twice (unpacked and
    # transposed, + the 8-row alignment), the packed words, repeated and sent to the backend
    build = WORD * values + 3 * values * b.attrs["bits"] + 3 * planes * n * z.words * WORD
    nA = z.narrays(b)
    # with write faults: the full-shape copy and the injected region; the edge-word merges
    spread = (2 * planes * nA * z.words * WORD if not z.faults.write.zero else 0) + 4 * planes * nA * WORD
    if isinstance(src, TRef):
        return build + 2 * planes * nA * z.words * WORD + spread, 0
    return spread, build  # a data constant: one copy for every lane


@temporaries("rd")
def _rd(z: Sizes, b: BoundOp) -> tuple[int, int]:
    fields = max(b.attrs.get("fields", 0), 1)
    planes = fields * b.attrs["bits"]
    nA, nw, nrows = z.narrays(b), z.nw(b), z.nrows(b)
    # the sensed words (and their host copy), one byte per bit, the int64 values, a term and the result
    return planes * nA * nw * (2 * WORD + 64) + 3 * fields * nA * nrows * WORD, 0


@temporaries("tadd", "tsub", "tvadd", "tvsub", "tdadd", "tdsub")
def _tree(z: Sizes, b: BoundOp) -> tuple[int, int]:
    copies = sum(1 for o in b.op.operands if o.kind is Kind.COL)
    nA, nw = z.narrays(b), z.nw(b)
    # the sensed copies, the vote or the recompute, the mask, the popcount (SWAR on torch: a few int64 blocks)
    words = (copies + 8) * nA * nw * WORD
    # tree faults: the counts as words and the candidate faults among their bits
    tree = nA * (4 * WORD + int(64 * z.faults.tree * 24 * 1.1) + 64) if z.faults.tree else 0
    return words + tree, 0


@temporaries("aclr")
def _aclr(z: Sizes, b: BoundOp) -> tuple[int, int]:
    return 0, 0


@temporaries("ard")
def _ard(z: Sizes, b: BoundOp) -> tuple[int, int]:
    s0, s1 = b.operands[1]
    return 3 * z.narrays(b) * (s1 - s0) * WORD, 0  # the host copy, the transposed result


@temporaries("call")
def _call(z: Sizes, b: BoundOp) -> tuple[int, int]:
    return 0, 0  # inlined by the linker


WINDOWED = frozenset(("maxpool", "avgpool", "im2col"))


@temporaries(*(mn for mn, op in OPCODES.items() if op.unit is Unit.CMOS))
def _cmos(z: Sizes, b: BoundOp) -> tuple[int, int]:
    dst, *srcs = b.operands
    ins = sum(z.tensor_bytes(s) for s in srcs)
    consts = sum(int(s.nbytes) for s in srcs if isinstance(s, np.ndarray))
    shape, is_int = z.linked.tensor_shapes[dst.name]
    if dst.index is not None:
        shape = shape[1:]
    out = math.prod(shape) * WORD  # before the final conversion a result may be int64 or float64
    extra = 0
    if b.op.mnemonic in WINDOWED:
        # the padded input and the stacked windows: kernel-size copies of the output (im2col's output
        # already is the windows)
        kk = math.prod(b.attrs.get("kernel", [1, 1]))
        extra = 2 * ins + (1 if b.op.mnemonic == "im2col" else kk) * out
    return CMOS_TEMP * (ins + out) + extra, CMOS_TEMP * consts


#: The estimates that read only an instruction's opcode, arrays and rows (so do `gate_scratch` and the
#: fault streams): the footprint counts each (opcode, arrays, rows) once.  Their opcodes' operands are
#: columns, slots and integers (checked below), so they hold no data constants either.
BY_SET = (_gate, _fill, _tree, _aclr, _call)
_PLAIN = (Kind.COL, Kind.ACC, Kind.ACCS, Kind.INT, Kind.MICRO)
for _mn, _fn in TEMPORARIES.items():
    _op = OPCODES[_mn]
    if _fn in BY_SET and (any(o.kind not in _PLAIN for o in _op.operands) or any(a.name != "rows" for a in _op.attrs)):
        raise AssertionError(f"{_mn}: an operand or attribute that may be a data constant, counted per set")


def fused_temporaries(z: Sizes, f: FusedMac) -> int:
    """Bytes per lane a fused run's chunk holds at once (see cramc.sim.ops.tree)."""
    g = f.first
    nA, nw = z.narrays(g), z.nw(g)
    k = min(len(f.pairs), chunk_pairs(nA, nw))
    return FUSED_TEMP_BLOCKS * k * nA * nw * WORD


def kernel_temps() -> dict[str, int]:
    """Scratch buffers each prepared gate kernel needs (cramc.sim.ops.gates.kernels)."""
    return {mn: k[1] for mn, k in kernels(NUMPY).items()}


def gate_scratch(z: Sizes, b: BoundOp, kernel_temps: dict[str, int]) -> tuple[tuple[int, int], int] | None:
    """The scratch buffers a prepared gate keeps: (key, count), key = (arrays, words) of each buffer
    (per lane); the machine keeps one pool per key, as many buffers as the most any gate takes."""
    mn = b.op.mnemonic
    if mn not in kernel_temps:
        return None
    full = b.rows is None or (b.rows[0] == 0 and b.rows[1] >= z.rows)
    nA = z.narrays(b)
    return ((nA, z.words), kernel_temps[mn]) if full else ((nA, z.nw(b)), 1 + kernel_temps[mn])


def sampler_bytes(linked: Linked, faults: FaultModel) -> int:
    """The host fault sampler's buffers: each stream's, and one region's injection at a time."""
    return _sampler_bytes({id(b.op): b.op for b in walk((*linked.init, *linked.main))}.values(), faults)


def _sampler_bytes(ops: Iterable[Opcode], faults: FaultModel) -> int:
    """`sampler_bytes` of a program that uses the opcodes `ops`."""
    streams = _stream_count(ops, faults)
    return streams * STREAM_BYTES + (INJECT_BYTES if streams else 0)


def _stream_count(ops: Iterable[Opcode], faults: FaultModel) -> int:
    """How many fault streams the run can open (one per fault kind and distinct rate in use)."""
    rates: set[tuple[str, float]] = set()
    for op in ops:
        u = op.unit
        if u is Unit.GATE and not faults.gate(op.mnemonic).zero:
            rates.add(("gate", faults.gate(op.mnemonic).pmax))
        elif u is Unit.WRITE and not faults.write.zero:
            rates.add(("write", faults.write.pmax))
        elif u in (Unit.READ, Unit.TREE) and not faults.read.zero:
            rates.add(("read", faults.read.pmax))
    return len(rates)


def footprint(
    linked: Linked,
    faults: FaultModel,
    *,
    samples: int = 1,
    inputs_bytes: int = 0,
    fused: bool = True,
    reference: bool = False,
    keep_tensors: bool = False,
) -> Footprint:
    """The memory a run of `samples` samples of `linked` holds (see the module docstring).

    `inputs_bytes`: the caller's input arrays; `fused`: multiply-accumulate runs may fuse; `reference`:
    gates run the plain path.  What depends on the program, the fault model and the two flags alone (a walk
    of every instruction) is computed once (`Linked.memo`).
    """
    key = ("footprint", repr(faults), fused, reference)
    got = linked.memo.get(key)
    if got is None:
        got = linked.memo[key] = _static_footprint(linked, faults, fused, reference)
    state, tensors, temporaries, worst_at, fixed_static = got
    outputs = sum(math.prod(o.shape) * WORD for o in linked.outputs)
    kept = samples * tensors if keep_tensors else 0
    fixed = inputs_bytes + 2 * samples * outputs + kept + fixed_static
    return Footprint(state, tensors, temporaries, fixed, worst_at)


def _static_footprint(
    linked: Linked, faults: FaultModel, fused: bool, reference: bool
) -> tuple[int, int, int, str, int]:
    """(state, tensors, temporaries, worst_at, the fixed bytes that do not depend on the samples)."""
    temps = kernel_temps()
    spec = linked.machine
    ext = extent(linked)
    state = ext.cols * ext.arrays * spec.words * WORD + ext.arrays * ext.accs * WORD
    tensors = sum(math.prod(shape) * (WORD if is_int else 4) for shape, is_int in linked.tensor_shapes.values())
    z = Sizes(linked, faults, spec.words, spec.rows, reference)
    worst, worst_at = 0, ""
    fixed_temp = 0
    pools: dict[tuple[int, int], int] = {}
    data: dict[int, int] = {}  # id -> bytes of each data constant (each array once)
    ops: dict[int, Opcode] = {}  # the opcodes the program uses
    seen: set[tuple[int, tuple[int, int] | None, tuple[int, int] | None]] = set()
    instrs = _instructions((*linked.init, *linked.main))
    for b in instrs:
        op = b.op
        temp = TEMPORARIES[op.mnemonic]
        if temp in BY_SET:
            # what these count depends on the opcode, arrays and rows alone: an instruction like one before it
            # adds nothing (the maxima are reached, and the worst is the first that reached it)
            key = (id(op), b.arrays, b.rows)
            if key in seen:
                continue
            seen.add(key)
        else:
            for v in b.operands:
                if isinstance(v, np.ndarray):
                    data[id(v)] = int(v.nbytes)
        for v in b.attrs.values():
            if isinstance(v, np.ndarray):
                data[id(v)] = int(v.nbytes)
        ops[id(op)] = op
        per, fix = temp(z, b)
        if op.unit is Unit.GATE and not reference:
            got = gate_scratch(z, b, temps)
            if got is not None:
                key2, k = got
                pools[key2] = max(pools.get(key2, 0), k)
        if per > worst:
            worst, worst_at = per, b.text or op.mnemonic
        fixed_temp = max(fixed_temp, fix)
    if fused and not reference:
        for f in _program_fused_runs(linked):
            per = fused_temporaries(z, f)
            if per > worst:
                worst, worst_at = per, f"a fused run of {len(f.pairs)} x ({f.first.text or f.first.op.mnemonic} ...)"
    scratch = sum(k * nA * nw * WORD for (nA, nw), k in pools.items())
    sampler = _sampler_bytes(ops.values(), faults)
    runners = RUNNER_BYTES * len(instrs)
    # the chip: the state .init left (one lane, copied into every batch) and its defect tables (cramc.sim.chip)
    chip = state + tensors + int(DEFECT_BYTES * expected_defects(spec, ext.arrays, faults.defects))
    return (
        state,
        tensors,
        worst + scratch,
        worst_at,
        sum(data.values()) + sampler + fixed_temp + runners + RUN_BYTES + chip,
    )


def _instructions(nodes: tuple[Node, ...], out: list[BoundOp] | None = None) -> list[BoundOp]:
    """`walk(nodes)` as a list."""
    if out is None:
        out = []
    for n in nodes:
        if isinstance(n, Loop):
            _instructions(n.body, out)
        else:
            out.append(n)
    return out


def _program_fused_runs(linked: Linked) -> Iterator[FusedMac]:
    """The fused runs of .init and .main as the interpreter executes them: the same rewrite, shared with it
    (`Linked.memo["fused"]`, keyed as cramc.sim.interp keys it)."""
    memo = linked.memo.setdefault("fused", {})
    for nodes in (linked.init, linked.main):
        yield from _fused_runs(fused_of(memo, nodes))


def _fused_runs(nodes: tuple[Node, ...]) -> Iterator[FusedMac]:
    """The runs of an already fused body (fuse rewrites loop bodies too)."""
    for n in nodes:
        if isinstance(n, FusedMac):
            if len(n.pairs) >= MIN_PAIRS:
                yield n
        elif isinstance(n, Loop):
            yield from _fused_runs(n.body)


def plan_lanes(linked: Linked, samples: int, budget: int, fp: Footprint) -> int:
    """The most lanes (at most `samples` and MAX_LANES) whose footprint fits `budget`; an error when one does not.

    Never more lanes than the whole nominal chip's cells allow in the budget either (the rule before
    the footprint counted everything): a seeded run whose lanes fitted then keeps its lane count, and
    so its faults.
    """
    if fp.need(1) > budget:
        gib = 2**30
        raise UserError(
            f"one sample lane needs {fp.lane / gib:.3f} GiB (state {fp.state / gib:.3f}, tensors "
            f"{fp.tensors / gib:.3f}, temporaries {fp.temporaries / gib:.3f} GiB, the most for {fp.worst}) and "
            f"the run {fp.fixed / gib:.3f} GiB besides (inputs, outputs, data, fault sampler), more than the "
            f"memory budget of {budget / gib:.2f} GiB (--max-memory)"
        )
    nominal = budget // max(linked.machine.state_bytes, 1)
    return int(max(1, min(samples, MAX_LANES, nominal, (budget - fp.fixed) // max(fp.lane, 1))))
