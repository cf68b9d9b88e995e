"""Confidence intervals of a sweep: Student-t over per-seed accuracies, Wilson over pooled trials, and the
spread across chips apart from the spread across inferences (`chip_spread`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Student t quantiles t(0.975, df) for df = 1 .. 30; beyond, a Cornish-Fisher expansion.
_T975 = (
    12.7062,
    4.3027,
    3.1824,
    2.7764,
    2.5706,
    2.4469,
    2.3646,
    2.3060,
    2.2622,
    2.2281,
    2.2010,
    2.1788,
    2.1604,
    2.1448,
    2.1314,
    2.1199,
    2.1098,
    2.1009,
    2.0930,
    2.0860,
    2.0796,
    2.0739,
    2.0687,
    2.0639,
    2.0595,
    2.0555,
    2.0518,
    2.0484,
    2.0452,
    2.0423,
)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with df degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError("df must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): 95% Student-t interval of the mean; (mean, nan, nan) for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if x.size < 2:
        return m, math.nan, math.nan
    h = t975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, m - h, m + h


def wilson(k: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n (k may be fractional: a mean over chips times n)."""
    if n <= 0:
        return math.nan, math.nan
    z2 = _Z975**2
    p = k / n
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z975 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def chip_spread(correct: Sequence[Sequence[int]], n: int) -> dict[str, float | int | list[float]]:
    """The spread of accuracy across chips apart from the spread across inferences.

    ``correct[c][s]``: samples classified right on chip c with inference seed s, of `n` each (every chip
    runs the same inference seeds).  Returns:

    - ``acc_mean``: the accuracy over every chip, seed and sample;
    - ``acc_chips``: each chip's accuracy over its seeds and samples;
    - ``chip_sd``, ``chip_ci_low``/``chip_ci_high``: between chips: the standard deviation of the chips'
      accuracies and the 95% Student-t interval of their mean (nan for one chip): how much the chip
      instance (its .init faults and defects) moves the accuracy, and where the mean over chips lies;
    - ``within_sd``, ``within_low``/``within_high``: within a chip: the binomial standard deviation of one
      chip's accuracy from its seeds x n inferences, sqrt(p (1 - p) / (seeds n)) at the mean accuracy p, and
      the 95% Wilson interval of that many trials at p: the spread that inference faults and the finite
      sample alone give.  A chip_sd well above within_sd means the chips differ.
    """
    k = np.asarray(correct, dtype=np.float64)
    chips, seeds = k.shape
    trials = seeds * n
    per_chip = k.sum(axis=1) / trials
    p = float(per_chip.mean())
    _, lo, hi = t_interval(list(per_chip))
    if not math.isnan(lo):
        lo, hi = max(0.0, lo), min(1.0, hi)
    wl, wh = wilson(p * trials, trials)  # at p itself: p * trials is fractional for a mean over chips
    return {
        "chips": chips,
        "acc_mean": p,
        "acc_chips": [float(x) for x in per_chip],
        "chip_sd": float(per_chip.std(ddof=1)) if chips > 1 else 0.0,
        "chip_ci_low": lo,
        "chip_ci_high": hi,
        "within_sd": math.sqrt(p * (1.0 - p) / trials) if trials else math.nan,
        "within_low": wl,
        "within_high": wh,
    }
