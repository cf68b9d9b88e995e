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
fault draw, in the order sequential execution would draw them; an
input-dependent rate reads the stacked operands at its candidates), every tree
operation as a popcount of its slice, and the scratch column left holding the
last gate's output, as sequential execution would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cramc.isa import counting
from cramc.isa.linked import BoundOp
from cramc.isa.opcodes import OPCODES, Kind
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


#: The plain adder-tree ops (one column sensed) and the protected ones (copies voted or compared).
PLAIN = tuple(mn for mn, op in OPCODES.items() if op.tree is not None and op.tree.copies == 1)
PROTECTED = tuple(mn for mn, op in OPCODES.items() if op.tree is not None and op.tree.copies > 1)


@impl(*PLAIN)
def tree(m: Machine, b: BoundOp) -> None:
    runner(m, b)()


@prepare(*PLAIN)
def _prepare_tree(m: Machine, b: BoundOp) -> Callable[[], None]:
    """popcount of the active rows of one column per array (and lane), shifted into an accumulator."""
    lo, hi = b.arrays  # type: ignore[misc]
    slot, col, shift = b.operands
    r0, r1 = m.rows(b)
    w0, w1 = word_range(r0, r1)
    be = m.be
    src = m.column(col, lo, hi, w0, w1)  # [nA, S, nw]
    whole = (r0 | r1) & 63 == 0
    mask = None if whole else m.mask(r0, r1, w0, w1)
    read = None if m.faults.read.zero else m.injector("read", m.faults.read, r0, r1)
    tree_p = m.faults.tree
    width = max(int(r1 - r0).bit_length(), 1)
    sign = b.op.tree.sign  # type: ignore[union-attr]
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


@impl(*PROTECTED)
def tree_protected(m: Machine, b: BoundOp) -> None:
    runner(m, b)()


@prepare(*PROTECTED)
def _prepare_tree_protected(m: Machine, b: BoundOp) -> Callable[[], None]:
    """Adder tree behind a CMOS voter (tv*) or a duplicate-and-compare with CMOS recompute (td*)."""
    lo, hi = b.arrays  # type: ignore[misc]
    spec = b.op.tree
    assert spec is not None
    cols = [v for o, v in zip(b.op.operands, b.operands, strict=False) if o.kind is Kind.COL]
    names = [o.name for o in b.op.operands]
    recompute = [b.operands[names.index(name)] for name in spec.recompute]
    slot, shift = b.operands[0], b.operands[-1]
    r0, r1 = m.rows(b)
    w0, w1 = word_range(r0, r1)
    be = m.be
    # the copies first, then the operands of a recompute: the order the tree senses them (and draws read faults)
    srcs = [m.column(c, lo, hi, w0, w1) for c in (*cols[: spec.copies], *recompute)]
    whole = (r0 | r1) & 63 == 0
    mask = None if whole else m.mask(r0, r1, w0, w1)
    read = None if m.faults.read.zero else m.injector("read", m.faults.read, r0, r1)
    vote, sign = spec.vote, spec.sign
    tree_p = m.faults.tree
    width = max(int(r1 - r0).bit_length(), 1)
    acc = m.acc[lo:hi, slot]
    # The interpreter's tally counts what the instruction fixes; a recompute adds what the counting rule
    # says per recomputed row (the operands it senses, the recompute itself).
    per_recompute = counting.rule(b.op).per_measured(
        counting.instruction_factors(b, m.spec.rows), counting.Factor.RECOMPUTED
    )

    def sensed(i: int) -> Any:
        return _sense(be, srcs[i], read)  # run() never writes into what it senses

    def run() -> None:
        a, c = sensed(0), sensed(1)
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
                prod = sensed(2)
                for i in range(3, len(srcs)):
                    prod = prod & sensed(i)  # the product bit: the AND of the recompute operands
                words = (a & ~diff) | (prod & diff)
                cnt = m._counts
                for counter, k in per_recompute:
                    setattr(cnt, counter, getattr(cnt, counter) + k * nd)
        if mask is not None:
            words = words & mask
        count = be.popcount_sum(words)
        if tree_p:
            count = _count_faults(m, count, width)  # the voter and the recompute sit before the tree
        _accumulate(be, acc, count, shift, sign)

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


def _gatherer(m: Machine, cols: np.ndarray, lo: int, hi: int, w0: int, w1: int) -> Callable[[], Any]:
    """A function giving words [n, nA, S, nw] of columns `cols` (n of them), arrays [lo, hi), words [w0, w1):
    [n, nA, 1, nw] when every one is lane-invariant (`Machine.shared`), which the gate logic broadcasts."""
    be = m.be
    shared = np.array([m.is_shared(int(c)) for c in cols])
    if not shared.any():
        idx = be.put(cols)
        return lambda: m.cells[idx, lo:hi, :, w0:w1]
    if shared.all():
        idx = be.put(cols)
        return lambda: m.shared[idx, lo:hi, :, w0:w1]
    lane_at, lane_idx = be.put(np.flatnonzero(~shared)), be.put(cols[~shared])
    sh_at, sh_idx = be.put(np.flatnonzero(shared)), be.put(cols[shared])
    shape = (cols.size, hi - lo, m.lanes, w1 - w0)

    def mixed() -> Any:
        out = be.empty_words(shape)
        out[lane_at] = m.cells[lane_idx, lo:hi, :, w0:w1]
        out[sh_at] = m.shared[sh_idx, lo:hi, :, w0:w1]
        return out

    return mixed


def _prepare_chunk(m: Machine, pairs: tuple[tuple[BoundOp, BoundOp], ...], last: bool) -> Callable[[], None]:
    """Consecutive pairs of a fused run as a few vector operations; the `last` chunk leaves the scratch
    column holding its last gate's output, as sequential execution does."""
    be = m.be
    g0 = pairs[0][0]
    lo, hi = g0.arrays  # type: ignore[misc]
    r0, r1 = m.rows(g0)
    w0, w1 = word_range(r0, r1)
    t_col = g0.operands[0]
    region = (len(pairs), hi - lo, m.lanes, w1 - w0)
    gather_a = _gatherer(m, np.array([g.operands[1] for g, _ in pairs]), lo, hi, w0, w1)
    gather_b = _gatherer(m, np.array([g.operands[2] for g, _ in pairs]), lo, hi, w0, w1)
    logic = g0.op.logic
    assert logic is not None, f"{g0.op.mnemonic} is a gate: the opcode table gives its logic"
    rate = m.faults.gate(g0.op.mnemonic)
    by_ones = rate.by_ones is not None
    whole = (r0 | r1) & 63 == 0
    mask = None if whole else m.mask(r0, r1, w0, w1)
    slots = np.array([t.operands[0] for _, t in pairs])
    weights = np.array([t.op.tree.sign << t.operands[2] for _, t in pairs], dtype=np.int64)  # type: ignore[union-attr]
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
        a = gather_a()  # [n, nA, S, nw], or [n, nA, 1, nw] from lane-invariant columns
        b = gather_b()
        res = logic(a, b)
        res = be.contiguous(res) if tuple(res.shape) == region else be.broadcast(res, region)
        # An input-dependent rate reads the operands at its candidates: k = w + x for the AND of a weight
        # bit and an input bit.  Otherwise they go before the next temporaries: the chunk's peak memory is
        # FUSED_TEMP_BLOCKS blocks (the gathered operands and the output, at most, while faults are drawn).
        ins = [x if tuple(x.shape) == region else be.broadcast(x, region) for x in (a, b)] if by_ones else None
        del a, b
        if not rate.zero:
            m.flip_region(res, r0, r1, rate, "gate", ins)
        del ins
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
