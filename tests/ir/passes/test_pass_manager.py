"""The pass manager checks each pass's contract and never changes the caller's graph.

A pass declares the graph properties it requires and ensures (cramc.ir.passes.manager.PROPERTIES)
and whether it edits its input in place; run_passes checks the first before and the second after
the pass, works on a copy before the first pass that edits in place, and checks that a pass that
says it leaves its input alone did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from cramtest import REPO

from cramc.backend.allocate import Allocate
from cramc.backend.cram_only import TileCramOnly
from cramc.backend.schedule import Schedule
from cramc.errors import InternalError
from cramc.ir.graph import Graph
from cramc.ir.passes.auto_ecc import AutoEcc
from cramc.ir.passes.conv_to_mvm import ConvToMvm
from cramc.ir.passes.insert_ecc import InsertEcc
from cramc.ir.passes.manager import PROPERTIES, check_property, run_passes
from cramc.ir.passes.tile_mvm import TileMvm
from cramc.ir.text import parse_graph, print_graph
from cramc.ir.tiling import Tile

GOLDEN_IR = REPO / "tests" / "golden" / "ir"
PASS_CLASSES = (ConvToMvm, InsertEcc, AutoEcc, TileMvm, Allocate, Schedule, TileCramOnly)


def _imported(case: str = "qdq_conv") -> Graph:
    return parse_graph((GOLDEN_IR / case / "0-import.cir").read_text(encoding="utf-8"))


def _default(rows: int = 8, cols: int = 32, arrays: int = 16) -> list:
    # double-buffered, as the compiler tiles (the goldens are its)
    return [ConvToMvm(), TileMvm(rows, cols, 64, double_buffer=True), Allocate(cols, 64), Schedule(arrays)]


@pytest.mark.parametrize("cls", PASS_CLASSES, ids=lambda c: c.__name__)
def test_every_pass_declares_its_contract(cls: type) -> None:
    for attr in ("requires", "ensures"):
        props = getattr(cls, attr)
        assert isinstance(props, frozenset) and props <= set(PROPERTIES), (cls.__name__, attr, props)
    assert cls.changes_input in (True, False)


def test_the_callers_graph_is_left_as_it_was() -> None:
    g = _imported()
    before = print_graph(g)
    out = run_passes(g, _default())
    assert print_graph(g) == before  # the caller's graph: still the imported one, conv and all
    assert out is not g
    assert print_graph(out) == (GOLDEN_IR / "qdq_conv" / "4-schedule.cir").read_text(encoding="utf-8")
    # so the same graph can be lowered twice, as the statistical sweep does, without a defensive copy
    assert print_graph(run_passes(g, _default())) == print_graph(out)


def test_requires_is_checked_before_the_pass_runs() -> None:
    g = _imported()
    with pytest.raises(InternalError, match=r"pass tile-mvm requires: 'no-conv' does not hold .*%h_mvm \(conv ; "):
        run_passes(g, [TileMvm(8, 32, 64)])
    with pytest.raises(InternalError, match=r"pass insert-ecc requires: 'untiled' does not hold"):
        run_passes(g, [ConvToMvm(), TileMvm(8, 32, 64), InsertEcc("tmr")])
    with pytest.raises(InternalError, match=r"pass schedule requires: 'tiled' does not hold"):
        run_passes(g, [ConvToMvm(), Schedule(16)])


@dataclass(frozen=True)
class _Claims:
    """A pass that claims what the test says, and does `edit` to the graph."""

    edit: object = None
    name: str = "claims"
    requires: frozenset[str] = frozenset()
    ensures: frozenset[str] = frozenset()
    changes_input: bool = False
    seen: list = field(default_factory=list, compare=False)

    def run(self, g: Graph) -> Graph:
        self.seen.append(g)
        if callable(self.edit):
            self.edit(g)
        return g


def test_ensures_is_checked_after_the_pass_ran() -> None:
    g = run_passes(_imported(), [ConvToMvm()])
    with pytest.raises(InternalError, match=r"pass claims ensures: 'tiled' does not hold \(every `mvm` has its tile\)"):
        run_passes(g, [_Claims(ensures=frozenset({"tiled"}), changes_input=True)])


def test_a_pass_that_says_it_keeps_its_input_is_held_to_it() -> None:
    g = run_passes(_imported(), [ConvToMvm()])

    def sneak(h: Graph) -> None:
        next(op for op in h.ops if op.kind == "mvm").attrs["tile"] = Tile(2, 1, 8, 2, 1)

    with pytest.raises(InternalError, match="pass claims declares it leaves its input unchanged, but changed it"):
        run_passes(g, [_Claims(edit=sneak)])
    g = run_passes(_imported(), [ConvToMvm()])
    out = run_passes(g, [_Claims(edit=sneak, changes_input=True)])  # declared: fine, and done on a copy
    assert all("tile" not in op.attrs for op in g.ops)
    assert any("tile" in op.attrs for op in out.ops)


def test_a_copy_is_made_again_after_a_pass_that_builds_a_new_graph() -> None:
    """A pass that returns its input (or a graph sharing its ops) must not let the next pass edit the caller's."""
    g = _imported()
    before = print_graph(g)
    keep = _Claims()
    out = run_passes(g, [keep, *_default()])
    assert keep.seen == [g]  # a pass that keeps its input is handed the caller's graph itself: no copy needed
    assert print_graph(g) == before and "place=" in print_graph(out)


def test_unknown_property_is_an_internal_error() -> None:
    with pytest.raises(InternalError, match="unknown graph property 'tilled'"):
        run_passes(_imported(), [_Claims(requires=frozenset({"tilled"}))])
    with pytest.raises(InternalError, match="unknown graph property"):
        check_property(_imported(), "nonsense", "test")
