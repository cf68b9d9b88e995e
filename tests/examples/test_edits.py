"""Edit one gate of an example and check the outputs change exactly as the edit implies.

The implied result is computed independently with numpy from the inputs and
the program's data; the edited program is run through the same parse, verify
and interpret path as any user program.
"""

from __future__ import annotations

import numpy as np
import pytest
from cramtest import bits_of, example, link, link_file

from cramc.sim.interp import run


def _edit(name: str, old: str, new: str) -> str:
    text = example(name).read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur exactly once in {name}"
    return text.replace(old, new)


@pytest.mark.parametrize(("b", "c"), [(3, 5), (7, 2), (7, 7), (0, 0)])
def test_dot256_one_and_becomes_or(b: int, c: int) -> None:
    """Plane (b, c) computes w_b OR x_c instead of w_b AND x_c: y moves by sign * popcount(w_b XOR x_c) << (b + c)."""
    line = f"  and @0 c16, c{b}, c{8 + c}  ; w{b} x{c}\n"
    text = _edit("dot256.cram", line, line.replace("and", "or", 1))
    linked = link(text)
    w = linked.program.data["w"].values.reshape(-1).astype(np.int64)
    rng = np.random.default_rng(b * 8 + c)
    x = rng.integers(-128, 128, (16, 256))
    y = run(linked, {"x": x[:, None, :].astype(np.int8)}).outputs["y"][:, 0, 0]
    sign = -1 if (b == 7) != (c == 7) else 1
    # |OR| - |AND| = |XOR| per row
    extra = (bits_of(w, b)[None] ^ bits_of(x, c)).sum(axis=1)
    want = x @ w + sign * (extra << (b + c))
    np.testing.assert_array_equal(y, want)
    assert (y != x @ w).any()  # the edit is visible


def test_dot256_tsub_becomes_tadd() -> None:
    """Forgetting the sign of plane (b, c) = (0, 7): y gains 2 * popcount(w0 AND x7) << 7."""
    old = "  and @0 c16, c0, c15  ; w0 x7\n  tsub @0 acc0, c16, 7\n"
    text = _edit("dot256.cram", old, old.replace("tsub", "tadd"))
    linked = link(text)
    w = linked.program.data["w"].values.reshape(-1).astype(np.int64)
    x = np.random.default_rng(1).integers(-128, 128, (16, 256))
    y = run(linked, {"x": x[:, None, :].astype(np.int8)}).outputs["y"][:, 0, 0]
    np.testing.assert_array_equal(y, x @ w + 2 * ((bits_of(w, 0)[None] & bits_of(x, 7)).sum(axis=1) << 7))


def test_tmr_one_faulty_copy_is_outvoted() -> None:
    """One copy computes OR: MAJ(a|b, ab, ab) = ab, the output does not change."""
    text = _edit("tmr_and.cram", "  and @0 c3, c0, c1  ; copy 2", "  or @0 c3, c0, c1  ; copy 2")
    linked = link(text)
    x = linked.expect.inputs["x"].astype(np.int64)
    np.testing.assert_array_equal(run(linked, dict(linked.expect.inputs)).outputs["y"], x[..., 0] & x[..., 1])


def test_tmr_two_faulty_copies_win_the_vote() -> None:
    """Two copies compute OR: MAJ(a|b, a|b, ab) = a|b."""
    text = _edit("tmr_and.cram", "  and @0 c3, c0, c1  ; copy 2", "  or @0 c3, c0, c1  ; copy 2")
    text = text.replace("  and @0 c4, c0, c1  ; copy 3", "  or @0 c4, c0, c1  ; copy 3")
    linked = link(text)
    x = linked.expect.inputs["x"].astype(np.int64)
    y = run(linked, dict(linked.expect.inputs)).outputs["y"]
    np.testing.assert_array_equal(y, x[..., 0] | x[..., 1])


def test_full_adder_carry_gate_inverted() -> None:
    """maj3 -> min3 for Cout: cout' = NOT maj, and Sum = MAJ5(a, b, cin, maj, maj) = maj."""
    text = _edit("full_adder.cram", "  maj3 @0 c3, c0, c1, c2", "  min3 @0 c3, c0, c1, c2")
    linked = link(text)
    x = linked.expect.inputs["x"][0, 0].astype(np.int64)
    maj = (x.sum(axis=1) >= 2).astype(np.int64)
    out = run(linked, dict(linked.expect.inputs)).outputs
    np.testing.assert_array_equal(out["cout"][0, 0], 1 - maj)
    np.testing.assert_array_equal(out["s"][0, 0], maj)


def test_ripple_adder_drops_one_carry() -> None:
    """Bit 3's full adder gets carry-in 0 (the zero column c16): y = a + b - carry-into-bit-3 * 8."""
    old = "  call @0:4 fa a=c3 b=c11 cin=c19 s=c27 cout=c20 t=c33 u=c34  ; bit 3"
    text = _edit("ripple_adder8.cram", old, old.replace("cin=c19", "cin=c16"))
    linked = link(text)
    x = np.random.default_rng(2).integers(0, 256, (8, 4, 256, 2)).astype(np.uint8)
    y = run(linked, {"x": x}).outputs["y"]
    a, b = x[..., 0].astype(np.int64), x[..., 1].astype(np.int64)
    carry3 = ((a & 7) + (b & 7)) >> 3  # the carry a correct adder passes into bit 3
    np.testing.assert_array_equal(y, a + b - (carry3 << 3))
    assert carry3.any()


def test_unedited_examples_still_match() -> None:
    """The edits above are the only difference: the original programs are exact."""
    for name in ("dot256.cram", "tmr_and.cram", "full_adder.cram"):
        linked = link_file(example(name))
        out = run(linked, dict(linked.expect.inputs)).outputs
        for k, v in linked.expect.outputs.items():
            np.testing.assert_array_equal(out[k].reshape(v.shape), v)
