"""bench/ecc_study.py's CSVs: points run apart add up (rows replaced per model and point, the others kept), and
the docs tables are read from those rows."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from cramtest import REPO


def _study(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("ecc_study", REPO / "bench" / "ecc_study.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "DATA", tmp_path)
    monkeypatch.setattr(mod, "REPO", tmp_path.parent)  # _write prints the path relative to REPO
    return mod


def _row(model: str, stuck: float, scheme: str, acc: float) -> dict[str, object]:
    return {
        "model": model, "preset": "projected", "stuck": stuck, "scheme": scheme, "samples": 10, "runs": 2,
        "acc_mean": acc, "ci_low": acc - 0.01, "ci_high": acc + 0.01, "recomputes": 3.0, "defect_faults": 7.0,
    }  # fmt: skip


def test_points_run_apart_add_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    e = _study(monkeypatch, tmp_path)
    path = tmp_path / "ecc_device_defects.csv"
    key = ("model", "stuck")
    e._write(path, [_row("digits_mlp", 1e-3, s, 0.9) for s in ("none", "dup")], key)
    e._write(path, [_row("digits_mlp", 1e-2, s, 0.8) for s in ("none", "dup")], key)
    e._write(path, [_row("digits_cnn", 1e-3, "none", 0.7)], key)
    e._write(path, [_row("digits_mlp", 1e-3, s, 0.95) for s in ("none", "dup")], key)  # replaces that point only
    with open(path, encoding="utf-8") as f:
        rows = [(r["model"], float(r["stuck"]), r["scheme"], float(r["acc_mean"])) for r in csv.DictReader(f)]
    assert rows == [
        ("digits_cnn", 1e-3, "none", 0.7),
        ("digits_mlp", 1e-3, "none", 0.95),
        ("digits_mlp", 1e-3, "dup", 0.95),
        ("digits_mlp", 1e-2, "none", 0.8),
        ("digits_mlp", 1e-2, "dup", 0.8),
    ]
    table = e.tables()["defects"]
    assert "| digits MLP, 0.001 (2 x 10) | - | 0.950 [0.940, 0.960] | 0.950 [0.940, 0.960] | not run |" in table
    assert "| digits MLP, 0.01 (2 x 10) | - | 0.800 [0.790, 0.810] |" in table
    assert "| digits CNN, 0.001 (2 x 10) | - | 0.700 [0.690, 0.710] | not run |" in table
