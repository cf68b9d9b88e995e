"""The device model (cramc/errmodel/device.py): gate errors per input count, energy and latency from MTJ parameters."""

from __future__ import annotations

import math
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from cramc.errmodel.device import (
    CIRCUITS,
    DeviceParams,
    gate_circuit,
    gate_currents,
    gate_energy,
    gate_energy_table,
    gate_error_table,
    gate_latency,
    gate_voltage,
    markdown_tables,
    path_resistances,
    preset_energy,
    realised_outputs,
    switching_probability,
    voltage_window,
)
from cramc.errors import UserError
from cramc.isa.opcodes import GATES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "error-model.md"
DEFAULT = DeviceParams()
#: A better device than the default (higher TMR and stability, no access resistance), to show margins grow.
GOOD = DeviceParams(tmr=2.0, delta=60.0, r_access=0.0)


def _truth_by_ones(op) -> dict[int, int]:  # noqa: ANN001 - an Opcode
    """The opcode's logic on every input pattern (bit j of each packed word is pattern j), grouped by ones."""
    n = len(op.operands) - 1
    pats = np.arange(1 << n, dtype=np.uint64)
    ins = [
        np.array([int(np.bitwise_or.reduce(((pats >> np.uint64(i)) & np.uint64(1)) << pats))], dtype=np.uint64)
        for i in range(n)
    ]
    out = int(op.logic(*ins)[0])
    by: dict[int, set[int]] = {}
    for j in range(1 << n):
        by.setdefault(bin(j).count("1"), set()).add((out >> j) & 1)
    assert all(len(v) == 1 for v in by.values()), f"{op.mnemonic} is not a function of the number of ones"
    return {k: v.pop() for k, v in by.items()}


@pytest.mark.parametrize("op", GATES, ids=lambda o: o.mnemonic)
def test_circuit_and_realised_truth_table_match_the_opcode_logic(op) -> None:  # noqa: ANN001
    c = gate_circuit(op.mnemonic)
    ref = _truth_by_ones(op)
    assert c.n_inputs == len(op.operands) - 1
    assert tuple(c.ideal_output(k) for k in range(c.n_inputs + 1)) == tuple(ref[k] for k in range(c.n_inputs + 1))
    for p in (DEFAULT, GOOD, DEFAULT.with_(voltage_rule="mid"), DEFAULT.with_(t_pulse=3e-9)):
        assert realised_outputs(op.mnemonic, p) == tuple(ref[k] for k in range(c.n_inputs + 1))
    lo, hi = voltage_window(op.mnemonic, DEFAULT)
    assert 0 < lo < gate_voltage(op.mnemonic, DEFAULT) < hi


def test_every_gate_of_the_isa_has_a_circuit() -> None:
    assert set(CIRCUITS) == {op.mnemonic for op in GATES}


@pytest.mark.parametrize("params", [DEFAULT, GOOD], ids=["default", "good"])
@pytest.mark.parametrize("gate", list(CIRCUITS))
def test_errors_concentrate_next_to_the_threshold(gate: str, params: DeviceParams) -> None:
    c = CIRCUITS[gate]
    e = gate_error_table(gate, params)
    assert len(e) == c.n_inputs + 1
    assert all(0 <= x <= 1 for x in e)
    worst = max(e)
    assert e[c.threshold] == worst or e[c.threshold + 1] == worst
    # Moving away from the threshold on either side the error never grows ...
    left, right = e[: c.threshold + 1], e[c.threshold + 1 :]
    assert all(a <= b for a, b in pairwise(left)), e
    assert all(a >= b for a, b in pairwise(right)), e
    # ... and for gates with a state two steps from the threshold it is strictly smaller there.
    if c.threshold >= 1:
        assert e[c.threshold - 1] < e[c.threshold]
    if c.threshold + 2 <= c.n_inputs:
        assert e[c.threshold + 2] < e[c.threshold + 1]


def test_maj3_unanimous_inputs_fail_far_less_than_two_against_one() -> None:
    for params, factor in ((DEFAULT, 5.0), (GOOD, 200.0)):
        e = gate_error_table("maj3", params)
        assert max(e[0], e[3]) * factor < min(e[1], e[2]), (params, e)


