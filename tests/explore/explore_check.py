"""The check both explore tests make: a CSV row is what `cramc compile` + `cramc stats` + `cramc run --report`
give for the same point, run by hand through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def assert_row_is_compile_stats_run(
    cli: Callable[..., Any],
    row: dict[str, str],
    tmp_path: Path,
    compile_args: list[str],
    data: str,
    labels: str,
    n: int,
    gate_error: str,
) -> None:
    """`compile_args`: the model and its flags for `cramc compile`; the run is the first `n` samples, seeds 0, 1."""
    prog = tmp_path / "p.cram"
    res = cli("compile", *compile_args, "-o", str(prog))
    assert res.rc == 0, res.err
    stats = tmp_path / "s.json"
    assert cli("stats", str(prog), "--json", str(stats)).rc == 0
    s = json.loads(stats.read_text(encoding="utf-8"))
    assert float(row["latency_s"]) == pytest.approx(s["latency_s"], rel=1e-12)
    assert float(row["energy_static_j"]) == pytest.approx(s["energy_j"], rel=1e-12)
    assert float(row["area_mm2"]) == pytest.approx(s["area_mm2"]["total"], rel=1e-12)
    with np.load(data) as z:
        np.savez(tmp_path / "x.npz", **{k: z[k][:n] for k in z.files})
    np.save(tmp_path / "y.npy", np.load(labels)[:n])
    accs, energies, recomputes = [], [], []
    for seed in (0, 1):
        rep = tmp_path / f"r{seed}.json"
        res = cli("run", str(prog), "--input", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.npy"),
                  "--gate-error", gate_error, "--seed", str(seed), "--report", str(rep))  # fmt: skip
        assert res.rc == 0, res.err
        report = json.loads(rep.read_text(encoding="utf-8"))
        accs.append(report["accuracy"])
        energies.append(report["cost"]["energy_j"])  # the run's cost: rows dup recomputed in CMOS included
        recomputes.append(report["cost"].get("recomputes", 0.0))
    assert [float(a) for a in row["acc_seeds"].split()] == pytest.approx(accs, abs=1e-12)
    assert float(row["acc_mean"]) == pytest.approx(sum(accs) / 2, abs=1e-12)
    assert float(row["recomputes"]) == pytest.approx(np.mean(recomputes), rel=1e-12)
    assert float(row["energy_j"]) == pytest.approx(np.mean(energies), rel=1e-9)
    assert float(row["edp_js"]) == pytest.approx(np.mean(energies) * s["latency_s"], rel=1e-9)
    if "dup" in row["ecc_spec"]:  # faults make the copies differ: the recomputes cost energy
        assert float(row["recompute_energy_j"]) > 0 and float(row["energy_j"]) > float(row["energy_static_j"])
