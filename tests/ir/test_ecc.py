"""The error-correction registry (cramc/ir/ecc.py): its entries, and that a new scheme is one entry.

- every entry lowers to instructions of the opcode table, its tree instruction senses through the
  adder tree, and its scratch columns, gates and costs are the ones docs/error-correction.md states;
- the partial-product error rates have the closed forms of docs/error-correction.md for one gate
  rate p and exact reads (none p, vote 3p^2 - 2p^3, dup p^2, tmr the MAJ3 of three copies through a
  faulty MAJ3), and dup's expected recomputes are 2p(1 - p) per sensed row;
- a scheme added to the registry alone (here 5-fold redundancy voted by an in-array MAJ5) is read by
  every stage: the --ecc spec, tiling's scratch columns, the lowering, the simulator (a compiled
  digits MLP matches its onnxruntime vectors fault-free), auto-ecc's cost and the statistical model.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO

from cramc.cli import main
from cramc.compiler import Options, compile_model
from cramc.errmodel import FaultModel, Rate
from cramc.ir import ecc
from cramc.ir.ecc import DUP, NONE, SCHEMES, TMR, VOTE, Rates, Scheme, Term
from cramc.ir.graph import Op
from cramc.ir.noisy import pp_error_rates
from cramc.ir.tiling import scratch_columns
from cramc.isa import ast
from cramc.isa.opcodes import OPCODES, Unit

DOC = REPO / "docs" / "error-correction.md"


def _instrs(s: Scheme, neg: bool = False) -> list[ast.Instr]:
    return [i for i in s.term(2, 3, neg) if isinstance(i, ast.Instr)]


def test_entries_are_distinct_and_none_is_the_default() -> None:
    assert len({s.name for s in SCHEMES}) == len({s.code for s in SCHEMES}) == len(SCHEMES)
    assert NONE.code == 0 and ecc.scheme(0) is NONE
    assert all(ecc.BY_NAME[s.name] is s and ecc.scheme(s.code) is s for s in SCHEMES)
    with pytest.raises(ValueError, match="unknown scheme 99"):
        ecc.scheme(99)


@pytest.mark.parametrize("s", SCHEMES, ids=lambda s: s.name)
def test_a_term_is_isa_and_senses_once(s: Scheme) -> None:
    for neg in (False, True):
        ins = _instrs(s, neg)
        assert all(i.mnemonic in OPCODES for i in ins)
        tree = [i for i in ins if OPCODES[i.mnemonic].unit is Unit.TREE]
        assert [i.mnemonic for i in tree] == [s.tree[1] if neg else s.tree[0]]
        assert tree[0].operands[-1] == ast.Num(5)  # shifted by b + c
        assert [i.mnemonic for i in ins].count("and") == s.copies
    if s is not NONE:  # a protected term names its scheme
        assert _instrs(s)[0].comment == f"; {s.name}: b+c=5"


def _doc_table() -> dict[str, tuple[int, int]]:
    """scheme -> (CRAM gates per row, scratch columns) from the table of docs/error-correction.md."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `(\w+)` \| [^|]+ \| (\d+) \| (\d+) \|", line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return rows


def test_columns_and_gates_are_the_documented_ones() -> None:
    table = _doc_table()
    assert set(table) == {s.name for s in SCHEMES}, "every scheme has its row in docs/error-correction.md"
    for s in SCHEMES:
        gates = sum(OPCODES[i.mnemonic].unit is Unit.GATE for i in _instrs(s))
        assert (gates, s.scratch) == table[s.name], s.name
        assert s.ops_per_term == gates + 1  # the gates and one adder-tree operation
    # tiling reserves the most any term of the plan needs
    op = Op("mvm", "y", ("%x",), {"wbits": 2, "xbits": 2, "ecc": [NONE.code, DUP.code, VOTE.code, NONE.code]})
    assert scratch_columns(op) == VOTE.scratch == 3
    assert scratch_columns(Op("mvm", "y", ("%x",), {"wbits": 2, "xbits": 2})) == 1


def test_auto_ecc_tries_the_cheapest_first() -> None:
    assert ecc.protections() == [DUP, ecc.DUP_R2, ecc.DUP_R3, VOTE, ecc.VOTE_R3, TMR, ecc.TMR_R3]
    assert [s.extra_writes(8) for s in (DUP, ecc.DUP_R2, ecc.VOTE_R3)] == [0, 1 / 8, 2 / 8]


@pytest.mark.parametrize("p", [1e-4, 3e-3, 1e-2, 3e-2])
def test_error_rates_have_the_documented_closed_forms(p: float) -> None:
    fm = FaultModel.uniform(p)  # every gate p, exact reads
    maj = 3 * p * p - 2 * p**3
    want = {"none": p, "vote": maj, "dup": p * p, "tmr": (1 - maj) * p + maj * (1 - p)}
    for s in SCHEMES:
        rates = pp_error_rates(fm, s.code)
        want.setdefault(s.name, want[s.name.split("_")[0]])  # replicas: the base scheme's rates
        assert len(rates) == 3 and all(e == pytest.approx(want[s.name], rel=1e-12) for e in rates), s.name
    (dup, rec), *others = ecc.recomputing()
    assert dup is DUP and not others
    assert rec.sensed == 2 and rec.expected(1000.0, fm) == pytest.approx(1000 * 2 * p * (1 - p), rel=1e-12)


def test_read_faults_enter_every_scheme() -> None:
    fm = FaultModel({}, read=Rate(0.01, 0.02))  # gates exact: only reads fail
    for s in SCHEMES:
        assert all(e > 0 for e in pp_error_rates(fm, s.code)), s.name


