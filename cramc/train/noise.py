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
output at realistic rates), not to outputs x terms.  A gap is
floor(E * (1 / lambda)) + 1, E standard exponential and lambda = -log(1 - pmax)
(exactly geometric; numpy's ziggurat draws E without a logarithm).  The
candidates are visited by a compiled loop (numba, the optional extra
``cramc[fast]``) or, without numba, by the vectorised numpy reference; both
read the same random numbers and give the same draw bit for bit.

Why flip by flip and not one binomial per (output, term group), as cramc.ir.noisy.mvm_error draws: both
are exact, and nothing downstream reads where a flip lies (the backward pass takes the error as a
constant; fine-tuning injects the unprotected rates of scheme 0, so there is no dup comparison, recompute
or defect row that would), so the choice is cost alone.  Per output the binomials need the state counts
of every term (bit-plane matmuls: two flops per trial, whether it flips or not) and about 44 draws (22
groups of equal weight and rates, `qat.term_groups`, two binomials each), while the flips number
64 * rows * p per output: 1.6 to 26 on LeNet-5 at p = 1e-3 (0.025 to 0.4 per term).  Measured on a
batch of 32 (2026-12-02, this 2-core machine): conv1 8.8 ms flip by flip against 132 ms for the counts
alone and 246 ms for mvm_error; conv2 12.3 against 66 and 142 ms; the 400-row Gemm 2.9 against 9.7 and
23.5 ms.  Counts and binomials win only where flips per (output, term) are many (rows * p >> 1).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

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
#: How sample_flips visits the candidates: "numba" (a compiled loop, cramc[fast]), "numpy" (the reference,
#: vectorised per round) or "auto" (numba where it is installed).  Both consume the same random stream and
#: give the same draw bit for bit (tests/finetune/test_flip_kernel.py).
KERNELS = ("auto", "numba", "numpy")


def gap_scale(p: float) -> float:
    """lambda = -log(1 - p): floor(E / lambda), E standard exponential, is Geometric(p) on {0, 1, ...}."""
    return -math.log1p(-p)


def _round_size(remaining: int, p: float, chunk: int) -> int:
    """Candidates drawn in one round: enough for the `remaining` trials with high probability, at most `chunk`."""
    want = remaining * p
    return int(min(chunk, want + 6.0 * math.sqrt(want) + 16.0))


def _gaps(e: np.ndarray, inv: float, total: int) -> np.ndarray:
    """The candidates' distances, floor(E * inv) + 1 with inv = 1 / lambda, from a round's exponentials (capped
    at `total`).  A product, not a quotient: in the compiled loop a division would sit on the chain from one
    candidate to the next (11 -> 8 ns a candidate); 1 / lambda is rounded once, a relative 1e-16 on the
    geometric's rate, below what the float quotient resolves anyway."""
    g = e * inv
    np.minimum(g, float(total), out=g)  # a gap past the end stops the draw: no int64 overflow at tiny p
    out = g.astype(np.int64)
    out += 1
    return out


def bernoulli_successes(
    total: int, p: float, rng: np.random.Generator, chunk: int = FLIP_CHUNK
) -> Iterator[np.ndarray]:
    """Sorted positions in [0, total) of the successes among `total` independent Bernoulli(p) trials (int64).

    Yields them in rounds of at most `chunk`.  The gap from one success to the next is Geometric(p) on
    {1, 2, ...}: floor(E / lambda) + 1 with E standard exponential and lambda = -log(1 - p), since
    P(floor(E / lambda) >= j) = P(E >= j lambda) = exp(-j lambda) = (1 - p)^j (computed as E times 1 / lambda,
    `_gaps`).  A round draws its E with one `rng.standard_exponential(m)` (numpy's ziggurat, no logarithm
    per draw).
    """
    if not 0.0 < p <= 1.0:
        if p == 0.0:
            return
        raise ValueError(f"bernoulli_successes: p={p}")
    if p == 1.0:
        for start in range(0, total, chunk):
            yield np.arange(start, min(start + chunk, total), dtype=np.int64)
        return
    inv = 1.0 / gap_scale(p)
    last = -1  # the last success so far
    while last < total - 1:
        gap = _gaps(rng.standard_exponential(_round_size(total - 1 - last, p, chunk)), inv, total)
        gap[0] += last
        pos = np.cumsum(gap, out=gap)
        if pos[-1] >= total:
            yield pos[: int(np.searchsorted(pos, total))]
            return
        yield pos
        last = int(pos[-1])


@dataclass
class _Trials:
    """sample_flips's index space and the lookup tables its candidates are decoded with.

    Trial t = o * per_out + rem of output o = (sp, col) = (sample and position, column), rem = term * rows + r.
    """

    total: int  # trials in the MVM
    per_out: int  # trials per output: terms * rows
    n: int  # columns (outputs per position)
    ng: int  # columns per group
    k: int  # x's row length
    kg: int  # K rows per group
    goff: np.ndarray  # [col]: the offset of its group's K rows in x, (col // ng) * kg
    wmask: np.ndarray  # [rem]: 1 << b, 0 in a padding row (operands 0)
    xrow: np.ndarray  # [rem]: the row of x read (any row for a padding row: its mask is 0)
    xmask: np.ndarray  # [rem]: 1 << c, 0 in a padding row (operands 0)
    flip: np.ndarray  # [rem * 2 + product]: s(b, c) 2^(b+c), negated for a product of 1
    kterm: np.ndarray  # [rem]: the term, for keep
    keep: np.ndarray  # [term * 3 + k]: e_k / pmax
    thin: bool  # some keep below 1
    wv: np.ndarray  # [col * kg + xrow]: the weights as int64 (w_b = wv & wmask)

    def kernel_args(self) -> tuple[Any, ...]:
        """The arguments of `_round_loop` between `last` and `xf`, in its order."""
        return (
            self.total, self.per_out, self.n, self.goff, self.k, self.kg, self.wmask, self.xrow,
            self.xmask, self.flip, self.kterm, self.keep, self.thin, self.wv,
        )  # fmt: skip


@functools.lru_cache(maxsize=64)
def _tables(
    wbits: int, xbits: int, xsigned: bool, rows: int, kg: int, n: int, groups: int, rates: tuple[float, ...]
) -> tuple[np.ndarray, ...]:
    """The tables of `_Trials` that depend on the MVM's shape and rates only (cached: read-only, shared).

    goff, wmask, xrow, xmask, flip, kterm, keep (see `_Trials`)."""
    terms = wbits * xbits
    term = np.repeat(np.arange(terms, dtype=np.int64), rows)
    row = np.tile(np.arange(rows, dtype=np.int64), terms)
    tw = term_weights(wbits, xbits, xsigned).reshape(-1).astype(np.float64)[term]
    r = np.asarray(rates, dtype=np.float64)
    out = (
        (np.arange(n, dtype=np.int64) // (n // groups)) * kg,
        np.where(row < kg, np.int64(1) << (term // xbits), 0).astype(np.int32),  # int32: half the cache
        np.minimum(row, kg - 1).astype(np.int32),
        np.where(row < kg, np.int64(1) << (term % xbits), 0).astype(np.int32),
        np.stack([tw, -tw], axis=1).reshape(-1),
        term.astype(np.int32),
        r / r.max(),
    )
    for a in out:
        a.setflags(write=False)
    return out


def _trials(s: int, p: int, k: int, w: np.ndarray, spec: MvmNoise, rates: np.ndarray) -> _Trials:
    n, kg = w.shape
    rows = spec.rows
    key = tuple(rates.reshape(-1).tolist())
    goff, wmask, xrow, xmask, flip, kterm, keep = _tables(
        spec.wbits, spec.xbits, spec.xsigned, rows, kg, n, spec.groups, key
    )
    return _Trials(
        total=s * p * n * spec.wbits * spec.xbits * rows,
        per_out=spec.wbits * spec.xbits * rows,
        n=n,
        ng=n // spec.groups,
        k=k,
        kg=kg,
        goff=goff,
        wmask=wmask,
        xrow=xrow,
        xmask=xmask,
        flip=flip,
        kterm=kterm,
        keep=keep,
        thin=not bool(np.all(keep == 1.0)),
        wv=np.ascontiguousarray(w, dtype=np.int64).reshape(-1),
    )


def sample_flips(
    x: np.ndarray,
    w: np.ndarray,
    spec: MvmNoise,
    rng: np.random.Generator,
    kernel: str = "auto",
    threads: int = 1,
) -> np.ndarray:
    """One exact draw of the accumulator error (float64 [S, P, N]) for integer x [S, P, K] and w [N, K/groups].

    The same distribution as the binomials of the module docstring, drawn flip by flip: trial t of the
    MVM is (output o = (s, p, n), term (b, c), counted row r), t = o * terms * rows + (b * xbits + c) * rows + r.
    Candidates are the successes of Bernoulli(pmax) over all trials (the gaps of `bernoulli_successes`);
    a candidate is a flip with probability e_k / pmax, k = w_b + x_c its operand bits at 1 in row r (0 in a
    padding row, r >= K / groups).  A flip adds s(b, c) 2^(b+c) to its output, negated when the product
    was 1 (k = 2).

    x may be integer or float with integer values (float32 holds the 8- and 16-bit operands exactly; the
    numba kernel reads it as it is, the numpy reference converts it to int64).  Each round draws m
    exponentials (the gaps) and, when some e_k < pmax, m uniforms (one per candidate, the thinning); both
    kernels (`KERNELS`) consume exactly these, so they return the same draw for the same `rng` state.
    The samples are drawn in PARTS blocks from child streams of `rng` (Generator.spawn); with `threads` > 1
    the numba kernel draws the blocks in parallel threads, with the same result.
    """
    if kernel not in KERNELS:
        raise ValueError(f"sample_flips: kernel {kernel!r}, expected one of {', '.join(KERNELS)}")
    s, p, k = x.shape
    n = w.shape[0]
    terms = spec.wbits * spec.xbits
    rates = np.asarray(spec.rates, dtype=np.float64).reshape(terms, 3)
    pmax = float(rates.max()) if rates.size else 0.0
    outputs = s * p * n
    err = np.zeros(outputs, dtype=np.float64)
    if pmax <= 0.0 or outputs == 0:
        return err.reshape(s, p, n)
    if pmax > 1.0:
        raise ValueError(f"sample_flips: rate {pmax} > 1")
    compiled = _numba_kernel() if kernel != "numpy" else None
    if kernel == "numba" and compiled is None:
        raise ValueError("sample_flips: kernel 'numba' needs numba (pip install 'cramc[fast]')")
    if compiled is not None:
        keep_as = x.dtype if x.dtype in (np.float32, np.float64) else np.int64  # one compiled variant each
        xf = np.ascontiguousarray(x, dtype=keep_as).reshape(-1)
    else:
        xf = np.ascontiguousarray(x, dtype=np.int64).reshape(-1)
    # the samples in PARTS blocks, each drawn from its own child stream: the draw does not depend on `threads`
    bounds = [s * i // PARTS for i in range(PARTS + 1)] if s >= PARTS else [0, s]
    streams = rng.spawn(len(bounds) - 1) if len(bounds) > 2 else [rng]
    jobs = [
        (_trials(b1 - b0, p, k, w, spec, rates), xf[b0 * p * k : b1 * p * k], err[b0 * p * n : b1 * p * n], g)
        for b0, b1, g in zip(bounds[:-1], bounds[1:], streams, strict=True)
    ]

    def one(j: tuple[_Trials, np.ndarray, np.ndarray, np.random.Generator]) -> None:
        _draw(j[0], j[1], j[2], j[3], pmax, compiled)

    if compiled is not None and threads > 1 and len(jobs) > 1:
        list(_pool().map(one, jobs))  # the kernel and numpy's bulk draws release the GIL
    else:
        for j in jobs:
            one(j)
    return err.reshape(s, p, n)


#: sample_flips splits the samples of an MVM into this many blocks, each with its own stream (rng.spawn)
PARTS = 2
_POOL: list[ThreadPoolExecutor] = []


def _pool() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=PARTS, thread_name_prefix="cramc-flips"))
    return _POOL[0]


def _draw(t: _Trials, xf: np.ndarray, err: np.ndarray, rng: np.random.Generator, pmax: float, compiled: Any) -> None:
    """The rounds of one block: m exponentials (and m thinning uniforms) a round, visited by either kernel."""
    inv = 1.0 / gap_scale(pmax) if pmax < 1.0 else 0.0  # pmax = 1: every E is 0, every gap 1
    none = np.zeros(0, dtype=np.float64)
    last = -1  # the last candidate so far
    while last < t.total - 1:
        m = _round_size(t.total - 1 - last, pmax, FLIP_CHUNK)
        if pmax < 1.0:
            e = rng.standard_exponential(m)
        else:
            e = np.zeros(m)  # every trial a candidate: gaps of 1
        u = rng.random(m) if t.thin else none
        if compiled is not None:
            last = int(compiled(e, u, inv, last, *t.kernel_args(), xf, err))
        else:
            last = _round_numpy(e, u, inv, last, t, xf, err)


def _round_numpy(
    e: np.ndarray, u: np.ndarray, inv: float, last: int, t: _Trials, xf: np.ndarray, err: np.ndarray
) -> int:
    """One round of candidates, vectorised: the reference for `_round_loop`.  Returns the last position."""
    gap = _gaps(e, inv, t.total)
    gap[0] += last
    pos = np.cumsum(gap, out=gap)
    end = int(pos[-1])
    if end >= t.total:
        cut = int(np.searchsorted(pos, t.total))
        pos, u = pos[:cut], u[:cut]
        if not cut:
            return end
    o = pos // t.per_out
    rem = pos - o * t.per_out
    sp = o // t.n
    col = o - sp * t.n
    wbit = (t.wv[col * t.kg + t.xrow[rem]] & t.wmask[rem]) != 0
    xoff = sp * t.k + t.xrow[rem]
    if t.ng != t.n:
        xoff += (col // t.ng) * t.kg
    xbit = (xf[xoff] & t.xmask[rem]) != 0
    prod = wbit & xbit
    weight = t.flip[rem * 2 + prod]
    if t.thin:
        weight[u >= t.keep[t.kterm[rem] * 3 + wbit + xbit]] = 0.0
    first = int(o[0])  # o is sorted: this round's flips land in outputs first..o[-1]
    err[first : int(o[-1]) + 1] += np.bincount(o - first, weights=weight)
    return end


def _round_loop(
    e: np.ndarray,
    u: np.ndarray,
    inv: float,
    last: int,
    total: int,
    per_out: int,
    n: int,
    goff: np.ndarray,
    k: int,
    kg: int,
    wmask: np.ndarray,
    xrow: np.ndarray,
    xmask: np.ndarray,
    flip: np.ndarray,
    kterm: np.ndarray,
    keep: np.ndarray,
    thin: bool,
    wv: np.ndarray,
    xf: np.ndarray,
    err: np.ndarray,
) -> int:
    """One round of candidates, one at a time (what numba compiles; `_round_numpy` does the same).

    Candidate i lies floor(e_i * inv) + 1 trials after the one before (inv = 1 / lambda, `_gaps`); its
    output o and its rem are carried along from the previous candidate (a division only for a jump of 4
    outputs or more), its operand bits read from the tables and x, and its flip added.
    """
    pos = last
    # pos = o * per_out + rem, o = sp * n + col, kept as these parts (a division only for a long jump)
    o = (pos + 1) // per_out
    rem = pos - o * per_out  # -1 .. per_out - 2: the first gap is at least 1
    sp = o // n
    col = o - sp * n
    for i in range(e.shape[0]):
        g = e[i] * inv
        if g >= total:
            return total
        step = np.int64(g) + 1
        pos += step
        if pos >= total:
            return pos
        rem += step
        if rem >= per_out:
            if rem < 4 * per_out:
                while rem >= per_out:
                    rem -= per_out
                    o += 1
                    col += 1
                    if col == n:
                        col = 0
                        sp += 1
            else:
                o = pos // per_out
                rem = pos - o * per_out
                sp = o // n
                col = o - sp * n
        wbit = 1 if (wv[col * kg + xrow[rem]] & wmask[rem]) != 0 else 0
        xoff = sp * k + xrow[rem] + goff[col]
        xbit = 1 if (np.int64(xf[xoff]) & xmask[rem]) != 0 else 0
        if thin and u[i] >= keep[kterm[rem] * 3 + wbit + xbit]:
            continue
        err[o] += flip[rem * 2 + (wbit & xbit)]
    return pos


_KERNEL: list[Any] = []  # [the compiled _round_loop, or None without numba], filled on first use


def _numba_kernel() -> Any:
    """`_round_loop` compiled by numba (cached on disk), or None when numba is not installed."""
    if not _KERNEL:
        try:
            numba = importlib.import_module("numba")
        except ImportError:
            _KERNEL.append(None)
        else:
            _KERNEL.append(numba.njit(cache=True, nogil=True, error_model="numpy")(_round_loop))
    return _KERNEL[0]


def numba_available() -> bool:
    """Whether sample_flips's "auto" kernel is the compiled one."""
    return _numba_kernel() is not None
