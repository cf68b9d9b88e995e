"""Frontend driver: ONNX file -> quantised ONNX (QDQ/QOperator) -> IR graph."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import onnx

from cramc.frontend import fold_batchnorm, fold_constants, quantize
from cramc.frontend.calibration_check import calibration_warnings
from cramc.frontend.importer import Importer
from cramc.frontend.load import load_model
from cramc.ir.graph import Graph


@dataclass
class Frontend:
    graph: Graph
    trace_map: dict[str, str]  # IR value -> ONNX tensor of the quantised model
    output_tol: float  # one quantisation step of the outputs (0 for integer outputs)
    qmodel: onnx.ModelProto  # the quantised model onnxruntime runs as the reference
    calibration: dict[str, np.ndarray]
    synthetic: bool
    fmodel: onnx.ModelProto | None = None  # the float model before quantisation (None if it came quantised)


def run_frontend(
    path: str,
    calibration: dict[str, np.ndarray] | None = None,
    weight_bits: int = 8,
    act_bits: int = 8,
    log: TextIO | None = None,
) -> Frontend:
    log = sys.stderr if log is None else log  # resolved per call, so redirected stderr is honoured
    quantize.check_bits(weight_bits, act_bits)
    model = load_model(path)
    model = fold_constants.run(model)
    quantize.legalise(model)
    synthetic = False
    if calibration is not None:
        calibration = quantize.check_calibration(model, calibration, "calibration data")
    fmodel = None
    if quantize.is_quantised(model):
        qmodel = model
        if calibration is None:
            calibration = _synthetic_int(model)
            synthetic = True
    else:
        model = fold_batchnorm.run(model)
        if calibration is not None:
            for w in calibration_warnings(model, calibration):
                print(f"warning: {w}", file=log)
        if calibration is None:
            calibration = quantize.synthetic_calibration(model)
            synthetic = True
            print(
                "warning: no --calibration data: quantising on synthetic uniform [0, 1) inputs; accuracy on real "
                "data may suffer",
                file=log,
            )
        fmodel = model
        qmodel = quantize.quantise(model, calibration, weight_bits, act_bits)
        qmodel = fold_constants.run(qmodel)
    imp = Importer(qmodel)
    graph = imp.run()
    return Frontend(graph, imp.trace_map(), imp.output_tol(), qmodel, calibration, synthetic, fmodel)


def _synthetic_int(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for vi in model.graph.input:
        tt = vi.type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        if tt.elem_type == onnx.TensorProto.FLOAT:
            out[vi.name] = rng.random((4, *shape), dtype=np.float32)
        else:
            dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
            info = np.iinfo(dt)
            out[vi.name] = rng.integers(info.min, int(info.max) + 1, size=(4, *shape)).astype(dt)
    return out
