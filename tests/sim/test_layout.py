"""Data files <-> program tensors (cramc.sim.layout): ONNX names and the batch axis as the sample axis."""

from __future__ import annotations

import numpy as np
import pytest
from cramtest import link

from cramc.errors import UserError
from cramc.sim.interp import run
from cramc.sim.layout import program_inputs, user_outputs, user_shape

# y = x + 1 elementwise on a [1, 3, 2] tensor whose batch axis is 0 (input) and an output [3, 1, 2]
# whose batch axis is 1 (a transposed result), with ONNX-style names
PROG = """.machine arrays=1 rows=8 cols=8
.input in_0 : f32[1,3,2] batch=0 name="in/0"
.output out_0 : f32[1,3,2] batch=0 name="out:0"
.output t : f32[3,1,2] batch=1
.data $one : f32[1] = [1.0]
.main {
  add %out_0, %in_0, $one
  transpose %t, %out_0 perm=[1, 0, 2]
}
"""


@pytest.fixture(scope="module")
def linked():  # noqa: ANN201
    return link(PROG)


def test_user_shapes(linked) -> None:  # noqa: ANN001
    assert user_shape(linked.inputs[0]) == "[N, 3, 2]"
    assert user_shape(linked.outputs[1]) == "[3, N, 2]"
    plain = link(
        ".machine arrays=1 rows=8 cols=8\n.input x : f32[1,4]\n.output y : f32[1,4]\n.main {\n  mov %y, %x\n}\n"
    )
    assert user_shape(plain.inputs[0]) == "[N, 1, 4]"


def test_samples_on_the_batch_axis_or_in_front(linked) -> None:  # noqa: ANN001
    x = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    a = program_inputs(linked, {"in/0": x}, "x.npz")
    b = program_inputs(linked, {"in/0": x.reshape(5, 1, 3, 2)}, "x.npz")
    assert list(a) == ["in_0"] and a["in_0"].shape == (5, 1, 3, 2)
    np.testing.assert_array_equal(a["in_0"], b["in_0"])
    res = run(linked, a)
    out = user_outputs(linked, res.outputs)
    assert list(out) == ["out:0", "t"]
    np.testing.assert_array_equal(out["out:0"], x + 1)  # [N, 3, 2], as onnxruntime gives it
    np.testing.assert_array_equal(out["t"], np.transpose(x + 1, (1, 0, 2)))  # [3, N, 2]: samples on axis 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"in_0": np.zeros((2, 3, 2))}, "x.npz: no program input is named 'in_0' (the program's inputs: 'in/0')"),
        ({}, "x.npz: no array named 'in/0' (input of shape [N, 3, 2])"),
        ({"in/0": np.zeros((2, 2, 3))}, "x.npz: input 'in/0' has shape [2, 2, 3]; expected [N, 3, 2] (N samples)"),
        ({"in/0": np.zeros((2, 1, 1, 3, 2))}, "input 'in/0' has shape [2, 1, 1, 3, 2]; expected [N, 3, 2]"),
        ({"in/0": np.zeros((0, 3, 2))}, "x.npz: input 'in/0' holds no samples (shape [0, 3, 2])"),
    ],
)
def test_errors_name_the_file_and_the_shape_to_pass(linked, data: dict, message: str) -> None:  # noqa: ANN001
    with pytest.raises(UserError) as e:
        program_inputs(linked, data, "x.npz")
    assert message in e.value.message


def test_programs_without_batch_keep_the_leading_sample_axis() -> None:
    text = (
        ".machine arrays=1 rows=8 cols=8\n.input x : f32[1,4]\n.input z : f32[2]\n.output y : f32[1,4]\n"
        ".main {\n  mov %y, %x\n}\n"
    )
    linked = link(text)
    x = np.ones((3, 4), np.float32)
    got = program_inputs(linked, {"x": x, "z": np.zeros((3, 2))}, "d.npz")
    assert got["x"].shape == (3, 1, 4)  # a leading 1 may be left out, as before
    assert user_outputs(linked, {"y": got["x"]})["y"].shape == (3, 1, 4)  # outputs as declared, samples in front
    with pytest.raises(UserError, match="input 'z' has 4 samples, input 'x' has 3"):
        program_inputs(linked, {"x": x, "z": np.zeros((4, 2))}, "d.npz")
