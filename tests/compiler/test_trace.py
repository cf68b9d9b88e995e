"""`cramc run --trace` on the compiled digits CNN: per-layer comparison with onnxruntime's tensors.

The unedited program diverges nowhere.  Editing ONE gate of the MAC micro-program (an AND that
forms a partial-product bit becomes an OR) breaks every MVM that calls it, and the trace must name
the first conv layer's output as the first divergence and exit non-zero.

Which gate matters: the trace allows one quantisation step per tensor (onnxruntime and cramc may
round a tie differently), and the lowest partial product (weight bit 0 AND input bit 0,
significance 2^0) changes a 3x3x1 accumulator by at most 9, well under one step of conv1's
requantisation (x 0.002), so it only moves a few values by one step per layer: the trace then
shows conv1's output as the first tensor that *differs* (while `cramc run` already fails
validation on the outputs, where the steps have added up).  The sign-bit AND (2^14) diverges.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from compilertest import DIGITS, load_npz, lower


def _table(out: str) -> list[tuple[str, int, str]]:
    """(tensor, differing elements, verdict) for each row of the trace table."""
    rows = []
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("tensor "))
    for line in lines[start + 1 :]:
        parts = line.split()
        if len(parts) != 5 or not parts[1].isdigit():
            break
        rows.append((parts[0], int(parts[2]), parts[4]))
    return rows


@pytest.fixture(scope="module")
def first_conv_output() -> str:
    """The IR value that is the first Conv node's (requantised) output."""
    d = DIGITS["cnn"]
    conv = next(n.name for n in onnx.load(str(d.model)).graph.node if n.op_type == "Conv")
    _, g = lower(d.model, load_npz(d.calib))
    return [op for op in g.ops if op.origin == conv][-1].out


def _edited(src: Path, dst: Path, gate: str) -> Path:
    text = src.read_text(encoding="utf-8")
    micro = text[text.index(".micro mac_") :]
    micro = micro[: micro.index("\n}\n")]
    assert f"\n  and {gate}\n" in micro
    assert text.count(f"\n  and {gate}\n") == 1  # one micro-program: the edit touches one gate
    dst.write_text(text.replace(f"\n  and {gate}\n", f"\n  or {gate}\n", 1), encoding="utf-8")
    return dst


def test_trace_clean_program(cli, digits_programs: dict[str, Path], first_conv_output: str) -> None:
    res = cli("run", str(digits_programs["cnn"]), "--trace")
    assert res.rc == 0, res.err
    assert "no layer diverges" in res.out
    rows = _table(res.out)
    assert first_conv_output in [r[0] for r in rows]
    assert all(verdict == "ok" and differ == 0 for _, differ, verdict in rows)


def test_trace_names_the_first_diverging_layer(
    cli, digits_programs: dict[str, Path], first_conv_output: str, tmp_path: Path
) -> None:
    # the last term, in the second scratch column (double-buffered: odd terms use t+1)
    bad = _edited(digits_programs["cnn"], tmp_path / "bad.cram", "t+1, w+7, x+7")
    res = cli("run", str(bad), "--trace")
    assert res.rc != 0
    assert "Traceback" not in res.err
    assert f"first divergence: %{first_conv_output}" in res.out.splitlines()
    rows = _table(res.out)
    names = [r[0] for r in rows]
    i = names.index(first_conv_output)
    assert all(verdict == "ok" for _, _, verdict in rows[:i])
    assert rows[i][2] == "DIVERGES"


def test_lowest_gate_edit_shows_first_at_conv1(
    cli, digits_programs: dict[str, Path], first_conv_output: str, tmp_path: Path
) -> None:
    bad = _edited(digits_programs["cnn"], tmp_path / "bad.cram", "t, w, x")
    # validation on the outputs catches it ...
    res = cli("run", str(bad))
    assert res.rc == 1 and "MISMATCH" in res.out
    # ... and the trace shows where the values start to differ
    rows = _table(cli("run", str(bad), "--trace").out)
    first = next(name for name, differ, _ in rows if differ > 0)
    assert first == first_conv_output
