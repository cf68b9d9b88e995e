"""The command line never destroys a file and never shows a traceback, whatever it is handed.

A table of realistic mistakes, one class per block (bad paths, outputs that are inputs, directories,
non-regular outputs, wrong file types, empty data, absurd numbers, deep nesting, decompression bombs,
huge repeat counts), each run through `cramc.cli.main` in a scratch directory holding copies of a
program, a model and data files.  Every case must exit non-zero with a short `error:` message and no
traceback, and leave every file of the directory byte-identical, with nothing added (no output, no
temporary file).  Hypothesis then throws arbitrary numbers at the numeric flags of `cramc run`.  What a
process-wide limit needs (a full disk) runs in a subprocess.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO, example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cramc import fileio
from cramc.cli import main
from cramc.isa.parser import MAX_NESTING

HEAD = ".machine arrays=1 rows=8 cols=4\n.input x : u8[1,8]\n.output y : i64[1,8]\n"


def _loop(count: str) -> str:
    return (
        HEAD
        + f".main {{\n  wr @0 c0, %x bits=1\n  repeat i {count} {{\n    not @0 c1, c0\n  }}\n"
        + ("  rd @0 %y, c1 bits=1 signed=0\n}\n")
    )


def _nested(depth: int) -> str:
    body = [f"  repeat i{k} 1 {{" for k in range(depth)] + ["  not @0 c1, c0"] + ["  }"] * depth
    return HEAD + ".main {\n  wr @0 c0, %x bits=1\n" + "\n".join(body) + "\n  rd @0 %y, c1 bits=1 signed=0\n}\n"


def _micros(n: int, calls: int) -> str:
    """Micro-programs m0 .. m<n>, each calling the next `calls` times."""
    ms = [f".micro m{k}(col d, col s) {{\n" + f"  call m{k + 1} d=d s=s\n" * calls + "}" for k in range(n)]
    ms.append(f".micro m{n}(col d, col s) {{\n  not d, s\n}}")
    return HEAD + "\n".join(ms) + "\n.main {\n  wr @0 c0, %x bits=1\n  call @0 m0 d=c1 s=c0\n}\n"


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of inputs, made the working directory (the cases name files relative to it)."""
    shutil.copy(example("ripple_adder8.cram"), tmp_path / "prog.cram")
    shutil.copy(REPO / "models" / "digits_mlp.onnx", tmp_path / "model.onnx")
    shutil.copy(REPO / "models" / "digits_calib_flat.npz", tmp_path / "calib.npz")
    np.save(tmp_path / "lab64.npy", np.zeros(64, np.int64))
    np.save(tmp_path / "lab.npy", np.zeros(2, np.int64))
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 4, 256, 2), np.uint8))
    np.savez(tmp_path / "x1.npz", x=np.zeros((1, 1, 8), np.uint8))
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 256, 2), np.uint8))
    np.savez(tmp_path / "zero.npz", x=np.zeros((0, 4, 256, 2), np.uint8))
    np.savez(tmp_path / "zero_calib.npz", input=np.zeros((0, 64), np.float32))
    np.savez(tmp_path / "scalar.npz", x=np.uint8(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "empty.cram").write_text("", encoding="utf-8")
    (tmp_path / "text.txt").write_text("not data\n", encoding="utf-8")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link.onnx").symlink_to("model.onnx")
    os.link(tmp_path / "prog.cram", tmp_path / "hard.cram")
    (tmp_path / "deep.cram").write_text(_nested(5000), encoding="utf-8")
    (tmp_path / "chain.cram").write_text(_micros(MAX_NESTING + 10, 1), encoding="utf-8")
    (tmp_path / "doubling.cram").write_text(_micros(30, 2), encoding="utf-8")
    (tmp_path / "bomb.cram").write_text(
        HEAD + '.data $w : i64[100000,100000] = b64z"eJwDAAAAAAE="\n.main {\n  fill @0 c0, 1\n}\n', encoding="utf-8"
    )
    (tmp_path / "loop1e9.cram").write_text(_loop("1000000000"), encoding="utf-8")
    (tmp_path / "loop1e30.cram").write_text(_loop("1" + "0" * 30), encoding="utf-8")
    (tmp_path / "digits.cram").write_text(_loop("1" + "0" * 5000), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under root: file contents, link targets, modes; what must not change."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        st_ = p.lstat()
        if stat.S_ISLNK(st_.st_mode):
            out[rel] = "link -> " + os.readlink(p)
        elif stat.S_ISDIR(st_.st_mode):
            out[rel] = "dir"
        else:
            out[rel] = f"{stat.S_IMODE(st_.st_mode):o} {hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


def _cramc(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors
        rc = int(e.code or 0)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _assert_clean_error(rc: int, err: str) -> None:
    assert rc != 0
    assert "Traceback" not in err and "Error:" not in err.replace("error:", ""), err
    lines = [line for line in err.splitlines() if line.strip()]
    if rc == 2:  # argparse: usage, then one error line
        assert "error:" in lines[-1], err
        return
    assert rc == 1, err
    assert "error:" in lines[0], err
    assert len(lines) <= 3 and len(err) < 1200, err  # the message, and for a program the excerpt and caret


CASES = {
    "bad paths": [
        ("check nope.cram", "cannot read nope.cram"),
        ("run prog.cram --input nope.npz", "nope.npz: no such file"),
        ("run prog.cram --labels nope.npy", "nope.npy: no such file"),
        ("run prog.cram --output nodir/out.npz", "directory nodir does not exist"),
        ("run prog.cram --output ''", "an output path is empty"),
        ("compile nope.onnx -o p.cram", "nope.onnx: no such model file"),
        ("compile model.onnx -o nodir/p.cram", "directory nodir does not exist"),
        ("isa-doc -o nodir/isa.md", "directory nodir does not exist"),
    ],
    "same-file outputs": [
        ("compile model.onnx -o model.onnx", "-o model.onnx is the same file as the model model.onnx"),
        ("compile link.onnx -o model.onnx", "is the same file as the model link.onnx"),
        ("compile model.onnx -o link.onnx", "-o link.onnx is the same file as the model model.onnx"),
        ("compile model.onnx -o calib.npz --calibration calib.npz", "is the same file as --calibration calib.npz"),
        ("run prog.cram --output prog.cram", "--output prog.cram is the same file as the program prog.cram"),
        ("run hard.cram --output prog.cram", "is the same file as the program hard.cram"),
        ("run prog.cram --input x.npz --output x.npz", "--output x.npz is the same file as --input x.npz"),
        ("run prog.cram --input x.npz --report x.npz", "--report x.npz is the same file as --input x.npz"),
        ("run prog.cram --labels lab.npy --report lab.npy", "is the same file as --labels lab.npy"),
        ("run prog.cram --output o.npz --report o.npz", "--output and --report name the same file"),
        ("stats prog.cram --json prog.cram", "--json prog.cram is the same file as the program"),
        ("sweep model.onnx --data calib.npz --labels lab64.npy -o calib.npz", "is the same file as --data"),
        ("sweep model.onnx --data calib.npz --labels lab64.npy --plot model.onnx", "is the same file as the model"),
        (
            "finetune model.onnx --data calib.npz --labels lab64.npy --gate-error 1e-3 -o link.onnx",
            "-o link.onnx is the same file as the model model.onnx",
        ),
    ],
    "directories": [
        ("compile model.onnx -o dir", "cannot write dir: it is a directory"),
        ("run prog.cram --output dir", "cannot write dir: it is a directory"),
        ("run prog.cram --report dir", "cannot write dir: it is a directory"),
        ("stats prog.cram --json dir", "cannot write dir: it is a directory"),
        ("isa-doc -o dir", "cannot write dir: it is a directory"),
        ("run prog.cram --input dir", "dir: is a directory"),
        ("run prog.cram --labels dir", "dir: is a directory"),
        ("compile model.onnx -o p.cram --calibration dir", "dir: is a directory"),
        ("compile dir -o p.cram", "dir: is a directory"),
        ("check dir", "cannot read dir"),
        ("fmt -i dir", "cannot read dir"),
    ],
    "non-regular outputs": [
        ("run prog.cram --output /dev/full", "cannot write /dev/full: No space left on device"),
        ("isa-doc -o /dev/full", "cannot write /dev/full: No space left on device"),
    ],
    "wrong file types": [
        ("run prog.cram --input x.npy", "x.npy: expected an .npz archive of named arrays"),
        ("compile model.onnx -o p.cram --calibration x.npy", "x.npy: expected an .npz archive of named arrays"),
        ("run prog.cram --labels x.npz", "x.npz: expected a single .npy array"),
        ("run prog.cram --input text.txt", "text.txt: not a readable .npz file"),
        ("run model.onnx", "model.onnx is not UTF-8 text"),
        ("compile prog.cram -o p.cram", "prog.cram: not a valid ONNX model"),
        ("run prog.cram --error-model calib.npz", "calib.npz"),
    ],
    "empty and zero-sample data": [
        ("run prog.cram --input zero.npz", "zero.npz: array 'x' has 0 samples"),
        ("compile model.onnx -o p.cram --calibration zero_calib.npz", "array 'input' has 0 samples"),
        ("run prog.cram --input scalar.npz", "scalar.npz: array 'x' is a scalar"),
        ("run prog.cram --input empty.npz", "empty.npz: not a readable .npz file"),
        ("run empty.cram", "missing .machine header"),
    ],
    "absurd numeric flags": [
        ("run prog.cram --max-memory inf", "--max-memory must be a positive, finite number of GiB"),
        ("run prog.cram --max-memory nan", "--max-memory must be a positive, finite number of GiB"),
        ("run prog.cram --max-memory -1", "--max-memory must be a positive, finite number of GiB"),
        ("run prog.cram --max-memory 0", "--max-memory must be a positive, finite number of GiB"),
        ("run prog.cram --max-memory 1e300", "--max-memory 1e+300 GiB is more than 2^40 GiB"),
        ("run prog.cram --max-work nan", "--max-work must be a positive number"),
        ("run prog.cram --max-work -5", "--max-work must be a positive number"),
        ("run prog.cram --max-work 0", "--max-work must be a positive number"),
        ("run prog.cram --max-work 1", "more than the limit of 1; to run it anyway, pass --max-work"),
        ("run prog.cram --max-work x", "argument --max-work: invalid float value"),
        ("run prog.cram --gate-error inf", "a probability must be between 0 and 1"),
        ("run prog.cram --gate-error -1", "a probability must be between 0 and 1"),
        ("run prog.cram --gate-error nan", "a probability must be between 0 and 1"),
        ("run prog.cram --seed -1", "--seed must be non-negative"),
        ("run prog.cram --seed 1e3", "argument --seed: invalid int value"),
        ("compile model.onnx -o p.cram --arrays 0", "--arrays must be at least 1"),
        ("compile model.onnx -o p.cram --rows -1", "--rows must be at least 1"),
    ],
    "deep nesting": [
        ("check deep.cram", f"deep.cram:{5 + MAX_NESTING}:3: error: blocks nest more than {MAX_NESTING} deep"),
        ("fmt deep.cram", "blocks nest more than"),
        ("fmt -i deep.cram", "blocks nest more than"),
        ("stats deep.cram", "blocks nest more than"),
        ("run deep.cram --input x1.npz", "blocks nest more than"),
        ("check chain.cram", "loops and micro-program calls nest more than 64 deep"),
        ("check doubling.cram", "the program links to more than"),
    ],
    "decompression bombs": [
        ("check bomb.cram", "data $w: 80000000000 bytes as declared, more than the limit of 512 MiB"),
        ("run bomb.cram", "more than the limit of 512 MiB"),
    ],
    "huge repeat counts": [
        ("run loop1e9.cram --input x1.npz", "this run needs an estimated 1.31e+14 units of work"),
        ("run loop1e30.cram --input x1.npz", "more than the limit of 5e+13; to run it anyway, pass --max-work 1.32e35"),
        ("check digits.cram", "integer with more than"),
        ("run digits.cram --input x1.npz", "integer with more than"),
    ],
}


@pytest.mark.parametrize(
    ("args", "message"),
    [case for cases in CASES.values() for case in cases],
    ids=[f"{group}: {args}" for group, cases in CASES.items() for args, _ in cases],
)
def test_mistakes_are_one_line_errors_that_touch_nothing(
    scratch: Path, capsys: pytest.CaptureFixture[str], args: str, message: str
) -> None:
    before = _snapshot(scratch)
    rc, _, err = _cramc(capsys, shlex.split(args))
    _assert_clean_error(rc, err)
    assert message in err, err
    assert _snapshot(scratch) == before  # inputs byte-identical, nothing written, no temporary file


def test_the_table_covers_every_class() -> None:
    assert len(CASES) == 10 and all(len(c) >= 2 for c in CASES.values())


NUMBERS = st.one_of(
    st.sampled_from(
        ["inf", "-inf", "nan", "-nan", "0", "-0", "-1", "1e308", "1e-308", "1e400", "1" + "0" * 40, "0x10", "1_0", ""]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--max-memory", "--max-work", "--gate-error", "--seed"]), value=NUMBERS)
def test_any_number_for_a_numeric_flag_runs_or_is_a_clean_error(
    scratch: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    before = _snapshot(scratch)
    rc, out, err = _cramc(capsys, ["run", "prog.cram", f"{flag}={value}"])
    if rc == 0:
        assert "ran 2 sample(s)" in out
    else:
        _assert_clean_error(rc, err)
    assert _snapshot(scratch) == before


# ------------------------------------------------------------------ outputs that must work
def test_device_outputs_are_written_in_place(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _cramc(capsys, ["run", "prog.cram", "--output", "/dev/null", "--report", "/dev/null"])
    assert rc == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # still the device, not a file renamed over it


def test_a_fifo_output_is_streamed_not_replaced(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = scratch / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    rc, _, err = _cramc(capsys, ["run", "prog.cram", "--output", "pipe"])
    reader.join(timeout=60)
    assert rc == 0, err
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    (scratch / "got.npz").write_bytes(got[0])
    with np.load(scratch / "got.npz") as z:
        assert z["y"].shape[0] == 2


def test_a_symlinked_output_replaces_its_target_and_keeps_the_link(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (scratch / "real.json").write_text("{}", encoding="utf-8")
    os.chmod(scratch / "real.json", 0o640)
    (scratch / "out.json").symlink_to("real.json")
    rc, _, err = _cramc(capsys, ["run", "prog.cram", "--report", "out.json"])
    assert rc == 0, err
    assert (scratch / "out.json").is_symlink()
    assert '"samples": 2' in (scratch / "real.json").read_text(encoding="utf-8")
    assert stat.S_IMODE((scratch / "real.json").stat().st_mode) == 0o640  # the replaced file's permissions
    assert not [p for p in scratch.iterdir() if p.name.endswith(".tmp")]


def test_fmt_in_place_is_the_one_command_that_rewrites_its_input(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (scratch / "messy.cram").write_text(
        ".machine  arrays=1 rows=8 cols=2\n.main {\nfill @0 c0,1\n}\n", encoding="utf-8"
    )
    rc, _, err = _cramc(capsys, ["fmt", "-i", "messy.cram"])
    assert rc == 0, err
    assert (scratch / "messy.cram").read_text(
        encoding="utf-8"
    ) == ".machine arrays=1 rows=8 cols=2\n.main {\n  fill @0 c0, 1\n}\n"


def test_free_space_is_checked_before_the_run(
    scratch: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cramc.sim.interp

    def never(*a: object, **k: object) -> None:
        raise AssertionError("the simulation ran although the output cannot be written")

    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 100))
    monkeypatch.setattr(cramc.sim.interp, "run", never)
    before = _snapshot(scratch)
    rc, _, err = _cramc(capsys, ["run", "prog.cram", "--output", "out.npz"])
    _assert_clean_error(rc, err)
    assert "cannot write out.npz: it needs about 16.0 KiB and its file system has 100 bytes free" in err
    assert _snapshot(scratch) == before


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from cramc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "prog.cram", "--output", "out.npz"], "cannot write out.npz: File too large; nothing was written"),
        (["run", "prog.cram", "--report", "r.json", "--output", "o.npz"], "cannot write o.npz: File too large"),
        # the frontend's scratch copies of the model are the first to fail here
        (["compile", "model.onnx", "-o", "p.cram", "--calibration", "calib.npz"], "error: File too large writing"),
    ],
)
def test_a_write_that_fails_midway_leaves_nothing_behind(scratch: Path, args: list[str], message: str) -> None:
    """Real failing writes (a file size limit makes write(2) fail as a full disk does), in a subprocess."""
    before = _snapshot(scratch)
    done = subprocess.run([sys.executable, "-c", FULL_DISK, *args], capture_output=True, text=True, timeout=300)
    _assert_clean_error(done.returncode, done.stderr)
    assert message in done.stderr, done.stderr
    assert _snapshot(scratch) == before


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")

    def half_then_full(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("half of the new conte")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(fileio.UserError, match="cannot write .*out.txt: No space left on device; nothing was written"):
        fileio.atomic_write(str(target), half_then_full)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
