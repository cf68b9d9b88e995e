"""Running a sweep: every (gate error rate, protection, seed) point, in-process or on Dask, and the rows."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from cramc.errmodel import FaultModel
from cramc.errors import UserError
from cramc.ir.ecc import recomputing
from cramc.sweep.options import SweepOptions, check_options, fault_model
from cramc.sweep.stats import chip_spread, t_interval, wilson
from cramc.sweep.variants import Variant, VariantBuilder

#: Per-inference event counts recorded for every (rate, protection).
COUNT_FIELDS = ("gate_evals", "writes", "reads", "tree_sensed_bits", "reduces", "recomputes", "faults_injected")
#: Cost-model figures taken from REPORT.json when present.
COST_FIELDS = ("latency_s", "energy_j")
#: Fields compared with the unprotected model (``rel_<field>`` = this / none's at the same rate).
REL_FIELDS = ("gate_evals", "writes", "reads", "tree_sensed_bits", "latency_s", "energy_j")


def _counts(
    counts: Any, samples: int, fm: FaultModel, v: Variant, tech: Any, init: dict[str, int] | None = None
) -> dict[str, float]:
    """Per-inference counts, and the cost model's latency and energy, as REPORT.json (cramc run --report) has them.

    The simulator runs `.init` (loading the weights) for every sample; the chip does it once.  Its gate
    evaluations, writes and reads (`init`, summed over samples) are taken off the per-inference figures and
    its writes reported once as ``init_writes``; faults stay in, since every sample saw its own.
    """
    from cramc.sim.report import build_report

    cost = None
    if tech is not None:
        from cramc.cost.model import dynamic_estimate
        from cramc.cost.static import count_init

        if v.init is None:
            v.init = count_init(v.linked)
        cost = dynamic_estimate(counts, samples, v.linked, tech, init=v.init).as_dict()
    rep = build_report(counts, samples, 0, fm, cost=cost)
    per = max(samples, 1)
    out = {k: rep[k] / per for k in COUNT_FIELDS}
    if init:
        for k in ("gate_evals", "writes", "reads"):
            out[k] -= init.get(k, 0) / per
        out["init_writes"] = init.get("writes", 0) / per
    for k in COST_FIELDS:
        val = _cost_figure(rep, k)
        if val is not None:
            out[k] = val
    return out


def _cost_figure(rep: dict[str, Any], key: str) -> float | None:
    """A per-inference latency/energy from REPORT.json: ``per_sample.KEY``, or ``KEY`` (per inference)."""
    for where in (rep.get("per_sample"), rep.get("cost"), rep):
        if isinstance(where, dict) and isinstance(where.get(key), (int, float)):
            return float(where[key])
    return None


def _static_counts(v: Variant, max_memory: int | None, tech: Any) -> None:
    """Per-inference event counts from one fault-free gate-level inference (they do not depend on faults)."""
    from cramc.sim.interp import run

    one = {
        s.name: np.zeros((1, *s.shape), dtype=np.float32 if s.dtype.startswith("f") else np.int64)
        for s in v.linked.inputs
    }
    res = run(v.linked, one, FaultModel(), seed=0, max_memory=max_memory)
    v.counts = _counts(res.counts, 1, FaultModel(), v, tech, res.init)
    v.counts["faults_injected"] = math.nan
    v.recompute_rows = {
        s.name: float(sum(res.counts.per_opcode.get(m, {}).get("row_ops", 0) for m in s.tree)) for s, _ in recomputing()
    }


@dataclass
class SweepResult:
    config: dict[str, Any]
    rows: list[dict[str, Any]]


def run_sweep(
    o: SweepOptions,
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    calibration: dict[str, np.ndarray] | None = None,
    log: TextIO | None = None,
    progress: bool = False,
    data_name: str = "--data",
    labels_name: str = "--labels",
) -> SweepResult:
    """Compile the variants, run every (rate, protection, seed) and aggregate per (rate, protection).

    `inputs` are keyed by the model's (ONNX) input names, samples on the model's batch axis (as for
    `cramc run --input`); `data_name`, `labels_name` name them in messages."""
    from cramc.sim.report import check_labels

    log = log or sys.stderr  # looked up per call: tests and callers may replace sys.stderr
    check_options(o)
    n = _check_data(inputs)
    b = VariantBuilder(o, calibration, log)
    fe = b.frontend(o.model)  # the first output's classes, before anything is compiled
    out0 = fe.graph.outputs[0]
    labels = check_labels(labels, n, int(np.prod(out0.shape)), labels_name, fe.qmodel.graph.output[0].name)
    if o.samples is not None:
        n = min(n, o.samples)
        inputs = {k: v[:n] for k, v in inputs.items()}
    labels = labels[:n]
    if o.mode == "statistical" and o.error_model:
        fm = fault_model(0.0, o.error_model)
        if not (fm.write.zero and fm.tree == 0.0):
            log.write(
                "sweep: warning: --mode statistical models gate and read faults only; the error model's "
                "write and adder-tree faults are ignored (use --mode gate)\n"
            )
        if fm.defects.any:
            log.write(
                "sweep: note: --mode statistical draws the error model's [defects] afresh for every sample (each "
                "sample on a chip of its own): accuracy is the mean over chips, not one chip's (use --mode gate "
                "--chips N for the spread between chips)\n"
            )
    plan = [(p, prot) for p in o.rates for prot in o.protections]
    variants = {(p, prot): b.variant(prot, p) for p, prot in plan}
    if o.mode == "statistical":
        for v in b.variants():
            _static_counts(v, o.max_memory, b.tech)
    bar = _progress(len(plan) * o.seeds * o.chips * n, progress)
    rows = []
    try:
        from cramc.distributed import run_tasks

        tasks = [
            (
                variants[(p, prot)],
                o,
                fault_model(p, o.error_model, o.keep_shape),
                inputs,
                labels,
                seed,
                b.tech,
                data_name,
                chip,
            )
            for p, prot in plan
            for seed in range(o.seeds)
            for chip in range(o.chips)
        ]
        if o.workers or o.scheduler:
            done = run_tasks(_run_one, tasks, o.workers, o.scheduler, on_done=lambda i, r: bar.update(n))
        else:
            done = [_run_one(*t, bar=bar) for t in tasks]
        per = o.seeds * o.chips
        for i, (p, prot) in enumerate(plan):
            mine = done[i * per : (i + 1) * per]  # seed-major: (seed 0, chip 0), (seed 0, chip 1), ...
            row = _row(
                o, p, prot, b.specs[(prot, p)], variants[(p, prot)], [k for k, _ in mine], [c for _, c in mine], n
            )
            if o.chips > 1:
                by_chip = [[mine[s * o.chips + c][0] for s in range(o.seeds)] for c in range(o.chips)]
                row.update(chip_spread(by_chip, n))
            rows.append(row)
    finally:
        bar.close()
    _relative(rows)
    config = {
        "model": o.model,
        "finetuned": o.finetuned,
        "mode": o.mode,
        "ecc": o.ecc,
        "ecc_budget": o.ecc_budget if o.ecc == "auto" else None,
        "error_model": o.error_model,
        "keep_shape": o.keep_shape,  # a level scales the error model's gate rates to that largest
        "tech": None if b.tech is None else b.tech.name,
        "gate_errors": list(o.rates),
        "protections": list(o.protections),
        "seeds": list(range(o.seeds)),
        "samples": n,
        "ci": "95% Student-t over per-seed accuracies (ci_low/ci_high); "
        "95% Wilson over pooled seed x sample trials (wilson_low/wilson_high)",
    }
    if o.chips > 1:
        config["chips"] = list(range(o.chips))
        config["ci"] = (
            "95% Student-t over the per-(seed, chip) accuracies (ci_low/ci_high); 95% Wilson over pooled trials "
            "(wilson_low/wilson_high); between chips: 95% Student-t over the chips' accuracies "
            "(chip_ci_low/chip_ci_high, chip_sd); within a chip: binomial sd and 95% Wilson of one chip's "
            "seeds x samples trials (within_sd, within_low/within_high)"
        )
    return SweepResult(config, rows)


def _check_data(inputs: dict[str, np.ndarray]) -> int:
    if not inputs:
        raise UserError("--data: the .npz file holds no arrays")
    sizes = {int(v.shape[0]) if v.ndim else 0 for v in inputs.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise UserError("--data: every array needs the same number of samples on its leading axis")
    return sizes.pop()


class _NoBar:
    def update(self, k: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, show: bool) -> Any:
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", desc="sweep", file=sys.stderr, dynamic_ncols=True)


def _run_one(
    v: Variant,
    o: SweepOptions,
    fm: FaultModel,
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    seed: int,
    b_tech: Any,
    data_name: str = "--data",
    chip_seed: int = 0,
    bar: Any = None,
) -> tuple[int, dict[str, float]]:
    """One (variant, seed, chip) point, in-process or on a Dask worker (there without a progress bar)."""
    if bar is None:
        bar = _NoBar()
    if o.mode == "gate":
        from cramc.sim.interp import run
        from cramc.sim.layout import program_inputs

        feed = program_inputs(v.linked, inputs, data_name)
        res = run(
            v.linked, feed, fm, seed=seed, max_memory=o.max_memory, progress=bar.update, backend=o.backend,
            chip_seed=chip_seed,
        )  # fmt: skip
        first = v.linked.outputs[0].name
        return _correct(res.outputs[first], labels), _counts(res.counts, res.samples, fm, v, b_tech, res.init)
    from cramc.ir.graph import sanitize
    from cramc.ir.noisy import all_defects, all_rates, noisy_evaluate

    g = v.graph
    by_name = {sanitize(k): x for k, x in inputs.items()}
    missing = [i.name for i in g.inputs if i.name not in by_name]
    if missing:
        raise UserError(f"--data lacks the model input(s) {', '.join(missing)}")
    feed = {i.name: by_name[i.name].reshape(-1, *i.shape) for i in g.inputs}
    # static defects ([defects]) are drawn from the seed's generator, each sample on a chip of its own
    # (cramc.ir.noisy): the accuracy is the mean over chips that gate mode's --chips estimates, without its
    # spread between chips, so --chips stays a gate-mode option
    out = noisy_evaluate(g, feed, all_rates(g, fm), np.random.default_rng(seed), defects=all_defects(g, fm))
    bar.update(labels.shape[0])
    c = dict(v.counts)
    # expected values: the rows recomputed depend on the faults, which this mode does not draw per row
    # (under the switching faults only: recomputes that defects cause are not counted, docs/error-model.md)
    expected = {s.name: r.expected(v.recompute_rows.get(s.name, 0.0), fm) for s, r in recomputing()}
    c["recomputes"] = sum(expected.values(), 0.0)
    c["tree_sensed_bits"] += sum((r.sensed * expected[s.name] for s, r in recomputing()), 0.0)
    return _correct(out[g.outputs[0].name], labels), c


def _correct(logits: np.ndarray, labels: np.ndarray) -> int:
    """How many samples the first output's argmax classifies right."""
    return int((logits.reshape(logits.shape[0], -1).argmax(axis=1) == labels).sum())


