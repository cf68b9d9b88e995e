"""The error-correction schemes of a partial-product bit: one registry, one entry per scheme.

In the CRAM-ER hybrid mapping every partial-product bit w_b AND x_c of an MVM
is one term of the MAC micro-program (cramc.backend.lower_tiles): gates that
compute it into scratch columns, then one adder-tree operation that senses,
shifts by b + c and accumulates.  A scheme says how one term is made robust:

- ``none``: one AND into t, ``tadd``/``tsub`` of t;
- ``tmr``:  three ANDs into t, t+1, t+2 and a MAJ3 vote into t+3 (a CRAM gate,
  which fails like one), ``tadd``/``tsub`` of t+3;
- ``vote``: three ANDs, then ``tvadd``/``tvsub``: the CMOS periphery votes the
  three sensed copies before the tree;
- ``dup``:  two ANDs, then ``tdadd``/``tdsub``: the periphery compares the copies
  and recomputes the rows where they differ in CMOS from the sensed operands.

Every copy of those reads the same weight cell and input cell, so a defective
operand cell (stuck, or written wrong once per chip) corrupts every copy alike:
the vote cannot outvote it and the comparison cannot see it.  The *replica*
entries (``tmr_r3``, ``vote_r3``, ``dup_r2``, ``dup_r3``) place the copies apart:
the layer's weights and input bit-planes are stored `replicas` times in distinct
columns (replica i of the inputs at x + i*xbits, of output j's weights at
w + i*wbits within its block of replicas*wbits columns), and copy i reads
replica i.  ``dup_r2`` recomputes a disagreeing row from replica 0 (it detects a
bad operand cell in either replica and corrects one in replica 1); ``dup_r3``
keeps a third operand replica that only the recompute senses, so it corrects a
bad cell in any one replica.  Replicas cost columns (tiling fits fewer outputs
per array) and writes (the weights once per chip, the inputs every inference);
against switching faults they change nothing, so their error rates are their
base scheme's.  Copies in different *rows* are not possible in the row-parallel
mapping: a row is one lane of the dot product, and the adder tree sums the rows.

Each entry carries everything the compiler and the statistical model need:
its name in ``--ecc`` specs, its code in the IR's ``ecc=[...]`` plans, how a
term is lowered (from which the scratch columns tiling reserves and the
in-array operations auto-placement pays for are read off), the probabilities
that the sensed product is wrong under a fault model (cramc.ir.noisy,
auto-ecc, error-aware fine-tuning), and, for a scheme whose periphery
recomputes rows, the expected number of recomputes (`cramc sweep`'s
statistical mode).  Adding a scheme is adding one entry to SCHEMES (and, if
its tree operation is new, that instruction to the ISA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cramc.errors import InternalError
from cramc.isa import ast
from cramc.isa.opcodes import OPCODES, Unit

if TYPE_CHECKING:
    from cramc.errmodel import FaultModel

#: P(the sensed product is wrong | k of its two operand bits w_b, x_c are 1), for k = 0, 1, 2.  The correct
#: product is 0 for k = 0 and 1, and 1 for k = 2.  The four operand states (w, x) reduce to k because every
#: scheme is symmetric in w and x (an AND gate's rate depends on how many inputs are 1, by_ones; the reads of
#: w and x have the same rates).  With output-conditioned gate rates (p01, p10) and no recompute, k = 0 and
#: k = 1 have the same rate; with by_ones they differ (an AND with one input at 1 is next to its threshold).
Rates = tuple[float, float, float]
#: The operand-bit counts k = w_b + x_c whose correct product is 0, and the one whose product is 1.
PRODUCT_ZERO, PRODUCT_ONE = (0, 1), 2


@dataclass(frozen=True)
class Term:
    """One partial-product term of a MAC micro-program: weight bit b, input bit c, subtracted or added."""

    b: int
    c: int
    neg: bool  # exactly one of the two bits is a two's-complement sign bit
    wbits: int = 0  # columns between weight replicas (the weight width); 0 when the layer has no replicas
    xbits: int = 0  # columns between input replicas (the input width)

    def operands(self, replica: int) -> tuple[ast.Expr, ast.Expr]:
        """The weight and input bit this term reads in operand replica `replica` (0: the only one without)."""
        return _e("w", self.b + replica * self.wbits), _e("x", self.c + replica * self.xbits)

    @property
    def sig(self) -> int:
        return self.b + self.c


@dataclass(frozen=True)
class Recompute:
    """A scheme whose periphery recomputes some sensed rows in CMOS (counted as ``recomputes``)."""

    sensed: int  # cells the periphery senses per recomputed row (the operands)
    #: expected recomputes of `rows` rows sensed by the scheme's tree operations, under a fault model
    expected: Callable[[float, FaultModel], float]


@dataclass(frozen=True)
class Scheme:
    """One error-correction scheme (see the module docstring); `lower` and `pp_error_rates` define it."""

    name: str  # in --ecc specs and micro-program names
    code: int  # in the IR's ecc=[...] plans (0 is none, the default)
    copies: int  # AND gates that compute the partial product, into scratch columns t, t+1, ...
    tree: tuple[str, str]  # the adder-tree instruction that senses the term: (adding, subtracting)
    lower: Callable[[Scheme, Term], list[ast.Stmt]]  # the term's statements, parameters w, x, t, y
    pp_error_rates: Callable[[FaultModel], Rates]  # P(sensed product wrong | k = w_b + x_c), k = 0, 1, 2
    recompute: Recompute | None = None
    #: operand replicas the layer stores (weights and input bit-planes, distinct columns); copy i reads replica
    #: i (a ``dup`` with 3 recomputes from replica 2).  1: every copy reads the one stored operand.
    replicas: int = 1

    def term(self, b: int, c: int, neg: bool, wbits: int = 0, xbits: int = 0) -> list[ast.Stmt]:
        """The statements of term (b, c) of a MAC micro-program under this scheme; wbits and xbits (the layer's
        widths) place the operand replicas, and are needed only when a scheme of the layer has replicas."""
        return self.lower(self, Term(b, c, neg, wbits, xbits))

    def replica(self, copy: int) -> int:
        """The operand replica that copy `copy` (or, for copy == copies, a recompute) reads."""
        return copy if copy < self.replicas else 0

    @property
    def scratch(self) -> int:
        """Scratch columns a term uses (t, t+1, ...): what tiling and allocation reserve."""
        used = [
            v.offset
            for s in self.term(0, 0, False)
            if isinstance(s, ast.Instr)
            for v in s.operands
            if isinstance(v, ast.Expr) and v.name == "t"
        ]
        return max(used) + 1

    def extra_writes(self, wbits: int) -> float:
        """Operand bit-planes written per inference per partial-product term beyond one stored copy, for one
        output: the (replicas - 1) extra input bit-planes, spread over the output's wbits x xbits terms.  An upper
        bound (outputs sharing an array share their input's writes); the weights' replicas are written once per
        chip.  What auto-ecc pays for replicas on top of `ops_per_term`."""
        return (self.replicas - 1) / wbits

    @property
    def ops_per_term(self) -> int:
        """In-array operations per partial-product bit (CRAM gates and adder-tree operations, which serialise
        in the arrays): what auto-ecc pays for."""
        units = (Unit.GATE, Unit.TREE)
        return sum(isinstance(s, ast.Instr) and OPCODES[s.mnemonic].unit in units for s in self.term(0, 0, False))


# ----------------------------------------------------------------------------- lowering
def _e(name: str, off: int = 0) -> ast.Expr:
    return ast.Expr(name, off)


def _copies(s: Scheme, t: Term) -> list[ast.Stmt]:
    """The scheme's AND copies into t, t+1, ..., copy i from operand replica s.replica(i); a protected term's
    first names its scheme."""
    out: list[ast.Stmt] = [ast.Instr("and", None, (_e("t", i), *t.operands(s.replica(i)))) for i in range(s.copies)]
    if s.code:
        out[0] = ast.Instr("and", None, (_e("t"), *t.operands(s.replica(0))), (), f"; {s.name}: b+c={t.sig}")
    return out


def _tree(s: Scheme, t: Term) -> str:
    return s.tree[1] if t.neg else s.tree[0]


def _lower_single(s: Scheme, t: Term) -> list[ast.Stmt]:
    return [*_copies(s, t), ast.Instr(_tree(s, t), None, (_e("y"), _e("t"), ast.Num(t.sig)))]


def _lower_tmr(s: Scheme, t: Term) -> list[ast.Stmt]:
    vote = ast.Instr("maj3", None, (_e("t", 3), _e("t"), _e("t", 1), _e("t", 2)))
    return [*_copies(s, t), vote, ast.Instr(_tree(s, t), None, (_e("y"), _e("t", 3), ast.Num(t.sig)))]


def _lower_vote(s: Scheme, t: Term) -> list[ast.Stmt]:
    copies = tuple(_e("t", i) for i in range(s.copies))
    return [*_copies(s, t), ast.Instr(_tree(s, t), None, (_e("y"), *copies, ast.Num(t.sig)))]


def _lower_dup(s: Scheme, t: Term) -> list[ast.Stmt]:
    # the recompute senses the operands of replica s.replica(2): replica 2 when there is a third, else replica 0
    operands = (_e("y"), _e("t"), _e("t", 1), *t.operands(s.replica(s.copies)), ast.Num(t.sig))
    return [*_copies(s, t), ast.Instr(_tree(s, t), None, operands)]


# ----------------------------------------------------------------------------- error rates
def _through_read(wrong: float, correct: int, r01: float, r10: float) -> float:
    """P(sensed value wrong) of a cell that is wrong with probability `wrong` (its correct value `correct`), read
    with flip rates r01, r10."""
    if correct:
        return wrong * (1 - r01) + (1 - wrong) * r10
    return wrong * (1 - r10) + (1 - wrong) * r01


def _maj3_wrong(e: float) -> float:
    return 3 * e * e * (1 - e) + e**3


def _and_wrong(fm: FaultModel) -> Rates:
    """P(one AND gate's output is wrong) with k = 0, 1, 2 of its inputs at 1."""
    return fm.gate_wrong("and", 0), fm.gate_wrong("and", 1), fm.gate_wrong("and", 2)


def _rates_none(fm: FaultModel) -> Rates:
    a, r = _and_wrong(fm), fm.read
    e0, e1, e2 = (_through_read(a[k], int(k == PRODUCT_ONE), r.p01, r.p10) for k in range(3))
    return e0, e1, e2


def _voted(a: float, correct: int, fm: FaultModel) -> float:
    """P(a MAJ3 gate voting three copies, each wrong independently with probability a, outputs the wrong value).

    j copies wrong puts 3 - j (correct 1) or j (correct 0) of the voter's inputs at 1; its output is wrong when
    exactly one of (most copies are wrong, j >= 2) and (the voter itself fails at that input count) holds.
    """
    ones = [3 - j if correct else j for j in range(4)]
    gw = [fm.gate_wrong("maj3", o) for o in ones]
    q = _maj3_wrong(a)  # P(j >= 2)
    low = (1 - q) * gw[0] if gw[0] == gw[1] else (1 - a) ** 3 * gw[0] + 3 * a * (1 - a) ** 2 * gw[1]
    high = q * (1 - gw[2]) if gw[2] == gw[3] else 3 * a * a * (1 - a) * (1 - gw[2]) + a**3 * (1 - gw[3])
    return low + high


def _rates_tmr(fm: FaultModel) -> Rates:
    # the three ANDs read the same operand cells, so they see the same k; their faults are independent
    a, r = _and_wrong(fm), fm.read
    e0, e1, e2 = (
        _through_read(_voted(a[k], int(k == PRODUCT_ONE), fm), int(k == PRODUCT_ONE), r.p01, r.p10) for k in range(3)
    )
    return e0, e1, e2


def _rates_vote(fm: FaultModel) -> Rates:
    e0, e1, e2 = (_maj3_wrong(e) for e in _rates_none(fm))
    return e0, e1, e2


def _recompute_wrong(k: int, fm: FaultModel) -> float:
    """P(the CMOS recompute AND(sensed w, sensed x) is wrong) with k of w, x at 1."""
    r = fm.read
    if k == 2:
        return 1 - (1 - r.p10) ** 2  # either 1 misread as 0
    if k == 1:
        return r.p01 * (1 - r.p10)  # the 0 misread as 1 and the 1 read right
    return r.p01 * r.p01  # both 0s misread as 1


def _rates_dup(fm: FaultModel) -> Rates:
    # copies agree and are both wrong; or they disagree and the CMOS recompute (from sensed w, x) is wrong
    e = _rates_none(fm)
    e0, e1, e2 = (e[k] * e[k] + 2 * e[k] * (1 - e[k]) * _recompute_wrong(k, fm) for k in range(3))
    return e0, e1, e2


def _dup_recomputes(rows: float, fm: FaultModel) -> float:
    """Rows whose two copies disagree: 2 e (1 - e) of those sensed, e one copy's sensed-product error.  The
    operand states of the rows are not known here, so e is the largest over k = w_b + x_c: exact when the rate
    does not depend on k, else an upper bound."""
    e = max(_rates_none(fm))
    return rows * 2 * e * (1 - e)


NONE = Scheme("none", 0, 1, ("tadd", "tsub"), _lower_single, _rates_none)
TMR = Scheme("tmr", 1, 3, ("tadd", "tsub"), _lower_tmr, _rates_tmr)
VOTE = Scheme("vote", 2, 3, ("tvadd", "tvsub"), _lower_vote, _rates_vote)
DUP = Scheme("dup", 3, 2, ("tdadd", "tdsub"), _lower_dup, _rates_dup, Recompute(2, _dup_recomputes))

# the same schemes with their copies apart, on operand replicas (module docstring)
TMR_R3 = Scheme("tmr_r3", 4, 3, TMR.tree, _lower_tmr, _rates_tmr, replicas=3)
VOTE_R3 = Scheme("vote_r3", 5, 3, VOTE.tree, _lower_vote, _rates_vote, replicas=3)
DUP_R2 = Scheme("dup_r2", 6, 2, DUP.tree, _lower_dup, _rates_dup, DUP.recompute, replicas=2)
DUP_R3 = Scheme("dup_r3", 7, 2, DUP.tree, _lower_dup, _rates_dup, DUP.recompute, replicas=3)

#: Every scheme, in the order specs and messages list them.
SCHEMES: tuple[Scheme, ...] = (NONE, TMR, VOTE, DUP, TMR_R3, VOTE_R3, DUP_R2, DUP_R3)
BY_NAME: dict[str, Scheme] = {s.name: s for s in SCHEMES}
_BY_CODE: dict[int, Scheme] = {s.code: s for s in SCHEMES}
if len(BY_NAME) != len(SCHEMES) or len(_BY_CODE) != len(SCHEMES) or _BY_CODE.get(0) is not NONE:
    raise InternalError("ecc schemes need distinct names and codes, and code 0 must be none")


def scheme(code: int) -> Scheme:
    """The scheme of a plan entry."""
    s = _BY_CODE.get(code)
    if s is None:
        raise ValueError(f"unknown scheme {code}")
    return s


def protections() -> list[Scheme]:
    """The schemes auto-ecc may choose, cheapest first (so that a tie in gain per cost goes to the cheaper; the
    replicas, which cost writes on top of their base scheme's operations, after it)."""
    return sorted((s for s in SCHEMES if s is not NONE), key=lambda s: (s.ops_per_term, s.replicas, s.code))


def replicas(plan: list[int] | None) -> int:
    """Operand replicas a layer with this plan stores: the most any of its terms' schemes reads."""
    return max((scheme(c).replicas for c in set(plan or [])), default=1)


def recomputing() -> list[tuple[Scheme, Recompute]]:
    """The schemes whose periphery recomputes rows, with how: one per adder-tree instruction (the rows are counted
    per instruction, and dup's replica forms recompute as dup does with its instructions)."""
    out: dict[tuple[str, str], tuple[Scheme, Recompute]] = {}
    for s in SCHEMES:
        if s.recompute is not None:
            out.setdefault(s.tree, (s, s.recompute))
    return list(out.values())


def describe(plan: list[int], wbits: int, xbits: int) -> str:
    """'b+c 0..9: none, b+c 10..14: tmr'-style summary of a plan (one code per (b, c), b major)."""
    by_sig: dict[int, set[int]] = {}
    for i, code in enumerate(plan):
        by_sig.setdefault(i // xbits + i % xbits, set()).add(code)
    parts: list[tuple[int, str, int]] = []
    for s in sorted(by_sig):
        names = "/".join(scheme(c).name for c in sorted(by_sig[s]))
        if parts and parts[-1][1] == names:
            parts[-1] = (parts[-1][0], names, s)
        else:
            parts.append((s, names, s))
    return ", ".join(f"b+c {a}..{z}: {n}" if a != z else f"b+c {a}: {n}" for a, n, z in parts)
