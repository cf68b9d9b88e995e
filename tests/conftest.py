"""Shared fixtures: repository paths and a CLI runner that captures output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cramtest import REPO

from cramc.cli import main


@dataclass(frozen=True)
class CliResult:
    rc: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `cramc ARGS...` in-process through cramc.cli.main; return exit code, stdout, stderr."""

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        try:
            rc = main(list(argv))
        except SystemExit as e:  # argparse usage errors
            rc = int(e.code or 0)
        cap = capsys.readouterr()
        return CliResult(rc, cap.out, cap.err)

    return run


@pytest.fixture
def repo() -> object:
    return REPO


#: Every simulator backend; the torch ones run where PyTorch is installed (and a GPU, for cuda).
BACKENDS = ("numpy", "torch:cpu", "torch:cuda")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """A simulator backend spec (cramc.sim.backend); tests using it run once per backend."""
    spec: str = request.param
    if spec.startswith("torch"):
        torch = pytest.importorskip("torch", reason="PyTorch is not installed (the optional torch backend)")
        if spec == "torch:cuda" and not torch.cuda.is_available():
            pytest.skip("no CUDA device")
    return spec
