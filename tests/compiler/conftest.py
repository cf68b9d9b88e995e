"""Fixtures of the compiler tests: the shipped digits and MNIST models compiled once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from compilertest import DIGITS, MNIST, Digits, cramc


def _compile_all(models: dict[str, Digits], out: Path) -> dict[str, Path]:
    progs: dict[str, Path] = {}
    for name, d in models.items():
        prog = out / f"{d.dataset}_{name}.cram"
        res = cramc("compile", str(d.model), "-o", str(prog), "--calibration", str(d.calib))
        assert res.rc == 0, res.err
        assert res.out.startswith(f"wrote {prog}: ")
        progs[name] = prog
    return progs


@pytest.fixture(scope="session")
def digits_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`cramc compile` of models/digits_{mlp,cnn}.onnx with their calibration data (default chip).

    Tests that edit a program copy it first: the files are shared by the whole session.
    """
    return _compile_all(DIGITS, tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def mnist_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`cramc compile` of models/mnist_{lenet5,mlp}.onnx with their calibration data (default chip); shared too."""
    return _compile_all(MNIST, tmp_path_factory.mktemp("mnist"))
