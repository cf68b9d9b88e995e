"""`cramc finetune` without PyTorch, and compile/run never importing it (no PyTorch needed for these tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cramtest import REPO

MODELS = REPO / "models"


def test_finetune_without_torch_is_a_clear_user_error(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    out = tmp_path / "ft.onnx"
    res = cli(
        "finetune",
        str(MODELS / "digits_mlp.onnx"),
        "--data",
        str(MODELS / "digits_test_x_flat.npz"),
        "--labels",
        str(MODELS / "digits_test_labels.npy"),
        "--gate-error",
        "1e-3",
        "-o",
        str(out),
    )
    assert res.rc == 1
    assert res.err.strip() == "error: cramc finetune needs PyTorch: pip install 'cramc[train]'"
    assert "Traceback" not in res.err and not out.exists()


def test_finetune_needs_a_fault_rate(cli, tmp_path: Path) -> None:
    res = cli(
        "finetune",
        str(MODELS / "digits_mlp.onnx"),
        "--data",
        str(MODELS / "digits_test_x_flat.npz"),
        "--labels",
        str(MODELS / "digits_test_labels.npy"),
        "-o",
        str(tmp_path / "ft.onnx"),
    )
    assert res.rc == 1 and "--gate-error P or --error-model FILE" in res.err


def test_compile_and_run_never_import_torch(tmp_path: Path) -> None:
    prog = tmp_path / "mlp.cram"
    code = (
        "import sys\n"
        "from cramc.cli import main\n"
        f"assert main(['compile', {str(MODELS / 'digits_mlp.onnx')!r}, '-o', {str(prog)!r}, '--calibration', "
        f"{str(MODELS / 'digits_calib_flat.npz')!r}]) == 0\n"
        f"assert main(['run', {str(prog)!r}, '--gate-error', '1e-3']) == 0\n"
        "assert 'torch' not in sys.modules, 'compile/run imported torch'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
