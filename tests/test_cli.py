"""The command line: exit codes, diagnostics without tracebacks, files it reads and writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cramtest import example, example_paths

RIPPLE = str(example("ripple_adder8.cram"))
FULL_ADDER = str(example("full_adder.cram"))


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_run_every_example(cli, path: Path) -> None:
    res = cli("run", str(path))
    assert res.rc == 0, res.err
    assert res.err == ""
    assert "match" in res.out and "MISMATCH" not in res.out
    assert res.out.splitlines()[0].startswith("ran ")


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_check_and_fmt_check_every_example(cli, path: Path) -> None:
    res = cli("check", str(path))
    assert res.rc == 0 and res.out.startswith(f"{path}: ok (")
    assert cli("fmt", "--check", str(path)).rc == 0
    out = cli("fmt", str(path)).out
    assert out == path.read_text(encoding="utf-8")


def test_run_reports_mismatch_only_without_faults(cli, tmp_path: Path) -> None:
    # a wrong expected value: exit 1 at zero faults
    text = (
        Path(FULL_ADDER)
        .read_text(encoding="utf-8")
        .replace(
            ".data $cout : i64[1,1,8] = [0, 0, 0, 1, 0, 1, 1, 1]", ".data $cout : i64[1,1,8] = [0, 0, 0, 1, 0, 1, 1, 0]"
        )
    )
    bad = tmp_path / "bad.cram"
    bad.write_text(text, encoding="utf-8")
    res = cli("run", str(bad))
    assert res.rc == 1
    assert "MISMATCH" in res.out
    assert "differ from the embedded expected outputs" in res.err
    # with faults a mismatch is a result, not a failure
    res = cli("run", FULL_ADDER, "--gate-error", "0.5", "--seed", "3")
    assert res.rc == 0
    assert "MISMATCH" in res.out


def test_output_npz(cli, tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    assert cli("run", RIPPLE, "--output", str(out)).rc == 0
    with np.load(out) as z:
        assert z.files == ["y"]
        y = z["y"]
    from cramtest import link_file

    x = link_file(Path(RIPPLE)).expect.inputs["x"].astype(np.int64)
    np.testing.assert_array_equal(y, x[..., 0] + x[..., 1])


def test_report_json(cli, tmp_path: Path) -> None:
    rep = tmp_path / "report.json"
    assert cli("run", RIPPLE, "--report", str(rep)).rc == 0
    d = json.loads(rep.read_text(encoding="utf-8"))
    for key in ("samples", "gate_evals", "faults_injected", "opcodes"):
        assert key in d
    # 2 samples x 4 arrays x 256 rows x 8 full adders of 4 gates (maj3 carry, NOT carry into two cells, maj5 sum)
    lanes_rows = 2 * 4 * 256
    assert d["samples"] == 2
    assert d["gate_evals"] == lanes_rows * 8 * 4
    assert d["faults_injected"] == 0
    assert d["opcodes"]["maj5"] == {"instructions": 2 * 8, "row_ops": lanes_rows * 8}
    assert d["opcodes"]["wr"]["row_ops"] == lanes_rows * 16
    assert d["opcodes"]["rd"]["row_ops"] == lanes_rows * 9
    assert d["validation"][0]["match"] is True


def test_report_counts_faults(cli, tmp_path: Path) -> None:
    rep = tmp_path / "report.json"
    assert cli("run", RIPPLE, "--gate-error", "0.01", "--report", str(rep)).rc == 0
    d = json.loads(rep.read_text(encoding="utf-8"))
    n = d["gate_evals"]
    # 5 sigma around p * n
    assert abs(d["faults_injected"] - 0.01 * n) < 5 * np.sqrt(0.01 * 0.99 * n)
    assert d["faults"]["gate"] == d["faults_injected"]
    assert d["error_model"]["gates"]["and"] == {"p01": 0.01, "p10": 0.01}


def _ripple_inputs(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 4, 256, 2)).astype(np.uint8)


def test_input_npz(cli, tmp_path: Path) -> None:
    x = _ripple_inputs(3)
    inp, out = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inp, x=x)
    res = cli("run", RIPPLE, "--input", str(inp), "--output", str(out))
    assert res.rc == 0, res.err
    assert "ran 3 sample(s)" in res.out
    assert "match" not in res.out  # no validation table with user data
    with np.load(out) as z:
        np.testing.assert_array_equal(z["y"], x[..., 0].astype(np.int64) + x[..., 1])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 4, 256), np.uint8)}, "input 'x' has shape [2, 4, 256]; expected [N, 4, 256, 2]"),
        ({"x": np.zeros((2, 4, 128, 2), np.uint8)}, "input 'x' has shape [2, 4, 128, 2]"),
        (
            {"y": np.zeros((2, 4, 256, 2), np.uint8)},
            "in.npz: no program input is named 'y' (the program's inputs: 'x')",
        ),
        ({}, "in.npz: no array named 'x' (input of shape [N, 4, 256, 2])"),
        ({"x": np.zeros((2, 4, 256, 2), np.float32)}, "input 'x' must hold integers"),
    ],
)
def test_input_npz_errors(cli, tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    inp = tmp_path / "in.npz"
    np.savez(inp, **arrays)
    res = cli("run", RIPPLE, "--input", str(inp))
    assert res.rc == 1
    assert "Traceback" not in res.err
    assert res.err.startswith("error: ")
    assert message in res.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope.cram"], "cannot read nope.cram"),
        (["check", "nope.cram"], "cannot read nope.cram"),
        (["run", RIPPLE, "--input", "nope.npz"], "nope.npz: no such file"),
        (["run", RIPPLE, "--seed", "-1"], "--seed must be non-negative"),
        (["run", RIPPLE, "--gate-error", "1.5"], "a probability must be between 0 and 1"),
        (["run", RIPPLE, "--gate-error", "nan"], "a probability must be between 0 and 1"),
        (["run", RIPPLE, "--error-model", "nope.toml"], "cannot read error model nope.toml"),
        (["run", RIPPLE, "--output", "/nonexistent-dir/out.npz"], "directory /nonexistent-dir does not exist"),
        (["run", RIPPLE, "--max-memory", "0.000001"], "more than the memory budget"),
    ],
)
def test_user_errors_exit_1_without_traceback(cli, tmp_path: Path, monkeypatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    res = cli(*args)
    assert res.rc == 1
    assert "Traceback" not in res.err
    assert message in res.err


def test_not_npz_input(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    res = cli("run", RIPPLE, "--input", str(bad))
    assert res.rc == 1 and "not a readable .npz file" in res.err


def test_program_without_expect_needs_input(cli, tmp_path: Path) -> None:
    p = tmp_path / "p.cram"
    p.write_text(".machine arrays=1 rows=8 cols=2\n.main {\n  fill @0 c0, 1\n}\n", encoding="utf-8")
    res = cli("run", str(p))
    assert res.rc == 1 and "embeds no validation vectors" in res.err


def test_fmt(cli, tmp_path: Path) -> None:
    p = tmp_path / "p.cram"
    messy = ".machine  arrays=1 rows=8 cols=2\n.main {\nfill @0 c0,1\n}\n"
    canon = ".machine arrays=1 rows=8 cols=2\n.main {\n  fill @0 c0, 1\n}\n"
    p.write_text(messy, encoding="utf-8")
    res = cli("fmt", "--check", str(p))
    assert res.rc == 1 and "not canonical" in res.err
    res = cli("fmt", str(p))
    assert res.rc == 0 and res.out == canon
    assert p.read_text(encoding="utf-8") == messy  # fmt without -i does not touch the file
    assert cli("fmt", "-i", str(p)).rc == 0
    assert p.read_text(encoding="utf-8") == canon
    assert cli("fmt", "--check", str(p)).rc == 0


def test_fmt_in_place_refuses_invalid_program(cli, tmp_path: Path) -> None:
    p = tmp_path / "p.cram"
    text = ".machine arrays=1 rows=8 cols=2\n.main {\nnot @0 c1,c0\n}\n"
    p.write_text(text, encoding="utf-8")
    res = cli("fmt", "-i", str(p))
    assert res.rc == 1 and "read before anything is written" in res.err
    assert p.read_text(encoding="utf-8") == text


def test_labels(cli, tmp_path: Path) -> None:
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(5, dtype=np.int64))
    res = cli("run", RIPPLE, "--labels", str(labels))
    assert res.rc == 1 and "5 labels for 2 samples" in res.err


def test_usage_errors_exit_2(cli) -> None:
    assert cli().rc == 2
    assert cli("frobnicate").rc == 2
    assert cli("run").rc == 2
    assert cli("run", RIPPLE, "--seed", "x").rc == 2


def test_subprocess_exit_codes() -> None:
    """The installed entry point as a user runs it: real exit status, no traceback."""
    ok = subprocess.run([sys.executable, "-m", "cramc.cli", "run", FULL_ADDER], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "match" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "cramc.cli", "check", str(Path(__file__).parent / "golden/errors/huge_arrays.cram")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert "huge_arrays.cram:2:10: error: arrays=1000000000000 exceeds the simulator limit" in bad.stderr
