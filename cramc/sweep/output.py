"""A sweep's results out: CSV or JSON, the plot, the table, and the `cramc sweep` command."""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cramc.errors import UserError
from cramc.fileio import atomic_write, write_json
from cramc.sweep.options import SweepOptions
from cramc.sweep.running import SweepResult, run_sweep


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


def plot_series(res: SweepResult) -> dict[str, dict[str, np.ndarray]]:
    """What `plot` draws per protection (the rates above 0): x, y (accuracy), the band (band_lo/band_hi) and
    the error bars (bar_lo/bar_hi).  One chip: both the 95% t over seeds (Wilson for one seed); with --chips
    N > 1 the band is the spread across inferences (95% Wilson of one chip's seeds x samples) and the bars
    the spread across chips (95% t over the chips' accuracies)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for prot in dict.fromkeys(r["protection"] for r in res.rows):
        pos = sorted(
            (r for r in res.rows if r["protection"] == prot and r["gate_error"] > 0), key=lambda r: r["gate_error"]
        )
        if not pos:
            continue
        chips = "chip_sd" in pos[0]
        band = np.array([_within(r) if chips else _band(r) for r in pos]).T
        bars = np.array([_across(r) for r in pos]).T if chips else band
        out[prot] = {
            "x": np.array([r["gate_error"] for r in pos]),
            "y": np.array([r["acc_mean"] for r in pos]),
            "band_lo": band[0],
            "band_hi": band[1],
            "bar_lo": bars[0],
            "bar_hi": bars[1],
        }
    return out


def plot(path: str, res: SweepResult, title: str | None = None) -> None:
    """Accuracy against gate error rate (log x), one line per protection with its 95% band and error bars
    (`plot_series`: with --chips N > 1 the band is within a chip, the bars across chips)."""
    ext = Path(path).suffix.lower()
    if ext not in (".png", ".pdf", ".svg"):
        raise UserError(f"--plot {path}: expected a .png (or .pdf, .svg) file")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    series = plot_series(res)
    for prot, sr in series.items():
        label = prot
        if prot in ("ecc", "both"):
            label += f" (--ecc {res.config['ecc']})" if len(res.config["ecc"]) <= 24 else " (--ecc ...)"
        x, y = sr["x"], sr["y"]
        (line,) = ax.plot(x, y, marker="o", label=label)
        ax.fill_between(x, sr["band_lo"], sr["band_hi"], color=line.get_color(), alpha=0.2, linewidth=0)
        if len(res.config.get("chips", [])) > 1:  # the within-chip interval also as a wide bar: seen at one rate too
            band = np.maximum(0.0, np.stack([y - sr["band_lo"], sr["band_hi"] - y]))
            ax.errorbar(x, y, yerr=band, fmt="none", ecolor=line.get_color(), alpha=0.3, elinewidth=7)
        yerr = np.maximum(0.0, np.stack([y - sr["bar_lo"], sr["bar_hi"] - y]))
        ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=line.get_color(), capsize=3, linewidth=1)
        for r in res.rows:
            if r["protection"] == prot and r["gate_error"] == 0:
                ax.axhline(r["acc_mean"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    if res.config.get("keep_shape"):
        ax.set_xlabel(f"largest gate error probability of {res.config['error_model']} (scaled, shape kept)")
    else:
        ax.set_xlabel("gate error rate (per gate output bit)")
    ax.set_ylabel("top-1 accuracy")
    n = res.config.get("samples")
    seeds = len(res.config.get("seeds", []))
    chips = len(res.config.get("chips", []))
    if chips > 1:
        size = f"{n} samples x {seeds} seeds x {chips} chips"
        band = f"within a chip (95% Wilson, also the wide bars); thin bars: across {chips} chips (95% t)"
    else:
        size = f"{n} samples x {seeds} seeds"
        band = "95% t-interval over seeds" if seeds > 1 else "95% Wilson interval"
    mode = _MODE_TITLE[res.config["mode"]]
    ax.set_title(title or f"{Path(res.config['model']).name}: {size}, {mode}\nbands: {band}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="protection")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=ext[1:], dpi=120))


_MODE_TITLE = {"gate": "gate-level simulation", "statistical": "statistical fault model"}


def _band(r: dict[str, Any]) -> tuple[float, float]:
    if r["seeds"] > 1 and not math.isnan(r["ci_low"]):
        return max(0.0, r["ci_low"]), min(1.0, r["ci_high"])
    return r["wilson_low"], r["wilson_high"]


def _within(r: dict[str, Any]) -> tuple[float, float]:
    return r["within_low"], r["within_high"]


def _across(r: dict[str, Any]) -> tuple[float, float]:
    if math.isnan(r["chip_ci_low"]):
        return r["acc_mean"], r["acc_mean"]
    return r["chip_ci_low"], r["chip_ci_high"]


def format_table(res: SweepResult) -> str:
    """The terminal table: a row per (rate, protection); with --chips N > 1 also the spread across chips
    (chip sd, 95% t-interval over the chips' accuracies) apart from the spread across inferences (95% Wilson
    of one chip's seeds x samples trials), from the same row fields as the JSON/CSV (stats.chip_spread)."""
    chips = any("chip_sd" in r for r in res.rows)
    extra = f" {'chip sd':>7}  {'across chips 95%':<16} {'within chip 95%':<16}" if chips else ""
    head = (
        f"{'gate error':>10}  {'protection':<10} {'accuracy':>8}  {'95% CI':<15}{extra} {'gate evals':>11} "
        f"{'recomputes':>10}  ecc"
    )
    lines = [head, "-" * len(head)]
    for r in res.rows:
        ci = _interval(r["ci_low"], r["ci_high"])
        spec = r["ecc"] if len(r["ecc"]) < 60 else r["ecc"][:57] + "..."
        cells = ""
        if chips:
            cells = (
                f" {r['chip_sd']:>7.4f}  {_interval(r['chip_ci_low'], r['chip_ci_high']):<16} "
                f"{_interval(r['within_low'], r['within_high']):<16}"
            )
        lines.append(
            f"{r['gate_error']:>10g}  {r['protection']:<10} {r['acc_mean']:>8.4f}  {ci:<15}{cells} "
            f"{r.get('gate_evals', math.nan):>11.4g} {r.get('recomputes', math.nan):>10.4g}  {spec}"
        )
    if chips:
        n_chips = len(res.config.get("chips", [])) or max(int(r.get("chips", 1)) for r in res.rows)
        lines.append(
            f"{n_chips} chips x {len(res.config['seeds'])} seeds x {res.config['samples']} samples: 95% CI over "
            "every (seed, chip) run; across chips: 95% t over the chips' accuracies (chip sd their sd); "
            "within chip: 95% Wilson of one chip's seeds x samples"
        )
    return "\n".join(lines)


def _interval(lo: float, hi: float) -> str:
    return "" if lo is None or math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"


def load_run_data(
    data: str, labels_path: str, calibration: str | None
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray] | None]:
    """The inputs, labels and optional calibration set of a sweep or explore, each value-checked by name."""
    from cramc.datacheck import check_values
    from cramc.fileio import load_npy, load_npz

    inputs = load_npz(data)
    check_values(inputs, data)
    labels = load_npy(labels_path)
    calib = load_npz(calibration) if calibration else None
    if calib is not None and calibration:
        check_values(calib, calibration)
    return inputs, labels, calib


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

    for path, what in ((output, "-o"), (plot_path, "--plot")):
        if path and not Path(path).parent.resolve().is_dir():
            raise UserError(f"{what} {path}: directory {Path(path).parent} does not exist")
    if output and Path(output).suffix.lower() not in (".csv", ".json"):
        raise UserError(f"-o {output}: the results file must end in .csv or .json")
    if plot_path and Path(plot_path).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"--plot {plot_path}: expected a .png (or .pdf, .svg) file")
    inputs, labels, calib = load_run_data(data, labels_path, calibration)
    show = progress() if progress else False
    res = run_sweep(o, inputs, labels, calib, log=log, progress=show, data_name=data, labels_name=labels_path)
    if output:
        write_results(output, res)
    if plot_path:
        plot(plot_path, res)
    return res
