"""`cramc explore` on the digits CNN (convolutions lowered to tiled MVMs): a point's row is what `cramc compile`
+ `cramc run` + `cramc stats` give for it, and the weight-bits axis moves the cost the way the program does."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO

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
    prog = tmp_path / "p.cram"
    res = cli("compile", CNN, "--calibration", CALIB, "--weight-bits", "4", "--ecc", "dup", "-o", str(prog))
    assert res.rc == 0, res.err
    stats = tmp_path / "s.json"
    assert cli("stats", str(prog), "--json", str(stats)).rc == 0
    s = json.loads(stats.read_text(encoding="utf-8"))
    assert float(row["latency_s"]) == pytest.approx(s["latency_s"], rel=1e-12)
    assert float(row["energy_static_j"]) == pytest.approx(s["energy_j"], rel=1e-12)
    assert float(row["area_mm2"]) == pytest.approx(s["area_mm2"]["total"], rel=1e-12)
    with np.load(DATA) as z:
        np.savez(tmp_path / "x.npz", **{k: z[k][:N] for k in z.files})
    np.save(tmp_path / "y.npy", np.load(LABELS)[:N])
    accs, energies = [], []
    for seed in (0, 1):
        rep = tmp_path / f"r{seed}.json"
        res = cli("run", str(prog), "--input", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.npy"),
                  "--gate-error", P, "--seed", str(seed), "--report", str(rep))  # fmt: skip
        assert res.rc == 0, res.err
        report = json.loads(rep.read_text(encoding="utf-8"))
        accs.append(report["accuracy"])
        energies.append(report["cost"]["energy_j"])
    assert [float(a) for a in row["acc_seeds"].split()] == pytest.approx(accs, abs=1e-12)
    assert float(row["energy_j"]) == pytest.approx(np.mean(energies), rel=1e-9)
