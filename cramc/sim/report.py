"""Comparison of outputs with expected values, accuracy, and REPORT.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cramc.sim.faults import FaultModel
from cramc.sim.interp import Counts


@dataclass(frozen=True)
class Comparison:
    name: str
    samples: int
    elements: int
    exact: int
    max_abs_diff: float
    within_tol: int
    tol: float

    @property
    def ok(self) -> bool:
        return self.within_tol == self.elements

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.name,
            "samples": self.samples,
            "elements": self.elements,
            "exact": self.exact,
            "within_tol": self.within_tol,
            "tol": self.tol,
            "max_abs_diff": self.max_abs_diff,
            "match": self.ok,
        }


def compare(name: str, got: np.ndarray, want: np.ndarray, tol: float) -> Comparison:
    g = got.astype(np.float64).reshape(want.shape)
    w = want.astype(np.float64)
    diff = np.abs(g - w)
    return Comparison(
        name,
        int(want.shape[0]),
        int(want.size),
        int((diff == 0).sum()),
        float(diff.max()) if diff.size else 0.0,
        int((diff <= tol + 1e-9 * np.maximum(1.0, np.abs(w))).sum()),
        tol,
    )


def format_table(rows: list[Comparison]) -> str:
    head = f"{'output':<16} {'samples':>7} {'elements':>9} {'exact':>9} {'within tol':>10} {'max |diff|':>11}  result"
    lines = [head, "-" * len(head)]
    for c in rows:
        lines.append(
            f"{c.name:<16} {c.samples:>7} {c.elements:>9} {c.exact:>9} {c.within_tol:>10} {c.max_abs_diff:>11.4g}  "
            f"{'match' if c.ok else 'MISMATCH'} (tol {c.tol:g})"
        )
    return "\n".join(lines)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    pred = logits.reshape(logits.shape[0], -1).argmax(axis=1)
    return float((pred == labels.reshape(-1)).mean())


def build_report(
    counts: Counts,
    samples: int,
    seed: int,
    faults: FaultModel,
    extra: dict[str, Any] | None = None,
    cost: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """REPORT.json.  `cost`: a cost estimate (cramc.cost.model.Estimate.as_dict()) whose latency_s,
    energy_j and edp_js per inference go to the top level and the rest under "cost"."""
    per = max(samples, 1)
    rep: dict[str, Any] = {
        "samples": samples,
        "seed": seed,
        "error_model": faults.to_dict(),
        "gate_evals": counts.gate_evals,
        "preset_writes": counts.gate_evals,
        "writes": counts.writes,
        "reads": counts.reads,
        "tree_sensed_bits": counts.tree_sensed,
        "reduces": counts.reduces,
        "recomputes": counts.recomputes,
        "faults_injected": counts.faults_injected,
        "faults": dict(counts.faults),
        "opcodes": {k: dict(v) for k, v in sorted(counts.per_opcode.items())},
        "per_sample": {
            "gate_evals": counts.gate_evals / per,
            "writes": counts.writes / per,
            "reads": counts.reads / per,
            "reduces": counts.reduces / per,
            "faults_injected": counts.faults_injected / per,
        },
    }
    if cost is not None:
        rep["latency_s"] = cost["latency_s"]
        rep["energy_j"] = cost["energy_j"]
        rep["edp_js"] = cost["edp_js"]
        rep["cost"] = cost
    if extra:
        rep.update(extra)
    return rep
