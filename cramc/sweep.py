"""`cramc sweep`: accuracy under gate faults across error rates, protections and seeds.

A sweep answers "which protection pays off at which gate error rate" for one
model on labelled data.  It compiles every program variant it needs once,

    none       the model, unprotected
    ecc        the model under an error-correction spec (`--ecc`, default
               ``auto``: the auto-ecc pass, tuned anew for each gate error rate)
    finetuned  the error-aware fine-tuned model (`--finetuned TUNED.onnx`)
    both       the fine-tuned model under the same error correction

then runs every (gate error rate, protection, seed) on the data and reports,
per (rate, protection), the mean accuracy over seeds with a 95% confidence
interval, and the per-inference event counts that make up the protection's
overhead (gate evaluations, writes, reads, adder-tree sensed bits, CMOS
recomputes, and the cost model's latency and energy).  The simulator repeats
`.init` (loading the weights) for every sample; its events are taken off the
per-inference counts, and its writes reported once as ``init_writes``.

Two simulation modes:

- ``gate`` (default): the bit-level interpreter (cramc.sim.interp) on the
  compiled program, exactly as ``cramc run PROG --gate-error P --seed S``.
- ``statistical``: the IR evaluated exactly except that each MVM output gets
  an error drawn from the binomial model of cramc.ir.noisy, derived from the
  same fault model.  For gate and read faults this has the same distribution
  as the gate-level run (each partial-product row fails independently, and
  the accumulator error is the signed, shifted sum of those flips); it does
  not model write faults (weights and activations written into the arrays)
  or adder-tree faults, and it draws different random numbers, so its
  results equal gate-level results in distribution, not sample by sample.
  Event counts in this mode come from one fault-free gate-level inference
  (they do not depend on faults), and recomputes are their expected value.

Confidence interval: a Student-t interval over the per-seed accuracies
(mean +- t(0.975, n-1) * sd / sqrt(n), clipped to [0, 1]): it measures the spread the random
faults cause on this fixed data set.  A Wilson score interval over all
(seed, sample) trials pooled is recorded too (``wilson_low``/``wilson_high``)
and is what the plot shows when there is a single seed.

Reproducibility: seed s of a run is the simulator seed (``cramc run --seed
s``); seeds are 0 .. n-1.  Same inputs, options and seeds give the same file.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cramc.errors import InternalError, UserError
from cramc.fileio import atomic_write, write_json
from cramc.ir.ecc import recomputing
from cramc.sim.faults import FaultModel

PROTECTIONS = ("none", "ecc", "finetuned", "both")
MODES = ("gate", "statistical")
#: Per-inference event counts recorded for every (rate, protection).
COUNT_FIELDS = ("gate_evals", "writes", "reads", "tree_sensed_bits", "reduces", "recomputes", "faults_injected")
#: Cost-model figures taken from REPORT.json when present.
COST_FIELDS = ("latency_s", "energy_j")
#: Fields compared with the unprotected model (``rel_<field>`` = this / none's at the same rate).
REL_FIELDS = ("gate_evals", "writes", "reads", "tree_sensed_bits", "latency_s", "energy_j")

# Student t quantiles t(0.975, df) for df = 1 .. 30; beyond, a Cornish-Fisher expansion.
_T975 = (
    12.7062,
    4.3027,
    3.1824,
    2.7764,
    2.5706,
    2.4469,
    2.3646,
    2.3060,
    2.2622,
    2.2281,
    2.2010,
    2.1788,
    2.1604,
    2.1448,
    2.1314,
    2.1199,
    2.1098,
    2.1009,
    2.0930,
    2.0860,
    2.0796,
    2.0739,
    2.0687,
    2.0639,
    2.0595,
    2.0555,
    2.0518,
    2.0484,
    2.0452,
    2.0423,
)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with df degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError("df must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): 95% Student-t interval of the mean; (mean, nan, nan) for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if x.size < 2:
        return m, math.nan, math.nan
    h = t975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, m - h, m + h


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n."""
    if n <= 0:
        return math.nan, math.nan
    z2 = _Z975**2
    p = k / n
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z975 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class SweepOptions:
    """What to sweep.  `ecc` is an insert-ecc spec or ``auto`` (tuned per rate with `ecc_budget`)."""

    model: str
    rates: tuple[float, ...]
    protections: tuple[str, ...] = ("none", "ecc")
    seeds: int = 5
    ecc: str = "auto"
    ecc_budget: float = 0.2
    finetuned: str | None = None
    error_model: str | None = None
    mode: str = "gate"
    samples: int | None = None
    max_memory: int | None = None  # bytes of simulator state (None: the backend's default budget)
    tech: str | None = None  # technology file of the cost model (None: its defaults)
    workers: int = 0  # > 0: run the (rate, protection, seed) points on a local Dask cluster of this many processes
    scheduler: str | None = None  # or on an existing Dask cluster at this address
    backend: str = "numpy"  # gate mode: the simulator backend (cramc.sim.backend), on every worker


