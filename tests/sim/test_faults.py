"""The fault samplers: flip rates, asymmetry, write/read faults, per-gate TOML rates in a run, seeds, sampling cost.

The model itself (rates, TOML files, presets, their errors) is tested in tests/errmodel.

Every statistical assertion allows 5 standard deviations of the binomial count
and uses a fixed seed, so a test either always passes or always fails for a
given implementation; a correct sampler fails one with probability < 1e-6.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cramtest import example, link, link_file, run_text

from cramc.errmodel import FaultModel, Rate, load_error_model
from cramc.sim import faults
from cramc.sim.faults import flip_bits
from cramc.sim.interp import run

SIGMAS = 5.0


def assert_binomial(k: int, n: int, p: float, what: str = "") -> None:
    """k successes out of n trials is within 5 sigma of n p."""
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    assert abs(k - mean) <= SIGMAS * sd, f"{what}: {k} of {n}, expected {mean:.1f} +- {SIGMAS * sd:.1f}"


def popcount(a: np.ndarray) -> int:
    return int(np.bitwise_count(a).sum())


def row_bits(words: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """uint64 [M, W] -> bool [M, r1 - r0] (row r is bit r % 64 of word r // 64)."""
    b = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1, bitorder="little")
    return b[:, r0:r1].astype(bool)


def test_the_samplers_use_the_error_model_classes() -> None:
    """cramc.sim.faults re-exports the model for the simulator's modules: the same classes, not copies."""
    assert faults.FaultModel is FaultModel and faults.Rate is Rate


# ---------------------------------------------------------------------------- flip_bits
@pytest.mark.parametrize(
    ("p", "lanes"),
    [(1e-1, 4096), (1e-2, 16384), (1e-3, 65536), (1e-5, 1 << 20)],
)
def test_flip_rate_symmetric(p: float, lanes: int) -> None:
    rng = np.random.default_rng(11)
    words = rng.integers(0, 2**64, (lanes, 2), dtype=np.uint64)
    before = words.copy()
    r0, r1 = 3, 103  # crosses a word boundary, leaves rows outside
    n = flip_bits(words, r0, r1, Rate(p, p), np.random.default_rng(12))
    diff = before ^ words
    assert n == popcount(diff)  # the count returned is the count flipped
    outside = ~np.zeros(2, dtype=np.uint64)
    outside[0] = np.uint64((1 << r0) - 1)
    outside[1] = ~np.uint64((1 << (r1 - 64)) - 1)
    assert popcount(diff & outside) == 0  # rows outside [r0, r1) never flip
    assert_binomial(n, lanes * (r1 - r0), p, f"p={p}")
    assert n > 500  # enough events for the 5 sigma band to mean something


@pytest.mark.parametrize(("p01", "p10"), [(1e-2, 1e-3), (1e-3, 2e-2), (0.2, 0.05), (0.0, 0.01), (0.03, 0.0)])
def test_flip_rate_asymmetric(p01: float, p10: float) -> None:
    rng = np.random.default_rng(21)
    lanes, r0, r1 = 65536, 0, 100
    words = rng.integers(0, 2**64, (lanes, 2), dtype=np.uint64)
    before = row_bits(words, r0, r1)
    n = flip_bits(words, r0, r1, Rate(p01, p10), np.random.default_rng(22))
    after = row_bits(words, r0, r1)
    up = int((~before & after).sum())  # 0 -> 1
    down = int((before & ~after).sum())  # 1 -> 0
    assert n == up + down
    assert_binomial(up, int((~before).sum()), p01, "0->1")
    assert_binomial(down, int(before.sum()), p10, "1->0")


def test_flip_bits_zero_rate_is_a_no_op() -> None:
    words = np.random.default_rng(0).integers(0, 2**64, (1000, 3), dtype=np.uint64)
    before = words.copy()
    rng = _CountingRng(np.random.default_rng(0))
    assert flip_bits(words, 0, 192, Rate(0.0, 0.0), rng) == 0
    np.testing.assert_array_equal(words, before)
    assert rng.draws == 0


def test_flip_bits_rate_one() -> None:
    words = np.zeros((10, 2), dtype=np.uint64)
    assert flip_bits(words, 5, 70, Rate(1.0, 1.0), np.random.default_rng(0)) == 10 * 65
    assert row_bits(words, 5, 70).all() and not row_bits(words, 0, 5).any() and not row_bits(words, 70, 128).any()


