"""Fixtures of the compiler tests: the shipped digits models compiled once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from compilertest import DIGITS, cramc


@pytest.fixture(scope="session")
def digits_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`cramc compile` of models/digits_{mlp,cnn}.onnx with their calibration data (default chip).

    Tests that edit a program copy it first: the files are shared by the whole session.
    """
    out = tmp_path_factory.mktemp("digits")
    progs: dict[str, Path] = {}
    for name, d in DIGITS.items():
        prog = out / f"digits_{name}.cram"
        res = cramc("compile", str(d.model), "-o", str(prog), "--calibration", str(d.calib))
        assert res.rc == 0, res.err
        assert res.out.startswith(f"wrote {prog}: ")
        progs[name] = prog
    return progs
