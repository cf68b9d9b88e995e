"""The benchmark scripts run end to end on tiny sizes (smoke tests: no timing is asserted here)."""

from __future__ import annotations

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