def parse_rates(text: str) -> tuple[float, ...]:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            p = float(part)
        except ValueError:
            raise UserError(
                f"--gate-error: '{part}' is not a number (give a comma-separated list, e.g. 1e-4,1e-3,1e-2)"
            ) from None
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise UserError(f"--gate-error: a probability must be between 0 and 1, got {part}")
        out.append(p)
    if not out:
        raise UserError("--gate-error: give at least one gate error rate")
    return tuple(dict.fromkeys(out))


def parse_protections(text: str) -> tuple[str, ...]:
    out = [p.strip() for p in text.split(",") if p.strip()]
    for p in out:
        if p not in PROTECTIONS:
            raise UserError(f"--protection: unknown protection '{p}' (choose from {', '.join(PROTECTIONS)})")
    if not out:
        raise UserError("--protection: give at least one of " + ", ".join(PROTECTIONS))
    return tuple(dict.fromkeys(out))


def fault_model(rate: float, error_model: str | None) -> FaultModel:
    """The fault model of one sweep point: as `cramc run --gate-error rate [--error-model FILE]`."""
    from cramc.sim.faults import load_error_model

    if error_model:
        return load_error_model(error_model).with_gate_error(rate)
    return FaultModel.uniform(rate)


def check_options(o: SweepOptions) -> None:
    if o.mode not in MODES:
        raise UserError(f"--mode {o.mode}: expected one of {', '.join(MODES)}")
    if o.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if o.samples is not None and o.samples < 1:
        raise UserError("--samples must be at least 1")
    if not o.rates:
        raise UserError("--gate-error: give at least one gate error rate")
    need = [p for p in o.protections if p in ("finetuned", "both")]
    if need and not o.finetuned:
        raise UserError(
            f"--protection {','.join(need)} needs the fine-tuned model: --finetuned TUNED.onnx "
            "(made by `cramc finetune`)"
        )
    if any(p in ("ecc", "both") for p in o.protections):
        if not o.ecc:
            raise UserError("--ecc: give a spec (e.g. 'dup', 'vote:sig>=10;dup:sig>=6') or 'auto'")
        if o.ecc == "auto":
            if not o.ecc_budget > 0:
                raise UserError("--ecc-budget must be positive (a fraction, e.g. 0.2 for 20% more operations)")
        else:
            from cramc.ir.passes.insert_ecc import parse_spec

            parse_spec(o.ecc)
    for p in (o.model, o.finetuned):
        if p and not Path(p).is_file():
            raise UserError(f"{p}: no such file")
    if o.error_model:
        fault_model(0.0, o.error_model)  # report a bad file before compiling anything
    from cramc.sim.backend import get_backend

    get_backend(o.backend)  # an unknown or unavailable backend, before compiling anything


# ---------------------------------------------------------------- variants
@dataclass
class Variant:
    """One compiled program (and, in statistical mode, its IR)."""

    model: str
    ecc: str  # the explicit insert-ecc spec it was compiled with ('' = none)
    linked: Any  # cramc.isa.verifier.Linked
    graph: Any = None  # cramc.ir.graph.Graph after tiling (statistical mode)
    counts: dict[str, float] = field(default_factory=dict)  # per inference, fault-free (statistical mode)
    #: rows sensed per inference by the tree operations of each scheme that recomputes rows (statistical mode)
    recompute_rows: dict[str, float] = field(default_factory=dict)
    init: Any = None  # the cost model's tally of `.init` (computed once)


def spec_from_plans(g: Any) -> str:
    """An explicit insert-ecc spec that reproduces the `ecc` plans of graph g (one rule per layer and scheme)."""
    from cramc.ir.ecc import scheme

    rules = []
    for op in g.ops:
        plan = op.attrs.get("ecc") if op.kind == "mvm" else None
        if not plan or not any(plan):
            continue
        xb = op.attrs["xbits"]
        by_sig: dict[int, int] = {}
        for i, code in enumerate(plan):
            s = i // xb + i % xb
            if by_sig.setdefault(s, code) != code:
                raise InternalError(f"ecc plan of {op.out} differs within significance {s}")
        for code in sorted(set(by_sig.values()) - {0}):
            sigs = sorted(s for s, c in by_sig.items() if c == code)
            # contiguous runs of significances -> sig>=a:sig<=b
            start = prev = sigs[0]
            for s in [*sigs[1:], None]:
                if s is not None and s == prev + 1:
                    prev = s
                    continue
                cond = f"sig={start}" if start == prev else f"sig>={start}:sig<={prev}"
                rules.append(f"{scheme(code).name}:layer={op.out}:{cond}")
                if s is not None:
                    start = prev = s
    return ";".join(rules)


