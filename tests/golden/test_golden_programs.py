"""Golden emitted programs and simulator results of the shipped models and the ISA examples.

tests/golden/programs/ holds

- ``<case>.cram``: the exact text `cramc compile` writes for each case in COMPILES: every shipped
  model with its calibration set on the default chip, and variants that take the other paths of
  the compiler (CRAM-only reduction, each error-correction scheme, a layer/significance spec,
  automatic placement under a uniform gate error and under a preset error model, a small chip that
  forces time-multiplexing, 4-bit weights, 16-bit activations, no trace / no validation vectors);
- ``<case>.stderr``: what the compile printed to stderr, where it printed anything (the
  automatic placement's plan), compared exactly too;
- ``runs/<run>.json``: for each run in RUNS, `cramc run`'s REPORT.json without its wall-clock
  ("wall_s") and path ("program") fields, plus the SHA-256, dtype and shape of every array of its
  --output file.  The shipped models run on their first SUBSET[model] test images with their
  labels, fault free, with ``--gate-error 1e-3 --seed 1`` and with ``--error-model near_term_flat
  --seed 2``; the compile variants run on SMALL (CRAM-only: TINY) images with ``--gate-error 1e-3
  --seed 1`` (faults are what the protections act on); every isa/examples/*.cram program runs on its embedded
  validation vectors in the same three settings as the models.

A run executes the golden program file itself, not a fresh compile: a change in emission shows up
in the program goldens, a change in simulation (counts, fault sampling, outputs) in the run
goldens, each on its own.

The goldens were written before the structural refactor of issue 11, which must leave both
emission and simulation bit-identical.  Only regenerate them when a change is MEANT to alter
emission or simulation, and say so in the commit message::

    python tests/golden/programs/regen.py      # or: CRAMC_UPDATE_GOLDEN=1 pytest tests/golden/test_golden_programs.py

then read ``git diff --stat tests/golden/programs`` before committing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cramtest import EXAMPLES, REPO

from cramc.cli import main

UPDATE = os.environ.get("CRAMC_UPDATE_GOLDEN", "") not in ("", "0")
GOLDEN = Path(__file__).resolve().parent / "programs"
RUNS_DIR = GOLDEN / "runs"
#: Test images per run: 64 for the digits models, fewer where a run is slow (the MNIST models, the
#: CRAM-only lowering), so the whole file takes about 50 s of CPU (measured on the 2-core dev box).
SUBSET = {"digits_mlp": 64, "digits_cnn": 64, "mnist_mlp": 32, "mnist_lenet5": 8}
SMALL = 16  # test images per run of a compile variant
TINY = 4  # ... of a CRAM-only variant (every reduction is in-array gates: 10x the work)

#: Shipped model -> (calibration file, test data layout).  Paths are relative to the repository root:
#: the compile runs there, so the program's first line ("compiled by cramc ... from models/...") is
#: the same on every machine.
MODELS = {
    "digits_mlp": ("digits", "flat"),
    "digits_cnn": ("digits", "img"),
    "mnist_lenet5": ("mnist", "img"),
    "mnist_mlp": ("mnist", "flat"),
    "digits_mlp_ft": ("digits", "flat"),
    "digits_cnn_ft": ("digits", "img"),
}


def _model_args(model: str) -> list[str]:
    dataset, layout = MODELS[model]
    return [f"models/{model}.onnx", "--calibration", f"models/{dataset}_calib_{layout}.npz"]


#: case name -> (model, extra `cramc compile` options)
COMPILES: dict[str, tuple[str, list[str]]] = {
    **{m: (m, []) for m in MODELS},
    "digits_mlp-reduce_cram": ("digits_mlp", ["--reduce", "cram"]),
    "digits_cnn-reduce_cram": ("digits_cnn", ["--reduce", "cram"]),
    "digits_mlp-reduce_cram_serial": ("digits_mlp", ["--reduce", "cram-serial"]),
    "digits_mlp-ecc_dup": ("digits_mlp", ["--ecc", "dup"]),
    "digits_cnn-ecc_dup": ("digits_cnn", ["--ecc", "dup"]),
    "digits_mlp-ecc_tmr": ("digits_mlp", ["--ecc", "tmr"]),
    "digits_mlp-ecc_vote": ("digits_mlp", ["--ecc", "vote"]),
    "digits_cnn-ecc_vote_dup_sig": ("digits_cnn", ["--ecc", "vote:sig>=10;dup:sig>=6"]),
    "digits_mlp-ecc_vote_sig8": ("digits_mlp", ["--ecc", "vote:sig>=8"]),
    "digits_mlp-ecc_auto": ("digits_mlp", ["--ecc", "auto", "--gate-error", "1e-3"]),
    "digits_mlp-ecc_auto_near_term": ("digits_mlp", ["--ecc", "auto", "--error-model", "near_term_flat"]),
    "digits_mlp-small_chip": ("digits_mlp", ["--arrays", "16", "--rows", "64", "--cols", "64"]),
    "digits_cnn-small_chip": ("digits_cnn", ["--arrays", "16", "--rows", "64", "--cols", "64", "--accs", "16"]),
    "digits_mlp-w4": ("digits_mlp", ["--weight-bits", "4"]),
    "digits_cnn-w4": ("digits_cnn", ["--weight-bits", "4"]),
    "digits_mlp-a16": ("digits_mlp", ["--act-bits", "16"]),
    "digits_mlp-no_trace": ("digits_mlp", ["--no-trace", "--validation", "0"]),
    # one set of scratch columns: exactly the program before double buffering (issue 13)
    "digits_mlp-no_double_buffer": ("digits_mlp", ["--no-double-buffer"]),
    "digits_cnn-no_double_buffer": ("digits_cnn", ["--no-double-buffer"]),
}

#: The three fault settings of the model and example runs.
SETTINGS: dict[str, list[str]] = {
    "clean": [],
    "gate1e-3": ["--gate-error", "1e-3", "--seed", "1"],
    "near_term": ["--error-model", "near_term_flat", "--seed", "2"],
}


Run = tuple[Path, str | None, int, list[str]]


def _runs() -> dict[str, Run]:
    """run name -> (program, model whose test subset it reads or None for embedded vectors, images, options)."""
    runs: dict[str, Run] = {}
    for m in ("digits_mlp", "digits_cnn", "mnist_lenet5", "mnist_mlp"):
        for s, opts in SETTINGS.items():
            runs[f"{m}-{s}"] = (GOLDEN / f"{m}.cram", m, SUBSET[m], opts)
    for case, (model, _) in COMPILES.items():
        # not run: the shipped models (run above), no_trace (same instructions as digits_mlp) and the
        # CRAM-only CNN (about 10 s for even 4 images; digits_mlp-reduce_cram runs that lowering)
        if case not in MODELS and case not in ("digits_mlp-no_trace", "digits_cnn-reduce_cram"):
            n = TINY if "reduce_cram" in case else SMALL
            runs[f"{case}-gate1e-3"] = (GOLDEN / f"{case}.cram", model, n, SETTINGS["gate1e-3"])
    for ex in sorted(EXAMPLES.glob("*.cram")):
        for s, opts in SETTINGS.items():
            runs[f"example_{ex.stem}-{s}"] = (ex, None, 0, opts)
    return runs


RUNS = _runs()
WALL_CLOCK = ("wall_s", "program")  # REPORT.json fields that depend on the machine or the file's path


@contextlib.contextmanager
def _in_repo() -> Iterator[None]:
    old = Path.cwd()
    os.chdir(REPO)
    try:
        yield
    finally:
        os.chdir(old)


def _cramc(*argv: str) -> tuple[int, str, str]:
    """`cramc ARGV...` in-process from the repository root: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with _in_repo(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def compile_case(case: str, out_dir: Path) -> tuple[str, str]:
    """Compile COMPILES[case] into out_dir: (program text, stderr)."""
    model, opts = COMPILES[case]
    prog = out_dir / f"{case}.cram"
    rc, out, err = _cramc("compile", *_model_args(model), "-o", str(prog), *opts)
    assert rc == 0, f"cramc compile {case} failed:\n{out}\n{err}"
    assert out.startswith(f"wrote {prog}: "), out
    return prog.read_text(), err


def _subset(model: str, n: int, out_dir: Path) -> tuple[Path, Path]:
    """The first n test images of a model's dataset and their labels, as files in out_dir."""
    dataset, layout = MODELS[model]
    x, y = out_dir / f"{dataset}_{layout}_x{n}.npz", out_dir / f"{dataset}_y{n}.npy"
    if not x.exists():
        with np.load(REPO / "models" / f"{dataset}_test_x_{layout}.npz", allow_pickle=False) as z:
            np.savez(x, **{k: z[k][:n] for k in z.files})
        np.save(y, np.load(REPO / "models" / f"{dataset}_test_labels.npy", allow_pickle=False)[:n])
    return x, y


def array_digest(a: np.ndarray) -> dict[str, object]:
    """dtype, shape and SHA-256 of an array's C-order bytes: equal digests mean bit-identical arrays."""
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


def run_case(name: str, out_dir: Path) -> dict[str, object]:
    """`cramc run` of RUNS[name]: its report without wall-clock fields and the digests of its outputs."""
    prog, model, n, opts = RUNS[name]
    report, outputs = out_dir / f"{name}.json", out_dir / f"{name}.npz"
    data: list[str] = []
    if model is not None:
        x, y = _subset(model, n, out_dir)
        data = ["--input", str(x), "--labels", str(y)]
    rc, out, err = _cramc("run", str(prog), *data, *opts, "--report", str(report), "--output", str(outputs))
    assert rc == 0, f"cramc run {name} failed:\n{out}\n{err}"
    rep = json.loads(report.read_text())
    for k in WALL_CLOCK:
        rep.pop(k)
    with np.load(outputs, allow_pickle=False) as z:
        digests = {k: array_digest(z[k]) for k in sorted(z.files)}
    return {"report": rep, "outputs": digests}


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("golden_programs")


@pytest.mark.parametrize("case", list(COMPILES))
def test_compiled_program_matches_golden(case: str, work: Path) -> None:
    text, err = compile_case(case, work)
    golden, golden_err = GOLDEN / f"{case}.cram", GOLDEN / f"{case}.stderr"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text)
        if err:
            golden_err.write_text(err)
        else:
            golden_err.unlink(missing_ok=True)
    assert golden.exists(), f"no golden {golden}: run tests/golden/programs/regen.py"
    want = golden.read_text()
    if text != want:
        a, b = text.splitlines(), want.splitlines()
        first = next((i for i, (p, q) in enumerate(zip(a, b, strict=False)) if p != q), min(len(a), len(b)))
        got_line = a[first] if first < len(a) else "<end of file>"
        want_line = b[first] if first < len(b) else "<end of file>"
        pytest.fail(f"{case}: emitted program differs from {golden} first at line {first + 1}:\n"
                    f"  got:  {got_line}\n  want: {want_line}")  # fmt: skip
    assert err == (golden_err.read_text() if golden_err.exists() else ""), f"{case}: compile stderr differs"


