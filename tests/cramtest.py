"""Helpers shared by the tests (imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cramc.errmodel import FaultModel
from cramc.isa.parser import parse, parse_file
from cramc.isa.verifier import Linked, verify
from cramc.sim.interp import RunResult, run

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "isa" / "examples"
GOLDEN_ERRORS = Path(__file__).resolve().parent / "golden" / "errors"

#: Folders that never hold project sources.
_SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "node_modules", ".hypothesis", ".pytest_cache", ".ruff_cache"}


def example(name: str) -> Path:
    return EXAMPLES / name


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.cram"))


def all_cram_files() -> list[Path]:
    """Every .cram file in the repository (examples, goldens, models, ...)."""
    out = []
    for p in REPO.rglob("*.cram"):
        rel = p.relative_to(REPO)
        if any(part in _SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        out.append(p)
    return sorted(out)


def link(text: str, file: str = "<test>") -> Linked:
    return verify(parse(text, file))


def link_file(path: Path) -> Linked:
    return verify(parse_file(str(path)))


def run_text(
    text: str, inputs: dict[str, np.ndarray] | None = None, faults: FaultModel | None = None, seed: int = 0, **kw: Any
) -> RunResult:
    linked = link(text)
    if inputs is None:
        assert linked.expect is not None
        inputs = dict(linked.expect.inputs)
    return run(linked, inputs, faults, seed=seed, **kw)


def bits_of(x: np.ndarray, b: int) -> np.ndarray:
    """Bit b of the two's-complement representation of integer array x (0/1, int64)."""
    return (x.astype(np.int64) >> b) & 1
