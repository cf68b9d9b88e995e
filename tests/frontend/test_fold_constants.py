"""The fold-constants ONNX pass (cramc/frontend/fold_constants.py).

It fixes the batch dimension to 1, turns initializers listed as graph inputs into plain constants,
and replaces every node whose inputs are all constant (Shape of a static shape included) by an
initializer computed with onnx's reference evaluator; Quantize/DequantizeLinear (the quantiser's
own), RandomNormal and nodes of other domains stay.  Checked on tests/foldmodels.py's const_chain
and variants: the folded model computes what the original does under onnxruntime (the folded
arithmetic is the same float32 operations, rtol 1e-6), the constant chains are gone, the inputs
and outputs are as stated, and bad models get a UserError naming the input or node.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from cramtest import REPO
from foldmodels import const_chain, conv_bn, run_ort
from onnx import TensorProto, helper, numpy_helper

from cramc.errors import UserError
from cramc.frontend import fold_constants


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def test_const_chain_folds_to_the_data_path() -> None:
    m = const_chain()
    onnx.checker.check_model(m, full_check=True)
    folded = fold_constants.run(copy.deepcopy(m))
    onnx.checker.check_model(folded, full_check=True)
    assert [n.op_type for n in folded.graph.node] == ["Reshape", "QuantizeLinear", "DequantizeLinear", "MatMul", "Add"]
    for seed in range(3):
        x = _x((1, 3, 4), seed)
        np.testing.assert_allclose(run_ort(folded, {"x": x})[0], run_ort(m, {"x": x})[0], rtol=1e-6, atol=0)
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    np.testing.assert_array_equal(inits["target"], [1, -1])  # Concat(Gather(Shape(x), 0), [-1]) at batch 1
    w0, w1, b0 = (numpy_helper.to_array(t) for t in const_chain().graph.initializer[:3])
    np.testing.assert_array_equal(inits["w"], w0 + w1 * np.float32(0.5))
    np.testing.assert_array_equal(inits["bias"], np.float32(0.25) + b0)
    # the folded intermediates nobody reads any more are dropped
    assert not {"w0", "w1", "b0", "xs", "n", "n1", "half", "w1h", "bshape", "bfill"} & set(inits)


def test_batch_fixed_and_initializers_leave_the_inputs() -> None:
    folded = fold_constants.run(const_chain())
    assert [i.name for i in folded.graph.input] == ["x"]
    dims = [d.dim_value for d in folded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 4]
    assert [d.dim_value for d in folded.graph.output[0].type.tensor_type.shape.dim] == [1, 5]
    assert folded.ir_version >= 4  # initializers need not be inputs from IR 4 on


def test_a_model_without_constant_chains_keeps_its_nodes() -> None:
    m = conv_bn()
    folded = fold_constants.run(copy.deepcopy(m))
    assert [n.name for n in folded.graph.node] == [n.name for n in m.graph.node]
    x = _x((1, 2, 6, 6))
    np.testing.assert_array_equal(run_ort(folded, {"x": x})[0], run_ort(m, {"x": x})[0])


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "mnist_lenet5"])
def test_shipped_models_are_unchanged_in_meaning(name: str) -> None:
    m = onnx.load(str(REPO / "models" / f"{name}.onnx"))
    folded = fold_constants.run(copy.deepcopy(m))
    shape = tuple(d.dim_value or 1 for d in folded.graph.input[0].type.tensor_type.shape.dim)
    feeds = {folded.graph.input[0].name: _x(shape)}
    np.testing.assert_array_equal(run_ort(folded, feeds)[0], run_ort(m, feeds)[0])


def _single(node: onnx.NodeProto, inits: list[onnx.TensorProto], x_dims: list, out: str = "y") -> onnx.ModelProto:
    g = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_a_symbolic_dimension_after_the_batch_is_an_error() -> None:
    m = _single(helper.make_node("Relu", ["x"], ["y"], name="r"), [], ["N", "C", 4])
    with pytest.raises(UserError, match=r"input 'x' has a symbolic dimension 1 \('C'\)"):
        fold_constants.run(m)


def test_a_constant_node_that_cannot_be_evaluated_is_named() -> None:
    bad = helper.make_node("Reshape", ["c", "s"], ["y"], name="bad_reshape")
    inits = [
        numpy_helper.from_array(np.zeros(6, np.float32), "c"),
        numpy_helper.from_array(np.array([4], np.int64), "s"),
    ]
    with pytest.raises(UserError, match=r"node 'bad_reshape' \(Reshape\): cannot fold constants"):
        fold_constants.run(_single(bad, inits, [1, 3]))


def test_random_and_quantisation_nodes_and_other_domains_stay() -> None:
    nodes = [
        helper.make_node("RandomNormal", [], ["r"], name="rand", shape=[1, 3]),
        helper.make_node("QuantizeLinear", ["c", "s"], ["cq"], name="cquant"),
        helper.make_node("DequantizeLinear", ["cq", "s"], ["cdq"], name="cdequant"),
        helper.make_node("Add", ["r", "cdq"], ["rc"], name="add_rc"),
        helper.make_node("Mul", ["x", "rc"], ["y"], name="mul"),
    ]
    inits = [numpy_helper.from_array(np.ones((1, 3), np.float32), "c"), numpy_helper.from_array(np.float32(0.1), "s")]
    g = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    folded = fold_constants.run(m)
    assert [n.name for n in folded.graph.node] == ["rand", "cquant", "cdequant", "add_rc", "mul"]
    custom = _single(helper.make_node("Foo", ["c"], ["y"], name="foo", domain="com.example"),
                     [numpy_helper.from_array(np.ones(2, np.float32), "c")], [1, 2])  # fmt: skip
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    assert [n.name for n in fold_constants.run(custom).graph.node] == ["foo"]
