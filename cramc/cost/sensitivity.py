"""Sensitivity of the cost estimate to technology parameters: sweeps, ratios between two designs, break-even values.

`cramc stats PROG.cram --vary KEY=v1,v2,...` re-costs one program (and, with
``--compare``, a second one) for every value of one or more technology keys.
A key is a dotted path into the technology parameters (cramc/cost/tech/default.toml):
``gate.energy_j``, ``tree.latency_s``, ``write.ops_per_cycle``, ``gate.maj5.energy_j``;
``a+b`` varies several keys together with the same value
(``write.ops_per_cycle+read.ops_per_cycle``: the periphery bandwidth).  A value
is set as a technology file would set it (cramc.cost.params.merge_tech): a
unit-level figure (``gate.energy_j``) sets every opcode of the unit.

Only the costing is repeated: the program is counted once (cramc.cost.static),
and the cost is affine in the counts, so a point costs microseconds.  The chip
size (arrays, rows, cols, accumulators) is fixed by the compiled program; a sweep
over it recompiles (bench/bench_sensitivity.py).

Break-even: where the ratio B / A of two designs' figures crosses a level (1:
they are equal), found between the two neighbouring values of the swept key
where B - level x A changes sign, by linear interpolation of that difference in
the key's value (in 1 / value for an ``ops_per_cycle`` key, which enters the time
as its inverse).  Latency, energy and area are affine in every key in that
variable, so for them the interpolated value is exact (up to rounding); the EDP
is a product of two affine figures and its break-even is approximate.
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from cramc.cost.model import Estimate, static_estimate
from cramc.cost.params import OP_KEYS, UNIT_SECTIONS, Tech
from cramc.cost.static import ProgramCounts, count_program
from cramc.errors import UserError
from cramc.isa.linked import Linked
from cramc.isa.opcodes import OPCODES

#: Sections besides the units whose numbers enter a CRAM program's cost (the chip's area).
COST_SECTIONS = ("array",)
#: Chip-size names: fixed by the compiled program's .machine line.
CHIP_KEYS = ("arrays", "rows", "cols", "accs")
METRICS = ("latency_s", "energy_j", "edp_js", "area_mm2")
#: Figures that are affine in every key (in the key's interpolation variable): their break-even is exact.
AFFINE_METRICS = ("latency_s", "energy_j", "area_mm2")
BENCH = "bench/bench_sensitivity.py"


def known_keys(tech: Tech) -> list[str]:
    """Every dotted key `--vary` accepts: the unit figures, per-opcode figures, the other numeric cost figures."""
    keys: set[str] = set()
    for unit in UNIT_SECTIONS:
        sec = tech.data.get(unit, {})
        keys.update(f"{unit}.{k}" for k in OP_KEYS)
        keys.update(f"{unit}.{k}" for k, v in sec.items() if _is_number(v))
        for op in OPCODES.values():
            if op.unit.value == unit:
                keys.update(f"{unit}.{op.mnemonic}.{k}" for k in OP_KEYS)
    for s in COST_SECTIONS:
        keys.update(f"{s}.{k}" for k, v in tech.data.get(s, {}).items() if _is_number(v))
    return sorted(keys)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _baseline_leaves(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            out += _baseline_leaves(v, f"{prefix}{k}.")
        elif _is_number(v):
            out.append(prefix + k)
    return out


def check_key(key: str, tech: Tech) -> None:
    """Raise a UserError naming the problem if `key` is not a technology key a program's cost depends on."""
    parts = key.split(".")
    if parts[-1] in CHIP_KEYS or (parts[0] in ("machine", "chip") and len(parts) == 2):
        raise UserError(
            f"--vary {key}: the chip size ({parts[-1]}) is fixed by the compiled program's .machine line, so it "
            f"cannot be varied by re-costing; compile one program per value (cramc compile --arrays/--rows/--cols) "
            f"or run python {BENCH} --arrays 1024,4096,16384, which does and tabulates them"
        )
    known = known_keys(tech)
    if key in known:
        return
    others = [k for k in _baseline_leaves(tech.data) if k.split(".")[0] not in (*UNIT_SECTIONS, *COST_SECTIONS)]
    if key in others:
        raise UserError(
            f"--vary {key}: a CPU/GPU baseline figure, not part of a CRAM program's cost (cramc stats costs the "
            f"program only); python {BENCH} varies the hybrid against those baselines"
        )
    near = difflib.get_close_matches(key, known, n=5, cutoff=0.5)
    if not near:
        head = parts[0] + "."
        near = [k for k in known if k.startswith(head)][:5]
    hint = f"; nearest known keys: {', '.join(near)}" if near else ""
    raise UserError(
        f"--vary {key}: no such technology key (a dotted path into cramc/cost/tech/default.toml, e.g. "
        f"gate.energy_j, tree.latency_s, write.ops_per_cycle){hint}"
    )


