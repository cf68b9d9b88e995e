"""Double-buffered scratch columns of the hybrid's MAC micro-programs (issue 13, "the hybrid done well").

- The double-buffered micro alternates two scratch sets term by term: every term's tree operation senses
  the columns its own gates wrote, and the next term's gates write the other set; the single-buffer micro
  is unchanged, and the two compute the same exact dot product on the simulator for every protection plan.
- tile-mvm double-buffers a layer only where the extra scratch columns leave its tile as it is, and
  records it (``dbuf=1``); where the columns are too few it keeps one set; without the option none.
- A compiled model gives the same outputs with and without double buffering at zero faults, equal to
  onnxruntime's (the validation vectors embedded by the compiler).
"""

from __future__ import annotations

import numpy as np
import pytest
from cramtest import REPO

from cramc import compiler
from cramc.backend.lower_tiles import mac_micro, mac_name
from cramc.compiler import Options
from cramc.ir.graph import Graph, IOValue, Op
from cramc.ir.passes.tile_mvm import TileMvm
from cramc.ir.tiling import plan_tile, scratch_columns
from cramc.isa import ast
from cramc.isa.parser import parse
from cramc.isa.printer import print_program
from cramc.isa.verifier import Linked, verify
from cramc.sim.interp import run

NONE, TMR, VOTE, DUP = 0, 1, 2, 3


def _t_offsets(s: ast.Instr) -> list[int]:
    return [v.offset for v in s.operands if isinstance(v, ast.Expr) and v.name == "t"]


def _terms(m: ast.Micro) -> list[list[ast.Instr]]:
    """The body cut after every adder-tree operation (each term ends with one)."""
    terms: list[list[ast.Instr]] = [[]]
    for s in m.body:
        assert isinstance(s, ast.Instr)
        terms[-1].append(s)
        if s.mnemonic.startswith("t"):
            terms.append([])
    return terms[:-1]


@pytest.mark.parametrize("plan", [None, [TMR] * 12, [VOTE] * 12, [DUP] * 12, [0, 1, 2, 3] * 3])
def test_double_buffered_micro_alternates_the_scratch_sets(plan: list[int] | None) -> None:
    single, double = mac_micro(3, 4, 1, plan), mac_micro(3, 4, 1, plan, double=True)
    width = max([{NONE: 1, TMR: 4, VOTE: 3, DUP: 2}[c] for c in plan] if plan else [1])
    assert double.name == mac_name(3, 4, 1, plan, True) != single.name
    ts, td = _terms(single), _terms(double)
    assert len(td) == len(ts) == 12
    for k, (a, b) in enumerate(zip(ts, td, strict=True)):
        assert [s.mnemonic for s in a] == [s.mnemonic for s in b]
        shift = width if k % 2 else 0
        assert [[o + shift for o in _t_offsets(s)] for s in a] == [_t_offsets(s) for s in b]
        # the tree op senses the columns this term's gates wrote, none of the other set
        written = {s.operands[0].offset for s in b if s.mnemonic != b[-1].mnemonic}  # type: ignore[union-attr]
        assert set(_t_offsets(b[-1])) <= written
        assert all(shift <= o < shift + width for s in b for o in _t_offsets(s))


def _mac_program(plan: list[int] | None, double: bool, rows: int = 16) -> Linked:
    wbits, xbits = 4, 5
    m = mac_micro(wbits, xbits, 1, plan, double)
    x0, t0 = wbits, wbits + xbits
    text = (
        f".machine arrays=1 rows={rows} cols={t0 + 8} accs=1\n"
        f".input w : i32[1,{rows}]\n.input x : i32[1,{rows}]\n.output y : i64[1,1]\n\n"
        + print_program(ast.Program((m,)))
        + f".main {{\n  wr @0 c0, %w bits={wbits}\n  wr @0 c{x0}, %x bits={xbits}\n  aclr @0 acc0\n"
        f"  call @0 {m.name} w=c0 x=c{x0} t=c{t0} y=acc0\n  ard @0 %y, acc0\n}}\n"
    )
    return verify(parse(text, f"<mac {m.name}>"))


