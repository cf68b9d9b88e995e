"""`cramc run` and `cramc check` load only what they use: no compiler front end, sweep, training or plotting
stack, and `--version` is looked up only when asked for (importlib.metadata is slow to import)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cramtest import REPO, example

#: Packages a run of a prepared program never needs (each costs 0.05 s to seconds of start-up).
NOT_FOR_A_RUN = (
    "onnx",
    "onnxruntime",
    "torch",
    "matplotlib",
    "networkx",
    "scipy",
    "cramc.frontend",
    "cramc.compiler",
    "cramc.sweep",
    "cramc.train",
    "cramc.explore",
    "importlib.metadata",
    "regex",  # lark's optional regex engine (cramc.isa._lark keeps lark from loading it)
)

_PROBE = """
import json, sys
before = set(sys.modules)
from cramc.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "new": sorted(set(sys.modules) - before)}))
"""


def _loaded(*argv: str) -> tuple[int, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    res = json.loads(out.splitlines()[-1])
    return int(res["rc"]), list(res["new"])


def _unneeded(mods: list[str]) -> list[str]:
    return [m for m in mods if any(m == p or m.startswith(p + ".") for p in NOT_FOR_A_RUN)]


@pytest.mark.parametrize("extra", [[], ["--gate-error", "1e-3", "--seed", "1"]], ids=["exact", "faults"])
def test_run_imports_only_what_a_run_needs(tmp_path: Path, extra: list[str]) -> None:
    prog = str(example("ripple_adder8.cram"))
    rc, mods = _loaded("run", prog, "--report", str(tmp_path / "r.json"), "--output", str(tmp_path / "o.npz"), *extra)
    assert rc == 0
    assert "cramc.sim.interp" in mods  # the probe sees what the run loaded
    assert _unneeded(mods) == []


def test_check_imports_only_what_it_needs() -> None:
    rc, mods = _loaded("check", str(example("full_adder.cram")))
    assert rc == 0 and "cramc.isa.verifier" in mods
    assert _unneeded(mods) == []


def test_version_is_printed_when_asked_for() -> None:
    res = subprocess.run([sys.executable, "-m", "cramc.cli", "--version"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout.startswith("cramc ") and len(res.stdout.split()) == 2
