"""The CRAM-only lowering of `mvm` (``cramc compile --reduce cram``): multiply and accumulate in the arrays.

This is the baseline that the CRAM-ER claims are measured against: CRAM
without a CMOS adder tree.  Every product and every addition of the K
reduction is a chain of majority-gate full adders inside the arrays
(Cout = MAJ3(a, b, c), Sum = MAJ5(a, b, c, NOT Cout, NOT Cout), NOT Cout in two
cells: one cell cannot be two inputs of a gate), and partial
sums move between rows the only way CRAM can move them: through the
periphery (``rd`` into a CMOS tensor, CMOS layout, ``wr`` into other rows).
No adder-tree (``tadd``/``tsub``) or accumulator instruction is emitted.

Mapping, the same in every array of a layer (weight-stationary, as the
hybrid): row k of an array holds x[k] (xbits columns, written every round)
and the weights w[n, k] of `per` outputs (wbits columns each, resident).
Per output, one after another, every round:

1. multiply: every active row runs a shift-and-add multiplier
   (`mul_micro`): AND partial products, NAND where exactly one factor is a
   sign bit, and the Baugh-Wooley constants injected as carry-ins, one
   preset bit and a flipped top bit, so p[k] = w[n, k] * x[k] exactly, in
   wbits + xbits two's-complement bits.  The multiplier steps over the wider
   operand, which is what makes every constant placeable.
2. reduce: ceil(log2(rows)) levels.  With n rows active and h = ceil(n / 2),
   rows h..n-1 are read (``rd``), padded with zeros to h rows in CMOS when n
   is odd, and written sign-extended by one bit (``wr``) into the spare
   area of rows 0..h-1; a ripple-carry adder (`add_micro`) adds them to the
   partial sums already there.  The sum grows by one bit per level.
3. read row 0 (``rd``): the output's sum over the chunk's rows.

The K chunks of an output sit in different arrays; their sums are added in
CMOS, exactly as the hybrid adds its per-chunk accumulators: the weights, the
input layout, the passes and that sum are the program builder's
(cramc.backend.emit), shared with the hybrid; `CramOnlyMvm` is the lowering
strategy the compiler hands it for ``--reduce cram``.

Columns (the pass records them as ``cram_cols=[x, bank, f, u, v, w]``):
x the input bit-planes; bank the multiplier's running sum (min(wbits, xbits)
columns); f seven scratch columns (partial-product bit, two carries, two
cells of NOT carry, constant 0, constant 1); u and v two sum areas of wbits + xbits +
levels + 1 columns each (an adder writes bit i of its result where bit i-1
of its incoming operand was, one column down, so that no gate writes a cell
it reads; the areas swap roles every level); then the weights.  Everything
but the weights is shared by the outputs of an array, so the column budget
decides `per` through the weights alone.

Gate evaluations per output and row (R = min, S = max of wbits, xbits):
multiply R + (S - 1) * 5R - 1; reduce 4W + 3 per level of width W, on the level's h rows.  Each
full adder is four gates: MAJ3 carry, NOT carry twice (the two MAJ5 inputs
must be two cells), MAJ5 sum; where MIN3 gives NOT carry directly, a COPY
makes its second cell.  The hybrid spends wbits * xbits per output and row.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from cramc.backend.emit import MvmPass, ProgramBuilder
from cramc.errors import InternalError, UserError
from cramc.ir.graph import Graph, Op
from cramc.ir.passes.manager import Pass
from cramc.ir.semantics import infer_shapes
from cramc.ir.tiling import Tile
from cramc.isa import ast

#: Scratch columns beside the multiplier's running sum: partial-product bit, carry (two, alternating),
#: NOT carry (two cells: the sum's MAJ5 takes it twice, and one cell cannot be two inputs of a gate),
#: constant 0, constant 1 (offsets from the `f` column).
P_OFF, C_OFF, T_OFF, ZERO_OFF, ONE_OFF = 0, 1, 3, 5, 6
F_COLS = 7
#: With ``--ecc tmr`` on some partial products (`TmrTerms`): the three copies of a protected partial-product
#: bit, voted by a MAJ3 into its destination, sit in three more scratch columns after the seven.
TMR_OFF, TMR_COLS = F_COLS, 3

#: The partial products (weight bit b, input bit c) a layer protects with in-array TMR.
TmrTerms = frozenset[tuple[int, int]]


def tmr_terms(op: Op, reduce: str) -> TmrTerms:
    """The (b, c) terms of `op`'s ecc plan that are ``tmr``; a user error for a scheme the arrays cannot run.

    In the CRAM-only lowerings a partial-product bit is an AND (NAND) gate whose output a full adder
    reads in the array: ``tmr`` (three gates and a MAJ3 vote, all CRAM gates) is lowered as it is for the
    hybrid.  ``vote`` and ``dup`` vote or compare the sensed copies in the adder tree's periphery, and
    these lowerings have no adder tree: no partial product is ever sensed.
    """
    from cramc.ir.ecc import BY_NAME, scheme

    plan = op.attrs.get("ecc", [])
    tmr = BY_NAME["tmr"].code
    bad = sorted({int(c) for c in plan if c and c != tmr})
    if bad:
        names = ", ".join(scheme(c).name for c in bad)
        raise UserError(
            f"layer {op.origin or op.out}: error correction {names} with --reduce {reduce}: it votes or compares "
            f"the sensed copies of a partial product in the adder tree's periphery, and the CRAM-only lowering "
            f"has no adder tree (its partial products are added by in-array full adders, never sensed); "
            f"the scheme that runs in the arrays is tmr (three gates and a MAJ3 vote)"
        )
    xb = op.attrs["xbits"]
    return frozenset((i // xb, i % xb) for i, c in enumerate(plan) if c == tmr)


def eff_wbits(wbits: int) -> int:
    """Weights are stored with at least two bits: a one-bit multiplier has no adder step to take constants."""
    return max(wbits, 2)


def levels(rows: int) -> int:
    """Reduction levels (row halvings) from `rows` rows to one."""
    return max(rows - 1, 0).bit_length()  # ceil(log2(rows)), exactly


@dataclass(frozen=True)
class Layout:
    """Column layout of one CRAM-only MVM (see the module docstring)."""

    x: int
    bank: int
    f: int
    u: int
    v: int
    w: int

    def as_attr(self) -> list[int]:
        return [self.x, self.bank, self.f, self.u, self.v, self.w]

    @staticmethod
    def from_attr(v: Any) -> Layout:
        return Layout(*[int(c) for c in v])


def fixed_columns(wbits: int, xbits: int, rows: int, tmr: bool = False) -> tuple[int, Layout]:
    """Columns an array needs besides the weights, and the layout with the weights at the end.

    `tmr`: some partial products are protected, so the scratch block has the three copy columns too.
    """
    wb = eff_wbits(wbits)
    area = wb + xbits + levels(rows) + 1
    x, bank = 0, xbits
    f = bank + min(wb, xbits)
    u = f + F_COLS + (TMR_COLS if tmr else 0)
    v = u + area
    w = v + area
    return w, Layout(x, bank, f, u, v, w)


def plan_cram_tile(
    k: int, n: int, groups: int, wbits: int, xbits: int, rows: int, cols: int, tmr: bool = False
) -> tuple[Tile | None, Layout, int]:
    """The tile (None when one output does not fit), column layout and minimum columns of one MVM [P, K] x [N, K]^T."""
    kg, ng = k // groups, n // groups
    chunks = math.ceil(kg / rows)
    rows_used = math.ceil(kg / chunks)
    fixed, lay = fixed_columns(wbits, xbits, rows_used, tmr)
    wb = eff_wbits(wbits)
    per = min((cols - fixed) // wb, ng)
    if per < 1:
        return None, lay, fixed + wb
    return Tile(groups, chunks, rows_used, per, math.ceil(ng / per)), lay, fixed + wb


@dataclass(frozen=True)
class TileCramOnly:
    """Pass tile-cram-only: annotate every `mvm` with its tile and columns for the CRAM-only lowering.

    Adds ``tile=[groups, chunks, rows, per, ogroups]`` (cramc.ir.tiling.Tile,
    so the schedule pass places it like a hybrid tile) and
    ``cram_cols=[x, bank, f, u, v, w]`` (see this module's docstring).  K is
    split into chunks of at most `rows` rows; `per` is bounded by the columns
    left for weights only: the CRAM-only MVM uses no accumulators, so `accs`
    is accepted for a uniform signature and not used.  The log-depth (``--reduce cram``) and the
    serial (``--reduce cram-serial``) lowerings share this layout (`reduce` names the one in messages);
    an ecc plan may use ``tmr`` only (`tmr_terms`), which adds three scratch columns.
    """

    rows: int = 256
    cols: int = 256
    accs: int = 64
    name: str = "tile-cram-only"
    reduce: str = "cram"
    requires: ClassVar[frozenset[str]] = frozenset({"no-conv"})
    ensures: ClassVar[frozenset[str]] = frozenset({"tiled", "cram-allocated"})
    changes_input: ClassVar[bool] = True  # sets tile= and cram_cols= on the MVMs in place

    def run(self, g: Graph) -> Graph:
        shapes = infer_shapes(g)
        short: list[tuple[int, Op]] = []  # layers whose one output does not fit: (columns needed, op)
        for op in g.ops:
            if op.kind != "mvm":
                continue
            tmr = bool(tmr_terms(op, self.reduce))
            _, k = shapes[op.ins[0][1:]][0]
            n = g.consts[op.attrs["w"][1:]].shape[0]
            t, lay, need = plan_cram_tile(
                k, n, op.attrs.get("groups", 1), op.attrs["wbits"], op.attrs["xbits"], self.rows, self.cols, tmr
            )
            if t is None:
                short.append((need, op))
                continue
            op.attrs["tile"] = t
            op.attrs["cram_cols"] = lay.as_attr()
        if short:
            need, op = max(short, key=lambda s: s[0])
            a = op.attrs
            raise UserError(
                f"CRAM-only MVM (--reduce {self.reduce}) of layer {op.origin or op.out}: one output needs {need} "
                f"columns "
                f"({a['xbits']} input bit-planes, {need - a['xbits'] - eff_wbits(a['wbits'])} columns of multiplier "
                f"and adder sums and scratch, one {eff_wbits(a['wbits'])}-bit weight), the arrays have {self.cols}; "
                f"use --cols {need} or more"
            )
        return g


# ----------------------------------------------------------------------------- micro-programs
def _e(name: str, off: int = 0) -> ast.Expr:
    return ast.Expr(name, off)


def _g(mn: str, *operands: ast.Value, comment: str | None = None) -> ast.Instr:
    return ast.Instr(mn, None, tuple(operands), (), comment)


def _full_adder(
    s: ast.Expr, a: ast.Expr, b: ast.Expr, cin: ast.Expr, cout: ast.Expr, t: ast.Expr, t2: ast.Expr
) -> list[ast.Stmt]:
    """cout = MAJ3(a, b, cin), s = MAJ5(a, b, cin, NOT cout, NOT cout), NOT cout in two cells t, t2.

    One cell cannot be two inputs of the MAJ5, so NOT cout is written twice:
    two NOTs of the carry rather than a NOT and a COPY of it.  Either wrong
    cell flips the sum of a mixed input (a wrong NOT cout counts once, which
    is enough), so the sum fails with P(t or t2 wrong): 2 p_not for two NOTs,
    p_not + p_copy for a NOT and a COPY.  The device model (cramc.errmodel.device,
    default parameters) has p_copy about 9x p_not and a COPY costs more energy;
    the presets and the technology tables rate them alike.
    """
    return [_g("maj3", cout, a, b, cin), _g("not", t, cout), _g("not", t2, cout), _g("maj5", s, a, b, cin, t, t2)]


@dataclass(frozen=True)
class MulPlan:
    """How a wbits x xbits multiplier is laid out: which operand steps, and where its constants go.

    The row operand `a` (R bits) is ANDed with one bit of the stepping
    operand `b` (S bits) per step.  A partial product a_i b_j is negated
    (NAND) when exactly one of the two is a sign bit; each negation adds the
    constant -2^(i+j), whose sum K (mod 2^(R+S)) enters as: the carry-in of
    step p (1 <= p < S), the preset bit at position R of the running sum
    after step 0, and a flip of the top bit.
    """

    a: str
    r: int
    a_signed: int
    b: str
    s: int
    b_signed: int
    carry_in: frozenset[int]
    preset: int
    flip: int

    def negated(self, i: int, j: int) -> bool:
        return bool(self.a_signed and i == self.r - 1) != bool(self.b_signed and j == self.s - 1)


def mul_plan(wbits: int, xbits: int, xsigned: int) -> MulPlan:
    wb = eff_wbits(wbits)
    if xbits < 2:
        raise UserError(f"CRAM-only MVM (--reduce cram) needs inputs of at least 2 bits, got {xbits}")
    if xbits >= wb:
        a, r, sa, b, s, sb = "w", wb, 1, "x", xbits, int(bool(xsigned))
    else:
        a, r, sa, b, s, sb = "x", xbits, int(bool(xsigned)), "w", wb, 1
    probe = MulPlan(a, r, sa, b, s, sb, frozenset(), 0, 0)
    width = r + s
    k = 0
    for i in range(r):
        for j in range(s):
            if probe.negated(i, j):
                k -= 1 << (i + j)
    k %= 1 << width
    carry_in: set[int] = set()
    preset = flip = 0
    for p in range(width):
        if not (k >> p) & 1:
            continue
        if p == width - 1:
            flip = 1
        elif p == r:
            preset = 1
        elif 1 <= p <= s - 1:
            carry_in.add(p)
        else:
            raise InternalError(f"multiplier w{wbits} x{xbits}: constant 2^{p} has no place")
    return MulPlan(a, r, sa, b, s, sb, frozenset(carry_in), preset, flip)


def mul_name(wbits: int, xbits: int, xsigned: int, tmr: TmrTerms = frozenset()) -> str:
    """The multiplier's name; a protected one adds the bit mask of its TMR terms (bit b * xbits + c)."""
    mask = sum(1 << (b * xbits + c) for b, c in tmr)
    return f"mul_w{eff_wbits(wbits)}x{xbits}{'s' if xsigned else 'u'}" + (f"_tmr{mask:x}" if mask else "")


def mul_micro(wbits: int, xbits: int, xsigned: int, tmr: TmrTerms = frozenset()) -> ast.Micro:
    """y = w * x in every active row: wbits-bit signed w, xbits-bit x, wbits + xbits bits of product.

    Parameters: w, x (the operands' lowest bit-planes), bank (min(wbits,
    xbits) columns of running sum), f (the seven scratch columns), y (the
    product, wbits + xbits columns).  Step 0 writes the first partial product
    as the running sum; step j >= 1 adds partial product j with a
    ripple-carry adder whose lowest sum bit is final (to y) and whose other
    sum bits go one column down in the bank (the cell the previous adder bit
    has finished reading), so the bank always holds positions j .. j+R-1.

    `tmr`: the partial products (weight bit b, input bit c) computed three times into f+7 .. f+9 and
    voted by a MAJ3 into their destination (3 more gates each; a one-bit weight stored in two bits
    protects its sign-extension bit as bit 0).
    """
    pl = mul_plan(wbits, xbits, xsigned)
    r, s = pl.r, pl.s
    P, ZERO, ONE = _e("f", P_OFF), _e("f", ZERO_OFF), _e("f", ONE_OFF)
    C = (_e("f", C_OFF), _e("f", C_OFF + 1))
    T, T2 = _e("f", T_OFF), _e("f", T_OFF + 1)  # NOT carry, twice

    def bank(i: int) -> ast.Expr:
        return _e("bank", i)

    def y(i: int) -> ast.Expr:
        return _e("y", i)

    def pp(i: int, j: int) -> tuple[str, ast.Expr, ast.Expr]:
        return ("nand" if pl.negated(i, j) else "and"), _e(pl.a, i), _e(pl.b, j)

    def protected(i: int, j: int) -> bool:
        wbit, xbit = (i, j) if pl.a == "w" else (j, i)
        return (min(wbit, wbits - 1), xbit) in tmr

    def product(dst: ast.Expr, i: int, j: int, comment: str | None) -> list[ast.Stmt]:
        mn, ai, bj = pp(i, j)
        if not protected(i, j):
            return [_g(mn, dst, ai, bj, comment=comment)]
        copies = [_e("f", TMR_OFF + t) for t in range(3)]
        return [
            _g(mn, copies[0], ai, bj, comment=comment),
            _g(mn, copies[1], ai, bj),
            _g(mn, copies[2], ai, bj),
            _g("maj3", dst, *copies, comment="; tmr: vote the three copies"),
        ]

    body: list[ast.Stmt] = []
    for i in range(r):
        body += product(
            y(0) if i == 0 else bank(i - 1),
            i,
            0,
            "; step 0: the first partial product is the running sum" if i == 0 else None,
        )
    body.append(
        ast.Instr(
            "fill",
            None,
            (bank(r - 1), ast.Num(pl.preset)),
            (),
            f"; bit {r} of the running sum" + (": the Baugh-Wooley constant" if pl.preset else ""),
        )
    )
    for j in range(1, s):
        last = j == s - 1
        for i in range(r):
            body += product(P, i, j, f"; step {j}: add {pl.a} * {pl.b}{j} at 2^{j}" if i == 0 else None)
            cin = (ONE if j in pl.carry_in else ZERO) if i == 0 else C[(i - 1) % 2]
            dst = y(j) if i == 0 else (y(j + i) if last else bank(i - 1))
            if i < r - 1:
                body += _full_adder(dst, bank(i), P, cin, C[i % 2], T, T2)
            elif last and pl.flip:
                top = y(r + s - 1)
                body += [
                    _g("min3", top, bank(i), P, cin, comment="; top bit = NOT carry: adds the constant 2^top"),
                    _g("copy", T, top),
                    _g("maj5", dst, bank(i), P, cin, top, T),
                ]
            else:
                # min3 gives NOT carry directly (its second cell a copy: no carry cell exists yet to NOT), and
                # the carry lands in the cell the gates have just read
                body += [
                    _g("min3", T, bank(i), P, cin),
                    _g("copy", T2, T),
                    _g("maj5", dst, bank(i), P, cin, T, T2),
                    _g("not", y(r + s - 1) if last else bank(i), T),
                ]
    params = tuple(ast.Param("col", n) for n in ("w", "x", "bank", "f", "y"))
    sign = "signed" if xsigned else "unsigned"
    return ast.Micro(
        mul_name(wbits, xbits, xsigned, tmr),
        params,
        tuple(body),
        f"; y = w * x in every active row ({eff_wbits(wbits)}-bit signed w, {xbits}-bit {sign} x, "
        f"Baugh-Wooley, majority-gate full adders)" + (f"; {len(tmr)} partial product(s) tmr" if tmr else ""),
    )


def add_name(width: int) -> str:
    return f"add{width}"


def add_micro(width: int) -> ast.Micro:
    """b-1 .. b+width-1 = a + b in every active row: a has `width` bits, b has width+1 (sign-extended).

    A ripple-carry adder of majority-gate full adders; a's sign bit is read
    twice (sign extension), the carry out of the top bit is dropped.  Sum bit
    i goes where b's bit i-1 was (already read), so the result starts one
    column below b and no gate writes a cell it reads.
    """
    C = (_e("f", C_OFF), _e("f", C_OFF + 1))
    T, T2, Z = _e("f", T_OFF), _e("f", T_OFF + 1), _e("f", ZERO_OFF)
    body: list[ast.Stmt] = []
    for i in range(width):
        cin = Z if i == 0 else C[(i - 1) % 2]
        body += _full_adder(_e("b", i - 1), _e("a", i), _e("b", i), cin, C[i % 2], T, T2)
    a, b, cin = _e("a", width - 1), _e("b", width), C[(width - 1) % 2]
    body += [
        _g("min3", T, a, b, cin, comment="; sign bit: a's sign extended, carry out dropped"),
        _g("copy", T2, T),
        _g("maj5", _e("b", width - 1), a, b, cin, T, T2),
    ]
    params = tuple(ast.Param("col", n) for n in ("a", "b", "f"))
    return ast.Micro(
        add_name(width),
        params,
        tuple(body),
        f"; b-1.. = a + b: {width}-bit + {width + 1}-bit two's complement, ripple carry",
    )


# ----------------------------------------------------------------------------- emission
def _ins(mn: str, arrays: tuple[int, int] | None, *operands: ast.Value, **attrs: ast.Value) -> ast.Instr:
    arr = ast.ArraySet(*arrays) if arrays else None
    return ast.Instr(mn, arr, tuple(operands), tuple(ast.AttrVal(k, v) for k, v in attrs.items()))


def _num(v: int) -> ast.Num:
    return ast.Num(int(v))


def _ints(v: list[int]) -> ast.ListVal:
    return ast.ListVal(tuple(int(x) for x in v))


class _Cmos:
    """Appends CMOS instructions to a statement list; returns the '%name' each defines."""

    def __init__(self, out: list[ast.Stmt]):
        self.out = out

    def __call__(self, mn: str, dst: str, *srcs: str, **attrs: Any) -> str:
        vals: dict[str, ast.Value] = {}
        for k, v in attrs.items():
            vals[k] = _ints(v) if isinstance(v, list) else _num(v)
        ops = tuple(ast.TensorRef(s[1:]) for s in srcs)
        at = tuple(ast.AttrVal(k, v) for k, v in vals.items())
        self.out.append(ast.Instr(mn, None, (ast.TensorRef(dst), *ops), at))
        return "%" + dst


def _reduce_output(
    b: ProgramBuilder,
    body: list[ast.Stmt],
    region: tuple[int, int],
    lay: Layout,
    rows: int,
    wp: int,
    tmp: str,
    result: ast.TensorRef,
) -> None:
    """The log2 reduction of one output's products over rows 0..rows-1, then the read of row 0."""
    cmos = _Cmos(body)
    own, width, n = lay.u, wp, rows
    areas = (lay.u, lay.v)
    side = 0
    while n > 1:
        h = (n + 1) // 2
        moved = n - h
        body.append(_ins("rd", region, ast.TensorRef(tmp), ast.Col(own), bits=_num(width), rows=ast.Range(h, n)))
        src = "%" + tmp
        if moved < h:
            src = cmos("pad", f"{tmp}.z", src, pads=[0, 0, 0, h - moved])
        inc = areas[1 - side] + 1
        body.append(
            _ins("wr", region, ast.Col(inc), ast.TensorRef(src[1:]), bits=_num(width + 1), rows=ast.Range(0, h))
        )
        b.micro(add_name(width), functools.partial(add_micro, width))
        body.append(
            _ins(
                "call",
                region,
                ast.Expr(add_name(width)),
                a=ast.Col(own),
                b=ast.Col(inc),
                f=ast.Col(lay.f),
                rows=ast.Range(0, h),
            )
        )
        own, width, n, side = inc - 1, width + 1, h, 1 - side
    body.append(_ins("rd", region, result, ast.Col(own), bits=_num(width), rows=ast.Range(0, 1)))


@dataclass(frozen=True)
class CramOnlyLayer:
    """One CRAM-only MVM layer: its column layout, multiplier and product width."""

    lay: Layout
    wbits: int  # stored weight bits (eff_wbits)
    xbits: int
    mul: str
    levels: int

    @property
    def x_col(self) -> int:
        return self.lay.x

    @property
    def w_col(self) -> int:
        return self.lay.w

    def comment(self, out: str, tile: str) -> str:
        wp = self.wbits + self.xbits
        return (
            f"; mvm %{out}, CRAM-only: {tile}; per output: {self.wbits}x{self.xbits}-bit in-array multiply, "
            f"{self.levels} in-array adder level(s) to {wp + self.levels} bits"
        )

    def emit_pass(self, b: ProgramBuilder, p: MvmPass, body: list[ast.Stmt]) -> list[str]:
        """The constant columns (once per pass), then per output: multiply every row, reduce, read row 0."""
        lay, rows, region = self.lay, p.tile.rows, p.region
        b.main.append(_ins("fill", region, ast.Col(lay.f + ZERO_OFF), _num(0), rows=ast.Range(0, rows)))
        b.main.append(_ins("fill", region, ast.Col(lay.f + ONE_OFF), _num(1), rows=ast.Range(0, rows)))
        o = p.op.out
        outs = []
        for j in range(p.tile.per):
            body.append(ast.Comment(f"; output {j} of each array: products, then {self.levels} adder level(s)"))
            body.append(
                _ins(
                    "call",
                    region,
                    ast.Expr(self.mul),
                    w=ast.Col(lay.w + j * self.wbits),
                    x=ast.Col(lay.x),
                    bank=ast.Col(lay.bank),
                    f=ast.Col(lay.f),
                    y=ast.Col(lay.u),
                    rows=ast.Range(0, rows),
                )
            )
            name = f"{o}{p.suffix}.y{j}"
            self.reduce_output(b, body, region, rows, f"{o}.mv", ast.TensorRef(name, "r"))
            outs.append("%" + name)
        return outs

    def reduce_output(
        self,
        b: ProgramBuilder,
        body: list[ast.Stmt],
        region: tuple[int, int],
        rows: int,
        tmp: str,
        result: ast.TensorRef,
    ) -> None:
        """Sum one output's products over rows 0..rows-1 into `result`: here in log2 levels (`_reduce_output`)."""
        _reduce_output(b, body, region, self.lay, rows, self.wbits + self.xbits, tmp, result)


@dataclass(frozen=True)
class CramOnlyMvm:
    """The `MvmLowering` of ``--reduce cram``: multiply and reduce in the arrays, no adder tree.

    Its time-multiplexed layers reload their weights as the hybrid's do, but the reloaded bits are not
    reported in the header and on stderr (`reports_reloads`), as before the lowerings shared one builder.
    """

    name: str = "cram"
    reports_reloads: bool = False

    def chip_line(self, arrays: int, rows: int, cols: int) -> str:
        """The program header's chip line for a CRAM-only program."""
        return (
            f"; chip: {arrays} CRAM arrays of {rows} x {cols}; MVMs CRAM-only: in-array multipliers and "
            f"majority-gate adders, partial sums moved through the periphery (log-depth baseline, no adder tree)"
        )

    def tiling(self, rows: int, cols: int, accs: int) -> list[Pass]:
        return [TileCramOnly(rows, cols, accs, reduce=self.name)]

    def multiplier(self, b: ProgramBuilder, op: Op) -> str:
        """Register the layer's multiplier micro-program (with its TMR terms) and return its name."""
        a = op.attrs
        wbits, xb, xs = a["wbits"], a["xbits"], a["xsigned"]
        tmr = tmr_terms(op, self.name)
        return b.micro(mul_name(wbits, xb, xs, tmr), lambda: mul_micro(wbits, xb, xs, tmr))

    def layer(self, b: ProgramBuilder, op: Op, tile: Tile) -> CramOnlyLayer:
        a = op.attrs
        mul = self.multiplier(b, op)
        return CramOnlyLayer(
            Layout.from_attr(a["cram_cols"]), eff_wbits(a["wbits"]), a["xbits"], mul, levels(tile.rows)
        )
