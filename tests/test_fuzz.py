"""Mutated example programs never crash cramc: they run, or fail with a located UserError.

Hypothesis applies one to three random edits to an example (delete, duplicate
or swap lines, swap tokens, change a number, a column, an opcode, an
attribute name, insert a stray character, truncate) and pushes the result
through parse -> print -> parse -> verify -> run.  Anything but success or a
UserError that names file, line and column is a bug.  The printer must also be
total and idempotent on whatever parses.  Examples are derandomised (fixed
seed) and bounded so the test stays within a few seconds.
"""

from __future__ import annotations

import re

from cramtest import example_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cramc.errors import UserError
from cramc.isa.opcodes import OPCODES
from cramc.isa.parser import parse
from cramc.isa.printer import print_program
from cramc.isa.verifier import verify
from cramc.sim.interp import run

SOURCES = {p.name: p.read_text(encoding="utf-8") for p in example_paths()}
INTERESTING = "0 1 2 3 7 8 9 15 16 63 64 65 255 256 257 1000 65536 4194305 99999999999999999999 -1 0.5 1e3 nan inf"
INTERESTING_NUMBERS = INTERESTING.split()
MNEMONICS = sorted(OPCODES) + ["xor", "fooz", "call", "repeat", ".main", ".micro"]
STRAY = list("{}()[]:,=;%$@+-.\"'!#\\ \t\x00é") + ["\n", "c", "acc", 'b64"', 'b64z"AA=="']
ATTR_NAMES = "rows bits signed fields a t cin scale arrays cols accs x y tol zz".split()
TOKEN = re.compile(r"\S+")


def _mutate(text: str, kind: str, data: st.DataObject) -> str:
    lines = text.split("\n")
    n = len(lines)
    i = data.draw(st.integers(0, n - 1), label="line")
    line = lines[i]
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, line)
    elif kind == "swap_lines":
        j = data.draw(st.integers(0, n - 1), label="other line")
        lines[i], lines[j] = lines[j], line
    elif kind == "truncate":
        lines = lines[:i]
    elif kind == "swap_tokens":
        toks = list(TOKEN.finditer(line))
        if len(toks) >= 2:
            k = data.draw(st.integers(0, len(toks) - 2), label="token")
            a, b = toks[k], toks[k + 1]
            lines[i] = line[: a.start()] + b.group() + line[a.end() : b.start()] + a.group() + line[b.end() :]
    elif kind in ("number", "column", "opcode", "attr", "stray"):
        pattern = {
            "number": r"(?<![A-Za-z_$%])\d+",
            "column": r"\bc\d+\b",
            "opcode": r"^\s*[a-z][a-z0-9]*",
            "attr": r"\b[a-z]+(?==)",
        }.get(kind)
        if kind == "stray":
            pos = data.draw(st.integers(0, len(line)), label="position")
            lines[i] = line[:pos] + data.draw(st.sampled_from(STRAY), label="char") + line[pos:]
        else:
            hits = list(re.finditer(pattern, line))
            if hits:
                h = hits[data.draw(st.integers(0, len(hits) - 1), label="hit")]
                if kind == "number":
                    rep = data.draw(st.sampled_from(INTERESTING_NUMBERS), label="number")
                elif kind == "column":
                    rep = f"c{data.draw(st.integers(0, 300), label='col')}"
                elif kind == "opcode":
                    rep = h.group()[: len(h.group()) - len(h.group().lstrip())] + data.draw(
                        st.sampled_from(MNEMONICS), label="opcode"
                    )
                else:
                    rep = data.draw(st.sampled_from(ATTR_NAMES), label="attr")
                lines[i] = line[: h.start()] + rep + line[h.end() :]
    return "\n".join(lines)


KINDS = ["delete", "duplicate", "swap_lines", "truncate", "swap_tokens", "number", "column", "opcode", "attr", "stray"]


def _check(text: str) -> str:
    """Parse, print, verify and run; return what happened ('ok' or 'error')."""
    try:
        prog = parse(text, "mutant.cram")
        printed = print_program(prog)
        assert print_program(parse(printed, "mutant.cram")) == printed  # the printer is idempotent
        linked = verify(prog)
        if linked.expect is not None:
            run(linked, dict(linked.expect.inputs), max_memory=1 << 28)
    except UserError as e:
        assert e.loc is not None, f"unlocated error: {e.message}"
        assert e.loc.file == "mutant.cram" and e.loc.line >= 1 and e.loc.col >= 1, e.render()
        e.render()  # rendering never fails
        return "error"
    return "ok"


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SOURCES)),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=3),
    data=st.data(),
)
def test_mutated_examples_fail_cleanly(name: str, kinds: list[str], data: st.DataObject) -> None:
    text = SOURCES[name]
    for kind in kinds:
        text = _mutate(text, kind, data)
    _check(text)


def test_unmutated_examples_run() -> None:
    assert all(_check(t) == "ok" for t in SOURCES.values())
