"""The program's reference data: `.expect`, `.expect_float` and `.trace`, computed with onnxruntime.

- `.expect`: the first `--validation` calibration samples and onnxruntime's
  outputs for them on the quantised (QDQ) model, with the tolerance of one
  output quantisation step; `cramc run PROG` without `--input` compares with
  them;
- `.expect_float`: the float model's outputs for the same samples (absent for
  a model that came quantised);
- `.trace`: onnxruntime's intermediate tensors of validation sample 0 for
  every IR value that equals a tensor of the quantised model, within a budget
  of TRACE_BUDGET elements (`cramc run --trace` compares layer by layer).

The reference is what onnxruntime computes on cramc's own quantised model,
sample by sample, with graph optimisations off (see `_ort_session`); where
onnxruntime lacks a kernel, the ONNX reference evaluator.  The data go into
the program through the program builder, next to the weights.
"""

from __future__ import annotations

from typing import Any, Protocol, TextIO, cast

import numpy as np
import onnx

from cramc.backend.emit import ProgramBuilder
from cramc.errors import UserError
from cramc.ir.graph import Graph
from cramc.isa import ast

TRACE_BUDGET = 4_000_000  # elements of reference intermediates embedded for --trace


class Reference(Protocol):
    """What the reference data are computed from (the frontend's result provides it)."""

    calibration: dict[str, np.ndarray]  # by the quantised model's input names, samples on the leading axis
    synthetic: bool  # the calibration inputs are synthetic (no --calibration given)
    qmodel: onnx.ModelProto  # the quantised model onnxruntime runs as the reference
    fmodel: onnx.ModelProto | None  # the float model before quantisation (None if it came quantised)
    trace_map: dict[str, str]  # IR value -> tensor of the quantised model
    output_tol: float  # one quantisation step of the outputs (0 for integer outputs)


def _ort_session(model: onnx.ModelProto, extra_outputs: list[str] | None = None):  # noqa: ANN202
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    if extra_outputs:
        inferred = onnx.shape_inference.infer_shapes(m)
        vis = {vi.name: vi for vi in inferred.graph.value_info}
        have = {o.name for o in m.graph.output}
        for name in extra_outputs:
            if name in vis and name not in have:
                m.graph.output.append(vis[name])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # The reference is the QDQ graph as written: DequantizeLinear -> float op -> QuantizeLinear, the
    # semantics the ONNX spec gives it. With graph optimisations on, onnxruntime fuses it into integer
    # kernels (QLinearMatMul, MatMulIntegerToFloat) whose U8S8 path uses VPMADDUBSW on AVX2 CPUs without
    # VNNI; that instruction saturates pairs of products at int16, so the reference itself would be wrong
    # on such machines (onnxruntime's quantisation docs, "reduce_range"; seen here on an AVX2 EPYC).
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]), m


