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
distinct (wbits, xbits, xsigned, plan, double buffering).

Double-buffered (the layer's ``dbuf=1``, cramc.ir.passes.tile_mvm): a term uses
S scratch columns (S = the largest scratch of the plan's schemes); the odd terms
(in the order b, then c) use t+S .. t+2S-1 instead of t .. t+S-1, so the AND of
term k+1 writes columns the adder-tree operation of term k does not sense, and the
two may proceed together (cramc.cost.timeline).  The result is the same: every
term still writes its scratch columns before its tree operation senses them.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from cramc.ir.ecc import describe, replicas, scheme
from cramc.ir.tiling import plan_scratch
from cramc.isa import ast


def mac_name(wbits: int, xbits: int, xsigned: int, plan: list[int] | None = None, double: bool = False) -> str:
    base = f"mac_w{wbits}x{xbits}{'s' if xsigned else 'u'}{'_db' if double else ''}"
    if not plan or not any(plan):
        return base
    if len(set(plan)) == 1:
        return f"{base}_{scheme(plan[0]).name}"
    digest = hashlib.sha1(bytes(plan)).hexdigest()[:6]
    return f"{base}_ecc{digest}"


def _shift_scratch(stmts: list[ast.Stmt], by: int) -> list[ast.Stmt]:
    """The statements with every scratch operand t+o moved to t+o+by (the other buffer)."""
    out: list[ast.Stmt] = []
    for s in stmts:
        if isinstance(s, ast.Instr):
            ops = tuple(
                ast.Expr("t", v.offset + by) if isinstance(v, ast.Expr) and v.name == "t" else v for v in s.operands
            )
            s = replace(s, operands=ops)
        out.append(s)
    return out


def mac_micro(wbits: int, xbits: int, xsigned: int, plan: list[int] | None = None, double: bool = False) -> ast.Micro:
    body: list[ast.Stmt] = []
    apart = replicas(plan) > 1  # strides of the operand replicas, only when the layer stores them
    wstride, xstride = (wbits, xbits) if apart else (0, 0)
    width = plan_scratch(plan)  # one buffer's columns
    for b in range(wbits):
        for c in range(xbits):
            neg = (b == wbits - 1) != bool(xsigned and c == xbits - 1)
            term = scheme(plan[b * xbits + c] if plan else 0).term(b, c, neg, wstride, xstride)
            odd = double and (b * xbits + c) % 2 == 1
            body.extend(_shift_scratch(term, width) if odd else term)
    params = (ast.Param("col", "w"), ast.Param("col", "x"), ast.Param("col", "t"), ast.Param("acc", "y"))
    sign = "signed" if xsigned else "unsigned"
    note = f"; y += w . x over the active rows: {wbits}-bit signed weights, {xbits}-bit {sign} inputs"
    if plan and any(plan):
        note += f"; error correction: {describe(plan, wbits, xbits)}"
    if apart:
        note += f"; {replicas(plan)} operand replicas: x + i*{xbits}, w + i*{wbits}"
    if double:
        note += f"; double-buffered scratch: odd terms use t+{width}"
    return ast.Micro(mac_name(wbits, xbits, xsigned, plan, double), params, tuple(body), note)
