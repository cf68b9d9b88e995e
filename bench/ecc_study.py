"""The error-correction study under device-derived faults: docs/error-correction.md, "Under the device model".

Regenerates the tables and the figure of that section (docs/data/ecc_device_*.csv, docs/img/ecc_device_*.png):

- ``presets``: the shipped device presets (early, near_term, projected: input-dependent ``by_ones`` gate rates
  derived from their [device] section) against their output-conditioned ``*_flat`` versions, every scheme;
- ``chips``: resident weights (written once per chip, with the preset's write faults): the spread of accuracy
  across chip instances apart from the spread across inferences (cramc.sweep.stats.chip_spread);
- ``defects``: static stuck-at cells (the error model's [defects]) at three densities, every scheme and its
  operand-replica form (cramc.ir.ecc), on several chips;
- ``weak``: weak cells ([defects] weak at one density, gates whose output is a weak cell failing at
  weak_factor times their rate) at two factors, every scheme and replica form, on several chips;
- ``auto``: `--ecc auto` tuned with the defect-aware statistical model (the error model with its [defects])
  against auto tuned without the defects and the hand schemes of ``defects`` (same chips and seed).

Every point is `cramc run PROG --error-model MODEL --seed s --chip-seed c` of the program compiled with
`cramc compile --ecc SCHEME` (the same simulator calls, in-process): accuracies are argmax against the labels.

    python bench/ecc_study.py [clean|presets|chips|defects|weak|auto|plot|docs|all] [--quick] [--models=a,b]
        [--presets=p,q] [--stuck=d,e] [--weak-factors=f,g]

``plot`` draws the figures from the CSVs, ``docs`` writes the tables into docs/error-correction.md between its
GENERATED markers. Each CSV keeps the rows of the points not run this time (other models, presets, densities,
factors), so points can be run apart (``--models=mnist_lenet5``, ``presets --presets=projected``, ``defects
--stuck=3e-3``). Runs on a few seeds and chips and a subset of the samples (set at the top) to stay within a few
minutes a section on two shared cores; intervals are stated with every figure.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cramc.compiler import Options, compile_model
from cramc.errmodel import Defects, FaultModel
from cramc.errmodel.model import load_preset
from cramc.isa.linked import Linked
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.interp import run
from cramc.sim.layout import program_inputs
from cramc.sweep.stats import chip_spread, t_interval, wilson

REPO = Path(__file__).resolve().parent.parent
M = REPO / "models"
DATA = REPO / "docs" / "data"
IMG = REPO / "docs" / "img"

#: model -> (onnx, test inputs, labels, calibration, samples used: the first n of the test split)
MODELS = {
    "digits_cnn": ("digits_cnn.onnx", "digits_test_x_img.npz", "digits_test_labels.npy", "digits_calib_img.npz", 150),
    "digits_mlp": ("digits_mlp.onnx", "digits_test_x_flat.npz", "digits_test_labels.npy", "digits_calib_flat.npz", 200),
    "mnist_lenet5": ("mnist_lenet5.onnx", "mnist_test_x_img.npz", "mnist_test_labels.npy", "mnist_calib_img.npz", 100),
}
BASE = ("none", "dup", "vote", "tmr")
REPLICAS = ("dup_r2", "dup_r3", "vote_r3", "tmr_r3")
PRESETS = ("early", "near_term", "projected")
#: presets: seeds 0..n-1, each on its own chip (chip seed = seed); the LeNet-5 (10-60 s a run) on two
SEEDS = {"digits_cnn": 3, "digits_mlp": 3, "mnist_lenet5": 2}
#: chips: chips 0..n-1, each with inference seeds 0 .. CHIP_SEEDS-1; the LeNet-5 on 3 (100 images under early:
#: 8.5 s a run unprotected, 18 s dup or dup_r3, 1.7 min tmr, at 89c1c76 with the cores shared)
CHIPS, CHIP_SEEDS = {"digits_mlp": 4, "digits_cnn": 4, "mnist_lenet5": 3}, 2
#: defects: chips 0..n-1, inference seed 0; the LeNet-5 on 3 (100 images, stuck 1e-2: 5 s a run
#: unprotected, 9-14 s dup_r3 / dup, 42 s tmr)
DEFECT_CHIPS = {"digits_mlp": 4, "digits_cnn": 6, "mnist_lenet5": 3}
WEAK_CHIPS = {"digits_mlp": 4, "digits_cnn": 6}  # weak cells: chips 0..n-1, inference seed 0
DENSITIES = (1e-3, 3e-3, 1e-2)  # stuck cells per cell, half stuck at 0 and half at 1
#: weak cells per cell, and the factors on a gate's rate when its output is a weak cell (projected gates:
#: 4.5e-5 x 1e3 = 4.5e-2, x 1e4 capped at 0.5: a weak cell then sets about half the bits written into it)
WEAK, WEAK_FACTORS = 1e-2, (1e3, 1e4)
#: auto: the model, stuck densities and --ecc-budget values; "blind" is auto tuned for the gates alone.  One
#: defect-aware compile of the digits MLP scores every (layer, significance, scheme) with defects drawn: about
#: 2-4 CPU minutes, so one budget
AUTO_MODELS, AUTO_DENSITIES, AUTO_BUDGETS, BLIND_BUDGET = ("digits_mlp",), (3e-3, 1e-2), (0.3,), 0.3
#: what each experiment runs on, to fit a few minutes a section on two shared cores: a CNN run takes 1-8 s
#: (fused product path), the LeNet-5 (at b89b500) 10 s (none) to 60 s (dup under early): the LeNet-5 runs near_term only
PRESET_MODELS = {"digits_cnn": PRESETS, "digits_mlp": PRESETS, "mnist_lenet5": PRESETS}
CHIP_PRESETS = ("early",)  # its write faults (1e-3) land in the resident weights
CHIP_SCHEMES = ("none", "dup", "vote", "dup_r3", "vote_r3")
CHIP_MODELS = {"digits_mlp": CHIP_SCHEMES, "digits_cnn": CHIP_SCHEMES, "mnist_lenet5": CHIP_SCHEMES}


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Model:
    """One model: its data and its programs (compiled once per scheme)."""

    def __init__(self, name: str, quick: bool):
        onnx, x, y, cal, n = MODELS[name]
        n = min(n, 60) if quick else n
        self.name, self.onnx, self.cal = name, str(M / onnx), _npz(M / cal)
        self.x = {k: v[:n] for k, v in _npz(M / x).items()}
        self.y = np.load(M / y)[:n]
        self.n = n
        self._progs: dict[str, tuple[Linked, dict[str, np.ndarray]]] = {}

    def prog(self, scheme: str) -> tuple[Linked, dict[str, np.ndarray]]:
        if scheme not in self._progs:
            self.compile(scheme, Options(ecc="" if scheme == "none" else scheme, n_validation=1, trace=False))
        return self._progs[scheme]

    def compile(self, name: str, opts: Options) -> str:
        """Compile with `opts` as program `name` (for `correct`); returns the compiler's log."""
        log = io.StringIO()
        text = compile_model(self.onnx, self.cal, opts, log=log)
        linked = verify(parse(text, f"{self.name}-{name}.cram"))
        self._progs[name] = (linked, program_inputs(linked, self.x, "--data"))
        return log.getvalue()

    def correct(self, scheme: str, fm: FaultModel, seed: int, chip: int) -> tuple[int, dict[str, float]]:
        linked, feed = self.prog(scheme)
        res = run(linked, feed, fm, seed=seed, chip_seed=chip)
        out = res.outputs[linked.outputs[0].name]
        ok = int((out.reshape(out.shape[0], -1).argmax(axis=1) == self.y).sum())
        per = res.samples
        c = res.counts
        extra = {
            "recomputes": c.recomputes / per,
            "faults": sum(c.faults.values()) / per,
            "defect_faults": c.faults.get("defect", 0) / per,
            "writes": (c.writes - res.init.get("writes", 0)) / per,
            "gate_evals": (c.gate_evals - res.init.get("gate_evals", 0)) / per,
        }
        return ok, extra


