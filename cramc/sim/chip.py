"""Chip instances: the static defects of one chip, drawn from its chip seed, and the write hook that enforces them.

A chip instance is what stays the same across the inferences that run on it:
the weights `.init` wrote (with their write faults; cramc.sim.interp runs
`.init` once per chip and copies the resulting state into every batch of
inference lanes) and its static defects, drawn here once per chip seed from the
error model's ``[defects]`` densities (cramc.errmodel.Defects):

- a **stuck-at-0 / stuck-at-1** cell holds its value whatever is written into
  it: after every instruction that writes cells (a gate output, ``fill``,
  ``wr``) the cell is forced back to its stuck value;
- a **weak** cell, as a gate's output, fails at ``weak_factor`` times the gate's
  rate for the evaluation's input pattern (capped at 0.5); as a gate input it is
  an ordinary cell, so every copy of a computation that reads it reads the same
  (possibly wrong) stored value, as with a stuck cell.

Counting (docs/error-model.md, "Chips and static defects"): a defect's effect
counts as a fault only when it leaves a bit wrong.  At each defective cell the
hook knows the correct value of the write (the gate's logic on its input cells,
read before the gate runs; the constant of ``fill``; the bit of ``wr``'s source),
so after the write:

- at a stuck cell, a sampled switching fault that the stuck value undoes is
  taken off its kind's count (the bit it flipped is not wrong any more), and
  ``faults["defect"]`` counts one when the stuck value differs from the correct
  value;
- at a weak cell whose output came out right, an extra flip is drawn with
  probability (p_weak - p) / (1 - p), so that P(wrong) = p_weak exactly, and
  counted in ``faults["defect"]``.

So the fault counters stay equal to the wrong bits of the machine state
(tests/sim/test_chips.py checks it instruction by instruction).  Defects are
drawn per array, over every column and row of the machine (``.machine``), from
a generator keyed by (chip seed, array): the same chip seed gives the same
defects whatever part of the chip a program uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cramc.errmodel import Defects
from cramc.errmodel.model import gate_output
from cramc.isa.linked import BoundOp, Linked, MachineSpec, source_shape
from cramc.isa.opcodes import Unit

#: Defect kinds, as stored in `ChipDefects.kind`: the stuck kinds are the value the cell holds.
STUCK0, STUCK1, WEAK = 0, 1, 2
KIND_NAMES = ("stuck0", "stuck1", "weak")
#: Keys the generators of a chip (with its seed): its defects (per array) and its `.init` faults.
DEFECT_KEY = 0xDEFEC7
CHIP_KEY = 0xC419
#: Bytes of bookkeeping per drawn defect (positions, kinds, the per-column index).
DEFECT_BYTES = 64


@dataclass(frozen=True)
class ChipDefects:
    """The defective cells of one chip: column, array, row and kind of each, sorted by (column, array, row)."""

    col: np.ndarray
    arr: np.ndarray
    row: np.ndarray
    kind: np.ndarray
    factor: float  # weak cells: the multiple of the gate's rate
    starts: dict[int, tuple[int, int]]  # column -> [start, stop) of its defects in the arrays above

    @property
    def counts(self) -> dict[str, int]:
        """Defects of each kind."""
        return {name: int((self.kind == k).sum()) for k, name in enumerate(KIND_NAMES)}

    def region(self, cols: range, lo: int, hi: int, r0: int, r1: int, weak: bool = True) -> np.ndarray:
        """Indices of the defects in columns `cols`, arrays [lo, hi), rows [r0, r1) (weak ones only if `weak`)."""
        parts = [np.arange(*self.starts[c]) for c in cols if c in self.starts]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        i = np.concatenate(parts)
        keep = (self.arr[i] >= lo) & (self.arr[i] < hi) & (self.row[i] >= r0) & (self.row[i] < r1)
        if not weak:
            keep &= self.kind[i] != WEAK
        return i[keep]


def draw_defects(spec: MachineSpec, arrays: int, cols: int, defects: Defects, chip_seed: int) -> ChipDefects | None:
    """The defects of chip `chip_seed` in arrays [0, arrays) and columns [0, cols) (None without [defects]).

    Each array draws its own: the number of defective cells of its spec.cols x spec.rows is binomial, their
    places uniform without replacement, each one's kind by the densities' proportions.
    """
    if not defects.any:
        return None
    p = np.array([defects.stuck0, defects.stuck1, defects.weak]) / defects.density
    n = spec.cols * spec.rows
    cs, ars, rs, ks = [], [], [], []
    for a in range(arrays):
        rng = np.random.default_rng([chip_seed, DEFECT_KEY, a])
        k = int(rng.binomial(n, defects.density))
        if not k:
            continue
        pos = rng.choice(n, size=k, replace=False)
        kind = rng.choice(3, size=k, p=p)
        c, r = pos // spec.rows, pos % spec.rows
        keep = c < cols
        cs.append(c[keep])
        rs.append(r[keep])
        ks.append(kind[keep])
        ars.append(np.full(int(keep.sum()), a))
    parts = (cs, ars, rs, ks) if cs else ([np.zeros(0, dtype=np.int64)],) * 4
    col, arr, row, kind = (np.concatenate(x).astype(np.int64) for x in parts)
    order = np.lexsort((row, arr, col))
    col, arr, row, kind = col[order], arr[order], row[order], kind[order]
    uniq, first, count = np.unique(col, return_index=True, return_counts=True)
    starts = {int(c): (int(f), int(f + k)) for c, f, k in zip(uniq, first, count, strict=True)}
    return ChipDefects(col, arr, row, kind, defects.weak_factor, starts)


def expected_defects(spec: MachineSpec, arrays: int, defects: Defects) -> float:
    """The mean number of defects `draw_defects` draws in `arrays` arrays (for the memory budget)."""
    return defects.density * arrays * spec.cols * spec.rows


class _Cells:
    """Reading and writing single bits of the machine's cells at a set of places, on any backend."""

    def __init__(self, m: Any, col: np.ndarray, arr: np.ndarray, row: np.ndarray):
        self.m = m
        be = m.be
        lane_cols = getattr(m, "lane_cols", None)
        #: every place in a lane-invariant column (read-only here), or none: a set of places is one or the other
        self.shared = lane_cols is not None and m.shared is not None and bool((col >= lane_cols).all())
        assert self.shared or lane_cols is None or m.shared is None or bool((col < lane_cols).all())
        self.bit = (row & 63).astype(np.uint64)[:, None]
        self.idx = (be.put(col), be.put(arr), be.put(row >> 6))
        # the distinct words, for the write-back (two places in one word must not overwrite each other)
        key = (col * (int(arr.max(initial=0)) + 1) + arr) * m.words + (row >> 6)
        _, first, self.inv = np.unique(key, return_index=True, return_inverse=True)
        self.inv = self.inv.reshape(-1)
        self.uidx = (be.put(col[first]), be.put(arr[first]), be.put((row >> 6)[first]))
        self.clear = np.zeros(first.size, dtype=np.uint64)
        np.bitwise_or.at(self.clear, self.inv, np.uint64(1) << self.bit[:, 0])

    def get(self) -> np.ndarray:
        """uint8 [places, lanes]: the bit at each place."""
        c, a, w = self.idx
        m = self.m
        if self.shared:  # lane-invariant columns (inputs of a gate that writes a defect): one lane, broadcast
            words = np.broadcast_to(m.be.get_words(m.shared[c, a, :, w]), (self.bit.shape[0], m.lanes))
        else:
            words = m.be.get_words(m.cells[c, a, :, w])
        return ((words >> self.bit) & np.uint64(1)).astype(np.uint8)

    def put(self, bits: np.ndarray) -> None:
        """Set the bit at each place to bits [places, lanes] (0/1)."""
        c, a, w = self.uidx
        m = self.m
        words = m.be.get_words(m.cells[c, a, :, w]).copy()
        new = np.zeros_like(words)
        np.bitwise_or.at(new, self.inv, bits.astype(np.uint64) << self.bit)
        words &= ~self.clear[:, None]
        words |= new
        m.cells[c, a, :, w] = m.be.put(words)


