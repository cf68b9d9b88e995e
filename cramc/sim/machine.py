"""The state of the bit-level machine, and the row and word helpers every opcode implementation uses.

State, per sample lane s (one inference each):
- ``cells[c, a, s, w]``: cell rows bit-packed along the rows of array a,
  column c (row r is bit r % 64 of word r // 64), uint64; ``bits`` is the
  same memory as ``[a, c, s, w]``;
- ``acc[a, k, s]``: the exact int64 accumulators beside each array;
- ``tensors``: the CMOS buffers, each with a leading sample axis.

``cells`` and ``acc`` are arrays of the machine's backend (cramc.sim.backend:
numpy, or torch on a GPU); the CMOS buffers are always numpy arrays on the
host.  `Machine` also owns what the opcode implementations (cramc.sim.ops)
share between instructions: the fault streams and injectors, row masks,
scratch buffers and the cache of prepared runners.  It knows no opcode: the
implementations live in cramc/sim/ops, the execution loop in cramc/sim/interp.py.

Faults are drawn from per-kind Bernoulli streams (cramc.sim.faults) and counted
lazily: read ``Machine.counts``, which brings them up to date.

`extent` (the part of the chip a program touches) sits here because it is what
`Machine` allocates; cramc.sim.memory sizes runs from it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cramc.isa.counting import Counts
from cramc.isa.linked import BoundOp, Linked, Loop, Node, TRef
from cramc.isa.opcodes import Kind, Opcode, Unit
from cramc.sim.backend import Backend, get_backend
from cramc.sim.faults import FaultInjector, FaultModel, Rate, row_mask_words
from cramc.sim.fuse import FusedMac


@functools.lru_cache(maxsize=4096)
def row_mask(r0: int, r1: int, words: int) -> np.ndarray:
    """uint64 [words] with the bits of rows r0 .. r1-1 set (read-only, cached)."""
    m = row_mask_words(r0, r1, words)
    m.flags.writeable = False
    return m


def word_range(r0: int, r1: int) -> tuple[int, int]:
    """The words [w0, w1) that hold rows [r0, r1)."""
    return r0 >> 6, (r1 + 63) >> 6


#: The fault kinds, in the order that keys each kind's stream (and names counts.faults).
FAULT_KINDS = ("gate", "write", "read", "tree")


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
        shared: Any = None,
        lane_cols: int | None = None,
    ):
        spec = linked.machine
        self.linked = linked
        self.spec = spec
        self.lanes = lanes
        self.words = spec.words
        self.be = be = get_backend(backend)
        # Only the arrays, columns and slots the program touches (`extent`): the others
        # would stay zero and are never read.
        ext = used or extent(linked)
        #: Columns lane_cols .. ext.cols-1 are lane-invariant when `shared` is given: the chip's one-lane
        #: state [cols, arrays, 1, W] holds them for every lane (what `.init` wrote and `.main` never
        #: writes, the weights), and `cells` holds only columns [0, lane_cols), per lane.  Read columns
        #: through `column`/`columns`; `.main` writes only below lane_cols (`lane_columns`).
        self.shared = shared
        self.lane_cols = ext.cols if shared is None or lane_cols is None else lane_cols
        self.cells = be.words((self.lane_cols, ext.arrays, lanes, spec.words))
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
        self._runners: dict[BoundOp | FusedMac, Callable[[], None]] = {}
        self._streams: dict[tuple[str, float], Any] = {}
        self._scratch: dict[tuple[int, ...], list[Any]] = {}
        self._injectors: dict[tuple[str, Rate, int, int], FaultInjector] = {}
        self._masks: dict[tuple[int, int, int, int], Any] = {}
        self._reported: dict[tuple[str, float], int] = {}
        self._fused: dict[int, tuple[tuple[Node, ...], tuple[object, ...]]] = {}
        self._tallies: dict[int, tuple[tuple[Node, ...], Any]] = {}  # cramc.sim.interp.Tally, by node list
        #: what depends on nothing but the program and the chip (the fused product's coefficients, keyed by
        #: its pairs): the batches of one run on one chip share it (cramc.sim.interp.run)
        self.run_cache: dict[Any, Any] = {}
        #: the static defects of the chip these lanes run on (cramc.sim.chip.ChipDefects), or None: every
        #: instruction that writes a defective cell runs behind cramc.sim.chip.guard
        self.defects: Any = None
        self._defect_rng: np.random.Generator | None = None

    @property
    def defect_rng(self) -> np.random.Generator:
        """The generator of the weak cells' extra flips: its own, so that defects move no other draw."""
        if self._defect_rng is None:
            self._defect_rng = np.random.default_rng([self._entropy, 0xDEFEC7])
        return self._defect_rng

    @property
    def fusable(self) -> bool:
        """Whether multiply-accumulate runs may execute vectorised (see cramc.sim.fuse).

        Read faults fuse: a fused run draws the sense faults of its tree ops over the same regions as they
        do.  Asymmetric ones do not: their thinning draws from the machine's generator, between the gates'
        own thinning draws when those draw too, in an order the fused run does not keep.
        """
        f = self.faults
        read_ok = f.read.zero or f.read.symmetric
        return not self.reference and self.trace is None and read_ok and f.tree == 0.0 and self.fuse_mac

    fuse_mac: bool = True

    def close(self) -> None:
        """Let go of the state, the tensors and the runners now (read `counts` first).

        The runners are closures over this machine and hold views of its cells: a cycle that only the
        garbage collector would break, long after the next batch has allocated its own state.
        """
        self.sync_counts()
        for d in (self._runners, self._scratch, self._injectors, self._masks):
            d.clear()
        self._fused, self._tallies, self.run_cache = {}, {}, {}  # maybe shared with the run's other batches
        self._streams.clear()
        self.tensors = {}
        self.cells = self.acc = self.shared = None

    def flip_region(self, words: Any, r0: int, r1: int, rate: Rate, kind: str, ins: list[Any] | None = None) -> None:
        """Inject faults into words [..., nw] that hold exactly the word range of rows [r0, r1).

        `ins`: a gate's input words laid out as `words`, which an input-dependent rate (by_ones) reads.
        """
        inj = self.injector(kind, rate, r0, r1)
        flat = self.be.contiguous(words)
        inj(self.be.flat(flat), ins)
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
    def column(self, c: int, lo: int, hi: int, w0: int = 0, w1: int | None = None) -> Any:
        """Words [nA, lanes, nw] of column c, arrays [lo, hi), words [w0, w1), for reading: a view of the
        cells, or of a lane-invariant column broadcast over the lanes (read-only)."""
        w1 = self.words if w1 is None else w1
        if c < self.lane_cols:
            return self.cells[c, lo:hi, :, w0:w1]
        return self.be.expand(self.shared[c, lo:hi, :, w0:w1], (hi - lo, self.lanes, w1 - w0))

    def columns(self, c0: int, c1: int, lo: int, hi: int, w0: int = 0, w1: int | None = None) -> Any:
        """Words [c1 - c0, nA, lanes, nw] of columns [c0, c1) for reading (a view, or a copy when the range
        has lane-invariant columns and per-lane ones both)."""
        w1 = self.words if w1 is None else w1
        if c1 <= self.lane_cols:
            return self.cells[c0:c1, lo:hi, :, w0:w1]
        shape = (c1 - c0, hi - lo, self.lanes, w1 - w0)
        if c0 >= self.lane_cols:
            return self.be.expand(self.shared[c0:c1, lo:hi, :, w0:w1], shape)
        out = self.be.empty_words(shape)
        k = self.lane_cols - c0
        out[:k] = self.cells[c0:, lo:hi, :, w0:w1]
        out[k:] = self.shared[self.lane_cols : c1, lo:hi, :, w0:w1]
        return out

    def is_shared(self, c: int) -> bool:
        """Whether column c is lane-invariant here (held once, in `shared`)."""
        return c >= self.lane_cols

    def rows(self, b: BoundOp) -> tuple[int, int]:
        return b.rows if b.rows is not None else (0, self.spec.rows)

    def stream(self, kind: str, p: float) -> Any:
        """The Bernoulli(p) fault stream for faults of `kind` (one per kind and distinct rate)."""
        st = self._streams.get((kind, p))
        if st is None:
            # Each stream has its own generator, seeded from the machine's generator and its key:
            # when a stream draws its next batch then never moves any other random number, so the
            # fast paths (which render ahead) and the plain path draw the same faults.
            key = [self._entropy, FAULT_KINDS.index(kind), int(np.float64(p).view(np.uint64))]
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
        assert (cols.stop or 0) <= self.lane_cols, "a lane-invariant column is never written"
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

    def injector(self, kind: str, rate: Rate, r0: int, r1: int) -> FaultInjector:
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

    def flip(self, words: Any, b: BoundOp, rate: Rate, kind: str, ins: list[Any] | None = None) -> None:
        """Inject faults of `kind` into freshly computed words [..., W] (active rows only), in place.

        The region is the words that hold the active rows, in the C order of the
        leading axes: the fast paths of the gates use the same regions, so they
        draw the same faults.  `ins`: a gate's input words [..., W] laid out as
        `words`, which an input-dependent rate (by_ones) reads at its candidates.
        """
        if rate.zero:
            return
        r0, r1 = self.rows(b)
        w0, w1 = word_range(r0, r1)
        inj = self.injector(kind, rate, r0, r1)
        if w0 == 0 and w1 == self.words and self.be.is_contiguous(words):
            inj(self.be.flat(words), ins)
        else:
            sub = self.be.copy(words[..., w0:w1])
            inj(self.be.flat(sub), None if ins is None else [x[..., w0:w1] for x in ins])
            words[..., w0:w1] = sub


