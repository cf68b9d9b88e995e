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
