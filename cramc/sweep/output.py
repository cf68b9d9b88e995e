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
    if res.config.get("keep_shape"):
        ax.set_xlabel(f"largest gate error probability of {res.config['error_model']} (scaled, shape kept)")
    else:
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
