"""`cramc explore`: the design space of one model in one command.

A grid of design points, the product of the axes

    arrays, rows, cols     chip size (compile --arrays/--rows/--cols)
    wbits, xbits           weight and activation precision (compile --weight-bits/--act-bits)
    reduce                 tree (CRAM-ER hybrid), cram (log-depth baseline), cram-serial (serial baseline)
    ecc                    none, auto[:BUDGET] (auto-ecc at that budget, default 0.2), or an explicit spec
    error_model            none or an error model (preset or TOML file)
    gate_error             none or a gate error rate (as `cramc run --gate-error`)
    tech                   default or a technology file (shipped name such as cmos7nm, or TOML)

Each point is compiled exactly as `cramc compile` compiles it (cramc.compiler,
with `--ecc auto` tuned for the point's fault model), costed as `cramc stats`
costs it (cramc.cost.model.static_estimate, the technology merged with the
error model's [device] section as `cramc run`/`cramc stats` do), and run on the
labelled data seed by seed as `cramc sweep` runs a point (its runner,
cramc.sweep.running: the gate-level simulator as `cramc run --seed S`, or the
statistical fault model), in-process or on Dask.  A point that cannot be built
(the options refuse it, e.g. auto-ecc with a CRAM-only reduction, or the model
does not fit the chip) is a row with the reason, not an error.

The Pareto fronts (cramc.sweep.pareto) are over the compiled points: accuracy
maximised against energy, latency, area and EDP each minimised.
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from cramc.errmodel import FaultModel
from cramc.errors import UserError
from cramc.sweep.options import SweepOptions
from cramc.sweep.running import _check_data, _run_one, _static_counts
from cramc.sweep.stats import t_interval, wilson
from cramc.sweep.variants import Variant, _load_tech, spec_from_plans

if TYPE_CHECKING:
    from cramc.frontend.pipeline import Frontend

#: The axes of the grid, in CSV column order.
AXES = ("arrays", "rows", "cols", "wbits", "xbits", "reduce", "ecc", "error_model", "gate_error", "tech")
REDUCTIONS = ("tree", "cram", "cram-serial")
WEIGHT_BITS = (4, 8)
ACT_BITS = (8, 16)
MAX_POINTS = 10000


@dataclass(frozen=True)
class ExploreOptions:
    """The axes (each a tuple of values) and how to run the points."""

    model: str
    arrays: tuple[int, ...] = (1024,)
    rows: tuple[int, ...] = (256,)
    cols: tuple[int, ...] = (256,)
    wbits: tuple[int, ...] = (8,)
    xbits: tuple[int, ...] = (8,)
    reduce: tuple[str, ...] = ("tree",)
    ecc: tuple[str, ...] = ("none",)
    error_model: tuple[str, ...] = ("none",)
    gate_error: tuple[float | None, ...] = (None,)
    tech: tuple[str, ...] = ("default",)
    accs: int = 64
    seeds: int = 3
    samples: int | None = None
    mode: str = "gate"  # or "statistical"
    workers: int = 0
    scheduler: str | None = None
    max_memory: int | None = None
    backend: str = "numpy"


@dataclass(frozen=True)
class Point:
    arrays: int
    rows: int
    cols: int
    wbits: int
    xbits: int
    reduce: str
    ecc: str
    error_model: str
    gate_error: float | None
    tech: str

    def axes(self) -> dict[str, Any]:
        return {a: getattr(self, a) for a in AXES}


@dataclass
class ExploreResult:
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ parsing the axes


def _items(flag: str, text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise UserError(f"{flag} '{text}': give a comma-separated list with no empty item (e.g. 128,256)")
    return list(dict.fromkeys(parts))


def parse_ints(flag: str, text: str, allowed: tuple[int, ...] | None = None) -> tuple[int, ...]:
    out = []
    for p in _items(flag, text):
        try:
            v = int(p)
        except ValueError:
            raise UserError(f"{flag}: '{p}' is not an integer (give a comma-separated list, e.g. 128,256)") from None
        if allowed is not None and v not in allowed:
            raise UserError(f"{flag}: {v} is not one of {', '.join(map(str, allowed))}")
        if v < 1:
            raise UserError(f"{flag}: {v} must be at least 1")
        out.append(v)
    return tuple(out)


def parse_choices(flag: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    out = _items(flag, text)
    for p in out:
        if p not in allowed:
            raise UserError(f"{flag}: unknown value '{p}' (choose from {', '.join(allowed)})")
    return tuple(out)


def parse_gate_errors(text: str) -> tuple[float | None, ...]:
    out: list[float | None] = []
    for p in _items("--gate-error", text):
        if p == "none":
            out.append(None)
            continue
        try:
            v = float(p)
        except ValueError:
            raise UserError(f"--gate-error: '{p}' is not a number or none (e.g. 1e-4,1e-3)") from None
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise UserError(f"--gate-error: a probability must be between 0 and 1, got {p}")
        out.append(v)
    return tuple(out)


def ecc_budget(label: str) -> float | None:
    """The auto-ecc budget of an --ecc axis value (auto: 0.2, auto:B: B), or None for none and explicit specs."""
    if label == "auto":
        return 0.2
    if label.startswith("auto:"):
        return float(label[5:])
    return None


def parse_ecc(text: str) -> tuple[str, ...]:
    """none, auto, auto:BUDGET or an explicit spec (cramc.ir.passes.insert_ecc; rules joined by ';')."""
    from cramc.ir.passes.insert_ecc import parse_spec

    out = _items("--ecc", text)
    for p in out:
        if p == "none":
            continue
        if p == "auto" or p.startswith("auto:"):
            try:
                b = ecc_budget(p)
            except ValueError:
                raise UserError(f"--ecc: '{p}': the budget after auto: must be a number (e.g. auto:0.2)") from None
            if b is None or not (b > 0 and math.isfinite(b)):
                raise UserError(f"--ecc: '{p}': the auto-ecc budget must be a positive fraction (e.g. auto:0.2)")
            continue
        parse_spec(p)
    return tuple(out)


def parse_error_models(text: str) -> tuple[str, ...]:
    from cramc.errmodel import load_error_model

    out = _items("--error-model", text)
    for p in out:
        if p != "none":
            load_error_model(p)  # an unknown preset or a bad file: its own error line
    return tuple(out)


def parse_techs(text: str, error_models: tuple[str, ...] = ("none",)) -> tuple[str, ...]:
    out = _items("--tech", text)
    for t in out:
        for em in error_models:
            _tech(t, em)
    return tuple(out)


def _tech(name: str, error_model: str) -> Any:
    return _load_tech(None if name == "default" else name, None if error_model == "none" else error_model)


def fault_model(p: Point) -> FaultModel:
    """The point's fault model, as `cramc run [--error-model X] [--gate-error P]` makes it."""
    from cramc.errmodel import load_error_model

    fm = load_error_model(p.error_model) if p.error_model != "none" else FaultModel()
    if p.gate_error is not None:
        fm = fm.with_gate_error(p.gate_error) if p.error_model != "none" else FaultModel.uniform(p.gate_error)
    return fm