class _CountingRng:
    """A numpy Generator that counts the random numbers it hands out."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self.draws = 0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._rng, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            self.calls += 1
            self.draws += int(np.size(out))
            return out

        return counted


def test_sampling_cost_is_proportional_to_faults() -> None:
    """At p = 1e-6 over 2.7e8 bits the sampler draws O(faults) numbers, not O(bits)."""
    lanes, nwords = 1 << 16, 64  # 2^16 lanes x 4096 rows = 2.7e8 bits, 32 MiB
    words = np.zeros((lanes, nwords), dtype=np.uint64)
    nbits = lanes * nwords * 64
    rng = _CountingRng(np.random.default_rng(5))
    assert flip_bits(words, 0, nwords * 64, Rate(0.0, 0.0), rng) == 0
    assert rng.draws == 0 and popcount(words) == 0
    p = 1e-6
    n = flip_bits(words, 0, nwords * 64, Rate(p, p), rng)
    assert n == popcount(words)
    assert_binomial(n, nbits, p, "p=1e-6")
    # a dense sampler would draw nbits = 2.7e8 numbers; allow a generous constant per fault
    assert rng.draws <= 20 * (n + 100), rng.draws
    assert rng.calls <= 100
    # asymmetric rates thin the candidates: still O(faults)
    words[:] = 0
    rng2 = _CountingRng(np.random.default_rng(6))
    n2 = flip_bits(words, 0, nwords * 64, Rate(p, p / 10), rng2)
    assert_binomial(n2, nbits, p, "p01=1e-6 on zeros")
    assert rng2.draws <= 20 * (n2 + 100)


# ---------------------------------------------------------------------------- in the interpreter
def _gate_program(lanes_rows: int = 256, arrays: int = 8) -> str:
    return "\n".join(
        [
            f".machine arrays={arrays} rows={lanes_rows} cols=4 accs=1",
            f".input x : u8[{arrays},{lanes_rows},2]",
            f".output y : i64[{arrays},{lanes_rows}]",
            ".main {",
            f"  wr @0:{arrays} c0, %x bits=1",
            f"  and @0:{arrays} c2, c0, c1",
            f"  rd @0:{arrays} %y, c2 bits=1 signed=0",
            "}",
            "",
        ]
    )


def test_gate_faults_in_the_interpreter() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, (256, 8, 256, 2), dtype=np.uint8)
    ideal = (x[..., 0] & x[..., 1]).astype(np.int64)
    zeros, ones = int((ideal == 0).sum()), int((ideal == 1).sum())
    model = FaultModel({"and": Rate(0.02, 0.004)})
    res = run_text(_gate_program(), {"x": x}, model, seed=1)
    y = res.outputs["y"]
    up, down = int(((ideal == 0) & (y == 1)).sum()), int(((ideal == 1) & (y == 0)).sum())
    assert_binomial(up, zeros, 0.02, "and 0->1")
    assert_binomial(down, ones, 0.004, "and 1->0")
    assert res.counts.faults == {"gate": up + down, "write": 0, "read": 0, "tree": 0}
    assert res.counts.faults_injected == up + down


def test_only_the_configured_gate_fails() -> None:
    x = np.random.default_rng(4).integers(0, 2, (64, 8, 256, 2), dtype=np.uint8)
    res = run_text(_gate_program(), {"x": x}, FaultModel({"or": Rate(0.5, 0.5)}), seed=1)
    np.testing.assert_array_equal(res.outputs["y"], x[..., 0] & x[..., 1])
    assert res.counts.faults_injected == 0


_WRITE_READ = "\n".join(
    [
        ".machine arrays=8 rows=200 cols=8 accs=1",
        ".input x : u8[8,200]",
        ".output z : i64[8,200]",
        ".output o : i64[8,200]",
        ".output d : i64[8,200]",
        ".output d2 : i64[8,200]",
        ".main {",
        "  fill @0:8 c0, 0",
        "  fill @0:8 c1, 1",
        "  wr @0:8 c2, %x bits=1",
        "  rd @0:8 %z, c0 bits=1 signed=0",
        "  rd @0:8 %o, c1 bits=1 signed=0",
        "  rd @0:8 %d, c2 bits=1 signed=0",
        "  rd @0:8 %d2, c2 bits=1 signed=0",
        "}",
        "",
    ]
)


def test_write_faults() -> None:
    x = np.random.default_rng(5).integers(0, 2, (500, 8, 200), dtype=np.uint8)
    res = run_text(_WRITE_READ, {"x": x}, FaultModel(write=Rate(0.03, 0.005)), seed=2)
    out = res.outputs
    n = x.size
    assert_binomial(int(out["z"].sum()), n, 0.03, "fill 0")
    assert_binomial(int((1 - out["o"]).sum()), n, 0.005, "fill 1")
    up = int(((x == 0) & (out["d"] == 1)).sum())
    down = int(((x == 1) & (out["d"] == 0)).sum())
    assert_binomial(up, int((x == 0).sum()), 0.03, "wr 0->1")
    assert_binomial(down, int((x == 1).sum()), 0.005, "wr 1->0")
    np.testing.assert_array_equal(out["d"], out["d2"])  # a write fault is stored: both reads see it
    assert res.counts.faults["write"] == int(out["z"].sum() + (1 - out["o"]).sum()) + up + down
    assert res.counts.faults["read"] == res.counts.faults["gate"] == 0


def test_read_faults_do_not_change_the_cells() -> None:
    x = np.random.default_rng(6).integers(0, 2, (500, 8, 200), dtype=np.uint8)
    p = 0.05
    res = run_text(_WRITE_READ, {"x": x}, FaultModel(read=Rate(p, p)), seed=3)
    d, d2 = res.outputs["d"], res.outputs["d2"]
    e1, e2 = d != x, d2 != x
    assert_binomial(int(e1.sum()), x.size, p, "first read")
    assert_binomial(int(e2.sum()), x.size, p, "second read")
    # independent sensing errors: both reads wrong on the same bit with probability p^2
    # (if a read fault were stored in the cell this would be about p)
    assert_binomial(int((e1 & e2).sum()), x.size, p * p, "both reads")
    assert res.counts.faults["read"] == int(
        sum((res.outputs[k] != v).sum() for k, v in (("z", 0), ("o", 1), ("d", x), ("d2", x)))
    )
    assert res.counts.faults["write"] == 0


def test_adder_tree_senses_with_read_faults() -> None:
    text = "\n".join(
        [
            ".machine arrays=4 rows=256 cols=2 accs=1",
            ".output y : i64[4,1]",
            ".main {",
            "  fill @0:4 c0, 1",
            "  aclr @0:4 acc0",
            "  tadd @0:4 acc0, c0, 0",
            "  ard @0:4 %y, acc0",
            "}",
            "",
        ]
    )
    linked = link(text)
    res = run(linked, {}, FaultModel(read=Rate(0.0, 0.01)), seed=4)
    assert res.samples == 1
    missing = 4 * 256 - int(res.outputs["y"].sum())
    assert missing == res.counts.faults["read"]
    # one sample is 1024 bits: widen the test with many runs of different seeds
    total = missing + sum(
        4 * 256 - int(run(linked, {}, FaultModel(read=Rate(0.0, 0.01)), seed=s).outputs["y"].sum())
        for s in range(5, 200)
    )
    assert_binomial(total, 196 * 1024, 0.01, "tree sensing 1->0")


# ---------------------------------------------------------------------------- TMR, per-gate TOML model
def _tmr_error_rate(toml: str, tmp_path: Path, samples: int = 4000) -> tuple[int, int]:
    path = tmp_path / "model.toml"
    path.write_text(toml, encoding="utf-8")
    model = load_error_model(str(path))
    linked = link_file(example("tmr_and.cram"))
    x = np.broadcast_to(linked.expect.inputs["x"], (samples, *linked.expect.inputs["x"].shape[1:]))
    y = run(linked, {"x": np.ascontiguousarray(x)}, model, seed=9).outputs["y"]
    wrong = int((y != (x[..., 0] & x[..., 1])).sum())
    return wrong, y.size


def test_tmr_masks_single_and_faults(tmp_path: Path) -> None:
    p = 0.05
    wrong, n = _tmr_error_rate(f"[gates]\nand = {p}\n", tmp_path)
    q = 3 * p**2 * (1 - p) + p**3  # at least two of three copies wrong
    assert_binomial(wrong, n, q, "TMR with an exact voter")
    assert wrong < n * p / 3  # far better than one AND


def test_tmr_with_a_faulty_cram_voter(tmp_path: Path) -> None:
    p = 0.05
    wrong, n = _tmr_error_rate(f"[gates]\ndefault = {p}\n", tmp_path)
    q = 3 * p**2 * (1 - p) + p**3
    assert_binomial(wrong, n, q * (1 - p) + (1 - q) * p, "TMR with a CRAM voter")
    assert wrong > n * p  # the voter makes it worse than a single AND


# ---------------------------------------------------------------------------- an error-model file in a run
def test_cli_error_model_is_used(cli, tmp_path: Path) -> None:
    model = tmp_path / "m.toml"
    model.write_text("[gates]\nmaj5 = 1.0\n", encoding="utf-8")
    out = tmp_path / "o.npz"
    res = cli("run", str(example("full_adder.cram")), "--error-model", str(model), "--output", str(out))
    assert res.rc == 0 and "8 faults injected" in res.out
    with np.load(out) as z:
        np.testing.assert_array_equal(z["s"], 1 - np.array([[[0, 1, 1, 0, 1, 0, 0, 1]]]))  # every Sum inverted
        np.testing.assert_array_equal(z["cout"], [[[0, 0, 0, 1, 0, 1, 1, 1]]])  # maj3 untouched


# ---------------------------------------------------------------------------- seeds
def _mul_run(seed: int):  # noqa: ANN202
    linked = link_file(example("mul8x8.cram"))
    return run(linked, dict(linked.expect.inputs), FaultModel.uniform(1e-3), seed=seed)


def test_same_seed_same_result() -> None:
    a, b = _mul_run(7), _mul_run(7)
    np.testing.assert_array_equal(a.outputs["y"], b.outputs["y"])
    assert a.counts.faults == b.counts.faults
    assert a.counts.faults_injected > 0


def test_different_seeds_differ() -> None:
    a, c = _mul_run(7), _mul_run(8)
    assert (a.outputs["y"] != c.outputs["y"]).any()
    for r in (a, c):
        assert_binomial(r.counts.faults["gate"], r.counts.gate_evals, 1e-3, "mul8x8 gate faults")


def test_cli_seed_reproducible(cli, tmp_path: Path) -> None:
    outs = []
    for i, seed in enumerate(("5", "5", "6")):
        out = tmp_path / f"o{i}.npz"
        res = cli(
            "run", str(example("ripple_adder8.cram")), "--gate-error", "0.01", "--seed", seed, "--output", str(out)
        )
        assert res.rc == 0
        with np.load(out) as z:
            outs.append((z["y"].copy(), res.out.splitlines()[0]))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert outs[0][1].split(";", 1)[1] == outs[1][1].split(";", 1)[1]  # same fault count printed
    assert (outs[0][0] != outs[2][0]).any()


@pytest.mark.parametrize(
    "rate",
    [Rate(3e-3, 3e-3), Rate(4e-3, 1e-3), Rate(0.0, 0.0, by_ones=(1e-3, 5e-3, 2e-2))],
    ids=["symmetric", "asymmetric", "by_ones"],
)
@pytest.mark.parametrize("rows", [(0, 128), (5, 100)])
def test_sample_draws_what_a_call_flips(rate: Rate, rows: tuple[int, int]) -> None:
    """Injector.sample gives the very flips a call of the injector makes on the region (same stream words,
    same thinning uniforms, same dropped count), reading the region and the inputs only where it is told."""
    r0, r1 = rows
    w0, w1 = r0 >> 6, (r1 + 63) >> 6
    block = w1 - w0
    active = None if (r0 | r1) & 63 == 0 else faults.row_mask_words(r0 - 64 * w0, r1 - 64 * w0, block)
    data = np.random.default_rng(1)
    ins = [data.integers(0, 2**64, size=(300, block), dtype=np.uint64) for _ in range(2)]
    region = (ins[0] & ins[1]).reshape(-1)
    flat_ins = [x.reshape(-1) for x in ins]

    def injector() -> faults.Injector:
        stream = faults.FaultStream(rate.pmax, np.random.default_rng(7), batch=64)
        inj = faults.Injector(stream, rate, np.random.default_rng(8), block, active)
        inj.step = 8 * block  # several chunks per region
        return inj

    a, b = injector(), injector()
    flipped = region.copy()
    n = a(flipped, ins if rate.by_ones is not None else None)
    w, mk = b.sample(region.size, lambda w: region[w], lambda w: [x[w] for x in flat_ins])
    got = region.copy()
    np.bitwise_xor.at(got, w, mk)
    np.testing.assert_array_equal(got, flipped)
    assert n == w.size > 0 and a.stream.dropped == b.stream.dropped
    assert a.rng.random() == b.rng.random()  # the same thinning uniforms were used up