def apply_stuck(m: Any) -> None:
    """Set every stuck cell of the machine's chip to its stuck value (a fresh chip, before any write)."""
    d = m.defects
    i = np.flatnonzero(d.kind != WEAK)
    if i.size:
        _Cells(m, d.col[i], d.arr[i], d.row[i]).put(np.broadcast_to(d.kind[i, None], (i.size, m.lanes)))


def written_columns(linked: Linked, b: BoundOp) -> range:
    """The columns an instruction that writes cells (a gate, fill, wr) writes."""
    dst = b.operands[0]
    if b.op.mnemonic != "wr":
        return range(dst, dst + 1)
    shape = source_shape(linked, b.operands[1])
    nf = shape[2] if len(shape) == 3 else 1
    return range(dst, dst + nf * b.attrs["bits"])


def guard(m: Any, b: BoundOp, fn: Callable[[], None]) -> Callable[[], None]:
    """`fn` (the runner of b, a gate, fill or wr), followed by the chip's defects in what b writes; fn itself
    when b writes no defective cell."""
    d = m.defects
    gate = b.op.unit is Unit.GATE
    lo, hi = b.arrays  # type: ignore[misc]
    r0, r1 = m.rows(b)
    sel = d.region(written_columns(m.linked, b), lo, hi, r0, r1, weak=gate)
    if sel.size == 0:
        return fn
    col, arr, row, kind = d.col[sel], d.arr[sel], d.row[sel], d.kind[sel]
    at = _Cells(m, col, arr, row)
    stuck = kind != WEAK
    s = kind[:, None].astype(np.uint8)
    weak = np.flatnonzero(~stuck)
    fault_kind = "gate" if gate else "write"
    correct = _correct(m, b, col, arr, row)
    extra: np.ndarray | None = None
    if gate and weak.size:
        mn = b.op.mnemonic
        rate = m.faults.gate(mn)
        extra = np.zeros(_inputs(b) + 1)
        for k in range(extra.size):
            p = rate.p_wrong(k, gate_output(mn, k))
            pw = max(p, min(0.5, d.factor * p))
            extra[k] = 0.0 if p >= 1.0 else (pw - p) / (1.0 - p)
        if not extra.any():
            extra = None

    def run() -> None:
        c, ones = correct()  # [places, lanes], before the write (a gate's output may be one of its inputs)
        fn()
        w = at.get()
        flipped = (w != c) & stuck[:, None]  # switching faults the stuck value undoes: no longer wrong bits
        cnt = m._counts.faults
        cnt[fault_kind] -= int(flipped.sum())
        cnt["defect"] = cnt.get("defect", 0) + int(((s != c) & stuck[:, None]).sum())
        new = np.where(stuck[:, None], s, w)
        if extra is not None:
            q = extra[ones[weak]]
            flip = (w[weak] == c[weak]) & (m.defect_rng.random(q.shape) < q)
            new[weak] ^= flip.astype(np.uint8)
            cnt["defect"] += int(flip.sum())
        at.put(new)

    return run


