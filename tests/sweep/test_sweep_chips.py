"""`cramc sweep --chips N`: every point on N chip instances, the spread across chips apart from the spread
across inferences (cramc.sweep.stats.chip_spread); a chip of the sweep is `cramc run --chip-seed c`."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO

from cramc.sweep import SweepOptions, run_sweep
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