@dataclass(frozen=True)
class Vary:
    """One --vary: the keys set together and the values they take, in the order given."""

    keys: tuple[str, ...]
    values: tuple[float, ...]

    @property
    def label(self) -> str:
        return "+".join(self.keys)

    @property
    def inverse(self) -> bool:
        """Interpolate in 1 / value: every key is an ops_per_cycle (time ~ row_ops / ops_per_cycle)."""
        return all(k.endswith(".ops_per_cycle") for k in self.keys)


def _number(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UserError(f"{where}: '{text}' is not a number") from None
    if not math.isfinite(v):
        raise UserError(f"{where}: '{text}' is not a finite number")
    return v


def parse_vary(spec: str, tech: Tech) -> Vary:
    """KEY=v1,v2,... or KEY=LO:HI:N (N values, geometric from LO to HI; both positive). KEY may be a+b."""
    key, eq, vals = spec.partition("=")
    key = key.strip()
    if not eq or not key or not vals.strip():
        raise UserError(f"--vary '{spec}': expected KEY=v1,v2,... (e.g. gate.energy_j=1e-14,1e-13,6e-13)")
    keys = tuple(k.strip() for k in key.split("+"))
    if any(not k for k in keys) or len(set(keys)) != len(keys):
        raise UserError(f"--vary '{spec}': keys joined by '+' must be distinct and non-empty")
    for k in keys:
        check_key(k, tech)
    where = f"--vary {key}"
    vals = vals.strip()
    if vals.count(":") == 2 and "," not in vals:
        lo_s, hi_s, n_s = vals.split(":")
        lo, hi = _number(lo_s, where), _number(hi_s, where)
        try:
            n = int(n_s)
        except ValueError:
            raise UserError(f"{where}: the count in LO:HI:N must be an integer, got '{n_s}'") from None
        if not 2 <= n <= 10000:
            raise UserError(f"{where}: LO:HI:N needs 2 <= N <= 10000, got {n}")
        if lo <= 0 or hi <= 0:
            raise UserError(f"{where}: LO:HI:N spaces values geometrically; LO and HI must be positive")
        values = tuple(lo * (hi / lo) ** (i / (n - 1)) for i in range(n))
    else:
        values = tuple(_number(v.strip(), where) for v in vals.split(","))
    if len(values) > 10000:
        raise UserError(f"{where}: {len(values)} values; at most 10000")
    for v in values:
        if v < 0:
            raise UserError(f"{where}={v:g}: a technology figure must be non-negative (energies, times, rates)")
        if v == 0 and any(k.endswith(".ops_per_cycle") for k in keys):
            raise UserError(f"{where}=0: ops_per_cycle must be positive")
    if len(set(values)) != len(values):
        raise UserError(f"{where}: a value is given twice")
    return Vary(keys, values)


def tech_at(tech: Tech, point: dict[str, float]) -> Tech:
    """`tech` with every key of `point` set to its value, merged as a technology file is (merge_tech)."""
    over: dict[str, Any] = {}
    for key, v in point.items():
        d = over
        parts = key.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = v
    where = ", ".join(f"{k} = {v:g}" for k, v in point.items())
    try:
        t = tech.with_overrides(over)
    except UserError as e:
        raise UserError(f"--vary {where}: {e.message}") from None
    t.name = f"{tech.name}; {where}"
    return t


def figures(est: Estimate) -> dict[str, float]:
    return {
        "latency_s": est.latency_s,
        "energy_j": est.energy_j,
        "edp_js": est.edp_js,
        "area_mm2": est.area_mm2["total"],
    }


@dataclass(frozen=True)
class Crossing:
    """A value of the swept key where B / A crosses `level`, interpolated between two grid values."""

    value: float
    between: tuple[float, float]
    exact: bool  # the figure is affine in the interpolation variable: the interpolation is exact

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "between": list(self.between), "interpolated": True, "exact": self.exact}


