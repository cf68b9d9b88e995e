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
