"""Pass lower-tiles: the row-parallel micro-program that computes one output of a tile.

For weights of `wbits` bits (two's complement) and inputs of `xbits` bits
(two's complement if `xsigned`), output y of an array accumulates

    y += sum over b < wbits, c < xbits of  s(b, c) * 2^(b+c) * popcount(w_b AND x_c)

where s(b, c) = -1 when exactly one of (b, c) is a sign bit.  Each term is one
CRAM AND gate into the scratch column (row-parallel over the K rows) and one
adder-tree operation (tadd or tsub with shift b + c): the CRAM-ER hybrid, where
the in-array work is a single gate per partial-product bit and the carries
happen in the CMOS tree.  One micro-program exists per (wbits, xbits, xsigned).
"""

from __future__ import annotations

from cramc.isa import ast


def mac_name(wbits: int, xbits: int, xsigned: int) -> str:
    return f"mac_w{wbits}x{xbits}{'s' if xsigned else 'u'}"


def _e(name: str, off: int = 0) -> ast.Expr:
    return ast.Expr(name, off)


def mac_micro(wbits: int, xbits: int, xsigned: int) -> ast.Micro:
    body: list[ast.Stmt] = []
    for b in range(wbits):
        for c in range(xbits):
            neg = (b == wbits - 1) != (xsigned and c == xbits - 1)
            body.append(ast.Instr("and", None, (_e("t"), _e("w", b), _e("x", c))))
            body.append(ast.Instr("tsub" if neg else "tadd", None, (_e("y"), _e("t"), ast.Num(b + c))))
    params = (ast.Param("col", "w"), ast.Param("col", "x"), ast.Param("col", "t"), ast.Param("acc", "y"))
    sign = "signed" if xsigned else "unsigned"
    return ast.Micro(mac_name(wbits, xbits, xsigned), params, tuple(body),
                     f"; y += w . x over the active rows: {wbits}-bit signed weights, {xbits}-bit {sign} inputs")