def crossings(
    xs: list[float], a: list[float], b: list[float], level: float = 1.0, inverse: bool = False, exact: bool = True
) -> list[Crossing]:
    """Where b / a crosses `level` along xs: the zeros of b - level * a, linearly interpolated in x (or 1/x).

    The points are taken in increasing x; a zero at a grid value is that value.
    """
    pts = sorted(zip(xs, a, b, strict=True))
    out: list[Crossing] = []
    for i, (x0, a0, b0) in enumerate(pts):
        g0 = b0 - level * a0
        if g0 == 0:
            out.append(Crossing(x0, (x0, x0), exact))
            continue
        if i + 1 == len(pts):
            break
        x1, a1, b1 = pts[i + 1]
        g1 = b1 - level * a1
        if g0 * g1 < 0:
            u0, u1 = (1 / x0, 1 / x1) if inverse else (x0, x1)
            u = u0 + g0 * (u1 - u0) / (g0 - g1)
            out.append(Crossing(1 / u if inverse else u, (x0, x1), exact))
    return out


@dataclass
class Sweep:
    """Every point of a --vary grid: A's figures, B's (with --compare), B / A."""

    program: str
    compare: str | None
    tech: str
    varies: list[Vary]
    points: list[dict[str, Any]] = field(default_factory=list)
    break_even: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "compare": self.compare,
            "tech": self.tech,
            "vary": [{"keys": list(v.keys), "values": list(v.values)} for v in self.varies],
            "ratio": "compare / program (> 1: the program is better)" if self.compare else None,
            "break_even_method": (
                "the zero of compare - program between the two neighbouring values where it changes sign, linearly "
                "interpolated in the value (in 1/value for ops_per_cycle keys); exact for latency, energy and area "
                "(affine in the key), approximate for the EDP"
            )
            if self.compare
            else None,
            "points": self.points,
            "break_even": self.break_even,
        }


def sweep(
    program: str,
    linked: Linked,
    tech: Tech,
    varies: list[Vary],
    compare: tuple[str, Linked] | None = None,
) -> Sweep:
    """Cost `linked` (and the compared program) at every point of the grid of `varies` (the first varies fastest)."""
    counts: list[tuple[Linked, ProgramCounts]] = [(linked, count_program(linked))]
    if compare is not None:
        counts.append((compare[1], count_program(compare[1])))
    res = Sweep(program, compare[0] if compare else None, tech.name, varies)
    outer = [list(range(len(v.values))) for v in varies[1:]]
    for rest in itertools.product(*outer):
        first = varies[0] if varies else None
        xs = list(first.values) if first else [math.nan]
        series: list[dict[str, Any]] = []
        for x in xs:
            point: dict[str, float] = {}
            labels: dict[str, float] = {}
            idx = ([0] if first else []) + list(rest)
            for j, v in enumerate(varies):
                val = x if j == 0 else v.values[idx[j]]
                labels[v.label] = val
                for k in v.keys:
                    point[k] = val
            t = tech_at(tech, point) if point else tech
            figs = [figures(static_estimate(lk, t, pc)) for lk, pc in counts]
            row: dict[str, Any] = {"values": labels, "program": figs[0]}
            if compare is not None:
                row["compare"] = figs[1]
                row["ratio"] = {m: _ratio(figs[1][m], figs[0][m]) for m in METRICS}
            series.append(row)
        res.points += series
        if compare is not None and first is not None and len(xs) > 1:
            fixed = {v.label: v.values[i] for v, i in zip(varies[1:], rest, strict=True)}
            for m in METRICS:
                cs = crossings(
                    xs,
                    [r["program"][m] for r in series],
                    [r["compare"][m] for r in series],
                    inverse=first.inverse,
                    exact=m in AFFINE_METRICS,
                )
                res.break_even.append(
                    {"along": first.label, "fixed": fixed, "metric": m, "crossings": [c.as_dict() for c in cs]}
                )
    return res


def _ratio(b: float, a: float) -> float:
    if a == 0:
        return math.inf if b > 0 else math.nan
    return b / a


# ------------------------------------------------------------------ output
def _si(x: float, unit: str) -> str:
    from cramc.cost.report import si

    return si(x, unit)


