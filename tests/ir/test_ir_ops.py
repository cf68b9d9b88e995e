"""The IR's table of operation kinds, its typed annotation records, and the shape cache.

cramc.ir.ops lists every kind (conv, mvm, and each CMOS instruction of the ISA with the attributes
its opcode declares); the IR verifier checks every op against it.  The annotations tile/cols/place
are frozen records (cramc.ir.tiling) that print as the integer lists they replaced and parse back.
infer_shapes evaluates each op's shape once and remembers it under everything it depends on.
"""

from __future__ import annotations

import dataclasses

import pytest
from cramtest import REPO

from cramc.errors import UserError
from cramc.ir import semantics
from cramc.ir.graph import Graph
from cramc.ir.ops import ANNOTATIONS, IR_OPS, decode_attr, semantic_attrs
from cramc.ir.semantics import infer_shapes
from cramc.ir.text import parse_graph, print_graph
from cramc.ir.tiling import Cols, Place, Tile
from cramc.isa.opcodes import OPCODES, Unit

GOLDEN_IR = REPO / "tests" / "golden" / "ir"


def _golden(case: str, stage: str) -> Graph:
    return parse_graph(next((GOLDEN_IR / case).glob(f"*-{stage}.cir")).read_text(encoding="utf-8"))


def test_every_cmos_instruction_is_an_ir_kind_with_its_attributes() -> None:
    cmos = {mn for mn, op in OPCODES.items() if op.unit is Unit.CMOS}
    assert set(IR_OPS) == cmos | {"conv", "mvm"}
    for mn in cmos:
        d, isa = IR_OPS[mn], OPCODES[mn]
        assert [(a.name, a.kind, a.required) for a in d.attrs] == [(a.name, a.kind, a.required) for a in isa.attrs]
        assert d.inputs == len(isa.operands) - 1 and d.variadic == isa.variadic
    assert ANNOTATIONS == {("mvm", a) for a in ("ecc", "tile", "dbuf", "cols", "place", "cram_cols")}


@pytest.mark.parametrize(
    ("record", "text"),
    [(Tile(2, 1, 8, 2, 1), [2, 1, 8, 2, 1]), (Cols(0, 8, 9), [0, 8, 9]), (Place(8, 1, 1, True), [8, 1, 1, 1])],
)
def test_records_print_as_their_lists_and_parse_back(record: object, text: list[int]) -> None:
    assert record.as_attr() == text  # type: ignore[attr-defined]
    name = {Tile: "tile", Cols: "cols", Place: "place"}[type(record)]
    assert decode_attr("mvm", name, text) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.base = 3  # type: ignore[attr-defined]


def test_scheduled_golden_holds_records() -> None:
    g = _golden("qdq_mlp", "schedule")
    mvms = [op for op in g.ops if op.kind == "mvm"]
    assert [op.attrs["place"] for op in mvms] == [Place(0, 1, 2, False), Place(0, 1, 1, False)]
    assert [op.attrs["cols"] for op in mvms] == [Cols(0, 8, 10)] * 2  # double-buffered scratch: c8, c9
    assert mvms[0].attrs["tile"] == Tile(1, 2, 4, 2, 3) and mvms[0].attrs["tile"].arrays == 6
    assert "dbuf=1 tile=[1, 2, 4, 2, 3] cols=[0, 8, 10] place=[0, 1, 2, 0]" in print_graph(g)
    assert set(semantic_attrs(mvms[0])) == {"w", "wbits", "xbits", "xsigned"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%y = frobnicate %x", "unknown IR operation 'frobnicate'"),
        ("%y = mvm %x w=$w wbits=8 xbits=8 xsigned=0 tile=[1, 2]", "tile takes 5 integers, got [1, 2]"),
        ("%y = mvm %x w=$w wbits=8 xbits=8 xsigned=0 place=[0, 1, 1, 2]", "resident is 0 or 1, got 2"),
    ],
)
def test_parser_refuses_unknown_kinds_and_bad_records_at_their_line(line: str, message: str) -> None:
    text = f"input %x : i64[4,8]\nconst $w : i8[2,8] = [{', '.join(['1'] * 16)}]\n{line}\noutput %y : i64[4,2]\n"
    with pytest.raises(UserError) as e:
        parse_graph(text, "t.cir")
    assert message in e.value.message
    assert e.value.loc is not None and (e.value.loc.file, e.value.loc.line) == ("t.cir", 3)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = semantics.eval_op

    def counted(g, op, args, shape_only=False):  # noqa: ANN001, ANN202
        calls.append(op.out)
        return real(g, op, args, shape_only)

    monkeypatch.setattr(semantics, "eval_op", counted)
    return calls


def test_shapes_are_inferred_once_per_op(monkeypatch: pytest.MonkeyPatch) -> None:
    g = _golden("qdq_conv", "conv-to-mvm")
    calls = _counting(monkeypatch)
    first = infer_shapes(g)
    assert sorted(calls) == sorted(op.out for op in g.ops)
    calls.clear()
    assert infer_shapes(g) == first and calls == []
    # annotations and reordering change no shape: nothing is inferred again
    for op in g.ops:
        if op.kind == "mvm":
            op.attrs["tile"] = Tile(op.attrs.get("groups", 1), 1, 8, 2, 1)
    g.ops.reverse()
    with pytest.raises(Exception, match="uses undefined value"):  # the structure is still checked every time
        infer_shapes(g)
    g.ops.reverse()
    assert infer_shapes(g) == first and calls == []


def test_the_shape_cache_is_never_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "input %x : f32[2,6]\n%r = reshape %x shape=[3, 4]\n%t = transpose %r perm=[1, 0]\n"
        "%s = relu %x\noutput %t : f32[4,3]\n"
    )
    g = parse_graph(text)
    assert infer_shapes(g)["t"] == ((4, 3), False)
    calls = _counting(monkeypatch)
    g.ops[0].attrs["shape"] = [4, 3]
    assert infer_shapes(g)["t"] == ((3, 4), False)
    assert calls == ["r", "t"]  # the edited op and what reads it; relu is remembered
    # a constant replaced under the same name (as conv-to-mvm reshapes weights): what reads it is inferred again
    g2 = parse_graph(
        "input %x : i64[1,8]\nconst $c : i8[8] = [1, 2, 3, 4, 5, 6, 7, 8]\n%m = add %x, $c\noutput %m : i64[1,8]\n"
    )
    assert infer_shapes(g2)["m"] == ((1, 8), True)
    calls.clear()
    g2.consts["c"] = g2.consts["c"].reshape(8, 1)
    assert infer_shapes(g2)["m"] == ((8, 8), True) and calls == ["m"]
    # and a cached graph agrees with a fresh parse of its text
    assert infer_shapes(parse_graph(print_graph(g))) == infer_shapes(g)