def test_currents_fall_with_the_number_of_ones_and_follow_ohms_law() -> None:
    for g in CIRCUITS:
        v = gate_voltage(g, DEFAULT)
        i = gate_currents(g, DEFAULT)
        r = path_resistances(g, DEFAULT)
        assert all(a > b for a, b in pairwise(i))
        assert i == pytest.approx(tuple(v / r))
    # nand, k = 1: (R_P + R_a) || (R_AP + R_a) + R_P + R_a  (output preset 0 = parallel)
    p = DEFAULT
    expect = 1 / (1 / (p.r_p + p.r_access) + 1 / (p.r_ap + p.r_access)) + p.r_p + p.r_access
    assert path_resistances("nand", p)[1] == pytest.approx(expect)


def test_switching_probability_is_monotone_and_has_the_textbook_limits() -> None:
    i = np.linspace(0.05, 6.0, 400)
    for model in ("combined", "thermal", "precessional"):
        p = DEFAULT.with_(switching_model=model)
        s = switching_probability(i, p.t_pulse, p)
        assert np.all(np.diff(s) >= 0) and s[0] < 1e-12
    th = DEFAULT.with_(switching_model="thermal")
    # Neel-Brown: P = 1 - exp(-t / (tau0 exp(Delta (1 - i)))) below I_c0
    x = 0.7
    expect = 1 - math.exp(-th.t_pulse / (th.tau0 * math.exp(th.delta * (1 - x))))
    assert float(switching_probability(x, th.t_pulse, th)) == pytest.approx(expect, rel=1e-12)
    pr = DEFAULT.with_(switching_model="precessional")
    assert float(switching_probability(0.99, pr.t_pulse, pr)) == 0.0
    y = 1.8
    expect = math.exp(-(math.pi**2 * pr.delta / 4) * math.exp(-2 * (y - 1) * pr.t_pulse / pr.tau_d))
    assert float(switching_probability(y, pr.t_pulse, pr)) == pytest.approx(expect, rel=1e-12)


def test_longer_pulse_lowers_the_error_and_raises_the_energy() -> None:
    # Short pulses (precessional regime, crossover): the failure to switch limits, and every gate's worst
    # error falls as the pulse grows; gates with wide windows keep improving longer (not, copy: up to 10 ns).
    def worst(g: str, t: float) -> float:
        return max(gate_error_table(g, DEFAULT.with_(t_pulse=t)))

    for g in CIRCUITS:
        w = [worst(g, t) for t in (1e-9, 2e-9, 3e-9, 5e-9, 10e-9)]
        if g == "maj5":  # on the default device its two threshold states differ by ~1.4 % in current:
            assert min(w) > 0.35  # no pulse width opens a usable window
            continue
        assert all(w[0] > x for x in w[1:]), (g, w)
    for g, pulses in (("not", 6), ("copy", 6), ("nand", 4)):
        w = [worst(g, t) for t in (1e-9, 2e-9, 3e-9, 5e-9, 7e-9, 10e-9)[:pulses]]
        assert all(a > b for a, b in pairwise(w)), (g, w)
        assert w[-1] < 0.1 * w[0]  # more than an order of magnitude
    # Long pulses (thermal regime): false switching limits and the error flattens (Neel-Brown depends on
    # Delta * i + ln t only, so a longer pulse at a lower voltage keeps the same current ratio).
    for g in CIRCUITS:
        w = [worst(g, t) for t in (10e-9, 20e-9, 50e-9, 100e-9)]
        assert max(w) < 2.0 * min(w), (g, w)
    # The energy grows with the pulse over the whole range.
    pulses = (1e-9, 2e-9, 3e-9, 5e-9, 10e-9, 20e-9, 50e-9, 100e-9)
    for g in CIRCUITS:
        energy = [gate_energy(g, DEFAULT.with_(t_pulse=t)) for t in pulses]
        assert all(a < b for a, b in pairwise(energy)), (g, energy)


def test_huge_thermal_stability_drives_every_error_to_zero() -> None:
    # Long pulses in the thermal regime: the switching step sharpens with Delta, every error falls towards 0.
    base = DeviceParams(switching_model="thermal", t_pulse=1e-6, t_preset=1e-6)
    for g, c in CIRCUITS.items():
        tables = [gate_error_table(g, base.with_(delta=d)) for d in (45.0, 100.0, 300.0, 1000.0, 3000.0)]
        for k in range(c.n_inputs + 1):
            col = [t[k] for t in tables]
            assert all(a >= b for a, b in pairwise(col)), (g, k, col)
        assert max(tables[-1]) < 1e-15, (g, tables[-1])


