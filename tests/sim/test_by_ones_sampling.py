"""Input-dependent gate rates (by_ones) in the simulator: faults only where the inputs say, at their rate.

``Rate(by_ones=(p0, ..., pn))``: a gate's output is wrong with probability
by_ones[k] when k of its n inputs are 1.  The simulator samples it by thinning
(cramc.sim.faults.Injector.pick; the torch backend's RegionInjector): candidates
at pmax, each kept with probability by_ones[k]/pmax, k read from the gate's
input words at the candidate.

For every gate of the opcode table and every input count k, a table that puts
probability only on k must make faults only in rows whose inputs have k ones,
checked against the machine state (a fault-free run of the same program is the
reference), count exactly those bits, and hit the rate: the observed share of
the k-rows that flipped is within 5 binomial sigmas of by_ones[k].  This holds
on every path: the prepared kernels and the plain reference path, all rows and
a row range with partial edge words, one lane and three, numpy and torch, and
in multiply-accumulate runs fused and unfused.  Numpy draws the same faults
fused and unfused (one stream, in program order): checked exactly.  Inputs are
drawn so that every k is common: per row, k uniform on 0..n, then which inputs
are 1 uniformly.  Seeds are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from cramtest import link

from cramc.errmodel import FaultModel, Rate
from cramc.errmodel.model import gate_inputs, gate_output
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim import interp
from cramc.sim.fuse import FusedMac, fuse
from cramc.sim.interp import execute
from cramc.sim.machine import Machine

SIGMAS = 5.0
P = 0.2  # the rate on the one input count that fails
ROWS = 640  # ten words
ARRAYS = (1, 5)  # four arrays
ROW_RANGES: dict[str, tuple[int, int] | None] = {"all rows": None, "rows 5:630": (5, 630)}
GATES = [op.mnemonic for op in OPCODES.values() if op.unit is Unit.GATE]
TWO_INPUT = [mn for mn in GATES if gate_inputs(mn) == 2]
GATE_K = [pytest.param(mn, k, id=f"{mn}-k{k}") for mn in GATES for k in range(gate_inputs(mn) + 1)]
PAIRS = 6


def only_k(mn: str, k: int, p: float = P) -> Rate:
    """by_ones with probability p on k inputs at 1 and 0 on every other count."""
    return Rate(by_ones=tuple(p if j == k else 0.0 for j in range(gate_inputs(mn) + 1)))


def inputs_by_count(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """0/1 uint8 [*shape, n]: per row k ones, k uniform on 0..n, placed uniformly among the n inputs."""
    k = rng.integers(0, n + 1, shape)
    rank = np.argsort(np.argsort(rng.random((*shape, n)), axis=-1), axis=-1)
    return (rank < k[..., None]).astype(np.uint8)


def row_bits(words: np.ndarray) -> np.ndarray:
    """uint64 [..., W] -> uint8 [..., 64 W], row r at index r."""
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")


def assert_rate(flips: int, trials: int, p: float, what: str) -> None:
    """flips / trials within SIGMAS binomial standard deviations of p."""
    assert trials > 0, f"{what}: no trials"
    sd = math.sqrt(p * (1 - p) / trials)
    got = flips / trials
    assert abs(got - p) <= SIGMAS * sd, f"{what}: {flips}/{trials} = {got:.4f}, want {p} +- {SIGMAS * sd:.4f}"


def rows_attr(rows: tuple[int, int] | None) -> str:
    return "" if rows is None else f" rows={rows[0]}:{rows[1]}"


def active(rows: tuple[int, int] | None) -> slice:
    return slice(0, ROWS) if rows is None else slice(*rows)


# ---------------------------------------------------------------------------- one gate
def gate_program(mn: str, rows: tuple[int, int] | None) -> str:
    n = gate_inputs(mn)
    lo, hi = ARRAYS
    return "\n".join(
        [
            f".machine arrays={hi + 1} rows={ROWS} cols={n + 1} accs=1",
            f".input x : u8[{hi - lo},{ROWS},{n}]",
            ".main {",
            f"  wr @{lo}:{hi} c0, %x bits=1",
            f"  {mn} @{lo}:{hi} c{n}, " + ", ".join(f"c{i}" for i in range(n)) + rows_attr(rows),
            "}",
            "",
        ]
    )


def run_machines(
    text: str, x: np.ndarray, fm: FaultModel, backend: str, reference: bool = False
) -> tuple[Machine, Machine]:
    """The fault-free and the faulty machine after `text` on inputs x [lanes, ...]."""
    linked = link(text)
    out = []
    for model, seed in ((FaultModel(), 0), (fm, 5)):
        m = Machine(linked, x.shape[0], model, np.random.default_rng(seed), reference=reference, backend=backend)
        m.tensors["x"] = x.astype(np.int64)
        execute(m, linked.init)
        execute(m, linked.main)
        out.append(m)
    return out[0], out[1]


@pytest.mark.parametrize("lanes", [1, 3])
@pytest.mark.parametrize("rows", list(ROW_RANGES))
@pytest.mark.parametrize("path", ["prepared", "reference"])
@pytest.mark.parametrize(("mn", "k"), GATE_K)
def test_faults_only_where_k_inputs_are_one(mn: str, k: int, path: str, rows: str, lanes: int, backend: str) -> None:
    n = gate_inputs(mn)
    lo, hi = ARRAYS
    rr = ROW_RANGES[rows]
    x = inputs_by_count(np.random.default_rng(3), (lanes, hi - lo, ROWS), n)
    ok, bad = run_machines(gate_program(mn, rr), x, FaultModel({mn: only_k(mn, k)}), backend, path == "reference")
    be = ok.be
    diff = row_bits(be.get_words(ok.cells) ^ be.get_words(bad.cells))  # [col, array, lane, row]
    out = diff[n, lo:hi, :, :ROWS].transpose(1, 0, 2)  # [lane, array, row], as x
    assert int(diff.sum()) == int(out.sum()), "a fault outside the gate's output column or arrays"
    ones = x.sum(axis=-1)
    inside = np.zeros(ROWS, dtype=bool)
    inside[active(rr)] = True
    at_k = (ones == k) & inside
    assert not out[~at_k].any(), f"faults in rows whose inputs do not have {k} ones (or outside the active rows)"
    flips = int(out.sum())
    assert bad.counts.faults["gate"] == flips, "the counted faults are not the bits that are wrong"
    assert_rate(flips, int(at_k.sum()), P, f"{mn} with {k} of {n} inputs at 1")
    # every fault is the wrong value for that k
    ok_out = row_bits(be.get_words(ok.cells))[n, lo:hi, :, :ROWS].transpose(1, 0, 2)
    assert (ok_out[at_k] == gate_output(mn, k)).all()


def test_a_rate_on_every_count_at_once(backend: str) -> None:
    """maj3 with a different rate per k: each k at its own rate (the thinning by by_ones[k] / pmax)."""
    table = (0.02, 0.3, 0.1, 0.005)
    lo, hi = ARRAYS
    x = inputs_by_count(np.random.default_rng(4), (3, hi - lo, ROWS), 3)
    ok, bad = run_machines(gate_program("maj3", None), x, FaultModel({"maj3": Rate(by_ones=table)}), backend)
    out = row_bits(ok.be.get_words(ok.cells) ^ ok.be.get_words(bad.cells))[3, lo:hi, :, :ROWS].transpose(1, 0, 2)
    ones = x.sum(axis=-1)
    assert bad.counts.faults["gate"] == int(out.sum())
    for k, p in enumerate(table):
        assert_rate(int(out[ones == k].sum()), int((ones == k).sum()), p, f"maj3, k = {k}")


# ---------------------------------------------------------------------------- multiply-accumulate runs
def mac_program(mn: str, rows: tuple[int, int] | None) -> str:
    """PAIRS x (gate c_t <- c_i, c_{i+1}; tadd/tsub acc_i, c_t, shift i % 3), then the accumulators read out."""
    lo, hi = ARRAYS
    ncols = PAIRS + 1
    t = ncols
    body = []
    for i in range(PAIRS):
        body.append(f"  {mn} @{lo}:{hi} c{t}, c{i}, c{i + 1}{rows_attr(rows)}")
        body.append(f"  {'tsub' if i % 2 else 'tadd'} @{lo}:{hi} acc{i}, c{t}, {i % 3}{rows_attr(rows)}")
    return "\n".join(
        [
            f".machine arrays={hi + 1} rows={ROWS} cols={ncols + 1} accs={PAIRS}",
            f".input x : u8[{hi - lo},{ROWS},{ncols}]",
            f".output y : i64[{hi - lo},{PAIRS}]",
            ".main {",
            f"  wr @{lo}:{hi} c0, %x bits=1",
            f"  aclr @{lo}:{hi} acc0:{PAIRS}",
            *body,
            f"  ard @{lo}:{hi} %y, acc0:{PAIRS}",
            "}",
            "",
        ]
    )


def mac_inputs(rng: np.random.Generator, lanes: int) -> np.ndarray:
    """Random bits [lanes, arrays, ROWS, PAIRS + 1]: pair i reads columns i and i + 1 (each k about 1/4, 1/2, 1/4)."""
    lo, hi = ARRAYS
    return rng.integers(0, 2, (lanes, hi - lo, ROWS, PAIRS + 1), dtype=np.uint8)


@pytest.mark.parametrize("rows", list(ROW_RANGES))
@pytest.mark.parametrize("execution", ["fused", "unfused"])
@pytest.mark.parametrize(("mn", "k"), [p for p in GATE_K if p.values[0] in TWO_INPUT])
def test_mac_run_faults_by_operand_count(
    mn: str, k: int, execution: str, rows: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MAC run (the fused path's k = w + x): with by_ones only on k every flip of a pair goes one way (the
    correct output is a function of k), so |change of its slot| >> shift is its number of flips, exactly; they
    must be as many as counted, at rate P among the pair's k-rows, and the scratch column (the last gate's
    output) wrong only in the last pair's k-rows."""
    monkeypatch.setattr(Machine, "fuse_mac", execution == "fused")
    rr = ROW_RANGES[rows]
    text = mac_program(mn, rr)
    assert any(isinstance(n, FusedMac) for n in fuse(link(text).main))
    lo, hi = ARRAYS
    x = mac_inputs(np.random.default_rng(6), 3)
    ok, bad = run_machines(text, x, FaultModel({mn: only_k(mn, k)}), backend)
    assert any(isinstance(n, FusedMac) for n in bad._runners) == (execution == "fused")
    inside = np.zeros(ROWS, dtype=bool)
    inside[active(rr)] = True
    total = trials = 0
    for i in range(PAIRS):
        delta = bad.tensors["y"][..., i] - ok.tensors["y"][..., i]  # [lane, array]
        assert not (delta % (1 << (i % 3))).any()
        flips = np.abs(delta) >> (i % 3)
        at_k = ((x[..., i] + x[..., i + 1]) == k) & inside  # [lane, array, row]
        assert (flips <= at_k.sum(axis=-1)).all()
        total += int(flips.sum())
        trials += int(at_k.sum())
    assert bad.counts.faults["gate"] == total, "the counted faults are not the bits that moved the sums"
    assert_rate(total, trials, P, f"{mn} in a MAC run, k = {k}, {execution}")
    d = row_bits(ok.be.get_words(ok.cells) ^ ok.be.get_words(bad.cells))
    assert not d[: PAIRS + 1].any(), "a gate input changed"
    last = d[PAIRS + 1, lo:hi, :, :ROWS].transpose(1, 0, 2)
    at_k = ((x[..., PAIRS - 1] + x[..., PAIRS]) == k) & inside
    assert not last[~at_k].any(), "the last gate is wrong in a row whose operands do not have k ones"
    np.testing.assert_array_equal(
        last.sum(axis=-1), np.abs(bad.tensors["y"][..., -1] - ok.tensors["y"][..., -1]) >> ((PAIRS - 1) % 3)
    )