def run_onnxruntime(
    model: onnx.ModelProto, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Run the (quantised) model sample by sample; where onnxruntime lacks a kernel, the ONNX reference evaluator."""
    try:
        return _run_ort(model, inputs, outputs)
    except Exception as ort_error:  # noqa: BLE001 - onnxruntime raises its own exception types
        from onnx.reference import ReferenceEvaluator

        try:
            ref = ReferenceEvaluator(model)
            names = [o.name for o in model.graph.output]
            n = next(iter(inputs.values())).shape[0]
            # run() gives the list of outputs (a dict only when asked for intermediate results)
            res = [cast(list[Any], ref.run(None, {k: v[i] for k, v in inputs.items()})) for i in range(n)]
        except Exception as ref_error:  # noqa: BLE001
            first = str(ort_error).strip().splitlines()[0] if str(ort_error).strip() else type(ort_error).__name__
            raise UserError(
                f"cannot compute reference outputs: onnxruntime failed ({first}) and so did the ONNX "
                f"reference evaluator ({ref_error})"
            ) from None
        return {k: np.stack([r[j] for r in res]) for j, k in enumerate(names)}


def _run_ort(model: onnx.ModelProto, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
    sess, m = _ort_session(model, outputs)
    names = [o.name for o in sess.get_outputs()]
    n = next(iter(inputs.values())).shape[0]
    res: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for i in range(n):
        feed = {k: v[i] for k, v in inputs.items()}
        for k, v in zip(names, sess.run(None, feed), strict=False):
            res[k].append(v)
    return {k: np.stack(v) for k, v in res.items()}


def validation_items(
    ref: Reference, g: Graph, b: ProgramBuilder, n_validation: int, trace: bool, log: TextIO
) -> list[ast.TopItem]:
    """The .expect, .expect_float and .trace declarations of the program of `g` (their data added to `b`)."""
    avail = next(iter(ref.calibration.values())).shape[0]
    nval = min(n_validation, avail)
    source = "synthetic calibration inputs" if ref.synthetic else "calibration data"
    if n_validation > avail:
        print(
            f"note: --validation {n_validation}: the {source} has {avail} sample(s); embedding {nval} "
            "validation vector(s)",
            file=log,
        )
    if nval == 0:
        print(
            "note: no validation vectors embedded (--validation 0): cramc run needs --input, and run --trace has "
            "no reference data",
            file=log,
        )
        return []
    vin = {k: v[:nval] for k, v in ref.calibration.items()}
    onnx_in = [i.name for i in ref.qmodel.graph.input]
    trace_names = list(ref.trace_map.values()) if trace else []
    outs = run_onnxruntime(ref.qmodel, vin, trace_names)
    expect_attrs: list[ast.AttrVal] = []
    for i, iname in zip(g.inputs, onnx_in, strict=True):
        x = vin[iname]
        expect_attrs.append(
            ast.AttrVal(i.name, ast.ConstRef(b.add_data(f"expect.{i.name}", x.reshape(nval, *i.shape), i.dtype)[1:]))
        )
    onnx_out = [o.name for o in ref.qmodel.graph.output]
    for o, oname in zip(g.outputs, onnx_out, strict=True):
        y = outs[oname].reshape(nval, *o.shape)
        dt = "f32" if np.issubdtype(y.dtype, np.floating) else "i64"
        expect_attrs.append(ast.AttrVal(o.name, ast.ConstRef(b.add_data(f"expect.{o.name}", y, dt)[1:])))
    expect_attrs.append(ast.AttrVal("tol", ast.Num(float(ref.output_tol))))
    top: list[ast.TopItem] = [
        ast.Expect(
            tuple(expect_attrs),
            f"; validation: {nval} input(s) from the {source} and onnxruntime's outputs of cramc's quantised "
            "(QDQ) model",
        )
    ]
    floats = _float_outputs(ref, g, b, vin, nval, log)
    if floats:
        top.append(ast.ExpectFloat(tuple(floats), "; the float model's outputs for the same inputs (onnxruntime)"))
    if trace_names:
        budget = TRACE_BUDGET
        tattrs: list[ast.AttrVal] = []
        for ir_name, oname in ref.trace_map.items():
            v = outs.get(oname)
            if v is None or ir_name not in b.shapes:
                continue
            shape = b.shapes[ir_name][0]
            if int(np.prod(shape)) != v[:1].size or budget < v[:1].size:
                continue
            budget -= v[:1].size
            dt = "f32" if np.issubdtype(v.dtype, np.floating) else "i64"
            ref_name = b.add_data(f"trace.{ir_name}", v[:1].reshape(1, *shape), dt)
            tattrs.append(ast.AttrVal(ir_name, ast.ConstRef(ref_name[1:])))
        if tattrs:
            top.append(ast.Trace(tuple(tattrs), "; onnxruntime's intermediate tensors for validation sample 0"))
    return top


def _float_outputs(
    ref: Reference, g: Graph, b: ProgramBuilder, vin: dict[str, np.ndarray], nval: int, log: TextIO
) -> list[ast.AttrVal]:
    """The float model's outputs for the validation inputs (none for a model that came quantised)."""
    if ref.fmodel is None:
        return []
    try:
        fref = run_onnxruntime(ref.fmodel, vin)
    except UserError as e:
        print(f"warning: the float model's outputs are not embedded: {e.message}", file=log)
        return []
    names = [o.name for o in ref.fmodel.graph.output]
    attrs: list[ast.AttrVal] = []
    for o, oname in zip(g.outputs, names, strict=True):
        y = np.asarray(fref[oname])
        if y.size != nval * int(np.prod(o.shape)) or not np.issubdtype(y.dtype, np.number):
            continue
        y = y.reshape(nval, *o.shape).astype(np.float32)
        attrs.append(ast.AttrVal(o.name, ast.ConstRef(b.add_data(f"float.{o.name}", y, "f32")[1:])))
    return attrs
