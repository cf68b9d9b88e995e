"""`cramc run --input/--output` data files in onnxruntime's layout and with the model's own names.

For the same input arrays, the output file holds the arrays onnxruntime gives: the same names (the
ONNX output names, even where the program spells them differently inside) and the same shapes (the
model's batch axis is the sample axis: `[N, 64] -> [N, 10]`, not `[N, 1, 10]`).  One .npz serves
`compile --calibration` and `run --input`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from compilertest import DIGITS, cramc, load_npz
from onnx import TensorProto, helper, numpy_helper

from cramc.isa.parser import parse_file


def _ort(model: Path | bytes, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, x), strict=True))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_digits_outputs_match_onnxruntime_names_and_shapes(
    digits_programs: dict[str, Path], tmp_path: Path, name: str
) -> None:
    d = DIGITS[name]
    out = tmp_path / "out.npz"
    res = cramc("run", str(digits_programs[name]), "--input", str(d.test_x), "--output", str(out))
    assert res.rc == 0, res.err
    x = load_npz(d.test_x)
    want = _ort(d.model, x)
    got = load_npz(out)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()} == {"logits": (360, 10)}
    # the same numbers as the program's own layout, only the batch axis folded into the samples
    decl = parse_file(str(digits_programs[name])).ios("output")[0]
    assert (decl.type.shape, decl.batch) == ((1, 10), 0)
    assert (got["logits"].argmax(axis=1) == want["logits"].argmax(axis=1)).mean() > 0.9


def test_inputs_with_and_without_the_batch_axis(digits_programs: dict[str, Path], tmp_path: Path) -> None:
    d = DIGITS["mlp"]
    x = load_npz(d.test_x)["input"][:7]
    outs = []
    for i, arr in enumerate((x, x[:, None, :])):  # [N, 64] as onnxruntime takes it, and [N, 1, 64]
        inp, out = tmp_path / f"in{i}.npz", tmp_path / f"out{i}.npz"
        np.savez(inp, input=arr)
        res = cramc("run", str(digits_programs["mlp"]), "--input", str(inp), "--output", str(out))
        assert res.rc == 0, res.err
        outs.append(load_npz(out)["logits"])
    assert outs[0].shape == (7, 10)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_shape_errors_show_the_shape_to_pass(digits_programs: dict[str, Path], tmp_path: Path) -> None:
    inp = tmp_path / "bad.npz"
    np.savez(inp, input=np.zeros((3, 8, 8), np.float32))
    res = cramc("run", str(digits_programs["cnn"]), "--input", str(inp))
    assert res.rc == 1
    assert res.err == f"error: {inp}: input 'input' has shape [3, 8, 8]; expected [N, 1, 8, 8] (N samples)\n"


def _slash_model(batch: int | str) -> onnx.ModelProto:
    """Conv-ReLU-Flatten-Gemm with '/' and ':' in every name (like light ResNet-50's gpu_0/data_0)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 1, 3, 3)) * 0.5).astype(np.float32), "conv/w"),
        numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), "conv/b"),
        numpy_helper.from_array((rng.standard_normal((5, 64)) * 0.2).astype(np.float32), "fc/w"),
        numpy_helper.from_array((rng.standard_normal(5) * 0.1).astype(np.float32), "fc/b"),
    ]
    nodes = [
        helper.make_node("Conv", ["data/0", "conv/w", "conv/b"], ["conv/y"], pads=[1, 1, 1, 1], name="conv/1"),
        helper.make_node("Relu", ["conv/y"], ["relu/y"], name="relu/1"),
        helper.make_node("Flatten", ["relu/y"], ["flat/y"], name="flat/1"),
        helper.make_node("Gemm", ["flat/y", "fc/w", "fc/b"], ["out/logits:0"], transB=1, name="fc/1"),
    ]
    g = helper.make_graph(
        nodes,
        "slash",
        [helper.make_tensor_value_info("data/0", TensorProto.FLOAT, [batch, 1, 4, 4])],
        [helper.make_tensor_value_info("out/logits:0", TensorProto.FLOAT, [batch, 5])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("batch", ["N", 1], ids=["symbolic", "fixed1"])
def test_names_with_slashes_one_file_for_compile_and_run(tmp_path: Path, batch: int | str) -> None:
    model = tmp_path / "slash.onnx"
    onnx.save(_slash_model(batch), model)
    x = {"data/0": np.random.default_rng(1).random((12, 1, 4, 4), dtype=np.float32)}
    data = tmp_path / "x.npz"
    np.savez(data, **x)
    prog, out = tmp_path / "slash.cram", tmp_path / "y.npz"
    res = cramc("compile", str(model), "-o", str(prog), "--calibration", str(data))
    assert res.rc == 0, res.err
    decls = parse_file(str(prog))
    (i,), (o,) = decls.ios("input"), decls.ios("output")
    assert (i.name, i.data_name, i.batch) == ("data_0", "data/0", 0)  # spelled for the ISA inside, ONNX name kept
    assert (o.name, o.data_name, o.batch) == ("out_logits_0", "out/logits:0", 0)
    res = cramc("run", str(prog), "--input", str(data), "--output", str(out))
    assert res.rc == 0, res.err
    got = load_npz(out)
    if batch == "N":
        want = _ort(model, x)
    else:  # a model of fixed batch 1 runs one sample at a time; the samples stack on its batch axis
        runs = [_ort(model, {"data/0": x["data/0"][k : k + 1]}) for k in range(12)]
        want = {"out/logits:0": np.concatenate([r["out/logits:0"] for r in runs])}
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()} == {"out/logits:0": (12, 5)}
    # the quantised model's outputs are close to the float model's (8-bit: within a few percent of the range)
    span = float(np.ptp(want["out/logits:0"]))
    assert float(np.abs(got["out/logits:0"] - want["out/logits:0"]).max()) < 0.1 * span


def test_a_model_without_a_batch_axis_keeps_a_leading_sample_axis(tmp_path: Path) -> None:
    """Input [4, 16] (no batch axis: 4 is not 1): data [N, 4, 16], outputs [N, 4, 3]."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array((rng.standard_normal((16, 3)) * 0.3).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "nobatch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        [w],
    )
    model = tmp_path / "nobatch.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), model)
    x = rng.random((6, 4, 16), dtype=np.float32)
    data, prog, out = tmp_path / "x.npz", tmp_path / "p.cram", tmp_path / "y.npz"
    np.savez(data, x=x)
    assert cramc("compile", str(model), "-o", str(prog), "--calibration", str(data)).rc == 0
    decl = parse_file(str(prog)).ios("output")[0]
    assert decl.batch is None and decl.data_name is None
    res = cramc("run", str(prog), "--input", str(data), "--output", str(out))
    assert res.rc == 0, res.err
    want = np.stack([_ort(model, {"x": x[k]})["y"] for k in range(6)])
    got = load_npz(out)["y"]
    assert got.shape == want.shape == (6, 4, 3)


def test_sweep_reads_the_same_data_file(tmp_path: Path) -> None:
    """`cramc sweep --data` takes the arrays `run --input` takes: ONNX names, samples on the batch axis."""
    model = tmp_path / "slash.onnx"
    onnx.save(_slash_model("N"), model)
    x = np.random.default_rng(3).random((12, 1, 4, 4), dtype=np.float32)
    data, labels = tmp_path / "x.npz", tmp_path / "y.npy"
    np.savez(data, **{"data/0": x})
    np.save(labels, _ort(model, {"data/0": x})["out/logits:0"].argmax(axis=1))
    for mode in ("gate", "statistical"):
        res = cramc(
            "sweep", str(model), "--data", str(data), "--labels", str(labels), "--calibration", str(data),
            "--gate-error", "0", "--protection", "none", "--seeds", "1", "--mode", mode, "--no-progress",
        )  # fmt: skip
        assert res.rc == 0, res.err
        assert "swept 1 points x 1 seed(s) on 12 samples" in res.out
