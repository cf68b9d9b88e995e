"""Pass lower-tiles: the row-parallel micro-program that computes one output of a tile.

For weights of `wbits` bits (two's complement) and inputs of `xbits` bits
(two's complement if `xsigned`), output y of an array accumulates

    y += sum over b < wbits, c < xbits of  s(b, c) * 2^(b+c) * popcount(w_b AND x_c)

where s(b, c) = -1 when exactly one of (b, c) is a sign bit.  Each term is one
CRAM AND gate into the scratch column (row-parallel over the K rows) and one
adder-tree operation (tadd or tsub with shift b + c): the CRAM-ER hybrid, where
the in-array work is a single gate per partial-product bit and the carries
happen in the CMOS tree.

Under error correction (the `ecc` plan of the insert-ecc pass) a term becomes
- tmr:  three ANDs into t, t+1, t+2, a MAJ3 vote into t+3 (a CRAM gate), tadd of t+3;
- vote: three ANDs, then tvadd/tvsub: the CMOS periphery votes before the tree;
- dup:  two ANDs, then tdadd/tdsub: compare, recompute disagreeing rows in CMOS.
Each protected term carries a comment naming its scheme.  One micro-program
exists per distinct (wbits, xbits, xsigned, plan).
"""

from __future__ import annotations

import hashlib

from cramc.ir.passes.insert_ecc import NAMES
from cramc.isa import ast


def mac_name(wbits: int, xbits: int, xsigned: int, plan: list[int] | None = None) -> str:
    base = f"mac_w{wbits}x{xbits}{'s' if xsigned else 'u'}"
    if not plan or not any(plan):
        return base
    if len(set(plan)) == 1:
        return f"{base}_{NAMES[plan[0]]}"
    digest = hashlib.sha1(bytes(plan)).hexdigest()[:6]
    return f"{base}_ecc{digest}"


def _e(name: str, off: int = 0) -> ast.Expr:
    return ast.Expr(name, off)


def _term(b: int, c: int, neg: bool, code: int) -> list[ast.Stmt]:
    w, x, s = _e("w", b), _e("x", c), ast.Num(b + c)
    add, vadd, dadd = ("tsub", "tvsub", "tdsub") if neg else ("tadd", "tvadd", "tdadd")
    if code == 0:
        return [ast.Instr("and", None, (_e("t"), w, x)), ast.Instr(add, None, (_e("y"), _e("t"), s))]
    copies = {1: 3, 2: 3, 3: 2}[code]
    out: list[ast.Stmt] = [ast.Instr("and", None, (_e("t", i), w, x)) for i in range(copies)]
    out[0] = ast.Instr("and", None, (_e("t"), w, x), (), f"; {NAMES[code]}: b+c={b + c}")
    if code == 1:
        out.append(ast.Instr("maj3", None, (_e("t", 3), _e("t"), _e("t", 1), _e("t", 2))))
        out.append(ast.Instr(add, None, (_e("y"), _e("t", 3), s)))
    elif code == 2:
        out.append(ast.Instr(vadd, None, (_e("y"), _e("t"), _e("t", 1), _e("t", 2), s)))
    else:
        out.append(ast.Instr(dadd, None, (_e("y"), _e("t"), _e("t", 1), w, x, s)))
    return out


def mac_micro(wbits: int, xbits: int, xsigned: int, plan: list[int] | None = None) -> ast.Micro:
    body: list[ast.Stmt] = []
    for b in range(wbits):
        for c in range(xbits):
            neg = (b == wbits - 1) != bool(xsigned and c == xbits - 1)
            body.extend(_term(b, c, neg, plan[b * xbits + c] if plan else 0))
    params = (ast.Param("col", "w"), ast.Param("col", "x"), ast.Param("col", "t"), ast.Param("acc", "y"))
    sign = "signed" if xsigned else "unsigned"
    note = f"; y += w . x over the active rows: {wbits}-bit signed weights, {xbits}-bit {sign} inputs"
    if plan and any(plan):
        from cramc.ir.passes.insert_ecc import describe

        note += f"; error correction: {describe(plan, wbits, xbits)}"
    return ast.Micro(mac_name(wbits, xbits, xsigned, plan), params, tuple(body), note)