@dataclass(frozen=True)
class Extent:
    """The arrays, columns and accumulator slots a program touches: [0, arrays) x [0, cols), [0, accs)."""

    arrays: int
    cols: int
    accs: int


def walk(nodes: tuple[Node, ...]) -> Iterator[BoundOp]:
    """Every instruction of a node list, loop bodies once."""
    for n in nodes:
        if isinstance(n, Loop):
            yield from walk(n.body)
        else:
            yield n


def source_shape(linked: Linked, src: Any) -> tuple[int, ...]:
    """The per-sample shape of a source operand (a data constant or a tensor, indexed or not)."""
    if isinstance(src, np.ndarray):
        return tuple(src.shape)
    shape = linked.tensor_shapes[src.name][0]
    return tuple(shape[1:]) if src.index is not None else tuple(shape)


def _columns(linked: Linked, b: BoundOp) -> Iterator[int]:
    """The columns instruction b reads or writes (the last of each block)."""
    mn = b.op.mnemonic
    if mn == "wr":
        shape = source_shape(linked, b.operands[1])
        nf = shape[2] if len(shape) == 3 else 1
        yield b.operands[0] + nf * b.attrs["bits"] - 1
    elif mn == "rd":
        yield b.operands[1] + max(b.attrs.get("fields", 0), 1) * b.attrs["bits"] - 1
    else:
        for spec, v in zip(b.op.operands, b.operands, strict=False):
            if spec.kind is Kind.COL:
                yield v


