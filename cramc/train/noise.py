"""The accumulator error that error-aware fine-tuning injects, stated in numpy (no PyTorch).

In the CRAM-ER hybrid an MVM output y = sum_k w_k x_k is accumulated as

    sum over (b, c) of s(b, c) * 2^(b+c) * popcount over rows of (w_b AND x_c)

with s(b, c) = -1 when exactly one of b, c is a sign bit.  Each partial-product
bit is one CRAM AND gate, sensed by the adder tree; it is wrong with
probability e0 if its correct value is 0 and e1 if it is 1
(cramc.ir.noisy.pp_error_rates derives (e0, e1) from the gate and read rates
of the fault model).  Over the R rows a K chunk occupies (K padded to the
tile, padding rows hold zeros that can flip too), with ``ones`` of the R
products equal to 1, the error of the accumulator is

    err = sum over (b, c) of s(b, c) 2^(b+c) (Binom(R - ones, e0) - Binom(ones, e1)),

all binomials independent.  That is cramc.ir.noisy.mvm_error; this module adds
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
    """(e0, e1) of every unprotected partial product, [wbits * xbits, 2], b major (as noisy.layer_rates)."""
    return np.tile(np.asarray(pp_error_rates(fm, 0), dtype=np.float64), (wbits * xbits, 1))


@dataclass(frozen=True)
class MvmNoise:
    """What the injected error of one MVM depends on besides its operands."""

    wbits: int
    xbits: int
    xsigned: bool
    rows: int  # rows counted per K chunk group: counted_rows(K / groups, array rows)
    rates: np.ndarray  # [wbits * xbits, 2] of (e0, e1), b major
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


def error_moments(x: np.ndarray, w: np.ndarray, spec: MvmNoise) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance of the accumulator error, each float64 [S, P, N]."""
    ones = ones_counts(x, w, spec.wbits, spec.xbits, spec.groups).astype(np.float64)
    zeros = spec.rows - ones
    e0 = spec.rates[:, 0].reshape(spec.wbits, spec.xbits)
    e1 = spec.rates[:, 1].reshape(spec.wbits, spec.xbits)
    t = term_weights(spec.wbits, spec.xbits, spec.xsigned).astype(np.float64)
    mean = (t * (zeros * e0 - ones * e1)).sum(axis=(-2, -1))
    var = (t * t * (zeros * e0 * (1 - e0) + ones * e1 * (1 - e1))).sum(axis=(-2, -1))
    return mean, var
