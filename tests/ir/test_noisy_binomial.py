"""cramc.ir.noisy.binomial: independent Binomial(n_i, p) counts, by geometric gaps where successes are sparse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cramc.ir import noisy


def _chi2_upper(df: int, z: float = 4.0) -> float:
    """An upper bound of chi-square(df) at about z standard deviations (Wilson-Hilferty)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def _pmf(n: int, p: float, kmax: int) -> np.ndarray:
    """P(K = 0..kmax-1) and P(K >= kmax) of Binomial(n, p)."""
    k = np.arange(kmax)
    pmf = np.array([math.comb(n, int(j)) * p**j * (1 - p) ** (n - j) for j in k])
    return np.append(pmf, max(0.0, 1.0 - pmf.sum()))


def _fit(n: np.ndarray, p: float, draws: int, seed: int, want_p: float) -> tuple[float, float]:
    """Pooled chi-square (and its bound) of the per-element counts over `draws` draws against
    Binomial(n_i, want_p), cells 0, 1, 2, >= 3 merged per distinct n."""
    rng = np.random.default_rng(seed)
    got = np.stack([noisy.binomial(n, p, rng) for _ in range(draws)])  # [draws, elements]
    assert got.dtype == np.int64 and got.shape == (draws, n.size)
    assert np.all(got >= 0) and np.all(got <= n)
    chi2, df = 0.0, 0
    for m in np.unique(n):
        if m == 0:
            continue
        k = np.minimum(got[:, n == m].ravel(), 3)
        obs = np.bincount(k, minlength=4)
        want = _pmf(int(m), want_p, 3) * k.size
        keep = want > 5
        chi2 += float(((obs[keep] - want[keep]) ** 2 / want[keep]).sum())
        df += int(keep.sum()) - 1
    return chi2, _chi2_upper(df)


@pytest.mark.parametrize("p", [2e-3, 0.02, 0.3])  # sparse, sparse, numpy's binomial
def test_counts_are_binomial(p: float) -> None:
    n = np.array([0, 1, 3, 7, 32, 200] * 20, dtype=np.int64)
    draws = 4000 if p < 0.1 else 400
    chi2, bound = _fit(n, p, draws, 1, p)
    assert chi2 <= bound
    # power: the same statistic rejects counts drawn at 1.5 times the rate
    chi2_wrong, bound_wrong = _fit(n, 1.5 * p, draws, 2, p)
    assert chi2_wrong > bound_wrong


def test_elements_are_independent() -> None:
    """The counts of neighbouring elements are uncorrelated (a sampler that spread one success over two
    elements, or dropped the second success of a run, would correlate them)."""
    rng = np.random.default_rng(5)
    n = np.full(64, 50, dtype=np.int64)
    got = np.stack([noisy.binomial(n, 0.01, rng) for _ in range(20000)]).astype(np.float64)
    r = np.corrcoef(got[:, :-1].ravel(), got[:, 1:].ravel())[0, 1]
    assert abs(r) < 4 / math.sqrt(got[:, 1:].size)
    assert got.mean() == pytest.approx(0.5, rel=0.02)


def test_zero_rate_and_empty() -> None:
    rng = np.random.default_rng(0)
    assert not noisy.binomial(np.array([[5, 9]]), 0.0, rng).any()
    assert noisy.binomial(np.zeros((0, 3), dtype=np.int64), 0.1, rng).shape == (0, 3)
    assert not noisy.binomial(np.zeros((4, 3), dtype=np.int64), 0.1, rng).any()
    out = noisy.binomial(np.full((2, 3), 10), 1e-3, rng)
    assert out.shape == (2, 3) and out.dtype == np.int64