def points(o: ExploreOptions) -> list[Point]:
    grid = [Point(*vals) for vals in itertools.product(*(getattr(o, a) for a in AXES))]
    if len(grid) > MAX_POINTS:
        raise UserError(f"the grid has {len(grid)} points; at most {MAX_POINTS} (give fewer axis values)")
    return grid


def check_explore(o: ExploreOptions) -> None:
    """Errors of the options as a whole, before anything is compiled."""
    from pathlib import Path

    if o.mode not in ("gate", "statistical"):
        raise UserError(f"mode {o.mode}: expected gate or statistical")
    if o.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if o.samples is not None and o.samples < 1:
        raise UserError("--samples must be at least 1")
    if o.workers < 0:
        raise UserError("--workers must be 0 (in-process) or more")
    if o.accs < 1:
        raise UserError("--accs must be at least 1")
    if not Path(o.model).is_file():
        raise UserError(f"{o.model}: no such file")
    autos = [e for e in o.ecc if ecc_budget(e) is not None]
    if autos and o.error_model == ("none",) and o.gate_error == (None,):
        raise UserError(
            f"--ecc {autos[0]} tunes the protection for a fault rate: give --gate-error P or --error-model X"
        )
    from cramc.sim.backend import get_backend

    get_backend(o.backend)


# ------------------------------------------------------------------ compiling and running


