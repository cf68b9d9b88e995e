"""The accumulator error that error-aware fine-tuning injects, stated in numpy (no PyTorch).

In the CRAM-ER hybrid an MVM output y = sum_k w_k x_k is accumulated as

    sum over (b, c) of s(b, c) * 2^(b+c) * popcount over rows of (w_b AND x_c)

with s(b, c) = -1 when exactly one of b, c is a sign bit.  Each partial-product
bit is one CRAM AND gate, sensed by the adder tree; it is wrong with
probability e_k when k of its operand bits w_b, x_c are 1 (k = 2: the product
is 1; cramc.ir.noisy.pp_error_rates derives (e_0, e_1, e_2) from the gate and
read rates of the fault model, input-dependent gate rates included).  Over the
R rows a K chunk occupies (K padded to the tile, padding rows hold zero
operands), with n_k of the R rows in operand state k, the error of the
accumulator is

    err = sum over (b, c) of s(b, c) 2^(b+c) (Binom(n_0, e_0) + Binom(n_1, e_1) - Binom(n_2, e_2)),

all binomials independent (`state_counts` gives n_k).  That is cramc.ir.noisy.mvm_error; this module adds
its exact mean and variance (`error_moments`), the per-layer parameters
(`MvmNoise`) that the PyTorch side uses and the exact sampler it draws with
(`sample_flips`), so the statistical tests can check them against the
gate-level interpreter without PyTorch installed.

`sample_flips` draws the same distribution flip by flip instead of one
binomial per count: every (output, term (b, c), counted row) is one Bernoulli
trial, so the trials of a whole MVM are laid out in one index space and only
the trials that flip are visited.  Candidates at pmax (the largest rate) come
from geometric gaps between them (exactly the positions of independent
Bernoulli(pmax) trials); a candidate is kept with probability e_k / pmax, k
read from its own operand bits (the thinning that makes each trial flip with
exactly e_k).  The work is proportional to the number of flips (a few per
output at realistic rates), not to outputs x terms.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cramc.errmodel import FaultModel
from cramc.ir.noisy import bit_planes, pp_error_rates


def counted_rows(k: int, rows: int) -> int:
    """Rows over which one K chunk's products are counted: K padded as the tile-mvm pass pads it.

    K is split into ceil(K / rows) chunks of equal height ceil(K / chunks); the
    padding rows hold zero products, which can flip like any other.
    """
    if k < 1 or rows < 1:
        raise ValueError(f"counted_rows: K={k}, rows={rows}")
    chunks = math.ceil(k / rows)
    return chunks * math.ceil(k / chunks)


def term_weights(wbits: int, xbits: int, xsigned: bool) -> np.ndarray:
    """s(b, c) * 2^(b+c) as an int64 array [wbits, xbits] (weights two's complement)."""
    out = np.empty((wbits, xbits), dtype=np.int64)
    for b in range(wbits):
        for c in range(xbits):
            neg = (b == wbits - 1) != bool(xsigned and c == xbits - 1)
            out[b, c] = -(1 << (b + c)) if neg else 1 << (b + c)
    return out


def rates_for(fm: FaultModel, wbits: int, xbits: int) -> np.ndarray:
    """(e_0, e_1, e_2) of every unprotected partial product, [wbits * xbits, 3], b major (as noisy.layer_rates)."""
    return np.tile(np.asarray(pp_error_rates(fm, 0), dtype=np.float64), (wbits * xbits, 1))


@dataclass(frozen=True)
class MvmNoise:
    """What the injected error of one MVM depends on besides its operands."""

    wbits: int
    xbits: int
    xsigned: bool
    rows: int  # rows counted per K chunk group: counted_rows(K / groups, array rows)
    rates: np.ndarray  # [wbits * xbits, 3] of (e_0, e_1, e_2) by operand bits at 1, b major
    groups: int = 1


def ones_counts(x: np.ndarray, w: np.ndarray, wbits: int, xbits: int, groups: int = 1) -> np.ndarray:
    """popcount(w_b AND x_c) over K for x [S, P, K] and w [N, K/groups]: int64 [S, P, N, wbits, xbits]."""
    s, p, k = x.shape
    n, kg = w.shape
    ng = n // groups
    xp = bit_planes(x, xbits)  # [S, P, K, xb]
    wp = bit_planes(w, wbits)  # [N, Kg, wb]
    out = np.empty((s, p, n, wbits, xbits), dtype=np.int64)
    for gi in range(groups):
        xs = xp[:, :, gi * kg : (gi + 1) * kg]
        ws = wp[gi * ng : (gi + 1) * ng]
        out[:, :, gi * ng : (gi + 1) * ng] = np.rint(np.einsum("spkc,nkb->spnbc", xs, ws)).astype(np.int64)
    return out


def operand_ones(x: np.ndarray, w: np.ndarray, wbits: int, xbits: int, groups: int = 1) -> np.ndarray:
    """popcount(w_b) + popcount(x_c) over K (each output's group of K): int64 [S, P, N, wbits, xbits]."""
    s, p, k = x.shape
    n, kg = w.shape
    ng = n // groups
    nx = bit_planes(x, xbits).reshape(s, p, groups, kg, xbits).sum(axis=3)  # [S, P, G, xb]
    nw = bit_planes(w, wbits).sum(axis=1)  # [N, wb]
    nx_n = np.repeat(nx, ng, axis=2)  # [S, P, N, xb]
    return np.rint(nx_n[:, :, :, None, :] + nw[None, None, :, :, None]).astype(np.int64)


def state_counts(x: np.ndarray, w: np.ndarray, spec: MvmNoise) -> np.ndarray:
    """Rows in operand state k = w_b + x_c (k = 0, 1, 2) of every term: int64 [S, P, N, wbits, xbits, 3].

    n_2 = popcount(w_b AND x_c), n_1 = popcount(w_b) + popcount(x_c) - 2 n_2, and n_0 the rest of the
    counted rows (padding rows hold zero operands).
    """
    n2 = ones_counts(x, w, spec.wbits, spec.xbits, spec.groups)
    n1 = operand_ones(x, w, spec.wbits, spec.xbits, spec.groups) - 2 * n2
    return np.stack([spec.rows - n1 - n2, n1, n2], axis=-1)


def error_moments(x: np.ndarray, w: np.ndarray, spec: MvmNoise) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance of the accumulator error, each float64 [S, P, N]."""
    n = state_counts(x, w, spec).astype(np.float64)
    e = spec.rates.reshape(spec.wbits, spec.xbits, 3)
    sign = np.array([1.0, 1.0, -1.0])  # states 0, 1 flip the product up, state 2 down
    t = term_weights(spec.wbits, spec.xbits, spec.xsigned).astype(np.float64)
    mean = (t * (n * e * sign).sum(-1)).sum(axis=(-2, -1))
    var = (t * t * (n * e * (1 - e)).sum(-1)).sum(axis=(-2, -1))
    return mean, var


#: Candidates drawn per round of `sample_flips` (bounds its memory, not its result).
FLIP_CHUNK = 1 << 16


def bernoulli_successes(
    total: int, p: float, rng: np.random.Generator, chunk: int = FLIP_CHUNK
) -> Iterator[np.ndarray]:
    """Sorted positions in [0, total) of the successes among `total` independent Bernoulli(p) trials (int64).

    Yields them in rounds of at most `chunk`.  The gap from one success to the next is Geometric(p) on
    {1, 2, ...}, drawn by inversion, floor(log(1 - u) / log(1 - p)) + 1 with u uniform on [0, 1): then
    P(gap > j) = P(1 - u <= (1 - p)^j) = (1 - p)^j (u is a multiple of 2^-53, so 1 - u is exact and never 0).
    """
    if not 0.0 < p <= 1.0:
        if p == 0.0:
            return
        raise ValueError(f"bernoulli_successes: p={p}")
    if p == 1.0:
        for start in range(0, total, chunk):
            yield np.arange(start, min(start + chunk, total), dtype=np.int64)
        return
    lq = math.log1p(-p)
    last = -1  # the last success so far
    while last < total - 1:
        want = (total - 1 - last) * p
        m = int(min(chunk, want + 6.0 * math.sqrt(want) + 16.0))
        u = rng.random(m)
        np.subtract(1.0, u, out=u)  # exact: u is a multiple of 2^-53 in [0, 1)
        np.log(u, out=u)
        u /= lq  # >= 0: its floor is the number of failures before the next success
        gap = u.astype(np.int64)
        gap += 1
        gap[0] += last
        pos = np.cumsum(gap, out=gap)
        if pos[-1] >= total:
            yield pos[: int(np.searchsorted(pos, total))]
            return
        yield pos
        last = int(pos[-1])


def sample_flips(x: np.ndarray, w: np.ndarray, spec: MvmNoise, rng: np.random.Generator) -> np.ndarray:
    """One exact draw of the accumulator error (float64 [S, P, N]) for integer x [S, P, K] and w [N, K/groups].

    The same distribution as the binomials of the module docstring, drawn flip by flip: trial t of the
    MVM is (output o = (s, p, n), term (b, c), counted row r), t = o * terms * rows + (b * xbits + c) * rows + r.
    Candidates are the successes of Bernoulli(pmax) over all trials (`bernoulli_successes`); a candidate
    is a flip with probability e_k / pmax, k = w_b + x_c its operand bits at 1 in row r (0 in a padding row,
    r >= K / groups).  A flip adds s(b, c) 2^(b+c) to its output, negated when the product was 1 (k = 2).
    """
    s, p, k = x.shape
    n, kg = w.shape
    ng = n // spec.groups
    xbits, rows = spec.xbits, spec.rows
    terms = spec.wbits * xbits
    rates = np.asarray(spec.rates, dtype=np.float64).reshape(terms, 3)
    pmax = float(rates.max()) if rates.size else 0.0
    outputs = s * p * n
    err = np.zeros(outputs, dtype=np.float64)
    if pmax <= 0.0 or outputs == 0:
        return err.reshape(s, p, n)
    # per trial of one output, rem = term * rows + r: the weight plane's row, the row of x read, x's bit mask
    term = np.repeat(np.arange(terms, dtype=np.int64), rows)
    row = np.tile(np.arange(rows, dtype=np.int64), terms)
    wrow = (term // xbits) * rows + row
    xrow = np.minimum(row, kg - 1)
    xmask = np.where(row < kg, np.int64(1) << (term % xbits), 0)  # padding rows: operands 0
    tw = term_weights(spec.wbits, xbits, spec.xsigned).reshape(-1).astype(np.float64)[term]
    flip = np.stack([tw, -tw], axis=1).reshape(-1)  # [rem * 2 + product]: a product 1 flips down
    keep = (rates / pmax).reshape(-1)  # [term * 3 + k]
    thin = not bool(np.all(keep == 1.0))
    # the weight bit-planes [N, wbits, rows] (0 in the padding rows), so one gather reads w_b in row r
    wplanes = np.zeros((n, spec.wbits, rows), dtype=np.int8)
    wi = np.ascontiguousarray(w, dtype=np.int64)
    wplanes[:, :, :kg] = (wi[:, None, :] >> np.arange(spec.wbits, dtype=np.int64)[None, :, None]) & 1
    wflat = wplanes.reshape(-1)
    xf = np.ascontiguousarray(x, dtype=np.int64).reshape(-1)
    per_out = terms * rows
    per_col = spec.wbits * rows
    for pos in bernoulli_successes(outputs * per_out, pmax, rng):
        o = pos // per_out
        rem = pos - o * per_out
        sp = o // n
        col = o - sp * n
        wbit = wflat[col * per_col + wrow[rem]]
        xoff = sp * k + xrow[rem]
        if spec.groups > 1:
            xoff += (col // ng) * kg
        xbit = (xf[xoff] & xmask[rem]) != 0
        prod = wbit & xbit
        weight = flip[rem * 2 + prod]
        if thin:
            state = wbit.astype(np.int64) + xbit
            weight[rng.random(pos.size) >= keep[term[rem] * 3 + state]] = 0.0
        first = int(o[0])  # o is sorted: this round's flips land in outputs first..o[-1]
        err[first : int(o[-1]) + 1] += np.bincount(o - first, weights=weight)
    return err.reshape(s, p, n)
