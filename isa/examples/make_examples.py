"""Regenerate the hand-designed example programs in this folder.

The committed .cram files are the artefacts; this script only saves typing the
long, regular parts (the 64 bit-plane products of dot256, the 64 full adders
of mul8x8) and computes the embedded validation vectors with numpy, from the
arithmetic each program implements and never from the simulator.  Run it from
anywhere:

    python isa/examples/make_examples.py          # rewrite the .cram files
    python isa/examples/make_examples.py --check  # exit 1 if a file would change

Every file it writes is canonical (`cramc fmt --check` passes): the script
parses and reprints each program before writing it.  Payloads use plain base64
(`b64"..."`), not `b64z`, so the bytes do not depend on the zlib build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cramc.isa import data as tdata
from cramc.isa.parser import parse
from cramc.isa.printer import print_program

HERE = Path(__file__).resolve().parent


def const(name: str, arr: np.ndarray, dtype: str, encoding: str | None = None) -> str:
    """A `.data` line for arr (shape taken from arr)."""
    enc = encoding or ("list" if arr.size <= tdata.INLINE_MAX else "b64")
    shape = ",".join(str(d) for d in arr.shape)
    return f".data ${name} : {dtype}[{shape}] = {tdata.encode(arr, dtype, enc)}"


# ----------------------------------------------------------------------------- full adder
def full_adder() -> str:
    combos = np.array([[(r >> 2) & 1, (r >> 1) & 1, r & 1] for r in range(8)], dtype=np.uint8)
    total = combos.astype(np.int64).sum(axis=1)
    x = combos[None, None]  # [N=1, arrays=1, rows=8, fields=3]
    s = (total & 1)[None, None]
    cout = (total >> 1)[None, None]
    return "\n".join(
        [
            "; One-bit full adder from CRAM majority gates (the primer's construction):",
            ";   Cout = MAJ3(a, b, cin)",
            ";   Sum  = MAJ5(a, b, cin, NOT Cout, NOT Cout)",
            "; NOT Cout is written into two cells: a gate's inputs are separate MTJs, so one",
            "; cell cannot be two of them.  Two NOTs rather than a NOT and a COPY: either",
            "; wrong cell flips the sum, and the device model rates NOT well below COPY.",
            "; Row r holds the input combination r = 4a + 2b + cin, so the 8 rows of one",
            "; array test all combinations at once (exhaustive).",
            ".machine arrays=1 rows=8 cols=7 accs=1",
            "",
            "; x[0, r] = (a, b, cin) of row r, one bit per field",
            ".input x : u8[1,8,3]",
            ".output s : i64[1,8]",
            ".output cout : i64[1,8]",
            "",
            "; validation vectors: the truth table, one sample",
            const("x", x, "u8"),
            const("s", s, "i64"),
            const("cout", cout, "i64"),
            ".expect x=$x s=$s cout=$cout",
            "",
            ".main {",
            "  wr @0 c0, %x bits=1  ; field f lands in column f: a -> c0, b -> c1, cin -> c2",
            "  maj3 @0 c3, c0, c1, c2  ; c3 = Cout",
            "  not @0 c4, c3  ; c4 = NOT Cout",
            "  not @0 c5, c3  ; c5 = NOT Cout again: the MAJ5 counts it twice, from two cells",
            "  maj5 @0 c6, c0, c1, c2, c4, c5  ; c6 = Sum",
            "  rd @0 %s, c6 bits=1 signed=0",
            "  rd @0 %cout, c3 bits=1 signed=0",
            "}",
        ]
    )


# ----------------------------------------------------------------------------- TMR AND
def tmr_and() -> str:
    rows = 16
    r = np.arange(rows)
    x = np.stack([(r >> 1) & 1, r & 1], axis=-1).astype(np.uint8)  # each (a, b) four times
    y = (x[:, 0] & x[:, 1]).astype(np.int64)
    return "\n".join(
        [
            "; Triple modular redundancy: the AND is computed three times into separate",
            "; cells and a MAJ3 gate votes.  A single faulty AND is outvoted; the voter is",
            "; itself a CRAM gate and can fail as often as the gates it protects (see the",
            "; primer: whether this pays off is a measurement).",
            f".machine arrays=1 rows={rows} cols=6 accs=1",
            "",
            "; x[0, r] = (a, b); rows cycle through the four combinations",
            f".input x : u8[1,{rows},2]",
            f".output y : i64[1,{rows}]",
            "",
            const("x", x[None, None], "u8"),
            const("y", y[None, None], "i64"),
            ".expect x=$x y=$y",
            "",
            ".main {",
            "  wr @0 c0, %x bits=1  ; a -> c0, b -> c1",
            "  and @0 c2, c0, c1  ; copy 1",
            "  and @0 c3, c0, c1  ; copy 2",
            "  and @0 c4, c0, c1  ; copy 3",
            "  maj3 @0 c5, c2, c3, c4  ; the vote",
            "  rd @0 %y, c5 bits=1 signed=0",
            "}",
        ]
    )


# ----------------------------------------------------------------------------- adders
FA_MICRO = [
    "; One full adder; t and u are scratch for NOT cout, which the MAJ5 takes twice",
    "; (one MTJ per terminal: a gate's output cell is none of its inputs, and one cell",
    "; is never two inputs of one gate).",
    ".micro fa(col a, col b, col cin, col s, col cout, col t, col u) {",
    "  maj3 cout, a, b, cin",
    "  not t, cout",
    "  not u, cout",
    "  maj5 s, a, b, cin, t, u",
    "}",
]


def ripple_adder8() -> str:
    arrays, rows = 4, 256
    rng = np.random.default_rng(8)
    # sample 0: corner cases (a = row, b = 0, 255, row, 255 - row); sample 1: random pairs
    r = np.arange(rows)
    a0 = np.stack([r, r, r, r])
    b0 = np.stack([np.zeros(rows, int), np.full(rows, 255), r, 255 - r])
    a1 = rng.integers(0, 256, (arrays, rows))
    b1 = rng.integers(0, 256, (arrays, rows))
    x = np.stack([np.stack([a0, b0], -1), np.stack([a1, b1], -1)]).astype(np.uint8)  # [2, 4, 256, 2]
    y = x[..., 0].astype(np.int64) + x[..., 1].astype(np.int64)
    lines = [
        "; 8-bit ripple-carry adder: y = a + b (9-bit unsigned result) in every row of",
        "; four arrays, built from one full-adder micro-program called once per bit.",
        ";",
        "; columns: a c0-c7, b c8-c15 (LSB first), carries c16-c23 (c16 = carry in = 0),",
        ";          sum c24-c31, carry out c32 (so c24-c32 read back as one 9-bit number),",
        ";          scratch c33-c34",
        f".machine arrays={arrays} rows={rows} cols=35 accs=1",
        "",
        f".input x : u8[{arrays},{rows},2]  ; (a, b) per row",
        f".output y : i64[{arrays},{rows}]",
        "",
        "; two samples of 1024 pairs: corner cases, then random pairs",
        const("x", x, "u8"),
        const("y", y.astype(np.int16), "i16"),
        ".expect x=$x y=$y",
        "",
        *FA_MICRO,
        "",
        ".main {",
        f"  wr @0:{arrays} c0, %x bits=8  ; field 0 (a) -> c0-c7, field 1 (b) -> c8-c15",
        f"  fill @0:{arrays} c16, 0",
    ]
    for i in range(8):
        cout = f"c{17 + i}" if i < 7 else "c32"
        args = f"a=c{i} b=c{8 + i} cin=c{16 + i} s=c{24 + i} cout={cout} t=c33 u=c34"
        lines.append(f"  call @0:{arrays} fa {args}  ; bit {i}")
    lines += [f"  rd @0:{arrays} %y, c24 bits=9 signed=0", "}"]
    return "\n".join(lines)


def mul8x8() -> str:
    arrays, rows = 4, 256
    rng = np.random.default_rng(88)
    r = np.arange(rows) - 128  # every int8 value
    a0 = np.stack([r, r, r, r])
    b0 = np.stack([np.full(rows, -128), np.full(rows, 127), np.full(rows, -1), r[::-1]])
    a1 = rng.integers(-128, 128, (arrays, rows))
    b1 = rng.integers(-128, 128, (arrays, rows))
    x = np.stack([np.stack([a0, b0], -1), np.stack([a1, b1], -1)]).astype(np.int8)
    y = x[..., 0].astype(np.int64) * x[..., 1].astype(np.int64)

    # column map
    a = [f"c{i}" for i in range(8)]
    b = [f"c{8 + i}" for i in range(8)]
    zero, t, u = "c16", "c17", "c88"
    pp = [f"c{18 + i}" for i in range(8)]
    carry = [zero] + [f"c{26 + i}" for i in range(7)]  # carry into bit i of the step's adder
    top = "c39"  # carry out of the last step (bit 15 before the constant)
    res = [f"c{40 + k}" for k in range(16)]
    banks = ([f"c{56 + k}" for k in range(16)], [f"c{72 + k}" for k in range(16)])

    lines = [
        "; 8x8 -> 16-bit signed multiply inside the array: AND partial products and",
        "; majority-gate full adders, shift-and-add, one product per row of four arrays.",
        ";",
        "; Two's complement by Baugh-Wooley: with a = -a7 2^7 + sum a_i 2^i (same for b),",
        ";   a*b = sum_{i,j<7} a_i b_j 2^(i+j) + a7 b7 2^14",
        ";       + sum_{i<7} NAND(a_i, b7) 2^(i+7) + sum_{j<7} NAND(a7, b_j) 2^(j+7)",
        ";       + 2^8 + 2^15   (mod 2^16)",
        "; so a partial product that involves exactly one sign bit is a NAND, the 2^8",
        "; is a 1 written beside the first partial product and the 2^15 flips bit 15.",
        ";",
        "; Step j adds partial product j (8 bits, weight 2^j) to the running sum, whose",
        "; bits j .. j+7 sit in one bank and go to the other (a gate never writes a cell",
        "; that it reads).  The lowest sum bit of each step is final and goes straight",
        "; to the result columns.",
        ";",
        "; columns: a c0-c7, b c8-c15, zero c16, scratch c17, partial product c18-c25,",
        ";          carries c26-c32, last carry c39, product c40-c55 (bit k in c40+k),",
        ";          running-sum banks c56-c71 and c72-c87 (bit k in c56+k or c72+k),",
        ";          second scratch c88",
        f".machine arrays={arrays} rows={rows} cols=89 accs=1",
        "",
        f".input x : i8[{arrays},{rows},2]  ; (a, b) per row",
        f".output y : i64[{arrays},{rows}]",
        "",
        "; two samples of 1024 pairs: every a against -128, 127, -1 and -a - 1, then",
        "; random pairs",
        const("x", x, "i8"),
        const("y", y.astype(np.int16), "i16"),
        ".expect x=$x y=$y",
        "",
        *FA_MICRO,
        "",
        ".main {",
        f"  wr @0:{arrays} {a[0]}, %x bits=8  ; a -> c0-c7, b -> c8-c15",
        f"  fill @0:{arrays} {zero}, 0",
        "  ; step 0: partial product 0 is the running sum (bits 0 .. 7), plus 2^8",
    ]
    A = f"@0:{arrays}"

    def ppgate(i: int, j: int) -> str:
        return "nand" if (i == 7) != (j == 7) else "and"

    for i in range(8):
        dst = res[0] if i == 0 else banks[0][i]
        lines.append(f"  {ppgate(i, 0)} {A} {dst}, {a[i]}, {b[0]}")
    lines.append(f"  fill {A} {banks[0][8]}, 1  ; the constant 2^8")
    for j in range(1, 8):
        cur, nxt = banks[(j - 1) % 2], banks[j % 2]
        lines.append(f"  ; step {j}: add a * b{j} at weight 2^{j}")
        for i in range(8):
            lines.append(f"  {ppgate(i, j)} {A} {pp[i]}, {a[i]}, {b[j]}")
        for i in range(8):
            k = j + i
            s = res[k] if (i == 0 or j == 7) else nxt[k]
            if i < 7:
                cout = carry[i + 1]
            else:
                cout = nxt[j + 8] if j < 7 else top
            lines.append(f"  call {A} fa a={cur[k]} b={pp[i]} cin={carry[i]} s={s} cout={cout} t={t} u={u}")
    lines += [
        f"  not {A} {res[15]}, {top}  ; adds the constant 2^15 (mod 2^16)",
        f"  rd {A} %y, {res[0]} bits=16",
        "}",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- dot product
def dot256() -> str:
    rows = 256
    rng = np.random.default_rng(256)
    w = rng.integers(-128, 128, rows)
    w[:4] = [-128, 127, -1, 0]
    xs = [
        np.full(rows, -128),  # with w = -128 this is the largest partial product
        np.full(rows, 127),
        np.full(rows, -1),
        np.zeros(rows, int),
        np.where(w < 0, -128, 127),  # the largest possible |y|
        *rng.integers(-128, 128, (3, rows)),
    ]
    x = np.stack(xs).astype(np.int8)[:, None, :]  # [N=8, arrays=1, rows]
    y = (x.astype(np.int64)[:, 0, :] * w.astype(np.int64)).sum(axis=1)[:, None, None]
    lines = [
        "; A 256-element signed int8 dot product y = sum_k w[k] x[k], mapped as in the",
        "; primer: row k holds w[k] and x[k] as bit-planes; for every pair of bits",
        "; (b, c) a row-parallel AND forms w_b x_c in all 256 rows at once, and the",
        "; CMOS adder tree adds its popcount shifted by b + c into the accumulator.",
        "; Two's complement: w = -w7 2^7 + sum_{b<7} w_b 2^b (same for x), so a product",
        "; with exactly one sign bit (b = 7 or c = 7, not both) is subtracted (tsub).",
        ";",
        "; columns: w c0-c7 (resident, written once by .init), x c8-c15, product c16",
        f".machine arrays=1 rows={rows} cols=17 accs=1",
        "",
        f".input x : i8[1,{rows}]",
        ".output y : i64[1,1]",
        "",
        "; the weights",
        const("w", w.astype(np.int8)[None], "i8"),
        "; eight input vectors: -128, 127, -1, 0 everywhere, the extreme sign pattern,",
        "; three random vectors",
        const("vx", x, "i8"),
        const("vy", y, "i64"),
        ".expect x=$vx y=$vy",
        "",
        ".init {",
        "  wr @0 c0, $w bits=8  ; weight-stationary: bit b of w[k] in column b, row k",
        "}",
        "",
        ".main {",
        "  wr @0 c8, %x bits=8  ; bit c of x[k] in column 8 + c, row k",
        "  aclr @0 acc0",
    ]
    for bb in range(8):
        for c in range(8):
            op = "tsub" if (bb == 7) != (c == 7) else "tadd"
            lines.append(f"  and @0 c16, c{bb}, c{8 + c}  ; w{bb} x{c}")
            lines.append(f"  {op} @0 acc0, c16, {bb + c}")
    lines += ["  ard @0 %y, acc0", "}"]
    return "\n".join(lines)


EXAMPLES = {
    "full_adder.cram": full_adder,
    "tmr_and.cram": tmr_and,
    "ripple_adder8.cram": ripple_adder8,
    "mul8x8.cram": mul8x8,
    "dot256.cram": dot256,
}


def render(name: str) -> str:
    text = EXAMPLES[name]() + "\n"
    canon = print_program(parse(text, name))
    if canon != text:
        raise SystemExit(f"{name}: the generated text is not canonical")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = ap.parse_args(argv)
    stale = []
    for name in EXAMPLES:
        text = render(name)
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python {Path(__file__).name})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
