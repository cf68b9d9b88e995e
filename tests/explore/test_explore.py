"""`cramc explore` end to end on the digits MLP: its numbers are what `cramc compile` + `cramc run` /
`cramc stats` give for the same point; points that cannot compile are rows; bad input is one error line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO
from explore_check import assert_row_is_compile_stats_run

from cramc.sweep.explore import ExploreOptions, run_explore

M = REPO / "models"
MLP = str(M / "digits_mlp.onnx")
DATA = str(M / "digits_test_x_flat.npz")
LABELS = str(M / "digits_test_labels.npy")
CALIB = str(M / "digits_calib_flat.npz")
COMMON = (MLP, "--data", DATA, "--labels", LABELS, "--calibration", CALIB)
N = 20


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


@pytest.fixture(scope="module")
def explored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cramc.cli import main

    out = tmp_path_factory.mktemp("explore") / "out"
    argv = [
        "explore", *COMMON, "--reduce", "tree,cram", "--ecc", "none,auto:0.2", "--gate-error", "3e-3",
        "--seeds", "2", "--samples", str(N), "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_files_and_rows(explored: Path) -> None:
    rows = _rows(explored / "explore.csv")
    assert [(r["reduce"], r["ecc"]) for r in rows] == [
        ("tree", "none"), ("tree", "auto:0.2"), ("cram", "none"), ("cram", "auto:0.2"),
    ]  # fmt: skip
    refused = rows[3]
    assert refused["status"] == "not compiled" and "--reduce cram" in refused["reason"]
    assert refused["acc_mean"] == "" and refused["pareto_energy"] == ""
    assert all(r["status"] == "ok" and r["samples"] == str(N) and r["seeds"] == "2" for r in rows[:3])
    assert rows[1]["ecc_spec"] and not rows[0]["ecc_spec"]  # auto chose some protection at 3e-3
    for col in ("pareto_energy", "pareto_latency", "pareto_area", "pareto_edp"):
        assert any(r[col] == "True" for r in rows[:3])
    d = json.loads((explored / "explore.json").read_text(encoding="utf-8"))
    assert d["config"]["points"] == 4 and d["config"]["compiled"] == 3
    for name in ("accuracy_vs_energy.png", "accuracy_vs_latency.png", "accuracy_vs_area.png"):
        assert (explored / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("reduce", "ecc"), [("tree", "auto:0.2"), ("cram", "none")])
def test_point_equals_compile_run_stats(cli, explored: Path, tmp_path: Path, reduce: str, ecc: str) -> None:
    """The CSV's accuracy per seed and its cost are those of the same point compiled, run and costed by hand."""
    row = next(r for r in _rows(explored / "explore.csv") if r["reduce"] == reduce and r["ecc"] == ecc)
    flags = ["--ecc", "auto", "--ecc-budget", "0.2", "--gate-error", "3e-3"] if ecc != "none" else []
    compile_args = [MLP, "--calibration", CALIB, "--reduce", reduce, *flags]
    assert_row_is_compile_stats_run(cli, row, tmp_path, compile_args, DATA, LABELS, N, "3e-3")


def test_statistical_and_dask_give_the_in_process_rows() -> None:
    """--statistical runs the IR's fault model; on 2 Dask workers the rows are the in-process ones."""
    with np.load(DATA) as z:
        x = {k: z[k][:N] for k in z.files}
    with np.load(CALIB) as z:
        cal = {k: z[k] for k in z.files}
    y = np.load(LABELS)[:N]
    o = ExploreOptions(model=MLP, rows=(64, 256), gate_error=(1e-2,), seeds=2, mode="statistical")
    a = run_explore(o, x, y, cal, log=io.StringIO())
    assert [r["mode"] for r in a.rows] == ["statistical"] * 2 and all(r["status"] == "ok" for r in a.rows)
    assert all(r["gate_evals"] > 0 for r in a.rows)
    b = run_explore(ExploreOptions(**{**o.__dict__, "workers": 2}), x, y, cal, log=io.StringIO())
    keys = ("acc_seeds", "latency_s", "energy_j", "area_mm2", "gate_evals", "pareto_energy")
    assert [[r[k] for k in keys] for r in a.rows] == [[r[k] for k in keys] for r in b.rows]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--reduce", "tree,adders"), "--reduce: unknown value 'adders'"),
        (("--rows", "128,,256"), "--rows '128,,256'"),
        (("--wbits", "3"), "--wbits: 3 is not one of 4, 8"),
        (("--ecc", "auto"), "--ecc auto tunes the protection for a fault rate"),
        (("--tech", "nosuch"), "nosuch"),
        (("--error-model", "nosuch"), "nosuch"),
        (("--seeds", "0"), "--seeds must be at least 1"),
    ],
)
def test_bad_input_is_one_error_line(cli, tmp_path: Path, args: tuple[str, ...], match: str) -> None:
    out = tmp_path / "out"
    res = cli("explore", *COMMON, *args, "--samples", "5", "-o", str(out))
    assert res.rc == 1 and match in res.err, res.err
    assert res.err.startswith("error:") and len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err
    assert not out.exists()


def test_missing_files_and_bad_outdir(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = cli("explore", MLP, "--data", str(tmp_path / "none.npz"), "--labels", LABELS, "-o", str(out))
    assert res.rc == 1 and "none.npz: no such file" in res.err and not out.exists()
    res = cli("explore", str(tmp_path / "m.onnx"), "--data", DATA, "--labels", LABELS, "-o", str(out))
    assert res.rc == 1 and "m.onnx: no such file" in res.err and not out.exists()
    res = cli("explore", *COMMON, "-o", str(tmp_path / "no" / "out"))
    assert res.rc == 1 and "does not exist" in res.err
    afile = tmp_path / "f"
    afile.write_text("x")
    res = cli("explore", *COMMON, "-o", str(afile))
    assert res.rc == 1 and "not a directory" in res.err and afile.read_text() == "x"