def lane_columns(linked: Linked) -> int:
    """One more than the highest column `.main` writes (gate outputs, fill, wr; at least 1): the columns
    at and above it keep what `.init` left, the same in every lane of a batch."""
    from cramc.sim.chip import written_columns

    top = 1
    for b in walk(linked.main):
        if b.op.unit is Unit.GATE or b.op.unit is Unit.WRITE:
            top = max(top, written_columns(linked, b).stop)
    return top


def extent(linked: Linked) -> Extent:
    """The part of the chip the program uses (at least one array, column and slot; once per program)."""
    got = linked.memo.get("extent")
    if got is None:
        got = linked.memo["extent"] = _extent(linked)
    return got


def _extent(linked: Linked) -> Extent:
    arrays = cols = accs = 1
    facts: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]] = {}  # per opcode
    stack: list[tuple[Node, ...]] = [linked.main, linked.init]
    while stack:
        for b in stack.pop():
            if isinstance(b, Loop):
                stack.append(b.body)
                continue
            f = facts.get(id(b.op))
            if f is None:
                f = facts[id(b.op)] = _extent_facts(b.op)
            col_at, acc_at, accs_at, special = f
            a = b.arrays
            if a is not None and a[1] > arrays:
                arrays = a[1]
            ops = b.operands
            n = len(ops)
            if special:
                for c in _columns(linked, b):
                    cols = max(cols, c + 1)
            else:
                for i in col_at:
                    if i < n and ops[i] >= cols:
                        cols = ops[i] + 1
            for i in acc_at:
                if i < n and ops[i] >= accs:
                    accs = ops[i] + 1
            for i in accs_at:
                if i < n and ops[i][1] > accs:
                    accs = ops[i][1]
    return Extent(arrays, cols, accs)


def _extent_facts(op: Opcode) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]:
    """What `_extent` reads of an opcode: its COL, ACC and ACCS operand positions, and whether its columns
    are a span (`_columns`: wr, rd)."""
    at = {k: tuple(i for i, o in enumerate(op.operands) if o.kind is k) for k in (Kind.COL, Kind.ACC, Kind.ACCS)}
    return at[Kind.COL], at[Kind.ACC], at[Kind.ACCS], op.mnemonic in ("wr", "rd")
