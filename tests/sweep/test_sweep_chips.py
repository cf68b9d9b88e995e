"""`cramc sweep --chips N`: every point on N chip instances, the spread across chips apart from the spread
across inferences (cramc.sweep.stats.chip_spread); a chip of the sweep is `cramc run --chip-seed c`."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO

from cramc.sweep import SweepOptions, run_sweep
from cramc.sweep.output import format_table, plot_series
from cramc.sweep.stats import chip_spread

M = REPO / "models"
MLP = str(M / "digits_mlp.onnx")
DATA = str(M / "digits_test_x_flat.npz")
LABELS = str(M / "digits_test_labels.npy")
CALIB = str(M / "digits_calib_flat.npz")


def _inputs(n: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    with np.load(DATA) as z:
        x = {k: z[k][:n] for k in z.files}
    with np.load(CALIB) as z:
        cal = {k: z[k] for k in z.files}
    return x, np.load(LABELS)[:n], cal


def test_chip_spread_by_hand() -> None:
    sp = chip_spread([[8, 6], [4, 2]], 10)  # two chips x two seeds of 10 samples: 0.7 and 0.3
    assert sp["acc_chips"] == [0.7, 0.3] and sp["acc_mean"] == pytest.approx(0.5)
    assert sp["chip_sd"] == pytest.approx(math.sqrt(0.08))
    assert sp["within_sd"] == pytest.approx(math.sqrt(0.25 / 20))
    assert sp["chip_ci_low"] == 0.0 and sp["chip_ci_high"] == 1.0  # t(1) = 12.7: clipped to [0, 1]


def test_sweep_chips_with_defects(tmp_path: Path) -> None:
    em = tmp_path / "em.toml"
    em.write_text("[write]\np = 1e-3\n[defects]\nstuck0 = 1e-3\nstuck1 = 1e-3\n", encoding="utf-8")
    x, y, cal = _inputs(24)
    o = SweepOptions(MLP, (1e-3,), ("none",), seeds=2, chips=3, error_model=str(em), mode="gate")
    res = run_sweep(o, x, y, cal, log=io.StringIO())
    (row,) = res.rows
    assert row["chips"] == 3 and len(row["acc_chips"]) == 3 and row["seeds"] == 6
    assert res.config["chips"] == [0, 1, 2]
    assert row["chip_sd"] >= 0 and row["within_sd"] > 0
    assert row["acc_mean"] == pytest.approx(float(np.mean(row["acc_chips"])))
    # chip 1 alone is chip 1 of the sweep
    one = run_sweep(
        SweepOptions(MLP, (1e-3,), ("none",), seeds=2, chips=1, error_model=str(em), mode="gate"), x, y, cal,
        log=io.StringIO(),
    )  # fmt: skip
    assert one.rows[0]["acc_seeds"] == [row["acc_seeds"][0], row["acc_seeds"][3]]  # chip 0 of seeds 0 and 1


def _spread_from_runs(acc_seeds: list[float], seeds: int, chips: int, n: int) -> dict[str, float]:
    """chip sd, 95% t over the chips and 95% Wilson within a chip, from the per-(seed, chip) accuracies
    (seed-major) with scipy's t and the Wilson formula: apart from cramc.sweep.stats."""
    from scipy import stats

    acc = np.asarray(acc_seeds).reshape(seeds, chips)
    assert np.allclose(acc * n, np.round(acc * n))  # each run is k of n samples right
    per_chip = acc.mean(axis=0)
    m, sd = float(per_chip.mean()), float(per_chip.std(ddof=1))
    h = float(stats.t.ppf(0.975, chips - 1)) * sd / math.sqrt(chips)
    trials, z = seeds * n, float(stats.norm.ppf(0.975))
    c = (m + z * z / (2 * trials)) / (1 + z * z / trials)
    w = z * math.sqrt(m * (1 - m) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return {
        "chip_sd": sd,
        "chip_ci_low": max(0.0, m - h),
        "chip_ci_high": min(1.0, m + h),
        "within_low": max(0.0, c - w),
        "within_high": min(1.0, c + w),
    }


_ROW = re.compile(
    r"^\s*(?P<rate>\S+)\s+(?P<prot>\S+)\s+(?P<acc>[\d.]+)\s+\[(?P<lo>[\d.]+), (?P<hi>[\d.]+)\]\s+(?P<sd>[\d.]+)\s+"
    r"\[(?P<clo>[\d.]+), (?P<chi>[\d.]+)\]\s+\[(?P<wlo>[\d.]+), (?P<whi>[\d.]+)\]"
)


def test_sweep_chips_table_and_plot(cli, tmp_path: Path) -> None:  # noqa: ANN001
    """With --chips 3 the printed table and the plot carry the spread across chips apart from within a chip:
    the JSON's figures, which equal those computed here from the per-(seed, chip) run accuracies."""
    em = tmp_path / "em.toml"
    em.write_text("[gates]\ndefault = 1e-3\n[defects]\nstuck0 = 2e-3\nstuck1 = 2e-3\n", encoding="utf-8")
    out, png = tmp_path / "r.json", tmp_path / "p.png"
    args = ("--data", DATA, "--labels", LABELS, "--calibration", CALIB, "--no-progress", "--samples", "24")
    res = cli(
        "sweep", MLP, *args, "--gate-error", "1e-3,3e-3", "--protection", "none,ecc", "--ecc", "dup",
        "--seeds", "2", "--chips", "3", "--error-model", str(em), "-o", str(out), "--plot", str(png),
    )  # fmt: skip
    assert res.rc == 0, res.err
    assert "across chips 95%" in res.out and "within chip 95%" in res.out
    assert "3 chips x 2 seeds x 24 samples" in res.out
    rows = json.loads(out.read_text(encoding="utf-8"))["results"]
    printed = {(float(m["rate"]), m["prot"]): m for m in map(_ROW.match, res.out.splitlines()) if m}
    assert len(printed) == len(rows) == 4
    sds = []
    for r in rows:
        want = _spread_from_runs(r["acc_seeds"], 2, 3, 24)
        for k, v in want.items():
            assert r[k] == pytest.approx(v, abs=1e-6), k  # stats' t quantiles have 5 significant digits
        m = printed[(r["gate_error"], r["protection"])]
        assert float(m["acc"]) == pytest.approx(r["acc_mean"], abs=5e-5)
        assert float(m["sd"]) == pytest.approx(want["chip_sd"], abs=5e-5)
        for g, k in (("lo", "ci_low"), ("hi", "ci_high"), ("clo", "chip_ci_low"), ("chi", "chip_ci_high")):
            assert float(m[g]) == pytest.approx(r[k], abs=5e-4), k
        assert (float(m["wlo"]), float(m["whi"])) == pytest.approx((want["within_low"], want["within_high"]), abs=5e-4)
        sds.append(want["chip_sd"])
    assert max(sds) > 0  # the defects make the chips differ: the figures are not a constant
    assert png.stat().st_size > 0
    # the plot: band within a chip, bars across chips, from the same rows
    from cramc.sweep.running import SweepResult

    series = plot_series(SweepResult(json.loads(out.read_text(encoding="utf-8"))["config"], rows))
    for prot, sr in series.items():
        mine = sorted((r for r in rows if r["protection"] == prot), key=lambda r: r["gate_error"])
        assert list(sr["x"]) == [r["gate_error"] for r in mine]
        assert list(sr["band_lo"]) == [r["within_low"] for r in mine]
        assert list(sr["bar_lo"]) == [r["chip_ci_low"] for r in mine]
        assert list(sr["bar_hi"]) == [r["chip_ci_high"] for r in mine]


def test_one_chip_table_and_plot_unchanged() -> None:
    """Without --chips the table has no chip columns and the plot's bars are its band (t over seeds)."""
    x, y, cal = _inputs(16)
    res = run_sweep(SweepOptions(MLP, (1e-3,), ("none",), seeds=2, mode="gate"), x, y, cal, log=io.StringIO())
    text = format_table(res)
    assert "chip" not in text and len(text.splitlines()) == 3
    (sr,) = plot_series(res).values()
    (row,) = res.rows
    assert list(sr["band_lo"]) == [max(0.0, row["ci_low"])]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--chips", "0"), "--chips must be at least 1, got 0"),
        (("--chips", "2", "--mode", "statistical"), "--chips needs --mode gate"),
    ],
)
def test_bad_chip_options(cli, args: tuple[str, ...], message: str) -> None:  # noqa: ANN001
    res = cli("sweep", MLP, "--data", DATA, "--labels", LABELS, "--calibration", CALIB, "--no-progress", *args)
    assert res.rc == 1 and message in res.err and "Traceback" not in res.err
