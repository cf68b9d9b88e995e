"""Operand replicas of error correction (cramc.ir.ecc's tmr_r3, vote_r3, dup_r2, dup_r3): copies apart.

- layout: tiling reserves R copies of the input bit-planes and of every weight, the program writes each
  input replica every round and stores every weight R times, copy i of a term reads replica i;
- exact at zero faults: the compiled digits MLP under every replica scheme (and a mix) matches its
  onnxruntime vectors, and default emission is untouched (the goldens hold it byte for byte);
- with one stuck-at-1 input cell (bit 7 of pixel 0, which is 0 in every digits image): `dup` and `vote`
  read it in every copy, so they leave exactly the unprotected program's wrong outputs and `dup` recomputes
  nothing; with replicas the copies differ where the bad cell is read, so `dup_r2` detects it in either
  replica (recomputes = the rows whose copies differ, counted from the chip's stored weights) and corrects
  it in replica 1 (in replica 0 it gives what a bad cell in both replicas gives), `dup_r3` corrects it in
  any replica, `vote_r3` and `tmr_r3` outvote it;
- placement, on the linked program (every call inlined, columns absolute): in every term the copies' AND
  gates run on the same arrays and rows (a row is one lane of the dot product: copies cannot sit in other
  rows) and touch pairwise disjoint columns, so no two copies share a cell: copy i reads weight column
  w + i*wbits + b and input column x + i*xbits + c and writes scratch t + i; the replicas hold the same bits
  (the weight columns of a term's copies equal in the fault-free chip's stored state, the input columns
  written by `wr`s of one source tensor); dup_r3's recompute senses a third replica's cells, dup_r2's copy
  0's; the base schemes' copies all read one weight and one input cell.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO, link

from cramc.cli import main
from cramc.compiler import Options, compile_model
from cramc.errmodel import Defects, FaultModel
from cramc.ir import ecc
from cramc.ir.graph import Op
from cramc.ir.tiling import operand_replicas, plan_tile
from cramc.isa.linked import BoundOp, Linked, Loop, Node
from cramc.isa.opcodes import Unit
from cramc.sim import interp
from cramc.sim.chip import STUCK1, ChipDefects
from cramc.sim.layout import program_inputs

M = REPO / "models"
SAMPLES = 6


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(M / name, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def progs() -> dict[str, str]:
    cal = _npz("digits_calib_flat.npz")
    out = {}
    for s in ("none", "dup", "vote", "tmr", "dup_r2", "dup_r3", "vote_r3", "tmr_r3"):
        # one scratch set: the layout checked below (double buffering, tests/backend/test_double_buffer.py)
        opts = Options(ecc="" if s == "none" else s, n_validation=4, trace=False, double_buffer=False)
        out[s] = compile_model(str(M / "digits_mlp.onnx"), cal, opts, log=io.StringIO())
    return out


def test_tiling_reserves_the_replicas() -> None:
    op = Op("mvm", "y", ("%x",), {"wbits": 8, "xbits": 8, "ecc": [ecc.NONE.code] * 63 + [ecc.VOTE_R3.code]})
    assert operand_replicas(op) == 3  # the most any term reads
    assert operand_replicas(Op("mvm", "y", ("%x",), {"wbits": 8, "xbits": 8})) == 1
    assert plan_tile(64, 100, 1, 8, 8, 256, 256, 64, 3, 3).per == (256 - 3 * 8 - 3) // (3 * 8) == 9
    assert plan_tile(64, 100, 1, 8, 8, 256, 256, 64, 3).per == 25  # (256 - 8 - 3) // 8 = 30, balanced
    with pytest.raises(Exception, match=r"3 x 8 input bit-planes.*use --cols 51"):
        plan_tile(64, 64, 1, 8, 8, 256, 50, 64, 3, 3)


def test_layout_and_lowering(progs: dict[str, str]) -> None:
    text = progs["dup_r3"]
    # copy i reads replica i; the recompute senses the third replica
    assert "and t, w, x+1  ; dup_r3: b+c=1\n  and t+1, w+8, x+9\n  tdadd y, t, t+1, w+16, x+17, 1" in text
    for i in (1, 2):  # the input written into every replica, every round
        assert re.search(rf"wr @0:8 c{8 * i}, %relu1_mvm\.xa\[r\] bits=8 repeat=8 rows=0:64  ; input replica {i}", text)
    calls = re.findall(r"call @0:8 mac_w8x8u_dup_r3 w=c(\d+) x=c0 t=c24 ", text)  # scratch after 3 x 8 planes
    assert [int(c) for c in calls][:3] == [26, 50, 74]  # each output's weights take 3 x 8 columns
    assert "tdadd y, t, t+1, w, x+1, 1" in progs["dup_r2"]  # dup_r2 recomputes from replica 0
    assert "and t+2, w+16, x+18" in progs["vote_r3"] and "and t+2, w, x+2" in progs["vote"]


@pytest.mark.parametrize("scheme", ["dup_r2", "dup_r3", "vote_r3", "tmr_r3", "mix"])
def test_exact_without_faults(
    scheme: str, progs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if scheme == "mix":
        opts = Options(ecc="tmr_r3:sig>=13;vote:sig>=11;dup_r2:sig>=8;dup", n_validation=4, trace=False)
        text = compile_model(str(M / "digits_mlp.onnx"), _npz("digits_calib_flat.npz"), opts, log=io.StringIO())
        assert "3 operand replicas" in text
    else:
        text = progs[scheme]
    prog = tmp_path / "p.cram"
    prog.write_text(text, encoding="utf-8")
    assert main(["run", str(prog)]) == 0
    assert re.search(r"logits +4 +40 +40 +40 +0 +match", capsys.readouterr().out)


def _stuck(cols: tuple[int, ...]) -> ChipDefects:
    """Stuck-at-1 cells in array 0, row 0 (pixel 0 of the MLP's first layer), columns `cols` (ascending)."""
    zero = np.zeros(len(cols), dtype=np.int64)
    starts = {c: (i, i + 1) for i, c in enumerate(cols)}
    return ChipDefects(np.array(cols), zero, zero.copy(), np.full(len(cols), STUCK1), 1.0, starts)


def _run(
    text: str, col: int | tuple[int, ...] | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[np.ndarray, int, Linked, interp.RunResult]:
    linked = link(text)
    feed = program_inputs(linked, {k: v[:SAMPLES] for k, v in _npz("digits_test_x_flat.npz").items()}, "--data")
    fm = FaultModel()
    if col is not None:
        fm = FaultModel(defects=Defects(stuck1=1e-9))  # the defect itself is placed by hand
        cols = col if isinstance(col, tuple) else (col,)
        monkeypatch.setattr(interp, "draw_defects", lambda *a: _stuck(cols))
    res = interp.run(linked, feed, fm, seed=0, keep_tensors=True)
    return res.outputs[linked.outputs[0].name], res.counts.recomputes, linked, res


def _rows_differing(linked: Linked, res: interp.RunResult, w_cols: list[int]) -> int:
    """Rows whose two dup copies differ with pixel 0's bit 7 read as 1 in one of them: every output of array 0
    and every weight bit b at 1 in row 0 (from the chip's stored weights), in every inference whose bit is 0."""
    xa = res.tensors["relu1_mvm.xa"]  # [samples, rounds, arrays, rows]: what the round writes
    wrong = int(((xa.reshape(SAMPLES, -1, 64)[:, 0, 0].astype(np.int64) >> 7) & 1 == 0).sum())
    chip = interp.make_chip(linked, FaultModel(), 0)
    cells = np.asarray(chip.cells)
    ones = sum(int(cells[c + b, 0, 0, 0] & 1) for c in w_cols for b in range(8))
    return wrong * ones


def test_a_stuck_input_cell_needs_replicas(progs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    clean, _, _, _ = _run(progs["none"], None, monkeypatch)
    bad, rec, _, _ = _run(progs["none"], 7, monkeypatch)  # bit 7 of pixel 0, replica 0
    assert rec == 0 and (bad != clean).any(), "the stuck cell changes the unprotected outputs"
    for s in ("dup", "vote", "tmr"):  # every copy reads the one bad cell: exactly the unprotected outputs
        out, rec, _, _ = _run(progs[s], 7, monkeypatch)
        np.testing.assert_array_equal(out, bad, err_msg=s)
        assert rec == 0, f"{s}: the copies agree on the wrong value, nothing to detect"
    for s in ("vote_r3", "tmr_r3"):
        for rep in range(3):
            out, _, _, _ = _run(progs[s], 8 * rep + 7, monkeypatch)
            np.testing.assert_array_equal(out, clean, err_msg=f"{s}, replica {rep}")
    for s, reps in (("dup_r2", 2), ("dup_r3", 3)):
        text = progs[s]
        w_cols = [int(c) for c in re.findall(rf"call @0:\d+ mac_w8x8u_{s} w=c(\d+) ", text)]  # array 0's outputs
        stride = 8  # weight replicas of one output side by side
        for rep in range(reps):
            out, rec, linked, res = _run(text, 8 * rep + 7, monkeypatch)
            if rep < 2:  # a replica a copy reads: the copies differ in exactly these rows, all recomputed
                want = _rows_differing(linked, res, [c + rep * stride for c in w_cols])
                assert rec == want > 0, f"{s}, replica {rep}"
            else:  # the third replica is sensed only by a recompute, and there is none
                assert rec == 0
            if s == "dup_r2" and rep == 0:  # detected, but recomputed from the bad replica: as if both were bad
                both, rec, _, _ = _run(text, (7, 15), monkeypatch)
                assert rec == 0 and (both != clean).any()
                np.testing.assert_array_equal(out, both)
            else:
                np.testing.assert_array_equal(out, clean, err_msg=f"{s}, replica {rep}")


def _flat(nodes: tuple[Node, ...]) -> list[BoundOp]:
    out: list[BoundOp] = []
    for n in nodes:
        out.extend(_flat(n.body) if isinstance(n, Loop) else [n])
    return out


def _terms(ops: list[BoundOp]) -> list[list[BoundOp]]:
    """The MAC terms of the inlined calls: each a run of gates ended by its adder-tree operation."""
    terms, cur = [], []
    for b in ops:
        if b.op.unit is Unit.GATE and b.site:
            cur.append(b)
        elif b.op.unit is Unit.TREE:
            assert cur, b.text
            terms.append([*cur, b])
            cur = []
    return terms


@pytest.mark.parametrize("name", ["dup_r2", "dup_r3", "vote_r3", "tmr_r3", "dup", "vote", "tmr"])
def test_copies_of_a_term_share_no_cell(name: str, progs: dict[str, str]) -> None:
    sc = next(s for s in ecc.SCHEMES if s.name == name)
    linked = link(progs[name])
    main_ops = _flat(linked.main)
    terms = _terms(main_ops)
    assert len(terms) == 64 * len(re.findall(r"^\s*call @\S+ mac_", progs[name], flags=re.M))  # 8 x 8 per call
    cells = np.asarray(interp.make_chip(linked, FaultModel(), 0).cells)  # [cols, arrays, lanes, words]
    writes = [b for b in main_ops if b.op.mnemonic == "wr"]
    for term in terms:
        ands = [b for b in term if b.op.mnemonic == "and"]
        assert len(ands) == sc.copies, term[0].text
        assert len({(b.arrays, b.rows) for b in term}) == 1  # one set of arrays and rows: copies apart in columns
        dst, wcol, xcol = (np.array([b.operands[i] for b in ands]) for i in range(3))
        copy = np.arange(sc.copies)
        if sc.replicas == 1:  # every copy reads the one stored operand
            assert len(set(wcol)) == len(set(xcol)) == 1
        else:
            assert np.array_equal(wcol - wcol[0], 8 * copy) and np.array_equal(xcol - xcol[0], 8 * copy)
            touched = [{int(dst[i]), int(wcol[i]), int(xcol[i])} for i in copy]
            assert all(touched[i].isdisjoint(touched[j]) for i in copy for j in copy if i < j), term[0].text
            arrays = term[0].arrays
            assert arrays is not None
            lo = arrays[0]
            for i in copy[1:]:  # the replicas hold the same weight bits (fault-free chip, every row)
                np.testing.assert_array_equal(cells[wcol[i], lo], cells[wcol[0], lo])
            src = []
            for col in xcol:  # the input replica a copy reads is written from the layer's input tensor
                (wr,) = [b for b in writes if b.arrays == term[0].arrays and b.operands[0] <= col < b.operands[0] + 8]
                src.append(wr.operands[1].name)
            assert len(set(src)) == 1
        assert np.array_equal(dst - dst[0], copy)  # scratch t + i (+ the double buffer's shift)
        tree = term[-1]
        if sc.tree == ecc.DUP.tree:  # tdadd y, t, t+1, w', x', shift: the recompute's operand cells
            rw, rx = tree.operands[3], tree.operands[4]
            if sc.replicas == 3:
                assert (rw, rx) == (wcol[0] + 16, xcol[0] + 16)
                assert {rw, rx}.isdisjoint({int(v) for v in (*dst, *wcol, *xcol)})
            else:
                assert (rw, rx) == (wcol[0], xcol[0])
        if sc.name.startswith("tmr"):
            (vote,) = [b for b in term if b.op.mnemonic == "maj3"]
            assert vote.operands[0] == dst[0] + 3 and tree.operands[1] == vote.operands[0]
