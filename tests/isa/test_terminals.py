"""One MTJ per terminal: a CRAM gate's output is none of its inputs, and no cell is two of its inputs.

The output cell is preset and then carries the logic current in series with
the inputs, and each input is its own MTJ (CRAM-PRIMER, fault physics), so the
verifier rejects `and @0 c0, c0, c1` and `maj5 @0 c5, c0, c1, c2, c4, c4`.
The rules are declared in the opcode table (cramc.isa.opcodes: OUTPUT_CELL,
INPUT_CELLS); tests/isa/test_dataflow_table.py checks every operand pair of
every gate, tests/golden/errors the diagnostics.  Here: the rule through
micro-program calls (checked where the columns are known, at each call's
bindings, and in the definition when two operands are the same expression),
and every program the project ships or compiles obeys it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cramtest import REPO, example_paths

from cramc.errors import UserError
from cramc.isa.opcodes import INPUT_CELLS, OUTPUT_CELL
from cramc.isa.parser import parse, parse_file
from cramc.isa.verifier import verify

HEAD = ".machine arrays=2 rows=8 cols=16\n"
FILLS = "".join(f"  fill @0:2 c{c}, {c % 2}\n" for c in range(4))
MICROS = ".micro g(col a, col b, col d) {\n  and d, a, b\n}\n.micro inv(col d, col s) {\n  not d, s\n}\n"


def _error(text: str) -> UserError:
    with pytest.raises(UserError) as ei:
        verify(parse(text, "t.cram"))
    return ei.value


def _main(*calls: str) -> str:
    return HEAD + MICROS + ".main {\n" + FILLS + "".join(f"  {c}\n" for c in calls) + "}\n"


def test_output_on_an_input_and_two_equal_inputs_are_rejected() -> None:
    e = _error(HEAD + ".main {\n" + FILLS + "  and @0:2 c0, c0, c1\n}\n")
    assert e.message == (
        f"and: the output operand dst and the input operand in0 both name column c0; {OUTPUT_CELL.why}"
    )
    assert e.loc is not None and (e.loc.line, e.loc.col) == (7, len("  and @0:2 ") + 1)  # at dst
    e = _error(HEAD + ".main {\n" + FILLS + "  maj3 @0:2 c5, c1, c2, c1\n}\n")
    assert e.message == f"maj3: the input operands in0 and in2 both name column c1; {INPUT_CELLS.why}"
    assert e.loc is not None and e.loc.col == len("  maj3 @0:2 c5, c1, c2, ") + 1  # at the repeat


def test_a_call_binding_two_inputs_to_one_column_is_rejected_at_that_call() -> None:
    verify(parse(_main("call @0:2 g a=c0 b=c1 d=c5", "call @0:2 g a=c2 b=c3 d=c6")))  # distinct bindings pass
    e = _error(_main("call @0:2 g a=c0 b=c1 d=c5", "call @0:2 g a=c2 b=c2 d=c6"))
    assert e.message == (
        f"and: the input operands in0 and in1 both name column c2; {INPUT_CELLS.why} "
        "(in a micro-program called at line 14)"
    )
    assert e.loc is not None and (e.loc.line, e.loc.col) == (3, len("  and d, a, ") + 1)  # in the body


def test_a_call_binding_the_output_to_an_input_is_rejected() -> None:
    e = _error(_main("call @0:2 inv d=c5 s=c0", "call @0:2 inv d=c0 s=c0"))
    assert e.message == (
        f"not: the output operand dst and the input operand in0 both name column c0; {OUTPUT_CELL.why} "
        "(in a micro-program called at line 14)"
    )
    e = _error(_main("call @0:2 g a=c0 b=c1 d=c1"))
    assert e.message.startswith("and: the output operand dst and the input operand in1 both name column c1;")


def test_nested_calls_bind_through_to_the_gate() -> None:
    outer = ".micro outer(col p, col q) {\n  call g a=p b=q d=p+8\n}\n"
    text = HEAD + MICROS + outer + ".main {\n" + FILLS + "  call @0:2 outer p=c1 q=c1\n}\n"
    e = _error(text)
    assert e.message.startswith("and: the input operands in0 and in1 both name column c1;")
    assert e.message.endswith("(in a micro-program called at line 16, line 9)")


def test_the_same_expression_twice_is_rejected_in_the_definition() -> None:
    """`a+1` and `a+1` are one column under every binding: an error even if nothing calls the micro-program."""
    e = _error(HEAD + ".micro m(col a, col d) {\n  maj3 d, a, a+1, a+1\n}\n.main {\n" + FILLS + "}\n")
    assert e.message == f"maj3: the input operands in1 and in2 both name column a+1; {INPUT_CELLS.why}"
    assert e.loc is not None and (e.loc.line, e.loc.col) == (3, len("  maj3 d, a, a+1, ") + 1)
    e = _error(HEAD + ".micro m(col a, col d) {\n  not a-2, a-2\n}\n.main {\n" + FILLS + "}\n")
    assert e.message == f"not: the output operand dst and the input operand in0 both name column a-2; {OUTPUT_CELL.why}"
    assert e.loc is not None and e.loc.col == len("  not a-2, ") + 1
    # different offsets may still name different columns: only a binding can tell
    verify(parse(HEAD + ".micro m(col a, col d) {\n  and d, a, a+1\n}\n.main {\n" + FILLS + "}\n"))


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_every_shipped_example_passes_check(cli, path: Path) -> None:
    res = cli("check", str(path))
    assert res.rc == 0 and res.err == "", res.err


COMPILED = sorted((REPO / "tests" / "golden" / "programs").glob("*.cram"))


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: p.stem)
def test_every_compiled_shipped_model_passes_check(path: Path) -> None:
    """The goldens are `cramc compile`'s output for every shipped model and option path (both lowerings):
    tests/golden/test_golden_programs.py pins them to what the compiler emits today."""
    verify(parse_file(path))


def test_the_compiled_programs_include_both_lowerings() -> None:
    names = {p.stem for p in COMPILED}
    assert {"digits_mlp", "digits_cnn", "mnist_lenet5", "mnist_mlp", "digits_mlp_ft", "digits_cnn_ft"} <= names
    assert {"digits_mlp-reduce_cram", "digits_cnn-reduce_cram"} <= names
