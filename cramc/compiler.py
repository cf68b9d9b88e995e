"""`cramc compile`: ONNX model -> CRAM-ER program text, with embedded validation vectors.

The one compile pipeline, which `cramc compile`, `cramc sweep` and the tests
all go through:

- `passes`: the IR passes in order: conv-to-mvm, error correction (insert-ecc
  or auto-ecc), the tiling passes of the MVM lowering `--reduce` chooses, schedule;
- `lower`: run them on a frontend's IR (optionally stopping before one);
- `build_program`: the program of the lowered IR: the `ProgramBuilder` with the
  chosen MVM lowering (cramc.backend.hybrid or cramc.backend.cram_only), the
  validation data (cramc.backend.validation) and the header;
- `compile_frontend` = both, printed; `compile_model` = the frontend, then that.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TextIO

import numpy as np
import onnx

from cramc.backend.cram_only import CramOnlyMvm
from cramc.backend.cram_serial import CramSerialMvm
from cramc.backend.emit import MvmLowering, ProgramBuilder, header_lines
from cramc.backend.hybrid import HybridMvm
from cramc.backend.schedule import Schedule
from cramc.backend.validation import run_onnxruntime as run_onnxruntime  # re-exported: tests and benches use it
from cramc.backend.validation import validation_items
from cramc.errors import InternalError, UserError
from cramc.frontend.pipeline import Frontend, run_frontend
from cramc.ir.graph import Graph, sanitize
from cramc.ir.passes.conv_to_mvm import ConvToMvm
from cramc.ir.passes.insert_ecc import InsertEcc
from cramc.ir.passes.manager import Pass, run_passes
from cramc.isa import ast
from cramc.isa.printer import print_program

if TYPE_CHECKING:
    from cramc.errmodel import FaultModel

#: The MVM lowerings, by their `--reduce` name.
LOWERINGS: dict[str, MvmLowering] = {m.name: m for m in (HybridMvm(), CramOnlyMvm(), CramSerialMvm())}


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
    reduce: str = "tree"  # "tree": CRAM-ER hybrid (CMOS adder tree); "cram", "cram-serial": CRAM-only baselines
    ecc: str = ""  # error-correction spec (see cramc.ir.passes.insert_ecc), or "auto"
    ecc_budget: float = 0.2  # auto: allowed extra in-array operations, as a fraction
    gate_error: float | None = None  # auto: the gate error rate to tune for
    error_model: str | None = None  # auto: or a full error model (file or preset name)
    double_buffer: bool = True  # tree: alternate two scratch column sets where the tile allows (--no-double-buffer)


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


def lowering(opts: Options) -> MvmLowering:
    """The MVM lowering `--reduce` names."""
    m = LOWERINGS.get(opts.reduce)
    if m is None:
        raise UserError(
            f"--reduce {opts.reduce}: expected tree (CRAM-ER hybrid), cram (CRAM-only, log-depth baseline) or "
            f"cram-serial (CRAM-only, serial baseline)"
        )
    if isinstance(m, HybridMvm) and m.double_buffer != opts.double_buffer:
        return replace(m, double_buffer=opts.double_buffer)
    return m


def _ecc_passes(opts: Options, fe: Frontend | None, log: TextIO | None, faults: FaultModel | None) -> list[Pass]:
    """insert-ecc for an explicit spec; auto-ecc, tuned for `faults` (default: the options' fault model)."""
    if opts.ecc != "auto":
        return [InsertEcc(opts.ecc)] if opts.ecc else []
    from cramc.ir.passes.auto_ecc import AutoEcc

    fm = faults
    if fm is None:
        from cramc.errmodel import FaultModel, load_error_model

        if opts.gate_error is None and not opts.error_model:
            raise UserError("--ecc auto needs the fault rate to tune for: --gate-error P or --error-model FILE")
        fm = load_error_model(opts.error_model) if opts.error_model else FaultModel()
        if opts.gate_error is not None:
            fm = fm.with_gate_error(opts.gate_error)
    if not 0 < opts.ecc_budget:
        raise UserError("--ecc-budget must be positive (a fraction, e.g. 0.2 for 20% more operations)")
    if fe is None:
        raise InternalError("--ecc auto needs the frontend's calibration data")
    names = {sanitize(k): v for k, v in fe.calibration.items()}
    calibration = {i.name: names[i.name].reshape(-1, *i.shape) for i in fe.graph.inputs}
    return [AutoEcc(fm, opts.ecc_budget, calibration, log=sys.stderr if log is None else log)]


def passes(
    opts: Options, fe: Frontend | None = None, log: TextIO | None = None, faults: FaultModel | None = None
) -> list[Pass]:
    """The compile pipeline's passes, in order (auto-ecc needs `fe`, for its calibration data)."""
    tiling = lowering(opts).tiling(opts.rows, opts.cols, opts.accs)
    return [ConvToMvm(), *_ecc_passes(opts, fe, log, faults), *tiling, Schedule(opts.arrays)]


def lower(
    fe: Frontend,
    opts: Options,
    log: TextIO | None = None,
    faults: FaultModel | None = None,
    stop_before: str | None = None,
) -> Graph:
    """Run the pipeline on the frontend's IR (which stays as it was: the pass manager works on a copy).

    `stop_before` names a pass to stop at: the statistical mode of `cramc sweep` evaluates the IR before
    schedule, which only orders the operations and places them.
    """
    log = sys.stderr if log is None else log
    ps = passes(opts, fe, log, faults)
    if stop_before is not None:
        names = [p.name for p in ps]
        if stop_before not in names:
            raise InternalError(f"no pass {stop_before} in the pipeline ({', '.join(names)})")
        ps = ps[: names.index(stop_before)]
    return run_passes(fe.graph, ps, opts.print_ir_after_all, log)


def build_program(path: str, fe: Frontend, g: Graph, opts: Options, log: TextIO | None = None) -> ast.Program:
    """The program of the lowered IR `g` of model `path`: MVMs, CMOS operations, validation data, header."""
    log = sys.stderr if log is None else log
    mvm = lowering(opts)
    b = ProgramBuilder(g, opts.arrays, opts.rows, opts.cols, opts.accs, mvm)
    b.run()
    io = io_attributes(g, fe.qmodel)
    top = validation_items(fe, g, b, opts.n_validation, opts.trace, log)
    header = header_lines(path, opts.arrays, opts.rows, opts.cols, mvm)
    if b.reload_layers:
        header.append(
            f"; time-multiplexed: {len(b.reload_layers)} layer(s) reload their weights on every "
            f"inference ({b.reload_bits} bits written per inference)"
        )
        print(
            f"note: the model does not fit {opts.arrays} arrays at once; {len(b.reload_layers)} layer(s) reload "
            f"{b.reload_bits} weight bits per inference",
            file=log,
        )
    if fe.synthetic:
        header.append("; calibrated on synthetic inputs (no --calibration given)")
    return b.program(header, top, io)


def check_options(opts: Options) -> None:
    """The options' own errors, before any work."""
    for k in ("arrays", "rows", "cols", "accs"):
        if getattr(opts, k) < 1:
            raise UserError(f"--{k} must be at least 1")
    if opts.ecc == "auto" and opts.reduce != "tree":
        raise UserError(
            f"--ecc auto with --reduce {opts.reduce}: auto placement chooses among schemes that vote or compare in "
            f"the adder tree's periphery, which the CRAM-only lowerings do not have; give a spec of tmr rules "
            f"(e.g. --ecc 'tmr:sig>=10')"
        )
    if opts.n_validation < 0:
        raise UserError(f"--validation {opts.n_validation}: the number of validation vectors to embed is 0 or more")


def compile_frontend(path: str, fe: Frontend, opts: Options, log: TextIO | None = None) -> str:
    """The program text of a frontend's result (its IR stays as it was, so one result serves many compiles)."""
    log = sys.stderr if log is None else log  # resolved per call, so redirected stderr is honoured
    check_options(opts)
    g = lower(fe, opts, log)
    return print_program(build_program(path, fe, g, opts, log))


def compile_model(
    path: str, calibration: dict[str, np.ndarray] | None, opts: Options, log: TextIO | None = None
) -> str:
    log = sys.stderr if log is None else log  # resolved per call, so redirected stderr is honoured
    check_options(opts)
    fe = run_frontend(path, calibration, opts.weight_bits, opts.act_bits, log)
    return compile_frontend(path, fe, opts, log)