def _cell(v: object) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _write(path: Path, rows: list[dict[str, object]], key: tuple[str, ...] = ("model",)) -> None:
    """Write `rows` to the CSV at `path`, keeping the rows there whose `key` fields (the model, and the
    preset, density or factor of a point) no row of `rows` has: points run apart add up."""
    DATA.mkdir(parents=True, exist_ok=True)
    ran = {tuple(_cell(r[k]) for k in key) for r in rows}
    if path.exists():
        with open(path, encoding="utf-8") as f:
            kept: list[dict[str, object]] = [
                r for r in csv.DictReader(f) if tuple(_cell(r.get(k, "")) for k in key) not in ran
            ]

        def order(r: dict[str, object]) -> tuple[object, ...]:
            rest = [PRESETS.index(str(r[k])) if k == "preset" else float(str(r[k])) for k in key[1:]]
            return (list(MODELS).index(str(r["model"])), *rest)

        rows = sorted(kept + rows, key=order)  # stable: the schemes' order kept
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(v) for k, v in r.items()})
    print(f"wrote {path.relative_to(REPO)} ({len(rows)} rows)", file=sys.stderr)


def _point(m: Model, scheme: str, fm: FaultModel, runs: list[tuple[int, int]], **fields: object) -> dict[str, object]:
    """Accuracy over the (seed, chip) runs: mean, Student-t 95% interval over the runs, and the mean counts."""
    accs, extras = [], []
    t0 = time.time()
    for seed, chip in runs:
        ok, extra = m.correct(scheme, fm, seed, chip)
        accs.append(ok / m.n)
        extras.append(extra)
    mean, lo, hi = t_interval(accs)
    lo, hi = max(0.0, lo), min(1.0, hi)  # nan stays nan (one run)
    row: dict[str, object] = {"model": m.name, **fields, "scheme": scheme, "samples": m.n, "runs": len(runs)}
    wl, wh = wilson(round(sum(accs) * m.n), m.n * len(runs))  # runs x samples trials pooled
    row.update(acc_mean=mean, ci_low=lo, ci_high=hi, wilson_low=wl, wilson_high=wh)
    row["acc_runs"] = " ".join(f"{a:.4f}" for a in accs)
    for k in extras[0]:
        row[k] = float(np.mean([e[k] for e in extras]))
    print(f"{m.name:13} {str(fields):40} {scheme:8} {mean:.3f} [{lo:.3f}, {hi:.3f}]  {time.time() - t0:5.1f}s",
          file=sys.stderr)  # fmt: skip
    return row


