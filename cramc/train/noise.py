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
its exact mean and variance (`error_moments`) and the per-layer parameters
(`MvmNoise`) that the PyTorch side uses, so the statistical tests can check
both against the gate-level interpreter without PyTorch installed.
"""

from __future__ import annotations

import math
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
