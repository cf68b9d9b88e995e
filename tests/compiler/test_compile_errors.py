"""`cramc compile` on bad input: one `error:` line naming the problem and where, exit 1, no traceback,
and no output file (nothing half-written on disk).

Cases: unsupported operators (Sin, LSTM), corrupt, truncated and empty .onnx files, calibration data
with a wrong shape or a wrong input name, external-data initializers that point outside the model's
folder, and unsupported --weight-bits / --act-bits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from compilertest import DIGITS, GOLDEN_IR
from onnx import TensorProto, helper, numpy_helper

CNN = DIGITS["cnn"]


def _float_model(
    nodes: list[onnx.NodeProto], x_shape: list[int], y_shape: list[int], inits: Sequence[onnx.TensorProto] = ()
) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def sin_model() -> onnx.ModelProto:
    return _float_model([helper.make_node("Sin", ["x"], ["y"], name="phase_sin")], [1, 4], [1, 4])


def lstm_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    hidden, width = 3, 4
    w = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, width)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R")
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="encoder_lstm", hidden_size=hidden)
    return _float_model([node], [2, 1, width], [2, 1, 1, hidden], [w, r])


def matmul_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 16, "W")
    return _float_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [1, 4], [1, 4], [w])


@pytest.fixture
def compile_fails(cli, tmp_path: Path) -> Callable[..., str]:
    """Run `cramc compile ARGS... -o OUT` expecting a clean failure; return the error line.

    The output goes to a folder of its own, which must still be empty afterwards.
    """

    def check(*args: str) -> str:
        outdir = tmp_path / "out"
        outdir.mkdir(exist_ok=True)
        res = cli("compile", *args, "-o", str(outdir / "prog.cram"))
        assert res.rc == 1, res.out + res.err
        assert "Traceback" not in res.err
        assert res.out == ""
        errors = [line for line in res.err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, res.err
        assert list(outdir.iterdir()) == []
        return errors[0]

    return check


@pytest.mark.parametrize(
    ("build", "op", "node"),
    [(sin_model, "Sin", "phase_sin"), (lstm_model, "LSTM", "encoder_lstm")],
    ids=["Sin", "LSTM"],
)
def test_unsupported_operator(
    compile_fails, tmp_path: Path, build: Callable[[], onnx.ModelProto], op: str, node: str
) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(build(), str(path))
    err = compile_fails(str(path))
    assert f"node '{node}': operator {op} is not supported" in err
    supported = err.split("supported operators: ")[1].split(", ")
    assert supported == sorted(supported)
    assert {"Conv", "Gemm", "MatMul", "MaxPool", "QLinearConv", "Relu"} <= set(supported)
    assert op not in supported


def test_corrupt_model(compile_fails, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    err = compile_fails(str(path))
    assert err.startswith(f"error: {path}: not a valid ONNX model (corrupt or truncated file")


@pytest.mark.parametrize("keep", [0.5, 0.9, 64])
def test_truncated_model(compile_fails, tmp_path: Path, keep: float) -> None:
    data = CNN.model.read_bytes()
    n = int(len(data) * keep) if keep < 1 else int(keep)
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[:n])
    err = compile_fails(str(path))
    assert err.startswith(f"error: {path}: ")
    assert "not a valid ONNX model" in err or "the ONNX checker rejects the model" in err


def test_empty_model_file(compile_fails, tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    assert compile_fails(str(path)) == (
        f"error: {path}: not a valid ONNX model (empty graph; corrupt or truncated file?)"
    )


def test_missing_model_file(compile_fails, tmp_path: Path) -> None:
    assert compile_fails(str(tmp_path / "nowhere.onnx")) == f"error: {tmp_path / 'nowhere.onnx'}: no such model file"


def test_calibration_with_wrong_shape(compile_fails, tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.zeros((4, 1, 7, 7), np.float32))
    err = compile_fails(str(CNN.model), "--calibration", str(calib))
    assert err == "error: calibration data: 'input' has shape [4, 1, 7, 7]; expected [N, 1, 8, 8]"


def test_calibration_with_wrong_name(compile_fails, tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, image=np.zeros((4, 1, 8, 8), np.float32))
    err = compile_fails(str(CNN.model), "--calibration", str(calib))
    assert err == "error: calibration data: no array named 'input' (the model's inputs: input)"


def test_calibration_with_extra_array(compile_fails, tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(4))
    assert (
        compile_fails(str(CNN.model), "--calibration", str(calib))
        == "error: calibration data: arrays labels match no model input"
    )


def _external(folder: Path) -> Path:
    """model.onnx whose initializer W lives in folder/w.bin."""
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        matmul_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    return path


def _relocate(path: Path, location: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    (t,) = m.graph.initializer
    assert t.data_location == TensorProto.EXTERNAL
    for e in t.external_data:
        if e.key == "location":
            e.value = location
    onnx.save(m, str(path))


def test_external_data_inside_the_folder_loads(cli, tmp_path: Path) -> None:
    path = _external(tmp_path / "model")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.linspace(0, 1, 32, dtype=np.float32).reshape(8, 4))
    res = cli("compile", str(path), "--calibration", str(calib), "-o", str(tmp_path / "prog.cram"))
    assert res.rc == 0, res.err
    assert cli("run", str(tmp_path / "prog.cram")).rc == 0


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_folder(compile_fails, tmp_path: Path, where: str) -> None:
    path = _external(tmp_path / "model")
    evil = tmp_path / "evil.bin"
    evil.write_bytes((tmp_path / "model" / "w.bin").read_bytes())  # a well-formed payload: only its place is wrong
    location = {"parent": "../evil.bin", "absolute": str(evil), "symlink": "link.bin"}[where]
    if where == "symlink":
        os.symlink(evil, tmp_path / "model" / "link.bin")
    _relocate(path, location)
    err = compile_fails(str(path))
    assert err == f"error: {path}: initializer 'W' points to external data '{location}' outside the model's folder"


def test_external_data_missing(compile_fails, tmp_path: Path) -> None:
    path = _external(tmp_path / "model")
    (tmp_path / "model" / "w.bin").unlink()
    assert compile_fails(str(path)) == f"error: {path}: initializer 'W': external data file 'w.bin' is missing"


@pytest.mark.parametrize("model", ["float", "qdq"])
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--weight-bits", "3", "--weight-bits 3: onnxruntime quantises weights to 8 or 4 bits"),
        ("--act-bits", "5", "--act-bits 5: onnxruntime quantises activations to 8 or 16 bits"),
    ],
)
def test_unsupported_bit_widths(compile_fails, model: str, flag: str, value: str, message: str) -> None:
    # rejected for already-quantised (QDQ) models too, where the flag would otherwise be ignored
    path = CNN.model if model == "float" else GOLDEN_IR / "qdq_mlp" / "model.onnx"
    calib = ["--calibration", str(CNN.calib)] if model == "float" else []
    assert compile_fails(str(path), *calib, flag, value) == f"error: {message}"


def test_failed_compile_leaves_an_existing_output_alone(cli, tmp_path: Path) -> None:
    out = tmp_path / "prog.cram"
    out.write_text("; an earlier program\n", encoding="utf-8")
    model = tmp_path / "sin.onnx"
    onnx.save(sin_model(), str(model))
    res = cli("compile", str(model), "-o", str(out))
    assert res.rc == 1
    assert out.read_text(encoding="utf-8") == "; an earlier program\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prog.cram", "sin.onnx"]