def clean(models: list[Model]) -> None:
    """Fault-free accuracy of each model's unprotected program on the samples the study uses."""
    rows: list[dict[str, object]] = []
    for m in models:
        ok, _ = m.correct("none", FaultModel(), 0, 0)
        rows.append({"model": m.name, "samples": m.n, "acc": ok / m.n})
        print(f"{m.name:13} fault-free {ok}/{m.n}", file=sys.stderr)
    _write(DATA / "ecc_device_clean.csv", rows)


def presets(models: list[Model], only: tuple[str, ...] | None = None) -> None:
    rows = []
    for m in models:
        for p in PRESET_MODELS.get(m.name, ()):
            if only is not None and p not in only:
                continue
            for form in ("by_ones", "flat"):
                fm = load_preset(p if form == "by_ones" else f"{p}_flat")
                for s in BASE:
                    rows.append(_point(m, s, fm, [(i, i) for i in range(SEEDS[m.name])], preset=p, form=form))
    _write(DATA / "ecc_device_presets.csv", rows, ("model", "preset"))


def chips(models: list[Model]) -> None:
    rows = []
    for m in models:
        for p in CHIP_PRESETS:
            fm = load_preset(p)
            for s in CHIP_MODELS.get(m.name, ()):
                t0 = time.time()
                correct = [[m.correct(s, fm, seed, c)[0] for seed in range(CHIP_SEEDS)] for c in range(CHIPS[m.name])]
                sp = chip_spread(correct, m.n)
                row: dict[str, object] = {"model": m.name, "preset": p, "scheme": s, "samples": m.n}
                row["seeds"] = CHIP_SEEDS
                row.update({k: v for k, v in sp.items() if not isinstance(v, list)})
                # measured within-chip spread: the sd of one run's accuracy across a chip's inference seeds,
                # pooled over the chips (beside the binomial within_sd that the finite sample alone gives)
                acc = np.asarray(correct, dtype=np.float64) / m.n
                row["seed_sd"] = float(np.sqrt(acc.var(axis=1, ddof=1).mean())) if CHIP_SEEDS > 1 else float("nan")
                row["acc_chips"] = " ".join(f"{a:.4f}" for a in sp["acc_chips"])  # type: ignore[union-attr]
                row["seconds"] = time.time() - t0
                print(f"{m.name:13} {p:10} {s:8} {row}", file=sys.stderr)
                rows.append(row)
    _write(DATA / "ecc_device_chips.csv", rows, ("model", "preset"))


