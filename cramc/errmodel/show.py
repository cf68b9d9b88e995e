"""`cramc errmodel show`: an error model as tables, the gate error per number of inputs at 1 first.

Every gate gets one row, P(output wrong | k of its n inputs at 1) for k = 0..n,
whichever form its rate has (``by_ones`` directly; ``p01``/``p10`` through the
gate's correct output for k ones).  With a [device] section the device
parameters follow, and per gate the voltage window, the operating voltage, the
mean energy per evaluation (inputs 1 with probability 1/2) and the latency.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from cramc.errmodel import device as dev
from cramc.errmodel.model import GATE_NAMES, FaultModel, Rate, device_dict, gate_inputs

#: Units of the device parameters, for the table (SI, as the TOML takes them).
DEVICE_UNITS = {
    "r_p": "ohm",
    "tmr": "",
    "r_access": "ohm",
    "delta": "",
    "temperature": "K",
    "i_c0": "A",
    "ic0_asymmetry": "",
    "tau0": "s",
    "tau_d": "s",
    "t_pulse": "s",
    "t_preset": "s",
    "preset_overdrive": "",
    "preset_mismatch": "",
    "switching_model": "",
    "voltage_rule": "",
}


def gate_row(fm: FaultModel, gate: str) -> list[float]:
    """P(gate output wrong) for k = 0..n of its inputs at 1."""
    return [fm.gate_wrong(gate, k) for k in range(gate_inputs(gate) + 1)]


def _form(r: Rate) -> str:
    if r.by_ones is not None:
        return "by_ones"
    return "exact" if r.zero else "p01/p10"


def model_table(fm: FaultModel, label: str) -> dict[str, Any]:
    """What `format_model` prints, as data (``--json``)."""
    out: dict[str, Any] = {
        "model": label,
        "name": fm.name,
        "gates": {g: {"form": _form(fm.gate(g)), "p_wrong_by_ones": gate_row(fm, g)} for g in GATE_NAMES},
        "write": fm.write.to_dict(),
        "read": fm.read.to_dict(),
        "tree": fm.tree,
    }
    if fm.device is not None:
        p = fm.device
        out["device"] = device_dict(p)
        out["device_gates"] = {
            g: {
                "window_v": list(dev.voltage_window(g, p)),
                "voltage_v": dev.gate_voltage(g, p),
                "energy_j": dev.gate_energy(g, p),
                "energy_j_by_ones": list(dev.gate_energy_table(g, p)),
                "latency_s": dev.gate_latency(g, p),
            }
            for g in GATE_NAMES
        }
        out["energy_assumption"] = dev.COST_INPUT_ASSUMPTION
    return out


def _p(x: float) -> str:
    return "0" if x == 0 else f"{x:.2e}"


def _aligned(head: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns padded to their widest cell: the first `left` left-aligned, the rest right-aligned."""
    width = [max(len(r[i]) if i < len(r) else 0 for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        cells = cells + [""] * (len(head) - len(cells))
        pairs = enumerate(zip(cells, width, strict=True))
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs)

    return [line(head).rstrip(), "  ".join("-" * w for w in width), *(line(r).rstrip() for r in rows)]


def format_model(fm: FaultModel, label: str) -> str:
    """The error model as aligned text tables."""
    nmax = max(gate_inputs(g) for g in GATE_NAMES)
    lines = [f"error model: {fm.name} ({label})", "", "gate output wrong with k of its n inputs at 1:"]
    head = ["gate", "n", "form", *(f"k={k}" for k in range(nmax + 1))]
    rows = [[g, str(gate_inputs(g)), _form(fm.gate(g)), *(_p(x) for x in gate_row(fm, g))] for g in GATE_NAMES]
    lines += _aligned(head, rows, left=3)
    lines += [
        "",
        f"write: p01 {_p(fm.write.p01)}, p10 {_p(fm.write.p10)}; read: p01 {_p(fm.read.p01)}, "
        f"p10 {_p(fm.read.p10)}; tree: {_p(fm.tree)}",
    ]
    if fm.device is not None:
        p = fm.device
        lines += ["", "device parameters ([device]):"]
        params = [[k, f"{v:g}" if isinstance(v, float) else str(v), DEVICE_UNITS[k]] for k, v in device_dict(p).items()]
        lines += _aligned(["parameter", "value", "unit"], params, left=1)
        lines += ["", f"derived per gate (energy: mean over inputs, {dev.COST_INPUT_ASSUMPTION}):"]
        rows = []
        for g in GATE_NAMES:
            lo, hi = dev.voltage_window(g, p)
            rows.append(
                [
                    g,
                    f"{lo:.3f} .. {hi:.3f}",
                    f"{dev.gate_voltage(g, p):.3f}",
                    f"{dev.gate_energy(g, p) * 1e12:.3f}",
                    f"{dev.gate_latency(g, p) * 1e9:g}",
                ]
            )
        lines += _aligned(["gate", "window (V)", "V", "energy (pJ)", "latency (ns)"], rows, left=1)
    return "\n".join(lines) + "\n"


def _mean_wrong(fm: FaultModel, gate: str, p_one: float = 0.5) -> float:
    """P(gate output wrong) averaged over inputs that are 1 independently with probability `p_one`."""
    n = gate_inputs(gate)
    return sum(math.comb(n, k) * p_one**k * (1 - p_one) ** (n - k) * fm.gate_wrong(gate, k) for k in range(n + 1))


def preset_markdown(presets: tuple[str, ...] = ("early", "near_term", "projected")) -> str:
    """The presets' tables of docs/error-model.md: device parameters, and per gate the old output-conditioned rate
    (NAME_flat) against the derived by_ones table.  ``python -m cramc.errmodel.show`` prints them."""
    from cramc.errmodel.model import load_preset

    models = {n: load_preset(n) for n in presets}
    out = ["| parameter | " + " | ".join(f"`{n}`" for n in presets) + " |", "|---" * (1 + len(presets)) + "|"]
    first = next(iter(models.values())).device
    assert first is not None
    for k in device_dict(first):
        vals = []
        for n in presets:
            v = device_dict(models[n].device)[k]  # type: ignore[arg-type]
            vals.append(f"{v:g}" if isinstance(v, float) else str(v))
        unit = DEVICE_UNITS[k]
        out.append(f"| `{k}`{f' ({unit})' if unit else ''} | " + " | ".join(vals) + " |")
    for n, fm in models.items():
        flat = load_preset(f"{n}_flat")
        out += [
            "",
            f"`{n}` (old: `{n}_flat`):",
            "",
            "| gate | old p | new by_ones [p0 .. pn] | new worst | new mean (inputs 1 w.p. 1/2) |",
            "|---|---|---|---|---|",
        ]
        for g in GATE_NAMES:
            old = flat.gate(g)
            row = gate_row(fm, g)
            out.append(
                f"| `{g}` | {_p(old.pmax)} | [{', '.join(_p(x) for x in row)}] | {_p(max(row))} "
                f"| {_p(_mean_wrong(fm, g))} |"
            )
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - prints the docs tables
    sys.stdout.write(preset_markdown())