def test_wider_tmr_window_helps_inverting_gates_but_an_ap_output_dilutes_majority() -> None:
    ideal = [DeviceParams(tmr=t, r_access=0.0) for t in (0.5, 1.0, 2.0, 5.0)]
    for g in ("not", "nand", "min3"):
        worst = [max(gate_error_table(g, p)) for p in ideal]
        assert all(a >= b for a, b in pairwise(worst)) and worst[-1] < 0.1 * worst[0], (g, worst)
    # maj3's output is preset to 1 (antiparallel): its own R_AP in series caps the current step between
    # one and two inputs at 1 below 6 % for any TMR, so its threshold error stays large.
    for t in (0.5, 1.0, 2.0, 5.0, 100.0):
        r = path_resistances("maj3", DeviceParams(tmr=t, r_access=0.0))
        assert r[2] / r[1] < 1.06
        assert max(gate_error_table("maj3", DeviceParams(tmr=t, r_access=0.0))) > 0.05


def test_errors_move_the_right_way_with_the_voltage() -> None:
    for g, c in CIRCUITS.items():
        v = gate_voltage(g, DEFAULT)
        lo, hi = gate_error_table(g, DEFAULT, voltage=v * 0.99), gate_error_table(g, DEFAULT, voltage=v * 1.01)
        for k in range(c.n_inputs + 1):
            if k <= c.threshold:  # should switch: more voltage, fewer failures
                assert hi[k] <= lo[k]
            else:  # should hold the preset: more voltage, more false switches
                assert hi[k] >= lo[k]
        assert hi[c.threshold] < lo[c.threshold] and hi[c.threshold + 1] > lo[c.threshold + 1]
        # minimax: the two states next to the threshold fail equally at the chosen voltage
        e = gate_error_table(g, DEFAULT)
        assert e[c.threshold] == pytest.approx(e[c.threshold + 1], rel=1e-6)


def test_energy_and_latency_follow_from_voltage_current_and_pulse() -> None:
    p = DEFAULT
    for g, c in CIRCUITS.items():
        v = gate_voltage(g, p)
        i = gate_currents(g, p)
        e = gate_energy_table(g, p)
        pre = preset_energy(p, c.preset)
        assert e == pytest.approx(tuple(v * x * p.t_pulse + pre for x in i))
        assert gate_energy(g, p, p_one=0.0) == pytest.approx(e[0])
        assert gate_energy(g, p, p_one=1.0) == pytest.approx(e[-1])
        assert gate_latency(g, p) == pytest.approx(p.t_preset + p.t_pulse)
    ic = p.i_c0 * p.preset_overdrive
    assert preset_energy(p, 0) == pytest.approx(ic * ic * (0.5 * (p.r_p + p.r_ap) + p.r_access) * p.t_preset)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"tmr": -1.0}, "tmr"),
        ({"tmr": 0.0}, "tmr"),
        ({"delta": float("nan")}, "delta"),
        ({"r_p": "3k"}, "r_p"),
        ({"t_pulse": True}, "t_pulse"),
        ({"i_c0": 0.0}, "i_c0"),
        ({"r_access": -5.0}, "r_access"),
        ({"preset_mismatch": 1.5}, "preset_mismatch"),
        ({"switching_model": "sun"}, "switching_model"),
        ({"voltage_rule": "max"}, "voltage_rule"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_invalid_parameters_are_user_errors_naming_the_field(change: dict, needle: str) -> None:
    with pytest.raises(UserError, match=re.escape(needle)):
        DeviceParams(**change)


def test_bad_gate_voltage_or_probability_is_a_user_error() -> None:
    with pytest.raises(UserError, match="'xor' is not a CRAM gate"):
        gate_error_table("xor", DEFAULT)
    with pytest.raises(UserError, match="'wr' is not a CRAM gate"):
        gate_latency("wr", DEFAULT)
    with pytest.raises(UserError, match="voltage"):
        gate_error_table("and", DEFAULT, voltage=-1.0)
    with pytest.raises(UserError, match="p_one"):
        gate_energy("and", DEFAULT, p_one=1.5)


def test_docs_quote_the_generated_tables() -> None:
    text = DOCS.read_text(encoding="utf-8")
    m = re.search(r"<!-- device-tables:begin -->\n(.*?)<!-- device-tables:end -->", text, re.S)
    assert m, "docs/error-model.md lacks the generated device tables (python -m cramc.errmodel.device)"
    assert m.group(1) == markdown_tables(), "regenerate with: python -m cramc.errmodel.device"
