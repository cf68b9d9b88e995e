"""The adder trees beside each array, and the fused multiply-accumulate runs that feed them.

``tadd``/``tsub`` count the ones of a sensed column over the active rows of
each array and add the count, shifted, into an exact int64 accumulator; the
protected forms sense redundant copies first, voted by a CMOS majority voter
or compared and recomputed in CMOS.  What each opcode does (sign, copies,
recompute) is read from its `Tree` spec in the opcode table, never from its
mnemonic.

A compiled MVM is mostly pairs ``<gate> t, a, b`` + ``tadd|tsub acc, t, s``;
cramc.sim.fuse rewrites long runs of them into `FusedMac` nodes, and
`prepare_fused` here executes one as a few vector operations: every gate of
the run on a stacked [n, arrays, lanes, words] block (each output bit its own
fault draw, in the order sequential execution would draw them), every tree
operation as a popcount of its slice, and the scratch column left holding the
last gate's output, as sequential execution would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cramc.isa.linked import BoundOp
from cramc.sim.backend import Backend
from cramc.sim.faults import Rate, flip_bits
from cramc.sim.fuse import FusedMac
from cramc.sim.machine import Machine, word_range
from cramc.sim.ops.registry import impl, prepare, runner


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
    runner(m, b)()


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
    runner(m, b)()


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


# ---------------------------------------------------------------- fused multiply-accumulate runs
#: Words per lane of the stacked [pairs, arrays, words] block a fused run evaluates at once: a longer run is
#: evaluated in chunks of consecutive pairs (the same gates, faults and sums, in the same order), so that
#: its temporaries (`FUSED_TEMP_BLOCKS` blocks) stay a small, fixed share of a lane's memory.
FUSED_WORDS = 1 << 15
#: Blocks of that size alive at once in a fused chunk: the two gathered inputs and the gate output (NOT
#: forms: one more), the masked copy, the popcounts and their float64 copy (the SWAR popcount of the torch
#: backend: a few int64 temporaries).
FUSED_TEMP_BLOCKS = 6


def chunk_pairs(arrays: int, words: int) -> int:
    """Pairs per chunk of a fused run on `arrays` arrays whose rows span `words` words."""
    return max(1, FUSED_WORDS // max(1, arrays * words))


def prepare_fused(m: Machine, f: FusedMac) -> Callable[[], None]:
    """A runner for the fused run: its pairs in chunks of `chunk_pairs`, one after another."""
    g0 = f.first
    lo, hi = g0.arrays  # type: ignore[misc]
    w0, w1 = word_range(*m.rows(g0))
    k = chunk_pairs(hi - lo, w1 - w0)
    parts = [_prepare_chunk(m, f.pairs[i : i + k], last=i + k >= len(f.pairs)) for i in range(0, len(f.pairs), k)]
    if len(parts) == 1:
        return parts[0]

    def run() -> None:
        for part in parts:
            part()

    return run


def _prepare_chunk(m: Machine, pairs: tuple[tuple[BoundOp, BoundOp], ...], last: bool) -> Callable[[], None]:
    """Consecutive pairs of a fused run as a few vector operations; the `last` chunk leaves the scratch
    column holding its last gate's output, as sequential execution does."""
    be = m.be
    g0 = pairs[0][0]
    lo, hi = g0.arrays  # type: ignore[misc]
    r0, r1 = m.rows(g0)
    w0, w1 = word_range(r0, r1)
    t_col = g0.operands[0]
    a_idx = be.put(np.array([g.operands[1] for g, _ in pairs]))
    b_idx = be.put(np.array([g.operands[2] for g, _ in pairs]))
    logic = g0.op.logic
    rate = m.faults.gate(g0.op.mnemonic)
    whole = (r0 | r1) & 63 == 0
    mask = None if whole else m.mask(r0, r1, w0, w1)
    slots = np.array([t.operands[0] for _, t in pairs])
    weights = np.array([(1 if t.op.mnemonic == "tadd" else -1) << t.operands[2] for _, t in pairs], dtype=np.int64)
    uniq = np.unique(slots)
    slot_idx = be.put(uniq)
    # The accumulator updates as one product: acc[:, slot] += sum_i wmat[slot, i] * count_i, the
    # per-word (or per-byte) popcounts summed after it.  In float64 this is exact while no partial
    # sum can reach 2**53 (every one is an integer of magnitude at most sum|w| * rows).
    wmat_host = np.zeros((len(uniq), len(slots)))
    wmat_host[np.searchsorted(uniq, slots), np.arange(len(slots))] = weights
    wmat = be.floats(wmat_host)
    exact = float(np.abs(weights).sum()) * (r1 - r0) < 2.0**53
    groups = [(int(sl), be.put(np.flatnonzero(slots == sl)), be.put(weights[slots == sl])) for sl in uniq]
    full_rows = r0 == 0 and r1 >= m.spec.rows
    nA = hi - lo

    def run() -> None:
        cells = m.cells
        a = cells[a_idx, lo:hi, :, w0:w1]  # [n, nA, S, nw]
        b = cells[b_idx, lo:hi, :, w0:w1]
        res = logic(a, b)
        del a, b  # before the next temporaries: the chunk's peak memory is FUSED_TEMP_BLOCKS blocks
        res = be.contiguous(res)
        if not rate.zero:
            m.flip_region(res, r0, r1, rate, "gate")
        words = res & mask if mask is not None else res
        if exact:
            contrib = be.contract(wmat, be.popcounts(words))  # [k, nA * S]
            m.acc[lo:hi, slot_idx] += contrib.reshape(len(uniq), nA, -1).swapaxes(0, 1)
        else:
            cnt = be.popcount_sum(words)  # [n, nA, S]
            for sl, sel, w in groups:
                m.acc[lo:hi, sl] += be.weighted_sum(w, cnt[sel])
        if not last:
            return
        del words
        dst = cells[t_col, lo:hi, :, w0:w1]
        out = res[-1]
        if full_rows or mask is None:
            dst[...] = out
        else:
            dst[...] = (out & mask) | (dst & ~mask)

    return run
