"""`.input`/`.output` declarations with `batch=` and `name=`, and `.expect_float`: parse, print, verify."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cramtest import link
from hypothesis import given, settings
from hypothesis import strategies as st

from cramc.errors import UserError
from cramc.isa.parser import parse
from cramc.isa.printer import print_program

PROGRAM = """.machine arrays=1 rows=8 cols=8
.input x : f32[1,4] batch=0 name={name}
.output y : f32[1,4] batch=0
.main {{
  mov %y, %x
}}
"""


def test_attributes_parse_print_and_link() -> None:
    text = PROGRAM.format(name=json.dumps("gpu_0/data_0"))
    prog = parse(text)
    assert print_program(prog) == text
    (d,) = prog.ios("input")
    assert (d.name, d.batch, d.data_name, d.key) == ("x", 0, "gpu_0/data_0", "gpu_0/data_0")
    (o,) = prog.ios("output")
    assert (o.batch, o.data_name, o.key) == (0, None, "y")
    linked = link(text)
    assert (linked.inputs[0].key, linked.inputs[0].batch) == ("gpu_0/data_0", 0)
    assert (linked.outputs[0].key, linked.outputs[0].batch) == ("y", 0)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_any_onnx_name_round_trips(name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # protobuf strings (ONNX names) are valid UTF-8
        return
    text = PROGRAM.format(name=json.dumps(name, ensure_ascii=False))
    prog = parse(text)
    assert prog.ios("input")[0].data_name == name
    assert print_program(prog) == text
    # a non-canonical spelling (ASCII escapes) means the same name and prints canonically
    other = PROGRAM.format(name=json.dumps(name, ensure_ascii=True))
    assert parse(other).ios("input")[0].data_name == name
    assert print_program(parse(other)) == text


def test_declarations_without_attributes_are_unchanged() -> None:
    text = ".machine arrays=1 rows=8 cols=8\n.input x : f32[2,4]\n.output y : f32[2,4]\n.main {\n  mov %y, %x\n}\n"
    prog = parse(text)
    assert print_program(prog) == text
    assert (prog.ios("input")[0].batch, prog.ios("input")[0].key) == (None, "x")


@pytest.mark.parametrize(
    ("decl", "col", "message"),
    [
        (".input x : f32[1,4] batch=1", 27, "batch=1: axis 1 of [1, 4] has size 4; the batch axis holds one sample"),
        (".input x : f32[1,4] batch=2", 27, "batch=2: the declared shape [1, 4] has no axis 2"),
        (".input x : f32[1,4] batch=0.5", 27, "batch must be an axis number of [1, 4], got 0.5"),
        (".input x : f32[1,4] name=3", 26, 'name must be a string in double quotes (name="x/y"), got 3'),
        ('.input x : f32[1,4] name=""', 26, "name must not be empty"),
        ('.input x : f32[1,4] name="\\ud800"', 26, "name holds an unpaired surrogate"),
        (".input x : f32[1,4] shape=3", 21, "unknown attribute 'shape' of .input (allowed: batch, name)"),
        (".output x : f32[1,4] batch=0 batch=0", 30, "attribute 'batch' given twice"),
        (".input x : f32[1,4] name=x", 26, "unexpected 'x'; expected a number, a string"),
    ],
)
def test_attribute_errors_are_located(decl: str, col: int, message: str) -> None:
    with pytest.raises(UserError) as e:
        parse(".machine arrays=1 rows=8 cols=8\n" + decl + "\n.main {\n}\n", "p.cram")
    first = e.value.render().splitlines()[0]
    assert first.startswith(f"p.cram:2:{col}: error: {message}"), first


def test_data_names_must_be_unique() -> None:
    text = PROGRAM.format(name='"y"').replace(".output y : f32[1,4] batch=0", '.output y : f32[1,4] name="y"')
    link(text)  # an input and an output may share a name in data files: they live in different files
    two = (
        '.machine arrays=1 rows=8 cols=8\n.input a : f32[1,4]\n.input b : f32[1,4] name="a"\n'
        ".output y : f32[1,4]\n.main {\n  add %y, %a, %b\n}\n"
    )
    with pytest.raises(UserError, match="input 'b' has the same name in data files, 'a', as input 'a'"):
        link(two)


EXPECT = """.machine arrays=1 rows=8 cols=8
.input x : f32[1,4]
.output y : f32[1,4]
.data $x : f32[2,1,4] = [0.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0]
.data $f : f32[2,1,4] = [0.0, 1.0, 2.5, 3.5, 3.5, 2.0, 1.0, 0.0]
.expect x=$x y=$x tol=0.0
{float}
.main {{
  mov %y, %x
}}
"""


def test_expect_float_links_to_the_expectation() -> None:
    text = EXPECT.format(float=".expect_float y=$f  ; the float model")
    assert print_program(parse(text)) == text
    exp = link(text).expect
    assert exp is not None
    np.testing.assert_array_equal(exp.float_outputs["y"], parse(text).data["f"].values)
    assert link(EXPECT.format(float="")).expect.float_outputs == {}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (".expect_float x=$f", "'x' is not a declared output"),
        (".expect_float y=$f y=$f", "'y' given twice"),
        (".expect_float y=3", "y= must name a data constant"),
        (".expect_float y=$x\n.expect_float y=$f", "more than one .expect_float line"),
    ],
)
def test_expect_float_errors(line: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        link(EXPECT.format(float=line))


def test_expect_float_needs_expect() -> None:
    text = EXPECT.format(float=".expect_float y=$f").replace(".expect x=$x y=$x tol=0.0\n", "")
    with pytest.raises(UserError, match=r"\.expect_float needs an \.expect line"):
        link(text)
