"""The cost comparison: CRAM-ER hybrid vs CRAM-only vs CPU and GPU with HBM, per model.

For each shipped model (digits MLP and CNN) and the light ResNet-50 and VGG-19
(bench/light_models.py):
- compile it twice, `--reduce tree` (CRAM-ER hybrid) and `--reduce cram`
  (CRAM-only baseline; if that lowering fails, the error is printed and the
  model's CRAM-only row says so);
- estimate latency, energy, energy-delay product and area statically
  (`cramc stats`), with the default technology and with each --tech file given;
- for the digits models, also run the program on the simulator and check the
  dynamic estimate (REPORT.json) equals the static one;
- roofline latency and energy of every [device.*] of the technology file
  (CPU and GPU with HBM; CPU with DDR5) from the ONNX model's MACs and bytes;
- onnxruntime's measured CPU time of the float ONNX model on this machine.

Writes docs/comparison.md (tables, verdicts, the commands) and plots in
docs/img/, and the raw numbers in bench/results/comparison.json.

    python bench/bench_cost.py                      # everything (a few minutes)
    python bench/bench_cost.py --models digits_mlp  # one model
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from light_models import write_all  # noqa: E402

from cramc.compiler import Options, compile_model  # noqa: E402
from cramc.cost.model import Estimate, dynamic_estimate, static_estimate  # noqa: E402
from cramc.cost.params import Tech  # noqa: E402
from cramc.cost.roofline import measure_onnxruntime, model_work, roofline  # noqa: E402
from cramc.cost.static import count_program  # noqa: E402
from cramc.cost.timeline import timeline  # noqa: E402
from cramc.fileio import load_npz  # noqa: E402
from cramc.isa.parser import parse  # noqa: E402
from cramc.isa.verifier import Linked, verify  # noqa: E402
from cramc.sim.interp import run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"  # compiled programs and generated models (git-ignored)
RESULTS = REPO / "bench" / "results"  # the raw numbers behind docs/comparison.md
DOCS = REPO / "docs"
IMG = DOCS / "img"

SHIPPED = {
    "digits_mlp": ("models/digits_mlp.onnx", "models/digits_calib_flat.npz"),
    "digits_cnn": ("models/digits_cnn.onnx", "models/digits_calib_img.npz"),
}
LIGHT = ("resnet50_light", "vgg19_light")
REDUCES = {"tree": "CRAM-ER hybrid", "cram": "CRAM-only"}


def _log(msg: str) -> None:
    print(msg, flush=True)


def compile_cached(name: str, onnx_path: Path, calib: Path | None, reduce: str, arrays: int) -> tuple[Path | None, str]:
    """Compile (or reuse a compiled program newer than the model and the compiler); returns (path, error)."""
    out = OUT / f"{name}_{reduce}_a{arrays}.cram"
    src_mtime = max(onnx_path.stat().st_mtime, *(p.stat().st_mtime for p in (REPO / "cramc").rglob("*.py")))
    if out.exists() and out.stat().st_mtime > src_mtime:
        return out, ""
    try:
        t0 = time.perf_counter()
        text = compile_model(
            str(onnx_path),
            load_npz(str(calib)) if calib else None,
            Options(arrays=arrays, reduce=reduce, trace=False),
            log=open("/dev/null", "w"),
        )
        out.write_text(text, encoding="utf-8")
        _log(f"  compiled {out.name} in {time.perf_counter() - t0:.1f} s")
        return out, ""
    except Exception as e:  # noqa: BLE001 - any failure of a lowering is reported, not fatal
        msg = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
        _log(f"  cramc compile {onnx_path.name} --reduce {reduce} failed: {msg}")
        if not isinstance(e, (NotImplementedError, ImportError)):
            traceback.print_exc(limit=3)
        return None, msg


def _linked(path: Path) -> Linked:
    return verify(parse(path.read_text(encoding="utf-8"), str(path)))


def cram_row(est: Estimate, linked: Linked, tech: Tech) -> dict[str, Any]:
    tl = timeline(linked, tech)  # overlap (double-buffered MACs) and the layer pipeline (cramc.cost.timeline)
    return {
        "latency_overlap_s": tl.latency_s,
        "interval_s": tl.interval_s,
        "throughput_per_s": tl.throughput,
        "bottleneck": tl.bottleneck,
        "latency_s": est.latency_s,
        "energy_j": est.energy_j,
        "edp_js": est.edp_js,
        "area_mm2": est.area_mm2["total"],
        "by_unit": {k: v.as_dict() for k, v in est.by_unit.items()},
        "setup_energy_j": est.setup.energy_j,
    }


def evaluate(
    name: str, onnx_path: Path, calib: Path | None, techs: dict[str, Tech], arrays: int, dynamic: bool
) -> dict[str, Any]:
    _log(f"{name}:")
    res: dict[str, Any] = {
        "model": name,
        "onnx": str(onnx_path.relative_to(REPO)) if onnx_path.is_relative_to(REPO) else onnx_path.name,
        "cram": {},
        "errors": {},
    }
    work = model_work(str(onnx_path))
    res["macs"] = sum(w.macs for w in work)
    res["weights"] = sum(w.weight_values for w in work)
    for reduce in REDUCES:
        path, err = compile_cached(name, onnx_path, calib, reduce, arrays)
        if path is None:
            res["errors"][reduce] = err
            continue
        linked = _linked(path)
        pc = count_program(linked)
        res["cram"][reduce] = {
            t: cram_row(static_estimate(linked, tech, pc), linked, tech) for t, tech in techs.items()
        }
        if dynamic and linked.expect is not None:
            r = run(linked, dict(linked.expect.inputs))
            d = dynamic_estimate(r.counts, r.samples, linked, techs["default"])
            s = res["cram"][reduce]["default"]
            res["cram"][reduce]["dynamic_equals_static"] = d.latency_s == s["latency_s"] and d.energy_j == s["energy_j"]
        _log(
            f"  {REDUCES[reduce]}: latency {res['cram'][reduce]['default']['latency_s']:.3g} s, "
            f"energy {res['cram'][reduce]['default']['energy_j']:.3g} J"
        )
    res["devices"] = {t: {k: roofline(work, tech, k).as_dict() for k in tech.devices()} for t, tech in techs.items()}
    ort_t = measure_onnxruntime(str(onnx_path), min_time_s=1.0)
    res["onnxruntime_cpu_s"] = ort_t
    res["onnxruntime_cpu_j"] = ort_t * float(techs["default"].data.get("host", {}).get("power_w", 0.0))
    _log(f"  onnxruntime on this CPU: {ort_t * 1e6:.1f} us")
    return res


# ---------------------------------------------------------------- report
def _fmt(x: float | None, unit: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    from cramc.cost.report import si

    return si(x, unit)


def _num(v: dict[str, float], k: str) -> str:
    return f"{v[k]:.3g}" if k in v else "-"


def _joules(v: dict[str, float], k: str) -> str:
    """A break-even energy; 'never' where even a free gate would not reach it."""
    return _fmt(v[k], "J") if k in v and v[k] > 0 else ("never" if k in v else "-")


def table(results: list[dict[str, Any]], tech: str) -> list[str]:
    lines = [
        "| model | MACs | system | latency | energy | EDP (J*s) | area (mm^2) | latency, overlapped | "
        "pipeline interval | throughput (1/s) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows: list[tuple[str, float | None, float | None, float | None, dict[str, Any]]] = []
        for reduce, label in REDUCES.items():
            c = r["cram"].get(reduce, {}).get(tech)
            if c is None:
                why = r["errors"].get(reduce, "not compiled")[:80]
                rows.append((f"{label} (not available: {why})", None, None, None, {}))
            else:
                rows.append((label, c["latency_s"], c["energy_j"], c["area_mm2"], c))
        for d in r["devices"][tech].values():
            label = d["label"] + f", roofline ({d['bound']}-bound)"
            rows.append((label, d["latency_s"], d["energy_j"], d["area_mm2"], {}))
        ort = "this machine's CPU, onnxruntime, measured (float32)"
        rows.append((ort, r["onnxruntime_cpu_s"], r["onnxruntime_cpu_j"], None, {}))
        for i, (label, lat, en, area, c) in enumerate(rows):
            edp = lat * en if lat is not None and en is not None else None
            thr = f"{c['throughput_per_s']:.3g}" if "throughput_per_s" in c else "-"
            lines.append(
                f"| {r['model'] if i == 0 else ''} | {r['macs'] if i == 0 else ''} | {label} | "
                f"{_fmt(lat, 's')} | {_fmt(en, 'J')} | {'-' if edp is None else f'{edp:.3g}'} | "
                f"{'-' if area is None else f'{area:.3g}'} | {_fmt(c.get('latency_overlap_s'), 's')} | "
                f"{_fmt(c.get('interval_s'), 's')} | {thr} |"
            )
    return lines


def verdicts(results: list[dict[str, Any]], tech: str) -> dict[str, Any]:
    """Ratios behind the claims, per model."""
    out = {}
    for r in results:
        h = r["cram"].get("tree", {}).get(tech)
        c = r["cram"].get("cram", {}).get(tech)
        v: dict[str, Any] = {}

        def lat(x: dict[str, Any], unit: str) -> float:
            return x["by_unit"].get(unit, {}).get("latency_s", 0.0)

        if h and c:
            v["cram_only_over_hybrid_latency"] = c["latency_s"] / h["latency_s"]
            if "latency_overlap_s" in h and "latency_overlap_s" in c:
                v["cram_only_over_hybrid_latency_overlap"] = c["latency_overlap_s"] / h["latency_overlap_s"]
                v["cram_only_over_hybrid_interval"] = c["interval_s"] / h["interval_s"]
            v["cram_only_over_hybrid_energy"] = c["energy_j"] / h["energy_j"]
            # the latency ratio where only the gates took time (every gate costs the same: a count ratio)
            if lat(h, "gate"):
                v["gate_time_ratio"] = lat(c, "gate") / lat(h, "gate")
            # ... and where the periphery (writes, reads) were free
            free = ("write", "read")
            v["ratio_free_periphery"] = (c["latency_s"] - sum(lat(c, u) for u in free)) / (
                h["latency_s"] - sum(lat(h, u) for u in free)
            )
        if h:
            gate_rows = h["by_unit"].get("gate", {}).get("row_ops", 0)
            gate_e = h["by_unit"].get("gate", {}).get("energy_j", 0.0)
            other_e = h["energy_j"] - gate_e
            for k, d in r["devices"][tech].items():
                v[f"{k}_over_hybrid_energy"] = d["energy_j"] / h["energy_j"]
                v[f"{k}_over_hybrid_edp"] = d["edp_js"] / h["edp_js"]
                v[f"{k}_over_hybrid_latency"] = d["latency_s"] / h["latency_s"]
                if gate_rows:
                    # gate energy (per row) at which the hybrid's energy, or EDP, equals the device's
                    v[f"{k}_breakeven_gate_energy_j"] = (d["energy_j"] - other_e) / gate_rows
                    v[f"{k}_breakeven_gate_energy_edp_j"] = (d["edp_js"] / h["latency_s"] - other_e) / gate_rows
        out[r["model"]] = v
    return out


def plots(results: list[dict[str, Any]], tech: str, tag: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    files = []
    models = [r["model"] for r in results]
    systems: list[tuple[str, str]] = [("tree", REDUCES["tree"]), ("cram", REDUCES["cram"])]
    devs = list(results[0]["devices"][tech]) if results else []
    for metric, unit, fname in (("latency_s", "s", "latency"), ("energy_j", "J", "energy"), ("edp_js", "J*s", "edp")):
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = (
            [lab for _, lab in systems]
            + [results[0]["devices"][tech][d]["label"] for d in devs]
            + ["this CPU, onnxruntime"]
        )
        width = 0.8 / len(labels)
        for j, lab in enumerate(labels):
            vals = []
            for r in results:
                if j < len(systems):
                    c = r["cram"].get(systems[j][0], {}).get(tech)
                    vals.append(c[metric] if c and metric in c else (c["latency_s"] * c["energy_j"] if c else np.nan))
                elif j < len(systems) + len(devs):
                    vals.append(r["devices"][tech][devs[j - len(systems)]][metric])
                else:
                    t, e = r["onnxruntime_cpu_s"], r["onnxruntime_cpu_j"]
                    vals.append({"latency_s": t, "energy_j": e, "edp_js": t * e}[metric])
            ax.bar(np.arange(len(models)) + (j - len(labels) / 2 + 0.5) * width, vals, width, label=lab)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(models)), models)
        ax.set_ylabel(f"{fname} per inference ({unit}, log)")
        ax.set_title(f"{fname} per inference, batch 1 ({tag} technology)")
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        f = IMG / f"cost_{fname}_{tag}.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f.name)
    return files


def breakdown_plot(results: list[dict[str, Any]], tech: str, tag: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = ("gate", "write", "read", "tree", "acc", "cmos")
    bars = [(r["model"], red, r["cram"][red][tech]) for r in results for red in REDUCES if red in r["cram"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = np.zeros(len(bars))
    for u in units:
        vals = np.array([b[2]["by_unit"].get(u, {}).get("latency_s", 0.0) / b[2]["latency_s"] for b in bars])
        ax.bar(range(len(bars)), vals, bottom=bottom, label=u)
        bottom += vals
    ax.set_xticks(
        range(len(bars)), [f"{m}\n{'hybrid' if red == 'tree' else 'CRAM-only'}" for m, red, _ in bars], fontsize=7
    )
    ax.set_ylabel("share of latency")
    ax.set_title(f"where the CRAM latency goes ({tag} technology)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    f = IMG / f"cost_breakdown_{tag}.png"
    fig.savefig(f, dpi=110)
    plt.close(fig)
    return f.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=[*SHIPPED, *LIGHT])
    ap.add_argument("--arrays", type=int, default=1024, help="CRAM arrays of the chip (default 1024)")
    ap.add_argument("--tech", nargs="*", default=["projected"], help="further technology files to evaluate")
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/comparison.md and the plots")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    OUT.mkdir(parents=True, exist_ok=True)
    techs = {"default": Tech.load(), **{Path(t).stem: Tech.load(t) for t in args.tech}}
    light = write_all(OUT) if any(m in LIGHT for m in args.models) else {}
    results = []
    for m in args.models:
        if m in SHIPPED:
            onnx_p, calib = (REPO / p for p in SHIPPED[m])
            results.append(evaluate(m, onnx_p, calib, techs, args.arrays, dynamic=True))
        elif m in light:
            results.append(evaluate(m, light[m], None, techs, args.arrays, dynamic=False))
        else:
            ap.error(f"unknown model {m}")
    summary = {t: verdicts(results, t) for t in techs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.arrays == 1024 else f"_a{args.arrays}"
    (RESULTS / f"comparison{suffix}.json").write_text(
        json.dumps({"results": results, "verdicts": summary, "techs": {k: v.name for k, v in techs.items()}}, indent=1),
        encoding="utf-8",
    )
    _log(f"wrote {RESULTS / f'comparison{suffix}.json'}")
    for t in techs:
        _log(f"\n{t} technology ({techs[t].name}):")
        _log("\n".join(table(results, t)))
        for m, v in summary[t].items():
            _log(f"  {m}: " + ", ".join(f"{k} {x:.3g}" for k, x in v.items()))
    if not args.no_docs:
        figs = {t: plots(results, t, t + suffix) + [breakdown_plot(results, t, t + suffix)] for t in techs}
        write_doc(results, techs, summary, figs, args)
    return 0


def write_doc(
    results: list[dict[str, Any]],
    techs: dict[str, Tech],
    summary: dict[str, Any],
    figs: dict[str, list[str]],
    args: argparse.Namespace,
) -> None:
    """The generated part of docs/comparison.md: between the markers, the rest is hand-written."""
    path = DOCS / "comparison.md"
    suffix = "" if args.arrays == 1024 else f" --arrays {args.arrays}"
    begin = f"<!-- BEGIN GENERATED by bench/bench_cost.py{suffix} -->"
    end = f"<!-- END GENERATED by bench/bench_cost.py{suffix} -->"
    gen = [
        begin,
        "",
        f"Generated by `{' '.join(['python bench/bench_cost.py', *args.argv])}` "
        f"on {platform.machine()} ({platform.processor() or 'cpu'}), {time.strftime('%Y-%m-%d')}; "
        f"chip: {args.arrays} arrays of 256 x 256. Raw numbers: bench/results/comparison"
        f"{suffix.replace(' --arrays ', '_a')}.json.",
        "",
    ]
    for t, tech in techs.items():
        gen += [f"### {args.arrays} arrays, technology: {t} ({tech.name})", ""]
        gen += table(results, t)
        gen += [
            "",
            "*latency, overlapped*: the critical path with a gate and an adder-tree count proceeding together "
            "on different columns (the hybrid's double-buffered MACs; cramc.cost.timeline); *pipeline interval*, "
            "*throughput*: the steady state of a weight-stationary layer pipeline (docs/cost-model.md).",
            "",
            "Ratios (> 1: the hybrid is better). *overlapped*, *pipeline interval*: the latency ratio with "
            "overlap, and the ratio of the pipeline intervals. *gates only*: the CRAM-only / hybrid latency ratio if "
            "only the gates took time; *free periphery*: if writes and reads took none. *break-even gate "
            "energy*: the energy per row-level gate at which the hybrid's energy (EDP) equals the GPU's, "
            "other figures as they are.",
            "",
            "| model | CRAM-only / hybrid latency | overlapped | pipeline interval | gates only | free periphery | "
            "CRAM-only / hybrid energy | GPU / hybrid energy | GPU / hybrid EDP | CPU (HBM) / hybrid energy | "
            "CPU (HBM) / hybrid EDP | break-even gate energy vs GPU: energy, EDP |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m, v in summary[t].items():
            g = functools.partial(_num, v)
            e = functools.partial(_joules, v)
            gen.append(
                f"| {m} | {g('cram_only_over_hybrid_latency')} | {g('cram_only_over_hybrid_latency_overlap')} | "
                f"{g('cram_only_over_hybrid_interval')} | {g('gate_time_ratio')} | "
                f"{g('ratio_free_periphery')} | {g('cram_only_over_hybrid_energy')} | "
                f"{g('gpu_over_hybrid_energy')} | {g('gpu_over_hybrid_edp')} | {g('cpu_over_hybrid_energy')} | "
                f"{g('cpu_over_hybrid_edp')} | {e('gpu_breakeven_gate_energy_j')}, "
                f"{e('gpu_breakeven_gate_energy_edp_j')} |"
            )
        gen += [""] + [f"![{f}](img/{f})" for f in figs[t]] + [""]
    dyn = [
        f"{r['model']} ({REDUCES[red]}): {'equal' if r['cram'][red].get('dynamic_equals_static') else 'DIFFERENT'}"
        for r in results
        for red in REDUCES
        if red in r["cram"] and "dynamic_equals_static" in r["cram"][red]
    ]
    if dyn:
        gen += [
            "Dynamic estimate (simulator run, REPORT.json) vs static estimate (`cramc stats`): " + "; ".join(dyn) + ".",
            "",
        ]
    gen.append(end)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Comparison\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + "\n".join(gen) + tail
    else:
        text = text.rstrip() + "\n\n" + "\n".join(gen) + "\n"
    path.write_text(text, encoding="utf-8")
    _log(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
