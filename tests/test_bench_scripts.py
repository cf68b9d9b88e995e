"""The benchmark scripts run end to end on tiny sizes (smoke tests: no timing is asserted here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from cramtest import REPO


def _bench(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bench_interp_small() -> None:
    out = _bench(
        "bench/bench_interp.py",
        "--arrays",
        "8",
        "--rows",
        "64",
        "--gates",
        "8",
        "--reps",
        "4",
        "--repeat",
        "1",
        "--no-resnet50",
    )
    assert "ratio fault-free:" in out and "ratio p=0.001:" in out


def test_bench_backends_quick() -> None:
    pytest.importorskip("torch", reason="PyTorch is not installed (the optional torch backend)")
    out = _bench("bench/bench_backends.py", "--backend", "torch:cpu", "--quick")
    assert "[dense]" in out and "[digits]" in out and "ratios " in out


def test_bench_workloads_quick(tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    """The LeNet-5 section on 16 images: both figures printed in the agreed form and in the JSON summary."""
    summary = tmp_path / "workloads.json"
    out = _bench("bench/bench_workloads.py", "--quick", "--only", "lenet", "--json", str(summary))
    figure = re.compile(r"^(lenet_fault_free|lenet_p0\.001): \S+ s / \S+ s = \S+ \(target <= \d+\): (PASS|FAIL)$", re.M)
    assert sorted(m.group(1) for m in figure.finditer(out)) == ["lenet_fault_free", "lenet_p0.001"], out
    figs = {f["name"]: f for f in json.loads(summary.read_text())["figures"]}
    assert set(figs) == {"lenet_fault_free", "lenet_p0.001"}
    for f in figs.values():
        assert f["error"] is None and f["measured"] > 0 and f["reference"] > 0
        assert f["ratio"] == f["measured"] / f["reference"] and f["passed"] == (f["ratio"] <= f["target"])


def test_bench_baselines_quick(tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    """CPU measured (float, QDQ as written and optimised; batch 1, 64; 1 and all threads), GPU model, CRAM 45/7 nm."""
    assert "--quick" in _bench("bench/bench_baselines.py", "--help")
    out_json, models = tmp_path / "b.json", tmp_path / "models"
    out = _bench("bench/bench_baselines.py", "--quick", "--json", str(out_json), "--export", str(models))
    assert "CRAM-ER hybrid, 7 nm CMOS" in out and "GPU H100 launch model" in out and "load average" in out
    res = json.loads(out_json.read_text())["results"][0]
    runs = {(r["graph"], r["batch"], r["threads"]) for r in res["cpu"]["runs"]}
    graphs = ("float", "qdq_as_written", "qdq_optimised")
    assert {(g, b) for g, b, _ in runs} == {(g, b) for g in graphs for b in (1, 64)}
    assert all(r["per_inference_s"] > 0 and r["energy_j"] > 0 for r in res["cpu"]["runs"])
    assert res["cram"]["cmos7nm"]["area_mm2"] < res["cram"]["default"]["area_mm2"]
    assert res["gpu"]["1"]["model"]["latency_s"] > res["gpu"]["1"]["roofline"]["latency_s"]
    # the prepared GPU script, on the CPU: onnxruntime and the PyTorch interpreter agree on both graphs
    pytest.importorskip("torch", reason="PyTorch is not installed")
    assert "--dry-run" in _bench("bench/gpu_baseline.py", "--help")
    out = _bench("bench/gpu_baseline.py", "--dry-run", "--batches", "1", "--models-dir", str(models))
    assert re.search(r"digits_mlp_qdq +batch +1 torch-cpu .* max\|diff\| 0$", out, re.M), out


def test_energy_counters_read_rapl(tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    sys.path.insert(0, str(REPO / "bench"))
    from bench_baselines import energy_counters, energy_status, joules_between, read_joules

    pkg = tmp_path / "class" / "powercap" / "intel-rapl:0"
    pkg.mkdir(parents=True)
    (pkg / "energy_uj").write_text("999000000\n")
    (pkg / "max_energy_range_uj").write_text("1000000000\n")
    c = energy_counters(str(tmp_path))
    assert list(c) == ["rapl:intel-rapl:0"] and "readable" in energy_status(str(tmp_path))
    a = read_joules(c)
    (pkg / "energy_uj").write_text("2000000\n")  # wrapped: 1 J to the wrap + 2 J
    assert joules_between(a, read_joules(c), c) == pytest.approx(3.0)
    assert energy_status(str(tmp_path / "none")).startswith("not readable")