def _check_spec(g: Any, spec: str) -> None:
    """The explicit spec must give every MVM exactly the plan auto-ecc chose."""
    from cramc.ir.passes.insert_ecc import parse_spec, plan_for

    rules = parse_spec(spec)
    for op in g.ops:
        if op.kind == "mvm" and plan_for(op, rules) != list(op.attrs.get("ecc") or plan_for(op, [])):
            raise InternalError(f"spec '{spec}' does not reproduce the ecc plan of {op.out}")


class _Builder:
    """Compiles and caches the variants of a sweep."""

    def __init__(self, o: SweepOptions, calibration: dict[str, np.ndarray] | None, log: TextIO):
        self.o = o
        self.calibration = calibration
        self.log = log
        self._frontends: dict[str, Any] = {}
        self._variants: dict[tuple[str, str], Variant] = {}
        self.specs: dict[tuple[str, float], str] = {}  # (protection, rate) -> explicit spec
        self.tech = _load_tech(o.tech)

    def frontend(self, model: str) -> Any:
        from cramc.frontend.pipeline import run_frontend

        if model not in self._frontends:
            self._frontends[model] = run_frontend(model, self.calibration, log=self.log)
        return self._frontends[model]

    def ir(self, model: str, ecc: str, fm: FaultModel | None = None) -> Any:
        """The IR after conv-to-mvm and error correction (auto-ecc when ecc == 'auto', tuned for fm)."""
        from cramc.ir.graph import sanitize
        from cramc.ir.passes.conv_to_mvm import ConvToMvm
        from cramc.ir.passes.insert_ecc import InsertEcc
        from cramc.ir.passes.manager import run_passes

        fe = self.frontend(model)
        g = copy.deepcopy(fe.graph)
        passes: list[Any] = [ConvToMvm()]
        if ecc == "auto":
            from cramc.ir.passes.auto_ecc import AutoEcc

            names = {sanitize(k): v for k, v in fe.calibration.items()}
            calib = {i.name: names[i.name].reshape(-1, *i.shape) for i in g.inputs}
            passes.append(AutoEcc(fm, self.o.ecc_budget, calib, log=self.log))
        elif ecc:
            passes.append(InsertEcc(ecc))
        return run_passes(g, passes)

    def variant(self, protection: str, rate: float) -> Variant:
        o = self.o
        model = o.finetuned if protection in ("finetuned", "both") else o.model
        assert model is not None
        want = o.ecc if protection in ("ecc", "both") else ""
        g = None
        if want == "auto":
            self.log.write(f"sweep: auto-ecc for {protection} at gate error {rate:g}\n")
            g = self.ir(model, "auto", fault_model(rate, o.error_model))
            spec = spec_from_plans(g)
            _check_spec(g, spec)
        else:
            spec = want
        self.specs[(protection, rate)] = spec
        key = (model, spec)
        v = self._variants.get(key)
        if v is None:
            v = self._variants[key] = self._compile(model, spec, g)
        return v

    def _compile(self, model: str, spec: str, g: Any) -> Variant:
        from cramc.compiler import Options, compile_model
        from cramc.isa.parser import parse
        from cramc.isa.verifier import verify

        self.log.write(f"sweep: compiling {model}" + (f" with --ecc '{spec}'" if spec else "") + "\n")
        text = compile_model(model, self.calibration, Options(ecc=spec, trace=False, n_validation=1), log=self.log)
        v = Variant(model, spec, verify(parse(text, f"<{Path(model).name}>")))
        if self.o.mode == "statistical":
            from cramc.ir.passes.manager import run_passes
            from cramc.ir.passes.tile_mvm import TileMvm

            if g is None:
                g = self.ir(model, spec)
            opts = Options()
            v.graph = run_passes(g, [TileMvm(opts.rows, opts.cols, opts.accs)])
            self._static_counts(v)
        return v

    def _static_counts(self, v: Variant) -> None:
        """Per-inference event counts from one fault-free gate-level inference (they do not depend on faults)."""
        from cramc.sim.interp import run

        one = {
            s.name: np.zeros((1, *s.shape), dtype=np.float32 if s.dtype.startswith("f") else np.int64)
            for s in v.linked.inputs
        }
        res = run(v.linked, one, FaultModel(), seed=0, max_memory=self.o.max_memory)
        v.counts = _counts(res.counts, 1, FaultModel(), v, self.tech, res.init)
        v.counts["faults_injected"] = math.nan
        v.recompute_rows = {
            s.name: float(sum(res.counts.per_opcode.get(m, {}).get("row_ops", 0) for m in s.tree))
            for s, _ in recomputing()
        }


