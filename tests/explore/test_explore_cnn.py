"""`cramc explore` on the digits CNN (convolutions lowered to tiled MVMs): a point's row is what `cramc compile`
+ `cramc run` + `cramc stats` give for it, and the weight-bits axis moves the cost the way the program does."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from cramtest import REPO
from explore_check import assert_row_is_compile_stats_run

M = REPO / "models"
CNN = str(M / "digits_cnn.onnx")
DATA = str(M / "digits_test_x_img.npz")
LABELS = str(M / "digits_test_labels.npy")
CALIB = str(M / "digits_calib_img.npz")
N = 12
P = "2e-3"


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    from cramc.cli import main

    out = tmp_path_factory.mktemp("explore_cnn") / "out"
    argv = [
        "explore", CNN, "--data", DATA, "--labels", LABELS, "--calibration", CALIB, "--wbits", "4,8",
        "--ecc", "none,dup", "--gate-error", P, "--seeds", "2", "--samples", str(N), "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    return list(csv.DictReader(io.StringIO((out / "explore.csv").read_text(encoding="utf-8"))))


def test_grid_compiles(rows: list[dict[str, str]]) -> None:
    assert [(r["wbits"], r["ecc"]) for r in rows] == [("4", "none"), ("4", "dup"), ("8", "none"), ("8", "dup")]
    assert all(r["status"] == "ok" and r["samples"] == str(N) for r in rows)
    by = {(r["wbits"], r["ecc"]): r for r in rows}
    for ecc in ("none", "dup"):  # half the weight bits: half the partial products to AND and sense
        assert float(by["4", ecc]["gate_evals"]) < float(by["8", ecc]["gate_evals"])
        assert float(by["4", ecc]["energy_static_j"]) < float(by["8", ecc]["energy_static_j"])
    for w in ("4", "8"):  # duplicate-and-compare does every AND twice
        assert float(by[w, "dup"]["gate_evals"]) > 1.9 * float(by[w, "none"]["gate_evals"])


def test_point_equals_compile_run_stats(cli, rows: list[dict[str, str]], tmp_path: Path) -> None:
    row = next(r for r in rows if r["wbits"] == "4" and r["ecc"] == "dup")
    compile_args = [CNN, "--calibration", CALIB, "--weight-bits", "4", "--ecc", "dup"]
    assert_row_is_compile_stats_run(cli, row, tmp_path, compile_args, DATA, LABELS, N, P)
