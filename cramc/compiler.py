"""`cramc compile`: ONNX model -> CRAM-ER program text, with embedded validation vectors."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import onnx

from cramc.backend.allocate import Allocate
from cramc.backend.emit import Emitter, header_lines
from cramc.backend.schedule import Schedule
from cramc.errors import InternalError, UserError
from cramc.frontend.pipeline import Frontend, run_frontend
from cramc.ir.graph import Graph, sanitize
from cramc.ir.passes.conv_to_mvm import ConvToMvm
from cramc.ir.passes.insert_ecc import InsertEcc
from cramc.ir.passes.manager import run_passes
from cramc.ir.passes.tile_mvm import TileMvm
from cramc.isa import ast
from cramc.isa.printer import print_program

TRACE_BUDGET = 4_000_000  # elements of reference intermediates embedded for --trace


@dataclass(frozen=True)
class Options:
    arrays: int = 1024
    rows: int = 256
    cols: int = 256
    accs: int = 64
    weight_bits: int = 8
    act_bits: int = 8
    n_validation: int = 4
    print_ir_after_all: bool = False
    trace: bool = True
    reduce: str = "tree"  # "tree": CRAM-ER hybrid (CMOS adder tree); "cram": CRAM-only baseline
    ecc: str = ""  # error-correction spec (see cramc.ir.passes.insert_ecc), or "auto"
    ecc_budget: float = 0.2  # auto: allowed extra in-array operations, as a fraction
    gate_error: float | None = None  # auto: the gate error rate to tune for
    error_model: str | None = None  # auto: or a full error model (file or preset name)


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
            res = [ref.run(None, {k: v[i] for k, v in inputs.items()}) for i in range(n)]
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


def io_attributes(g: Graph, qmodel: onnx.ModelProto) -> dict[str, tuple[int | None, str | None]]:
    """(batch axis, ONNX name if the program spells it differently) of every program input and output.

    The frontend fixed a symbolic leading dimension to 1, so an input whose leading dimension is 1 (symbolic
    or 1 in the ONNX model) has its batch axis there; an output's leading 1 is a batch axis when some input
    has one (a model without a batch axis stacks its outputs on a new one).  With it, `cramc run` reads and
    writes data files in the layout onnxruntime uses: `[N, 784] -> [N, 10]`, not `[N, 1, 10]`.
    """
    ins = [i.name for i in qmodel.graph.input]
    outs = [o.name for o in qmodel.graph.output]
    if len(ins) != len(g.inputs) or len(outs) != len(g.outputs):
        raise InternalError("the IR's inputs and outputs do not correspond to the quantised model's")
    io: dict[str, tuple[int | None, str | None]] = {}
    for v, name in zip(g.inputs, ins, strict=True):
        io[v.name] = (0 if v.shape[:1] == (1,) else None, name if name != v.name else None)
    batched = any(b == 0 for b, _ in io.values())
    for v, name in zip(g.outputs, outs, strict=True):
        io[v.name] = (0 if batched and v.shape[:1] == (1,) else None, name if name != v.name else None)
    return io


def _validation(fe: Frontend, g: Graph, em: Emitter, opts: Options, log: TextIO) -> list[object]:
    """The .expect (validation vectors and onnxruntime's outputs of the quantised model), the float model's
    outputs for them (.expect_float) and the reference intermediate tensors of sample 0 (.trace)."""
    avail = next(iter(fe.calibration.values())).shape[0]
    nval = min(opts.n_validation, avail)
    source = "synthetic calibration inputs" if fe.synthetic else "calibration data"
    if opts.n_validation > avail:
        print(
            f"note: --validation {opts.n_validation}: the {source} has {avail} sample(s); embedding {nval} "
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
    vin = {k: v[:nval] for k, v in fe.calibration.items()}
    onnx_in = [i.name for i in fe.qmodel.graph.input]
    trace_names = list(fe.trace_map.values()) if opts.trace else []
    ref = run_onnxruntime(fe.qmodel, vin, trace_names)
    expect_attrs: list[ast.AttrVal] = []
    for i, iname in zip(g.inputs, onnx_in, strict=True):
        x = vin[iname]
        expect_attrs.append(
            ast.AttrVal(i.name, ast.ConstRef(em.add_data(f"expect.{i.name}", x.reshape(nval, *i.shape), i.dtype)[1:]))
        )
    onnx_out = [o.name for o in fe.qmodel.graph.output]
    for o, oname in zip(g.outputs, onnx_out, strict=True):
        y = ref[oname].reshape(nval, *o.shape)
        dt = "f32" if np.issubdtype(y.dtype, np.floating) else "i64"
        expect_attrs.append(ast.AttrVal(o.name, ast.ConstRef(em.add_data(f"expect.{o.name}", y, dt)[1:])))
    expect_attrs.append(ast.AttrVal("tol", ast.Num(float(fe.output_tol))))
    top: list[object] = [
        ast.Expect(
            tuple(expect_attrs),
            f"; validation: {nval} input(s) from the {source} and onnxruntime's outputs of cramc's quantised "
            "(QDQ) model",
        )
    ]
    floats = _float_outputs(fe, g, em, vin, nval, log)
    if floats:
        top.append(ast.ExpectFloat(tuple(floats), "; the float model's outputs for the same inputs (onnxruntime)"))
    if trace_names:
        budget = TRACE_BUDGET
        tattrs: list[ast.AttrVal] = []
        for ir_name, oname in fe.trace_map.items():
            v = ref.get(oname)
            if v is None or ir_name not in em.shapes:
                continue
            shape = em.shapes[ir_name][0]
            if int(np.prod(shape)) != v[:1].size or budget < v[:1].size:
                continue
            budget -= v[:1].size
            dt = "f32" if np.issubdtype(v.dtype, np.floating) else "i64"
            ref_name = em.add_data(f"trace.{ir_name}", v[:1].reshape(1, *shape), dt)
            tattrs.append(ast.AttrVal(ir_name, ast.ConstRef(ref_name[1:])))
        if tattrs:
            top.append(ast.Trace(tuple(tattrs), "; onnxruntime's intermediate tensors for validation sample 0"))
    return top


def _float_outputs(
    fe: Frontend, g: Graph, em: Emitter, vin: dict[str, np.ndarray], nval: int, log: TextIO
) -> list[ast.AttrVal]:
    """The float model's outputs for the validation inputs (none for a model that came quantised)."""
    if fe.fmodel is None:
        return []
    try:
        fref = run_onnxruntime(fe.fmodel, vin)
    except UserError as e:
        print(f"warning: the float model's outputs are not embedded: {e.message}", file=log)
        return []
    names = [o.name for o in fe.fmodel.graph.output]
    attrs: list[ast.AttrVal] = []
    for o, oname in zip(g.outputs, names, strict=True):
        y = np.asarray(fref[oname])
        if y.size != nval * int(np.prod(o.shape)) or not np.issubdtype(y.dtype, np.number):
            continue
        y = y.reshape(nval, *o.shape).astype(np.float32)
        attrs.append(ast.AttrVal(o.name, ast.ConstRef(em.add_data(f"float.{o.name}", y, "f32")[1:])))
    return attrs


def compile_model(
    path: str, calibration: dict[str, np.ndarray] | None, opts: Options, log: TextIO | None = None
) -> str:
    log = sys.stderr if log is None else log  # resolved per call, so redirected stderr is honoured
    for k in ("arrays", "rows", "cols", "accs"):
        if getattr(opts, k) < 1:
            raise UserError(f"--{k} must be at least 1")
    if opts.n_validation < 0:
        raise UserError(f"--validation {opts.n_validation}: the number of validation vectors to embed is 0 or more")
    fe = run_frontend(path, calibration, opts.weight_bits, opts.act_bits, log)
    if opts.reduce not in ("tree", "cram"):
        raise UserError(f"--reduce {opts.reduce}: expected tree (CRAM-ER hybrid) or cram (CRAM-only baseline)")
    if opts.reduce == "cram":
        from cramc.backend.cram_only import TileCramOnly

        tiling: list = [TileCramOnly(opts.rows, opts.cols, opts.accs)]
    else:
        tiling = [TileMvm(opts.rows, opts.cols, opts.accs), Allocate(opts.cols, opts.accs)]
    ecc: list = []
    if opts.ecc == "auto":
        from cramc.ir.passes.auto_ecc import AutoEcc
        from cramc.sim.faults import FaultModel, load_error_model

        if opts.gate_error is None and not opts.error_model:
            raise UserError("--ecc auto needs the fault rate to tune for: --gate-error P or --error-model FILE")
        fm = load_error_model(opts.error_model) if opts.error_model else FaultModel()
        if opts.gate_error is not None:
            fm = fm.with_gate_error(opts.gate_error)
        if not 0 < opts.ecc_budget:
            raise UserError("--ecc-budget must be positive (a fraction, e.g. 0.2 for 20% more operations)")
        names = {sanitize(k): v for k, v in fe.calibration.items()}
        ecc = [
            AutoEcc(
                fm, opts.ecc_budget, {i.name: names[i.name].reshape(-1, *i.shape) for i in fe.graph.inputs}, log=log
            )
        ]
    elif opts.ecc:
        ecc = [InsertEcc(opts.ecc)]
    g = run_passes(fe.graph, [ConvToMvm(), *ecc, *tiling, Schedule(opts.arrays)], opts.print_ir_after_all, log)
    em = Emitter(g, opts.arrays, opts.rows, opts.cols, opts.accs, reduce=opts.reduce)
    em.run()
    io = io_attributes(g, fe.qmodel)
    top = _validation(fe, g, em, opts, log)
    header = header_lines(path, opts.arrays, opts.rows, opts.cols)
    if em.reload_layers:
        header.append(
            f"; time-multiplexed: {len(em.reload_layers)} layer(s) reload their weights on every "
            f"inference ({em.reload_bits} bits written per inference)"
        )
        print(
            f"note: the model does not fit {opts.arrays} arrays at once; {len(em.reload_layers)} layer(s) reload "
            f"{em.reload_bits} weight bits per inference",
            file=log,
        )
    if opts.reduce == "cram":
        from cramc.backend.cram_only import chip_line

        header[1] = chip_line(opts.arrays, opts.rows, opts.cols)
    if fe.synthetic:
        header.append("; calibrated on synthetic inputs (no --calibration given)")
    prog = em.program(header, top, io)  # type: ignore[arg-type]
    return print_program(prog)
