"""`cramc sweep`: files it writes, confidence intervals, reproducibility, variants, errors.

Tiny sweeps on the shipped digits MLP with a few dozen test samples.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO

from cramc.errors import UserError
from cramc.sweep import SweepOptions, run_sweep, spec_from_plans, t975, t_interval, wilson

M = REPO / "models"
MLP = str(M / "digits_mlp.onnx")
DATA = str(M / "digits_test_x_flat.npz")
LABELS = str(M / "digits_test_labels.npy")
CALIB = str(M / "digits_calib_flat.npz")
COMMON = (MLP, "--data", DATA, "--labels", LABELS, "--calibration", CALIB, "--no-progress")


def _inputs(n: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    with np.load(DATA) as z:
        x = {k: z[k][:n] for k in z.files}
    with np.load(CALIB) as z:
        cal = {k: z[k] for k in z.files}
    return x, np.load(LABELS)[:n], cal


def test_cli_writes_csv_and_png(cli, tmp_path: Path) -> None:
    out, png = tmp_path / "r.csv", tmp_path / "p.png"
    res = cli(
        "sweep",
        *COMMON,
        "--gate-error",
        "1e-3,3e-2",
        "--protection",
        "none,ecc",
        "--ecc",
        "dup",
        "--seeds",
        "2",
        "--samples",
        "30",
        "-o",
        str(out),
        "--plot",
        str(png),
    )
    assert res.rc == 0, res.err
    assert "protection" in res.out and f"wrote {out}, {png}" in res.out
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(float(r["gate_error"]), r["protection"]) for r in rows] == [
        (1e-3, "none"),
        (1e-3, "ecc"),
        (3e-2, "none"),
        (3e-2, "ecc"),
    ]
    for r in rows:
        assert r["samples"] == "30" and r["seeds"] == "2" and r["mode"] == "gate"
        lo, mean, hi = float(r["ci_low"]), float(r["acc_mean"]), float(r["ci_high"])
        assert 0.0 <= lo <= mean <= hi <= 1.0
        assert float(r["wilson_low"]) <= mean <= float(r["wilson_high"])
        seeds = [float(a) for a in r["acc_seeds"].split()]
        assert len(seeds) == 2 and math.isclose(np.mean(seeds), mean)
        assert float(r["gate_evals"]) > 0
    none, ecc = rows[2], rows[3]
    # duplicate-and-compare: two AND gates per partial product instead of one; disagreements recomputed in CMOS
    assert float(ecc["rel_gate_evals"]) == 2.0 and float(ecc["gate_evals"]) == 2 * float(none["gate_evals"])
    assert float(none["recomputes"]) == 0 and float(ecc["recomputes"]) > 0
    assert ecc["ecc"] == "dup" and none["ecc"] == ""
    # at 3e-2 unprotected accuracy collapses, dup holds it
    assert float(ecc["acc_mean"]) > float(none["acc_mean"]) + 0.1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_same_seeds_same_results_json(cli, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    args = (*COMMON, "--gate-error", "1e-2", "--protection", "none", "--seeds", "2", "--samples", "30")
    assert cli("sweep", *args, "-o", str(a)).rc == 0
    assert cli("sweep", *args, "-o", str(b)).rc == 0
    assert a.read_bytes() == b.read_bytes()
    d = json.loads(a.read_text(encoding="utf-8"))
    assert d["config"]["seeds"] == [0, 1] and d["config"]["samples"] == 30
    (r,) = d["results"]
    assert r["protection"] == "none" and len(r["acc_seeds"]) == 2
    # seed s is `cramc run --seed s` of the compiled model: the same accuracy
    x, y, _ = _inputs(30)
    np.savez(tmp_path / "x.npz", **x)
    np.save(tmp_path / "y.npy", y)
    prog = tmp_path / "mlp.cram"
    assert cli("compile", MLP, "-o", str(prog), "--calibration", CALIB).rc == 0
    for seed in (0, 1):
        out = cli(
            "run",
            str(prog),
            "--input",
            str(tmp_path / "x.npz"),
            "--labels",
            str(tmp_path / "y.npy"),
            "--gate-error",
            "1e-2",
            "--seed",
            str(seed),
        ).out
        assert f"accuracy (logits argmax vs labels): {r['acc_seeds'][seed]:.4f}" in out


def test_missing_finetuned_is_a_user_error(cli, tmp_path: Path) -> None:
    res = cli("sweep", *COMMON, "--protection", "none,finetuned", "--seeds", "1")
    assert res.rc == 1 and "needs the fine-tuned model: --finetuned" in res.err
    assert "Traceback" not in res.err
    res = cli("sweep", *COMMON, "--protection", "both", "--finetuned", str(tmp_path / "nope.onnx"))
    assert res.rc == 1 and "nope.onnx: no such file" in res.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--protection", "none,magic"), "unknown protection 'magic'"),
        (("--gate-error", "1e-3,2"), "between 0 and 1"),
        (("--gate-error", "x"), "'x' is not a number"),
        (("--seeds", "0"), "--seeds must be at least 1"),
        (("--protection", "ecc", "--ecc", "parity"), "unknown scheme 'parity'"),
        (("-o", "r.txt"), "must end in .csv or .json"),
        (("--plot", "p.bmp"), "expected a .png"),
    ],
)
def test_bad_options(cli, args: tuple[str, ...], message: str) -> None:
    res = cli("sweep", *COMMON, *args)
    assert res.rc == 1 and message in res.err and "Traceback" not in res.err


def test_finetuned_and_both_use_the_tuned_model() -> None:
    # the model itself stands in for its tuned version: finetuned must equal none, both must equal ecc
    x, y, cal = _inputs(30)
    o = SweepOptions(
        MLP,
        (1e-2,),
        ("none", "ecc", "finetuned", "both"),
        seeds=2,
        ecc="vote:sig>=8",
        finetuned=str(M / "digits_mlp.onnx"),
        mode="gate",
    )
    res = run_sweep(o, x, y, cal, log=io.StringIO())
    by = {r["protection"]: r for r in res.rows}
    assert by["finetuned"]["acc_seeds"] == by["none"]["acc_seeds"]
    assert by["both"]["acc_seeds"] == by["ecc"]["acc_seeds"]
    assert by["both"]["ecc"] == "vote:sig>=8" and by["finetuned"]["ecc"] == ""
    assert by["both"]["gate_evals"] > by["finetuned"]["gate_evals"]


def test_auto_is_tuned_per_rate_and_recorded_as_an_explicit_spec() -> None:
    from cramc.ir.passes.insert_ecc import parse_spec, plan_for

    x, y, cal = _inputs(30)
    log = io.StringIO()
    o = SweepOptions(MLP, (0.0, 3e-2), ("ecc",), seeds=1, ecc="auto", ecc_budget=0.2, mode="statistical")
    res = run_sweep(o, x, y, cal, log=log)
    clean, noisy = res.rows
    assert clean["ecc"] == ""  # nothing to protect against at zero faults
    assert noisy["ecc"] and "layer=" in noisy["ecc"]
    assert "auto-ecc: budget 20%" in log.getvalue()
    parse_spec(noisy["ecc"])
    # spec_from_plans round-trips an arbitrary per-layer, per-significance plan
    from cramc.frontend.pipeline import run_frontend
    from cramc.ir.passes.conv_to_mvm import ConvToMvm
    from cramc.ir.passes.insert_ecc import InsertEcc

    g = ConvToMvm().run(run_frontend(MLP, cal, log=io.StringIO()).graph)
    mvms = [op for op in g.ops if op.kind == "mvm"]
    InsertEcc(f"tmr:layer={mvms[0].out}:sig=3;vote:sig>=12;dup:sig>=5:sig<=7;none").run(g)
    spec = spec_from_plans(g)
    rules = parse_spec(spec)
    for op in mvms:
        assert plan_for(op, rules) == op.attrs["ecc"]


def test_statistical_mode_matches_gate_level() -> None:
    """Pooled accuracy of both modes at 1e-2 agrees within 5 sigma (binomial, fixed seeds)."""
    x, y, cal = _inputs(60)
    acc = {}
    for mode in ("gate", "statistical"):
        o = SweepOptions(MLP, (1e-2,), ("none", "ecc"), seeds=2, ecc="dup", mode=mode)
        res = run_sweep(o, x, y, cal, log=io.StringIO())
        acc[mode] = {r["protection"]: r for r in res.rows}
    n = 2 * 60
    for prot in ("none", "ecc"):
        pg, ps = acc["gate"][prot]["acc_mean"], acc["statistical"][prot]["acc_mean"]
        p = (pg + ps) / 2
        sigma = math.sqrt(2 * max(p * (1 - p), 1 / n) / n)
        assert abs(pg - ps) <= 5 * sigma, (prot, pg, ps)
    # counts do not depend on the mode; recomputes are expected values in statistical mode
    g, s = acc["gate"]["ecc"], acc["statistical"]["ecc"]
    assert g["gate_evals"] == s["gate_evals"] and g["writes"] == s["writes"]
    assert abs(g["recomputes"] - s["recomputes"]) < 0.1 * s["recomputes"]


def test_statistical_mode_matches_gate_level_with_input_dependent_rates() -> None:
    """An AND whose error depends on its inputs (by_ones): the gate level samples it per row from the operand
    bits, the statistical mode per operand state k = w_b + x_c (cramc.ir.noisy, cramc.ir.ecc, unprotected and
    under duplicate-and-compare); pooled accuracy of the digits MLP agrees within 5 sigma (fixed seeds).  The
    sweep's --gate-error levels replace every gate's rate, so the points are evaluated here with the model
    itself."""
    import dataclasses

    from cramc.errmodel import FaultModel, Rate
    from cramc.sweep.running import _run_one, _static_counts
    from cramc.sweep.variants import VariantBuilder

    x, y, cal = _inputs(60)
    fm = FaultModel({"and": Rate(by_ones=(1e-3, 2e-2, 5e-3))}, name="by_ones and")
    seeds = 3
    for spec in ("", "dup"):
        o = SweepOptions(MLP, (0.0,), ("none",), seeds=seeds, ecc=spec, mode="statistical")
        b = VariantBuilder(o, cal, io.StringIO())
        v = b.variant("ecc" if spec else "none", 0.0)
        _static_counts(v, None, b.tech)
        acc = {}
        for mode in ("gate", "statistical"):
            om = dataclasses.replace(o, mode=mode)
            acc[mode] = sum(_run_one(v, om, fm, x, y, seed, b.tech)[0] for seed in range(seeds)) / (seeds * 60)
        n = seeds * 60
        p = (acc["gate"] + acc["statistical"]) / 2
        sigma = math.sqrt(2 * max(p * (1 - p), 1 / n) / n)
        assert abs(acc["gate"] - acc["statistical"]) <= 5 * sigma, (spec, acc)
        if not spec:
            assert acc["gate"] < 0.95, "the rates should cost accuracy (else the test compares nothing)"


def test_interval_helpers() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 30, 31, 50, 200):
        assert t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=2e-4)
    m, lo, hi = t_interval([0.9, 0.92, 0.94])
    assert lo < m < hi and m == pytest.approx(0.92) and hi - m == pytest.approx(4.3027 * 0.02 / math.sqrt(3))
    assert all(math.isnan(v) for v in t_interval([0.5])[1:])
    lo, hi = wilson(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-4) and hi == pytest.approx(0.9448, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_labels_must_match_data() -> None:
    x, y, cal = _inputs(20)
    with pytest.raises(UserError, match="10 labels for 20 samples"):
        run_sweep(SweepOptions(MLP, (0.0,), ("none",), seeds=1), x, y[:10], cal, log=io.StringIO())


def test_scaled_to_keeps_the_shape_of_every_table() -> None:
    from cramc.errmodel import load_preset

    base = load_preset("near_term")
    worst = max(r.pmax for r in base.gates.values())
    for p in (1e-4, worst, 0.3):
        m = base.scaled_to(p)
        assert max(r.pmax for r in m.gates.values()) == pytest.approx(p, rel=1e-12)
        for g, r in base.gates.items():
            got = m.gates[g]
            if r.by_ones is not None:
                assert got.by_ones == pytest.approx(tuple(x * p / worst for x in r.by_ones), rel=1e-12)
            else:
                assert (got.p01, got.p10) == pytest.approx((r.p01 * p / worst, r.p10 * p / worst), rel=1e-12)
        assert m.write == base.write and m.read == base.read and m.tree == base.tree
    assert base.scaled_to(worst).gates == base.gates  # the level of the model's own largest rate is the model
    assert all(r.zero for r in base.scaled_to(0.0).gates.values())


def test_keep_shape_sweeps_the_error_model_itself(cli, tmp_path: Path) -> None:
    """At the level of near_term's own largest gate rate, --keep-shape runs near_term itself: seed s is
    `cramc run --error-model near_term --seed s` (same accuracy); without --keep-shape the level replaces
    every gate's rate (a different model, recorded as such)."""
    from cramc.errmodel import load_preset

    worst = max(r.pmax for r in load_preset("near_term").gates.values())
    out = tmp_path / "s.json"
    args = (*COMMON, "--error-model", "near_term", "--gate-error", repr(worst), "--protection", "none")
    assert cli("sweep", *args, "--keep-shape", "--seeds", "2", "--samples", "30", "-o", str(out)).rc == 0
    d = json.loads(out.read_text(encoding="utf-8"))
    assert d["config"]["keep_shape"] is True
    (r,) = d["results"]
    x, y, _ = _inputs(30)
    np.savez(tmp_path / "x.npz", **x)
    np.save(tmp_path / "y.npy", y)
    prog = tmp_path / "mlp.cram"
    assert cli("compile", MLP, "-o", str(prog), "--calibration", CALIB).rc == 0
    feed = ("--input", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.npy"), "--error-model", "near_term")
    for seed in (0, 1):
        run_out = cli("run", str(prog), *feed, "--seed", str(seed)).out
        assert f"accuracy (logits argmax vs labels): {r['acc_seeds'][seed]:.4f}" in run_out
        faults = int(run_out.split(" faults injected")[0].rsplit(" ", 1)[1])
        assert faults > 100, "near_term's rates should inject faults (else this compares nothing)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--keep-shape",), "--keep-shape scales the gate rates of an error model: give --error-model"),
        (("--keep-shape", "--error-model", "nope_preset"), "no error-model preset named 'nope_preset'"),
    ],
)
def test_keep_shape_errors(cli, args: tuple[str, ...], message: str) -> None:
    res = cli("sweep", *COMMON, "--gate-error", "1e-3", *args)
    assert res.rc == 1 and message in res.err and "Traceback" not in res.err
