"""`cramc compile --ecc auto` against static defects (the error model's [defects], cramc.ir.noisy's defect model).

The digits MLP at gate error 1e-3 and a budget of 0.3, once with an error model whose cells are stuck at 0 or
at 1 at 5e-3 each ("aware") and once with the same gate error and no [defects] ("blind", today's plan):

- the choice, read off the emitted programs: the aware plan protects some terms with a replica scheme (its
  copies read distinct operand cells, cramc.ir.ecc), the blind plan with none (its rates equal dup's);
- the gain, measured at the gate level under the defects: both programs run on the same 8 chips (chip seeds
  0..7, as ``cramc run --chip-seed c``) and the same per-inference seeds, 360 test images each; the 95%
  Student-t interval of the per-chip accuracy gain (aware - blind, paired by chip) lies above 0.  Measured:
  0.973 vs 0.953, gain 0.020, interval [0.007, 0.033].
"""

from __future__ import annotations

import io
import math
import re
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO

from cramc.cli import main
from cramc.errmodel import load_error_model
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.interp import run
from cramc.sim.layout import program_inputs

M = REPO / "models"
CHIPS, IMAGES = 8, 360
T975_7 = 2.3646  # Student t, 97.5% quantile, 7 degrees of freedom
REPLICA = re.compile(r"; (dup_r2|dup_r3|vote_r3|tmr_r3): b\+c=")
DEFECTS = "[defects]\nstuck0 = 5e-3\nstuck1 = 5e-3\n"


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("auto_defects")
    em = tmp / "defects.toml"
    em.write_text(DEFECTS, encoding="utf-8")
    out = {}
    for name, extra in (("aware", ["--error-model", str(em)]), ("blind", [])):
        prog = tmp / f"{name}.cram"
        args = ["compile", str(M / "digits_mlp.onnx"), "--calibration", str(M / "digits_calib_flat.npz")]
        args += ["--ecc", "auto", "--ecc-budget", "0.3", "--gate-error", "1e-3", *extra, "-o", str(prog)]
        with redirect_stderr(io.StringIO()):
            assert main(args) == 0
        out[name] = prog
    out["model"] = em
    return out


def test_replica_schemes_only_against_defects(programs: dict[str, Path]) -> None:
    aware = programs["aware"].read_text(encoding="utf-8")
    blind = programs["blind"].read_text(encoding="utf-8")
    assert REPLICA.search(aware), "the defect-aware plan uses no replica scheme"
    assert "operands stored" in aware  # tiling reserved the replicas
    assert not REPLICA.search(blind) and "operands stored" not in blind
    assert "; dup: b+c=" in blind  # the blind plan protects with dup, as documented


def test_defect_aware_plan_is_more_accurate_at_gate_level(programs: dict[str, Path]) -> None:
    with np.load(M / "digits_test_x_flat.npz") as z:
        x = {k: z[k][:IMAGES] for k in z.files}
    labels = np.load(M / "digits_test_labels.npy")[:IMAGES]
    fm = load_error_model(str(programs["model"])).with_gate_error(1e-3)
    acc: dict[str, list[float]] = {}
    for name in ("aware", "blind"):
        linked = verify(parse(programs[name].read_text(encoding="utf-8"), f"{name}.cram"))
        feed = program_inputs(linked, x, "--data")
        out = linked.outputs[0].name
        acc[name] = []
        for chip in range(CHIPS):
            y = run(linked, feed, fm, seed=100 + chip, chip_seed=chip).outputs[out]
            acc[name].append(float((y.reshape(IMAGES, -1).argmax(axis=1) == labels).mean()))
    gain = np.array(acc["aware"]) - np.array(acc["blind"])
    half = T975_7 * gain.std(ddof=1) / math.sqrt(CHIPS)
    assert gain.mean() - half > 0, (acc, gain.mean(), half)