class _Builder:
    """Frontends per (wbits, xbits) and programs per compile key, each made once."""

    def __init__(self, o: ExploreOptions, calibration: dict[str, np.ndarray] | None, log: TextIO):
        self.o = o
        self.calibration = calibration
        self.log = log
        self.frontends: dict[tuple[int, int], Frontend] = {}
        self.programs: dict[tuple[Any, ...], tuple[Variant, str] | str] = {}

    def frontend(self, wbits: int, xbits: int) -> Frontend:
        from cramc.frontend.pipeline import run_frontend

        key = (wbits, xbits)
        if key not in self.frontends:
            self.frontends[key] = run_frontend(self.o.model, self.calibration, wbits, xbits, self.log)
        return self.frontends[key]

    def options(self, p: Point) -> Any:
        from cramc.compiler import Options

        budget = ecc_budget(p.ecc)
        return Options(
            arrays=p.arrays,
            rows=p.rows,
            cols=p.cols,
            accs=self.o.accs,
            weight_bits=p.wbits,
            act_bits=p.xbits,
            n_validation=1,
            trace=False,
            reduce=p.reduce,
            ecc="auto" if budget is not None else ("" if p.ecc == "none" else p.ecc),
            ecc_budget=budget if budget is not None else 0.2,
            gate_error=p.gate_error if budget is not None else None,
            error_model=(None if p.error_model == "none" else p.error_model) if budget is not None else None,
        )

    def program(self, p: Point) -> tuple[Variant, str] | str:
        """(the compiled variant, its explicit ecc spec), or the reason it cannot be compiled."""
        auto = ecc_budget(p.ecc) is not None
        key = (p.wbits, p.xbits, p.arrays, p.rows, p.cols, p.reduce, p.ecc) + (
            (p.error_model, p.gate_error) if auto else ()
        )
        if key not in self.programs:
            try:
                self.programs[key] = self._compile(p)
            except UserError as e:
                self.programs[key] = e.message
        return self.programs[key]

    def _compile(self, p: Point) -> tuple[Variant, str]:
        from cramc.compiler import build_program, check_options, lower
        from cramc.isa.parser import parse
        from cramc.isa.printer import print_program
        from cramc.isa.verifier import verify

        fe = self.frontend(p.wbits, p.xbits)
        opts = self.options(p)
        self.log.write(f"explore: compiling {_label(p)}\n")
        check_options(opts)
        g = lower(fe, opts, self.log)  # as cramc.compiler.compile_frontend: the IR, for the ecc spec it chose
        spec = spec_from_plans(g)
        text = print_program(build_program(self.o.model, fe, g, opts, self.log))
        v = Variant(self.o.model, spec, verify(parse(text, f"<{_label(p)}>")))
        if self.o.mode == "statistical":
            v.graph = lower(fe, replace(opts, ecc=spec), self.log, stop_before="schedule")
        return v, spec


def _label(p: Point) -> str:
    return " ".join(f"{a}={v}" for a, v in p.axes().items())


def _cost(v: Variant, p: Point) -> dict[str, float]:
    """`cramc stats` of the point's program under its technology: latency, energy, EDP per inference, area."""
    from cramc.cost.model import static_estimate

    est = static_estimate(v.linked, _tech(p.tech, p.error_model))
    return {
        "latency_s": est.latency_s,
        "energy_j": est.energy_j,
        "edp_js": est.edp_js,
        "area_mm2": est.area_mm2["total"],
        "setup_energy_j": est.setup.energy_j,
    }


