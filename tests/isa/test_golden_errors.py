"""File-based golden diagnostics: tests/golden/errors/NAME.cram + NAME.expected.

Each .cram holds one mistake; its .expected holds the first line of the
diagnostic that `cramc check NAME.cram` must print (``file:line:col: error:
message``).  The test runs the CLI in-process from the golden folder, so the
file name in the diagnostic is the bare NAME.cram.  Add a case by adding the
two files; regenerate an .expected only after reading the new message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cramtest import GOLDEN_ERRORS

from cramc.errors import excerpt

CASES = sorted(GOLDEN_ERRORS.glob("*.cram"))


def test_cases_and_expectations_pair_up() -> None:
    crams = {p.stem for p in CASES}
    expected = {p.stem for p in GOLDEN_ERRORS.glob("*.expected")}
    assert crams == expected
    assert len(crams) >= 30


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_golden_diagnostic(case: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    want = case.with_suffix(".expected").read_text(encoding="utf-8").strip()
    monkeypatch.chdir(GOLDEN_ERRORS)
    res = cli("check", case.name)
    assert res.rc == 1
    assert res.out == ""
    assert "Traceback" not in res.err
    lines = res.err.splitlines()
    assert lines[0] == want
    # the source line and a caret under the reported column follow
    _, line, col = lines[0].split(": error: ")[0].rsplit(":", 2)
    src = case.read_text(encoding="utf-8").splitlines()[int(line) - 1]
    shown, at = excerpt(src, int(col) - 1)  # the line itself, or 100 characters of it around the column
    assert lines[1] == "  " + shown
    assert lines[2] == "  " + " " * at + "^"


def test_diagnostic_names_the_path_given(cli, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    res = cli("check", "tests/golden/errors/column_range.cram")
    assert res.rc == 1
    assert res.err.startswith("tests/golden/errors/column_range.cram:5:10: error: column 8 outside the array")
