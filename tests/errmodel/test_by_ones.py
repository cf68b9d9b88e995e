"""Input-dependent gate rates (by_ones), the [device] section that derives them, `cramc errmodel show`, and the
device's gate energy and latency in the cost model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from cramtest import example

from cramc.cost.model import static_estimate
from cramc.cost.params import Tech
from cramc.errmodel import GATE_NAMES, FaultModel, Rate, load_error_model, parse_error_model
from cramc.errmodel.device import DeviceParams, cost_overrides, gate_energy, gate_error_table, gate_latency
from cramc.errmodel.model import gate_inputs, gate_output
from cramc.errors import UserError
from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify


def _load(tmp_path: Path, text: str) -> FaultModel:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    return load_error_model(str(path))


# ---------------------------------------------------------------------------- the model
def test_by_ones_table_and_the_rate_helpers(tmp_path: Path) -> None:
    m = _load(
        tmp_path, "[gates]\ndefault = 1e-3\nand = { by_ones = [1e-7, 2e-3, 1e-4] }\nnot = { by_ones = [0, 5e-2] }\n"
    )
    r = m.gate("and")
    assert r == Rate(0.0, 0.0, (1e-7, 2e-3, 1e-4))
    assert r.pmax == 2e-3 and not r.zero and not r.symmetric
    assert [m.gate_wrong("and", k) for k in range(3)] == [1e-7, 2e-3, 1e-4]
    assert m.gate("or") == Rate(1e-3, 1e-3)  # the default still covers the gates not listed
    assert m.input_dependent == ["not", "and"]
    assert Rate(by_ones=(0.0, 0.0)).zero and not Rate(by_ones=(0.0, 1e-9)).zero
    assert FaultModel({"and": Rate(by_ones=(0.0, 0.0, 0.0))}).fault_free
    # output-conditioned rates read through the gate's logic: p01 where the correct output is 0
    o = FaultModel({"or": Rate(0.1, 0.2)})
    assert [o.gate_wrong("or", k) for k in range(3)] == [0.1, 0.2, 0.2]
    assert [gate_output("maj5", k) for k in range(6)] == [0, 0, 0, 1, 1, 1]
    assert [gate_output("nand", k) for k in range(3)] == [1, 1, 0]
    assert {g: gate_inputs(g) for g in ("not", "copy", "and", "maj3", "min5")} == {
        "not": 1,
        "copy": 1,
        "and": 2,
        "maj3": 3,
        "min5": 5,
    }


def test_to_dict_records_by_ones_and_the_device() -> None:
    m = FaultModel({"and": Rate(by_ones=(1e-7, 2e-3, 1e-4)), "or": Rate(0.1, 0.2)}, device=DeviceParams(tmr=1.5))
    d = m.to_dict()
    assert d["gates"] == {"and": {"by_ones": [1e-7, 2e-3, 1e-4]}, "or": {"p01": 0.1, "p10": 0.2}}
    assert d["device"]["tmr"] == 1.5 and d["device"]["switching_model"] == "combined"
    assert "device" not in FaultModel().to_dict()
    json.dumps(d)  # REPORT.json can hold it


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "[gates]\nand = { by_ones = [0.1, 0.2] }\n",
            2,
            "gates.and.by_ones: has 2 value(s); and needs 3 probabilities, for 0..2 of its 2 inputs at 1",
        ),
        (
            "[gates]\nnot = { by_ones = [0.1] }\n",
            2,
            "gates.not.by_ones: has 1 value(s); not needs 2 probabilities, for 0..1 of its 1 input at 1",
        ),  # fmt: skip
        (
            "[gates]\n\nmaj3 = { by_ones = [0, 0.1, 0.2, 0.3], p01 = 0.1 }\n",
            3,
            "gates.maj3: by_ones cannot be combined with p01 (by_ones gives the rate per number of inputs at 1, "
            "p/p01/p10 per correct output: use one form)",
        ),
        (
            "[gates]\nand = { by_ones = [0, 1.5, 0] }\n",
            2,
            "gates.and.by_ones[1]: a probability must be between 0 and 1, got 1.5",
        ),
        (
            "[gates]\nand = { by_ones = [0, nan, 0] }\n",
            2,
            "gates.and.by_ones[1]: a probability must be between 0 and 1, got nan",
        ),
        (
            "[gates]\nand = { by_ones = [0, -1e-3, 0] }\n",
            2,
            "gates.and.by_ones[1]: a probability must be between 0 and 1, got -0.001",
        ),
        ('[gates]\nor = { by_ones = [0, "x", 0] }\n', 2, "gates.or.by_ones[1]: must be a number, got 'x'"),
        (
            "[gates]\nor = { by_ones = 0.1 }\n",
            2,
            "gates.or.by_ones: must be a list of 3 probabilities, for 0..2 of its 2 inputs at 1",
        ),  # fmt: skip
        (
            "[gates]\ndefault = { by_ones = [0, 0, 0] }\n",
            2,
            "gates.default: by_ones depends on each gate's input count: give it per gate",
        ),  # fmt: skip
        ("[device]\ntmr = -1\n", 2, "device.tmr: must be > 0, got -1"),
        ("[device]\nr_p = 3e3\ntmr = true\n", 3, "device.tmr: must be a number, got True"),
        (
            '[device]\nswitching_model = "fast"\n',
            2,
            "device.switching_model: 'fast' is not one of combined, thermal, precessional",
        ),  # fmt: skip
        ("[device]\nvoltage_rule = 1\n", 2, "device.voltage_rule: must be a string, got 1"),
        ("[device]\npreset_mismatch = 2\n", 2, "device.preset_mismatch: must be a probability in [0, 1], got 2"),
        (
            "name = 'x'\n[device]\n  r_acces = 10\n",
            3,
            "device.r_acces: not a device parameter (parameters are r_p, "
            "tmr, r_access, delta, temperature, i_c0, ic0_asymmetry, tau0, tau_d, t_pulse, t_preset, preset_overdrive, "
            "preset_mismatch, switching_model, voltage_rule)",
        ),  # fmt: skip
        (
            "[device]\ntmr = 1.5\n[gates]\ndefault = 1e-3\n",
            4,
            "gates.default: the [device] section derives every "
            "gate's rate; list the gates to override instead of a default",
        ),  # fmt: skip
    ],
)
def test_by_ones_and_device_errors_are_located(tmp_path: Path, text: str, line: int, message: str) -> None:
    with pytest.raises(UserError) as ei:
        _load(tmp_path, text)
    e = ei.value
    assert e.message == message
    assert e.loc is not None and e.loc.file == str(tmp_path / "m.toml") and e.loc.line == line
    rendered = e.render()
    assert rendered.startswith(f"{tmp_path / 'm.toml'}:{line}:") and "^" in rendered


def test_errors_without_source_text_name_the_file() -> None:
    """A document given as a dict (no TOML text): the same message, prefixed with the file name."""
    with pytest.raises(UserError) as ei:
        parse_error_model({"gates": {"and": {"by_ones": [0.1]}}}, "f.toml")
    assert ei.value.loc is None
    assert ei.value.message.startswith("f.toml: gates.and.by_ones: has 1 value(s)")
    for doc, want in (
        ({"device": 3}, "f.toml: [device] must be a table"),
        ({"write": {"q": 1}}, "f.toml: write: unknown key(s) q (use p, p01, p10)"),  # by_ones is for gates only
    ):
        with pytest.raises(UserError) as ei:
            parse_error_model(doc, "f.toml")
        assert ei.value.message == want


def test_device_section_derives_every_gate_and_listed_gates_override(tmp_path: Path) -> None:
    m = _load(tmp_path, "[device]\ntmr = 1.5\ndelta = 60\n[gates]\nand = 1e-4\nor = { by_ones = [0, 0.1, 0] }\n")
    p = DeviceParams(tmr=1.5, delta=60.0)
    assert m.device == p
    for g in GATE_NAMES:
        if g not in ("and", "or"):
            assert m.gate(g).by_ones == gate_error_table(g, p), g
    assert m.gate("and") == Rate(1e-4, 1e-4) and m.gate("or").by_ones == (0.0, 0.1, 0.0)
    # --gate-error replaces every gate rate and keeps the device (its energy and latency)
    o = m.with_gate_error(1e-3)
    assert all(o.gate(g) == Rate(1e-3, 1e-3) for g in GATE_NAMES) and o.device == p


# ---------------------------------------------------------------------------- errmodel show
def test_errmodel_show_prints_the_per_input_count_table(cli, tmp_path: Path) -> None:
    path = tmp_path / "dev.toml"
    path.write_text("[device]\nt_pulse = 5e-9\n[gates]\nand = { by_ones = [1e-7, 2e-3, 1e-4] }\n", encoding="utf-8")
    res = cli("errmodel", "show", str(path), "--json", str(tmp_path / "t.json"))
    assert res.rc == 0, res.err
    lines = res.out.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("gate  n"))
    rows = {ln.split()[0]: ln.split() for ln in lines[head + 2 : head + 2 + len(GATE_NAMES)]}
    m = load_error_model(str(path))
    for g in GATE_NAMES:
        assert rows[g][1] == str(gate_inputs(g)) and rows[g][2] == "by_ones"
        assert [float(x) for x in rows[g][3:]] == pytest.approx(
            [m.gate_wrong(g, k) for k in range(gate_inputs(g) + 1)], rel=5e-3
        )
    assert rows["and"][3:] == ["1.00e-07", "2.00e-03", "1.00e-04"]
    widths = {len(ln) for ln in lines[head + 1 : head + 2]}
    assert len(lines[head + 1]) >= max(len(ln) for ln in lines[head + 2 : head + 12])  # aligned under the rule
    assert widths and "device parameters ([device]):" in res.out and "t_pulse" in res.out
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["gates"]["and"] == {"form": "by_ones", "p_wrong_by_ones": [1e-7, 2e-3, 1e-4]}
    p = DeviceParams(t_pulse=5e-9)
    assert data["device_gates"]["maj3"]["energy_j"] == gate_energy("maj3", p)
    assert data["device_gates"]["maj3"]["latency_s"] == gate_latency("maj3", p) == 8e-9


def test_errmodel_show_of_an_output_conditioned_preset(cli) -> None:
    res = cli("errmodel", "show", "near_term_flat")
    assert res.rc == 0, res.err
    assert "maj5  5  p01/p10  5.00e-03  5.00e-03  5.00e-03  5.00e-03  5.00e-03  5.00e-03" in res.out
    assert "device parameters" not in res.out


@pytest.mark.parametrize("preset", ["early", "near_term", "projected"])
def test_errmodel_show_of_the_device_presets(cli, preset: str) -> None:
    res = cli("errmodel", "show", preset)
    assert res.rc == 0, res.err
    assert "by_ones" in res.out and "derived per gate" in res.out


def test_errmodel_show_errors_are_one_line(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gates]\nand = { by_ones = [0.1] }\n", encoding="utf-8")
    res = cli("errmodel", "show", str(bad))
    assert res.rc == 1 and "Traceback" not in res.err
    assert res.err.startswith(f"{bad}:2:1: error: gates.and.by_ones: has 1 value(s)")
    res = cli("errmodel", "show", "nonesuch")
    assert res.rc == 1 and res.err.startswith("error: no error-model preset named 'nonesuch'")
    assert res.err.count("\n") == 1


# ---------------------------------------------------------------------------- device -> cost
def _gate_energy_of(est, mnemonic: str) -> float:  # noqa: ANN001 - Estimate
    return est.by_opcode[mnemonic].energy_j


def test_device_gate_energy_and_latency_feed_the_cost_model() -> None:
    linked = verify(parse_file(str(example("tmr_and.cram"))))
    p = DeviceParams()
    base = Tech.load()
    tech = base.with_overrides(cost_overrides(p, base.name))
    assert "CRAM gate energy and latency from the error model's [device]" in tech.name
    est, ref = static_estimate(linked, tech), static_estimate(linked, base)
    for g in GATE_NAMES:
        c = tech.op_costs(256)[g]
        assert c.energy_j == gate_energy(g, p) and c.latency_s == gate_latency(g, p), g
    used = [g for g in GATE_NAMES if g in est.by_opcode]
    assert used
    for g in used:  # the energy of each opcode is its row operations times the device's energy per evaluation
        rows = ref.by_opcode[g].row_ops
        assert _gate_energy_of(est, g) == pytest.approx(rows * gate_energy(g, p), rel=1e-12)
    assert est.by_unit["write"].energy_j == ref.by_unit["write"].energy_j  # only the gates change


def test_longer_pulse_trades_energy_for_error(cli, tmp_path: Path) -> None:
    """2 ns -> 5 ns (the regime where the pulse still matters, docs/error-model.md): the worst gate error falls,
    the reported gate energy rises (cramc stats --error-model)."""
    out = {}
    for t in (2e-9, 5e-9):
        path = tmp_path / f"t{t:g}.toml"
        path.write_text(f"[device]\nt_pulse = {t!r}\n", encoding="utf-8")
        js = tmp_path / f"t{t:g}.json"
        res = cli("stats", str(example("tmr_and.cram")), "--error-model", str(path), "--json", str(js))
        assert res.rc == 0, res.err
        assert "CRAM gate energy and latency from the error model's [device]" in res.out
        m = load_error_model(str(path))
        out[t] = (max(m.gate("and").by_ones or ()), json.loads(js.read_text())["by_unit"]["gate"]["energy_j"])
    (e_short, j_short), (e_long, j_long) = out[2e-9], out[5e-9]
    assert e_long < e_short / 2  # 1.4e-1 -> 5.0e-2 for and
    assert j_long > j_short
    assert math.isclose(j_long / j_short, gate_energy("and", DeviceParams(t_pulse=5e-9)) /
                        gate_energy("and", DeviceParams(t_pulse=2e-9)), rel_tol=0.2)  # fmt: skip


def test_without_a_device_the_tech_file_costs_the_gates(cli, tmp_path: Path) -> None:
    js = tmp_path / "s.json"
    assert cli("stats", str(example("tmr_and.cram")), "--error-model", "near_term_flat", "--json", str(js)).rc == 0
    ref = static_estimate(verify(parse_file(str(example("tmr_and.cram")))), Tech.load())
    assert json.loads(js.read_text())["by_unit"]["gate"]["energy_j"] == ref.by_unit["gate"].energy_j


# ---------------------------------------------------------------------------- statistical model
def test_state_counts_are_the_rows_in_each_operand_state() -> None:
    from cramc.train.noise import MvmNoise, state_counts

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2, 3, 12))
    w = rng.integers(-128, 128, size=(4, 6))  # two groups of K = 6
    spec = MvmNoise(8, 8, False, 9, np.zeros((64, 3)), groups=2)
    n = state_counts(x, w, spec)
    for s_ in range(2):
        for p_ in range(3):
            for o in range(4):
                g = o // 2
                for b in range(8):
                    for c in range(8):
                        wb = (w[o] >> b) & 1
                        xc = (x[s_, p_, g * 6 : (g + 1) * 6] >> c) & 1
                        k = wb + xc
                        want = [int((k == j).sum()) for j in range(3)]
                        want[0] += 9 - 6  # padding rows: zero operands
                        assert list(n[s_, p_, o, b, c]) == want


def test_docs_quote_the_generated_preset_tables() -> None:
    import re

    from cramtest import REPO

    from cramc.errmodel.show import preset_markdown

    text = (REPO / "docs" / "error-model.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- preset-tables:begin -->\n(.*?)<!-- preset-tables:end -->", text, re.S)
    assert m, "docs/error-model.md lacks the generated preset tables (python -m cramc.errmodel.show)"
    assert m.group(1) == preset_markdown(), "regenerate with: python -m cramc.errmodel.show"
