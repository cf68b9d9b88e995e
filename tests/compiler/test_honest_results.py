"""Results that say what they are (issue 10, section 6).

- labels that are not class ids of the output are an error (run and sweep share one check);
- calibration data unlike what the model was trained on gets a warning that says why, and none of the
  shipped calibration sets does;
- the run summary says what the embedded validation compares with (onnxruntime on cramc's own quantised
  model) and how the outputs agree with the float model's outputs, embedded at compile time;
- NaN, infinite and complex inputs are errors naming the file, the array and the count;
- --validation, --gate-error, --error-model and --trace do what they say or say why not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from compilertest import DIGITS, MNIST, cramc, load_npz

from cramc.frontend import fold_batchnorm, fold_constants, quantize
from cramc.frontend.calibration_check import calibration_warnings
from cramc.frontend.load import load_model
from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.arange(360) % 10 * 1.0, "labels are float64 (whole numbers); class ids must be integers"),
        (np.full(360, 0.5), "labels are float64 values, not integer class ids (e.g. 0.5 at index 0)"),
        (
            np.where(np.arange(360) == 7, 99, 1),
            "1 of 360 labels are not class ids of output 'logits' (0 .. 9), e.g. 99 at",
        ),
        (
            np.where(np.arange(360) < 3, -1, 1),
            "3 of 360 labels are not class ids of output 'logits' (0 .. 9), e.g. -1 at",
        ),
        (np.eye(10, dtype=np.int64)[np.arange(360) % 10], "labels are one-hot, shape [360, 10]"),
        (np.zeros((360, 2), np.int64), "labels have shape [360, 2]; expected one class id per sample, shape [N]"),
        (np.zeros(359, np.int64), "359 labels for 360 samples"),
    ],
    ids=["float-whole", "float", "99", "-1", "one-hot", "2-d", "count"],
)
def test_run_refuses_labels_that_are_not_class_ids(
    digits_programs: dict[str, Path], tmp_path: Path, labels: np.ndarray, message: str
) -> None:
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    d = DIGITS["mlp"]
    res = cramc("run", str(digits_programs["mlp"]), "--input", str(d.test_x), "--labels", str(path))
    assert res.rc == 1 and res.out == ""
    assert res.err.startswith(f"error: {path}: ")
    assert message in res.err, res.err


def test_run_accepts_integer_labels_of_either_shape(digits_programs: dict[str, Path], tmp_path: Path) -> None:
    d = DIGITS["mlp"]
    path = tmp_path / "labels.npy"
    np.save(path, np.load(d.labels).astype(np.int32).reshape(-1, 1))
    res = cramc("run", str(digits_programs["mlp"]), "--input", str(d.test_x), "--labels", str(path))
    assert res.rc == 0, res.err
    assert "accuracy (logits argmax vs labels): 0.9750 over 360 samples" in res.out


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.eye(10, dtype=np.float32)[np.arange(40) % 10], "labels are one-hot, shape [40, 10]"),
        (np.where(np.arange(40) == 5, 99, 1), "1 of 40 labels are not class ids of output 'logits' (0 .. 9)"),
    ],
)
def test_sweep_refuses_them_the_same_way(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    d = DIGITS["mlp"]
    data, path = tmp_path / "x.npz", tmp_path / "labels.npy"
    np.savez(data, input=load_npz(d.test_x)["input"][:40])
    np.save(path, labels)
    res = cramc(
        "sweep", str(d.model), "--data", str(data), "--labels", str(path), "--calibration", str(d.calib),
        "--gate-error", "0", "--protection", "none", "--seeds", "1", "--no-progress",
    )  # fmt: skip
    assert res.rc == 1 and res.out == ""
    assert res.err.startswith(f"error: {path}: ") and message in res.err, res.err


# ---------------------------------------------------------------- NaN, inf, complex


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("nan", "holds 3 NaN value(s) (of {n}); cramc needs finite numbers"),
        ("inf", "holds 2 infinite value(s) (of {n}); cramc needs finite numbers"),
        ("both", "holds 3 NaN and 2 infinite value(s) (of {n}); cramc needs finite numbers"),
        ("complex", "holds complex numbers (complex64); cramc takes real inputs"),
    ],
)
def test_nan_inf_complex_inputs_are_errors(
    digits_programs: dict[str, Path], tmp_path: Path, bad: str, message: str
) -> None:
    d = DIGITS["mlp"]
    x = load_npz(d.test_x)["input"].copy()
    if bad in ("nan", "both"):
        x.reshape(-1)[[5, 70, 900]] = np.nan
    if bad in ("inf", "both"):
        x.reshape(-1)[[6, 71]] = [np.inf, -np.inf]
    if bad == "complex":
        x = x.astype(np.complex64)
    path = tmp_path / "x.npz"
    np.savez(path, input=x)
    res = cramc("run", str(digits_programs["mlp"]), "--input", str(path))
    assert res.rc == 1 and res.out == "", res.out
    assert res.err == f"error: {path}: array 'input' {message.format(n=x.size)}\n"
    # the same file as calibration data
    cal = tmp_path / "cal.npz"
    np.savez(cal, input=x[:64])
    res = cramc("compile", str(d.model), "-o", str(tmp_path / "p.cram"), "--calibration", str(cal))
    assert res.rc == 1 and not (tmp_path / "p.cram").exists()
    assert res.err == f"error: {cal}: array 'input' {message.format(n=x[:64].size)}\n"


def test_sweep_refuses_nan_data(tmp_path: Path) -> None:
    d = DIGITS["mlp"]
    x = load_npz(d.test_x)["input"][:40].copy()
    x[3, 7] = np.nan
    data = tmp_path / "x.npz"
    np.savez(data, input=x)
    res = cramc("sweep", str(d.model), "--data", str(data), "--labels", str(d.labels), "--no-progress")
    assert res.rc == 1 and res.out == ""
    assert res.err == f"error: {data}: array 'input' holds 1 NaN value(s) (of 2560); cramc needs finite numbers\n"


# ---------------------------------------------------------------- calibration warnings


def _float_model(path: Path) -> onnx.ModelProto:
    m = fold_constants.run(load_model(str(path)))
    quantize.legalise(m)
    return fold_batchnorm.run(m)


@pytest.mark.parametrize("model", [*DIGITS.values(), *MNIST.values()], ids=lambda d: f"{d.dataset}_{d.name}")
def test_shipped_calibration_sets_give_no_warning(model) -> None:  # noqa: ANN001
    if not model.calib.exists():
        pytest.skip(f"{model.calib} not shipped")
    cal = quantize.check_calibration(_float_model(model.model), load_npz(model.calib), "calibration data")
    assert calibration_warnings(_float_model(model.model), cal) == []


@pytest.mark.parametrize("name", ["light_squeezenet", "light_inception_v2", "light_shufflenet"])
def test_light_models_on_uniform_inputs_give_no_warning(name: str) -> None:
    m = _float_model(LIGHT / f"{name}.onnx")
    assert calibration_warnings(m, quantize.synthetic_calibration(m, n=8)) == []


def _compile_with(tmp_path: Path, d, x: np.ndarray) -> tuple[Path, str]:  # noqa: ANN001
    cal, prog = tmp_path / "cal.npz", tmp_path / "p.cram"
    np.savez(cal, input=x)
    res = cramc("compile", str(d.model), "-o", str(prog), "--calibration", str(cal))
    assert res.rc == 0, res.err
    return prog, res.err


def test_all_zero_calibration_warns(tmp_path: Path) -> None:
    d = DIGITS["mlp"]
    prog, err = _compile_with(tmp_path, d, np.zeros((64, 64), np.float32))
    assert err == (
        "warning: calibration data 'input': every value of the 64 sample(s) is 0; the quantiser takes every "
        "activation range from them, so real inputs will be quantised badly (give representative samples of the "
        "real inputs)\n"
    )
    # the self-validation still matches (its reference is this quantised model); the summary says so
    res = cramc("run", str(prog))
    assert res.rc == 0 and " match (tol" in res.out
    assert "validation reference: onnxruntime on cramc's own quantised (QDQ) model" in res.out


def test_identical_samples_warn(tmp_path: Path) -> None:
    d = DIGITS["cnn"]
    x = np.repeat(load_npz(d.calib)["input"][:1], 10, axis=0)
    _, err = _compile_with(tmp_path, d, x)
    assert err.startswith("warning: calibration data 'input': all 10 samples are identical;")


@pytest.mark.parametrize(("name", "layer"), [("mlp", "fc1"), ("cnn", "conv1")])
@pytest.mark.parametrize("scale", [255, 16])
def test_raw_pixel_calibration_warns(tmp_path: Path, name: str, layer: str, scale: int) -> None:
    d = DIGITS[name]
    x = np.round(load_npz(d.calib)["input"] * scale).astype(np.uint8)  # raw pixels, as loaded from images
    _, err = _compile_with(tmp_path, d, x)
    assert err.startswith(
        f"warning: calibration data 'input' (whole numbers 0 .. {scale}) look unlike the model's training data: "
        f"its first layer, {layer}, sees pre-activations with a spread of "
    ), err
    spread = float(err.split("a spread of ")[1].split(" ")[0])
    assert 0.5 * scale < spread < 1.5 * scale  # ~1 on the [0, 1] training scale, times the scale
    assert err.count("\n") == 1


# ---------------------------------------------------------------- validation against the float model


def test_float_outputs_are_embedded_and_reported(digits_programs: dict[str, Path], tmp_path: Path) -> None:
    d = DIGITS["cnn"]
    linked = verify(parse_file(str(digits_programs["cnn"])))
    exp = linked.expect
    assert exp is not None and set(exp.float_outputs) == {"logits"}
    # they are onnxruntime's outputs of the float model for the validation inputs (the first 4 calibration samples)
    cal = load_npz(d.calib)["input"][:4]
    sess = ort.InferenceSession(str(d.model), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input": cal})[0]
    np.testing.assert_allclose(exp.float_outputs["logits"].reshape(4, 10), want, rtol=1e-5, atol=1e-5)
    out, rep = tmp_path / "o.npz", tmp_path / "r.json"
    res = cramc("run", str(digits_programs["cnn"]), "--output", str(out), "--report", str(rep))
    assert res.rc == 0, res.err
    got = load_npz(out)["logits"]
    agree = int((got.argmax(axis=1) == want.argmax(axis=1)).sum())
    diff = float(np.abs(got - exp.float_outputs["logits"].reshape(4, 10)).max())
    lines = res.out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("validation reference:"))
    assert lines[at] == (
        "validation reference: onnxruntime on cramc's own quantised (QDQ) model: a match checks the compilation "
        "and the simulation, not the quantisation"
    )
    assert lines[at + 1] == (
        f"float model: logits top-1 agrees on {agree} of 4 validation inputs ({agree / 4:.4f}); max |diff| {diff:.4g}"
    )
    r = json.loads(rep.read_text(encoding="utf-8"))
    assert r["validation_reference"] == "onnxruntime on cramc's quantised model"
    assert r["float_model"] == [{"output": "logits", "samples": 4, "top1_agree": agree, "max_abs_diff": diff}]


def test_hand_written_programs_name_their_reference(cli, repo: Path) -> None:
    res = cli("run", str(repo / "isa" / "examples" / "full_adder.cram"))
    assert res.rc == 0
    assert res.out.splitlines()[-1] == "validation reference: the outputs embedded in the program (.expect)"
    assert "float model" not in res.out


# ---------------------------------------------------------------- options that were ignored


def test_validation_counts(tmp_path: Path) -> None:
    d = DIGITS["mlp"]
    prog = tmp_path / "p.cram"
    res = cramc("compile", str(d.model), "-o", str(prog), "--calibration", str(d.calib), "--validation", "-1")
    assert res.rc == 1 and not prog.exists()
    assert res.err == "error: --validation -1: the number of validation vectors to embed is 0 or more\n"
    res = cramc("compile", str(d.model), "-o", str(prog), "--calibration", str(d.calib), "--validation", "100000")
    assert res.rc == 0, res.err
    assert res.err == (
        "note: --validation 100000: the calibration data has 64 sample(s); embedding 64 validation vector(s)\n"
    )
    exp = verify(parse_file(str(prog))).expect
    assert exp is not None and exp.inputs["input"].shape[0] == exp.float_outputs["logits"].shape[0] == 64
    res = cramc("compile", str(d.model), "-o", str(prog), "--calibration", str(d.calib), "--validation", "0")
    assert res.rc == 0, res.err
    assert res.err == (
        "note: no validation vectors embedded (--validation 0): cramc run needs --input, and run --trace has no "
        "reference data\n"
    )
    text = prog.read_text(encoding="utf-8")
    assert ".expect" not in text and ".trace" not in text
    res = cramc("run", str(prog))
    assert res.rc == 1 and "embeds no validation vectors (.expect); give --input DATA.npz" in res.err
    res = cramc("run", str(prog), "--input", str(d.test_x), "--labels", str(d.labels))
    assert res.rc == 0 and "accuracy (logits argmax vs labels): 0.9750" in res.out


@pytest.mark.parametrize("flag", [["--gate-error", "1e-3"], ["--error-model", "near_term_flat"]])
@pytest.mark.parametrize("ecc", [[], ["--ecc", "dup"]])
def test_fault_rates_without_ecc_auto_are_errors(tmp_path: Path, flag: list[str], ecc: list[str]) -> None:
    d = DIGITS["mlp"]
    prog = tmp_path / "p.cram"
    res = cramc("compile", str(d.model), "-o", str(prog), "--calibration", str(d.calib), *flag, *ecc)
    assert res.rc == 1 and not prog.exists()
    assert res.err == (
        f"error: {flag[0]} tunes --ecc auto and does nothing without it; the fault rate of a simulation is an "
        "option of cramc run\n"
    )


@pytest.mark.parametrize("extra", [["--input", "x.npz"], ["--labels", "l.npy", "--output", "o.npz"], ["--report", "r"]])
def test_trace_takes_no_data_files(digits_programs: dict[str, Path], extra: list[str]) -> None:
    res = cramc("run", str(digits_programs["mlp"]), "--trace", *extra)
    assert res.rc == 1 and res.out == ""
    flags = ", ".join(a for a in extra if a.startswith("--"))
    assert res.err == (
        "error: --trace compares validation sample 0 with the reference tensors embedded in the program; it takes "
        f"no {flags}\n"
    )
