"""The serial CRAM-only lowering of `mvm` (``cramc compile --reduce cram-serial``): accumulate row after row.

This is the CRAM-only baseline as prior CRAM DNN work builds it and as the
CRAM-ER abstract describes it ("the large number of sequential MRAM writes"):
the K partial products of an output are added one after another by an
in-array ripple-carry adder, every carry a sequence of gate writes.  The
log-depth lowering (``--reduce cram``, cramc.backend.cram_only) is the
strongest in-array baseline; this one is the one the claims are about.

Mapping: exactly the log-depth lowering's (weight-stationary, the same tile
pass and column layout, the same multiplier, `CramOnlyLayer`); only the
reduction differs.  With the products p[k] of an output in area u of rows
0..n-1 and A = wbits + xbits + ceil(log2 n) accumulator bits, for k = 1 .. n-1:

1. ``rd`` row k's product (wbits + xbits bits) into a CMOS tensor: gates are
   row-parallel over the same columns, so a value moves to another row only
   through the periphery (a sense and a write);
2. ``wr`` it, sign-extended to A bits, into row 0's incoming area (one
   column above the free sum area: u and v swap roles every step);
3. ``call raddA``: an A-bit ripple-carry adder (`acc_micro`) in row 0 adds
   it to the running sum, the result one column down, carry out dropped.

then ``rd`` row 0's sum.  Per output and round that is n - 1 additions of
4A - 1 gates each (four per full adder: MAJ3 carry, NOT carry into two
cells, MAJ5 sum; the top bit's MIN3 gives NOT carry directly, a COPY its
second cell), against the log-depth lowering's ceil(log2 n) levels of 4W + 3
gates.  The first addition reads row 0's product (wbits + xbits bits) with
its sign bit repeated, the later ones the A-bit sum.

The one-row transfers use the ISA's ``rd``/``wr``, costed like every
periphery access: by their bits through the chip-wide port (cramc.cost), so
a transfer of A bits costs A / ops_per_cycle write cycles, not a full write
cycle; a machine that pays one write and one sense cycle per transfer adds
that per addition (docs/comparison.md gives the share).  No instruction is
added to the ISA: an inter-row copy is exactly a read and a write.

Error correction: as for the log-depth lowering, ``tmr`` of the partial
products (three gates and a MAJ3 vote in the array); the adders' gates are
unprotected (`cramc.backend.cram_only.tmr_terms`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cramc.backend.cram_only import (
    C_OFF,
    T_OFF,
    ZERO_OFF,
    CramOnlyLayer,
    CramOnlyMvm,
    Layout,
    _e,
    _full_adder,
    _g,
    _ins,
    eff_wbits,
    levels,
)
from cramc.backend.emit import ProgramBuilder
from cramc.errors import InternalError
from cramc.ir.graph import Op
from cramc.ir.tiling import Tile
from cramc.isa import ast


def acc_width(wbits: int, xbits: int, rows: int) -> int:
    """Bits of the running sum of `rows` products of eff_wbits(wbits) + xbits bits: it never overflows."""
    return eff_wbits(wbits) + xbits + levels(rows)


def acc_name(a_bits: int, width: int) -> str:
    return f"radd{width}" if a_bits == width else f"radd{width}_a{a_bits}"


def acc_micro(a_bits: int, width: int) -> ast.Micro:
    """b-1 .. b+width-2 = a + b mod 2^width in every active row: b has `width` bits, a has `a_bits` <= width.

    A ripple-carry adder of majority-gate full adders (4 gates each) and a 3-gate top bit (MIN3 gives
    NOT carry, a COPY its second cell, the carry out is dropped): 4 * width - 1 gates.  a's sign bit is
    read again for every bit above a_bits (sign extension).  Sum bit i goes where b's bit i-1 was
    (already read), so no gate writes a cell it reads.
    """
    if not 1 <= a_bits <= width or width < 2:
        raise InternalError(f"accumulator adder of {a_bits} + {width} bits")
    C = (_e("f", C_OFF), _e("f", C_OFF + 1))
    T, T2, Z = _e("f", T_OFF), _e("f", T_OFF + 1), _e("f", ZERO_OFF)

    def a(i: int) -> ast.Expr:
        return _e("a", min(i, a_bits - 1))

    body: list[ast.Stmt] = []
    for i in range(width - 1):
        cin = Z if i == 0 else C[(i - 1) % 2]
        body += _full_adder(_e("b", i - 1), a(i), _e("b", i), cin, C[i % 2], T, T2)
    top = width - 1
    cin = Z if top == 0 else C[(top - 1) % 2]
    body += [
        _g("min3", T, a(top), _e("b", top), cin, comment="; top bit: carry out dropped"),
        _g("copy", T2, T),
        _g("maj5", _e("b", top - 1), a(top), _e("b", top), cin, T, T2),
    ]
    params = tuple(ast.Param("col", n) for n in ("a", "b", "f"))
    ext = "" if a_bits == width else f", a sign-extended from {a_bits} bits"
    return ast.Micro(
        acc_name(a_bits, width),
        params,
        tuple(body),
        f"; b-1.. = a + b mod 2^{width}: serial accumulation step, ripple carry{ext}",
    )


def serial_reduce(
    b: ProgramBuilder,
    body: list[ast.Stmt],
    region: tuple[int, int],
    lay: Layout,
    rows: int,
    wp: int,
    tmp: str,
    result: ast.TensorRef,
) -> None:
    """Add one output's products of rows 1..rows-1 into row 0 one after another, then read row 0."""
    width = wp + levels(rows)
    own, a_bits, side = lay.u, wp, 0
    areas = (lay.u, lay.v)
    for k in range(1, rows):
        body.append(_ins("rd", region, ast.TensorRef(tmp), ast.Col(lay.u), bits=ast.Num(wp), rows=ast.Range(k, k + 1)))
        inc = areas[1 - side] + 1
        body.append(_ins("wr", region, ast.Col(inc), ast.TensorRef(tmp), bits=ast.Num(width), rows=ast.Range(0, 1)))
        name = b.micro(acc_name(a_bits, width), functools.partial(acc_micro, a_bits, width))
        body.append(
            _ins(
                "call",
                region,
                ast.Expr(name),
                a=ast.Col(own),
                b=ast.Col(inc),
                f=ast.Col(lay.f),
                rows=ast.Range(0, 1),
            )
        )
        own, a_bits, side = inc - 1, width, 1 - side
    body.append(_ins("rd", region, result, ast.Col(own), bits=ast.Num(a_bits), rows=ast.Range(0, 1)))