def defects(models: list[Model], only: tuple[float, ...] | None = None) -> None:
    rows = []
    base = load_preset("projected")  # gates near exact: what is left is the defects
    for m in models:
        if m.name not in DEFECT_CHIPS:
            continue
        for d in only or DENSITIES:
            fm = dataclasses.replace(base, defects=Defects(stuck0=d / 2, stuck1=d / 2), name=f"projected + stuck {d:g}")
            runs = [(0, c) for c in range(DEFECT_CHIPS[m.name])]
            for s in (*BASE, *REPLICAS):
                rows.append(_point(m, s, fm, runs, preset="projected", stuck=d))
    _write(DATA / "ecc_device_defects.csv", rows, ("model", "stuck"))


def weak(models: list[Model], only: tuple[float, ...] | None = None) -> None:
    """Weak cells at density WEAK, each factor: a gate whose output is a weak cell fails at factor x its rate
    (the projected gates'); host writes into it keep the write rate.  Chips and seed as for `defects`."""
    rows = []
    base = load_preset("projected")
    for m in models:
        if m.name not in WEAK_CHIPS:
            continue
        for f in only or WEAK_FACTORS:
            fm = dataclasses.replace(base, defects=Defects(weak=WEAK, weak_factor=f), name=f"projected + weak {f:g}")
            runs = [(0, c) for c in range(WEAK_CHIPS[m.name])]
            for s in (*BASE, *REPLICAS):
                rows.append(_point(m, s, fm, runs, preset="projected", weak=WEAK, weak_factor=f))
    _write(DATA / "ecc_device_weak.csv", rows, ("model", "weak", "weak_factor"))


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    for csv_name, field, label, title in (
        ("ecc_device_defects.csv", "stuck", "stuck cells {:g}",
         "Static stuck-at cells (projected gates): copies on one operand cell vs operand replicas"),
        ("ecc_device_weak.csv", "weak_factor", f"weak cells {WEAK:g}, factor {{:g}}",
         "Weak cells (projected gates x factor when a gate writes one): every scheme and replica form"),
    ):  # fmt: skip
        rows = _read(csv_name)
        if not rows:
            continue
        models = sorted({r["model"] for r in rows}, key=list(MODELS).index)
        schemes = [*BASE, *REPLICAS]
        levels = sorted({float(r[field]) for r in rows})
        width = 0.8 / len(levels)
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), sharey=True, squeeze=False)
        for ax, name in zip(axes[0], models, strict=True):
            for j, d in enumerate(levels):
                sel = {r["scheme"]: r for r in rows if r["model"] == name and float(r[field]) == d}
                xs = np.arange(len(schemes)) + (j - (len(levels) - 1) / 2) * width
                acc = np.array([float(sel[s]["acc_mean"]) if s in sel else np.nan for s in schemes])
                lo = np.array([float(sel[s]["ci_low"]) if s in sel else np.nan for s in schemes])
                hi = np.array([float(sel[s]["ci_high"]) if s in sel else np.nan for s in schemes])
                err = np.maximum(0.0, [acc - lo, hi - acc])
                ax.bar(xs, acc, width, yerr=err, capsize=2, label=label.format(d))
            ax.set_xticks(range(len(schemes)), schemes, rotation=45, ha="right")
            ax.set_title(name)
            ax.set_ylim(0, 1)
            ax.grid(axis="y", alpha=0.3)
        axes[0][0].set_ylabel("top-1 accuracy (over chips, 95% t-interval)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(levels), fontsize=8)  # below: clear of the bars
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        fig.savefig(IMG / csv_name.replace(".csv", ".png"), dpi=110)

    with open(DATA / "ecc_device_presets.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    models = sorted({r["model"] for r in rows}, key=list(MODELS).index)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        for k, (p, form) in enumerate((p, f) for p in PRESETS for f in ("flat", "by_ones")):
            sel = {r["scheme"]: r for r in rows if r["model"] == name and r["preset"] == p and r["form"] == form}
            if not sel:
                continue
            xs = np.arange(len(BASE)) + (k - 2.5) * 0.13
            acc = np.array([float(sel[s]["acc_mean"]) if s in sel else np.nan for s in BASE])
            label, hatch = (f"{p}_flat", "//") if form == "flat" else (p, None)
            ax.bar(xs, acc, 0.13, label=label, hatch=hatch, color=f"C{k // 2}", alpha=0.6 if form == "flat" else 1.0)
        ax.set_xticks(range(len(BASE)), BASE)
        ax.set_title(name)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (mean over seeds/chips)")
    full = max(axes[0], key=lambda a: len(a.get_legend_handles_labels()[1]))  # the panel with every preset
    handles, labels = full.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)  # below: clear of the bars
    fig.suptitle("Device presets: input-dependent (by_ones) vs output-conditioned (*_flat) gate errors")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(IMG / "ecc_device_presets.png", dpi=110)
    print("wrote docs/img/ecc_device_{defects,weak,presets}.png", file=sys.stderr)


def _read(name: str) -> list[dict[str, str]]:
    path = DATA / name
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _ci(r: dict[str, str], lo: str = "ci_low", hi: str = "ci_high", mean: str = "acc_mean") -> str:
    m, a, b = float(r[mean]), max(0.0, float(r[lo])), min(1.0, float(r[hi]))  # nan stays nan
    return f"{m:.3f}" if np.isnan(a) else f"{m:.3f} [{a:.3f}, {b:.3f}]"


_LABEL = {"digits_cnn": "digits CNN", "digits_mlp": "digits MLP", "mnist_lenet5": "MNIST LeNet-5"}


def _defect_tables(rows: list[dict[str, str]], keys: tuple[str, ...], head: str, ff: Callable[[str], str]) -> str:
    """The accuracy table (every scheme and replica form) and the counts table of a defects CSV, one row per
    (model, *keys) point; `ff(model)` is the model's fault-free accuracy cell."""
    schemes = [*BASE, *REPLICAS]
    lines = [
        f"| model, {head} (chips x samples) | fault-free | " + " | ".join(f"`{s}`" for s in schemes) + " |",
        "|---|---:|" + "---:|" * len(schemes),
    ]
    counts = [
        f"| model, {head} | defect faults / inference, `none` | recomputes / inference: `dup` | `dup_r2` | `dup_r3` |",
        "|---|---:|---:|---:|---:|",
    ]

    def point(r: dict[str, str]) -> tuple[str, tuple[float, ...]]:
        return r["model"], tuple(float(r[k]) for k in keys)

    for model, vals in sorted({point(r) for r in rows}, key=lambda k: (list(MODELS).index(k[0]), k[1])):
        sel = {r["scheme"]: r for r in rows if point(r) == (model, vals)}
        any_r = next(iter(sel.values()))
        name = f"{_LABEL[model]}, " + " x ".join(f"{v:g}" for v in vals)
        cells = [_ci(sel[s]) if s in sel else "not run" for s in schemes]
        lines.append(f"| {name} ({any_r['runs']} x {any_r['samples']}) | {ff(model)} | " + " | ".join(cells) + " |")
        rc = [f"{float(sel[s]['recomputes']):,.0f}" if s in sel else "-" for s in ("dup", "dup_r2", "dup_r3")]
        nf = f"{float(sel['none']['defect_faults']):,.0f}" if "none" in sel else "-"
        counts.append(f"| {name} | {nf} | " + " | ".join(rc) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(counts)


def tables() -> dict[str, str]:
    """The section's tables (markdown) from the CSVs: presets, chips, defects, weak (absent CSVs give none)."""
    out: dict[str, str] = {}
    clean_acc = {r["model"]: (float(r["acc"]), r["samples"]) for r in _read("ecc_device_clean.csv")}

    def ff(model: str) -> str:
        return f"{clean_acc[model][0]:.3f}" if model in clean_acc else "-"

    rows = _read("ecc_device_presets.csv")
    if rows:
        lines = [
            "| model (samples x seeds) | fault-free | preset | form | " + " | ".join(f"`{s}`" for s in BASE) + " |",
            "|---|---:|---|---|" + "---:|" * len(BASE),
        ]
        keys = sorted({(r["model"], r["preset"], r["form"]) for r in rows},
                      key=lambda k: (list(MODELS).index(k[0]), PRESETS.index(k[1]), k[2] != "by_ones"))  # fmt: skip
        for model, p, form in keys:
            sel = {r["scheme"]: r for r in rows if (r["model"], r["preset"], r["form"]) == (model, p, form)}
            any_r = next(iter(sel.values()))
            name = f"{_LABEL[model]} ({any_r['samples']} x {any_r['runs']})"
            pname = p if form == "by_ones" else f"{p}_flat"
            cells = [_ci(sel[s]) if s in sel else "not run" for s in BASE]
            lines.append(f"| {name} | {ff(model)} | `{pname}` | {form} | " + " | ".join(cells) + " |")
        out["presets"] = "\n".join(lines)

    rows = _read("ecc_device_chips.csv")
    if rows:
        lines = [
            "| model, preset | scheme | chips x seeds x samples | accuracy [95% t over chips] | per chip |"
            " chip sd | seed sd (one run) | chip sd if chips were alike | ratio |",
            "|---|---|---|---:|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            seeds = int(r["seeds"])
            alike = float(r["seed_sd"]) / np.sqrt(seeds)
            ratio = float(r["chip_sd"]) / alike if alike > 0 else float("nan")
            lines.append(
                f"| {_LABEL[r['model']]}, `{r['preset']}` | `{r['scheme']}` | "
                f"{r['chips']} x {seeds} x {r['samples']} | "
                f"{_ci(r, 'chip_ci_low', 'chip_ci_high')} | {r['acc_chips']} | {float(r['chip_sd']):.4f} | "
                f"{float(r['seed_sd']):.4f} | {alike:.4f} | {ratio:.2f} |"
            )
        out["chips"] = "\n".join(lines)

    rows = _read("ecc_device_defects.csv")
    if rows:
        out["defects"] = _defect_tables(rows, ("stuck",), "d", ff)
    rows = _read("ecc_device_weak.csv")
    if rows:
        out["weak"] = _defect_tables(rows, ("weak", "weak_factor"), "weak d x factor", ff)

    rows = _read("ecc_device_auto.csv")
    if rows:
        hand = [r for r in _read("ecc_device_defects.csv") if r["scheme"] in AUTO_HAND]
        lines = [
            "| model, d (chips x samples) | program | accuracy [95% t over chips] | gate evals / `none` | "
            "writes / `none` | recomputes / inference | auto's choice |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        akeys = sorted({(r["model"], float(r["stuck"])) for r in rows}, key=lambda k: (list(MODELS).index(k[0]), k[1]))
        for model, d in akeys:
            mine = [r for r in hand if r["model"] == model and float(r["stuck"]) == d]
            mine += [r for r in rows if r["model"] == model and float(r["stuck"]) == d]
            none = next((r for r in mine if r["scheme"] == "none"), None)
            for r in mine:
                g = float(r["gate_evals"]) / float(none["gate_evals"]) if none else float("nan")
                w = float(r["writes"]) / float(none["writes"]) if none else float("nan")
                prog = f"`{r['scheme']}`"
                if r["scheme"].startswith("auto"):
                    prog = f"`--ecc auto --ecc-budget {r['budget']}`, tuned for {r['tuned_for']}"
                choice = r.get("chosen", "") if r["scheme"].startswith("auto") else ""
                lines.append(
                    f"| {_LABEL[model]}, {d:g} ({r['runs']} x {r['samples']}) | {prog} | {_ci(r)} | {g:.2f} | "
                    f"{w:.2f} | {float(r['recomputes']):,.0f} | {choice} |"
                )
        out["auto"] = "\n".join(lines)
    return out


#: the hand schemes the auto table sets beside auto (rows of ecc_device_defects.csv)
AUTO_HAND = ("none", "dup", "vote", "dup_r2", "dup_r3", "vote_r3")


def docs() -> None:
    """Write the tables into docs/error-correction.md between their GENERATED markers (which must be there)."""
    path = REPO / "docs" / "error-correction.md"
    text = path.read_text(encoding="utf-8")
    for name, table in tables().items():
        begin = f"<!-- BEGIN GENERATED by bench/ecc_study.py {name} -->"
        end = f"<!-- END GENERATED by bench/ecc_study.py {name} -->"
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            raise SystemExit(f"{path.relative_to(REPO)}: no '{begin}' ... '{end}' markers for the {name} table")
        text = text[: i + len(begin)] + "\n" + table + "\n" + text[j:]
    path.write_text(text, encoding="utf-8")
    print(f"wrote the tables into {path.relative_to(REPO)}", file=sys.stderr)


def auto(models: list[Model], only: tuple[float, ...] | None = None) -> None:
    """`--ecc auto` under stuck cells: tuned with the error model's [defects] (the defect-aware statistical
    model, cramc.ir.passes.auto_ecc) at each budget, and tuned for `projected` alone (blind to the defects),
    each run at gate level on the chips of `defects` (their rows there are the hand schemes to compare)."""
    import tempfile

    from cramc.errmodel import load_error_model

    rows = []
    base = load_preset("projected")
    text = (REPO / "isa" / "error_models" / "projected.toml").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            if m.name not in AUTO_MODELS:
                continue
            for d in only or AUTO_DENSITIES:
                fm = dataclasses.replace(base, defects=Defects(stuck0=d / 2, stuck1=d / 2), name=f"projected + {d:g}")
                toml = Path(tmp) / f"projected_stuck_{d:g}.toml"
                toml.write_text(f"{text}\n[defects]\nstuck0 = {d / 2!r}\nstuck1 = {d / 2!r}\n", encoding="utf-8")
                assert load_error_model(str(toml)).defects == fm.defects
                runs = [(0, c) for c in range(DEFECT_CHIPS[m.name])]
                tuned = [(f"auto:{b:g}", b, str(toml)) for b in AUTO_BUDGETS]
                for name, b, em in [(f"auto_blind:{BLIND_BUDGET:g}", BLIND_BUDGET, "projected"), *tuned]:
                    t0 = time.time()
                    log = m.compile(
                        name, Options(ecc="auto", ecc_budget=b, error_model=em, n_validation=1, trace=False)
                    )
                    lines = [ln[len("auto-ecc:") :].strip() for ln in log.splitlines() if ln.startswith("auto-ecc:")]
                    row = _point(m, name, fm, runs, preset="projected", stuck=d, budget=b)
                    row["tuned_for"] = "projected" if em == "projected" else "projected + [defects]"
                    row["chosen"] = "; ".join(lines[1:]) or "nothing"
                    row["auto_log"] = lines[0] if lines else ""
                    row["seconds"] = time.time() - t0  # the compile and the runs
                    rows.append(row)
    _write(DATA / "ecc_device_auto.csv", rows, ("model", "stuck"))


def _opt(argv: list[str], name: str) -> list[str] | None:
    vals = [a[len(name) + 3 :].split(",") for a in argv if a.startswith(f"--{name}=")]
    return vals[-1] if vals else None


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    what = [a for a in argv if not a.startswith("--")] or ["all"]
    names = [a[len("--models=") :].split(",") for a in argv if a.startswith("--models=")]
    only_p = _opt(argv, "presets")
    only_d = _opt(argv, "stuck")
    only_f = _opt(argv, "weak-factors")
    models = [Model(n, quick) for n in (names[0] if names else ("digits_mlp", "digits_cnn"))]
    for w in what:
        if w in ("clean", "all"):
            clean(models)
        if w in ("presets", "all"):
            presets(models, None if only_p is None else tuple(only_p))
        if w in ("chips", "all"):
            chips(models)
        if w in ("defects", "all"):
            defects(models, None if only_d is None else tuple(float(d) for d in only_d))
        if w in ("weak", "all"):
            weak(models, None if only_f is None else tuple(float(f) for f in only_f))
        if w in ("auto", "all"):
            auto(models, None if only_d is None else tuple(float(d) for d in only_d))
        if w in ("plot", "all"):
            plot()
        if w in ("docs", "all"):
            docs()


if __name__ == "__main__":
    main(sys.argv[1:])
