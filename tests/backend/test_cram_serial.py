"""The serial CRAM-only lowering (``--reduce cram-serial``, cramc.backend.cram_serial).

- the accumulation adder (`acc_micro`) is exact for every width it is built for, sign extension included,
  and has the documented 4W - 1 gates;
- random MVMs (unsigned and signed inputs, several K, weight and input bits, chunks, output groups,
  time-multiplexed passes, groups) are exact and equal to the hybrid and the log-depth lowering;
- the gate count is the documented formula, and the static count (`cramc stats`'s) equals the executed one;
- in-array TMR of partial products: exact at zero faults, 3 more gates per protected term and row, and
  `vote`/`dup`/`--ecc auto` are user errors that say why;
- faults apply: the counted gate faults are binomial in the executed gate evaluations (5 sigma), and a run
  whose count is zero is exact (the per-instruction identity counted = wrong bits of every gate, `rd` and
  `wr` this lowering emits is tests/sim/test_fault_effects.py's);
- the CLI accepts --reduce cram-serial and rejects bad combinations with a message.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO
from test_cram_only import _gates, _lower, _micro_program, _mvm_graph

from cramc.backend.cram_only import F_COLS, TileCramOnly, levels
from cramc.backend.cram_serial import acc_micro, acc_width
from cramc.cli import main as cramc_main
from cramc.cost.static import count_program
from cramc.errmodel import FaultModel
from cramc.errors import UserError
from cramc.ir.ecc import BY_NAME
from cramc.ir.graph import Graph
from cramc.ir.passes.manager import run_passes
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim.interp import run

MODELS = REPO / "models"


@pytest.mark.parametrize(("a_bits", "width"), [(2, 2), (3, 5), (16, 16), (16, 22), (12, 20), (22, 22)])
def test_accumulation_adder_is_exact(a_bits: int, width: int) -> None:
    rng = np.random.default_rng(a_bits * 100 + width)
    a = rng.integers(-(1 << (a_bits - 1)), 1 << (a_bits - 1), size=61)
    b = rng.integers(-(1 << (width - 1)), 1 << (width - 1), size=61)
    a[:2] = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    b[:2] = -(1 << (width - 1)), (1 << (width - 1)) - 1
    acol, bcol = 0, a_bits + 1
    f = bcol + width
    micro = acc_micro(a_bits, width)
    linked = _micro_program(
        micro,
        a.size,
        f + F_COLS,
        [("a", acol, a_bits), ("b", bcol, width)],
        {"a": acol, "b": bcol, "f": f},
        (bcol - 1, width),
    )
    res = run(linked, {"a": a[None, None], "b": b[None, None]})
    s = (a + b) % (1 << width)
    want = np.where(s >= 1 << (width - 1), s - (1 << width), s)  # two's complement, carry out dropped
    assert np.array_equal(res.outputs["y"][0, 0], want)
    assert _gates(micro) == 4 * width - 1


SERIAL_CASES = [
    # p, k, n, wbits, xbits, xsigned, groups, arrays, rows, cols
    (3, 37, 5, 8, 8, 1, 1, 64, 16, 128),  # 3 chunks of 13 rows
    (3, 37, 5, 8, 8, 0, 1, 64, 16, 128),
    (4, 50, 6, 4, 8, 0, 1, 64, 16, 128),  # 4-bit weights, 4 chunks
    (5, 40, 12, 4, 8, 1, 1, 3, 16, 80),  # a chip of 3 arrays: time-multiplexed passes, 2 output groups
    (7, 24, 6, 8, 8, 0, 3, 64, 8, 128),  # groups (block-diagonal weights)
    (2, 100, 3, 8, 4, 1, 1, 64, 64, 128),  # 4-bit x: the multiplier steps over w; 64 rows, 2 chunks
    (2, 9, 4, 2, 4, 0, 1, 64, 9, 64),  # tiny widths, one chunk of 9 rows
]


def _inputs(g_args: tuple[int, ...], seed: int) -> tuple[Graph, np.ndarray, np.ndarray]:
    p, k, n, wbits, xbits, xsigned, groups = g_args
    rng = np.random.default_rng(seed)
    g, w = _mvm_graph(p, k, n, wbits, xbits, xsigned, groups, rng)
    lo, hi = (-(1 << (xbits - 1)), 1 << (xbits - 1)) if xsigned else (0, 1 << xbits)
    x = rng.integers(lo, hi, size=(3, p, k))
    x[0], x[1] = lo, hi - 1  # extreme inputs: the largest partial sums
    kg, ng = k // groups, n // groups
    want = np.concatenate([x[..., i * kg : (i + 1) * kg] @ w[i * ng : (i + 1) * ng].T for i in range(groups)], axis=-1)
    return g, x, want


@pytest.mark.parametrize(("p", "k", "n", "wbits", "xbits", "xsigned", "groups", "arrays", "rows", "cols"), SERIAL_CASES)
def test_random_mvm_exact_and_equal_to_hybrid(
    p: int, k: int, n: int, wbits: int, xbits: int, xsigned: int, groups: int, arrays: int, rows: int, cols: int
) -> None:
    args = (p, k, n, wbits, xbits, xsigned, groups)
    g, x, want = _inputs(args, p * 1000 + k)
    linked = _lower(g, "cram-serial", arrays, rows, cols)
    res = run(linked, {"x": x})
    assert np.array_equal(res.outputs["y"], want)
    assert res.counts.reduces == 0 and res.counts.tree_sensed == 0, "no adder tree"
    for other in ("tree", "cram"):
        g2, _, _ = _inputs(args, p * 1000 + k)
        assert np.array_equal(run(_lower(g2, other, arrays, rows, cols), {"x": x}).outputs["y"], res.outputs["y"])


def _per_output_gates(k_rows: int, r: int, s: int, wp: int) -> int:
    """rows x multiplier gates + (rows - 1) additions of 4A - 1 gates, A = wp + ceil(log2 rows)."""
    return k_rows * (r + (s - 1) * 5 * r - 1) + (k_rows - 1) * (4 * (wp + levels(k_rows)) - 1)


@pytest.mark.parametrize(("wbits", "xbits"), [(8, 8), (4, 8), (8, 4)])
def test_gate_count_formula_static_and_executed_agree(wbits: int, xbits: int) -> None:
    """A gate counted is a gate executed: the formula, the static count and the simulator's count are one number."""
    p, k, n, rows = 2, 13, 3, 16
    g, _ = _mvm_graph(p, k, n, wbits, xbits, 0, 1, np.random.default_rng(0))
    linked = _lower(g, "cram-serial", 64, rows, 128)
    res = run(linked, {"x": np.ones((1, p, k), dtype=np.int64)})
    r, s = min(wbits, xbits), max(wbits, xbits)
    assert acc_width(wbits, xbits, k) == wbits + xbits + 4
    want = p * n * _per_output_gates(k, r, s, wbits + xbits)  # one array, one replica per patch, 3 outputs
    assert res.counts.gate_evals == want
    static = count_program(linked).main_total.ops
    assert sum(r for mn, (_, r) in static.items() if OPCODES[mn].unit is Unit.GATE) == want