@pytest.mark.parametrize("name", list(RUNS))
def test_run_matches_golden(name: str, work: Path) -> None:
    got = run_case(name, work)
    golden = RUNS_DIR / f"{name}.json"
    if UPDATE:
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        golden.write_text(_dump(got))
    assert golden.exists(), f"no golden {golden}: run tests/golden/programs/regen.py"
    want = json.loads(golden.read_text())
    assert got["outputs"] == want["outputs"], f"{name}: outputs differ from {golden}"
    rep, want_rep = got["report"], want["report"]
    assert isinstance(rep, dict) and isinstance(want_rep, dict)
    differ = sorted(k for k in rep.keys() | want_rep.keys() if rep.get(k) != want_rep.get(k))
    assert not differ, f"{name}: REPORT.json fields {differ} differ from {golden}: " + ", ".join(
        f"{k}: {rep.get(k)!r} != {want_rep.get(k)!r}" for k in differ[:3]
    )


def test_goldens_have_no_strays() -> None:
    """Every golden file belongs to a case (a renamed or dropped case leaves no stale file behind)."""
    progs = {p.stem for p in GOLDEN.glob("*.cram")} | {p.stem for p in GOLDEN.glob("*.stderr")}
    assert progs <= set(COMPILES), sorted(progs - set(COMPILES))
    assert set(COMPILES) <= {p.stem for p in GOLDEN.glob("*.cram")}
    runs = {p.stem for p in RUNS_DIR.glob("*.json")}
    assert runs == set(RUNS), (sorted(runs - set(RUNS)), sorted(set(RUNS) - runs))


def test_faulty_runs_differ_from_clean() -> None:
    """The fault settings reach the simulator: a golden clean run injected no fault, a faulty one some.

    "Some" is required only of runs with at least 10,000 gate evaluations: at 1e-3 (and near_term's
    rates, which are higher) they expect at least 10 faults, so none at all has probability < e^-10.
    A small example (full_adder: 8 rows) legitimately draws none.
    """
    for name in RUNS:
        rep = json.loads((RUNS_DIR / f"{name}.json").read_text())["report"]
        assert rep["faults_injected"] == sum(rep["faults"].values()), name
        if name.endswith("-clean"):
            assert rep["faults_injected"] == 0, name
        elif rep["gate_evals"] >= 10_000:
            assert rep["faults_injected"] > 0, name
