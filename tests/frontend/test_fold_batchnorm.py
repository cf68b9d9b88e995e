"""The fold-batchnorm ONNX pass (cramc/frontend/fold_batchnorm.py).

A BatchNormalization whose input is a Conv used by nothing else, with every parameter constant,
becomes part of the Conv (weights scaled per output channel, a new bias); any other stays.  On the
float models of tests/foldmodels.py and variants built here: the folded model computes what the
original does under onnxruntime (float32 tolerance: rtol 1e-5, atol 1e-5; the fold computes in
float64 and rounds once), exactly the foldable BatchNormalizations are gone, the replaced
initializers are dropped, and folding again changes nothing.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from foldmodels import conv_bn, onnx_text, run_ort
from onnx import helper

from cramc.frontend import fold_batchnorm


def _inputs(model: onnx.ModelProto, n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    vi = model.graph.input[0]
    shape = [d.dim_value or n for d in vi.type.tensor_type.shape.dim]
    return {vi.name: np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)}


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node]


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    for got, want in zip(run_ort(b, feeds), run_ort(a, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def foldable_only() -> onnx.ModelProto:
    """conv_bn without its two unfoldable BatchNormalizations: conv1-bn1-relu1-conv2-bn2-conv3-flatten."""
    m = conv_bn()
    g = m.graph
    keep = [n for n in g.node if n.name not in ("bn3", "skip", "relu2", "bn4")]
    keep[-1].input[0] = "h3"  # flatten reads conv3
    del g.node[:]
    g.node.extend(keep)
    return m


def test_folds_exactly_the_foldable_ones_and_keeps_the_outputs() -> None:
    m = conv_bn()
    folded = fold_batchnorm.run(copy.deepcopy(m))
    onnx.checker.check_model(folded, full_check=True)
    assert _ops(folded) == ["conv1", "relu1", "conv2", "conv3", "bn3", "skip", "relu2", "bn4", "flatten"]
    for seed in range(3):
        _same_outputs(m, folded, _inputs(m, seed=seed))
    nodes = {n.name: n for n in folded.graph.node}
    # the folded convs read new weights and a bias (conv2 had none); conv3 feeds two users and is untouched
    assert list(nodes["conv1"].input) == ["x", "c1_w_bnfold", "h1n_bias_bnfold"]
    assert list(nodes["conv2"].input) == ["h1r", "c2_w_bnfold", "h2n_bias_bnfold"]
    assert list(nodes["conv1"].output) == ["h1n"] and list(nodes["conv2"].output) == ["h2n"]
    assert list(nodes["conv3"].input) == ["h2n", "c3_w", "c3_b"]
    inits = {t.name for t in folded.graph.initializer}
    assert not inits & {"c1_w", "c1_b", "c2_w", *(f"bn{i}_{p}" for i in (1, 2) for p in "gbmv")}
    assert {f"bn{i}_{p}" for i in (3, 4) for p in "gbmv"} <= inits


def test_no_batchnormalization_remains_when_all_are_foldable() -> None:
    m = foldable_only()
    onnx.checker.check_model(m, full_check=True)
    folded = fold_batchnorm.run(copy.deepcopy(m))
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu", "Conv", "Conv", "Flatten"]
    _same_outputs(m, folded, _inputs(m, n=3))


def test_folding_is_idempotent() -> None:
    once = fold_batchnorm.run(conv_bn())
    twice = fold_batchnorm.run(copy.deepcopy(once))
    assert onnx_text(twice) == onnx_text(once)


def test_the_scale_and_shift_are_the_documented_ones() -> None:
    """w' = w * gamma / sqrt(var + eps) per output channel, b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
    m = conv_bn()
    init = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    folded = fold_batchnorm.run(copy.deepcopy(m))
    got = {t.name: onnx.numpy_helper.to_array(t) for t in folded.graph.initializer}
    k = init["bn1_g"] / np.sqrt(init["bn1_v"] + 1e-3)  # bn1 has epsilon 1e-3
    np.testing.assert_array_equal(got["c1_w_bnfold"], (init["c1_w"] * k[:, None, None, None]).astype(np.float32))
    np.testing.assert_array_equal(
        got["h1n_bias_bnfold"], ((init["c1_b"] - init["bn1_m"]) * k + init["bn1_b"]).astype(np.float32)
    )
    k2 = init["bn2_g"] / np.sqrt(init["bn2_v"] + 1e-5)  # the default epsilon
    np.testing.assert_array_equal(got["h2n_bias_bnfold"], ((0 - init["bn2_m"]) * k2 + init["bn2_b"]).astype(np.float32))


@pytest.mark.parametrize("what", ["mean", "weight"])
def test_a_batchnormalization_with_a_runtime_parameter_stays(what: str) -> None:
    """Parameters that are graph inputs, not initializers, cannot be folded into constants."""
    m = foldable_only()
    g = m.graph
    name = "bn1_m" if what == "mean" else "c1_w"
    t = next(t for t in g.initializer if t.name == name)
    g.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
    g.initializer.remove(t)
    folded = fold_batchnorm.run(copy.deepcopy(m))
    onnx.checker.check_model(folded, full_check=True)
    assert "bn1" in _ops(folded) and "bn2" not in _ops(folded)
    feeds = {**_inputs(m, n=2), name: onnx.numpy_helper.to_array(t)}
    _same_outputs(m, folded, feeds)