def test_input_dependent_gate_rates_enter_every_scheme_by_operand_state() -> None:
    """With by_ones gates, a partial product's error depends on its operand bits k = w_b + x_c, in closed form."""
    a = (1e-7, 2e-3, 1e-4)  # AND wrong with 0, 1, 2 inputs at 1
    m = (1e-6, 5e-2, 4e-2, 3e-5)  # MAJ3 wrong with 0..3 inputs at 1
    fm = FaultModel({"and": Rate(by_ones=a), "maj3": Rate(by_ones=m)})
    assert pp_error_rates(fm, NONE.code) == pytest.approx(a, rel=1e-12)
    assert pp_error_rates(fm, VOTE.code) == pytest.approx([3 * e * e - 2 * e**3 for e in a], rel=1e-12)
    assert pp_error_rates(fm, DUP.code) == pytest.approx([e * e for e in a], rel=1e-12)  # exact reads
    for k, e in enumerate(a):
        ones = [3 - j if k == 2 else j for j in range(4)]  # voter inputs at 1 with j copies wrong
        pj = [math.comb(3, j) * e**j * (1 - e) ** (3 - j) for j in range(4)]
        want = sum(pj[j] * (m[ones[j]] if j < 2 else 1 - m[ones[j]]) for j in range(4))
        assert pp_error_rates(fm, TMR.code)[k] == pytest.approx(want, rel=1e-12), k
    # a TMR voter whose three copies agree (k = 0 product 0: all inputs 0) fails at its unanimous rate m[0]
    assert pp_error_rates(FaultModel({"maj3": Rate(by_ones=m)}), TMR.code) == pytest.approx((m[0], m[0], m[3]))


def test_dup_recompute_depends_on_the_operand_state() -> None:
    r01, r10 = 0.01, 0.02
    fm = FaultModel({"and": Rate(0.1, 0.1)}, read=Rate(r01, r10))
    e = pp_error_rates(fm, NONE.code)
    rec = (r01 * r01, r01 * (1 - r10), 1 - (1 - r10) ** 2)  # both 0s misread; the 0 misread; either 1 misread
    assert pp_error_rates(fm, DUP.code) == pytest.approx([e[k] ** 2 + 2 * e[k] * (1 - e[k]) * rec[k] for k in range(3)])


# ----------------------------------------------------------------------------- a new scheme
def _lower_maj5(s: Scheme, t: Term) -> list[ast.Stmt]:
    t_ = [ast.Expr("t", i) for i in range(6)]
    w, x = ast.Expr("w", t.b), ast.Expr("x", t.c)
    ands: list[ast.Stmt] = [ast.Instr("and", None, (t_[i], w, x)) for i in range(5)]
    ands[0] = ast.Instr("and", None, (t_[0], w, x), (), f"; {s.name}: b+c={t.sig}")
    vote = ast.Instr("maj5", None, (t_[5], *t_[:5]))
    return [*ands, vote, ast.Instr(s.tree[1] if t.neg else s.tree[0], None, (ast.Expr("y"), t_[5], ast.Num(t.sig)))]


def _rates_maj5(fm: FaultModel) -> Rates:
    m = fm.gate("maj5")  # output-conditioned (p01, p10): this test's models have no by_ones

    def wrong3of5(e: float) -> float:
        return sum(math.comb(5, k) * e**k * (1 - e) ** (5 - k) for k in range(3, 6))

    def voted(k: int) -> float:
        q = wrong3of5(fm.gate_wrong("and", k))
        return (1 - q) * m.p10 + q * (1 - m.p01) if k == 2 else (1 - q) * m.p01 + q * (1 - m.p10)

    return voted(0), voted(1), voted(2)


MAJ5 = Scheme("maj5", 9, 5, ("tadd", "tsub"), _lower_maj5, _rates_maj5)


@pytest.fixture
def maj5(monkeypatch: pytest.MonkeyPatch) -> Scheme:
    """The registry with one more entry (restored after the test)."""
    monkeypatch.setattr(ecc, "SCHEMES", (*SCHEMES, MAJ5))
    monkeypatch.setitem(ecc.BY_NAME, MAJ5.name, MAJ5)
    monkeypatch.setitem(ecc._BY_CODE, MAJ5.code, MAJ5)
    return MAJ5


def test_a_new_scheme_is_one_entry(maj5: Scheme, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (maj5.scratch, maj5.ops_per_term) == (6, 7)
    assert ecc.protections()[-1] is maj5  # the dearest: auto-ecc tries it last
    fm = FaultModel.uniform(1e-2)
    assert pp_error_rates(fm, maj5.code) == _rates_maj5(fm)  # the statistical model reads the entry
    m = REPO / "models"
    # one scratch set (no double buffering): the columns the scheme's term reserves, 6
    opts = Options(ecc="maj5:sig>=12;dup:sig>=10", n_validation=4, trace=False, double_buffer=False)
    text = compile_model(str(m / "digits_mlp.onnx"), _calibration(m), opts, log=io.StringIO())
    assert "; maj5: b+c=12" in text and "maj5 t+5, t, t+1, t+2, t+3, t+4" in text
    assert re.search(r"call @\S+ mac_w8x8u_ecc\w+ w=c14 x=c0 t=c8 ", text)  # 8 input planes, 6 scratch columns
    prog = tmp_path / "maj5.cram"
    prog.write_text(text, encoding="utf-8")
    assert main(["run", str(prog)]) == 0  # fault-free, the outputs match onnxruntime's
    out = capsys.readouterr().out
    assert re.search(r"logits +4 +40 +40 +40 +0 +match", out), out


def _calibration(m: Path) -> dict[str, np.ndarray]:
    with np.load(m / "digits_calib_flat.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
