"""The bit-level interpreter: executes a linked program with stochastic faults.

State, per sample lane s (one inference each):
- ``cells[c, a, s, w]``: cell rows bit-packed along the rows of array a,
  column c (row r is bit r % 64 of word r // 64), uint64; ``bits`` is the
  same memory as ``[a, c, s, w]``;
- ``acc[a, k, s]``: the exact int64 accumulators beside each array;
- ``tensors``: the CMOS buffers, each with a leading sample axis.

``cells`` and ``acc`` are arrays of the machine's backend (cramc.sim.backend:
numpy, or torch on a GPU); the CMOS buffers are always numpy arrays on the
host.  Every opcode function below is written once, for every backend.

Every row-parallel gate is a few vector operations over all arrays of its set
and all sample lanes.  Each opcode has one small function registered with
``@impl``; gates share one function driven by the opcode table's logic.

Speed: an instruction costs a few microseconds of Python plus its ufunc
calls, so the per-instruction work is done once.  Opcodes registered with
``@prepare`` build a runner per instruction on its first execution (views of
the operand columns, row masks, the kernel, the fault injector), and
`execute` calls runners directly.  Gates write into the destination column
with ``out=`` (no temporaries) when every row is active.  Faults are drawn
from per-kind Bernoulli streams (cramc.sim.faults) and counted lazily: read
``Machine.counts``, which brings them up to date.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cramc.errors import UserError
from cramc.isa.linked import BoundOp, Linked, Loop, Node, TRef
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim.backend import Backend, get_backend
from cramc.sim.faults import FaultModel, Rate, flip_bits, row_mask_words
from cramc.sim.fuse import FusedMac, fuse, prepare_fused
from cramc.sim.memory import Extent, extent, footprint, plan_lanes

ImplFn = Callable[["Machine", BoundOp], None]
IMPLS: dict[str, ImplFn] = {}


def _registrar(table: dict[str, Any], what: str) -> Callable[..., Callable[[Any], Any]]:
    """A decorator factory that files a function under opcode mnemonics of the opcode table."""

    def decorator(*mnemonics: str) -> Callable[[Any], Any]:
        def register(fn: Any) -> Any:
            for mn in mnemonics:
                if mn not in OPCODES:
                    raise AssertionError(f"@{what} for unknown opcode {mn}")
                table[mn] = fn
            return fn

        return register

    return decorator


impl = _registrar(IMPLS, "impl")


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
        for k, v in other.faults.items():
            self.faults[k] += v

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())


@functools.lru_cache(maxsize=4096)
def row_mask(r0: int, r1: int, words: int) -> np.ndarray:
    """uint64 [words] with the bits of rows r0 .. r1-1 set (read-only, cached)."""
    m = row_mask_words(r0, r1, words)
    m.flags.writeable = False
    return m


def word_range(r0: int, r1: int) -> tuple[int, int]:
    """The words [w0, w1) that hold rows [r0, r1)."""
    return r0 >> 6, (r1 + 63) >> 6


class Machine:
    """The state of one batch of sample lanes running one linked program.

    ``cells[c, a, s, w]`` holds column c of array a for lane s, rows bit-packed
    along w; a column across a range of arrays is therefore one contiguous
    block, which is what a row-parallel gate reads and writes.  ``bits`` is the
    same memory seen as ``[a, c, s, w]``.

    Runners are built on an instruction's first execution and keep views of
    ``cells`` and the fault model's rates: replace neither afterwards (``counts``
    may be replaced; it is looked up on every instruction).

    With ``reference=True`` every gate runs the plain path (the opcode table's
    logic into a fresh array, faults, masked store) instead of the prepared
    in-place kernels; both give the same state and the same faults for the same
    seed, which the tests check.
    """

    def __init__(
        self,
        linked: Linked,
        lanes: int,
        faults: FaultModel,
        rng: np.random.Generator,
        *,
        reference: bool = False,
        backend: Backend | str | None = None,
        used: Extent | None = None,
    ):
        spec = linked.machine
        self.linked = linked
        self.spec = spec
        self.lanes = lanes
        self.words = spec.words
        self.be = be = get_backend(backend)
        self.kernels = kernels(be)
        # Only the arrays, columns and slots the program touches (cramc.sim.memory.extent): the others
        # would stay zero and are never read.
        ext = used or extent(linked)
        self.cells = be.words((ext.cols, ext.arrays, lanes, spec.words))
        self.acc = be.ints((ext.arrays, ext.accs, lanes))
        self.tensors: dict[str, np.ndarray] = {}
        self.faults = faults
        self.rng = rng  # thinning of asymmetric rates and adder-tree faults draw from it, in program order
        self._entropy = int(rng.integers(0, 2**63))
        self._counts = Counts()
        self.loopvars: dict[str, int] = {}
        self.trace: Callable[[BoundOp, Machine], None] | None = None
        self.reference = reference
        # Per-instruction runners, built on first execution: views, masks and kernels resolved once.
        self._runners: dict[BoundOp, Callable[[], None]] = {}
        self._streams: dict[tuple[str, float], Any] = {}
        self._scratch: dict[tuple[int, ...], list[Any]] = {}
        self._injectors: dict[tuple[str, Rate, int, int], Callable[[Any], Any]] = {}
        self._masks: dict[tuple[int, int, int, int], Any] = {}
        self._reported: dict[tuple[str, float], int] = {}
        self._fused: dict[int, tuple[tuple[Node, ...], tuple[object, ...]]] = {}
        self._tallies: dict[int, tuple[tuple[Node, ...], Tally]] = {}

    @property
    def fusable(self) -> bool:
        """Whether multiply-accumulate runs may execute vectorised (see cramc.sim.fuse)."""
        f = self.faults
        return not self.reference and self.trace is None and f.read.zero and f.tree == 0.0 and self.fuse_mac

    fuse_mac: bool = True

    def close(self) -> None:
        """Let go of the state, the tensors and the runners now (read `counts` first).

        The runners are closures over this machine and hold views of its cells: a cycle that only the
        garbage collector would break, long after the next batch has allocated its own state.
        """
        self.sync_counts()
        for d in (self._runners, self._fused, self._tallies, self._scratch, self._injectors, self._masks):
            d.clear()
        self._streams.clear()
        self.tensors = {}
        self.cells = self.acc = None

    def flip_region(self, words: Any, r0: int, r1: int, rate: Rate, kind: str) -> None:
        """Inject faults into words [..., nw] that hold exactly the word range of rows [r0, r1)."""
        inj = self.injector(kind, rate, r0, r1)
        flat = self.be.contiguous(words)
        inj(self.be.flat(flat))
        if flat is not words:
            words[...] = flat

    @property
    def counts(self) -> Counts:
        """Event counts so far (fault counts brought up to date on every access)."""
        self.sync_counts()
        return self._counts

    @counts.setter
    def counts(self, value: Counts) -> None:
        self._counts = value
        for key, st in self._streams.items():
            self._reported[key] = st.handed_out() - st.dropped

    @property
    def bits(self) -> Any:
        """The cells as ``[array, column, lane, word]`` (a writable view)."""
        return self.cells.swapaxes(0, 1)  # numpy and torch spell it alike

    # ---- helpers shared by the opcode functions
    def rows(self, b: BoundOp) -> tuple[int, int]:
        return b.rows if b.rows is not None else (0, self.spec.rows)

    def runner(self, b: BoundOp) -> Callable[[], None]:
        """A zero-argument callable that executes b on this machine (built once, then cached)."""
        fn = self._runners.get(b)
        if fn is None:
            prep = None if self.reference and b.op.unit is Unit.GATE else PREPARE.get(b.op.mnemonic)
            fn = prep(self, b) if prep is not None else functools.partial(IMPLS[b.op.mnemonic], self, b)
            self._runners[b] = fn
        return fn

    def stream(self, kind: str, p: float) -> Any:
        """The Bernoulli(p) fault stream for faults of `kind` (one per kind and distinct rate)."""
        st = self._streams.get((kind, p))
        if st is None:
            # Each stream has its own generator, seeded from the machine's generator and its key:
            # when a stream draws its next batch then never moves any other random number, so the
            # fast paths (which render ahead) and the plain path draw the same faults.
            key = [self._entropy, _FAULT_KINDS.index(kind), int(np.float64(p).view(np.uint64))]
            st = self._streams[(kind, p)] = self.be.stream(p, key)
            self._reported[(kind, p)] = 0
        return st

    def sync_counts(self) -> None:
        """Bring counts.faults up to date with the fault streams (flips are counted lazily, per stream)."""
        for key, st in self._streams.items():
            flipped = st.handed_out() - st.dropped
            new = flipped - self._reported[key]
            if new:
                self._counts.faults[key[0]] += new
                self._reported[key] = flipped

    def scratch(self, shape: tuple[int, ...], k: int) -> list[Any]:
        """k distinct word buffers of the given shape, reused between instructions."""
        pool = self._scratch.setdefault(shape, [])
        while len(pool) < k:
            pool.append(self.be.empty_words(shape))
        return pool[:k]

    def mask(self, r0: int, r1: int, w0: int = 0, w1: int | None = None) -> Any:
        """Words [w0, w1) of the row mask of rows [r0, r1), on the backend (cached)."""
        key = (r0, r1, w0, self.words if w1 is None else w1)
        got = self._masks.get(key)
        if got is None:
            got = self._masks[key] = self.be.put(row_mask(r0, r1, self.words)[w0 : key[3]])
        return got

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

    def put_column(self, b: BoundOp, cols: slice, new: Any) -> None:
        """Write words [ncols, nA, lanes, W] (or any shape that broadcasts to it) into the active rows."""
        lo, hi = b.arrays  # type: ignore[misc]
        r0, r1 = self.rows(b)
        dst = self.cells[cols, lo:hi]
        if r0 == 0 and r1 >= self.spec.rows:
            dst[...] = new
            return
        # words wholly inside the range are copied; the (at most two) edge words are merged under the mask
        f0, f1 = (r0 + 63) >> 6, r1 >> 6
        if f0 < f1:
            dst[..., f0:f1] = new[..., f0:f1]
        for e in sorted({r0 >> 6, (r1 - 1) >> 6} - set(range(f0, f1))):
            m = self.mask(r0, r1, e, e + 1)
            dst[..., e : e + 1] = (new[..., e : e + 1] & m) | (dst[..., e : e + 1] & ~m)

    def injector(self, kind: str, rate: Rate, r0: int, r1: int) -> Callable[[Any], Any]:
        """Fault injection of `kind` at `rate` into regions of the words that hold rows [r0, r1) (see `flip`).

        Its flips are counted in counts.faults[kind] by `sync_counts`, not by the caller.
        """
        key = (kind, rate, r0, r1)
        inj = self._injectors.get(key)
        if inj is None:
            w0, w1 = word_range(r0, r1)
            active = None if (r0 | r1) & 63 == 0 else row_mask(r0 - 64 * w0, r1 - 64 * w0, w1 - w0)
            inj = self._injectors[key] = self.be.injector(self.stream(kind, rate.pmax), rate, self.rng, w1 - w0, active)
        return inj

    def flip(self, words: Any, b: BoundOp, rate: Rate, kind: str) -> None:
        """Inject faults of `kind` into freshly computed words [..., W] (active rows only), in place.

        The region is the words that hold the active rows, in the C order of the
        leading axes: the fast paths of the gates use the same regions, so they
        draw the same faults.
        """
        if rate.zero:
            return
        r0, r1 = self.rows(b)
        w0, w1 = word_range(r0, r1)
        inj = self.injector(kind, rate, r0, r1)
        if w0 == 0 and w1 == self.words and self.be.is_contiguous(words):
            inj(self.be.flat(words))
        else:
            sub = self.be.copy(words[..., w0:w1])
            inj(self.be.flat(sub))
            words[..., w0:w1] = sub


_FAULT_KINDS = ("gate", "write", "read", "tree")

PrepareFn = Callable[[Machine, BoundOp], Callable[[], None]]
#: Opcodes with a specialised runner: built once per instruction, then called directly.
PREPARE: dict[str, PrepareFn] = {}


prepare = _registrar(PREPARE, "prepare")


# ---------------------------------------------------------------- CRAM gates
# In-place kernels: (inputs, out, temporaries).  Each writes `out` only after it
# has read every input for the last time, so out may be one of the inputs
# (`and c3, c3, c4`).  tests/test_sim_perf_semantics.py checks each against the
# opcode table's logic, aliased and not, on every backend.
Kernel = Callable[[list[Any], Any, list[Any]], None]


@functools.cache
def kernels(be: Backend) -> dict[str, tuple[Kernel, int]]:
    """mnemonic -> (kernel, temporaries it needs), built from the backend's out= ufuncs.

    A gate without one runs the opcode table's logic.
    """
    _and, _or, _inv, _copy = be.and_, be.or_, be.not_, be.copyto

    def k_not(i: list[Any], d: Any, t: list[Any]) -> None:
        _inv(i[0], out=d)

    def k_copy(i: list[Any], d: Any, t: list[Any]) -> None:
        _copy(d, i[0])

    def k_and(i: list[Any], d: Any, t: list[Any]) -> None:
        _and(i[0], i[1], out=d)

    def k_nand(i: list[Any], d: Any, t: list[Any]) -> None:
        _and(i[0], i[1], out=d)
        _inv(d, out=d)

    def k_or(i: list[Any], d: Any, t: list[Any]) -> None:
        _or(i[0], i[1], out=d)

    def k_nor(i: list[Any], d: Any, t: list[Any]) -> None:
        _or(i[0], i[1], out=d)
        _inv(d, out=d)

    def k_maj3(i: list[Any], d: Any, t: list[Any]) -> None:
        a, b, c = i
        t0 = t[0]
        _or(a, b, out=t0)
        _and(t0, c, out=t0)  # c & (a | b)
        _and(a, b, out=d)
        _or(d, t0, out=d)

    def k_min3(i: list[Any], d: Any, t: list[Any]) -> None:
        k_maj3(i, d, t)
        _inv(d, out=d)

    def k_maj5(i: list[Any], d: Any, t: list[Any]) -> None:
        a, b, c, q, e = i
        ab, a_b, cq, c_q, x = t
        _and(a, b, out=ab)
        _or(a, b, out=a_b)
        _and(c, q, out=cq)
        _or(c, q, out=c_q)
        _and(ab, c_q, out=x)
        _and(a_b, c_q, out=c_q)
        _or(c_q, ab, out=c_q)
        _and(cq, a_b, out=a_b)
        _or(c_q, cq, out=c_q)  # at least two among a..q: ab | cq | (a_b & c_q)
        _or(x, a_b, out=x)  # at least three among a..q: (ab & c_q) | (cq & a_b)
        _and(c_q, e, out=c_q)
        _or(x, c_q, out=d)

    def k_min5(i: list[Any], d: Any, t: list[Any]) -> None:
        k_maj5(i, d, t)
        _inv(d, out=d)

    return {
        "not": (k_not, 0),
        "copy": (k_copy, 0),
        "and": (k_and, 0),
        "nand": (k_nand, 0),
        "or": (k_or, 0),
        "nor": (k_nor, 0),
        "maj3": (k_maj3, 1),
        "min3": (k_min3, 1),
        "maj5": (k_maj5, 5),
        "min5": (k_min5, 5),
    }


GATE_MNEMONICS = tuple(op.mnemonic for op in OPCODES.values() if op.unit is Unit.GATE)


@impl(*GATE_MNEMONICS)
def gate(m: Machine, b: BoundOp) -> None:
    if m.reference:
        _gate_plain(m, b)
    else:
        m.runner(b)()


@prepare(*GATE_MNEMONICS)
def prepare_gate(m: Machine, b: BoundOp) -> Callable[[], None]:
    """A gate as a few ufunc calls writing straight into the destination column.

    All rows active: the kernel writes into the column's block of words, faults
    are injected there.  A row range: the kernel works on the words that hold
    the range, in a scratch buffer, and the active rows are merged in.
    """
    mn = b.op.mnemonic
    lo, hi = b.arrays  # type: ignore[misc]
    dst, *srcs = b.operands
    r0, r1 = m.rows(b)
    rate = m.faults.gate(mn)
    if mn not in m.kernels:
        return functools.partial(_gate_plain, m, b)
    kern, ntemp = m.kernels[mn]
    cells = m.cells
    if r0 == 0 and r1 == m.spec.rows:
        ins = [cells[c, lo:hi] for c in srcs]
        d = cells[dst, lo:hi]
        temps = m.scratch(d.shape, ntemp)
        if rate.zero:
            return functools.partial(kern, ins, d, temps)
        flat = m.be.flat(d)  # the column block is contiguous
        inj = m.injector("gate", rate, r0, r1)
        n_words = flat.size
        if inj.dense(n_words):
            # Faults expected in most instructions: XOR a flip mask rendered in bulk, one stream window
            # at a time (the same successes as one mask of the whole block, in bounded memory).
            take_dense, xor = inj.stream.take_dense, m.be.xor
            piece = inj.stream.window_words
            if n_words <= piece:

                def run_full_dense() -> None:
                    kern(ins, d, temps)
                    xor(flat, take_dense(n_words), out=flat)

                return run_full_dense
            pieces = [flat[s : s + piece] for s in range(0, n_words, piece)]

            def run_full_dense_pieces() -> None:
                kern(ins, d, temps)
                for f in pieces:
                    xor(f, take_dense(f.size), out=f)

            return run_full_dense_pieces

        def run_full_faulty() -> None:
            kern(ins, d, temps)
            inj(flat)

        return run_full_faulty
    w0, w1 = word_range(r0, r1)
    ins = [cells[c, lo:hi, :, w0:w1] for c in srcs]
    d = cells[dst, lo:hi, :, w0:w1]
    out, *temps = m.scratch(d.shape, 1 + ntemp)
    out_flat = m.be.flat(out)
    mask = m.mask(r0, r1, w0, w1)
    inj = None if rate.zero else m.injector("gate", rate, r0, r1)
    xor, and_ = m.be.xor, m.be.and_

    def run_rows() -> None:
        kern(ins, out, temps)
        if inj is not None:
            inj(out_flat)
        # d = out on active rows, d elsewhere: d ^= (out ^ d) & mask
        xor(out, d, out=out)
        and_(out, mask, out=out)
        xor(d, out, out=d)

    return run_rows


def _gate_plain(m: Machine, b: BoundOp) -> None:
    """The plain path: the table's logic into a fresh array, faults, masked store."""
    lo, hi = b.arrays  # type: ignore[misc]
    dst, *srcs = b.operands
    res = b.op.logic(*(m.cells[c, lo:hi] for c in srcs))  # type: ignore[misc]
    m.flip(res, b, m.faults.gate(b.op.mnemonic), "gate")
    m.put_column(b, slice(dst, dst + 1), res[None])


