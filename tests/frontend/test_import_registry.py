"""The importer's handler registry: one handler per ONNX operator, and the supported list is the registry.

cramc.frontend.import_base.handles files each handler under its operators; the MVM layers live in
cramc.frontend.import_mvm, everything lowered to CMOS operations in cramc.frontend.import_cmos.
Legalisation (cramc.frontend.quantize) checks models against exactly that registry, so adding an
operator is adding one handler.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cramc.errors import InternalError, UserError
from cramc.frontend import import_cmos, import_mvm, quantize
from cramc.frontend.import_base import HANDLERS, ImportState, OpHandler, handles
from cramc.frontend.importer import QUANTISED_OPS, SUPPORTED_OPS, Importer
from cramc.ir.semantics import evaluate

MVM_OPS = {"Conv", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}


def _model(op_type: str, name: str = "n0", domain: str = "") -> onnx.ModelProto:
    node = helper.make_node(op_type, ["x"], ["y"], name=name, domain=domain)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(g, opset_imports=opsets)


def test_supported_ops_are_the_registry() -> None:
    assert set(SUPPORTED_OPS) == set(HANDLERS)
    assert QUANTISED_OPS < SUPPORTED_OPS
    for op, h in HANDLERS.items():
        assert h.op_type == op
        home = import_mvm if op in MVM_OPS else import_cmos
        assert h.fn.__module__ == home.__name__, (op, h.fn.__module__)
    assert MVM_OPS <= SUPPORTED_OPS


def test_legalise_lists_exactly_the_registry() -> None:
    with pytest.raises(UserError) as info:
        quantize.legalise(_model("Sin", "phase"))
    msg = info.value.message
    assert msg.startswith("node 'phase': operator Sin is not supported; supported operators: ")
    assert msg.split("supported operators: ")[1] == ", ".join(sorted(SUPPORTED_OPS))


def test_unknown_domain_is_refused_even_for_a_known_op_type() -> None:
    with pytest.raises(UserError, match=r"operator Relu \(domain example.org\) is not supported"):
        quantize.legalise(_model("Relu", domain="example.org"))


def test_quantised_markers() -> None:
    """QDQ and QOperator operators mark a model as quantised; Cast is supported but marks nothing."""
    assert {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "MatMulInteger"} <= QUANTISED_OPS
    assert "Cast" in SUPPORTED_OPS and "Cast" not in QUANTISED_OPS
    assert not QUANTISED_OPS & {"Relu", "Conv", "Gemm", "MatMul"}
    assert not quantize.is_quantised(_model("Relu"))
    assert quantize.is_quantised(_model("QuantizeLinear"))


def test_a_second_handler_for_an_operator_is_refused() -> None:
    before = dict(HANDLERS)

    with pytest.raises(InternalError, match="two importer handlers for ONNX operator Relu"):

        @handles("CramcTestOnly", "Relu")
        def _dup(imp: ImportState, node: onnx.NodeProto) -> None:
            raise AssertionError("never called")

    assert HANDLERS == before  # nothing half-registered


def test_dispatch_goes_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler filed in the registry is what the importer runs for its operator."""

    def negate(imp: ImportState, node: onnx.NodeProto) -> None:
        x = imp.float_ref(node.input[0], node)
        minus = imp.g.const(node.output[0] + "_m1", np.full((1, 1), -1.0, np.float32), "f32")
        imp.env[node.output[0]] = imp.emit("mul", node.output[0], [x, minus], {}, node.name)

    monkeypatch.setitem(HANDLERS, "CramcTestNeg", OpHandler("CramcTestNeg", negate))
    g = Importer(_model("CramcTestNeg")).run()
    assert [op.kind for op in g.ops] == ["mul"]
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 4)
    np.testing.assert_array_equal(evaluate(g, {"x": x})["y"], -x)
    # without the entry the same model is an unsupported operator, named with its node
    monkeypatch.delitem(HANDLERS, "CramcTestNeg")
    with pytest.raises(UserError, match="node 'n0': operator CramcTestNeg is not supported"):
        Importer(_model("CramcTestNeg")).run()
