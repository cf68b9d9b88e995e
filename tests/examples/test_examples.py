"""The example programs compute what they claim, checked against numpy.

full_adder: all 8 input combinations (the embedded vectors are the truth table).
ripple_adder8 and mul8x8: all 65536 operand pairs, batched as 64 samples of
4 arrays x 256 rows.  dot256: random and extreme input vectors against the
program's own resident weights.  tmr_and: all four input combinations.
The embedded validation vectors are also recomputed here from their inputs.
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
from cramtest import EXAMPLES, bits_of, example, link_file

from cramc.sim.interp import run


def _all_pairs(lo: int, dtype: type) -> np.ndarray:
    """All 65536 (a, b) pairs of 8-bit values as [64 samples, 4 arrays, 256 rows, 2]."""
    v = np.arange(256) + lo
    a = np.broadcast_to(v, (64, 4, 256))  # a = row
    b = np.broadcast_to((np.arange(256) + lo).reshape(64, 4, 1), (64, 4, 256))  # b = sample * 4 + array
    x = np.stack([a, b], axis=-1).astype(dtype)
    assert len({(int(p), int(q)) for p, q in x.reshape(-1, 2)}) == 65536
    return x


def test_full_adder_exhaustive() -> None:
    linked = link_file(example("full_adder.cram"))
    x = linked.expect.inputs["x"]
    assert {tuple(r) for r in x[0, 0]} == set(itertools.product((0, 1), repeat=3))
    total = x[0, 0].astype(np.int64).sum(axis=1)
    np.testing.assert_array_equal(linked.expect.outputs["s"][0, 0], total % 2)
    np.testing.assert_array_equal(linked.expect.outputs["cout"][0, 0], total // 2)
    out = run(linked, dict(linked.expect.inputs)).outputs
    np.testing.assert_array_equal(out["s"][0, 0], total % 2)
    np.testing.assert_array_equal(out["cout"][0, 0], total // 2)


def test_ripple_adder8_embedded_vectors() -> None:
    e = link_file(example("ripple_adder8.cram")).expect
    x = e.inputs["x"].astype(np.int64)
    np.testing.assert_array_equal(e.outputs["y"], x[..., 0] + x[..., 1])


def test_ripple_adder8_all_pairs() -> None:
    linked = link_file(example("ripple_adder8.cram"))
    x = _all_pairs(0, np.uint8)
    y = run(linked, {"x": x}).outputs["y"]
    np.testing.assert_array_equal(y, x[..., 0].astype(np.int64) + x[..., 1])
    assert y.max() == 510


def test_mul8x8_embedded_vectors() -> None:
    e = link_file(example("mul8x8.cram")).expect
    x = e.inputs["x"].astype(np.int64)
    np.testing.assert_array_equal(e.outputs["y"], x[..., 0] * x[..., 1])


def test_mul8x8_all_pairs() -> None:
    linked = link_file(example("mul8x8.cram"))
    x = _all_pairs(-128, np.int8)
    y = run(linked, {"x": x}).outputs["y"]
    want = x[..., 0].astype(np.int64) * x[..., 1].astype(np.int64)
    np.testing.assert_array_equal(y, want)
    assert y.min() == -128 * 127 and y.max() == 128 * 128


def test_mul8x8_uses_only_array_gates_for_the_product() -> None:
    """The multiply is done in the array: no CMOS arithmetic, no adder tree."""
    linked = link_file(example("mul8x8.cram"))
    units = {n.op.unit.value for n in linked.main}
    assert units == {"write", "gate", "read"}


def _dot_reference(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The dot product rebuilt from bit-plane popcounts, as the mapping does it."""
    y = np.zeros(x.shape[0], dtype=np.int64)
    for b in range(8):
        for c in range(8):
            sign = -1 if (b == 7) != (c == 7) else 1
            ones = (bits_of(w, b)[None] & bits_of(x, c)).sum(axis=-1)
            y += sign * (ones << (b + c))
    return y


def test_dot256() -> None:
    linked = link_file(example("dot256.cram"))
    w = linked.program.data["w"].values.reshape(-1).astype(np.int64)
    assert w.shape == (256,)
    e = linked.expect
    vx = e.inputs["x"][:, 0].astype(np.int64)
    np.testing.assert_array_equal(e.outputs["y"][:, 0, 0], vx @ w)
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (64, 256))
    x[0] = -128
    x[1] = np.where(w < 0, -128, 127)  # the largest |y|
    x[2] = np.where(w < 0, 127, -128)
    want = x @ w
    np.testing.assert_array_equal(_dot_reference(w, x), want)  # the bit-plane identity itself
    y = run(linked, {"x": x[:, None, :].astype(np.int8)}).outputs["y"][:, 0, 0]
    np.testing.assert_array_equal(y, want)


def test_dot256_structure() -> None:
    """64 bit-plane ANDs, each followed by tadd or tsub with shift b + c."""
    linked = link_file(example("dot256.cram"))
    ops = [(n.op.mnemonic, n.operands) for n in linked.main]
    ands = [o for o in ops if o[0] == "and"]
    tree = [o for o in ops if o[0] in ("tadd", "tsub")]
    assert len(ands) == len(tree) == 64
    seen = set()
    for (_, (_, wcol, xcol)), (mn, (_, _, shift)) in zip(ands, tree, strict=True):
        b, c = wcol, xcol - 8
        seen.add((b, c))
        assert shift == b + c
        assert mn == ("tsub" if (b == 7) != (c == 7) else "tadd")
    assert seen == set(itertools.product(range(8), range(8)))


def test_tmr_and() -> None:
    linked = link_file(example("tmr_and.cram"))
    x = linked.expect.inputs["x"]
    assert {tuple(r) for r in x[0, 0]} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    y = run(linked, dict(linked.expect.inputs)).outputs["y"]
    np.testing.assert_array_equal(y, x[..., 0].astype(np.int64) & x[..., 1])


def test_generator_is_in_sync() -> None:
    """The committed examples are what make_examples.py writes (b64 payloads are deterministic)."""
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in mod.EXAMPLES:
        assert mod.render(name) == (EXAMPLES / name).read_text(encoding="utf-8"), name


@pytest.mark.parametrize("name", ["ripple_adder8.cram", "mul8x8.cram"])
def test_full_adders_are_one_micro_called_per_bit(name: str) -> None:
    prog = link_file(example(name)).program
    assert set(prog.micros) == {"fa"}
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert text.count("call @0:4 fa ") == (8 if name.startswith("ripple") else 56)