def _row(
    o: SweepOptions,
    p: float,
    prot: str,
    spec: str,
    v: Variant,
    correct: list[int],
    cnts: list[dict[str, float]],
    n: int,
) -> dict[str, Any]:
    # statistics on the integer counts of correct samples, so equal seeds give an exactly zero spread
    mean, lo, hi = (x / n for x in t_interval(correct))
    if not math.isnan(lo):  # an accuracy lies in [0, 1]
        lo, hi = max(0.0, lo), min(1.0, hi)
    wl, wh = wilson(sum(correct), n * len(correct))
    row: dict[str, Any] = {
        "gate_error": p,
        "protection": prot,
        "model": v.model,
        "ecc": spec if prot in ("ecc", "both") else "",
        "mode": o.mode,
        "seeds": len(correct),
        "samples": n,
        "acc_mean": mean,
        "acc_std": float(np.std(correct, ddof=1)) / n if len(correct) > 1 else 0.0,
        "ci_low": lo,
        "ci_high": hi,
        "wilson_low": wl,
        "wilson_high": wh,
        "acc_min": min(correct) / n,
        "acc_max": max(correct) / n,
        "acc_seeds": [k / n for k in correct],
    }
    keys = [f for f in (*COUNT_FIELDS, "init_writes", *COST_FIELDS) if all(f in c for c in cnts)]
    for f in keys:
        row[f] = float(np.mean([c[f] for c in cnts]))
    return row


def _relative(rows: list[dict[str, Any]]) -> None:
    """rel_<field>: the protection's per-inference figure over the unprotected model's at the same rate."""
    base = {r["gate_error"]: r for r in rows if r["protection"] == "none"}
    for r in rows:
        b = base.get(r["gate_error"])
        if b is None:
            continue
        for f in REL_FIELDS:
            if f in r and f in b and b[f]:
                r[f"rel_{f}"] = r[f] / b[f]