@pytest.mark.parametrize("plan", [None, [TMR] * 20, [VOTE] * 20, [DUP] * 20, [0, 1, 2, 3, 1] * 4])
def test_double_buffered_micro_computes_the_same_dot_product(plan: list[int] | None) -> None:
    rng = np.random.default_rng(7)
    w = rng.integers(-8, 8, (32, 1, 16)).astype(np.int32)
    x = rng.integers(-16, 16, (32, 1, 16)).astype(np.int32)
    want = (w.astype(np.int64) * x).sum(axis=-1).reshape(-1)
    for double in (False, True):
        res = run(_mac_program(plan, double), {"w": w, "x": x})
        np.testing.assert_array_equal(res.outputs["y"].reshape(-1), want)


def _mvm_graph(k: int, n: int, ecc: list[int] | None = None) -> Graph:
    g = Graph(inputs=[IOValue("x", "i64", (4, k))], outputs=[IOValue("y", "i64", (4, n))])
    g.consts["w"] = np.ones((n, k), dtype=np.int64)
    attrs: dict[str, object] = {"w": "$w", "wbits": 8, "xbits": 8, "xsigned": 0}
    if ecc is not None:
        attrs["ecc"] = ecc
    g.ops.append(Op("mvm", "y", ("%x",), attrs))
    return g


def test_tile_mvm_double_buffers_only_where_the_tile_stays() -> None:
    # 256 columns: 8 input + 2 scratch + 30 x 8 weights = 250: the same 30 outputs per array as with 1 scratch
    g = TileMvm(256, 256, 64, double_buffer=True).run(_mvm_graph(64, 30))
    op = g.ops[0]
    assert op.attrs["dbuf"] == 1 and scratch_columns(op) == 2
    assert op.attrs["tile"] == plan_tile(64, 30, 1, 8, 8, 256, 256, 64, 1)
    # 17 columns: 8 input + 1 scratch + one 8-bit weight; a second scratch column leaves no room
    op = TileMvm(64, 17, 64, double_buffer=True).run(_mvm_graph(64, 4)).ops[0]
    assert "dbuf" not in op.attrs and scratch_columns(op) == 1 and op.attrs["tile"].per == 1
    # 33 columns, 3 outputs: 8 + 1 + 3 x 8 = 33 fits 3 per array, 8 + 2 + 3 x 8 = 34 only 2: single buffer
    op = TileMvm(64, 33, 64, double_buffer=True).run(_mvm_graph(64, 3)).ops[0]
    assert "dbuf" not in op.attrs and op.attrs["tile"].per == 3
    # tmr: 4 scratch columns per term, 8 when double-buffered
    op = TileMvm(256, 256, 64, double_buffer=True).run(_mvm_graph(64, 8, [TMR] * 64)).ops[0]
    assert op.attrs["dbuf"] == 1 and scratch_columns(op) == 8
    op = TileMvm(256, 256, 64).run(_mvm_graph(64, 30)).ops[0]
    assert "dbuf" not in op.attrs


def _compile(double: bool) -> Linked:
    opts = Options(double_buffer=double, n_validation=4)
    text = compiler.compile_model(
        str(REPO / "models" / "digits_cnn.onnx"),
        dict(np.load(REPO / "models" / "digits_calib_img.npz")),
        opts,
    )
    return verify(parse(text, "<digits_cnn>"))


def test_double_buffered_model_is_bit_identical_to_single_buffer() -> None:
    db, sb = _compile(True), _compile(False)
    assert "_db " in print_program(db.program) and "_db " not in print_program(sb.program)
    assert db.expect is not None and sb.expect is not None
    ra = run(db, dict(db.expect.inputs))
    rb = run(sb, dict(sb.expect.inputs))
    for name, want in db.expect.outputs.items():
        np.testing.assert_array_equal(ra.outputs[name], rb.outputs[name])
        np.testing.assert_allclose(ra.outputs[name], want, atol=db.expect.tol)
    assert ra.counts.per_opcode == rb.counts.per_opcode  # the same gates and tree operations, other columns
