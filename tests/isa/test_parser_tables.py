"""The parser's start-up path: the shipped LALR tables (cramc/isa/_cram_tables.py) and the callbacks-in-the-parser
fast path (_FastAst), which must build exactly what the parse tree walked by _ToAst builds, positions included."""

from __future__ import annotations

import base64
import dataclasses
import marshal
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cramtest import all_cram_files
from lark import Lark

from cramc.errors import Loc, UserError
from cramc.isa import _cram_tables, ast, gen_tables
from cramc.isa import parser as P


def _diff(a: object, b: object, path: str = "") -> Iterator[str]:
    """Where a and b differ, locations (compare=False in the dataclasses) and array dtypes included."""
    if type(a) is not type(b):
        yield f"{path}: {type(a).__name__} != {type(b).__name__}"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            yield f"{path}: arrays differ"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            yield from _diff(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list))
        if len(a) != len(b):
            yield f"{path}: {len(a)} items != {len(b)}"
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    elif a != b:
        yield f"{path}: {a!r} != {b!r}"


def _reference(text: str, file: str) -> ast.Program:
    """What the parser built before the fast path: a parse tree with positions, walked by _ToAst."""
    source = text if text.endswith("\n") else text + "\n"
    return P._assemble(P._parse_tree(source, file), file, source)


@pytest.fixture(scope="module")
def grammar_built() -> Lark:
    return Lark(P.grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def test_the_shipped_tables_are_those_of_the_grammar_and_lark_installed() -> None:
    # fails after an edit of isa/cram.lark or cram_fast.lark, or a lark upgrade: run `python -m cramc.isa.gen_tables`
    assert _cram_tables.KEY == P.tables_key(P.grammar_text())
    assert _cram_tables.FAST_KEY == P.tables_key(P.grammar_text(fast=True))
    for fast, text in ((False, _cram_tables.TABLES), (True, _cram_tables.FAST_TABLES)):
        assert P._tables(fast)["data"] == marshal.loads(base64.b64decode(text))["data"]  # what the parser uses


def test_the_key_changes_with_the_grammar_and_the_lark_version(monkeypatch: pytest.MonkeyPatch) -> None:
    g = P.grammar_text()
    assert P.tables_key(g) != P.tables_key(g + "\n// edited\n")
    key = P.tables_key(g)
    monkeypatch.setattr(P.lark, "__version__", "0.0.0")
    assert P.tables_key(g) != key


def test_the_generator_writes_the_module_as_shipped_but_for_the_tables() -> None:
    ns: dict[str, object] = {}
    exec(compile(gen_tables.module_text(), "<generated>", "exec"), ns)  # noqa: S102 - our own generated module
    assert (ns["KEY"], ns["FAST_KEY"]) == (_cram_tables.KEY, _cram_tables.FAST_KEY)
    for name in ("TABLES", "FAST_TABLES"):
        assert {"data", "memo"} <= marshal.loads(base64.b64decode(str(ns[name]))).keys()


@pytest.mark.parametrize(
    "tables",
    [
        None,
        42,
        "!!! not base64 !!!",
        base64.b64encode(b"\x00garbage").decode(),
        base64.b64encode(marshal.dumps([1])).decode(),
    ],
    ids=["missing", "not text", "not base64", "not marshal", "not the tables"],
)
@pytest.mark.parametrize("key", ["current", "stale"])
@pytest.mark.parametrize("fast", [False, True], ids=["tree", "fast"])
def test_stale_or_broken_tables_are_ignored_and_the_grammar_built(
    tables: object, key: str, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "FAST_" if fast else ""
    if key == "stale":
        monkeypatch.setattr(_cram_tables, prefix + "KEY", "sha256:0 lark:0")
        tables = getattr(_cram_tables, prefix + "TABLES")  # good tables under a stale key are not used either
    if tables is None:
        monkeypatch.delattr(_cram_tables, prefix + "TABLES")
    else:
        monkeypatch.setattr(_cram_tables, prefix + "TABLES", tables)
    built: list[str] = []
    real_build = P.build_tables
    monkeypatch.setattr(P, "build_tables", lambda g: built.append(g) or real_build(g))
    for f in (P._tables, P._lark, P._fast):
        f.cache_clear()
    try:
        good = ".machine arrays=1 rows=8 cols=4\n.main {\n  fill @0 c0, 1 bits=1\n}\n"
        bad = good.replace("c0, 1", "c0 1")
        assert not list(_diff(P.parse(good, "t.cram"), _reference(good, "t.cram")))
        with pytest.raises(UserError) as e:
            P.parse(bad, "t.cram")  # the fast parse fails, the tree parse says why
        assert e.value.message.startswith("unexpected '1'") and e.value.loc == Loc("t.cram", 3, 14)
        assert built == [P.grammar_text(fast)]  # the broken entry only, built from its grammar
    finally:
        for f in (P._tables, P._lark, P._fast):
            f.cache_clear()


FILES = all_cram_files()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_fast_path_builds_what_the_parse_tree_builds(path: Path, grammar_built: Lark, monkeypatch) -> None:
    text = path.read_text(encoding="utf-8")
    monkeypatch.setattr(P, "_lark", lambda: grammar_built)  # the reference: built from the grammar, as before
    try:
        want = _reference(text, path.name)
    except UserError as e:  # a golden error case: the fast path reports it the same way
        with pytest.raises(UserError) as got:
            P.parse(text, path.name)
        assert (got.value.message, got.value.loc) == (e.message, e.loc)
        return
    assert not list(_diff(P.parse(text, path.name), want))
    source = text if text.endswith("\n") else text + "\n"
    assert P._fast()[1].lines == source.count("\n")  # the fast parse took the whole program (no second parse)


HEAD = ".machine arrays=2 rows=8 cols=4\n.input x : u8[1,8]\n"


@pytest.mark.parametrize(
    "line",
    [
        "fill @0 c0, 1 bits=8 rows=0:8",
        "fill @0 c0, 1 bits = 8 rows= 0 : 8",  # blanks: cram.lark's tokens
        "fill @0 c5=3",  # a column, then '='
        "fill @0 acc1=3",
        "fill @0 acc=3",
        "fill @0 c0, 1 c5=3",  # after the operands a name
        "fill @0 c0, 1 inf=3",
        "fill @0 c0, 1 nancy=3",
        "fill @0 c0, 1 info=3",
        "fill @0 c0, 1 bits=8x",
        "fill @0 c0, 1 bits=8.5 rows=0:8.",
        "fill @0 c0, 1 bits=1e3 rows=0e1:3",
        "fill @0 c0, 1 rows=3:2",
        "fill @0 c0, 1 rows=0:3:4",
        "fill @0 c0, 1 bits=" + "9" * 18 + " rows=0:" + "9" * 19,
        "fill @0 c0, 1 bits=" + "1" * 4400,
        "fill @0 c0, 1 a.b_c=01 _x=0:00",
        "fill @0 c0, 1 v=[1, 2.5, -3e2, +inf, nan] w=[] u=[ ] t=[1,2] s=[1 , 2] r=[1, 2, ] q=[c1] p=[1, 2",
        "fill @0 c0, 1 v=[1, 2]x",
        "fill @0 x=c1 y=acc2 z=acc2:4 w=c3: v=c3.5 u=acc1x t=c1_ s=cc1 r=acc q=c" + "1" * 19,
        "fill @0 c1=c2",
        "fill @0 acc1=acc2",
        "fill @0 x=c1, 1",
        "fill @0 inf=c1 nan=acc1",
        "fill @0 c0, 1 v=[1.e5, .5, -.5e-3, 0x1]",
    ],
)
def test_the_fast_shortcuts_read_what_cram_lark_reads(line: str) -> None:
    for data in ("[1, 2, 3, 4, 5, 6, 7, 8]", "[1,2, 3 , 4, 5, 6, 7, 8 ]", "[]", "[1, 2, 3, 4, 5, 6, 7, 300]"):
        text = f"{HEAD}.data $d : u8[8] = {data}\n.main {{\n  {line}\n}}\n"
        try:
            want = _reference(text, "t.cram")
        except UserError as e:
            with pytest.raises(UserError) as got:
                P.parse(text, "t.cram")
            assert (got.value.message, got.value.loc) == (e.message, e.loc)
            continue
        assert not list(_diff(P.parse(text, "t.cram"), want))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n   \n\t\n",
        "; only a comment",
        "   ; an indented comment\r\n\t.machine arrays=1 rows=8 cols=4   ; crlf and a tab\r\n",
        ".machine arrays=1 rows=8 cols=4\n  \t.main {   \n\t  \n    fill @0 c0, 1 ; x\n \t} ; closed\n\n",
        ".machine arrays=1 rows=8 cols=4\n.main {\n  repeat i 2 {\n  not @0 c1, c0\n   }\n}",
    ],
    ids=["empty", "blanks", "comment", "crlf", "indented", "no final newline"],
)
def test_lines_are_placed_as_the_parse_tree_places_them(text: str) -> None:
    assert not list(_diff(P.parse(text, "t.cram"), _reference(text, "t.cram")))
    first = P.parse(text, "t.cram").items
    if first:
        assert isinstance(first[0].loc, Loc)


