"""Chip instances: resident weights (`.init` once per chip), chip seeds, static defects (cramc.sim.chip).

- `.init` runs once per chip: a weight written wrong is wrong in every inference of that chip, the same
  wrong weight whatever the batches; another chip seed gives other wrong weights;
- the chip seed reproduces a chip; the per-inference faults (`.main`) depend on --seed only;
- stuck cells hold their value; every counted fault (gate, write, defect) is a bit that is wrong, with
  stuck, weak cells and switching faults at once (a switching fault that a stuck cell undoes is no fault),
  for every gate, fill and wr, on every backend, prepared, fused and plain;
- weak cells fail at weak_factor x the gate's rate (5 sigma);
- the spread across chips is zero when nothing is per chip and well above the within-chip binomial spread
  when defects dominate (5 sigma).

Seeds are fixed; rates are high so that every case meets many defects.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from cramtest import link

from cramc.errmodel import Defects, FaultModel, Rate, parse_error_model
from cramc.errors import UserError
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim.chip import STUCK0, STUCK1, WEAK, draw_defects
from cramc.sim.fuse import FusedMac
from cramc.sim.interp import execute, make_chip, run
from cramc.sim.machine import Machine, extent
from cramc.sweep.stats import chip_spread

ROWS = 150
GATES = [mn for mn, op in OPCODES.items() if op.unit is Unit.GATE]
DENSE = Defects(stuck0=0.08, stuck1=0.08, weak=0.1, weak_factor=3.0)


def row_bits(words: np.ndarray) -> np.ndarray:
    """uint64 [..., W] -> uint8 [..., 64 W], row r at index r."""
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")


def weights_program(rows: int = 256) -> str:
    w = ", ".join(str(v) for v in np.random.default_rng(1).integers(0, 2, rows))
    return "\n".join(
        [
            f".machine arrays=1 rows={rows} cols=3 accs=1",
            f".input x : u8[1,{rows}]",
            f".output y : i64[1,{rows}]",
            f".output z : i64[1,{rows}]",
            f".data $w : u8[1,{rows}] = [{w}]",
            ".init {",
            "  wr @0 c0, $w bits=1",
            "}",
            ".main {",
            "  wr @0 c1, %x bits=1",
            "  not @0 c2, c1",
            "  rd @0 %y, c0 bits=1 signed=0",
            "  rd @0 %z, c2 bits=1 signed=0",
            "}",
            "",
        ]
    )


def _weights() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 2, 256)


# ---------------------------------------------------------------- resident weights, chip seeds
def test_init_faults_persist_on_a_chip_and_differ_across_chips() -> None:
    linked = link(weights_program())
    x = {"x": np.random.default_rng(2).integers(0, 2, (20, 1, 256), dtype=np.uint8)}
    fm = FaultModel(write=Rate(0.05, 0.05))
    a = run(linked, x, fm, seed=3, lanes=7, chip_seed=1)  # three batches, one chip
    y = a.outputs["y"].reshape(20, 256)
    assert (y == y[0]).all(), "the weights differ between inferences of one chip"
    wrong = int((y[0] != _weights()).sum())
    assert wrong > 0
    assert a.chip["init_faults"]["write"] == wrong  # counted once for the chip ...
    assert a.init["faults"] == 20 * wrong  # ... and in every inference's state
    b = run(linked, x, fm, seed=3, lanes=7, chip_seed=2)
    assert (b.outputs["y"] != a.outputs["y"]).any(), "two chip seeds gave the same weights"
    # the chip seed reproduces the chip, whatever the batches and the inference seed
    c = run(linked, x, fm, seed=4, lanes=20, chip_seed=1)
    np.testing.assert_array_equal(c.outputs["y"], a.outputs["y"])


def test_inference_faults_do_not_depend_on_the_chip_seed() -> None:
    linked = link(weights_program())
    x = {"x": np.random.default_rng(2).integers(0, 2, (8, 1, 256), dtype=np.uint8)}
    fm = FaultModel({"not": Rate(0.1, 0.1)}, write=Rate(0.05, 0.05))
    r = [run(linked, x, fm, seed=5, chip_seed=c) for c in (0, 1, 2)]
    for other in r[1:]:
        np.testing.assert_array_equal(other.outputs["z"], r[0].outputs["z"])  # .main: --seed only
        assert other.counts.faults["gate"] == r[0].counts.faults["gate"] > 0
        assert (other.outputs["y"] != r[0].outputs["y"]).any()  # .init: the chip
    assert (run(linked, x, fm, seed=6, chip_seed=0).outputs["z"] != r[0].outputs["z"]).any()


def test_default_run_is_chip_zero() -> None:
    linked = link(weights_program())
    x = {"x": np.random.default_rng(2).integers(0, 2, (4, 1, 256), dtype=np.uint8)}
    fm = FaultModel(write=Rate(0.05, 0.05))
    np.testing.assert_array_equal(run(linked, x, fm).outputs["y"], run(linked, x, fm, chip_seed=0).outputs["y"])


def test_an_init_that_reads_inputs_runs_per_inference() -> None:
    """Not what a chip does (.init loads what inferences share), so such a program's .init runs in every
    inference, as before chips: each inference writes (and may miswrite) its own copy."""
    text = "\n".join(
        [
            ".machine arrays=1 rows=256 cols=2",
            ".input x : u8[1,256]",
            ".output y : i64[1,256]",
            ".init {",
            "  wr @0 c0, %x bits=1",
            "}",
            ".main {",
            "  rd @0 %y, c0 bits=1 signed=0",
            "}",
            "",
        ]
    )
    x = np.zeros((6, 1, 256), dtype=np.uint8)
    r = run(link(text), {"x": x}, FaultModel(write=Rate(0.05, 0.05)), lanes=4)
    y = r.outputs["y"].reshape(6, 256)
    assert (y != y[0]).any()  # each inference its own write faults
    assert r.counts.faults["write"] == r.init["faults"] == int(y.sum())


# ---------------------------------------------------------------- defects
def test_defects_are_drawn_per_chip_seed_and_array() -> None:
    spec = link(weights_program()).machine
    d = Defects(stuck0=0.01, stuck1=0.01, weak=0.02, weak_factor=10)
    a, b = draw_defects(spec, 1, 3, d, 7), draw_defects(spec, 1, 3, d, 7)
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.row, b.row)
    c = draw_defects(spec, 1, 3, d, 8)
    assert c is not None and not (c.row.size == a.row.size and (c.row == a.row).all())
    n = spec.rows * spec.cols  # 768 cells: 30 defects expected, their kinds in proportion
    assert 0 < a.row.size < 80 and set(np.unique(a.kind)) <= {STUCK0, STUCK1, WEAK}
    assert draw_defects(spec, 1, 3, Defects(), 7) is None
    assert n  # the densities are per cell of the whole machine


def test_stuck_cells_hold_whatever_is_written() -> None:
    text = "\n".join(
        [
            f".machine arrays=4 rows={ROWS} cols=4 accs=1",
            f".output a : i64[4,{ROWS}]",
            f".output b : i64[4,{ROWS}]",
            ".main {",
            "  fill @0:4 c0, 0",
            "  fill @0:4 c1, 1",
            "  not @0:4 c2, c1",
            "  not @0:4 c3, c0",
            "  rd @0:4 %a, c2 bits=1 signed=0",
            "  rd @0:4 %b, c3 bits=1 signed=0",
            "}",
            "",
        ]
    )
    linked = link(text)
    fm = FaultModel(defects=Defects(stuck0=0.05, stuck1=0.05))
    r = run(linked, {}, fm, chip_seed=3)
    d = draw_defects(linked.machine, 4, 4, fm.defects, 3)
    assert d is not None
    def held(col: int, written: np.ndarray) -> np.ndarray:
        """`written` into column `col`, as the column holds it."""
        out = written.copy()
        for kind in (STUCK0, STUCK1):
            at = (d.col == col) & (d.kind == kind)
            out[d.arr[at], d.row[at]] = kind
        return out

    c0, c1 = held(0, np.zeros((4, ROWS), dtype=np.int64)), held(1, np.ones((4, ROWS), dtype=np.int64))
    np.testing.assert_array_equal(r.outputs["a"][0], held(2, 1 - c1))  # the not of what c1 holds
    np.testing.assert_array_equal(r.outputs["b"][0], held(3, 1 - c0))
    assert (c0 != 0).any() and (c1 != 1).any()
    assert r.counts.faults["defect"] > 0
    assert r.chip["defects"] == d.counts


def _machine(linked, inputs, fm: FaultModel, chip_seed: int, seed: int, lanes: int, execution: str, backend: str):  # noqa: ANN001, ANN202
    Machine.fuse_mac = execution == "fused"
    try:
        used = extent(linked)
        chip = make_chip(linked, fm, chip_seed, reference=execution == "reference", backend=backend, used=used)
        m = Machine(linked, lanes, fm, np.random.default_rng(seed), reference=execution == "reference", backend=backend)
        chip.load(m)
        for k, v in inputs.items():
            m.tensors[k] = v.astype(np.int64)
        execute(m, linked.main)
        return m, chip
    finally:
        Machine.fuse_mac = True


def _cells(m: Machine) -> np.ndarray:
    return row_bits(m.be.get_words(m.cells))  # [col, array, lane, row]


def _gate_program(mn: str, rows: str) -> tuple[str, int]:
    k = len(OPCODES[mn].operands) - 1
    ins = ", ".join(f"c{i}" for i in range(k))
    text = "\n".join(
        [
            f".machine arrays=6 rows={ROWS} cols={k + 1} accs=1",
            f".input x : u8[4,{ROWS},{k}]",
            ".main {",
            "  wr @1:5 c0, %x bits=1",
            f"  {mn} @1:5 c{k}, {ins}{rows}",
            "}",
            "",
        ]
    )
    return text, k


@pytest.mark.parametrize("execution", ["prepared", "reference"])
@pytest.mark.parametrize("rows", ["", " rows=5:130"])
@pytest.mark.parametrize("mn", GATES)
def test_gate_defect_faults_are_the_bits_that_differ(mn: str, rows: str, execution: str, backend: str) -> None:
    """wr then a gate, with stuck and weak cells, gate and write faults: the counted faults are the wrong bits of
    the inputs (against a clean machine) and of the output (against the gate's logic on the inputs it read)."""
    text, k = _gate_program(mn, rows)
    linked = link(text)
    lanes = 3
    x = np.random.default_rng(4).integers(0, 2, (lanes, 4, ROWS, k), dtype=np.uint8)
    fm = FaultModel({mn: Rate(0.2, 0.2)}, write=Rate(0.05, 0.05), defects=DENSE)
    bad, chip = _machine(linked, {"x": x}, fm, 11, 5, lanes, execution, backend)
    ok, _ = _machine(linked, {"x": x}, FaultModel(), 11, 5, lanes, execution, backend)
    got, want = _cells(bad), _cells(ok)
    r0, r1 = (5, 130) if rows else (0, ROWS)
    wrong_in = int((got[:k, 1:5] != want[:k, 1:5]).sum())
    words = [bad.be.get_words(bad.cells)[c] for c in range(k)]
    logic = row_bits(OPCODES[mn].logic(*words))  # type: ignore[misc]
    wrong_out = int((got[k, 1:5, :, r0:r1] != logic[1:5, :, r0:r1]).sum())
    c = bad.counts.faults
    assert c["defect"] > 0 and c["gate"] > 0 and c["write"] > 0, c
    assert c["gate"] + c["write"] + c["defect"] == wrong_in + wrong_out
    assert min(c.values()) >= 0
    # outside what the program writes, only the stuck-at-1 cells differ from a clean chip (set at manufacture)
    d = chip.defects
    outside = np.ones(got.shape, dtype=bool)
    outside[:k, 1:5] = False
    outside[k, 1:5, :, r0:r1] = False
    s1 = np.zeros((got.shape[0], got.shape[1], 1, got.shape[3]), dtype=bool)
    one = d.kind == STUCK1
    s1[d.col[one], d.arr[one], 0, d.row[one]] = True
    np.testing.assert_array_equal((got != want) & outside, np.broadcast_to(s1, got.shape) & outside)


@pytest.mark.parametrize(
    "body",
    [
        "  fill @1:5 c0, 0 rows=5:130\n  fill @1:5 c1, 1\n",
        "  wr @1:5 c0, %x bits=3\n",
        "  wr @1:5 c0, $w bits=3 repeat=2\n",
    ],
    ids=["fill", "wr tensor", "wr data repeat"],
)
def test_write_defect_faults_are_the_bits_that_differ(body: str, backend: str) -> None:
    w = ", ".join(str(v) for v in np.random.default_rng(9).integers(-4, 4, 2 * ROWS * 2))
    text = "\n".join(
        [
            f".machine arrays=6 rows={ROWS} cols=6 accs=1",
            f".input x : i8[4,{ROWS},2]",
            f".data $w : i8[2,{ROWS},2] = [{w}]",
            ".main {",
            body.rstrip("\n"),
            "}",
            "",
        ]
    )
    linked = link(text)
    x = np.random.default_rng(4).integers(-4, 4, (2, 4, ROWS, 2), dtype=np.int8)
    fm = FaultModel(write=Rate(0.1, 0.1), defects=DENSE)
    bad, chip = _machine(linked, {"x": x}, fm, 12, 5, 2, "prepared", backend)
    ok, _ = _machine(linked, {"x": x}, FaultModel(), 12, 5, 2, "prepared", backend)
    got, want = _cells(bad), _cells(ok)
    written = np.zeros(got.shape, dtype=bool)
    if body.startswith("  fill"):
        written[0, 1:5, :, 5:130] = written[1, 1:5] = True
    else:
        written[:6, 1:5] = True
    c = bad.counts.faults
    assert c["defect"] > 0 and c["write"] > 0
    assert c["write"] + c["defect"] == int(((got != want) & written).sum())


def test_weak_cells_fail_at_the_factor_times_the_rate() -> None:
    """`not` at p = 0.01 with weak cells (factor 10): the weak outputs are wrong at 0.1, the others at 0.01
    (each within 5 sigma of its binomial count)."""
    lanes = 64
    text = "\n".join(
        [
            f".machine arrays=4 rows={ROWS} cols=2 accs=1",
            f".input x : u8[4,{ROWS}]",
            ".main {",
            "  wr @0:4 c0, %x bits=1",
            "  not @0:4 c1, c0",
            "}",
            "",
        ]
    )
    linked = link(text)
    x = np.random.default_rng(4).integers(0, 2, (lanes, 4, ROWS), dtype=np.uint8)
    fm = FaultModel({"not": Rate(0.01, 0.01)}, defects=Defects(weak=0.05, weak_factor=10.0))
    m, chip = _machine(linked, {"x": x}, fm, 2, 5, lanes, "prepared", "numpy")
    cells = _cells(m)
    wrong = (cells[1] == cells[0])[..., :ROWS]  # [array, lane, row]: not's output equals its input
    d = chip.defects
    weak = np.zeros((4, ROWS), dtype=bool)
    sel = (d.kind == WEAK) & (d.col == 1)
    weak[d.arr[sel], d.row[sel]] = True
    for mask, p in ((weak, 0.1), (~weak, 0.01)):
        trials = int(mask.sum()) * lanes
        k = int(wrong.transpose(1, 0, 2)[:, mask].sum())
        assert abs(k - trials * p) < 5 * math.sqrt(trials * p * (1 - p)), (k, trials, p)
    assert m.counts.faults["gate"] + m.counts.faults["defect"] == int(wrong.sum())


def test_mac_runs_with_defects_fused_and_unfused_agree() -> None:
    """A MAC run whose scratch column holds defects runs its pairs one by one (each gate meets the defect);
    the other runs stay fused.  Both executions give the same accumulators and counts."""
    pairs = 6
    body = []
    for i in range(pairs):
        body += [f"  and @0:4 c{pairs + 1}, c{i}, c{i + 1}", f"  tadd @0:4 acc{i}, c{pairs + 1}, 0"]
    text = "\n".join(
        [
            f".machine arrays=4 rows={ROWS} cols={pairs + 2} accs={pairs}",
            f".input x : u8[4,{ROWS},{pairs + 1}]",
            f".output y : i64[4,{pairs}]",
            ".main {",
            "  wr @0:4 c0, %x bits=1",
            f"  aclr @0:4 acc0:{pairs}",
            *body,
            f"  ard @0:4 %y, acc0:{pairs}",
            "}",
            "",
        ]
    )
    linked = link(text)
    x = np.random.default_rng(4).integers(0, 2, (2, 4, ROWS, pairs + 1), dtype=np.uint8)
    fm = FaultModel({"and": Rate(0.05, 0.05)}, defects=DENSE)
    fused, _ = _machine(linked, {"x": x}, fm, 1, 5, 2, "fused", "numpy")
    plain, _ = _machine(linked, {"x": x}, fm, 1, 5, 2, "unfused", "numpy")
    assert any(isinstance(n, FusedMac) for n in fused._runners)
    np.testing.assert_array_equal(fused.tensors["y"], plain.tensors["y"])
    assert fused.counts.faults == plain.counts.faults


# ---------------------------------------------------------------- the spread across chips
def _spread_program() -> str:
    rows = 64
    w = ", ".join(str(v) for v in np.random.default_rng(1).integers(0, 2, rows))
    return "\n".join(
        [
            f".machine arrays=1 rows={rows} cols=4 accs=1",
            f".input x : u8[1,{rows}]",
            ".output y : i64[1,1]",
            f".data $w : u8[1,{rows}] = [{w}]",
            ".init {",
            "  wr @0 c0, $w bits=1",
            "}",
            ".main {",
            "  wr @0 c1, %x bits=1",
            "  and @0 c2, c0, c1",
            "  aclr @0 acc0:1",
            "  tadd @0 acc0, c2, 0",
            "  ard @0 %y, acc0:1",
            "}",
            "",
        ]
    )


def _correct(fm: FaultModel, chips: int, n: int) -> list[list[int]]:
    linked = link(_spread_program())
    x = np.random.default_rng(3).integers(0, 2, (n, 1, 64), dtype=np.uint8)
    w = np.random.default_rng(1).integers(0, 2, 64)
    want = (x.reshape(n, 64) & w).sum(axis=1)
    out = []
    for c in range(chips):
        y = run(linked, {"x": x}, fm, seed=7, chip_seed=c).outputs["y"].reshape(n)
        out.append([int((y == want).sum())])
    return out


def test_spread_across_chips_is_zero_when_nothing_is_per_chip() -> None:
    sp = chip_spread(_correct(FaultModel({"and": Rate(2e-3, 2e-3)}), 6, 200), 200)
    assert 0.0 < sp["acc_mean"] < 1.0  # the inference faults do cost accuracy ...
    assert sp["chip_sd"] == 0.0  # ... the same on every chip: the same --seed, nothing drawn per chip
    assert sp["within_sd"] > 0.0


def test_spread_across_chips_exceeds_within_when_defects_dominate() -> None:
    """Stuck cells at 1% of the cells, inference faults at 1e-4: the chips' accuracies vary far more than the
    binomial spread of one chip's n inferences.  Under no chip effect, (chips - 1) chip_sd^2 / within_sd^2 is
    chi-square with chips - 1 degrees of freedom: the test needs it 5 sigma above its mean."""
    chips, n = 30, 200
    fm = FaultModel({"and": Rate(1e-4, 1e-4)}, defects=Defects(stuck0=0.01, stuck1=0.01))
    sp = chip_spread(_correct(fm, chips, n), n)
    df = chips - 1
    stat = df * sp["chip_sd"] ** 2 / sp["within_sd"] ** 2
    assert stat > df + 5 * math.sqrt(2 * df), sp
    assert sp["chip_ci_low"] < sp["acc_mean"] < sp["chip_ci_high"]


# ---------------------------------------------------------------- the error model and the command line
def test_defects_section_parses_and_reports() -> None:
    fm = parse_error_model({"defects": {"stuck0": 1e-6, "stuck1": 1e-6, "weak": 1e-5, "weak_factor": 100}})
    assert fm.defects == Defects(1e-6, 1e-6, 1e-5, 100.0)
    assert not fm.fault_free
    assert fm.to_dict()["defects"] == {"stuck0": 1e-6, "stuck1": 1e-6, "weak": 1e-5, "weak_factor": 100.0}
    assert "defects" not in FaultModel().to_dict()


@pytest.mark.parametrize(
    ("toml", "msg"),
    [
        ("[defects]\nstuck0 = 2\n", "defects.stuck0: a density per cell must be between 0 and 1, got 2"),
        ("[defects]\nstuck = 1e-3\n", "defects.stuck: not a defect parameter (use stuck0, stuck1, weak, weak_factor)"),
        ("[defects]\nweak = 1e-3\nweak_factor = 0.5\n", "defects.weak_factor: must be at least 1"),
        ("[defects]\nweak_factor = 3\n", "defects.weak_factor: is set but weak is 0"),
        ("[defects]\nstuck0 = 0.6\nstuck1 = 0.6\n", "stuck0 + stuck1 + weak is 1.2"),
        ('[defects]\nweak = "high"\n', "defects.weak: must be a number, got 'high'"),
    ],
)
def test_bad_defects_are_located_errors(toml: str, msg: str, tmp_path: Path) -> None:
    from cramc.errmodel import load_error_model

    p = tmp_path / "em.toml"
    p.write_text(toml, encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_error_model(str(p))
    assert msg in str(e.value)
    assert e.value.loc is not None and e.value.loc.line >= 2


def test_cli_chips_report(cli, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "p.cram").write_text(_spread_program(), encoding="utf-8")
    (tmp_path / "em.toml").write_text("[gates]\nand = 1e-3\n[defects]\nstuck0 = 0.01\nstuck1 = 0.01\n")
    x = np.random.default_rng(3).integers(0, 2, (50, 1, 64), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    labels = np.zeros(50, dtype=np.int64)
    np.save(tmp_path / "l.npy", labels)
    args = ["run", str(tmp_path / "p.cram"), "--input", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "l.npy")]
    r = cli(*args, "--error-model", str(tmp_path / "em.toml"), "--chips", "3", "--chip-seed", "4", "--report",
            str(tmp_path / "R.json"))  # fmt: skip
    assert r.rc == 0, r.err
    rep = json.loads((tmp_path / "R.json").read_text())
    ch = rep["chips"]
    assert ch["count"] == 3 and ch["chip_seeds"] == [4, 5, 6]
    assert ch["defects"]["stuck0"] == 0.01 and len(ch["per_chip"]) == 3
    assert ch["spread"]["chips"] == 3 and "within_sd" in ch["spread"]
    assert sum(sum(c["faults"].values()) for c in ch["per_chip"]) == rep["faults_injected"]
    assert rep["samples"] == 150 and "over 3 chips" in r.out
    # chip 5 alone is chip 5 of the three
    r1 = cli(*args, "--error-model", str(tmp_path / "em.toml"), "--chip-seed", "5", "--report",
             str(tmp_path / "R1.json"))  # fmt: skip
    assert r1.rc == 0, r1.err
    one = json.loads((tmp_path / "R1.json").read_text())["chips"]["per_chip"][0]
    assert one == ch["per_chip"][1]


@pytest.mark.parametrize(
    ("flags", "msg"),
    [
        (["--chips", "0"], "--chips must be at least 1, got 0"),
        (["--chip-seed", "-1"], "--chip-seed must be non-negative"),
        (["--chips", "2", "--output", "o.npz"], "--output takes one chip's outputs"),
        (["--chips", "x"], "invalid int value"),
    ],
)
def test_cli_bad_chip_flags(cli, tmp_path: Path, flags: list[str], msg: str) -> None:  # noqa: ANN001
    (tmp_path / "p.cram").write_text(_spread_program(), encoding="utf-8")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1, 64), dtype=np.uint8))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("run", str(tmp_path / "p.cram"), "--input", str(tmp_path / "x.npz"), *flags)
    assert r.rc != 0 and msg in r.err and "Traceback" not in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
