"""The defect-aware statistical model (cramc.ir.noisy with [defects]) against the gate-level interpreter.

One MVM (K=40 rows of uint8 inputs times int8 weights, arrays of 16 rows: 3 chunks of 14 rows, 2 padding
rows) with N=64 outputs that all hold the same weight column, one output per array (``--accs 1``), so an
output's cells (its weights, its copy of the input bit-planes, its scratch) are its own 3 arrays: the gate
level draws the defects of every array independently (cramc.sim.chip), so the 64 outputs of one chip are 64
independent draws of one distribution, and the chip seed changes from run to run.  That is what the
statistical model assumes (each sample on a chip of its own).  The model is evaluated as ``cramc sweep
--mode statistical`` does (noisy_evaluate on the compiled IR before schedule, all_rates, all_defects).

Error model: AND gates at 1e-3 and, per cell, stuck-at-0 and stuck-at-1 at 5e-3 each and weak at 5e-3 with
weak_factor 40 (about 6 defective cells per output and scheme none), under ``none``, ``dup`` (its copies
read the same operand cells), ``dup_r3`` and ``tmr_r3`` (operand replicas; the voter's scratch cell).  For
each:

- the distributions of the accumulator error (gate level: 48 chips x 64 outputs; model: 48 samples x 64
  outputs) pass a two-sample Kolmogorov-Smirnov test at significance 1e-3 (critical D asymptotic,
  conservative for these discrete distributions);
- the fraction of wrong outputs agrees within 5 standard errors of a two-proportion difference;
- power: the same model without the defects (defects=None, the binomials alone) is rejected by one of the
  two, so the test fails where defects are ignored.

Measured (wrong outputs gate / model / model without defects; KS D with the defects, critical 0.0497):
none 0.9997 / 0.9987 / 0.926, D 0.020; dup 0.958 / 0.967 / 0.003, D 0.022; dup_r3 0.275 / 0.282 / 0.003,
D 0.006; tmr_r3 0.983 / 0.983 / 0.927, D 0.026; without defects D is 0.15 to 0.48 (model against model, other
seeds: D 0.014 to 0.034).  Seeds are fixed, so the
verdicts are reproducible.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ft_helpers import ks_2samp, ks_critical, one_mvm_model

from cramc.compiler import Options, compile_frontend, lower
from cramc.errmodel import Defects, FaultModel
from cramc.frontend.pipeline import run_frontend
from cramc.ir.noisy import all_defects, all_rates, noisy_evaluate
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.interp import run

K, N, ROWS, CHIPS = 40, 64, 16, 48
ALPHA = 1e-3
SIGMAS = 5.0
FM = replace(FaultModel.uniform(1e-3), defects=Defects(stuck0=5e-3, stuck1=5e-3, weak=5e-3, weak_factor=40.0))
SCHEMES = ["none", "dup", "dup_r3", "tmr_r3"]


def _operands() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=K)
    w = rng.integers(-127, 128, size=(K, 1))
    w[0, 0] = -127  # the weights need all 8 bits
    return x, np.repeat(w, N, axis=1)  # every output the same column


def _errors(tmp_path: Path, scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accumulator errors, flattened over outputs: gate level (a chip per run), the model, the model blind to
    defects."""
    x, w = _operands()
    path = tmp_path / "one_mvm.onnx"
    one_mvm_model(path, w)
    cal = {"x": x.reshape(1, 1, -1).astype(np.uint8)}
    opts = Options(rows=ROWS, accs=1, n_validation=1, ecc="" if scheme == "none" else scheme)
    log = io.StringIO()
    fe = run_frontend(str(path), cal, log=log)
    text = compile_frontend(str(path), fe, opts, log)
    assert "tile: 3 chunk(s) of 14 rows, 1 output(s) x 64 group(s) per array, 192 arrays" in text
    assert "double-buffered scratch" in text  # the model's scratch cells follow dbuf=1
    linked = verify(parse(text, "one_mvm.cram"))
    exact = (x.astype(np.int64) @ w.astype(np.int64)).astype(np.float64)
    xs = x.astype(np.int64).reshape(1, 1, -1)
    gate = np.concatenate(
        [
            run(linked, {"x": xs}, FM, seed=c, chip_seed=c, max_memory=1 << 28).outputs["y"].reshape(-1) - exact
            for c in range(CHIPS)
        ]
    )
    g = lower(fe, opts, log, stop_before="schedule")
    (mvm,) = [op for op in g.ops if op.kind == "mvm"]
    assert mvm.attrs.get("dbuf") == 1
    feed = {g.inputs[0].name: np.broadcast_to(x.astype(np.float32), (CHIPS, 1, K)).reshape(-1, *g.inputs[0].shape)}
    out = g.outputs[0].name

    def model(defects: bool, seed: int) -> np.ndarray:
        d = all_defects(g, FM) if defects else None
        y = noisy_evaluate(g, feed, all_rates(g, FM), np.random.default_rng(seed), defects=d)[out]
        return (y.reshape(CHIPS, -1) - exact).reshape(-1)

    return gate, model(True, 1), model(False, 1)


def _agrees(a: np.ndarray, b: np.ndarray) -> tuple[bool, str]:
    """Both tests of the module docstring: (passed, why not)."""
    d, crit = ks_2samp(a, b), ks_critical(ALPHA, a.size, b.size)
    pa, pb = (a != 0).mean(), (b != 0).mean()
    pool = (np.count_nonzero(a) + np.count_nonzero(b)) / (a.size + b.size)
    se = np.sqrt(pool * (1 - pool) * (1 / a.size + 1 / b.size))
    ok_ks, ok_p = d <= crit, abs(pa - pb) <= SIGMAS * se
    return bool(ok_ks and ok_p), f"KS D={d:.4f} (critical {crit:.4f}); wrong outputs {pa:.4f} vs {pb:.4f} (se {se:.4f})"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_defect_model_matches_gate_level(tmp_path: Path, scheme: str) -> None:
    gate, model, blind = _errors(tmp_path, scheme)
    assert gate.size == model.size == CHIPS * N
    ok, why = _agrees(gate, model)
    assert ok, f"{scheme}: {why}"
    ok, why = _agrees(gate, blind)
    assert not ok, f"{scheme}: the model without defects is not rejected: {why}"
