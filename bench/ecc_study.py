"""The error-correction study under device-derived faults: docs/error-correction.md, "Under the device model".

Regenerates the tables and the figure of that section (docs/data/ecc_device_*.csv, docs/img/ecc_device_*.png):

- ``presets``: the shipped device presets (early, near_term, projected: input-dependent ``by_ones`` gate rates
  derived from their [device] section) against their output-conditioned ``*_flat`` versions, every scheme;
- ``chips``: resident weights (written once per chip, with the preset's write faults): the spread of accuracy
  across chip instances apart from the spread across inferences (cramc.sweep.stats.chip_spread);
- ``defects``: static stuck-at cells (the error model's [defects]) at two densities, every scheme and its
  operand-replica form (cramc.ir.ecc), on several chips.

Every point is `cramc run PROG --error-model MODEL --seed s --chip-seed c` of the program compiled with
`cramc compile --ecc SCHEME` (the same simulator calls, in-process): accuracies are argmax against the labels.

    python bench/ecc_study.py [clean|presets|chips|defects|plot|docs|all] [--quick] [--models=a,b]

``plot`` draws the figures from the CSVs, ``docs`` writes the tables into docs/error-correction.md between its
GENERATED markers. Each CSV keeps the rows of the models not run this time, so the models can be run apart
(``--models=mnist_lenet5``). Runs on a few seeds and chips and a subset of the samples (set at the top) to stay
within about 30 minutes on two shared cores; intervals are stated with every figure.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
import time
from pathlib import Path

import numpy as np

from cramc.compiler import Options, compile_model
from cramc.errmodel import Defects, FaultModel
from cramc.errmodel.model import load_preset
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
CHIPS, CHIP_SEEDS = 4, 2  # chips: chips 0..3, each with inference seeds 0, 1
DEFECT_CHIPS = {"digits_mlp": 4, "digits_cnn": 3}  # defects: chips 0..n-1, inference seed 0
DENSITIES = (1e-3, 1e-2)  # stuck cells per cell, half stuck at 0 and half at 1
#: what each experiment runs on, to fit about 30 minutes on two shared cores: a CNN run takes 5-25 s under
#: early (many faults to draw), the LeNet-5 10 s (none) to 60 s (dup under early), so the CNN runs the presets
#: that have faults enough to matter, defects on 3 chips and no chips experiment; the LeNet-5 near_term only
PRESET_MODELS = {"digits_cnn": ("early", "near_term"), "digits_mlp": PRESETS, "mnist_lenet5": ("near_term",)}
CHIP_PRESETS = ("early",)  # its write faults (1e-3) land in the resident weights
CHIP_MODELS = {"digits_mlp": ("none", "dup", "vote", "dup_r3", "vote_r3")}


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
        self._progs: dict[str, object] = {}

    def prog(self, scheme: str) -> object:
        if scheme not in self._progs:
            spec = "" if scheme == "none" else scheme
            text = compile_model(self.onnx, self.cal, Options(ecc=spec, n_validation=1, trace=False), log=io.StringIO())
            linked = verify(parse(text, f"{self.name}-{scheme}.cram"))
            self._progs[scheme] = (linked, program_inputs(linked, self.x, "--data"))
        return self._progs[scheme]

    def correct(self, scheme: str, fm: FaultModel, seed: int, chip: int) -> tuple[int, dict[str, float]]:
        linked, feed = self.prog(scheme)  # type: ignore[misc]
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


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    """Write `rows` to the CSV at `path`, keeping the rows there of the models `rows` does not have."""
    DATA.mkdir(parents=True, exist_ok=True)
    ran = {r["model"] for r in rows}
    if path.exists():
        with open(path, encoding="utf-8") as f:
            kept: list[dict[str, object]] = [r for r in csv.DictReader(f) if r["model"] not in ran]
        rows = sorted(kept + rows, key=lambda r: list(MODELS).index(str(r["model"])))  # stable: order kept
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
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


def presets(models: list[Model]) -> None:
    rows = []
    for m in models:
        for p in PRESET_MODELS.get(m.name, ()):
            for form in ("by_ones", "flat"):
                fm = load_preset(p if form == "by_ones" else f"{p}_flat")
                for s in BASE:
                    rows.append(_point(m, s, fm, [(i, i) for i in range(SEEDS[m.name])], preset=p, form=form))
    _write(DATA / "ecc_device_presets.csv", rows)


def chips(models: list[Model]) -> None:
    rows = []
    for m in models:
        for p in CHIP_PRESETS:
            fm = load_preset(p)
            for s in CHIP_MODELS.get(m.name, ()):
                t0 = time.time()
                correct = [[m.correct(s, fm, seed, c)[0] for seed in range(CHIP_SEEDS)] for c in range(CHIPS)]
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
    _write(DATA / "ecc_device_chips.csv", rows)


def defects(models: list[Model]) -> None:
    rows = []
    base = load_preset("projected")  # gates near exact: what is left is the defects
    for m in models:
        if m.name not in DEFECT_CHIPS:
            continue
        for d in DENSITIES:
            fm = dataclasses.replace(base, defects=Defects(stuck0=d / 2, stuck1=d / 2), name=f"projected + stuck {d:g}")
            runs = [(0, c) for c in range(DEFECT_CHIPS[m.name])]
            for s in (*BASE, *REPLICAS):
                rows.append(_point(m, s, fm, runs, preset="projected", stuck=d))
    _write(DATA / "ecc_device_defects.csv", rows)


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(DATA / "ecc_device_defects.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    models = sorted({r["model"] for r in rows}, key=list(MODELS).index)
    schemes = [*BASE, *REPLICAS]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        for j, d in enumerate(sorted({float(r["stuck"]) for r in rows})):
            sel = {r["scheme"]: r for r in rows if r["model"] == name and float(r["stuck"]) == d}
            xs = np.arange(len(schemes)) + (j - 0.5) * 0.38
            acc = np.array([float(sel[s]["acc_mean"]) if s in sel else np.nan for s in schemes])
            lo = np.array([float(sel[s]["ci_low"]) if s in sel else np.nan for s in schemes])
            hi = np.array([float(sel[s]["ci_high"]) if s in sel else np.nan for s in schemes])
            ax.bar(xs, acc, 0.38, yerr=[acc - lo, hi - acc], capsize=2, label=f"stuck cells {d:g}")
        ax.set_xticks(range(len(schemes)), schemes, rotation=45, ha="right")
        ax.set_title(name)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (over chips, 95% t-interval)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle("Static stuck-at cells (projected gates): copies on one operand cell vs operand replicas")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "ecc_device_defects.png", dpi=110)

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
    full.legend(loc="lower right", fontsize=7)
    fig.suptitle("Device presets: input-dependent (by_ones) vs output-conditioned (*_flat) gate errors")
    fig.tight_layout()
    fig.savefig(IMG / "ecc_device_presets.png", dpi=110)
    print("wrote docs/img/ecc_device_defects.png, docs/img/ecc_device_presets.png", file=sys.stderr)


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


def tables() -> dict[str, str]:
    """The section's tables (markdown) from the CSVs: presets, chips, defects (absent CSVs give no table)."""
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
        schemes = [*BASE, *REPLICAS]
        lines = [
            "| model, d (chips x samples) | fault-free | " + " | ".join(f"`{s}`" for s in schemes) + " |",
            "|---|---:|" + "---:|" * len(schemes),
        ]
        counts = [
            "| model, d | defect faults / inference, `none` | recomputes / inference: `dup` | `dup_r2` | `dup_r3` |",
            "|---|---:|---:|---:|---:|",
        ]
        keys = sorted({(r["model"], float(r["stuck"])) for r in rows}, key=lambda k: (list(MODELS).index(k[0]), k[1]))
        for model, d in keys:
            sel = {r["scheme"]: r for r in rows if r["model"] == model and float(r["stuck"]) == d}
            any_r = next(iter(sel.values()))
            cells = [_ci(sel[s]) if s in sel else "not run" for s in schemes]
            lines.append(f"| {_LABEL[model]}, {d:g} ({any_r['runs']} x {any_r['samples']}) | {ff(model)} | "
                         + " | ".join(cells) + " |")  # fmt: skip
            rc = [f"{float(sel[s]['recomputes']):,.0f}" if s in sel else "-" for s in ("dup", "dup_r2", "dup_r3")]
            nf = f"{float(sel['none']['defect_faults']):,.0f}" if "none" in sel else "-"
            counts.append(f"| {_LABEL[model]}, {d:g} | {nf} | " + " | ".join(rc) + " |")
        out["defects"] = "\n".join(lines) + "\n\n" + "\n".join(counts)
    return out


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


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    what = [a for a in argv if not a.startswith("--")] or ["all"]
    names = [a[len("--models=") :].split(",") for a in argv if a.startswith("--models=")]
    models = [Model(n, quick) for n in (names[0] if names else ("digits_mlp", "digits_cnn"))]
    for w in what:
        if w in ("clean", "all"):
            clean(models)
        if w in ("presets", "all"):
            presets(models)
        if w in ("chips", "all"):
            chips(models)
        if w in ("defects", "all"):
            defects(models)
        if w in ("plot", "all"):
            plot()
        if w in ("docs", "all"):
            docs()


if __name__ == "__main__":
    main(sys.argv[1:])
