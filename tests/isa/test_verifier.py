"""Verifier details the golden diagnostics do not show: allocation limits, linking, error rendering."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from cramtest import example, link, link_file

from cramc.errors import Loc, UserError
from cramc.isa.parser import parse
from cramc.isa.verifier import MAX_ARRAYS, verify


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (".machine arrays=1000000000000 rows=256 cols=256", "arrays=1000000000000 exceeds the simulator limit"),
        (".machine arrays=4 rows=1000000000000 cols=256", "rows=1000000000000 exceeds the simulator limit"),
        (".machine arrays=4 rows=256 cols=1000000000000", "cols=1000000000000 exceeds the simulator limit"),
        (".machine arrays=4 rows=256 cols=256 accs=1000000000000", "accs=1000000000000 exceeds the simulator limit"),
        (f".machine arrays={MAX_ARRAYS} rows=65536 cols=65536", "exceeds the simulator limit of"),
    ],
)
def test_huge_headers_fail_before_allocating(header: str, message: str) -> None:
    text = f"{header}\n.main {{\n  fill @0 c0, 1\n}}\n"
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as ei:
            link(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message in ei.value.message
    assert ei.value.loc is not None and ei.value.loc.line == 1
    assert peak < 16 << 20  # nothing chip-sized was allocated


def test_legal_huge_chip_verifies_in_little_memory() -> None:
    """4M arrays x 1024 columns is legal; checking it must not touch 4 GiB of bookkeeping.

    Measured with tracemalloc (numpy reports its buffers to it) in a fresh interpreter: ru_maxrss
    would be inherited across exec from the forking pytest process.
    """
    script = textwrap.dedent(
        f"""
        import tracemalloc
        from cramc.isa.parser import parse
        from cramc.isa.verifier import verify
        text = ".machine arrays={MAX_ARRAYS} rows=1 cols=1024\\n.main {{\\n  fill @0:{MAX_ARRAYS} c0, 1\\n"
        text += "  not @0:{MAX_ARRAYS} c1, c0\\n  not @5 c2, c1\\n}}\\n"
        tracemalloc.start()
        verify(parse(text))
        print(tracemalloc.get_traced_memory()[1])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1])
    assert peak < 256 << 20, f"verification peaked at {peak / 2**20:.0f} MiB"


def test_run_refuses_a_chip_beyond_the_memory_budget(cli, tmp_path) -> None:
    p = tmp_path / "big.cram"
    # the simulator allocates what a program uses: here 2**19 arrays x 1024 columns, 4 GiB per sample
    text = f".machine arrays={MAX_ARRAYS} rows=64 cols=1024\n.main {{\n  fill @0:{1 << 19} c1023, 1\n}}\n"
    p.write_text(text, encoding="utf-8")
    assert cli("check", str(p)).rc == 0
    inp = tmp_path / "none.npz"
    np.savez(inp)  # the program has no inputs
    res = cli("run", str(p), "--input", str(inp))
    assert res.rc == 1 and "Traceback" not in res.err
    assert "more than the memory budget" in res.err


def test_calls_are_inlined() -> None:
    linked = link_file(example("ripple_adder8.cram"))
    names = [n.op.mnemonic for n in linked.main]
    assert names == ["wr", "fill", *(["maj3", "not", "not", "maj5"] * 8), "rd"]
    # bit 5's adder: a=c5 b=c13 cin=c21 s=c29 cout=c22 t=c33 u=c34
    maj3, inv, inv2, maj5 = linked.main[2 + 4 * 5 : 2 + 4 * 6]
    assert maj3.operands == (22, 5, 13, 21)
    assert inv.operands == (33, 22) and inv2.operands == (34, 22)
    assert maj5.operands == (29, 5, 13, 21, 33, 34)
    assert maj3.arrays == (0, 4) and maj3.rows is None
    assert len(maj3.site) == 1 and maj3.loc.line < maj3.site[0].line  # body line, then the call


def test_error_in_a_micro_names_the_call_sites() -> None:
    text = (
        ".machine arrays=1 rows=8 cols=16\n"
        ".micro inner(col a) {\n"
        "  not a+4, a\n"
        "}\n"
        ".micro outer(col a) {\n"
        "  call inner a=a+1\n"
        "}\n"
        ".main {\n"
        "  fill @0 c0, 1\n"
        "  fill @0 c1, 1\n"
        "  fill @0 c3, 1\n"
        "  call @0 outer a=c0\n"
        "  call @0 outer a=c3\n"
        "}\n"
    )
    with pytest.raises(UserError) as ei:
        verify(parse(text, "m.cram"))
    e = ei.value
    # the second call binds inner's a to c4, which nothing wrote
    assert e.loc == Loc("m.cram", 3, 12)
    assert e.message == (
        "column c4 of array 0 is read before anything is written to it (in a micro-program called at line 13, line 6)"
    )


def test_rows_inherited_from_the_call() -> None:
    text = (
        ".machine arrays=1 rows=8 cols=4\n"
        ".micro m(col a) {\n"
        "  not a+1, a\n"
        "  not a+2, a rows=0:8\n"
        "}\n"
        ".main {\n"
        "  fill @0 c0, 1\n"
        "  call @0 m a=c0 rows=2:6\n"
        "}\n"
    )
    first, second = link(text).main[1:]
    assert first.rows == (2, 6)
    assert second.rows == (0, 8)


def test_user_error_rendering() -> None:
    e = UserError("bad thing", Loc("f.cram", 2, 5), "line one\nline two\n")
    assert e.render() == "f.cram:2:5: error: bad thing\n  line two\n      ^"
    assert str(e) == e.render()
    assert UserError("no place").render() == "error: no place"
    assert UserError("past the end", Loc("f.cram", 9, 1), "x\n").render() == "f.cram:9:1: error: past the end"