def _load_tech(path: str | None) -> Any:
    """The cost model's technology parameters, or None where cramc has no cost model."""
    try:
        from cramc.cost.params import Tech
    except ImportError:
        if path:
            raise UserError("--tech: this cramc has no cost model") from None
        return None
    return Tech.load(path)


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


# ---------------------------------------------------------------- running
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
    b = _Builder(o, calibration, log)
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
    plan = [(p, prot) for p in o.rates for prot in o.protections]
    variants = {(p, prot): b.variant(prot, p) for p, prot in plan}
    bar = _progress(len(plan) * o.seeds * n, progress)
    rows = []
    try:
        from cramc.distributed import run_tasks

        tasks = [
            (variants[(p, prot)], o, fault_model(p, o.error_model), inputs, labels, seed, b.tech, data_name)
            for p, prot in plan
            for seed in range(o.seeds)
        ]
        if o.workers or o.scheduler:
            done = run_tasks(_run_one, tasks, o.workers, o.scheduler, on_done=lambda i, r: bar.update(n))
        else:
            done = [_run_one(*t, bar=bar) for t in tasks]
        for i, (p, prot) in enumerate(plan):
            mine = done[i * o.seeds : (i + 1) * o.seeds]
            rows.append(
                _row(o, p, prot, b.specs[(prot, p)], variants[(p, prot)], [k for k, _ in mine], [c for _, c in mine], n)
            )
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
        "tech": None if b.tech is None else b.tech.name,
        "gate_errors": list(o.rates),
        "protections": list(o.protections),
        "seeds": list(range(o.seeds)),
        "samples": n,
        "ci": "95% Student-t over per-seed accuracies (ci_low/ci_high); "
        "95% Wilson over pooled seed x sample trials (wilson_low/wilson_high)",
    }
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
    bar: Any = None,
) -> tuple[int, dict[str, float]]:
    """One (variant, seed) point, in-process or on a Dask worker (there without a progress bar)."""
    if bar is None:
        bar = _NoBar()
    if o.mode == "gate":
        from cramc.sim.interp import run
        from cramc.sim.layout import program_inputs

        feed = program_inputs(v.linked, inputs, data_name)
        res = run(v.linked, feed, fm, seed=seed, max_memory=o.max_memory, progress=bar.update, backend=o.backend)
        first = v.linked.outputs[0].name
        return _correct(res.outputs[first], labels), _counts(res.counts, res.samples, fm, v, b_tech, res.init)
    from cramc.ir.graph import sanitize
    from cramc.ir.noisy import all_rates, noisy_evaluate

    g = v.graph
    by_name = {sanitize(k): x for k, x in inputs.items()}
    missing = [i.name for i in g.inputs if i.name not in by_name]
    if missing:
        raise UserError(f"--data lacks the model input(s) {', '.join(missing)}")
    feed = {i.name: by_name[i.name].reshape(-1, *i.shape) for i in g.inputs}
    out = noisy_evaluate(g, feed, all_rates(g, fm), np.random.default_rng(seed))
    bar.update(labels.shape[0])
    c = dict(v.counts)
    # expected values: the rows recomputed depend on the faults, which this mode does not draw per row
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


# ---------------------------------------------------------------- output
def write_results(path: str, res: SweepResult) -> None:
    """CSV (one row per rate and protection) or JSON ({config, results}), chosen by the extension."""
    ext = Path(path).suffix.lower()
    if ext == ".json":
        write_json(path, {"config": res.config, "results": [_json_safe(r) for r in res.rows]})
    elif ext == ".csv":
        cols: list[str] = []
        for r in res.rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in res.rows:
            w.writerow({k: _csv_cell(r.get(k)) for k in cols})
        atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue(), encoding="utf-8"))
    else:
        raise UserError(f"-o {path}: the results file must end in .csv or .json")


def _csv_cell(v: Any) -> Any:
    if isinstance(v, list):
        return " ".join(repr(x) for x in v)
    if isinstance(v, float) and math.isnan(v):
        return ""
    return repr(v) if isinstance(v, float) else v


