"""The bit-level interpreter: executes a linked program with stochastic faults.

State, per sample lane s (one inference each):
- ``bits[a, c, s, w]``: cell rows bit-packed along the rows of array a,
  column c (row r is bit r % 64 of word r // 64), uint64;
- ``acc[a, k, s]``: the exact int64 accumulators beside each array;
- ``tensors``: the CMOS buffers, each with a leading sample axis.

Every row-parallel gate is one vector operation over all arrays of its set and
all sample lanes.  Each opcode has one small function registered with
``@impl``; gates share one function driven by the opcode table's logic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cramc.errors import UserError
from cramc.isa.opcodes import OPCODES, Unit
from cramc.isa.verifier import BoundOp, Linked, Loop, Node, TRef
from cramc.sim.faults import FaultModel, flip_bits

ImplFn = Callable[["Machine", BoundOp], None]
IMPLS: dict[str, ImplFn] = {}


def impl(*mnemonics: str) -> Callable[[ImplFn], ImplFn]:
    def register(fn: ImplFn) -> ImplFn:
        for mn in mnemonics:
            if mn not in OPCODES:
                raise AssertionError(f"@impl for unknown opcode {mn}")
            IMPLS[mn] = fn
        return fn

    return register


@dataclass
class Counts:
    """Row-level event counts, summed over sample lanes."""

    per_opcode: dict[str, dict[str, int]] = field(default_factory=dict)
    gate_evals: int = 0
    writes: int = 0  # host-data bits written (wr, fill)
    reads: int = 0  # bits sensed by rd
    tree_sensed: int = 0  # bits sensed by the adder trees
    reduces: int = 0  # adder-tree operations (one per array per tadd/tsub)
    faults: dict[str, int] = field(default_factory=lambda: {"gate": 0, "write": 0, "read": 0, "tree": 0})

    def op(self, mnemonic: str, instrs: int, rows: int) -> None:
        d = self.per_opcode.setdefault(mnemonic, {"instructions": 0, "row_ops": 0})
        d["instructions"] += instrs
        d["row_ops"] += rows

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
        for k, v in other.faults.items():
            self.faults[k] += v

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())


@functools.lru_cache(maxsize=4096)
def row_mask(r0: int, r1: int, words: int) -> np.ndarray:
    full = np.zeros(words * 64, dtype=bool)
    full[r0:r1] = True
    m = np.packbits(full, bitorder="little").view(np.uint64)
    m.flags.writeable = False
    return m


class Machine:
    """The state of one batch of sample lanes running one linked program."""

    def __init__(self, linked: Linked, lanes: int, faults: FaultModel, rng: np.random.Generator):
        spec = linked.machine
        self.linked = linked
        self.spec = spec
        self.lanes = lanes
        self.words = spec.words
        self.bits = np.zeros((spec.arrays, spec.cols, lanes, spec.words), dtype=np.uint64)
        self.acc = np.zeros((spec.arrays, spec.accs, lanes), dtype=np.int64)
        self.tensors: dict[str, np.ndarray] = {}
        self.faults = faults
        self.rng = rng
        self.counts = Counts()
        self.loopvars: dict[str, int] = {}
        self.trace: Callable[[BoundOp, Machine], None] | None = None

    # ---- helpers shared by the opcode functions
    def rows(self, b: BoundOp) -> tuple[int, int]:
        return b.rows if b.rows is not None else (0, self.spec.rows)

    def store(self, b: BoundOp, ref: TRef, value: np.ndarray) -> None:
        if ref.index is None:
            self.tensors[ref.name] = value
            return
        i = self.loopvars[ref.index] if isinstance(ref.index, str) else ref.index
        cur = self.tensors.get(ref.name)
        if cur is None:
            lead = self.linked.tensor_shapes[ref.name][0][0]
            cur = np.zeros((self.lanes, lead, *value.shape[1:]), dtype=value.dtype)
            self.tensors[ref.name] = cur
        cur[:, i] = value

    def load(self, src: TRef | np.ndarray) -> np.ndarray:
        if isinstance(src, np.ndarray):
            return src[None]
        t = self.tensors[src.name]
        if src.index is None:
            return t
        i = self.loopvars[src.index] if isinstance(src.index, str) else src.index
        return t[:, i]

    def put_column(self, b: BoundOp, cols: slice, new: np.ndarray) -> None:
        """Write words [nA, ncols, lanes, W] into the active rows of the given columns."""
        lo, hi = b.arrays  # type: ignore[misc]
        r0, r1 = self.rows(b)
        dst = self.bits[lo:hi, cols]
        if r0 == 0 and r1 >= self.spec.rows:
            dst[...] = new
        else:
            m = row_mask(r0, r1, self.words)
            dst[...] = (new & m) | (dst & ~m)

    def flip(self, words: np.ndarray, b: BoundOp, rate: Any, kind: str) -> None:
        """Inject faults into freshly computed words [..., W] (active rows only)."""
        if rate.zero:
            return
        r0, r1 = self.rows(b)
        flat = words.reshape(-1, self.words)
        self.counts.faults[kind] += flip_bits(flat, r0, r1, rate, self.rng)


# ---------------------------------------------------------------- CRAM gates
@impl(*(op.mnemonic for op in OPCODES.values() if op.unit is Unit.GATE))
def gate(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, *srcs = b.operands
    res = b.op.logic(*(m.bits[lo:hi, c] for c in srcs))  # type: ignore[misc]
    m.flip(res, b, m.faults.gate(b.op.mnemonic), "gate")
    m.put_column(b, slice(dst, dst + 1), res[:, None])
    r0, r1 = m.rows(b)
    n = (hi - lo) * (r1 - r0) * m.lanes
    m.counts.gate_evals += n
    m.counts.op(b.op.mnemonic, m.lanes, n)


# ---------------------------------------------------------------- data movement
def _pack_rows(planes: np.ndarray, r0: int, words: int) -> np.ndarray:
    """bool [..., nrows] placed at row r0 -> uint64 [..., words]."""
    full = np.zeros((*planes.shape[:-1], words * 64), dtype=bool)
    full[..., r0 : r0 + planes.shape[-1]] = planes
    return np.packbits(full, axis=-1, bitorder="little").view(np.uint64)


def _unpack_rows(words: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """uint64 [..., W] -> uint8 bits [..., r1 - r0]."""
    by = np.ascontiguousarray(words).view(np.uint8)
    return np.unpackbits(by, axis=-1, bitorder="little")[..., r0:r1]


@impl("fill")
def fill(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, value = b.operands
    res = np.full((hi - lo, 1, m.lanes, m.words), np.uint64(0xFFFFFFFFFFFFFFFF if value else 0), dtype=np.uint64)
    m.flip(res, b, m.faults.write, "write")
    m.put_column(b, slice(dst, dst + 1), res)
    r0, r1 = m.rows(b)
    n = (hi - lo) * (r1 - r0) * m.lanes
    m.counts.writes += n
    m.counts.op("fill", m.lanes, n)


@impl("wr")
def wr(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, src = b.operands
    bits = b.attrs["bits"]
    val = m.load(src).astype(np.int64, copy=False)  # [S|1, n|1, nrows(, F)]
    if val.ndim == 3:
        val = val[..., None]
    nrows, nf = val.shape[2], val.shape[3]
    shifts = np.arange(bits, dtype=np.int64)
    planes = ((val[..., None] >> shifts) & 1).astype(bool)  # [S, n, nrows, F, bits]
    planes = planes.reshape(*planes.shape[:3], nf * bits).transpose(1, 3, 0, 2)  # [n, F*bits, S, nrows]
    r0, r1 = m.rows(b)
    words = _pack_rows(planes, r0, m.words)
    words = np.ascontiguousarray(np.broadcast_to(words, (hi - lo, nf * bits, m.lanes, m.words)))
    m.flip(words, b, m.faults.write, "write")
    m.put_column(b, slice(dst, dst + nf * bits), words)
    n = (hi - lo) * nrows * nf * bits * m.lanes
    m.counts.writes += n
    m.counts.op("wr", m.lanes, n)


@impl("rd")
def rd(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, src = b.operands
    bits = b.attrs["bits"]
    fields = b.attrs.get("fields", 0)
    nf = max(fields, 1)
    r0, r1 = m.rows(b)
    words = m.bits[lo:hi, src : src + nf * bits].copy()  # [nA, F*bits, S, W]
    m.flip(words, b, m.faults.read, "read")
    planes = _unpack_rows(words, r0, r1).astype(np.int64)  # [nA, F*bits, S, nrows]
    planes = planes.reshape(hi - lo, nf, bits, m.lanes, r1 - r0)
    weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
    if b.attrs.get("signed", 1):
        weights[-1] = -weights[-1]
    vals = np.tensordot(planes, weights, axes=([2], [0]))  # [nA, F, S, nrows]
    vals = vals.transpose(2, 0, 3, 1)  # [S, nA, nrows, F]
    if not fields:
        vals = vals[..., 0]
    m.store(b, dst, np.ascontiguousarray(vals))
    n = (hi - lo) * (r1 - r0) * nf * bits * m.lanes
    m.counts.reads += n
    m.counts.op("rd", m.lanes, n)


# ---------------------------------------------------------------- adder tree
@impl("tadd", "tsub")
def tree(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    slot, col, shift = b.operands
    r0, r1 = m.rows(b)
    words = m.bits[lo:hi, col]  # [nA, S, W]
    if not m.faults.read.zero:
        words = words.copy()
        m.flip(words, b, m.faults.read, "read")
    masked = words & row_mask(r0, r1, m.words)
    count = np.bitwise_count(masked).sum(axis=-1, dtype=np.int64)  # [nA, S]
    if m.faults.tree:
        width = max(int(r1 - r0).bit_length(), 1)
        from cramc.sim.faults import Rate

        cw = count.astype(np.uint64).reshape(-1, 1)
        m.counts.faults["tree"] += flip_bits(cw, 0, width, Rate(m.faults.tree, m.faults.tree), m.rng)
        count = cw.reshape(count.shape).astype(np.int64)
    if b.op.mnemonic == "tadd":
        m.acc[lo:hi, slot] += count << shift
    else:
        m.acc[lo:hi, slot] -= count << shift
    n = (hi - lo) * m.lanes
    m.counts.reduces += n
    m.counts.tree_sensed += n * (r1 - r0)
    m.counts.op(b.op.mnemonic, m.lanes, n * (r1 - r0))


@impl("aclr")
def aclr(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    s0, s1 = b.operands[0]
    m.acc[lo:hi, s0:s1] = 0
    m.counts.op("aclr", m.lanes, (hi - lo) * (s1 - s0) * m.lanes)


@impl("ard")
def ard(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, (s0, s1) = b.operands
    m.store(b, dst, np.ascontiguousarray(m.acc[lo:hi, s0:s1].transpose(2, 0, 1)))
    m.counts.op("ard", m.lanes, (hi - lo) * (s1 - s0) * m.lanes)


# ---------------------------------------------------------------- CMOS vector unit
@impl(*(op.mnemonic for op in OPCODES.values() if op.unit is Unit.CMOS))
def cmos_op(m: Machine, b: BoundOp) -> None:
    dst, *srcs = b.operands
    res = b.op.cmos([m.load(s) for s in srcs], b.attrs)  # type: ignore[misc]
    if res.shape[0] != m.lanes:
        res = np.ascontiguousarray(np.broadcast_to(res, (m.lanes, *res.shape[1:])))
    m.store(b, dst, res)
    m.counts.op(b.op.mnemonic, m.lanes, int(res.size))


# ---------------------------------------------------------------- execution
def execute(m: Machine, nodes: tuple[Node, ...]) -> None:
    for node in nodes:
        if isinstance(node, Loop):
            for i in range(node.count):
                m.loopvars[node.var] = i
                execute(m, node.body)
            del m.loopvars[node.var]
        else:
            IMPLS[node.op.mnemonic](m, node)
            if m.trace is not None:
                m.trace(node, m)


def check_memory(linked: Linked, lanes: int, budget: int) -> None:
    need = linked.machine.state_bytes * lanes
    if need > budget:
        raise UserError(
            f"the chip state needs {need / 2**30:.2f} GiB for {lanes} sample lane(s), more than the "
            f"memory budget of {budget / 2**30:.2f} GiB (--max-memory)"
        )


def lanes_for(linked: Linked, samples: int, budget: int) -> int:
    """How many samples to run side by side within the memory budget."""
    per = max(linked.machine.state_bytes, 1)
    return max(1, min(samples, budget // per, 1024))


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    counts: Counts
    samples: int
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def run(
    linked: Linked,
    inputs: dict[str, np.ndarray],
    faults: FaultModel | None = None,
    seed: int = 0,
    max_memory: int = 2 << 30,
    lanes: int | None = None,
    keep_tensors: bool = False,
    trace: Callable[[BoundOp, Machine], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Run every sample of `inputs` (name -> [N, *shape]) through the program."""
    faults = faults or FaultModel()
    n = _check_inputs(linked, inputs)
    lanes = lanes or lanes_for(linked, n, max_memory)
    check_memory(linked, 1, max_memory)
    total = Counts()
    outs: dict[str, list[np.ndarray]] = {o.name: [] for o in linked.outputs}
    kept: dict[str, list[np.ndarray]] = {}
    seeds = np.random.SeedSequence(seed)
    for start in range(0, n, lanes):
        stop = min(n, start + lanes)
        rng = np.random.default_rng(seeds.spawn(1)[0])
        m = Machine(linked, stop - start, faults, rng)
        m.trace = trace
        for spec in linked.inputs:
            m.tensors[spec.name] = _as_lane_input(inputs[spec.name][start:stop], spec.dtype)
        execute(m, linked.init)
        execute(m, linked.main)
        for o in linked.outputs:
            outs[o.name].append(m.tensors[o.name])
        if keep_tensors:
            for k, v in m.tensors.items():
                kept.setdefault(k, []).append(v)
        total.merge(m.counts)
        if progress is not None:
            progress(stop - start)
    result = {k: np.concatenate(v) for k, v in outs.items()}
    return RunResult(result, total, n, {k: np.concatenate(v) for k, v in kept.items()})


def _as_lane_input(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype.startswith("f"):
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(x).astype(np.int64)


def _check_inputs(linked: Linked, inputs: dict[str, np.ndarray]) -> int:
    names = {s.name for s in linked.inputs}
    extra = set(inputs) - names
    if extra:
        raise UserError(f"input data has no program input named {', '.join(sorted(extra))} "
                        f"(the program's inputs: {', '.join(sorted(names)) or 'none'})")
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
