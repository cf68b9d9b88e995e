"""The 7 nm CMOS technology file and the batch-1 GPU launch model (cramc/cost/roofline.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cramc.cost.params import Tech
from cramc.cost.roofline import LayerWork, gpu_launch_model, roofline
from cramc.errors import UserError

# [Stillmaker17]'s fits as cmos7nm.toml quotes them: energy a V^2 + b V + c, delay a V^3 + b V^2 + c V + d,
# at the nominal supplies 1.0 V (45 nm) and 0.7 V (7 nm); area 45 -> 7 nm from their table.
E45, E7 = (1.103, -0.362, 0.2767), (0.1776, -0.09097, 0.02447)
D45, D7 = (-501.6, 1567.0, -1619.0, 566.1), (-28.58, 76.6, -70.26, 24.69)


def _poly(c: tuple[float, ...], v: float) -> float:
    return sum(a * v ** (len(c) - 1 - i) for i, a in enumerate(c))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_7nm_factors_are_stillmakers() -> None:
    node = Tech.load("cmos7nm").data["cmos_node"]
    energy = _poly(E7, 0.7) / _poly(E45, 1.0)
    delay = _poly(D7, 0.7) / _poly(D45, 1.0)
    assert f"{node['energy_factor']:.3g}" == f"{energy:.3g}" == "0.047"
    assert f"{node['delay_factor']:.3g}" == f"{delay:.3g}" == "0.259"
    assert node["area_factor"] == 0.059 and node["node_nm"] == 7


def test_7nm_changes_only_cmos_figures_by_the_factors() -> None:
    base, t7 = _flat(Tech.load().data), _flat(Tech.load("cmos7nm").data)
    n = t7.pop("cmos_node.energy_factor"), t7.pop("cmos_node.delay_factor"), t7.pop("cmos_node.area_factor")
    fe, fd, fa = n
    del t7["cmos_node.node_nm"]
    # figure -> (the part that stays: an MTJ's switching or sensing, the factor of the rest)
    expected = {
        "write.cycle_s": (3e-9, fd),
        "write.energy_j": (3e-13, fe),
        "tree.energy_j": (1e-13, fe),
        "tree.stage_delay_s": (0.0, fd),
        "tree.fa_area_um2": (0.0, fa),
        "tree.reg_area_um2": (0.0, fa),
        "tree.sense_area_um2": (0.0, fa),
        "tree.recompute_energy_j": (2e-13, fe),
        "tree.tvadd.energy_j": (3e-13, fe),
        "tree.tvsub.energy_j": (3e-13, fe),
        "tree.tdadd.energy_j": (2e-13, fe),
        "tree.tdsub.energy_j": (2e-13, fe),
        "acc.latency_s": (0.0, fd),
        "acc.energy_j": (0.0, fe),
        "acc.bit_area_um2": (0.0, fa),
        "cmos.latency_s": (0.0, fd),
        "cmos.cycle_s": (0.0, fd),
        "cmos.energy_j": (0.0, fe),
        "cmos.area_mm2": (0.0, fa),
    }
    changed = {k for k in base if k != "name" and t7[k] != base[k]}
    assert set(t7) == set(base)
    assert changed == set(expected)
    for k, (kept, f) in expected.items():
        assert t7[k] == pytest.approx(kept + (base[k] - kept) * f, rel=1e-9), k
    # the MTJ figures are today's
    for k in ("gate.latency_s", "gate.energy_j", "read.energy_j", "read.cycle_s", "tree.latency_s"):
        assert t7[k] == base[k]


def test_7nm_shrinks_only_the_cmos_area() -> None:
    """cramc stats --tech cmos7nm: cells and their periphery as at 45 nm, the adder trees, accumulators, CMOS 0.059x."""
    from cramc.cost.model import area_mm2
    from cramc.isa.linked import MachineSpec

    spec = MachineSpec(arrays=1024, rows=256, cols=256, accs=4)
    a45, a7 = area_mm2(spec, Tech.load()), area_mm2(spec, Tech.load("cmos7nm"))
    assert a7["cells"] == a45["cells"] and a7["periphery"] == a45["periphery"]
    for part in ("adder_trees", "accumulators", "cmos"):
        assert a45[part] > 0 and a7[part] == pytest.approx(0.059 * a45[part]), part


def _gpu_tech(**over: float) -> Tech:
    d = {
        "peak_ops_per_s": 1e15,
        "memory_bandwidth_bytes_per_s": 1e12,
        "power_w": 700.0,
        "kernel_launch_s": 5e-6,
        "sm_count": 100,
        "outputs_per_block": 128,
        "launch_power_w": 100.0,
        **over,
    }
    return Tech.load().with_overrides({"device": {"gpu": d}})


def test_gpu_launch_model_by_hand() -> None:
    work = [
        LayerWork("fc1", "Gemm", macs=64 * 1000, ops=0, weight_values=64000, in_values=64, out_values=1000),
        LayerWork("relu", "Relu", macs=0, ops=1000, weight_values=0, in_values=0, out_values=0),
        LayerWork("flat", "Flatten", macs=0, ops=1000, weight_values=0, in_values=0, out_values=0),
        LayerWork("big", "Conv", macs=10**10, ops=0, weight_values=10**6, in_values=10**6, out_values=128 * 200),
    ]
    tech = _gpu_tech()
    est = gpu_launch_model(work, tech, "gpu", batch=1)
    # fc1: 8 blocks of 128 outputs on 100 SMs: u = 0.08; exec = max(128000 / 8e13, 65064 / 8e10) = 8.133e-7 < launch
    # relu: 1000 outputs -> 8 blocks, u = 0.08, exec = 1000 / 8e13 < launch;  flatten: no kernel
    # big: 200 blocks -> u = 1; exec = max(2e10 / 1e15, 2025600 / 1e12) = 2e-5 > launch
    t_big = max(2e10 / 1e15, (10**6 + 10**6 + 128 * 200) / 1e12)
    assert t_big == pytest.approx(2e-5)
    assert est.latency_s == pytest.approx(5e-6 + 5e-6 + t_big)
    e = 700 * 65064 / 8e10 + 100 * (5e-6 - 65064 / 8e10) + 700 * 1000 / 8e13 + 100 * (5e-6 - 1000 / 8e13) + 700 * t_big
    assert est.energy_j == pytest.approx(e)
    assert est.bound == "execution" and est.macs == 64000 + 10**10
    # batch 64: per inference = the batch's time / 64; fc1 now 64 x 1000 outputs -> 500 blocks, u = 1
    b64 = gpu_launch_model(work, tech, "gpu", batch=64)
    fc1 = max(2 * 64 * 64000 / 1e15, (64000 + 64 * 1064) / 1e12)
    relu = max(5e-6, 64000 / 1e15)
    big = max(64 * 2e10 / 1e15, (10**6 + 64 * (10**6 + 128 * 200)) / 1e12)
    assert b64.latency_s == pytest.approx((max(5e-6, fc1) + relu + big) / 64)


def test_gpu_launch_model_is_above_the_roofline() -> None:
    tech = Tech.load()
    work = [LayerWork(f"l{i}", "Gemm", 4096, 0, 4096, 64, 64) for i in range(10)]
    m, r = gpu_launch_model(work, tech, "gpu"), roofline(work, tech, "gpu")
    assert m.latency_s >= r.latency_s and m.latency_s == pytest.approx(10 * 5e-6)
    assert m.bound == "launch" and math.isclose(m.energy_j, 700 * 10 * 5e-6)


def test_gpu_launch_model_errors() -> None:
    tech = Tech.load()
    with pytest.raises(UserError, match="no \\[device.tpu\\]"):
        gpu_launch_model([], tech, "tpu")
    with pytest.raises(UserError, match="needs kernel_launch_s"):
        gpu_launch_model([], tech, "cpu")
    with pytest.raises(UserError, match="batch must be at least 1"):
        gpu_launch_model([], tech, "gpu", batch=0)
