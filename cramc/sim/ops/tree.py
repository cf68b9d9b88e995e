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

import functools
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
    writes = f.last_writes
    fast = _prepare_product(m, f.pairs, k, writes)
    if fast is not None:
        return fast
    # chunks of whole 8 x 8 (or 8) bit-pair blocks where they fit, so that `_outer_views` finds its pattern in
    # each; the faults are drawn over consecutive regions pair by pair whatever the chunks (same draws)
    k = k - k % 64 if k >= 64 else k - k % 8 if k >= 8 else k
    parts = [
        _prepare_chunk(m, f.pairs[i : i + k], tuple((j - i, c) for j, c in writes if i <= j < i + k))
        for i in range(0, len(f.pairs), k)
    ]
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


def _outer_views(
    m: Machine, a_cols: np.ndarray, b_cols: np.ndarray, lo: int, hi: int, w0: int, w1: int
) -> tuple[Callable[[], Any], Callable[[], Any]] | None:
    """The operands of a chunk as views that broadcast against each other, when its pairs are every
    (column i, column j) of two ranges in C order (a MAC's weight bit i times input bit j): [r, 1, nA, S|1, nw]
    and [1, q, nA, S|1, nw], r*q the pairs, so the gate logic reads the cells in place instead of from
    gathered copies.  None for any other pattern (and then the gatherers copy)."""
    n = a_cols.size
    found = None
    for rep, til, rep_first in ((a_cols, b_cols, True), (b_cols, a_cols, False)):
        q = int(np.argmax(rep != rep[0])) if (rep != rep[0]).any() else n
        if q < 2 or n % q:
            continue
        r = n // q
        if np.array_equal(rep, rep[0] + np.repeat(np.arange(r), q)) and np.array_equal(
            til, til[0] + np.tile(np.arange(q), r)
        ):
            found = (int(rep[0]), r, int(til[0]), q, rep_first)
            break
    if found is None:
        return None
    c_rep, r, c_til, q, rep_first = found
    if m.is_shared(c_rep) != m.is_shared(c_rep + r - 1) or m.is_shared(c_til) != m.is_shared(c_til + q - 1):
        return None
    rep_v = _range_view(m, c_rep, r, lo, hi, w0, w1, True)
    til_v = _range_view(m, c_til, q, lo, hi, w0, w1, False)
    return (rep_v, til_v) if rep_first else (til_v, rep_v)


def _range_view(m: Machine, c0: int, k: int, lo: int, hi: int, w0: int, w1: int, outer: bool) -> Callable[[], Any]:
    """Columns [c0, c0 + k) as a view [k, 1, nA, S|1, nw] (`outer`) or [1, k, nA, S|1, nw]."""
    shared = m.is_shared(c0)

    def get() -> Any:
        block = (m.shared if shared else m.cells)[c0 : c0 + k, lo:hi, :, w0:w1]
        return block[:, None] if outer else block[None]

    return get


