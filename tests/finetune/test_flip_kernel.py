"""sample_flips's two kernels and the exactness of its candidate draw (numpy only; numba where installed).

- The numba kernel and the numpy reference consume the same random stream and return the same draw, bit
  for bit, for every fault model of the gate-level tests (thinning included), signed and unsigned inputs,
  groups, padding rows, float32 and int64 operands, many rounds (a small FLIP_CHUNK), pmax = 1 and a tiny
  pmax.  The uncompiled loop (what numba compiles) is checked against the reference too, so its logic is
  tested where numba is not installed.
- The candidates are independent Bernoulli(p) trials: every position succeeds with frequency p (each within
  5 standard errors over 6000 draws, and a chi-square over all positions), and the gaps between successes
  are Geometric(p) (chi-square against the exact probabilities); a draw at p / 2 is rejected by the same
  test (power).

The distribution of the error itself against the gate level is tests/finetune/test_finetune_noise_vs_gate_level.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cramc.errmodel import FaultModel, Rate
from cramc.ir import noisy
from cramc.train import noise
from cramc.train.noise import MvmNoise, bernoulli_successes, counted_rows, rates_for, sample_flips

MODELS = {
    "uniform-0.02": FaultModel.uniform(0.02),
    "asymmetric-and-read": FaultModel({"and": Rate(0.03, 0.005)}, read=Rate(0.002, 0.01)),
    "by_ones-and-read": FaultModel({"and": Rate(by_ones=(0.002, 0.03, 0.008))}, read=Rate(0.002, 0.01)),
}


def _operands(signed: bool, groups: int, dtype: Any) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(4)
    kg, n = 20, 6
    lo, hi = (-128, 128) if signed else (0, 256)
    x = rng.integers(lo, hi, size=(5, 3, groups * kg)).astype(dtype)
    w = rng.integers(-127, 128, size=(n, kg))
    return x, w, kg


def _python_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sample_flips's compiled path run the uncompiled loop (the source numba compiles)."""
    monkeypatch.setattr(noise, "_KERNEL", [noise._round_loop])


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("signed,groups,dtype", [(False, 1, np.float32), (True, 2, np.float32), (True, 1, np.int64)])
def test_kernels_give_the_same_draw(
    monkeypatch: pytest.MonkeyPatch, model: str, signed: bool, groups: int, dtype: Any
) -> None:
    x, w, kg = _operands(signed, groups, dtype)
    spec = MvmNoise(8, 8, signed, counted_rows(kg, 8), rates_for(MODELS[model], 8, 8), groups)
    assert spec.rows == 21  # 3 chunks of 7 rows for 20: one padding row
    monkeypatch.setattr(noise, "FLIP_CHUNK", 64)  # many rounds
    ref = sample_flips(x, w, spec, np.random.default_rng(8), kernel="numpy")
    assert np.count_nonzero(ref) > 20
    draws: list[Callable[[], np.ndarray]] = []
    if noise.numba_available():
        draws.append(lambda: sample_flips(x, w, spec, np.random.default_rng(8), kernel="numba"))
        draws.append(lambda: sample_flips(x, w, spec, np.random.default_rng(8)))  # auto: numba
    with monkeypatch.context() as m:
        _python_kernel(m)
        draws.append(lambda: sample_flips(x, w, spec, np.random.default_rng(8), kernel="auto"))
        got = [d() for d in draws]
    if noise.numba_available():  # the blocks drawn in two threads: the same draw
        got.append(sample_flips(x, w, spec, np.random.default_rng(8), kernel="numba", threads=2))
    for g in got:
        assert np.array_equal(g, ref)
    # a different stream gives a different draw (the comparison can fail)
    assert not np.array_equal(sample_flips(x, w, spec, np.random.default_rng(9), kernel="numpy"), ref)


@pytest.mark.parametrize("p", [1.0, 1e-15])
def test_kernels_agree_at_the_extremes(monkeypatch: pytest.MonkeyPatch, p: float) -> None:
    """pmax = 1 (every trial a candidate) and a pmax so small that the first gap passes the end (no overflow)."""
    x, w, kg = _operands(False, 1, np.float32)
    spec = MvmNoise(8, 8, False, kg, np.tile([p, p / 2, p], (64, 1)))
    ref = sample_flips(x, w, spec, np.random.default_rng(1), kernel="numpy")
    with monkeypatch.context() as m:
        _python_kernel(m)
        assert np.array_equal(sample_flips(x, w, spec, np.random.default_rng(1)), ref)
    if noise.numba_available():
        assert np.array_equal(sample_flips(x, w, spec, np.random.default_rng(1), kernel="numba"), ref)
    if p == 1.0:  # thinning at 1/2 for one operand bit at 1: some flips, not all
        assert np.any(ref != 0)
    else:
        assert not np.any(ref)


