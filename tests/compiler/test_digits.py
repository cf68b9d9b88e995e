"""The shipped digits models end to end: compile, validate, accuracy and exactness on the test split.

For models/digits_mlp.onnx and models/digits_cnn.onnx (calibrated on models/digits_calib_*.npz):
- `cramc run PROG.cram` validates against the embedded onnxruntime outputs with exit 0;
- on the whole test split (360 samples) at zero faults cramc's accuracy equals onnxruntime's on
  the same quantised QDQ model, its outputs are >= 99% identical and all within one quantisation
  step, and every MVM accumulator equals the exact integer matrix product;
- `cramc run --labels` prints that accuracy.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from compilertest import DIGITS, Digits, load_npz, lower

from cramc.compiler import Options, compile_model, run_onnxruntime
from cramc.frontend.pipeline import Frontend
from cramc.ir.graph import Graph
from cramc.ir.semantics import evaluate, mvm
from cramc.isa.parser import parse_file
from cramc.isa.verifier import Linked, verify
from cramc.sim.interp import RunResult, run

SAME_FRACTION = 0.99
LAYERS = {"mlp": 2, "cnn": 3}  # MVM layers: Gemm, Gemm / Conv, Conv, Gemm


@dataclass
class Case:
    d: Digits
    program: Path
    linked: Linked
    fe: Frontend
    graph: Graph
    x: np.ndarray
    labels: np.ndarray
    sim: RunResult
    ort: np.ndarray  # onnxruntime's outputs of fe.qmodel on the test split

    @property
    def out(self) -> str:
        return self.linked.outputs[0].name


@pytest.fixture(scope="module", params=sorted(DIGITS), ids=sorted(DIGITS))
def case(request: pytest.FixtureRequest, digits_programs: dict[str, Path]) -> Case:
    d = DIGITS[request.param]
    prog = digits_programs[d.name]
    linked = verify(parse_file(str(prog)))
    fe, g = lower(d.model, load_npz(d.calib))
    x = load_npz(d.test_x)["input"]
    labels = np.load(d.labels)
    sim = run(linked, {"input": x}, keep_tensors=True)
    # the QDQ model has batch 1: feed it sample by sample as [N, 1, ...]
    ort = run_onnxruntime(fe.qmodel, {"input": x.reshape(-1, *g.inputs[0].shape)})
    return Case(d, prog, linked, fe, g, x, labels, sim, ort[fe.qmodel.graph.output[0].name].reshape(len(x), -1))


def test_run_validates(cli, case: Case) -> None:
    res = cli("run", str(case.program))
    assert res.rc == 0, res.err
    assert res.err == ""
    assert " match (tol " in res.out and "MISMATCH" not in res.out


def test_reference_is_the_compiled_qdq_model(case: Case) -> None:
    # the program's embedded expectations are onnxruntime's outputs of the very model used below
    exp = case.linked.expect
    assert exp is not None
    n = exp.inputs["input"].shape[0]
    assert n == 4
    calib = load_npz(case.d.calib)["input"][:n].reshape(n, *case.graph.inputs[0].shape)
    np.testing.assert_array_equal(exp.inputs["input"], calib)
    want = run_onnxruntime(case.fe.qmodel, {"input": calib})[case.fe.qmodel.graph.output[0].name]
    np.testing.assert_array_equal(exp.outputs[case.out].reshape(want.shape), want)
    assert exp.tol == pytest.approx(case.fe.output_tol) and exp.tol > 0


def test_accuracy_equals_onnxruntime(case: Case) -> None:
    got = case.sim.outputs[case.out].reshape(case.ort.shape)
    acc_cramc = float((got.argmax(axis=1) == case.labels).mean())
    acc_ort = float((case.ort.argmax(axis=1) == case.labels).mean())
    assert case.x.shape[0] == case.labels.shape[0] == 360
    assert acc_cramc == acc_ort
    assert acc_ort >= 0.95  # models/README.md: 0.975 (MLP) and 0.978 (CNN) quantised


def test_outputs_within_one_quantisation_step(case: Case) -> None:
    got = case.sim.outputs[case.out].reshape(case.ort.shape).astype(np.float64)
    diff = np.abs(got - case.ort)
    step = case.fe.output_tol
    assert float((diff == 0).mean()) >= SAME_FRACTION
    assert diff.max() <= step * (1 + 1e-6)


def test_mvm_accumulators_are_exact_integer_products(case: Case) -> None:
    mvms = [op for op in case.graph.ops if op.kind == "mvm"]
    assert len(mvms) == LAYERS[case.d.name]
    for op in mvms:
        acc = case.sim.tensors[op.out]
        x = case.sim.tensors[op.ins[0][1:]]
        w = case.graph.consts[op.attrs["w"][1:]]
        assert acc.shape[0] == case.x.shape[0]
        assert np.issubdtype(acc.dtype, np.integer)
        np.testing.assert_array_equal(acc, mvm(x, w, op.attrs.get("groups", 1)), err_msg=op.out)
        assert np.abs(acc).max() > 0


def test_every_value_equals_the_ir_semantics(case: Case) -> None:
    # the IR reference (cramc.ir.semantics.evaluate) and the simulator agree on every value, exactly
    want = evaluate(case.graph, {"input": case.x.reshape(-1, *case.graph.inputs[0].shape)}, keep=True)
    assert set(want) <= set(case.sim.tensors)
    for name, v in want.items():
        np.testing.assert_array_equal(case.sim.tensors[name].reshape(v.shape), v, err_msg=name)


def test_accuracy_line(cli, case: Case) -> None:
    res = cli("run", str(case.program), "--input", str(case.d.test_x), "--labels", str(case.d.labels))
    assert res.rc == 0, res.err
    acc = float((case.ort.argmax(axis=1) == case.labels).mean())
    assert f"accuracy ({case.out} argmax vs labels): {acc:.4f} over 360 samples" in res.out.splitlines()


def test_test_helper_runs_the_compilers_passes(case: Case) -> None:
    # compilertest.lower (used above for the IR) must run exactly the passes compile_model runs
    calib = load_npz(case.d.calib)
    mine, theirs = io.StringIO(), io.StringIO()
    lower(case.d.model, calib, Options(print_ir_after_all=True), log=mine)
    compile_model(str(case.d.model), calib, Options(print_ir_after_all=True), log=theirs)
    assert mine.getvalue() == theirs.getvalue()
    assert mine.getvalue().count("; IR after ") == 5