def run_explore(
    o: ExploreOptions,
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    calibration: dict[str, np.ndarray] | None = None,
    log: TextIO | None = None,
    data_name: str = "--data",
    labels_name: str = "--labels",
) -> ExploreResult:
    """Compile, cost and run every point of the grid; the rows, Pareto columns included."""
    from cramc.distributed import run_tasks
    from cramc.sim.report import check_labels
    from cramc.sweep.pareto import mark_fronts

    log = log or sys.stderr
    check_explore(o)
    grid = points(o)
    n = _check_data(inputs)
    b = _Builder(o, calibration, log)
    fe = b.frontend(o.wbits[0], o.xbits[0])
    out0 = fe.graph.outputs[0]
    labels = check_labels(labels, n, int(np.prod(out0.shape)), labels_name, fe.qmodel.graph.output[0].name)
    if o.samples is not None:
        n = min(n, o.samples)
        inputs = {k: x[:n] for k, x in inputs.items()}
    labels = labels[:n]
    sweep_o = SweepOptions(
        model=o.model, rates=(0.0,), mode=o.mode, max_memory=o.max_memory, backend=o.backend, seeds=o.seeds
    )
    built = [(p, b.program(p)) for p in grid]
    if o.mode == "statistical":
        for v in {id(x[0]): x[0] for _, x in built if not isinstance(x, str)}.values():
            _static_counts(v, o.max_memory, None)
    tasks, owners = [], []
    for i, (p, prog) in enumerate(built):
        if isinstance(prog, str):
            continue
        fm = fault_model(p)
        for seed in range(o.seeds):
            tasks.append((prog[0], sweep_o, fm, inputs, labels, seed, None, data_name, 0))
            owners.append(i)
    done = run_tasks(_run_one, tasks, o.workers, o.scheduler)
    results: dict[int, list[tuple[int, dict[str, float]]]] = {}
    for i, r in zip(owners, done, strict=True):
        results.setdefault(i, []).append(r)
    rows = [_row(p, prog, results.get(i, []), n, o) for i, (p, prog) in enumerate(built)]
    mark_fronts(rows)
    config = {
        "model": o.model,
        "mode": o.mode,
        "seeds": list(range(o.seeds)),
        "samples": n,
        "accs": o.accs,
        "axes": {a: list(getattr(o, a)) for a in AXES},
        "points": len(grid),
        "compiled": sum(1 for _, x in built if not isinstance(x, str)),
        "cost": "cramc stats (static estimate of the program under the point's technology, with the error "
        "model's [device] gate figures where it has them)",
        "ci": "95% Student-t over per-seed accuracies (ci_low/ci_high); 95% Wilson over pooled seed x sample "
        "trials (wilson_low/wilson_high)",
        "pareto": "non-dominated points: accuracy (acc_mean) maximised, the cost minimised; ties kept",
    }
    return ExploreResult(config, rows)


def _row(
    p: Point, prog: tuple[Variant, str] | str, runs: list[tuple[int, dict[str, float]]], n: int, o: ExploreOptions
) -> dict[str, Any]:
    row: dict[str, Any] = {**p.axes(), "gate_error": "none" if p.gate_error is None else p.gate_error}
    if isinstance(prog, str):
        return {**row, "status": "not compiled", "reason": prog}
    v, spec = prog
    correct = [k for k, _ in runs]
    mean, lo, hi = (x / n for x in t_interval(correct))
    if not math.isnan(lo):
        lo, hi = max(0.0, lo), min(1.0, hi)
    wl, wh = wilson(sum(correct), n * len(correct))
    m = v.linked.machine
    row.update(
        status="ok",
        reason="",
        ecc_spec=spec,
        mode=o.mode,
        seeds=len(correct),
        samples=n,
        acc_mean=mean,
        ci_low=lo,
        ci_high=hi,
        wilson_low=wl,
        wilson_high=wh,
        acc_seeds=[k / n for k in correct],
        **_cost(v, p),
        chip=f"{m.arrays}x{m.rows}x{m.cols}",
    )
    for f in ("gate_evals", "writes", "reads", "tree_sensed_bits", "recomputes"):
        vals = [c[f] for _, c in runs if f in c]
        if vals:
            row[f] = float(np.mean(vals))
    _add_recompute_energy(row, p)
    return row


def _add_recompute_energy(row: dict[str, Any], p: Point) -> None:
    """Charge the rows duplicate-and-compare recomputed in CMOS, as `cramc run --report`'s cost does.

    The static estimate is fault-free, so it has none; the runs counted them (gate level: rows whose copies
    differed; statistical: their expected number). ``energy_j`` and ``edp_js`` include them, so the fronts
    see what protection costs under the point's faults; ``energy_static_j`` is `cramc stats`'s figure.
    """
    row["energy_static_j"] = row["energy_j"]
    from cramc.cost.model import recompute_energy

    row["recompute_energy_j"] = recompute_energy(row.get("recomputes", 0.0), _tech(p.tech, p.error_model))
    row["energy_j"] += row["recompute_energy_j"]
    row["edp_js"] = row["energy_j"] * row["latency_s"]


__all__ = [
    "AXES",
    "ExploreOptions",
    "ExploreResult",
    "Point",
    "check_explore",
    "ecc_budget",
    "fault_model",
    "parse_choices",
    "parse_ecc",
    "parse_error_models",
    "parse_gate_errors",
    "parse_ints",
    "parse_techs",
    "points",
    "run_explore",
]
