"""Pareto fronts of an exploration (`cramc explore`): non-dominated points, accuracy maximised, cost minimised."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: The costs a front is drawn against: (row key, CSV column of the front, axis label).
COSTS = (
    ("energy_j", "pareto_energy", "energy per inference (J)"),
    ("latency_s", "pareto_latency", "latency per inference (s)"),
    ("area_mm2", "pareto_area", "chip area (mm^2)"),
    ("edp_js", "pareto_edp", "energy-delay product (J*s)"),
)


def pareto_front(acc: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """Which points are non-dominated with accuracy maximised and cost minimised.

    Point j dominates i when acc[j] >= acc[i] and cost[j] <= cost[i], one of them strictly; equal points do not
    dominate each other (both stay on the front).  A point with a NaN is on no front and dominates none."""
    ok = [not (math.isnan(a) or math.isnan(c)) for a, c in zip(acc, cost, strict=True)]
    out = []
    for i in range(len(acc)):
        if not ok[i]:
            out.append(False)
            continue
        dominated = any(
            ok[j] and acc[j] >= acc[i] and cost[j] <= cost[i] and (acc[j] > acc[i] or cost[j] < cost[i])
            for j in range(len(acc))
        )
        out.append(not dominated)
    return out


def mark_fronts(rows: list[dict[str, Any]]) -> None:
    """Set pareto_<cost> on every row: True/False for compiled points, '' for those that were not."""
    ok = [r for r in rows if r.get("status") == "ok"]
    for key, col, _ in COSTS:
        front = pareto_front([r["acc_mean"] for r in ok], [r[key] for r in ok])
        for r in rows:
            r[col] = ""
        for r, f in zip(ok, front, strict=True):
            r[col] = f
