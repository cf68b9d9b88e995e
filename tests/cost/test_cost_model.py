"""The cost model: every opcode costed through the table, static = dynamic, schedule-aware latency, area."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO, example_paths, link, link_file

from cramc.cost.model import area_mm2, dynamic_estimate, every_opcode_costed, static_estimate, tally_of_run
from cramc.cost.params import Tech
from cramc.cost.static import count_program
from cramc.errmodel import FaultModel
from cramc.errors import UserError
from cramc.isa.opcodes import OPCODES, Access, Kind, Opcode, Operand, Unit
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.interp import run

TECH = Tech.load()


def _compiled(name: str, calib: str, tmp: Path, reduce: str = "tree", ecc: str = "") -> Path:
    from cramc.compiler import Options, compile_model
    from cramc.fileio import load_npz

    text = compile_model(
        str(REPO / "models" / name),
        load_npz(str(REPO / "models" / calib)),
        Options(reduce=reduce, trace=False, ecc=ecc),
    )
    tag = "".join(ch for ch in ecc if ch.isalnum())
    out = tmp / f"{Path(name).stem}_{reduce}{'_' + tag if tag else ''}.cram"
    out.write_text(text, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every example program and the shipped models compiled (hybrid; CRAM-only where that lowering works)."""
    tmp = tmp_path_factory.mktemp("cost")
    out = list(example_paths())
    for model, calib in (("digits_mlp.onnx", "digits_calib_flat.npz"), ("digits_cnn.onnx", "digits_calib_img.npz")):
        out.append(_compiled(model, calib, tmp))
    try:
        out.append(_compiled("digits_mlp.onnx", "digits_calib_flat.npz", tmp, "cram"))
    except (ImportError, NotImplementedError, UserError):  # the CRAM-only lowering is not there yet
        pass
    # error correction: CRAM TMR gates, CMOS-voted and duplicate-and-compare tree opcodes
    for ecc in ("tmr:sig>=12", "vote:sig>=8", "dup:sig>=8"):
        out.append(_compiled("digits_mlp.onnx", "digits_calib_flat.npz", tmp, ecc=ecc))
    return out


def test_every_opcode_gets_a_cost() -> None:
    costs = every_opcode_costed(TECH)
    assert set(costs) == set(OPCODES)
    for mn, c in costs.items():
        vals = (c.latency_s, c.op_time_s, c.energy_j, c.instr_energy_j)
        assert all(np.isfinite(v) and v >= 0 for v in vals), mn
        if OPCODES[mn].unit in (Unit.GATE, Unit.WRITE, Unit.READ, Unit.TREE):
            assert c.energy_j > 0 and (c.latency_s > 0 or c.op_time_s > 0), mn


def test_a_new_opcode_is_costed_by_its_unit() -> None:
    # the lead adds opcodes to the table: they must cost something without code changes
    new_tree = Opcode("tvote", Unit.TREE, "a new adder-tree op", (Operand("acc", Kind.ACC, Access.UPDATE),))
    new_gate = Opcode("maj7", Unit.GATE, "a new gate", (Operand("dst", Kind.COL, Access.WRITE),))
    assert TECH.op_cost(new_tree).latency_s == TECH.num("tree", "latency_s")
    assert TECH.op_cost(new_tree).energy_j == TECH.num("tree", "energy_j")
    assert TECH.op_cost(new_gate).energy_j == TECH.num("gate", "energy_j")
    t = TECH.with_overrides({"gate": {"maj7": {"energy_j": 1e-12}}})
    assert t.op_cost(new_gate).energy_j == 1e-12