def test_unknown_kernel_is_refused() -> None:
    x, w, kg = _operands(False, 1, np.float32)
    spec = MvmNoise(8, 8, False, kg, rates_for(FaultModel.uniform(0.01), 8, 8))
    with pytest.raises(ValueError, match="kernel"):
        sample_flips(x, w, spec, np.random.default_rng(0), kernel="fast")


def _chi2_upper(df: int, z: float = 4.0) -> float:
    """An upper bound of chi-square(df) at about z standard deviations (Wilson-Hilferty)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


#: gaps up to this length are told apart by the gap test; longer ones are one cell
GAP_CELLS = 40


def _successes(sampler: str, total: int, p: float, rng: np.random.Generator) -> list[np.ndarray]:
    if sampler == "noisy":  # the defect draw of cramc.ir.noisy (statistical mode, --ecc auto)
        return [noisy._bernoulli_positions(total, p, rng)]
    return list(bernoulli_successes(total, p, rng, chunk=7))


def _success_counts(total: int, p: float, draws: int, seed: int, sampler: str) -> tuple[np.ndarray, np.ndarray]:
    """Successes per position over `draws` draws, and the histogram of the gap after each success (or the
    start) that lies at least GAP_CELLS before the end: gaps 1..GAP_CELLS, then 'longer' (fully observed)."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(total, dtype=np.int64)
    cells = np.zeros(GAP_CELLS + 1, dtype=np.int64)
    for _ in range(draws):
        pos = np.concatenate([np.full(1, -1, np.int64), *_successes(sampler, total, p, rng)])
        counts[pos[1:]] += 1
        after = np.append(pos[1:], np.iinfo(np.int64).max // 2)  # no further success: a long gap
        start = pos < total - 1 - GAP_CELLS
        gap = np.minimum((after - pos)[start], GAP_CELLS + 1)
        cells += np.bincount(gap - 1, minlength=GAP_CELLS + 1)
    return counts, cells


def _checks(counts: np.ndarray, cells: np.ndarray, p: float, draws: int) -> tuple[bool, bool, bool]:
    """Every position within 5 sd of draws * p; chi-square over the positions; the gaps' chi-square
    against Geometric(p): P(gap = j) = (1 - p)^(j - 1) p, P(gap > GAP_CELLS) = (1 - p)^GAP_CELLS."""
    sd = math.sqrt(draws * p * (1 - p))
    each = bool(np.all(np.abs(counts - draws * p) <= 5 * sd))
    chi2 = float((((counts - draws * p) / sd) ** 2).sum())
    positions = chi2 <= _chi2_upper(counts.size)
    j = np.arange(1, GAP_CELLS + 1)
    pmf = np.append((1 - p) ** (j - 1) * p, (1 - p) ** GAP_CELLS)
    want = pmf * cells.sum()
    g2 = float(((cells - want) ** 2 / want).sum())
    return each, positions, g2 <= _chi2_upper(GAP_CELLS)


@pytest.mark.parametrize("sampler", ["train", "noisy"])
def test_candidates_are_independent_bernoulli_trials(sampler: str) -> None:
    total, p, draws = 300, 0.05, 6000
    counts, cells = _success_counts(total, p, draws, 2, sampler)
    assert cells.sum() > 10 * draws
    assert _checks(counts, cells, p, draws) == (True, True, True)
    # power: the same statistics reject trials at half the rate
    half_counts, half_cells = _success_counts(total, p / 2, draws, 3, sampler)
    each, positions, geometric = _checks(half_counts, half_cells, p, draws)
    assert not each and not positions and not geometric


def test_gap_scale_is_the_geometric_rate() -> None:
    for p in (1e-12, 1e-3, 0.3, 0.999):
        lam = noise.gap_scale(p)
        assert math.exp(-lam) == pytest.approx(1 - p, rel=1e-14)