# ---------------------------------------------------------------- data movement
def _pack_rows(planes: np.ndarray, r0: int, words: int) -> np.ndarray:
    """0/1 uint8 or bool [..., nrows] placed at row r0 -> uint64 [..., words] (row r: bit r % 64 of word r // 64).

    Packed a byte at a time (8 rows), so the only temporaries are the packed bytes, not a bool row per
    row of the array.
    """
    pad = r0 & 7
    if pad:  # start the first byte at a multiple of 8 rows
        planes = np.concatenate([np.zeros((*planes.shape[:-1], pad), dtype=planes.dtype), planes], axis=-1)
    packed = np.packbits(planes, axis=-1, bitorder="little")
    out = np.zeros((*planes.shape[:-1], words * 8), dtype=np.uint8)
    out[..., r0 >> 3 : (r0 >> 3) + packed.shape[-1]] = packed
    return out.view(np.uint64)


def _unpack_rows(words: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """uint64 [..., W] -> uint8 bits [..., r1 - r0]."""
    by = np.ascontiguousarray(words).view(np.uint8)
    return np.unpackbits(by, axis=-1, bitorder="little")[..., r0:r1]


@impl("fill")
def fill(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, value = b.operands
    r0, r1 = m.rows(b)
    n = (hi - lo) * (r1 - r0) * m.lanes
    rate = m.faults.write
    if rate.zero and r0 == 0 and r1 == m.spec.rows:
        m.cells[dst, lo:hi] = m.be.ONES if value else 0
    else:
        res = m.be.full_words((1, hi - lo, m.lanes, m.words), bool(value))
        m.flip(res, b, rate, "write")
        m.put_column(b, slice(dst, dst + 1), res)
    m._counts.writes += n
    m._counts.op("fill", m.lanes, n)


@impl("wr")
def wr(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, src = b.operands
    bits = b.attrs["bits"]
    val = m.load(src)  # [S|1, n|1, nrows(, F)]
    if val.ndim == 3:
        val = val[..., None]
    nrows, nf = val.shape[2], val.shape[3]
    # Bit b of a value is bit b of its little-endian two's-complement int64: unpacked from the bytes,
    # one byte per bit (no int64 temporary per bit).
    by = np.ascontiguousarray(val, dtype="<i8").view(np.uint8).reshape(*val.shape, 8)
    planes = np.unpackbits(by, axis=-1, count=bits, bitorder="little")  # [S, n, nrows, F, bits]
    del by
    planes = planes.reshape(*planes.shape[:3], nf * bits).transpose(3, 1, 0, 2)  # [F*bits, n, S, nrows]
    r0, r1 = m.rows(b)
    words = _pack_rows(np.ascontiguousarray(planes), r0, m.words)
    del planes
    rep = b.attrs.get("repeat", 1)
    if rep > 1 and words.shape[1] > 1:
        words = np.repeat(words, rep, axis=1)
    # Sent once, broadcast over arrays and lanes on the backend (weights are the same in every lane);
    # a writable copy of the full shape only when write faults go in, each lane its own.
    words = m.be.put(words)
    if not m.faults.write.zero:
        words = m.be.broadcast(words, (nf * bits, hi - lo, m.lanes, m.words))
        m.flip(words, b, m.faults.write, "write")
    m.put_column(b, slice(dst, dst + nf * bits), words)
    n = (hi - lo) * nrows * nf * bits * m.lanes
    m._counts.writes += n
    m._counts.op("wr", m.lanes, n)


@impl("rd")
def rd(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, src = b.operands
    bits = b.attrs["bits"]
    fields = b.attrs.get("fields", 0)
    nf = max(fields, 1)
    r0, r1 = m.rows(b)
    w0, w1 = word_range(r0, r1)
    words = m.be.copy(m.cells[src : src + nf * bits, lo:hi, :, w0:w1])  # [F*bits, nA, S, nw]: the words sensed
    rate = m.faults.read
    if not rate.zero:  # the region `flip` would inject into: the words of the active rows
        m.injector("read", rate, r0, r1)(m.be.flat(words))
    planes = _unpack_rows(m.be.get_words(words), r0 - 64 * w0, r1 - 64 * w0)  # uint8 [F*bits, nA, S, nrows]
    del words
    planes = planes.reshape(nf, bits, hi - lo, m.lanes, r1 - r0)
    signed = b.attrs.get("signed", 1)
    vals = np.zeros((nf, hi - lo, m.lanes, r1 - r0), dtype=np.int64)
    for k in range(bits):  # one int64 temporary at a time
        term = planes[:, k].astype(np.int64)
        term <<= k
        if signed and k == bits - 1:
            vals -= term
        else:
            vals += term
    del planes, term
    vals = vals.transpose(2, 1, 3, 0)  # [S, nA, nrows, F]
    if not fields:
        vals = vals[..., 0]
    m.store(b, dst, np.ascontiguousarray(vals))
    n = (hi - lo) * (r1 - r0) * nf * bits * m.lanes
    m._counts.reads += n
    m._counts.op("rd", m.lanes, n)


# ---------------------------------------------------------------- adder tree
def _sense(be: Backend, src: Any, read: Callable[[Any], Any] | None) -> Any:
    """The words the tree senses from cells `src`: a copy with read faults, so the cells keep their values."""
    if read is None:
        return src
    words = be.copy(src)
    read(be.flat(words))
    return words


def _count_faults(m: Machine, count: Any, width: int) -> Any:
    """The tree's count [nA, S] with each of its `width` low bits flipped at the tree rate (counted in
    faults.tree): the adder tree itself errs after it has summed what it sensed."""
    cw = m.be.get(count).astype(np.uint64).reshape(-1, 1)
    m._counts.faults["tree"] += flip_bits(cw, 0, width, Rate(m.faults.tree, m.faults.tree), m.rng)
    return m.be.put(cw.reshape(tuple(count.shape)).astype(np.int64))


def _accumulate(be: Backend, acc: Any, count: Any, shift: int, sign: int) -> None:
    """acc += sign * (count << shift), in place."""
    if shift:
        count <<= shift
    (be.add if sign > 0 else be.sub)(acc, count, out=acc)


@impl("tadd", "tsub")
def tree(m: Machine, b: BoundOp) -> None:
    m.runner(b)()


@prepare("tadd", "tsub")
def _prepare_tree(m: Machine, b: BoundOp) -> Callable[[], None]:
    """popcount of the active rows of one column per array (and lane), shifted into an accumulator."""
    lo, hi = b.arrays  # type: ignore[misc]
    slot, col, shift = b.operands
    r0, r1 = m.rows(b)
    w0, w1 = word_range(r0, r1)
    be = m.be
    src = m.cells[col, lo:hi, :, w0:w1]  # [nA, S, nw]
    whole = (r0 | r1) & 63 == 0
    mask = None if whole else m.mask(r0, r1, w0, w1)
    read = None if m.faults.read.zero else m.injector("read", m.faults.read, r0, r1)
    tree_p = m.faults.tree
    width = max(int(r1 - r0).bit_length(), 1)
    sign = 1 if b.op.mnemonic == "tadd" else -1
    acc = m.acc[lo:hi, slot]  # [nA, S], a view

    def run_tree() -> None:
        words = _sense(be, src, read)
        if mask is not None:
            words = words & mask
        count = be.popcount_sum(words)  # [nA, S]
        if tree_p:
            count = _count_faults(m, count, width)
        _accumulate(be, acc, count, shift, sign)

    return run_tree


@impl("tvadd", "tvsub", "tdadd", "tdsub")
def tree_protected(m: Machine, b: BoundOp) -> None:
    m.runner(b)()


@prepare("tvadd", "tvsub", "tdadd", "tdsub")
def _prepare_tree_protected(m: Machine, b: BoundOp) -> Callable[[], None]:
    """Adder tree behind a CMOS voter (tv*) or a duplicate-and-compare with CMOS recompute (td*)."""
    lo, hi = b.arrays  # type: ignore[misc]
    slot, *cols, shift = b.operands
    r0, r1 = m.rows(b)
    w0, w1 = word_range(r0, r1)
    be = m.be
    srcs = [m.cells[c, lo:hi, :, w0:w1] for c in cols]
    whole = (r0 | r1) & 63 == 0
    mask = None if whole else m.mask(r0, r1, w0, w1)
    read = None if m.faults.read.zero else m.injector("read", m.faults.read, r0, r1)
    vote = b.op.mnemonic.startswith("tv")
    sign = 1 if b.op.mnemonic.endswith("add") else -1
    tree_p = m.faults.tree
    width = max(int(r1 - r0).bit_length(), 1)
    acc = m.acc[lo:hi, slot]
    n = (hi - lo) * m.lanes
    mn = b.op.mnemonic

    def sensed(i: int) -> Any:
        return _sense(be, srcs[i], read)  # run() never writes into what it senses

    def run() -> None:
        a, c = sensed(0), sensed(1)
        extra = 0
        if vote:
            d = sensed(2)
            words = (a & c) | (a & d) | (c & d)
        else:
            diff = a ^ c
            if mask is not None:
                diff &= mask
            nd = be.total(be.popcount_sum(diff))
            words = a
            if nd:
                prod = sensed(2) & sensed(3)
                words = (a & ~diff) | (prod & diff)
                extra = 2 * nd
                m._counts.recomputes += nd
        if mask is not None:
            words = words & mask
        count = be.popcount_sum(words)
        if tree_p:
            count = _count_faults(m, count, width)  # the voter and the recompute sit before the tree
        _accumulate(be, acc, count, shift, sign)
        cnt = m._counts
        cnt.reduces += n
        cnt.tree_sensed += n * (r1 - r0) * (3 if vote else 2) + extra
        cnt.op(mn, m.lanes, n * (r1 - r0))

    return run


@impl("aclr")
def aclr(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    s0, s1 = b.operands[0]
    m.acc[lo:hi, s0:s1] = 0
    m._counts.op("aclr", m.lanes, (hi - lo) * (s1 - s0) * m.lanes)


@impl("ard")
def ard(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, (s0, s1) = b.operands
    m.store(b, dst, np.ascontiguousarray(m.be.get(m.acc[lo:hi, s0:s1]).transpose(2, 0, 1)))
    m._counts.op("ard", m.lanes, (hi - lo) * (s1 - s0) * m.lanes)


# ---------------------------------------------------------------- CMOS vector unit
@impl(*(op.mnemonic for op in OPCODES.values() if op.unit is Unit.CMOS))
def cmos_op(m: Machine, b: BoundOp) -> None:
    dst, *srcs = b.operands
    res = b.op.cmos([m.load(s) for s in srcs], b.attrs)  # type: ignore[misc]
    if res.shape[0] != m.lanes:
        res = np.ascontiguousarray(np.broadcast_to(res, (m.lanes, *res.shape[1:])))
    m.store(b, dst, res)
    m._counts.op(b.op.mnemonic, m.lanes, int(res.size))


# ---------------------------------------------------------------- execution
#: Opcodes whose counts depend only on the program (see `Tally`): their runners do not count.
TALLIED = frozenset((*GATE_MNEMONICS, "tadd", "tsub"))


@dataclass
class Tally:
    """The counts of the gate and `tadd`/`tsub` instructions of a node list, per sample lane.

    They depend on nothing but the program (loops are unrolled by their trip
    counts), so they are added once per `execute` instead of once per
    instruction: the hot runners stay free of bookkeeping, and fused and
    unfused execution count alike by construction.
    """

    gate_evals: int = 0
    reduces: int = 0
    tree_sensed: int = 0
    ops: dict[str, list[int]] = field(default_factory=dict)  # mnemonic -> [instructions, row operations]

    @staticmethod
    def of(nodes: tuple[Node, ...], rows: int) -> Tally:
        t = Tally()
        for node in nodes:
            if isinstance(node, Loop):
                t.add(Tally.of(node.body, rows), node.count)
                continue
            mn = node.op.mnemonic
            if mn not in TALLIED:
                continue
            lo, hi = node.arrays  # type: ignore[misc]
            r0, r1 = node.rows if node.rows is not None else (0, rows)
            n = (hi - lo) * (r1 - r0)
            if mn in ("tadd", "tsub"):
                t.reduces += hi - lo
                t.tree_sensed += n
            else:
                t.gate_evals += n
            t.ops.setdefault(mn, [0, 0])
            t.ops[mn][0] += 1
            t.ops[mn][1] += n
        return t

    def add(self, other: Tally, times: int) -> None:
        self.gate_evals += times * other.gate_evals
        self.reduces += times * other.reduces
        self.tree_sensed += times * other.tree_sensed
        for mn, (k, n) in other.ops.items():
            mine = self.ops.setdefault(mn, [0, 0])
            mine[0] += times * k
            mine[1] += times * n

    def count(self, c: Counts, lanes: int) -> None:
        c.gate_evals += lanes * self.gate_evals
        c.reduces += lanes * self.reduces
        c.tree_sensed += lanes * self.tree_sensed
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
        fused = m._fused.get(id(nodes))
        if fused is None:
            fused = m._fused[id(nodes)] = (nodes, fuse(nodes))
        nodes = fused[1]  # type: ignore[assignment]
    for node in nodes:
        if type(node) is FusedMac:
            fn = runners.get(node)  # type: ignore[arg-type]
            if fn is None:
                fn = runners[node] = prepare_fused(m, node)  # type: ignore[index,arg-type]
            fn()
        elif type(node) is Loop:
            var = node.var
            for i in range(node.count):
                m.loopvars[var] = i
                _execute(m, node.body)
            del m.loopvars[var]
        else:
            fn = runners.get(node)
            if fn is None:
                fn = m.runner(node)
            fn()
            if m.trace is not None:
                m.trace(node, m)


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
) -> RunResult:
    """Run every sample of `inputs` (name -> [N, *shape]) through the program.

    Samples run `lanes` at a time (default: as many as fit in `max_memory` bytes,
    by default the backend's budget: 2 GiB on the host, 40% of a GPU's free memory;
    the budget covers everything the run holds, cramc.sim.memory); the faults of
    each batch come from its own generator spawned from `seed`, so the same seed,
    inputs and lanes give the same outputs, counts and faults.
    `reference=True` runs gates on the plain path (see `Machine`); `backend`
    picks where the machine state lives (cramc.sim.backend: numpy, torch,
    torch:cuda, ...).
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
    total = Counts()
    outs: dict[str, list[np.ndarray]] = {o.name: [] for o in linked.outputs}
    kept: dict[str, list[np.ndarray]] = {}
    init_events: dict[str, int] = {}
    seeds = np.random.SeedSequence(seed)
    # The fused MAC path's matrix products are small (tens of slots by a few thousand pairs): BLAS
    # threads only spin against each other and against other runs (measured: light ResNet-50 28 s
    # on one thread, 34 s wall and 58 s CPU on two), so the simulator keeps BLAS to one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, n, lanes):
            stop = min(n, start + lanes)
            rng = np.random.default_rng(seeds.spawn(1)[0])
            m = Machine(linked, stop - start, faults, rng, reference=reference, backend=be, used=used)
            m.trace = trace
            for spec in linked.inputs:
                m.tensors[spec.name] = _as_lane_input(inputs[spec.name][start:stop], spec.dtype)
            execute(m, linked.init)
            c = m.counts
            for k, v in (("gate_evals", c.gate_evals), ("writes", c.writes), ("reads", c.reads)):
                init_events[k] = init_events.get(k, 0) + v
            init_events["faults"] = init_events.get("faults", 0) + c.faults_injected
            execute(m, linked.main)
            for o in linked.outputs:
                outs[o.name].append(_own(m.tensors[o.name]))
            if keep_tensors:
                for name, t in m.tensors.items():
                    kept.setdefault(name, []).append(_own(t))
            total.merge(m.counts)
            m.close()  # before the next batch's machine: never two batches' state at once
            del m
            if progress is not None:
                progress(stop - start)
    result = {k: np.concatenate(v) for k, v in outs.items()}
    outs.clear()
    return RunResult(result, total, n, {k: np.concatenate(v) for k, v in kept.items()}, init_events)


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