def test_serial_is_slower_than_log_depth_by_the_gate_steps() -> None:
    """The serial lowering executes the same additions (n - 1 per output) but one after another."""
    p, k, n, rows = 1, 16, 2, 16
    g, _ = _mvm_graph(p, k, n, 8, 8, 0, 1, np.random.default_rng(1))
    serial = count_program(_lower(g, "cram-serial", 64, rows, 128)).main_total.ops
    g, _ = _mvm_graph(p, k, n, 8, 8, 0, 1, np.random.default_rng(1))
    log = count_program(_lower(g, "cram", 64, rows, 128)).main_total.ops

    def gate_instrs(c: dict[str, list[int]]) -> int:
        return sum(i for mn, (i, _) in c.items() if OPCODES[mn].unit is Unit.GATE)

    # per output: 16 rows' multiplier (231 gate instructions each way) + 15 serial additions of 4*20-1 gates,
    # against 4 levels of 4W+3 gates (W = 16, 17, 18, 19)
    mul = 8 + 7 * 5 * 8 - 1
    assert gate_instrs(serial) == n * (mul + 15 * (4 * 20 - 1))
    assert gate_instrs(log) == n * (mul + sum(4 * w + 3 for w in (16, 17, 18, 19)))


# ----------------------------------------------------------------------------- error correction
def test_tmr_partial_products_exact_and_counted() -> None:
    p, k, n, rows = 2, 13, 3, 16
    tmr = BY_NAME["tmr"].code
    plain, x, want = _inputs((p, k, n, 8, 8, 1, 1), 5)
    base = run(_lower(plain, "cram-serial", 64, rows, 128), {"x": x})
    g, _, _ = _inputs((p, k, n, 8, 8, 1, 1), 5)
    plan = [tmr if b + c >= 10 else 0 for b in range(8) for c in range(8)]
    g.ops[0].attrs["ecc"] = plan
    res = run(_lower(g, "cram-serial", 64, rows, 128), {"x": x})
    assert np.array_equal(res.outputs["y"], want)
    protected = sum(1 for c in plan if c)
    assert res.counts.gate_evals - base.counts.gate_evals == 3 * len(x) * p * n * k * protected


