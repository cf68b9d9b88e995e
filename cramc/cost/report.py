"""Text tables of cost estimates (`cramc stats`, `cramc run`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cramc.cost.model import Estimate

if TYPE_CHECKING:
    from cramc.cost.timeline import Timeline


def si(x: float, unit: str) -> str:
    """3 significant digits with an SI prefix: si(1.2e-6, 's') == '1.20 us'."""
    if x == 0:
        return f"0 {unit}"
    for f, p in (
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
        (1, ""),
        (1e-3, "m"),
        (1e-6, "u"),
        (1e-9, "n"),
        (1e-12, "p"),
        (1e-15, "f"),
    ):
        if abs(x) >= f:
            return f"{x / f:.3g} {p}{unit}"
    return f"{x:.3g} {unit}"


def one_line(est: Estimate) -> str:
    return (
        f"cost per inference ({est.method}, {est.tech}): latency {si(est.latency_s, 's')}, "
        f"energy {si(est.energy_j, 'J')}, EDP {est.edp_js:.3g} J*s; area {est.area_mm2['total']:.3g} mm^2"
    )


def format_timeline(tl: Timeline) -> list[str]:
    """Latency with and without overlap, the layer pipeline's interval and throughput (cramc.cost.timeline)."""
    saved = 1 - tl.latency_s / tl.serial_s if tl.serial_s else 0.0
    lines = [
        f"latency without overlap: {si(tl.serial_s, 's')} (every instruction after the one before)",
        f"latency with overlap:    {si(tl.latency_s, 's')} (a gate and a tree count together on "
        f"different columns; {100 * saved:.1f}% less)",
        f"pipeline interval:       {si(tl.interval_s, 's')} (weight-stationary layer pipeline; busiest: "
        f"{tl.bottleneck})",
        f"throughput:              {tl.throughput:.4g} inferences/s (1 / latency: {1 / max(tl.latency_s, 1e-300):.4g})",
        f"energy per inference:    {si(tl.energy_j, 'J')}",
        "stages: "
        + ", ".join(f"{'+'.join(s.layers)} {si(s.time_s, 's')}" for s in tl.stages)
        + f"; shared: CMOS unit {si(tl.cmos_s, 's')}, periphery port {si(tl.port_s, 's')}",
    ]
    return lines


def format_stats(est: Estimate, title: str, tl: Timeline | None = None) -> str:
    lines = [f"{title}: cost per inference ({est.method} estimate, technology: {est.tech})", ""]
    if est.layers:
        w = min(max((len(k) for k in est.layers), default=5), 48)
        head = f"{'layer':<{w}} {'instrs':>10} {'row ops':>12} {'latency':>10} {'energy':>10} {'lat %':>6} {'en %':>6}"
        lines += [head, "-" * len(head)]
        for k, p in est.layers.items():
            name = k if len(k) <= w else k[: w - 3] + "..."
            lines.append(
                f"{name:<{w}} {p.instructions:>10} {p.row_ops:>12} {si(p.latency_s, 's'):>10} "
                f"{si(p.energy_j, 'J'):>10} {100 * p.latency_s / max(est.latency_s, 1e-300):>6.1f} "
                f"{100 * p.energy_j / max(est.energy_j, 1e-300):>6.1f}"
            )
        lines.append("")
    head = f"{'unit':<10} {'instrs':>10} {'row ops':>12} {'latency':>10} {'energy':>10} {'lat %':>6} {'en %':>6}"
    lines += [head, "-" * len(head)]
    for k, p in sorted(est.by_unit.items(), key=lambda kv: -kv[1].latency_s):
        lines.append(
            f"{k:<10} {p.instructions:>10} {p.row_ops:>12} {si(p.latency_s, 's'):>10} {si(p.energy_j, 'J'):>10} "
            f"{100 * p.latency_s / max(est.latency_s, 1e-300):>6.1f} "
            f"{100 * p.energy_j / max(est.energy_j, 1e-300):>6.1f}"
        )
    lines += [
        "",
        f"total per inference: latency {si(est.latency_s, 's')}, energy {si(est.energy_j, 'J')}, "
        f"energy-delay product {est.edp_js:.3g} J*s",
        f"setup once (.init, weights): latency {si(est.setup.latency_s, 's')}, energy {si(est.setup.energy_j, 'J')}",
        *(["", *format_timeline(tl), ""] if tl is not None else []),
        "area: "
        + ", ".join(f"{k} {v:.3g}" for k, v in est.area_mm2.items() if k != "total")
        + f"; total {est.area_mm2['total']:.3g} mm^2",
    ]
    return "\n".join(lines)
