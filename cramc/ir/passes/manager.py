"""Run passes in order, checking each pass's contract and verifying the IR after each.

A pass declares
- ``requires``: properties of the graph it needs (checked before it runs),
- ``ensures``: properties it establishes (checked after it ran),
- ``changes_input``: whether it edits the graph it is given in place (and returns it) instead of
  building a new one.
The properties are named in `PROPERTIES`.  The manager never lets a pass change the caller's graph:
before the first pass that changes its input it works on a copy (`Graph.copy`), so
``run_passes(g, passes)`` leaves `g` as it was and its callers need no defensive copy.  A pass that
declares it leaves its input alone is checked to have done so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Protocol, TextIO

from cramc.errors import InternalError
from cramc.ir.graph import Graph, Op
from cramc.ir.semantics import verify_graph
from cramc.ir.text import print_graph


def _mvms(g: Graph) -> list[Op]:
    return [op for op in g.ops if op.kind == "mvm"]


def _first(ops: list[Op], ok: Callable[[Op], bool]) -> Op | None:
    return next((op for op in ops if not ok(op)), None)


#: property -> (what it says, the first op that breaks it in a graph, or None when it holds).
PROPERTIES: dict[str, tuple[str, Callable[[Graph], Op | None]]] = {
    "no-conv": ("no `conv` is left (conv-to-mvm ran)", lambda g: _first(g.ops, lambda op: op.kind != "conv")),
    "untiled": (
        "no `mvm` is tiled yet (tiling reserves the scratch columns error correction needs)",
        lambda g: _first(_mvms(g), lambda op: "tile" not in op.attrs),
    ),
    "tiled": ("every `mvm` has its tile", lambda g: _first(_mvms(g), lambda op: "tile" in op.attrs)),
    "allocated": ("every `mvm` has its columns (cols)", lambda g: _first(_mvms(g), lambda op: "cols" in op.attrs)),
    "cram-allocated": (
        "every `mvm` has its CRAM-only columns (cram_cols)",
        lambda g: _first(_mvms(g), lambda op: "cram_cols" in op.attrs),
    ),
    "placed": ("every `mvm` has its place on the chip", lambda g: _first(_mvms(g), lambda op: "place" in op.attrs)),
}


class Pass(Protocol):
    """What the manager reads off a pass.  Read-only properties, so that a frozen dataclass field or a
    ClassVar (how the passes declare them) satisfies the protocol."""

    @property
    def name(self) -> str: ...

    @property
    def requires(self) -> frozenset[str]: ...

    @property
    def ensures(self) -> frozenset[str]: ...

    @property
    def changes_input(self) -> bool: ...

    def run(self, g: Graph) -> Graph: ...


def check_property(g: Graph, prop: str, why: str) -> None:
    """InternalError unless `prop` (a key of PROPERTIES) holds for `g`; `why` says who needs it."""
    if prop not in PROPERTIES:
        raise InternalError(f"{why}: unknown graph property '{prop}' (known: {', '.join(PROPERTIES)})")
    what, breaks = PROPERTIES[prop]
    bad = breaks(g)
    if bad is not None:
        raise InternalError(f"{why}: '{prop}' does not hold ({what}): %{bad.out} ({bad.kind} ; {bad.origin})")


def _fingerprint(g: Graph) -> tuple:
    """Everything a pass could change in a graph, by value (constants by identity: passes replace them)."""
    return (
        tuple(g.inputs),
        tuple(g.outputs),
        tuple((k, id(v)) for k, v in g.consts.items()),
        tuple(g.const_types.items()),
        tuple((id(op), op.kind, op.out, tuple(op.ins), repr(op.attrs), op.origin) for op in g.ops),
    )


def run_passes(
    g: Graph,
    passes: Sequence[Pass],
    print_after_all: bool = False,
    out: TextIO | None = None,
    verify: bool = True,
) -> Graph:
    """Run `passes` on (a copy of) `g`, in order; returns the result and never changes `g` itself."""
    out = sys.stderr if out is None else out  # resolved per call, so redirected stderr is honoured
    if print_after_all:
        out.write("; IR after import\n" + _brief(print_graph(g)))
    owned = False  # whether `g` is the manager's own copy, which passes may change
    for p in passes:
        for prop in p.requires:
            check_property(g, prop, f"pass {p.name} requires")
        if p.changes_input and not owned:
            g = g.copy()
            owned = True
        before = None if p.changes_input or not verify else _fingerprint(g)
        result = p.run(g)
        if before is not None and _fingerprint(g) != before:
            raise InternalError(f"pass {p.name} declares it leaves its input unchanged, but changed it")
        if not p.changes_input:
            owned = False  # a new graph may share ops or lists with its input
        g = result
        for prop in p.ensures:
            check_property(g, prop, f"pass {p.name} ensures")
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
