"""Tiny float ONNX models for the fold passes (cramc.frontend.fold_constants, fold_batchnorm), and a canonical text.

Imported as a plain module (tests/ is on sys.path) by tests/frontend/test_fold_*.py and by the
per-pass goldens (tests/golden/test_pass_goldens.py).  Every weight comes from a fixed seed, so the
models are the same on every run; `onnx_text` prints a model as deterministic text (nodes with their
attributes, initializers with their exact values), independent of the onnx printer's format.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
PRODUCER = "tests/foldmodels.py"


def _t(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _bn(rng: np.random.Generator, prefix: str, c: int) -> list[onnx.TensorProto]:
    """gamma, beta, mean, var of a BatchNormalization over c channels (var > 0, |gamma| away from 0)."""
    gamma = (rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c)).astype(np.float32)
    beta = rng.normal(0, 0.5, c).astype(np.float32)
    mean = rng.normal(0, 0.5, c).astype(np.float32)
    var = rng.uniform(0.2, 2.0, c).astype(np.float32)
    return [_t(f"{prefix}_g", gamma), _t(f"{prefix}_b", beta), _t(f"{prefix}_m", mean), _t(f"{prefix}_v", var)]


def _bn_node(prefix: str, x: str, y: str, eps: float | None = None) -> onnx.NodeProto:
    kw = {} if eps is None else {"epsilon": eps}
    ins = [x, f"{prefix}_g", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"]
    return helper.make_node("BatchNormalization", ins, [y], name=prefix, **kw)


def conv_bn() -> onnx.ModelProto:
    """x[N,2,6,6] through four BatchNormalizations, two foldable and two not.

    - conv1 (3x3, pad 1, bias) -> bn1 (epsilon 1e-3): folds;
    - relu1 -> conv2 (1x1, no bias) -> bn2 (default epsilon): folds, the bias is created;
    - conv3 (1x1, bias), whose output also feeds `skip` (two users) -> bn3: does not fold;
    - add(bn3, conv3) -> relu2 -> bn4, after a Relu, not a Conv: does not fold;
    - flatten -> y[N, 72].
    """
    rng = np.random.default_rng(3)
    inits = [
        _t("c1_w", rng.normal(0, 0.5, (3, 2, 3, 3)).astype(np.float32)),
        _t("c1_b", rng.normal(0, 0.2, 3).astype(np.float32)),
        _t("c2_w", rng.normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32)),
        _t("c3_w", rng.normal(0, 0.5, (2, 4, 1, 1)).astype(np.float32)),
        _t("c3_b", rng.normal(0, 0.2, 2).astype(np.float32)),
        *_bn(rng, "bn1", 3),
        *_bn(rng, "bn2", 4),
        *_bn(rng, "bn3", 2),
        *_bn(rng, "bn4", 2),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["h1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        _bn_node("bn1", "h1", "h1n", eps=1e-3),
        helper.make_node("Relu", ["h1n"], ["h1r"], name="relu1"),
        helper.make_node("Conv", ["h1r", "c2_w"], ["h2"], name="conv2", kernel_shape=[1, 1]),
        _bn_node("bn2", "h2", "h2n"),
        helper.make_node("Conv", ["h2n", "c3_w", "c3_b"], ["h3"], name="conv3", kernel_shape=[1, 1]),
        _bn_node("bn3", "h3", "h3n"),
        helper.make_node("Add", ["h3n", "h3"], ["h4"], name="skip"),
        helper.make_node("Relu", ["h4"], ["h4r"], name="relu2"),
        _bn_node("bn4", "h4r", "h4n"),
        helper.make_node("Flatten", ["h4n"], ["y"], name="flatten"),
    ]
    g = helper.make_graph(
        nodes,
        "conv_bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 72])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8, producer_name=PRODUCER)


def const_chain() -> onnx.ModelProto:
    """x[N,3,4] -> Reshape to [1, 12] by a shape computed from Shape(x) -> MatMul by a folded weight -> Add -> y.

    Old-IR style (ir_version 3): the initializers are also listed as graph inputs.  The reshape target is
    Concat(Gather(Shape(x), 0), Constant [-1]) (foldable once the batch is fixed to 1); the weight is
    Add(w0, Mul(w1, Constant 0.5)) and the bias ConstantOfShape([1, 5], 0.25) + b0: all constants.
    The Quantize/DequantizeLinear pair of `qdq` on constants is never folded (the quantiser's own).
    """
    rng = np.random.default_rng(5)
    w0 = rng.normal(0, 1, (12, 5)).astype(np.float32)
    w1 = rng.normal(0, 1, (12, 5)).astype(np.float32)
    b0 = rng.normal(0, 1, (1, 5)).astype(np.float32)
    inits = [_t("w0", w0), _t("w1", w1), _t("b0", b0), _t("idx0", np.array(0, np.int64)),
             _t("qs", np.float32(0.05)), _t("qz", np.int8(0))]  # fmt: skip
    nodes = [
        helper.make_node("Shape", ["x"], ["xs"], name="shape"),
        helper.make_node("Gather", ["xs", "idx0"], ["n"], name="batch", axis=0),
        helper.make_node("Constant", [], ["axes0"], name="axes", value=_t("axes0", np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="n_1d"),
        helper.make_node("Constant", [], ["minus1"], name="m1", value=_t("minus1", np.array([-1], np.int64))),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["xf"], name="flat"),
        helper.make_node("Constant", [], ["half"], name="half", value=_t("half", np.float32(0.5))),
        helper.make_node("Mul", ["w1", "half"], ["w1h"], name="w1_half"),
        helper.make_node("Add", ["w0", "w1h"], ["w"], name="w_sum"),
        helper.make_node("QuantizeLinear", ["w", "qs", "qz"], ["wq"], name="w_quant"),
        helper.make_node("DequantizeLinear", ["wq", "qs", "qz"], ["wdq"], name="w_dequant"),
        helper.make_node("MatMul", ["xf", "wdq"], ["z"], name="matmul"),
        helper.make_node("Constant", [], ["bshape"], name="bshape", value=_t("bshape", np.array([1, 5], np.int64))),
        helper.make_node(
            "ConstantOfShape", ["bshape"], ["bfill"], name="bfill", value=_t("v", np.array([0.25], np.float32))
        ),
        helper.make_node("Add", ["bfill", "b0"], ["bias"], name="bias"),
        helper.make_node("Add", ["z", "bias"], ["y"], name="add_bias"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])]
    g = helper.make_graph(nodes, "const_chain", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=3, producer_name=PRODUCER)


def _value(t: onnx.TensorProto) -> str:
    a = numpy_helper.to_array(t)
    return f"{a.dtype}{list(a.shape)} = {a.reshape(-1).tolist()}"  # tolist: exact repr of every element


def _attr(a: onnx.AttributeProto) -> str:
    v = helper.get_attribute_value(a)
    if isinstance(v, onnx.TensorProto):
        return f"{a.name}=<{_value(v)}>"
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, list):
        v = [x.decode() if isinstance(x, bytes) else x for x in v]
    return f"{a.name}={v!r}"


def _vi(v: onnx.ValueInfoProto) -> str:
    tt = v.type.tensor_type
    if not tt.HasField("shape"):
        return f"{v.name}: {onnx.TensorProto.DataType.Name(tt.elem_type)}"
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return f"{v.name}: {onnx.TensorProto.DataType.Name(tt.elem_type)}{dims}"


def onnx_text(model: onnx.ModelProto) -> str:
    """The model's graph as canonical text: inputs, outputs, initializers (name order) and nodes (graph order)."""
    g = model.graph
    lines = [f"ir_version {model.ir_version}, opset {[(o.domain, o.version) for o in model.opset_import]}"]
    lines += [f"input {_vi(v)}" for v in g.input]
    lines += [f"output {_vi(v)}" for v in g.output]
    lines += [f"init {t.name}: {_value(t)}" for t in sorted(g.initializer, key=lambda t: t.name)]
    for n in g.node:
        attrs = " ".join(_attr(a) for a in sorted(n.attribute, key=lambda a: a.name))
        op = f"{n.domain}.{n.op_type}" if n.domain else n.op_type
        lines.append(f"{', '.join(n.output)} = {op}({', '.join(n.input)}) {attrs}".rstrip() + f"  ; {n.name}")
    return "\n".join(lines) + "\n"


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs under onnxruntime (graph optimisations off: the graph as written)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in sess.run(None, feeds)]