def test_mnemonic_overrides_unit(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text("[gate]\nlatency_s = 1e-9\n[gate.maj5]\nlatency_s = 4e-9\nenergy_j = 2e-12\n", encoding="utf-8")
    t = Tech.load(f)
    assert t.op_cost(OPCODES["maj5"]).latency_s == 4e-9
    assert t.op_cost(OPCODES["maj5"]).energy_j == 2e-12
    assert t.op_cost(OPCODES["and"]).latency_s == 1e-9  # the unit's figure
    assert t.op_cost(OPCODES["and"]).energy_j == TECH.op_cost(OPCODES["and"]).energy_j  # the default's
    f.write_text("[gate]\nenergy_j = -1\n", encoding="utf-8")
    with pytest.raises(UserError, match="non-negative"):
        Tech.load(f)
    f.write_text("[gate\n", encoding="utf-8")
    with pytest.raises(UserError, match="not valid TOML"):
        Tech.load(f)
    assert Tech.load("projected").op_cost(OPCODES["and"]).energy_j < TECH.op_cost(OPCODES["and"]).energy_j


@pytest.mark.parametrize("faults", [None, FaultModel.uniform(1e-2)], ids=["fault-free", "p=1e-2"])
def test_static_equals_dynamic(programs: list[Path], faults: FaultModel | None) -> None:
    """Counts are exact, so static and dynamic estimates agree exactly (fault-free; with faults too)."""
    for path in programs:
        linked = link_file(path)
        res = run(linked, dict(linked.expect.inputs), faults, seed=1)
        pc = count_program(linked)
        total = pc.init_total
        total.merge(pc.main_total)
        assert total.as_dict() == tally_of_run(res.counts, res.samples).as_dict(), path.name
        s = static_estimate(linked, TECH, pc)
        d = dynamic_estimate(res.counts, res.samples, linked, TECH)
        assert s.latency_s == d.latency_s, path.name
        assert s.setup.energy_j == d.setup.energy_j
        if faults is None:
            assert d.recomputes == 0 and s.energy_j == d.energy_j, path.name
        else:  # rows that duplicate-and-compare recomputed because faults made the copies differ
            extra = d.recomputes * TECH.num("tree", "recompute_energy_j")
            assert d.energy_j == pytest.approx(s.energy_j + extra, rel=1e-12), path.name
            assert (d.recomputes > 0) == ("dup" in path.name), path.name
        assert s.latency_s > 0 and s.energy_j > 0
        # the layers add up to the total
        assert sum(p.latency_s for p in s.layers.values()) == pytest.approx(s.latency_s, rel=1e-12)
        assert sum(p.energy_j for p in s.layers.values()) == pytest.approx(s.energy_j, rel=1e-12)


def test_layers_are_named_after_onnx_nodes(programs: list[Path]) -> None:
    cnn = next(p for p in programs if p.name == "digits_cnn_tree.cram")
    est = static_estimate(link_file(cnn), TECH)
    assert {"conv1", "conv2", "fc"} <= set(est.layers)
    # the MVM layers carry almost all of the latency
    assert sum(est.layers[k].latency_s for k in ("conv1", "conv2", "fc")) > 0.9 * est.latency_s


def _prog(body: str, arrays: int = 64, init: str = "") -> str:
    return (
        f'.machine arrays={arrays} rows=256 cols=16 accs=4\n.data $z : i8[1,256,2] = b64"{_zeros()}"\n'
        f".init {{\n  wr @0:{arrays} c0, $z bits=2\n{init}}}\n.main {{\n{body}}}\n"
    )


def _zeros() -> str:
    import base64

    return base64.b64encode(bytes(512)).decode()


def _main_latency(text: str, tech: Tech = TECH) -> float:
    return static_estimate(verify(parse(text)), tech).latency_s


def test_arrays_work_in_parallel() -> None:
    one = _main_latency(_prog("  and @0:1 c4, c0, c1\n"))
    many = _main_latency(_prog("  and @0:64 c4, c0, c1\n"))
    assert one == many == TECH.num("gate", "latency_s")
    # but the energy counts every row of every array
    e1 = static_estimate(verify(parse(_prog("  and @0:1 c4, c0, c1\n"))), TECH).energy_j
    e64 = static_estimate(verify(parse(_prog("  and @0:64 c4, c0, c1\n"))), TECH).energy_j
    assert e64 == pytest.approx(64 * e1)


def test_writes_are_serialised() -> None:
    w1 = _main_latency(_prog("  fill @0:1 c4, 1\n"))
    w64 = _main_latency(_prog("  fill @0:64 c4, 1\n"))
    per_bit = TECH.num("write", "cycle_s") / TECH.num("write", "ops_per_cycle")
    assert w1 == pytest.approx(256 * per_bit)
    assert w64 == pytest.approx(64 * w1)


def test_adder_tree_pipelines() -> None:
    ii = TECH.num("tree", "latency_s")
    drain = TECH.tree_depth(256) * TECH.num("tree", "stage_delay_s")
    one = _main_latency(_prog("  aclr @0:64 acc0:1\n  tadd @0:64 acc0, c0, 0\n  ard @0:64 %y, acc0:1\n"))
    body = "  aclr @0:64 acc0:1\n" + "  tadd @0:64 acc0, c0, 0\n" * 8 + "  ard @0:64 %y, acc0:1\n"
    eight = _main_latency(_prog(body))
    assert eight - one == pytest.approx(7 * ii)  # each further column costs one initiation interval
    acc = TECH.num("acc", "latency_s")
    assert one == pytest.approx(acc + ii + acc + drain)  # the depth is paid once, at the read


def test_loops_multiply() -> None:
    once = static_estimate(verify(parse(_prog("  and @0:4 c4, c0, c1\n"))), TECH)
    loop = static_estimate(verify(parse(_prog("  repeat i 10 {\n    and @0:4 c4, c0, c1\n  }\n"))), TECH)
    assert loop.latency_s == pytest.approx(10 * once.latency_s)
    assert loop.energy_j == pytest.approx(10 * once.energy_j)
    assert loop.by_opcode["and"].instructions == 10


def test_setup_is_separate_from_inference() -> None:
    est = static_estimate(verify(parse(_prog("  and @0:4 c4, c0, c1\n"))), TECH)
    assert "write" not in est.by_unit  # the weights are written once, in .init
    assert est.setup.row_ops == 64 * 256 * 2 * 2  # arrays x rows x fields x bits


def test_area() -> None:
    small = link(_prog("  and @0:1 c4, c0, c1\n", arrays=4))
    big = link(_prog("  and @0:1 c4, c0, c1\n", arrays=64))
    a4, a64 = area_mm2(small.machine, TECH), area_mm2(big.machine, TECH)
    assert a64["cells"] == pytest.approx(16 * a4["cells"])
    assert a4["total"] == pytest.approx(sum(v for k, v in a4.items() if k != "total"))
    # a program that uses no adder tree (the CRAM-only baseline) is costed without one
    est = static_estimate(small, TECH)
    assert est.area_mm2["adder_trees"] == 0 and est.area_mm2["accumulators"] == 0
