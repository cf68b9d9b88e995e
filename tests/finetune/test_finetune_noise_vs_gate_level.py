"""The injected MVM error distribution against the gate-level interpreter (numpy only; runs without PyTorch).

A one-MVM program (K=40 rows of uint8 inputs times int8 weights, N=6 outputs,
arrays of 16 rows so K is split into 3 chunks of 14 rows with 2 padding rows)
runs on the bit-level interpreter, each sample a fresh draw of the faults.
The accumulator errors it makes are compared with the binomial model that
error-aware fine-tuning injects (cramc.train.noise / cramc.ir.noisy):

- the mean and the variance of each output's error lie within 5 standard
  errors of the model's exact moments (standard error of the variance from
  the model's exact fourth cumulant);
- the whole distribution: a two-sample Kolmogorov-Smirnov test between the
  gate-level errors and as many draws of cramc.ir.noisy.mvm_error does not
  reject at significance 1e-3 per output (conservative for these discrete
  distributions); nor does one against as many draws of the flip-by-flip
  sampler fine-tuning uses (cramc.train.noise.sample_flips).

The models include input-dependent AND rates (by_ones), whose partial-product
error the model takes per operand state k = w_b + x_c and the gate level
samples per row from the AND's inputs.

Seeds are fixed, so the verdicts are reproducible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ft_helpers import gate_level_errors, kappa4, ks_2samp, ks_critical, model_samples

from cramc.errmodel import FaultModel, Rate
from cramc.train.noise import (
    MvmNoise,
    counted_rows,
    error_moments,
    ones_counts,
    operand_ones,
    rates_for,
    sample_flips,
    state_counts,
    term_weights,
)

K, N, ROWS, SAMPLES = 40, 6, 16, 3000
SIGMAS = 5.0
ALPHA = 1e-3


def _operands() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=K)
    w = rng.integers(-127, 128, size=(K, N))
    w[0, 0] = -127  # the weights need all 8 bits
    return x, w


def _asymmetric() -> FaultModel:
    gates = {"and": Rate(0.03, 0.005)}
    return FaultModel(gates, read=Rate(0.002, 0.01), name="asymmetric and + read")


def _by_ones(read: bool) -> FaultModel:
    """An input-dependent AND (by_ones: one input at 1 is next to the threshold): the partial product's error
    depends on its operand state k = w_b + x_c, which the gate level samples at each row."""
    gates = {"and": Rate(by_ones=(0.002, 0.03, 0.008))}
    return FaultModel(gates, read=Rate(0.002, 0.01) if read else Rate(), name="by_ones and" + " + read" * read)


CASES = {
    "uniform-0.02": FaultModel.uniform(0.02),
    "uniform-0.003": FaultModel.uniform(0.003),
    "asymmetric-and-read": _asymmetric(),
    "by_ones-and": _by_ones(read=False),
    "by_ones-and-read": _by_ones(read=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_accumulator_error_matches_gate_level(tmp_path: Path, name: str) -> None:
    fm = CASES[name]
    x, w = _operands()
    spec = MvmNoise(8, 8, False, counted_rows(K, ROWS), rates_for(fm, 8, 8))
    assert spec.rows == 42
    gate, text = gate_level_errors(tmp_path, x, w, fm, SAMPLES, ROWS, seed=11)
    assert "mac_w8x8u" in text and "rows=0:14" in text  # 8-bit weights, unsigned inputs, chunks of 14 rows
    mean, var = (m[0, 0] for m in error_moments(x.reshape(1, 1, -1), w.T, spec))
    k4 = kappa4(x, w, spec)
    n = gate.shape[0]
    got_mean, got_var = gate.mean(axis=0), gate.var(axis=0, ddof=1)
    se_mean = np.sqrt(var / n)
    se_var = np.sqrt((k4 + 2 * var**2) / n)
    assert np.all(np.abs(got_mean - mean) <= SIGMAS * se_mean), (got_mean, mean, se_mean)
    assert np.all(np.abs(got_var - var) <= SIGMAS * se_var), (got_var, var, se_var)
    # the test has power: the error is not negligible, and a model with the rates halved is rejected
    assert np.all(var > 0)
    assert np.any(np.abs(got_var - var / 2) > SIGMAS * se_var)
    draws = model_samples(x, w, spec, SAMPLES, seed=12)
    flips = _flip_samples(x, w, spec, SAMPLES, seed=13)
    crit = ks_critical(ALPHA, n, draws.shape[0])
    for j in range(N):
        d = ks_2samp(gate[:, j], draws[:, j])
        assert d <= crit, f"output {j}: KS D={d:.4f} > {crit:.4f} (alpha {ALPHA})"
        d = ks_2samp(gate[:, j], flips[:, j])
        assert d <= crit, f"output {j}, sample_flips: KS D={d:.4f} > {crit:.4f} (alpha {ALPHA})"


def _flip_samples(x: np.ndarray, w: np.ndarray, spec: MvmNoise, samples: int, seed: int) -> np.ndarray:
    xs = np.broadcast_to(x.astype(np.int64), (samples, 1, x.size))
    return sample_flips(xs, w.T, spec, np.random.default_rng(seed)).reshape(samples, -1)


@pytest.mark.parametrize("name", list(CASES))
def test_sample_flips_moments_grouped_signed_padded(name: str) -> None:
    """sample_flips with groups, signed inputs, several positions and a padding row: mean and variance of
    every output within 5 standard errors of the exact moments (error_moments; the variance's standard error
    from the fourth cumulant), seed fixed; a model with the rates halved is outside the variance bound."""
    rng = np.random.default_rng(3)
    groups, kg, n, p, samples = 2, 20, 6, 3, 4000
    x = rng.integers(-128, 128, size=(1, p, groups * kg))
    w = rng.integers(-127, 128, size=(n, kg))
    spec = MvmNoise(8, 8, True, counted_rows(kg, 8), rates_for(CASES[name], 8, 8), groups)
    assert spec.rows == 21  # 3 chunks of 7 rows for 20: one padding row
    xs = np.broadcast_to(x, (samples, p, groups * kg))
    got = sample_flips(xs, w, spec, np.random.default_rng(5))
    mean, var = (m[0] for m in error_moments(x, w, spec))  # [P, N]
    cnt = state_counts(x, w, spec)[0].astype(np.float64)  # [P, N, wb, xb, 3]
    q = spec.rates.reshape(8, 8, 3) * (1 - spec.rates.reshape(8, 8, 3))
    k4 = (term_weights(8, 8, True).astype(np.float64) ** 4 * (cnt * q * (1 - 6 * q)).sum(-1)).sum(axis=(-2, -1))
    se_mean = np.sqrt(var / samples)
    se_var = np.sqrt((k4 + 2 * var**2) / samples)
    assert np.all(var > 0)
    assert np.all(np.abs(got.mean(0) - mean) <= SIGMAS * se_mean), (got.mean(0), mean, se_mean)
    assert np.all(np.abs(got.var(0, ddof=1) - var) <= SIGMAS * se_var), (got.var(0, ddof=1), var, se_var)
    assert np.any(np.abs(got.var(0, ddof=1) - var / 2) > SIGMAS * se_var)


def test_sample_flips_is_reproducible_and_zero_without_faults() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.integers(0, 256, size=(4, 5, 30)), rng.integers(-127, 128, size=(3, 30))
    spec = MvmNoise(8, 8, False, 30, rates_for(FaultModel.uniform(0.01), 8, 8))
    a, b = (sample_flips(x, w, spec, np.random.default_rng(9)) for _ in range(2))
    assert a.shape == (4, 5, 3) and np.array_equal(a, b) and np.any(a != 0)
    zero = MvmNoise(8, 8, False, 30, np.zeros((64, 3)))
    assert not np.any(sample_flips(x, w, zero, np.random.default_rng(9)))


def test_ks_detects_a_wrong_model(tmp_path: Path) -> None:
    """The distribution test has power: it rejects a model whose rates are 0.6 times the true ones."""
    fm = FaultModel.uniform(0.02)
    x, w = _operands()
    gate, _ = gate_level_errors(tmp_path, x, w, fm, SAMPLES, ROWS, seed=11)
    wrong = MvmNoise(8, 8, False, counted_rows(K, ROWS), 0.6 * rates_for(fm, 8, 8))
    draws = model_samples(x, w, wrong, SAMPLES, seed=12)
    crit = ks_critical(ALPHA, gate.shape[0], draws.shape[0])
    assert max(ks_2samp(gate[:, j], draws[:, j]) for j in range(N)) > crit


def test_ks_detects_a_model_blind_to_the_operand_state(tmp_path: Path) -> None:
    """With by_ones the zero products err at e_0 (no operand bit at 1) and e_1 (one): a model that gives every
    zero product one rate, chosen so that it makes as many zero-product faults in expectation over this MVM,
    is rejected, so the test sees where the faults are (which products, so which bit weights), not only how
    many."""
    fm = FaultModel({"and": Rate(by_ones=(0.0, 0.05, 0.0))})
    x, w = _operands()
    gate, _ = gate_level_errors(tmp_path, x, w, fm, SAMPLES, ROWS, seed=11)
    spec = MvmNoise(8, 8, False, counted_rows(K, ROWS), rates_for(fm, 8, 8))
    assert spec.rates[0].tolist() == [0.0, 0.05, 0.0]
    # the zero products' rows by state, over every output and (b, c): n_2 both bits, n_1 one, n_0 none
    n2 = ones_counts(x.reshape(1, 1, -1), w.T, 8, 8)
    n1 = operand_ones(x.reshape(1, 1, -1), w.T, 8, 8) - 2 * n2
    n0 = spec.rows - n1 - n2
    e = 0.05 * n1.sum() / (n0 + n1).sum()  # as many zero-product faults in expectation, spread evenly
    assert 0.005 < e < 0.045
    flat = MvmNoise(8, 8, False, spec.rows, np.tile([e, e, 0.0], (64, 1)))
    draws = model_samples(x, w, flat, SAMPLES, seed=12)
    crit = ks_critical(ALPHA, gate.shape[0], draws.shape[0])
    assert max(ks_2samp(gate[:, j], draws[:, j]) for j in range(N)) > crit


def test_counted_rows_matches_tiling() -> None:
    from cramc.ir.tiling import plan_tile

    for k in (1, 9, 40, 64, 72, 256, 257, 600, 1000):
        for rows in (16, 64, 256):
            t = plan_tile(k, 4, 1, 8, 8, rows, 256, 64)
            assert counted_rows(k, rows) == t.chunks * t.rows