def _prepare_chunk(
    m: Machine, pairs: tuple[tuple[BoundOp, BoundOp], ...], writes: tuple[tuple[int, int], ...]
) -> Callable[[], None]:
    """Consecutive pairs of a fused run as a few vector operations; `writes` (pair index in the chunk,
    column): the scratch columns whose last write falls in this chunk get that pair's output, as sequential
    execution leaves them."""
    be = m.be
    g0 = pairs[0][0]
    lo, hi = g0.arrays  # type: ignore[misc]
    r0, r1 = m.rows(g0)
    w0, w1 = word_range(r0, r1)
    region = (len(pairs), hi - lo, m.lanes, w1 - w0)
    a_cols = np.array([g.operands[1] for g, _ in pairs])
    b_cols = np.array([g.operands[2] for g, _ in pairs])
    logic = g0.op.logic
    assert logic is not None, f"{g0.op.mnemonic} is a gate: the opcode table gives its logic"
    rate = m.faults.gate(g0.op.mnemonic)
    by_ones = rate.by_ones is not None
    outer = None if by_ones or be.name != "numpy" else _outer_views(m, a_cols, b_cols, lo, hi, w0, w1)
    gather_a = outer[0] if outer else _gatherer(m, a_cols, lo, hi, w0, w1)
    gather_b = outer[1] if outer else _gatherer(m, b_cols, lo, hi, w0, w1)
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
    read = None if m.faults.read.zero else m.faults.read

    def run() -> None:
        cells = m.cells
        a = gather_a()  # [n, nA, S, nw], or [n, nA, 1, nw] from lane-invariant columns (or `_outer_views`)
        b = gather_b()
        res = logic(a, b)
        if outer:
            res = res.reshape(len(pairs), *res.shape[2:])  # [r, q, ...] -> [n, ...]: a fresh array, no copy
        res = be.contiguous(res) if tuple(res.shape) == region else be.broadcast(res, region)
        # An input-dependent rate reads the operands at its candidates: k = w + x for the AND of a weight
        # bit and an input bit.  Otherwise they go before the next temporaries: the chunk's peak memory is
        # FUSED_TEMP_BLOCKS blocks (the gathered operands and the output, at most, while faults are drawn).
        ins = [x if tuple(x.shape) == region else be.broadcast(x, region) for x in (a, b)] if by_ones else None
        del a, b
        if not rate.zero:
            m.flip_region(res, r0, r1, rate, "gate", ins)
        del ins
        if read is not None:
            # what each tree op senses: its pair's output with read faults, pair by pair in the order of the
            # stacked block, as sequential execution senses them (the cells keep the gate's output)
            words = be.copy(res)
            m.flip_region(words, r0, r1, m.faults.read, "read")
            if mask is not None:
                be.and_(words, mask, out=words)
        else:
            words = res & mask if mask is not None else res
        if exact:
            contrib = be.contract(wmat, be.popcounts(words))  # [k, nA * S]
            m.acc[lo:hi, slot_idx] += contrib.reshape(len(uniq), nA, -1).swapaxes(0, 1)
        else:
            cnt = be.popcount_sum(words)  # [n, nA, S]
            for sl, sel, w in groups:
                m.acc[lo:hi, sl] += be.weighted_sum(w, cnt[sel])
        if not writes:
            return
        del words
        for i, t_col in writes:
            dst = cells[t_col, lo:hi, :, w0:w1]
            out = res[i]
            if full_rows or mask is None:
                dst[...] = out
            else:
                dst[...] = (out & mask) | (dst & ~mask)

    return run


# ---------------------------------------------------------------- a fused run as a matrix product
#: Bytes of float64 operand bits a product step converts at once (a block of arrays), and the most bytes
#: of lane-invariant coefficients a run may keep (beyond it the run takes the stacked path above).
PRODUCT_BLOCK = 8 << 20
PRODUCT_COEFFS = 64 << 20
#: The most candidate faults per word (gate and read) for which the product path is the faster one.
PRODUCT_MAX_FAULTS = 0.2
#: With faults, the fewest lanes for which the product path is the faster one: on fewer the stacked path's
#: gathers are cheap and its faults cost a few ns each against about 200 ns here (light SqueezeNet, one lane).
PRODUCT_MIN_LANES = 8
#: uint8 -> its 8 bits as float64, little-endian (row r of a byte is bit r % 8)
_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.float64)
_BITS32 = _BITS.astype(np.float32)


def _truth(logic: Callable[..., Any], x_first: bool) -> tuple[int, int, int, int]:
    """(f00, f10, f01, f11) of a two-input gate as f(x, y): x the lane-invariant operand, y the other."""
    one, zero = np.array([np.uint64(1)]), np.array([np.uint64(0)])
    out = []
    for x, y in ((zero, zero), (one, zero), (zero, one), (one, one)):
        a, b = (x, y) if x_first else (y, x)
        out.append(int(logic(a, b)[0] & np.uint64(1)))
    return out[0], out[1], out[2], out[3]


