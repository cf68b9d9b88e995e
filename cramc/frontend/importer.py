"""Import a quantised ONNX graph (QDQ or QOperator) into the MVM-tiling IR.

The driver walks the nodes in order and hands each to the handler registered
for its operator (cramc.frontend.import_base.handles): the MVM layers in
cramc.frontend.import_mvm, the CMOS operations in cramc.frontend.import_cmos.
`SUPPORTED_OPS` is that registry, and is what legalisation checks models
against.  Every Conv/Gemm/MatMul whose activation and weights are quantised
becomes an exact integer `conv`/`mvm` on the raw quantised activation;
everything else becomes CMOS operations with ISA semantics.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from cramc.errors import UserError
from cramc.frontend import import_cmos, import_mvm
from cramc.frontend.import_base import HANDLERS, ONNX_QTYPES, Const, ImportState, Val
from cramc.ir.graph import Graph, IOValue, Op, sanitize

#: The ONNX operators cramc imports: exactly those with a registered handler.
SUPPORTED_OPS: frozenset[str] = frozenset(HANDLERS)
#: The operators that only occur in already-quantised models (QDQ or QOperator).
QUANTISED_OPS: frozenset[str] = frozenset(t for t, h in HANDLERS.items() if h.quantised)
#: The modules whose @handles fill the registry (imported for that effect).
HANDLER_MODULES = (import_mvm, import_cmos)


class Importer(ImportState):
    """Walks the model's nodes and dispatches each to its handler; `run` returns the IR graph."""

    def run(self) -> Graph:
        m = self.model
        for t in m.graph.initializer:
            self.env[t.name] = Const(numpy_helper.to_array(t))
        for inp in m.graph.input:
            tt = inp.type.tensor_type
            shape = tuple(d.dim_value for d in tt.shape.dim)
            if tt.elem_type == onnx.TensorProto.FLOAT:
                dt = "f32"
            elif tt.elem_type in ONNX_QTYPES:
                dt = ONNX_QTYPES[tt.elem_type]
            else:
                raise UserError(f"input '{inp.name}': element type {tt.elem_type} is not supported (float or int)")
            name = self.fresh(inp.name)
            self.g.inputs.append(IOValue(name, dt, shape))
            self.shapes["%" + name] = (shape, dt != "f32")
            self.env[inp.name] = Val("%" + name, dt != "f32")
        self.users = {}
        for n in m.graph.node:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in m.graph.output}
        for node in m.graph.node:
            if id(node) in self.skip:
                continue
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise UserError(f"node '{node.name or node.output[0]}': operator {node.op_type} is not supported")
            handler.fn(self, node)
        for o in m.graph.output:
            ref, is_int = self.any_ref(o.name, o)
            want = sanitize(o.name)
            if ref != "%" + want:
                if want in self.names:
                    want = self.fresh(o.name)
                else:
                    self.names.add(want)
                self.g.ops.append(Op("mov", want, (ref,), {}, o.name))
                self.shapes["%" + want] = (
                    self.shapes[ref] if ref.startswith("%") else (tuple(self.g.consts[ref[1:]].shape), is_int)
                )
            tt = o.type.tensor_type
            dt = "f32" if not is_int else ONNX_QTYPES.get(tt.elem_type, "i64")
            self.g.outputs.append(IOValue(want, dt, self.shapes["%" + want][0]))
        return self.g

    def trace_map(self) -> dict[str, str]:
        """IR value name -> the ONNX tensor it equals (quantised values and float layer outputs)."""
        out: dict[str, str] = {}
        node_outputs = {o for n in self.model.graph.node for o in n.output}
        for onnx_name, e in self.env.items():
            if onnx_name in node_outputs and isinstance(e, Val):
                out.setdefault(e.ref[1:], onnx_name)
        return out

    def output_tol(self) -> float:
        """One quantisation step of the (dequantised) outputs; 0 when outputs are integers."""
        prod = self.g.producers()
        tol = 0.0
        for o in self.g.outputs:
            ref = o.name
            for _ in range(64):
                op = prod.get(ref)
                if op is None:
                    break
                if op.kind == "dequant":
                    s = op.attrs["scale"]
                    tol = max(tol, float(np.max(self.g.consts[s[1:]])) if isinstance(s, str) else float(s))
                    break
                if not op.ins or not op.ins[0].startswith("%"):
                    break
                ref = op.ins[0][1:]
        return tol


def import_model(model: onnx.ModelProto) -> Graph:
    return Importer(model).run()