@pytest.mark.parametrize(
    "text",
    [
        ".machine arrays=1 rows=8 cols=4\n.main {\n  fill @0 c0, 1 2\n}\n",  # a parse error
        ".machine arrays=1 rows=8 cols=4\n.main {\n  fill @0 c0, acc3:2\n}\n",  # a callback's error
        ".machine arrays=1 rows=8 cols=4\n.main {\n  repeat i 1" + "0" * 5000 + " {\n  }\n}\n",  # int digits
        ".machine arrays=1 rows=8 cols=4\n.data $w : u8[2] = [1, 2, 3]\n",  # data of the wrong size
    ],
    ids=["syntax", "callback", "digits", "data"],
)
def test_errors_after_the_fast_path_are_those_of_the_parse_tree(text: str) -> None:
    with pytest.raises(UserError) as want:
        _reference(text, "t.cram")
    with pytest.raises(UserError) as got:
        P.parse(text, "t.cram")
    assert (got.value.message, got.value.loc) == (want.value.message, want.value.loc)
    _, callbacks = P._fast()
    assert callbacks.file == "t.cram"  # the fast path ran first (and failed); the next parse resets it
    P.parse(".machine arrays=1 rows=8 cols=4\n", "u.cram")
    assert callbacks.file == "u.cram" and callbacks.data_bytes == 0
