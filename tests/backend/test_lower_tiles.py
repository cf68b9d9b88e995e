"""The MAC micro-programs of the hybrid lowering (cramc/backend/lower_tiles.py), run on the simulator.

Each test wraps `mac_micro(wbits, xbits, xsigned, plan)` in a one-array program: write w and x
as bit-planes (one element per row), clear an accumulator, call the micro, read the accumulator.

- Fault free, every micro computes the exact integer dot product sum_k w[k] x[k], for signed
  and unsigned inputs, several widths, and every protection plan: none, each scheme on every
  term, and mixed plans (random, seeded), on random vectors and on the extremes.
- Its instructions are the ones the module docstring states, term by term: the copies of the AND
  per scheme, the MAJ3 vote of tmr, the tree operation with shift b + c that subtracts exactly when
  one of b, c is a sign bit.
- Under faults in the AND gates only (p = 2e-3, 2,000 samples of 8 rows x 64 terms), the
  protections do what docs/error-correction.md says: unprotected, a sample is wrong about as often
  as some AND fails (1 - (1-p)^512 = 64%); dup is wrong only when both copies fail (at most 512 p^2
  per sample) and recomputes the rows where the copies differ (2p(1-p) per row and term); vote and
  tmr (with an exact MAJ3) are wrong only when two of three copies fail.  Bounds are 5 sigma.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cramc.backend.lower_tiles import mac_micro, mac_name
from cramc.errmodel import FaultModel, Rate
from cramc.isa import ast
from cramc.isa.parser import parse
from cramc.isa.printer import print_program
from cramc.isa.verifier import Linked, verify
from cramc.sim.interp import RunResult, run

NONE, TMR, VOTE, DUP = 0, 1, 2, 3  # the codes of the schemes in cramc.ir.ecc.SCHEMES
COPIES = {NONE: 1, TMR: 3, VOTE: 3, DUP: 2}


def program(wbits: int, xbits: int, xsigned: int, plan: list[int] | None, rows: int) -> Linked:
    """One array of `rows` rows: w in c0.., x after it, scratch t after x (4 columns: tmr's copies + vote)."""
    m = mac_micro(wbits, xbits, xsigned, plan)
    x0, t0 = wbits, wbits + xbits
    text = (
        f".machine arrays=1 rows={rows} cols={t0 + 4} accs=1\n"
        f".input w : i32[1,{rows}]\n.input x : i32[1,{rows}]\n.output y : i64[1,1]\n\n"
        + print_program(ast.Program((m,)))
        + f".main {{\n  wr @0 c0, %w bits={wbits}\n  wr @0 c{x0}, %x bits={xbits}\n  aclr @0 acc0\n"
        f"  call @0 {m.name} w=c0 x=c{x0} t=c{t0} y=acc0\n  ard @0 %y, acc0\n}}\n"
    )
    return verify(parse(text, f"<mac {m.name}>"))


def operands(wbits: int, xbits: int, xsigned: int, rows: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n samples of (w, x) [n, 1, rows]: random, plus all-min x all-min, all-min x all-max, all-max x all-max."""
    rng = np.random.default_rng(seed)
    wlo, whi = -(1 << (wbits - 1)), (1 << (wbits - 1)) - 1
    xlo, xhi = (-(1 << (xbits - 1)), (1 << (xbits - 1)) - 1) if xsigned else (0, (1 << xbits) - 1)
    w = rng.integers(wlo, whi + 1, (n, 1, rows))
    x = rng.integers(xlo, xhi + 1, (n, 1, rows))
    w[0], x[0] = wlo, xlo
    w[1], x[1] = wlo, xhi
    w[2], x[2] = whi, xhi
    return w, x


def run_mac(linked: Linked, w: np.ndarray, x: np.ndarray, faults: FaultModel | None = None, seed: int = 0) -> RunResult:
    return run(linked, {"w": w.astype(np.int32), "x": x.astype(np.int32)}, faults, seed=seed)


def _plans(n: int) -> dict[str, list[int] | None]:
    rng = np.random.default_rng(n)
    return {
        "plain": None,
        "none": [NONE] * n,
        "tmr": [TMR] * n,
        "vote": [VOTE] * n,
        "dup": [DUP] * n,
        "mixed": [int(v) for v in rng.integers(0, 4, n)],
        "mixed2": [int(v) for v in rng.integers(0, 4, n)],
    }


@pytest.mark.parametrize(("wbits", "xbits", "xsigned"), [(8, 8, 0), (8, 8, 1), (4, 8, 0), (4, 8, 1), (8, 16, 1),
                                                         (2, 3, 1)])  # fmt: skip
@pytest.mark.parametrize("plan", ["plain", "none", "tmr", "vote", "dup", "mixed", "mixed2"])
def test_micro_computes_the_exact_dot_product(wbits: int, xbits: int, xsigned: int, plan: str) -> None:
    rows = 16
    linked = program(wbits, xbits, xsigned, _plans(wbits * xbits)[plan], rows)
    w, x = operands(wbits, xbits, xsigned, rows, 64, seed=wbits * 100 + xbits * 10 + xsigned)
    res = run_mac(linked, w, x)
    want = (w.astype(np.int64) * x).sum(axis=-1)
    np.testing.assert_array_equal(res.outputs["y"].reshape(-1), want.reshape(-1))
    assert res.counts.faults == {} or sum(res.counts.faults.values()) == 0


def _terms(m: ast.Micro) -> list[list[ast.Instr]]:
    """The body split into terms: each starts with an AND into t (offset 0) and ends with a tree op."""
    terms: list[list[ast.Instr]] = []
    for s in m.body:
        assert isinstance(s, ast.Instr)
        if s.mnemonic == "and" and s.operands[0] == ast.Expr("t", 0):
            terms.append([])
        terms[-1].append(s)
    return terms


@pytest.mark.parametrize(("wbits", "xbits", "xsigned"), [(8, 8, 0), (4, 8, 1), (3, 5, 1)])
def test_micro_instructions_are_the_documented_ones(wbits: int, xbits: int, xsigned: int) -> None:
    plan = _plans(wbits * xbits)["mixed"]
    assert plan is not None
    m = mac_micro(wbits, xbits, xsigned, plan)
    terms = _terms(m)
    assert len(terms) == wbits * xbits
    tree = {NONE: "tadd", TMR: "tadd", VOTE: "tvadd", DUP: "tdadd"}
    for i, term in enumerate(terms):
        b, c, code = i // xbits, i % xbits, plan[i]
        ands = [s for s in term if s.mnemonic == "and"]
        assert len(ands) == COPIES[code]
        assert all(s.operands[1:] == (ast.Expr("w", b), ast.Expr("x", c)) for s in ands)
        assert [s.operands[0] for s in ands] == [ast.Expr("t", k) for k in range(COPIES[code])]
        assert sum(s.mnemonic == "maj3" for s in term) == (code == TMR)
        last = term[-1]
        neg = (b == wbits - 1) != bool(xsigned and c == xbits - 1)
        assert last.mnemonic == (tree[code].replace("add", "sub") if neg else tree[code])
        assert last.operands[-1] == ast.Num(b + c)
        assert len(term) == COPIES[code] + (code == TMR) + 1
        assert (code != NONE) == bool(ands[0].comment and f"b+c={b + c}" in ands[0].comment)


def test_micro_names_identify_the_plan() -> None:
    n = 64
    plans = _plans(n)
    names = {k: mac_name(8, 8, 0, p) for k, p in plans.items()}
    assert names["plain"] == names["none"] == "mac_w8x8u"
    assert names["tmr"] == "mac_w8x8u_tmr" and names["vote"] == "mac_w8x8u_vote" and names["dup"] == "mac_w8x8u_dup"
    assert len({names[k] for k in ("none", "tmr", "vote", "dup", "mixed", "mixed2")}) == 6
    assert mac_name(8, 8, 1) != mac_name(8, 8, 0) != mac_name(4, 8, 0)
    assert mac_micro(8, 8, 0, plans["mixed"]).name == names["mixed"]


# ------------------------------------------------------------------ protection under AND faults
P_AND = 2e-3
ROWS, SAMPLES = 8, 2000
ROW_TERMS = ROWS * 64  # per sample, 8 x 8-bit terms


def _faulty(plan: str) -> tuple[int, RunResult]:
    linked = program(8, 8, 0, _plans(64)[plan], ROWS)
    w, x = operands(8, 8, 0, ROWS, SAMPLES, seed=5)
    res = run_mac(linked, w, x, FaultModel({"and": Rate(P_AND, P_AND)}, name="and only"), seed=11)
    want = (w.astype(np.int64) * x).sum(axis=-1).reshape(-1)
    return int((res.outputs["y"].reshape(-1) != want).sum()), res


def _poisson_bound(mean: float) -> float:
    return mean + 5 * math.sqrt(mean) + 1


def test_unprotected_fails_with_any_and_fault() -> None:
    wrong, res = _faulty("plain")
    ands = SAMPLES * ROW_TERMS
    assert abs(res.counts.faults_injected - ands * P_AND) < 5 * math.sqrt(ands * P_AND)
    any_fault = SAMPLES * (1 - (1 - P_AND) ** ROW_TERMS)
    sigma = math.sqrt(any_fault * (1 - any_fault / SAMPLES))
    # a wrong output needs a fault; two faults cancel only rarely (same b + c, opposite signs)
    assert any_fault * 0.9 - 5 * sigma < wrong <= any_fault + 5 * sigma, (wrong, any_fault)


def test_dup_is_wrong_only_when_both_copies_fail_and_recomputes_disagreements() -> None:
    wrong, res = _faulty("dup")
    assert wrong <= _poisson_bound(SAMPLES * ROW_TERMS * P_AND**2), wrong
    want = SAMPLES * ROW_TERMS * 2 * P_AND * (1 - P_AND)
    assert abs(res.counts.recomputes - want) < 5 * math.sqrt(want), (res.counts.recomputes, want)
    assert res.counts.faults_injected > 0.9 * want


@pytest.mark.parametrize("plan", ["vote", "tmr"])
def test_triple_copies_outvote_a_single_and_fault(plan: str) -> None:
    wrong, res = _faulty(plan)
    two_of_three = 3 * P_AND**2 - 2 * P_AND**3
    assert wrong <= _poisson_bound(SAMPLES * ROW_TERMS * two_of_three), wrong
    ands = SAMPLES * ROW_TERMS * 3
    assert abs(res.counts.faults_injected - ands * P_AND) < 5 * math.sqrt(ands * P_AND)
    assert res.counts.recomputes == 0
