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
