"""An exploration's outputs (`cramc explore`): CSV, JSON, accuracy-vs-cost plots with the Pareto front marked,
the table, and the command."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from cramc.errors import UserError
from cramc.fileio import atomic_write
from cramc.sweep.pareto import COSTS

#: The plots `cramc explore` writes: accuracy against these costs.
PLOTS = ("energy_j", "latency_s", "area_mm2")
PLOT_FILES = {"energy_j": "accuracy_vs_energy.png", "latency_s": "accuracy_vs_latency.png",
              "area_mm2": "accuracy_vs_area.png"}  # fmt: skip
FILES = ("explore.csv", "explore.json", *PLOT_FILES.values())


def _short(r: dict[str, Any], varying: list[str]) -> str:
    return " ".join(f"{a}={r[a]}" for a in varying) or "point"


def plot_front(path: str, rows: list[dict[str, Any]], key: str, config: dict[str, Any]) -> None:
    """Accuracy against one cost (log x): every compiled point with its 95% interval, coloured by reduction,
    the front marked and joined, its points labelled with the axes that vary."""
    from matplotlib.figure import Figure

    label = {k: lab for k, _, lab in COSTS}[key]
    col = {k: c for k, c, _ in COSTS}[key]
    ok = [r for r in rows if r.get("status") == "ok"]
    varying = [a for a, vals in config["axes"].items() if len(vals) > 1]
    fig = Figure(figsize=(7.2, 4.8), layout="constrained")
    ax = fig.add_subplot()
    colours = {"tree": "tab:blue", "cram": "tab:orange", "cram-serial": "tab:green"}
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    eccs = list(dict.fromkeys(r["ecc"] for r in ok))
    for red in dict.fromkeys(r["reduce"] for r in ok):
        for e in eccs:
            mine = [r for r in ok if r["reduce"] == red and r["ecc"] == e]
            if not mine:
                continue
            x = [r[key] for r in mine]
            y = [r["acc_mean"] for r in mine]
            lo = [r["acc_mean"] - _band(r)[0] for r in mine]
            hi = [_band(r)[1] - r["acc_mean"] for r in mine]
            ax.errorbar(x, y, yerr=[[max(0.0, v) for v in lo], [max(0.0, v) for v in hi]], fmt="none",
                        ecolor=colours.get(red, "grey"), alpha=0.4, capsize=2, linewidth=1)  # fmt: skip
            ax.scatter(x, y, color=colours.get(red, "grey"), marker=markers[eccs.index(e) % len(markers)],
                       label=f"{red}, ecc {e}", zorder=3, s=28)  # fmt: skip
    front = sorted((r for r in ok if r[col] is True), key=lambda r: (r[key], -r["acc_mean"]))
    if front:
        ax.step([r[key] for r in front], [r["acc_mean"] for r in front], where="post", color="black",
                linewidth=1, zorder=2, label="Pareto front")  # fmt: skip
        ax.scatter([r[key] for r in front], [r["acc_mean"] for r in front], s=90, facecolors="none",
                   edgecolors="black", zorder=4)  # fmt: skip
        same: dict[tuple[float, float], list[str]] = {}  # points at one place share one label
        for r in front:
            same.setdefault((r[key], r["acc_mean"]), []).append(_short(r, [a for a in varying if a != "reduce"]))
        for (px, py), names in same.items():
            text = "\n".join(names[:4]) + (f"\n(+{len(names) - 4} more)" if len(names) > 4 else "")
            ax.annotate(text, (px, py), fontsize=6, xytext=(5, -4), textcoords="offset points", va="top")
    if ok and min(r[key] for r in ok) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("top-1 accuracy")
    mode = "gate-level simulation" if config["mode"] == "gate" else "statistical fault model"
    ax.set_title(
        f"{Path(config['model']).name}: {len(ok)} of {config['points']} points compiled, {config['samples']} "
        f"samples x {len(config['seeds'])} seed(s), {mode}\nbars: 95% interval; circled: Pareto front "
        f"(accuracy max, {key.split('_')[0]} min)",
        fontsize=8,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _band(r: dict[str, Any]) -> tuple[float, float]:
    if r["seeds"] > 1 and not math.isnan(r["ci_low"]):
        return r["ci_low"], r["ci_high"]
    return r["wilson_low"], r["wilson_high"]


def format_table(rows: list[dict[str, Any]], config: dict[str, Any]) -> str:
    varying = [a for a, vals in config["axes"].items() if len(vals) > 1] or ["reduce"]
    w = max([len(_short(r, varying)) for r in rows] + [5])
    head = f"{'point':<{w}} {'accuracy':>8} {'95% CI':<15} {'latency':>10} {'energy':>10} {'area':>9}  front"
    lines = [head, "-" * len(head)]
    from cramc.cost.report import si

    for r in rows:
        name = _short(r, varying)
        if r["status"] != "ok":
            lines.append(f"{name:<{w}} not compiled: {r['reason'][:100]}")
            continue
        ci = "" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        fronts = ",".join(c.split("_")[1] for _, c, _ in COSTS if r[c] is True)
        lines.append(
            f"{name:<{w}} {r['acc_mean']:>8.4f} {ci:<15} {si(r['latency_s'], 's'):>10} "
            f"{si(r['energy_j'], 'J'):>10} {r['area_mm2']:>7.3g}mm2  {fronts}"
        )
    return "\n".join(lines)


def _check_outdir(outdir: str) -> None:
    from cramc.fileio import check_outputs

    d = Path(outdir)
    if d.exists() and not d.is_dir():
        raise UserError(f"-o {outdir}: exists and is not a directory")
    if d.is_dir():
        check_outputs([("-o", str(d / f)) for f in FILES])
        return
    parent = d.resolve().parent
    if not parent.is_dir():
        raise UserError(f"-o {outdir}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"-o {outdir}: cannot create it in {parent}: permission denied")


def write_outputs(outdir: str, res: Any) -> list[str]:
    """explore.csv, explore.json and the three plots in `outdir` (created if need be), each written atomically."""
    from cramc.sweep.output import write_results
    from cramc.sweep.running import SweepResult

    Path(outdir).mkdir(exist_ok=True)
    out = SweepResult(res.config, res.rows)
    paths = [os.path.join(outdir, "explore.csv"), os.path.join(outdir, "explore.json")]
    for p in paths:
        write_results(p, out)
    for key in PLOTS:
        p = os.path.join(outdir, PLOT_FILES[key])
        plot_front(p, res.rows, key, res.config)
        paths.append(p)
    return paths


def main_explore(
    o: Any, data: str, labels_path: str, calibration: str | None, outdir: str | None, log: TextIO | None = None
) -> tuple[Any, list[str]]:
    """The `cramc explore` command: check the outputs, load the files, explore, write the outputs."""
    from cramc.sweep.explore import run_explore
    from cramc.sweep.output import load_run_data

    log = log or sys.stderr
    if outdir:
        _check_outdir(outdir)
    inputs, labels, calib = load_run_data(data, labels_path, calibration)
    res = run_explore(o, inputs, labels, calib, log=log, data_name=data, labels_name=labels_path)
    wrote = write_outputs(outdir, res) if outdir else []
    return res, wrote
