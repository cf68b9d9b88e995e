"""Exhaustive truth tables for every CRAM gate in the opcode table.

The expected function of each gate is written out here from its name, not
taken from the table's `logic` lambdas, and every input combination is driven
through the interpreter, one combination per row.  The rows span more than one
64-bit word and the gate runs on two arrays, so packing and array sets are
exercised too.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from cramtest import run_text

from cramc.errors import UserError
from cramc.isa.opcodes import OPCODES, Unit
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.ops.registry import IMPLS


def _maj(bits: tuple[int, ...]) -> int:
    return int(2 * sum(bits) > len(bits))


#: mnemonic -> (number of inputs, the boolean function on a tuple of 0/1 inputs)
EXPECTED = {
    "not": (1, lambda x: 1 - x[0]),
    "copy": (1, lambda x: x[0]),
    "and": (2, lambda x: x[0] * x[1]),
    "nand": (2, lambda x: 1 - x[0] * x[1]),
    "or": (2, lambda x: max(x)),
    "nor": (2, lambda x: 1 - max(x)),
    "maj3": (3, _maj),
    "min3": (3, lambda x: 1 - _maj(x)),
    "maj5": (5, _maj),
    "min5": (5, lambda x: 1 - _maj(x)),
}

GATES = sorted(mn for mn, op in OPCODES.items() if op.unit is Unit.GATE)


def test_every_gate_has_an_expected_function() -> None:
    # a new gate in the table must get a truth-table test here
    assert set(GATES) == set(EXPECTED)


def test_every_opcode_has_an_interpreter_function() -> None:
    # `call` is inlined by the verifier; everything else is executed
    assert set(IMPLS) == {mn for mn, op in OPCODES.items() if op.unit is not Unit.CONTROL}


def _program(mn: str, n: int, rows: int, arrays: int = 2) -> str:
    ins = ", ".join(f"c{i}" for i in range(n))
    return "\n".join(
        [
            f".machine arrays={arrays} rows={rows} cols={n + 1} accs=1",
            f".input x : u8[{arrays},{rows},{n}]",
            f".output y : i64[{arrays},{rows}]",
            ".main {",
            f"  wr @0:{arrays} c0, %x bits=1",
            f"  {mn} @0:{arrays} c{n}, {ins}",
            f"  rd @0:{arrays} %y, c{n} bits=1 signed=0",
            "}",
            "",
        ]
    )


@pytest.mark.parametrize("mn", GATES)
def test_truth_table(mn: str) -> None:
    n, fn = EXPECTED[mn]
    assert len(OPCODES[mn].operands) == n + 1  # dst + inputs
    combos = list(itertools.product((0, 1), repeat=n))
    rows = 100  # two words of 64 rows; row r holds combination r % 2^n
    table = np.array([combos[r % len(combos)] for r in range(rows)], dtype=np.uint8)
    # array 1 sees the combinations in reverse row order
    x = np.stack([table, table[::-1]])[None]  # [N=1, 2, rows, n]
    want = np.array([[fn(tuple(int(v) for v in row)) for row in arr] for arr in x[0]])
    got = run_text(_program(mn, n, rows), {"x": x}).outputs["y"][0]
    np.testing.assert_array_equal(got, want)
    # every combination was seen
    assert len({tuple(r) for r in table}) == 2**n


@pytest.mark.parametrize("mn", GATES)
def test_gate_writes_only_its_rows_and_arrays(mn: str) -> None:
    """rows=lo:hi and the array set limit the write; other cells keep their value."""
    n, fn = EXPECTED[mn]
    rows, arrays = 130, 3
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, (1, arrays, rows, n), dtype=np.uint8)
    ins = ", ".join(f"c{i}" for i in range(n))
    text = "\n".join(
        [
            f".machine arrays={arrays} rows={rows} cols={n + 1} accs=1",
            f".input x : u8[{arrays},{rows},{n}]",
            f".output y : i64[{arrays},{rows}]",
            ".main {",
            f"  wr @0:{arrays} c0, %x bits=1",
            f"  fill @0:{arrays} c{n}, 1",
            f"  {mn} @1:3 c{n}, {ins} rows=60:70",
            f"  rd @0:{arrays} %y, c{n} bits=1 signed=0",
            "}",
            "",
        ]
    )
    got = run_text(text, {"x": x}).outputs["y"][0]
    want = np.ones((arrays, rows), dtype=np.int64)
    for a in (1, 2):
        for r in range(60, 70):
            want[a, r] = fn(tuple(int(v) for v in x[0, a, r]))
    np.testing.assert_array_equal(got, want)
    assert (want[1:, 60:70] == 0).any()  # the gate did change something


def test_gate_counts() -> None:
    """One gate evaluation per active row per array per sample lane."""
    x = np.zeros((3, 2, 100, 2), dtype=np.uint8)
    res = run_text(_program("and", 2, 100), {"x": x})
    assert res.counts.gate_evals == 3 * 2 * 100
    assert res.counts.per_opcode["and"] == {"instructions": 3, "row_ops": 600}
    assert res.counts.writes == 3 * 2 * 100 * 2
    assert res.counts.reads == 3 * 2 * 100


@pytest.mark.parametrize("mn", GATES)
def test_aliased_operands_are_rejected(mn: str) -> None:
    """dst == an input (and c0, c0, c1) and a repeated input (maj5 s, a, b, c, t, t): one MTJ per terminal.

    The output cell is preset and carries the logic current in series with the
    inputs, and each input is its own MTJ, so neither circuit exists; the
    verifier rejects both at the operand (tests/isa/test_dataflow_table.py
    covers every operand pair).
    """
    n, _ = EXPECTED[mn]
    head = ".machine arrays=1 rows=8 cols=8 accs=1\n.main {\n" + "".join(f"  fill @0 c{c}, 1\n" for c in range(n))
    cases = [(f"c0, {', '.join(f'c{c}' for c in range(n))}", "the output operand dst and the input operand in0")]
    if n > 1:  # the last input repeats the first
        cases.append((f"c7, {', '.join(f'c{c % (n - 1)}' for c in range(n))}", f"the input operands in0 and in{n - 1}"))
    for operands, pair in cases:
        with pytest.raises(UserError) as ei:
            verify(parse(head + f"  {mn} @0 {operands}\n}}\n"))
        assert ei.value.message.startswith(f"{mn}: {pair} both name column c0;"), ei.value.message
