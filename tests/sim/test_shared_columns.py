"""Lane-invariant columns: inference batches read the columns `.main` never writes from the chip's one-lane
state (cramc.sim.machine.Machine.shared) and hold only the others per lane; nothing a run reports changes."""

from __future__ import annotations

import numpy as np
import pytest

from cramc.errmodel.model import load_preset
from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify
from cramc.sim import interp
from cramc.sim.faults import FaultModel, Rate
from cramc.sim.machine import Machine, extent, lane_columns

PROGRAMS = "tests/golden/programs"


def _models() -> dict[str, FaultModel]:
    return {
        "fault-free": FaultModel(),
        "asymmetric": FaultModel({"and": Rate(2e-3, 1e-3)}, read=Rate(1e-3, 1e-3)),
        "near_term": load_preset("near_term"),
    }


@pytest.mark.parametrize("name", ["digits_cnn", "mnist_mlp"])
@pytest.mark.parametrize("model", ["fault-free", "asymmetric", "near_term"])
def test_shared_columns_change_nothing(name: str, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    linked = verify(parse_file(f"{PROGRAMS}/{name}.cram"))
    assert lane_columns(linked) < extent(linked).cols, "the weights sit above the columns .main writes"
    inputs = dict(linked.expect.inputs)
    fm = _models()[model]
    got = interp.run(linked, dict(inputs), fm, seed=3, lanes=3)
    seen: list[Machine] = []
    real = Machine.__init__

    def unsplit(self: Machine, *a: object, **kw: object) -> None:
        kw["shared"] = None  # every column per lane, as before lane-invariant columns
        real(self, *a, **kw)  # type: ignore[arg-type]
        seen.append(self)

    monkeypatch.setattr(Machine, "__init__", unsplit)
    want = interp.run(linked, dict(inputs), fm, seed=3, lanes=3)
    assert seen and all(m.shared is None for m in seen)
    for k in want.outputs:
        np.testing.assert_array_equal(got.outputs[k], want.outputs[k])
    assert got.counts.faults == want.counts.faults and got.counts.per_opcode == want.counts.per_opcode
    assert got.init == want.init


def _swapped(text: str, gate: str, first_x: bool) -> str:
    """The program with every MAC gate `and t, w, x...` replaced by `gate` (operands swapped unless first_x is
    False: the lane-invariant operand second), the .expect block dropped (its outputs are the AND's)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("and t, w, x"):
            x = s.split(", ")[2]
            line = f"  {gate} t, {x}, w" if first_x else f"  {gate} t, w, {x}"
        out.append(line)
    return "\n".join(out) + "\n"


def _product_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records whether each fused run took the matrix-product path."""
    from cramc.sim.ops import tree

    seen: list[bool] = []
    real = tree._prepare_product

    def spy(*a: object, **kw: object) -> object:
        got = real(*a, **kw)  # type: ignore[arg-type]
        seen.append(got is not None)
        return got

    monkeypatch.setattr(tree, "_prepare_product", spy)
    return seen


MODELS = {
    "fault-free": FaultModel(),
    "symmetric": FaultModel({"and": Rate(1e-3, 1e-3), "nand": Rate(1e-3, 1e-3), "or": Rate(2e-3, 2e-3)}),
    "asymmetric": FaultModel({g: Rate(2e-3, 5e-4) for g in ("and", "nand", "or", "nor")}),
    "gate+read": FaultModel({"and": Rate(1e-3, 3e-4)}, read=Rate(1e-3, 1e-3)),
    "near_term": load_preset("near_term"),  # by_ones gates, read and write faults
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(("gate", "first_x"), [("and", False), ("nand", True), ("or", False), ("nor", True)])
def test_product_path_is_sequential_execution(
    model: str, gate: str, first_x: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fused run as a matrix product with its faults applied one by one gives the outputs, counts and
    faults of every gate and tree op run one at a time, for every two-input gate and either operand order."""
    from cramc.isa.parser import parse

    text = open(f"{PROGRAMS}/mnist_mlp.cram").read()
    linked = verify(parse(_swapped(text, gate, first_x)))
    x = np.load("models/mnist_test_x_flat.npz")
    inputs = {"input": x[x.files[0]][:16].reshape(16, 1, 784)}
    fm = MODELS[model]
    seen = _product_calls(monkeypatch)
    got = interp.run(linked, dict(inputs), fm, seed=5, lanes=8)
    # every fused run of the MLP has the weights on one side: all take the product path but those whose gate
    # faults are too dense for it (near_term's OR and NOR: the stacked path, checked equal all the same)
    from cramc.sim.ops.tree import PRODUCT_MAX_FAULTS

    dense = 64 * fm.gate(gate).pmax > PRODUCT_MAX_FAULTS
    assert seen and any(seen) and (dense or all(seen))
    monkeypatch.setattr(Machine, "fuse_mac", False)
    want = interp.run(linked, dict(inputs), fm, seed=5, lanes=8)
    for k in want.outputs:
        np.testing.assert_array_equal(got.outputs[k], want.outputs[k])
    assert got.counts.faults == want.counts.faults and got.counts.per_opcode == want.counts.per_opcode
    if model != "fault-free":
        assert sum(want.counts.faults.values()) > 0


def test_presets_fuse() -> None:
    """Every shipped preset configures read faults; the fused path samples them, so every preset fuses."""
    from cramc.errmodel.model import preset_names

    linked = verify(parse_file(f"{PROGRAMS}/mnist_mlp.cram"))
    for name in preset_names():
        fm = load_preset(name)
        assert not fm.read.zero
        assert Machine(linked, 1, fm, np.random.default_rng(0)).fusable, name
    asym = FaultModel(read=Rate(1e-3, 2e-3))
    assert not Machine(linked, 1, asym, np.random.default_rng(0)).fusable