def _json_safe(r: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}


def plot(path: str, res: SweepResult, title: str | None = None) -> None:
    """Accuracy against gate error rate (log x), one line per protection with its 95% band."""
    ext = Path(path).suffix.lower()
    if ext not in (".png", ".pdf", ".svg"):
        raise UserError(f"--plot {path}: expected a .png (or .pdf, .svg) file")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for prot in dict.fromkeys(r["protection"] for r in res.rows):
        rows = sorted((r for r in res.rows if r["protection"] == prot), key=lambda r: r["gate_error"])
        pos = [r for r in rows if r["gate_error"] > 0]
        if not pos:
            continue
        x = np.array([r["gate_error"] for r in pos])
        y = np.array([r["acc_mean"] for r in pos])
        lo, hi = np.array([_band(r) for r in pos]).T
        label = prot
        if prot in ("ecc", "both"):
            label += f" (--ecc {res.config['ecc']})" if len(res.config["ecc"]) <= 24 else " (--ecc ...)"
        (line,) = ax.plot(x, y, marker="o", label=label)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        yerr = np.maximum(0.0, np.stack([y - lo, hi - y]))
        ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=line.get_color(), capsize=3, linewidth=1)
        for r in rows:
            if r["gate_error"] == 0:
                ax.axhline(r["acc_mean"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("gate error rate (per gate output bit)")
    ax.set_ylabel("top-1 accuracy")
    n = res.config.get("samples")
    seeds = len(res.config.get("seeds", []))
    band = "95% t-interval over seeds" if seeds > 1 else "95% Wilson interval"
    mode = _MODE_TITLE[res.config["mode"]]
    ax.set_title(
        title or f"{Path(res.config['model']).name}: {n} samples x {seeds} seeds, {mode}\nbands: {band}", fontsize=9
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="protection")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=ext[1:], dpi=120))


_MODE_TITLE = {"gate": "gate-level simulation", "statistical": "statistical fault model"}


def _band(r: dict[str, Any]) -> tuple[float, float]:
    if r["seeds"] > 1 and not math.isnan(r["ci_low"]):
        return max(0.0, r["ci_low"]), min(1.0, r["ci_high"])
    return r["wilson_low"], r["wilson_high"]


def format_table(res: SweepResult) -> str:
    head = (
        f"{'gate error':>10}  {'protection':<10} {'accuracy':>8}  {'95% CI':<15} {'gate evals':>11} "
        f"{'recomputes':>10}  ecc"
    )
    lines = [head, "-" * len(head)]
    for r in res.rows:
        ci = "" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        spec = r["ecc"] if len(r["ecc"]) < 60 else r["ecc"][:57] + "..."
        lines.append(
            f"{r['gate_error']:>10g}  {r['protection']:<10} {r['acc_mean']:>8.4f}  {ci:<15} "
            f"{r.get('gate_evals', math.nan):>11.4g} {r.get('recomputes', math.nan):>10.4g}  {spec}"
        )
    return "\n".join(lines)


def main_sweep(
    o: SweepOptions,
    data: str,
    labels_path: str,
    calibration: str | None,
    output: str | None,
    plot_path: str | None,
    log: TextIO | None = None,
    progress: Callable[[], bool] | None = None,
) -> SweepResult:
    """The `cramc sweep` command: load the files, sweep, print a table, write the results and the plot."""
    log = log or sys.stderr  # looked up per call: tests and callers may replace sys.stderr
    from cramc.datacheck import check_values
    from cramc.fileio import load_npy, load_npz

    for path, what in ((output, "-o"), (plot_path, "--plot")):
        if path and not Path(path).parent.resolve().is_dir():
            raise UserError(f"{what} {path}: directory {Path(path).parent} does not exist")
    if output and Path(output).suffix.lower() not in (".csv", ".json"):
        raise UserError(f"-o {output}: the results file must end in .csv or .json")
    if plot_path and Path(plot_path).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"--plot {plot_path}: expected a .png (or .pdf, .svg) file")
    inputs = load_npz(data)
    check_values(inputs, data)
    labels = load_npy(labels_path)
    calib = load_npz(calibration) if calibration else None
    if calib is not None:
        check_values(calib, calibration)  # type: ignore[arg-type]
    show = progress() if progress else False
    res = run_sweep(o, inputs, labels, calib, log=log, progress=show, data_name=data, labels_name=labels_path)
    if output:
        write_results(output, res)
    if plot_path:
        plot(plot_path, res)
    return res
