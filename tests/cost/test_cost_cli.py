"""`cramc stats`, `cramc run --report/--tech`: the cost on the command line and in REPORT.json."""

from __future__ import annotations

import json
from pathlib import Path

from cramtest import example

from cramc.cost.params import Tech
from cramc.cost.roofline import model_work, roofline

RIPPLE = str(example("ripple_adder8.cram"))
REPO = Path(__file__).resolve().parents[2]


def test_stats_prints_and_writes_json(cli, tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    res = cli("stats", RIPPLE, "--json", str(out))
    assert res.rc == 0, res.err
    assert "total per inference: latency" in res.out and "area:" in res.out
    d = json.loads(out.read_text(encoding="utf-8"))
    assert d["method"] == "static" and d["latency_s"] > 0 and d["energy_j"] > 0
    assert d["edp_js"] == d["latency_s"] * d["energy_j"]
    assert set(d["by_unit"]) >= {"gate", "write"}


def test_report_has_latency_and_energy_equal_to_stats(cli, tmp_path: Path) -> None:
    rep, st = tmp_path / "r.json", tmp_path / "s.json"
    assert cli("run", RIPPLE, "--report", str(rep)).rc == 0
    assert cli("stats", RIPPLE, "--json", str(st)).rc == 0
    r = json.loads(rep.read_text(encoding="utf-8"))
    s = json.loads(st.read_text(encoding="utf-8"))
    assert r["cost"]["method"] == "dynamic"
    assert r["latency_s"] == s["latency_s"] and r["energy_j"] == s["energy_j"]
    assert r["cost"]["by_unit"] == s["by_unit"]


def test_tech_file_on_the_command_line(cli, tmp_path: Path) -> None:
    t = tmp_path / "slow.toml"
    t.write_text("[gate]\nlatency_s = 1e-6\n", encoding="utf-8")
    base, slow = tmp_path / "a.json", tmp_path / "b.json"
    assert cli("stats", RIPPLE, "--json", str(base)).rc == 0
    res = cli("run", RIPPLE, "--tech", str(t), "--report", str(slow))
    assert res.rc == 0 and "cost per inference" in res.out
    a = json.loads(base.read_text(encoding="utf-8"))
    b = json.loads(slow.read_text(encoding="utf-8"))
    assert b["cost"]["by_unit"]["gate"]["latency_s"] > 100 * a["by_unit"]["gate"]["latency_s"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[write]\ncycle_s = 'fast'\n", encoding="utf-8")
    res = cli("stats", RIPPLE, "--tech", str(bad))
    assert res.rc == 1 and "cycle_s must be a non-negative number" in res.err and "Traceback" not in res.err
    res = cli("stats", RIPPLE, "--tech", str(tmp_path / "missing.toml"))
    assert res.rc == 1 and "cannot read" in res.err


def test_roofline_of_the_shipped_mlp() -> None:
    work = model_work(str(REPO / "models" / "digits_mlp.onnx"))
    macs = {w.name or w.op_type: w.macs for w in work if w.macs}
    assert sum(macs.values()) == 64 * 64 + 64 * 10
    assert sum(w.weight_values for w in work) == 64 * 64 + 64 * 10
    tech = Tech.load()
    gpu = roofline(work, tech, "gpu")
    assert gpu.bound == "memory"  # a 5k-MAC model cannot keep a GPU busy
    assert gpu.latency_s >= gpu.bytes / tech.devices()["gpu"]["memory_bandwidth_bytes_per_s"]
    ddr = roofline(work, tech, "cpu_ddr")
    assert ddr.energy_j > ddr.latency_s * tech.devices()["cpu_ddr"]["power_w"]  # DRAM energy is added
    fast = tech.with_overrides({"device": {"gpu": {"memory_bandwidth_bytes_per_s": 1e20, "peak_ops_per_s": 1e12}}})
    assert roofline(work, fast, "gpu").bound == "compute"


def test_light_models_and_their_work(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    try:
        from light_models import write_all
    finally:
        sys.path.pop(0)
    paths = write_all(tmp_path)
    res = model_work(str(paths["resnet50_light"]))
    convs = [w for w in res if w.op_type == "Conv"]
    assert len(convs) == 1 + 3 * 16 + 4  # stem, 16 bottlenecks of 3, 4 projection shortcuts
    assert sum(w.op_type == "Gemm" for w in res) == 1
    stem = convs[0]
    assert stem.macs == 32 * 32 * 16 * 3 * 3 * 3 and stem.weight_values == 16 * 3 * 3 * 3
    vgg = model_work(str(paths["vgg19_light"]))
    assert sum(w.op_type == "Conv" for w in vgg) == 16 and sum(w.op_type == "Gemm" for w in vgg) == 3
    from cramc.cost.roofline import measure_onnxruntime

    assert 0 < measure_onnxruntime(str(paths["vgg19_light"]), min_time_s=0.05) < 10