def _inputs(b: BoundOp) -> int:
    return len(b.op.operands) - 1


def _correct(
    m: Any, b: BoundOp, col: np.ndarray, arr: np.ndarray, row: np.ndarray
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A function giving (correct value, inputs at 1) [places, lanes] of b's write at each place, called just
    before b runs (the inputs at 1 only mean something for a gate)."""
    lanes = m.lanes
    if b.op.unit is Unit.GATE:
        mn = b.op.mnemonic
        table = np.array([gate_output(mn, k) for k in range(_inputs(b) + 1)], dtype=np.uint8)
        ins = [_Cells(m, np.full_like(col, c), arr, row) for c in b.operands[1:]]

        def gate() -> tuple[np.ndarray, np.ndarray]:
            ones = ins[0].get().astype(np.int64)  # [places, lanes]; every gate has an input
            for i in ins[1:]:
                ones += i.get()
            return table[ones], ones

        return gate
    if b.op.mnemonic == "fill":
        v = np.full((col.size, lanes), int(bool(b.operands[1])), dtype=np.uint8)
        return lambda: (v, v)
    # wr: bit (j % bits) of field j // bits of the source value for column dst + j, per array entry and row
    dst, src = b.operands
    bits = b.attrs["bits"]
    rep = b.attrs.get("repeat", 1)
    lo = b.arrays[0]  # type: ignore[index]
    r0 = m.rows(b)[0]
    j = col - dst
    f, k = j // bits, (j % bits).astype(np.int64)

    def wr() -> tuple[np.ndarray, np.ndarray]:
        val = np.asarray(m.load(src)).astype(np.int64)  # [S|1, n|1, nrows(, F)]
        if val.ndim == 3:
            val = val[..., None]
        entry = np.zeros_like(arr) if val.shape[1] == 1 else (arr - lo) // rep
        x = val[:, entry, row - r0, f]  # [S|1, places]
        c = ((x >> k) & 1).astype(np.uint8).T
        c = np.ascontiguousarray(np.broadcast_to(c, (col.size, lanes)))
        return c, c

    return wr