@pytest.mark.parametrize("rows", list(ROW_RANGES))
def test_fused_and_unfused_draw_the_same_faults(rows: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy: one stream and one thinning generator in program order, so fusion changes no draw."""
    text = mac_program("and", ROW_RANGES[rows])
    x = mac_inputs(np.random.default_rng(7), 3)
    fm = FaultModel({"and": Rate(by_ones=(0.01, 0.2, 0.05))})
    got = []
    for fused in (True, False):
        monkeypatch.setattr(Machine, "fuse_mac", fused)
        r = interp.run(link(text), {"x": x}, fm, seed=11, lanes=3)
        got.append(r)
    a, b = got
    np.testing.assert_array_equal(a.outputs["y"], b.outputs["y"])
    assert a.counts.faults == b.counts.faults and a.counts.faults["gate"] > 0
    assert a.counts == b.counts


def test_reference_and_prepared_paths_draw_the_same_faults(backend: str) -> None:
    """The plain path and the in-place kernels give the same state for the same seed, on each backend."""
    for mn in GATES:
        n = gate_inputs(mn)
        lo, hi = ARRAYS
        x = inputs_by_count(np.random.default_rng(8), (3, hi - lo, ROWS), n)
        fm = FaultModel({mn: Rate(by_ones=tuple(0.05 * (j + 1) for j in range(n + 1)))})
        for rr in ROW_RANGES.values():
            _, fast = run_machines(gate_program(mn, rr), x, fm, backend)
            _, ref = run_machines(gate_program(mn, rr), x, fm, backend, reference=True)
            np.testing.assert_array_equal(fast.be.get_words(fast.cells), ref.be.get_words(ref.cells))
            assert fast.counts.faults == ref.counts.faults and fast.counts.faults["gate"] > 0


def test_a_table_constant_in_k_is_the_flat_rate() -> None:
    """by_ones = [p, p, p] is the symmetric rate p in distribution: both forms flip every output bit at p."""
    x = inputs_by_count(np.random.default_rng(9), (3, 4, ROWS), 2)
    _, flat = run_machines(gate_program("and", None), x, FaultModel({"and": Rate(0.1, 0.1)}), "numpy")
    _, table = run_machines(gate_program("and", None), x, FaultModel({"and": Rate(by_ones=(0.1, 0.1, 0.1))}), "numpy")
    nbits = 3 * 4 * ROWS
    assert_rate(flat.counts.faults["gate"], nbits, 0.1, "p = 0.1")
    assert_rate(table.counts.faults["gate"], nbits, 0.1, "by_ones = [0.1] * 3")