def format_sweep(res: Sweep) -> str:
    """The sweep as a text table, then the break-even values (with --compare)."""
    heads = [v.label for v in res.varies]
    cols = ["latency", "energy", "EDP J*s", "area mm^2"]
    if res.compare:
        cols = [f"A {c}" for c in cols[:3]] + [f"B {c}" for c in cols[:3]] + ["B/A lat", "B/A energy", "B/A EDP"]
    lines = [f"{res.program}: static cost per inference, technology: {res.tech}"]
    if res.compare:
        lines.append(f"A = {res.program}, B = {res.compare}; B/A > 1: A is better")
    lines.append("")
    w = [max(len(h), 10) for h in heads]
    head = " ".join(f"{h:>{n}}" for h, n in zip(heads, w, strict=True))
    head = (head + " " if head else "") + " ".join(f"{c:>11}" for c in cols)
    lines += [head, "-" * len(head)]
    for p in res.points:
        cells = [f"{p['values'][h]:>{n}.4g}" for h, n in zip(heads, w, strict=True)]
        a = p["program"]
        if res.compare:
            b, r = p["compare"], p["ratio"]
            vals = [_si(a["latency_s"], "s"), _si(a["energy_j"], "J"), f"{a['edp_js']:.3g}"]
            vals += [_si(b["latency_s"], "s"), _si(b["energy_j"], "J"), f"{b['edp_js']:.3g}"]
            vals += [f"{r[m]:.4g}" for m in ("latency_s", "energy_j", "edp_js")]
        else:
            vals = [_si(a["latency_s"], "s"), _si(a["energy_j"], "J"), f"{a['edp_js']:.3g}", f"{a['area_mm2']:.4g}"]
        lines.append(" ".join([*cells, *(f"{v:>11}" for v in vals)]))
    if res.break_even:
        lines += ["", "break-even (B/A = 1), interpolated between the neighbouring values (exact for latency and"]
        lines.append("energy, which are affine in the key; approximate for the EDP):")
        names = {"latency_s": "latency", "energy_j": "energy", "edp_js": "EDP", "area_mm2": "area"}
        for be in res.break_even:
            if be["metric"] == "area_mm2":
                continue
            fixed = "".join(f", {k} = {v:g}" for k, v in be["fixed"].items())
            cs = be["crossings"]
            text = (
                ", ".join(f"{c['value']:.4g} (between {c['between'][0]:g} and {c['between'][1]:g})" for c in cs)
                if cs
                else "none in the range"
            )
            lines.append(f"  {names[be['metric']]:<8} {be['along']}{fixed}: {text}")
    return "\n".join(lines)


def plot_sweep(res: Sweep, path: str) -> None:
    """The ratio B/A (or, without --compare, the figures) against the first varied key, one line per other point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cramc.fileio import atomic_write

    first = res.varies[0]
    xs = list(first.values)
    n = len(xs)
    metrics = ("latency_s", "energy_j", "edp_js")
    titles = {"latency_s": "latency", "energy_j": "energy", "edp_js": "energy-delay product"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    logx = min(xs) > 0 and max(xs) / min(xs) >= 20
    for s in range(0, len(res.points), n):
        rows = res.points[s : s + n]
        label = ", ".join(f"{k} = {v:g}" for k, v in rows[0]["values"].items() if k != first.label) or None
        for ax, m in zip(axes, metrics, strict=True):
            ys = [r["ratio"][m] if res.compare else r["program"][m] for r in rows]
            order = sorted(range(n), key=lambda i: xs[i])
            (line,) = ax.plot([xs[i] for i in order], [ys[i] for i in order], marker="o", markersize=3, label=label)
            for be in res.break_even:
                if be["metric"] == m and be["fixed"] == {
                    k: v for k, v in rows[0]["values"].items() if k != first.label
                }:
                    for c in be["crossings"]:
                        ax.axvline(c["value"], color=line.get_color(), linestyle=":", linewidth=1)
                        ax.plot([c["value"]], [1.0], marker="x", color=line.get_color(), markersize=8)
    for ax, m in zip(axes, metrics, strict=True):
        if logx:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(first.label)
        if res.compare:
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_ylabel(f"{titles[m]}: B / A")
        else:
            ax.set_ylabel(titles[m] + {"latency_s": " (s)", "energy_j": " (J)", "edp_js": " (J*s)"}[m])
        ax.set_title(titles[m], fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    if len(res.points) > n:
        axes[0].legend(fontsize=7)
    title = f"A = {res.program}" + (f", B = {res.compare}; x: break-even (interpolated)" if res.compare else "")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    ext = path.rsplit(".", 1)[-1].lower()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=ext, dpi=110))
    plt.close(fig)