def _prepare_product(
    m: Machine, pairs: tuple[tuple[BoundOp, BoundOp], ...], group: int, writes: tuple[tuple[int, int], ...]
) -> Callable[[], None] | None:
    """The fused run as a matrix product, when one operand of every gate is a lane-invariant column (the
    weights, `Machine.shared`) and the other a per-lane one (numpy only); None otherwise.

    A two-input gate's output bit is f00 + ex*x + ey*y + exy*x*y in its input bits x (lane-invariant) and y,
    so the weighted counts of a run are, per array a, slot k and lane s,
        acc[a, k, s] += c[a, k] + sum over (y column j, row r) of P[a, k, j, r] * Y[a, j, s, r]
    with P and c fixed by the lane-invariant columns (`_coefficients`, once per run: `Machine.run_cache`):
    one float64 matrix product per block of arrays, exact while no partial sum reaches 2**53 (checked
    here).  Faults are then applied where they fall (`_SparseFaults`): the gate stream's and the read
    stream's flips are drawn over the same regions, from the same draws, as the stacked path (and
    sequential execution) draws them (`Injector.sample`: pair by pair, each [arrays, lanes, words] region
    in C order), and each flipped bit moves its pair's count by one, the correct bit read from the operands
    at that place.  Each scratch column gets its last gate's output and faults (`writes`: pair, column), as
    sequential execution leaves it.  Dense faults (more than PRODUCT_MAX_FAULTS candidates a word) take the
    stacked path.
    """
    be = m.be
    if be.name != "numpy" or m.shared is None:
        return None
    g0 = pairs[0][0]
    # faults are applied one by one here (some microseconds each in numpy): dense faults go the stacked way
    density = 64 * (m.faults.gate(g0.op.mnemonic).pmax + m.faults.read.pmax)
    if density > PRODUCT_MAX_FAULTS or (density and m.lanes < PRODUCT_MIN_LANES):
        return None
    lo, hi = g0.arrays  # type: ignore[misc]
    r0, r1 = m.rows(g0)
    w0, w1 = word_range(r0, r1)
    nA, nw, S = hi - lo, w1 - w0, m.lanes
    a_cols = np.array([g.operands[1] for g, _ in pairs])
    b_cols = np.array([g.operands[2] for g, _ in pairs])
    a_sh = np.array([m.is_shared(int(c)) for c in a_cols])
    b_sh = np.array([m.is_shared(int(c)) for c in b_cols])
    if a_sh.all() and not b_sh.any():
        x_first, x_cols, y_cols = True, a_cols, b_cols
    elif b_sh.all() and not a_sh.any():
        x_first, x_cols, y_cols = False, b_cols, a_cols
    else:
        return None
    logic = g0.op.logic
    assert logic is not None
    slots = np.array([t.operands[0] for _, t in pairs])
    weights = np.array([t.op.tree.sign << t.operands[2] for _, t in pairs], dtype=np.int64)  # type: ignore[union-attr]
    uk, ki = np.unique(slots, return_inverse=True)
    # every partial sum of slot k's product is an integer of magnitude at most 2 * rows * sum |w| over the
    # slot's pairs: exact in float64 below 2**53, in float32 (half the bytes to convert and multiply) below 2**24
    bound = float(np.bincount(ki, np.abs(weights).astype(np.float64)).max()) * 2 * (r1 - r0)
    if bound >= 2.0**53:
        return None
    ftype = np.float32 if bound < 2.0**24 else np.float64
    bits_f = _BITS32 if ftype is np.float32 else _BITS
    ux, xi = np.unique(x_cols, return_inverse=True)
    uy, yi = np.unique(y_cols, return_inverse=True)
    K, ny = len(uk), len(uy)
    # the bytes that hold the active rows, and the rows they span
    off = r0 - 64 * w0
    b0, b1 = off >> 3, (off + (r1 - r0) + 7) >> 3
    nrow = 8 * (b1 - b0)
    if nA * K * ny * nrow * 8 > PRODUCT_COEFFS:
        return None
    key = ("product", id(pairs))
    got = m.run_cache.get(key)
    if got is None:
        P, c_int = _coefficients(m, pairs, (ki, xi, yi), (uk, ux, uy), weights, x_first)
        got = m.run_cache[key] = (pairs, P.astype(ftype), c_int)
    _, P, c_int = got
    # arrays per step: the float64 bits of a block stay within PRODUCT_BLOCK and within half what the stacked
    # path's chunk may hold (cramc.sim.memory plans the lanes by that)
    budget = min(PRODUCT_BLOCK, FUSED_TEMP_BLOCKS * FUSED_WORDS * 8 * S // 2)
    step = max(1, budget // max(1, S * ny * nrow * 8))
    acc = m.acc
    uk_idx = uk.astype(np.intp)
    ops_a = ux[xi] if x_first else uy[yi]  # the gate's first and second operand column of each pair
    ops_b = uy[yi] if x_first else ux[xi]
    faults = _SparseFaults(m, pairs, group, ops_a, ops_b, weights, slots, tuple(i for i, _ in writes))
    shared = m.shared
    full_rows = r0 == 0 and r1 >= m.spec.rows
    mask = None if (r0 | r1) & 63 == 0 else m.mask(r0, r1, w0, w1)

    def run() -> None:
        cells = m.cells
        for a0 in range(0, nA, step):
            a1 = min(nA, a0 + step)
            by = cells[uy, lo + a0 : lo + a1, :, w0:w1]  # [ny, nb, S, nw]
            by = by.view(np.uint8)[..., b0:b1].transpose(1, 2, 0, 3)  # [nb, S, ny, bytes]
            Y = bits_f.take(np.ascontiguousarray(by), axis=0).reshape(a1 - a0, S, ny * nrow)  # take: 4x [] here
            got = np.matmul(Y, P[a0:a1])  # [nb, S, K]
            cnt = np.rint(got).astype(np.int64).transpose(0, 2, 1) + c_int[a0:a1]
            sub = acc[lo + a0 : lo + a1]
            sub[:, uk_idx] += cnt
        flips = faults.apply()
        # each scratch column: its last gate's output, with its faults
        for i, t_col in writes:
            xa = (shared if m.is_shared(int(ops_a[i])) else cells)[ops_a[i], lo:hi, :, w0:w1]
            xb = (shared if m.is_shared(int(ops_b[i])) else cells)[ops_b[i], lo:hi, :, w0:w1]
            out = np.ascontiguousarray(np.broadcast_to(logic(xa, xb), (nA, S, nw)))
            last = flips.get(i)
            if last is not None and last.shape[1]:
                np.bitwise_xor.at(out.reshape(-1), last[0], last[1].view(np.uint64))
            dst = cells[t_col, lo:hi, :, w0:w1]
            if full_rows or mask is None:
                dst[...] = out
            else:
                dst[...] = (out & mask) | (dst & ~mask)

    return run


class _SparseFaults:
    """The gate and read faults of a fused run applied to its counts one by one (`_prepare_product`)."""

    def __init__(
        self,
        m: Machine,
        pairs: tuple[tuple[BoundOp, BoundOp], ...],
        group: int,
        ops_a: np.ndarray,
        ops_b: np.ndarray,
        weights: np.ndarray,
        slots: np.ndarray,
        keep: tuple[int, ...],
    ) -> None:
        g0 = pairs[0][0]
        self.keep = keep  # the pairs whose gate flips `apply` returns
        self.m, self.n_pairs, self.group = m, len(pairs), group
        self.lo, hi = g0.arrays  # type: ignore[misc]
        r0, r1 = m.rows(g0)
        self.w0, w1 = word_range(r0, r1)
        self.nw, self.S = w1 - self.w0, m.lanes
        self.region = (hi - self.lo) * self.S * self.nw  # words per pair: [arrays, lanes, words]
        self.m_arrays = m.cells.shape[1]  # the machine's arrays (cells and shared: [cols, arrays, lanes|1, W])
        # read and moved through flat views: `reshape(-1)` must not copy
        assert m.cells.flags.c_contiguous and m.acc.flags.c_contiguous and m.shared.flags.c_contiguous
        self.ops_a, self.ops_b, self.weights, self.slots = ops_a, ops_b, weights, slots
        self.logic = g0.op.logic
        g_rate, r_rate = m.faults.gate(g0.op.mnemonic), m.faults.read
        self.gate = None if g_rate.zero else m.injector("gate", g_rate, r0, r1)
        self.read = None if r_rate.zero else m.injector("read", r_rate, r0, r1)

    def _locate(self, p0: int, w: np.ndarray) -> tuple[np.ndarray, ...]:
        """Where flat places w of the regions from pair p0 on lie: (pair, array, lane, word in the cells'
        row of words), computed once and read by `_words` and `_move`."""
        i, rest = np.divmod(w, self.region)
        i += p0
        if self.nw == 1:  # rows within one word: rest = array * S + lane
            a, s = np.divmod(rest, self.S)
            return i, a, s, np.zeros_like(rest)
        q, wd = np.divmod(rest, self.nw)  # q = array * S + lane
        a, s = np.divmod(q, self.S)
        return i, a, s, wd

    def _words(self, cols: np.ndarray, loc: tuple[np.ndarray, ...]) -> np.ndarray:
        """The words of operand columns cols[pair] at the places `loc`: one flat gather per kind of column."""
        m = self.m
        i, a, s, wd = loc
        col = cols[i]
        A, W = self.m_arrays, m.words
        wd = wd + self.w0
        sh = col >= m.lane_cols
        if not sh.any():
            return m.cells.reshape(-1).take(((col * A + self.lo + a) * self.S + s) * W + wd)
        at_sh = (col * A + self.lo + a) * W + wd  # shared: [cols, arrays, 1, W]
        if sh.all():
            return m.shared.reshape(-1).take(at_sh)
        out = m.shared.reshape(-1).take(np.where(sh, at_sh, 0))
        ln = ~sh
        out[ln] = m.cells.reshape(-1).take(((col[ln] * A + self.lo + a[ln]) * self.S + s[ln]) * W + wd[ln])
        return out

    def _move(self, loc: tuple[np.ndarray, ...], delta: np.ndarray) -> None:
        """Add each flip's delta (+1 or -1 bit) times its pair's weight to its pair's slot."""
        i, a, s, _ = loc
        acc = self.m.acc  # [arrays, slots, lanes], C-contiguous
        at = ((self.lo + a) * acc.shape[1] + self.slots[i]) * self.S + s
        np.add.at(acc.reshape(-1), at, self.weights[i] * delta)

    def apply(self) -> dict[int, np.ndarray]:
        """Draw and apply the faults; return the gate flips of the regions of the pairs `keep` (pair -> [2, k]:
        flat words, masks as int64; none without gate faults)."""
        last: dict[int, np.ndarray] = {}
        for p0 in range(0, self.n_pairs, self.group):
            n = min(self.group, self.n_pairs - p0)
            value = functools.partial(self._value, p0)
            inputs = functools.partial(self._inputs, p0)
            gw = np.zeros(0, dtype=np.int64)
            gm = np.zeros(0, dtype=np.uint64)
            if self.gate is not None:
                gw, gm = self.gate.sample(n * self.region, value, inputs)  # type: ignore[attr-defined]
                if gw.size:
                    loc = self._locate(p0, gw)
                    wrong = (self._gate_at(loc) & gm) != 0  # the correct bit was 1: the count loses one
                    self._move(loc, np.where(wrong, -1, 1))
                for j in self.keep:
                    if p0 <= j < p0 + n:
                        w_lo = (j - p0) * self.region
                        sel = (gw >= w_lo) & (gw < w_lo + self.region)
                        last[j] = np.stack([gw[sel] - w_lo, gm[sel].view(np.int64)])
            if self.read is not None:
                sensed = functools.partial(self._sensed, p0, gw, gm)  # the gate's output with its faults
                rw, rm = self.read.sample(n * self.region, sensed, inputs)  # type: ignore[attr-defined]
                if rw.size:
                    loc = self._locate(p0, rw)
                    v = self._gate_at(loc)
                    if gw.size:
                        v ^= _flips_at(gw, gm, rw)
                    self._move(loc, np.where((v & rm) != 0, -1, 1))
        return last

    def _gate_at(self, loc: tuple[np.ndarray, ...]) -> np.ndarray:
        return self.logic(self._words(self.ops_a, loc), self._words(self.ops_b, loc))  # type: ignore[misc]

    def _value(self, p0: int, w: np.ndarray) -> np.ndarray:
        return self._gate_at(self._locate(p0, w))

    def _inputs(self, p0: int, w: np.ndarray) -> list[np.ndarray]:
        loc = self._locate(p0, w)
        return [self._words(self.ops_a, loc), self._words(self.ops_b, loc)]

    def _sensed(self, p0: int, gw: np.ndarray, gm: np.ndarray, w: np.ndarray) -> np.ndarray:
        v = self._value(p0, w)
        if gw.size:
            v ^= _flips_at(gw, gm, w)
        return v


def _coefficients(
    m: Machine,
    pairs: tuple[tuple[BoundOp, BoundOp], ...],
    idx: tuple[np.ndarray, np.ndarray, np.ndarray],
    uniq: tuple[np.ndarray, np.ndarray, np.ndarray],
    weights: np.ndarray,
    x_first: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """P [nA, ny * nrow, K] and c [nA, K, 1] of `_prepare_product` from the lane-invariant columns."""
    g0 = pairs[0][0]
    lo, hi = g0.arrays  # type: ignore[misc]
    r0, r1 = m.rows(g0)
    w0, w1 = word_range(r0, r1)
    nA = hi - lo
    (ki, xi, yi), (uk, ux, uy) = idx, uniq
    K, nx, ny = len(uk), len(ux), len(uy)
    logic = g0.op.logic
    assert logic is not None
    f00, f10, f01, f11 = _truth(logic, x_first)
    ex, ey, exy = f10 - f00, f01 - f00, f11 - f10 - f01 + f00
    off = r0 - 64 * w0
    b0, b1 = off >> 3, (off + (r1 - r0) + 7) >> 3
    nrow = 8 * (b1 - b0)
    # X: the lane-invariant operand bits [nx, nA, nrow] over those bytes, zero outside the active rows
    xw = np.ascontiguousarray(m.shared[ux, lo:hi, 0, w0:w1])  # [nx, nA, nw]
    X = _BITS[xw.view(np.uint8)[..., b0:b1]].reshape(nx, nA, nrow)
    act = np.zeros(nrow)
    act[off - 8 * b0 : off - 8 * b0 + (r1 - r0)] = 1.0
    X *= act
    # P[a, j, r, k] = sum over the pairs i of slot k and y column j of w_i * (ey + exy * X[x_i, a, r]) (rows
    # outside the active range zero); c[a, k] = sum over slot k of w_i * (f00 * R + ex * |X[x_i, a]|)
    Cxy = np.zeros((K, ny, nx))
    np.add.at(Cxy, (ki, yi, xi), weights * exy)
    Dy = np.zeros((K, ny))
    np.add.at(Dy, (ki, yi), weights * ey)
    P = np.tensordot(Cxy, X, axes=(2, 0))  # [K, ny, nA, nrow]
    P += Dy[:, :, None, None] * act
    P = np.ascontiguousarray(P.transpose(2, 1, 3, 0).reshape(nA, ny * nrow, K))
    Cx = np.zeros((K, nx))
    np.add.at(Cx, (ki, xi), weights)
    c = (f00 * (r1 - r0)) * Cx.sum(axis=1)[None, :] + ex * (Cx @ X.sum(axis=2)).T  # [nA, K]
    return P, np.rint(c).astype(np.int64)[:, :, None]


def _flips_at(fw: np.ndarray, fm: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The OR of the flip masks (fw, fm: sorted word places, one bit each) at each of the words w."""
    out = np.zeros(w.size, dtype=np.uint64)
    lo_i = np.searchsorted(fw, w, side="left")
    hi_i = np.searchsorted(fw, w, side="right")
    for k in np.flatnonzero(hi_i > lo_i):
        out[k] = np.bitwise_or.reduce(fm[lo_i[k] : hi_i[k]])
    return out
