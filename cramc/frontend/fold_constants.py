"""ONNX pass: fix the batch size to 1 and fold every node whose inputs are constants.

Initializers that are also listed as graph inputs (old IR style) become plain
constants; ConstantOfShape/Constant/Shape-of-static-shape chains become
initializers, evaluated with onnx's reference evaluator.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from cramc.errors import UserError

NAME = "fold-constants"


def static_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Real inputs (not initializers) get batch 1; any other symbolic dimension is an error."""
    inits = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(real)
    model.ir_version = max(model.ir_version, 4)  # initializers need not be graph inputs from IR 4 on
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if k == 0:
                d.Clear()
                d.dim_value = 1
            else:
                raise UserError(
                    f"input '{inp.name}' has a symbolic dimension {k} ('{d.dim_param}'); "
                    "cramc compiles static shapes only"
                )
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    return model


def _eval_node(
    node: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: list[onnx.OperatorSetIdProto]
) -> list[np.ndarray]:
    ins = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.input if n]
    outs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output]
    g = helper.make_graph([node], "fold", ins, outs)
    m = helper.make_model(g, opset_imports=opset)
    res = ReferenceEvaluator(m).run(None, {n: inputs[n] for n in node.input if n})
    return [np.asarray(r) for r in res]


FOLDABLE_SKIP = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def run(model: onnx.ModelProto) -> onnx.ModelProto:
    model = static_batch(model)
    model = shape_inference.infer_shapes(model)
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    shapes: dict[str, list[int]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    keep: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            keep.append(node)
            continue
        if node.op_type == "Shape" and node.input[0] in shapes and not node.attribute:
            val = np.array(shapes[node.input[0]], dtype=np.int64)
            consts[node.output[0]] = val
            new_inits.append(numpy_helper.from_array(val, node.output[0]))
            continue
        ins = [n for n in node.input if n]
        if node.op_type not in FOLDABLE_SKIP and all(n in consts for n in ins) and node.op_type != "RandomNormal":
            try:
                vals = _eval_node(node, consts, list(model.opset_import))
            except Exception as e:  # noqa: BLE001 - the reference evaluator raises many types
                raise UserError(
                    f"node '{node.name or node.output[0]}' ({node.op_type}): cannot fold constants: {e}"
                ) from None
            for name, v in zip(node.output, vals, strict=False):
                consts[name] = v
                new_inits.append(numpy_helper.from_array(v, name))
            continue
        keep.append(node)
    used = {n for node in keep for n in node.input} | {o.name for o in model.graph.output}
    inits = [t for t in model.graph.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    del model.graph.value_info[:]
    return shape_inference.infer_shapes(model)
