"""Vectorised execution of multiply-accumulate runs: gate into a scratch column, then count it.

A compiled MVM spends nearly all its instructions in pairs
    <gate> t, a_i, b_i        ; one partial-product bit per row
    tadd|tsub y_i, t, s_i     ; the adder tree counts it
on the same arrays and rows.  Executing such a run one instruction at a time
costs a Python dispatch per micro-op; here the whole run is evaluated in a few
numpy operations: every gate of the run on a stacked [n, arrays, lanes, words]
block (each output bit gets its own Bernoulli fault draw, as it would one at a
time), every tree operation as a popcount of its slice, and the scratch column
is left holding the last gate's output, as sequential execution would.  Every
gate and tree operation is still evaluated (and counted, by the program's `Tally`); only the interleaving
of Python calls changes.  The fault stream walks the stacked block in the same
order as it would walk the gates one after another, so a fused run injects the
very same faults as an unfused one (a test checks this).

Runs are fused only when nothing can observe the difference: no read or
adder-tree faults configured, no instruction tracing, gate inputs distinct from
the scratch column, one gate type, one array set and one row range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cramc.isa.linked import BoundOp, Loop, Node
from cramc.isa.opcodes import Unit

if TYPE_CHECKING:
    from cramc.sim.interp import Machine

MIN_PAIRS = 4


@dataclass(frozen=True, eq=False)
class FusedMac:
    pairs: tuple[tuple[BoundOp, BoundOp], ...]

    @property
    def first(self) -> BoundOp:
        return self.pairs[0][0]


def _pairable(g: BoundOp, t: BoundOp) -> bool:
    if g.op.unit is not Unit.GATE or t.op.mnemonic not in ("tadd", "tsub"):
        return False
    dst, *srcs = g.operands
    return len(srcs) == 2 and dst not in srcs and t.operands[1] == dst and g.arrays == t.arrays and g.rows == t.rows


def fuse(nodes: tuple[Node, ...]) -> tuple[Node | FusedMac, ...]:
    out: list[Node | FusedMac] = []
    i = 0
    while i < len(nodes):
        n = nodes[i]
        if isinstance(n, Loop):
            out.append(Loop(n.var, n.count, fuse(n.body), n.loc))  # type: ignore[arg-type]
            i += 1
            continue
        run: list[tuple[BoundOp, BoundOp]] = []
        j = i
        while j + 1 < len(nodes) and isinstance(nodes[j], BoundOp) and isinstance(nodes[j + 1], BoundOp):
            g, t = nodes[j], nodes[j + 1]
            if not _pairable(g, t):  # type: ignore[arg-type]
                break
            if run and (
                g.op is not run[0][0].op
                or g.operands[0] != run[0][0].operands[0]  # type: ignore[union-attr]
                or g.arrays != run[0][0].arrays
                or g.rows != run[0][0].rows
            ):  # type: ignore[union-attr]
                break
            run.append((g, t))  # type: ignore[arg-type]
            j += 2
        if len(run) >= MIN_PAIRS:
            out.append(FusedMac(tuple(run)))
            i = j
        else:
            out.append(n)
            i += 1
    return tuple(out)


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
    from cramc.sim.interp import word_range

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
    from cramc.sim.interp import word_range

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
