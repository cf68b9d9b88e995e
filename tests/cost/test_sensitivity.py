"""`cramc stats --vary/--compare/--plot` (cramc.cost.sensitivity): each key moves exactly the figures its formula says.

The slopes are counted by hand from the program's per-opcode counts (cramc.cost.static) and the
opcode table's units, not taken from the cost model: energy is linear in [gate] energy_j with slope
= the gate row operations, latency linear in [tree] latency_s with slope = the tree instructions,
the write time inverse in [write] ops_per_cycle.  The break-even interpolation is checked on hand
cases and on two programs whose crossing is known in closed form.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from cramtest import example

from cramc.cost.params import Tech
from cramc.cost.sensitivity import crossings, known_keys, parse_vary
from cramc.cost.static import count_program
from cramc.errors import UserError
from cramc.isa.opcodes import OPCODES
from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify

RIPPLE = str(example("ripple_adder8.cram"))  # gates, wr, fill, rd: no adder tree
DOT = str(example("dot256.cram"))  # and, tadd/tsub, aclr/ard, wr: the hybrid's instructions


def _unit_counts(path: str, unit: str) -> tuple[int, int]:
    """(instructions, row_ops) of `.main` on opcodes of `unit`, from the static counts and the opcode table."""
    t = count_program(verify(parse_file(path))).main_total
    ins = sum(i for mn, (i, r) in t.ops.items() if OPCODES[mn].unit.value == unit)
    rows = sum(r for mn, (i, r) in t.ops.items() if OPCODES[mn].unit.value == unit)
    return ins, rows


def _sweep(cli, tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / "s.json"
    res = cli("stats", *argv, "--json", str(out))
    assert res.rc == 0, res.err
    return json.loads(out.read_text(encoding="utf-8"))


def _col(d: dict, key: str, metric: str, side: str = "program") -> tuple[list[float], list[float]]:
    return [p["values"][key] for p in d["points"]], [p[side][metric] for p in d["points"]]


def test_gate_energy_moves_energy_with_slope_gate_row_ops_and_nothing_else(cli, tmp_path: Path) -> None:
    _, gate_rows = _unit_counts(RIPPLE, "gate")
    assert gate_rows == 8 * 1024 * 4  # maj3, maj5: 8 x 1024 each; not: 16 x 1024
    d = _sweep(cli, tmp_path, RIPPLE, "--vary", "gate.energy_j=0,1e-13,6e-13,2e-12")
    xs, es = _col(d, "gate.energy_j", "energy_j")
    for x, e in zip(xs, es, strict=True):
        assert e == pytest.approx(es[0] + gate_rows * x, rel=1e-12)
    for m in ("latency_s", "area_mm2"):
        assert len({p["program"][m] for p in d["points"]}) == 1, m
    # the point at the default value is the plain estimate
    plain = tmp_path / "plain.json"
    assert cli("stats", RIPPLE, "--json", str(plain)).rc == 0
    ref = json.loads(plain.read_text(encoding="utf-8"))
    at = next(p["program"] for p in d["points"] if p["values"]["gate.energy_j"] == 6e-13)
    assert at["energy_j"] == pytest.approx(ref["energy_j"], rel=1e-12) and at["latency_s"] == ref["latency_s"]


def test_opcode_key_moves_only_that_opcode(cli, tmp_path: Path) -> None:
    t = count_program(verify(parse_file(RIPPLE))).main_total
    maj5_rows = t.ops["maj5"][1]
    d = _sweep(cli, tmp_path, RIPPLE, "--vary", "gate.maj5.energy_j=0,1e-12")
    (e0, e1) = _col(d, "gate.maj5.energy_j", "energy_j")[1]
    assert e1 - e0 == pytest.approx(maj5_rows * 1e-12, rel=1e-12)


def test_tree_interval_moves_latency_with_slope_tree_instructions(cli, tmp_path: Path) -> None:
    tree_ins, _ = _unit_counts(DOT, "tree")
    assert tree_ins == 64  # 50 tadd + 14 tsub
    d = _sweep(cli, tmp_path, DOT, "--vary", "tree.latency_s=1e-9,2e-9,5e-9")
    xs, ls = _col(d, "tree.latency_s", "latency_s")
    for x, lat in zip(xs, ls, strict=True):
        assert lat - ls[0] == pytest.approx(tree_ins * (x - xs[0]), rel=1e-9)
    assert len({p["program"]["energy_j"] for p in d["points"]}) == 1


def test_periphery_bandwidth_enters_as_its_inverse_and_plus_sets_both(cli, tmp_path: Path) -> None:
    _, w_rows = _unit_counts(RIPPLE, "write")
    _, r_rows = _unit_counts(RIPPLE, "read")
    tech = Tech.load()
    wc, rc = tech.num("write", "cycle_s"), tech.num("read", "cycle_s")
    key = "write.ops_per_cycle+read.ops_per_cycle"
    d = _sweep(cli, tmp_path, RIPPLE, "--vary", f"{key}=256,1024,4096")
    xs, ls = _col(d, key, "latency_s")
    for x, lat in zip(xs, ls, strict=True):
        want = (w_rows * wc + r_rows * rc) * (1 / x - 1 / xs[0])
        assert lat - ls[0] == pytest.approx(want, rel=1e-9)
    assert len({p["program"]["energy_j"] for p in d["points"]}) == 1


def test_grid_is_the_product_first_key_fastest(cli, tmp_path: Path) -> None:
    _, gate_rows = _unit_counts(RIPPLE, "gate")
    d = _sweep(cli, tmp_path, RIPPLE, "--vary", "gate.energy_j=0,1e-13", "--vary", "write.energy_j=0,1e-13,1e-12")
    assert [(p["values"]["gate.energy_j"], p["values"]["write.energy_j"]) for p in d["points"]] == [
        (g, w) for w in (0, 1e-13, 1e-12) for g in (0, 1e-13)
    ]
    _, w_rows = _unit_counts(RIPPLE, "write")
    base = d["points"][0]["program"]["energy_j"]
    for p in d["points"]:
        v = p["values"]
        want = base + gate_rows * v["gate.energy_j"] + w_rows * v["write.energy_j"]
        assert p["program"]["energy_j"] == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------ break-even
def test_crossings_hand_cases() -> None:
    # b - a = 2, 1, -1 at x = 0, 1, 2: zero at 1.5
    (c,) = crossings([0, 1, 2], [1, 1, 1], [3, 2, 0])
    assert c.value == 1.5 and c.between == (1, 2)
    # unsorted input, level 2: b - 2a = -2, 2 at x = 1, 3 -> 2
    (c,) = crossings([3, 1], [1, 1], [4, 0], level=2.0)
    assert c.value == 2.0
    # a zero on a grid point is that point, counted once
    assert [c.value for c in crossings([0, 1, 2], [1, 1, 1], [2, 1, 0])] == [1]
    # two crossings
    assert [c.value for c in crossings([0, 1, 2], [1, 1, 1], [2, 0, 2])] == [0.5, 1.5]
    assert crossings([0, 1], [1, 1], [2, 3]) == []
    # in 1/x: b - a = 1/x - 1/2 is affine in u = 1/x, zero at x = 2 exactly, from grid points 1 and 4
    (c,) = crossings([1, 4], [0.5, 0.5], [1.0, 0.25], inverse=True)
    assert c.value == pytest.approx(2.0, rel=1e-15)


def test_break_even_of_two_programs_against_closed_form(cli, tmp_path: Path) -> None:
    """dot256's energy grows with [tree] energy_j (slope: its tree row ops), ripple_adder8's does not."""
    _, tree_rows = _unit_counts(DOT, "tree")
    z = _sweep(cli, tmp_path, DOT, "--vary", "tree.energy_j=0", "--compare", RIPPLE)["points"][0]
    e_dot0, e_ripple = z["program"]["energy_j"], z["compare"]["energy_j"]
    x_star = (e_ripple - e_dot0) / tree_rows
    assert x_star > 0
    vals = [x_star / 3, x_star * 0.9, x_star * 2.5, x_star * 10]
    d = _sweep(cli, tmp_path, DOT, "--vary", "tree.energy_j=" + ",".join(f"{v!r}" for v in vals), "--compare", RIPPLE)
    for p in d["points"]:
        assert p["ratio"]["energy_j"] == pytest.approx(p["compare"]["energy_j"] / p["program"]["energy_j"])
    (be,) = [b for b in d["break_even"] if b["metric"] == "energy_j"]
    (c,) = be["crossings"]
    assert c["value"] == pytest.approx(x_star, rel=1e-9) and c["exact"] and c["interpolated"]
    assert c["between"] == [pytest.approx(vals[1]), pytest.approx(vals[2])]
    lat = next(b for b in d["break_even"] if b["metric"] == "latency_s")
    assert lat["crossings"] == []  # tree energy does not move either latency


def test_plot_is_written(cli, tmp_path: Path) -> None:
    png = tmp_path / "be.png"
    res = cli("stats", DOT, "--vary", "tree.energy_j=1e-14:1e-11:5", "--compare", RIPPLE, "--plot", str(png))
    assert res.rc == 0, res.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "break-even" in res.out and "B/A" in res.out


def test_known_keys_are_the_default_files_and_each_opcode() -> None:
    keys = known_keys(Tech.load())
    for k in ("gate.energy_j", "tree.latency_s", "read.energy_j", "write.ops_per_cycle", "gate.maj5.energy_j",
              "tree.stage_delay_s", "array.cell_area_um2", "tree.tdadd.latency_s"):  # fmt: skip
        assert k in keys, k
    v = parse_vary("gate.energy_j=1e-15:1e-12:4", Tech.load())
    assert v.values == pytest.approx((1e-15, 1e-14, 1e-13, 1e-12))


# ------------------------------------------------------------------ errors
ERRORS = [
    (["--vary", "gate.energy=1e-13"], "no such technology key", "gate.energy_j"),
    (["--vary", "tree.latncy_s=1e-9"], "nearest known keys", "tree.latency_s"),
    (["--vary", "gate.energy_j=abc"], "'abc' is not a number", None),
    (["--vary", "gate.energy_j=1e-13,nan"], "not a finite number", None),
    (["--vary", "gate.energy_j=-1e-13"], "must be non-negative", None),
    (["--vary", "write.ops_per_cycle=0"], "ops_per_cycle must be positive", None),
    (["--vary", "gate.energy_j"], "expected KEY=v1,v2", None),
    (["--vary", "arrays=1024,4096"], "bench/bench_sensitivity.py", "cramc compile --arrays"),
    (["--vary", "device.gpu.power_w=300"], "CPU/GPU baseline figure", None),
    (["--vary", "gate.energy_j=1e-13", "--vary", "gate.energy_j=1e-14"], "more than one --vary", None),
    (["--vary", "gate.energy_j=1e-13,1e-13"], "given twice", None),
    (["--vary", "gate.energy_j=1:0:3"], "LO and HI must be positive", None),
    (["--plot", "p.png"], "--plot needs --vary", None),
    (["--vary", "gate.energy_j=1e-13", "--plot", "p.txt"], "expected a .png", None),
    (["--vary", "gate.energy_j=1e-13", "--compare", "nope.cram"], "nope.cram", None),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@pytest.mark.parametrize(("argv", "msg", "also"), ERRORS)
def test_errors_one_line_exit_1_nothing_written(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], msg: str, also: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prog.cram").write_bytes(Path(RIPPLE).read_bytes())
    before = _snapshot(tmp_path)
    res = cli("stats", "prog.cram", *argv, "--json", "out.json")
    assert res.rc == 1, (res.out, res.err)
    lines = [x for x in res.err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.err, res.err
    assert msg in lines[0] and (also is None or also in lines[0]), lines[0]
    assert _snapshot(tmp_path) == before  # no out.json, no plot, no scratch file


def test_parse_vary_raises_user_error() -> None:
    with pytest.raises(UserError, match="nearest known keys: .*read.energy_j"):
        parse_vary("read.energy_jj=1e-13", Tech.load())
    assert math.isclose(parse_vary("read.energy_j=1e-13", Tech.load()).values[0], 1e-13)
