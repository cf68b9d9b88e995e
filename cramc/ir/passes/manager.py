"""Run passes in order, verifying the IR after each and optionally printing it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol, TextIO

from cramc.ir.graph import Graph
from cramc.ir.semantics import verify_graph
from cramc.ir.text import print_graph


class Pass(Protocol):
    name: str

    def run(self, g: Graph) -> Graph: ...


def run_passes(
    g: Graph,
    passes: Sequence[Pass],
    print_after_all: bool = False,
    out: TextIO | None = None,
    verify: bool = True,
) -> Graph:
    out = sys.stderr if out is None else out  # resolved per call, so redirected stderr is honoured
    if print_after_all:
        out.write("; IR after import\n" + _brief(print_graph(g)))
    for p in passes:
        g = p.run(g)
        if verify:
            verify_graph(g)
        if print_after_all:
            out.write(f"; IR after {p.name}\n" + _brief(print_graph(g)))
    return g


def _brief(text: str) -> str:
    """Constants print as their type only: the payloads would drown the operations."""
    lines = []
    for line in text.splitlines():
        if line.startswith("const "):
            head, _, payload = line.partition(" = ")
            if len(payload) > 80:
                line = f"{head} = <{len(payload)} chars>"
        lines.append(line)
    return "\n".join(lines) + "\n"