@dataclass(frozen=True)
class CramSerialLayer(CramOnlyLayer):
    """One serial CRAM-only MVM layer: the log-depth layer's layout and multiplier, the serial reduction."""

    def comment(self, out: str, tile: str) -> str:
        wp = self.wbits + self.xbits
        return (
            f"; mvm %{out}, CRAM-only serial: {tile}; per output: {self.wbits}x{self.xbits}-bit in-array multiply, "
            f"the rows' products added one after another in row 0 ({wp + self.levels}-bit ripple-carry adder)"
        )

    def reduce_output(
        self,
        b: ProgramBuilder,
        body: list[ast.Stmt],
        region: tuple[int, int],
        rows: int,
        tmp: str,
        result: ast.TensorRef,
    ) -> None:
        serial_reduce(b, body, region, self.lay, rows, self.wbits + self.xbits, tmp, result)


@dataclass(frozen=True)
class CramSerialMvm(CramOnlyMvm):
    """The `MvmLowering` of ``--reduce cram-serial``: in-array multiply, row-after-row in-array accumulation."""

    name: str = "cram-serial"
    reports_reloads: bool = False

    def chip_line(self, arrays: int, rows: int, cols: int) -> str:
        return (
            f"; chip: {arrays} CRAM arrays of {rows} x {cols}; MVMs CRAM-only, serial: in-array multipliers, "
            f"partial sums moved row by row through the periphery and added one after another by ripple-carry "
            f"majority-gate adders (prior-work baseline, no adder tree)"
        )

    def layer(self, b: ProgramBuilder, op: Op, tile: Tile) -> CramSerialLayer:
        a = op.attrs
        mul = self.multiplier(b, op)
        return CramSerialLayer(
            Layout.from_attr(a["cram_cols"]), eff_wbits(a["wbits"]), a["xbits"], mul, levels(tile.rows)
        )