@pytest.mark.parametrize("name", ["vote", "dup"])
def test_periphery_schemes_are_refused_with_the_reason(name: str) -> None:
    g, _ = _mvm_graph(1, 16, 4, 8, 8, 1, 1, np.random.default_rng(0))
    g.ops[0].attrs["ecc"] = [BY_NAME[name].code] * 64
    with pytest.raises(UserError, match=rf"{name} with --reduce cram-serial: .*no adder tree.*tmr"):
        run_passes(g, [TileCramOnly(64, 256, 64, reduce="cram-serial")])


# ----------------------------------------------------------------------------- faults
def test_gate_faults_apply_binomially_and_a_run_without_faults_is_exact() -> None:
    p, k, n, rows = 2, 13, 3, 16
    g, x, want = _inputs((p, k, n, 8, 8, 1, 1), 7)
    linked = _lower(g, "cram-serial", 64, rows, 128)
    rate = 2e-4
    wrong_with_faults = 0
    for seed in range(6):
        r = run(linked, {"x": x}, FaultModel.uniform(rate), seed=seed)
        ev, got = r.counts.gate_evals, r.counts.faults["gate"]
        assert abs(got - rate * ev) <= 5 * math.sqrt(rate * ev) + 1  # binomial, 5 sigma
        if got == 0:
            assert np.array_equal(r.outputs["y"], want)
        else:
            wrong_with_faults += int(not np.array_equal(r.outputs["y"], want))
    assert wrong_with_faults > 0, "faults in the serial adders change the outputs"


# ----------------------------------------------------------------------------- CLI
def _cramc(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cramc_main(list(argv))
    return rc, out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ecc", "vote"], "vote with --reduce cram-serial"),
        (["--ecc", "auto", "--gate-error", "1e-3"], "--ecc auto with --reduce cram-serial"),
        (["--cols", "40"], r"CRAM-only MVM \(--reduce cram-serial\) of layer .*use --cols"),
    ],
)
def test_cli_bad_combinations(tmp_path: Path, extra: list[str], message: str) -> None:
    out = f"{tmp_path}/x.cram"
    model, calib = str(MODELS / "digits_mlp.onnx"), str(MODELS / "digits_calib_flat.npz")
    rc, text = _cramc("compile", model, "-o", out, "--calibration", calib, "--reduce", "cram-serial", *extra)
    assert rc == 1 and "Traceback" not in text
    assert re.search(message, text), text
    assert not os.path.exists(out), "nothing half-written"
