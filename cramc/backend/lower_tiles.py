"""Pass lower-tiles: the row-parallel micro-program that computes one output of a tile.

For weights of `wbits` bits (two's complement) and inputs of `xbits` bits
(two's complement if `xsigned`), output y of an array accumulates

    y += sum over b < wbits, c < xbits of  s(b, c) * 2^(b+c) * popcount(w_b AND x_c)

where s(b, c) = -1 when exactly one of (b, c) is a sign bit.  Each term is one
CRAM AND gate into the scratch column (row-parallel over the K rows) and one
adder-tree operation (tadd or tsub with shift b + c): the CRAM-ER hybrid, where
the in-array work is a single gate per partial-product bit and the carries
happen in the CMOS tree.

Under error correction (the `ecc` plan of the insert-ecc pass) each term is
lowered by its scheme's entry in the registry cramc.ir.ecc (copies of the AND,
a vote in the array or in the periphery, or compare and recompute); each
protected term carries a comment naming its scheme.  A plan with operand
replicas (cramc.ir.ecc's replica schemes) reads copy i of a term from replica
i: the input at x + i*xbits + c, the weight at w + i*wbits + b (the layer lays
out each output's replicas side by side).  One micro-program exists per
distinct (wbits, xbits, xsigned, plan).
"""

from __future__ import annotations

import hashlib

from cramc.ir.ecc import describe, replicas, scheme
from cramc.isa import ast


def mac_name(wbits: int, xbits: int, xsigned: int, plan: list[int] | None = None) -> str:
    base = f"mac_w{wbits}x{xbits}{'s' if xsigned else 'u'}"
    if not plan or not any(plan):
        return base
    if len(set(plan)) == 1:
        return f"{base}_{scheme(plan[0]).name}"
    digest = hashlib.sha1(bytes(plan)).hexdigest()[:6]
    return f"{base}_ecc{digest}"


def mac_micro(wbits: int, xbits: int, xsigned: int, plan: list[int] | None = None) -> ast.Micro:
    body: list[ast.Stmt] = []
    apart = replicas(plan) > 1  # strides of the operand replicas, only when the layer stores them
    wstride, xstride = (wbits, xbits) if apart else (0, 0)
    for b in range(wbits):
        for c in range(xbits):
            neg = (b == wbits - 1) != bool(xsigned and c == xbits - 1)
            body.extend(scheme(plan[b * xbits + c] if plan else 0).term(b, c, neg, wstride, xstride))
    params = (ast.Param("col", "w"), ast.Param("col", "x"), ast.Param("col", "t"), ast.Param("acc", "y"))
    sign = "signed" if xsigned else "unsigned"
    note = f"; y += w . x over the active rows: {wbits}-bit signed weights, {xbits}-bit {sign} inputs"
    if plan and any(plan):
        note += f"; error correction: {describe(plan, wbits, xbits)}"
    if apart:
        note += f"; {replicas(plan)} operand replicas: x + i*{xbits}, w + i*{wbits}"
    return ast.Micro(mac_name(wbits, xbits, xsigned, plan), params, tuple(body), note)
