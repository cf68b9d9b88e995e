"""Comparison of outputs with expected values, accuracy, and REPORT.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cramc.errors import UserError
from cramc.isa.counting import Counts
from cramc.sim.faults import FaultModel


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


def check_labels(labels: np.ndarray, samples: int, classes: int, source: str, output: str) -> np.ndarray:
    """Labels as int64 `[samples]`, or a UserError naming `source` and what is wrong with them.

    Labels are integer class ids 0 .. classes-1 of `output` (whose argmax the accuracy compares with
    them), one per sample, shape `[N]` (or `[N, 1]`).  Anything else would give a meaningless accuracy
    (every float or out-of-range label counts as wrong), so it is refused: floats (even whole ones),
    one-hot or other 2-D labels, negative or too large ids, a count that differs from the samples.
    """
    x = np.asarray(labels)
    where = f"{source}: labels"
    if x.ndim == 2 and x.shape[1] == 1:
        x = x.reshape(-1)
    if x.ndim == 2:
        onehot = x.size and np.isin(x, (0, 1)).all() and (x.sum(axis=1) == 1).all()
        if onehot:
            raise UserError(
                f"{where} are one-hot, shape {list(x.shape)}; give one class id per sample, shape [N] "
                "(labels.argmax(axis=1))"
            )
        raise UserError(f"{where} have shape {list(x.shape)}; expected one class id per sample, shape [N]")
    if x.ndim != 1:
        raise UserError(f"{where} have shape {list(x.shape)}; expected one class id per sample, shape [N]")
    if not np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        if np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all() and (x == np.round(x)).all():
            raise UserError(
                f"{where} are {x.dtype} (whole numbers); class ids must be integers: save them with "
                "labels.astype(np.int64)"
            )
        bad = next((i for i, v in enumerate(x.reshape(-1)) if not _whole(v)), 0)
        raise UserError(
            f"{where} are {x.dtype} values, not integer class ids (e.g. {x.reshape(-1)[bad].item()!r} at index {bad})"
        )
    if x.shape[0] != samples:
        raise UserError(f"{source}: {x.shape[0]} labels for {samples} samples")
    out = (x < 0) | (x >= classes)
    if out.any():
        i = int(np.argmax(out))
        raise UserError(
            f"{source}: {int(out.sum())} of {x.shape[0]} labels are not class ids of output '{output}' "
            f"(0 .. {classes - 1}), e.g. {int(x[i])} at index {i}"
        )
    return x.astype(np.int64)


def _whole(v: object) -> bool:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(f) and f == round(f))


@dataclass(frozen=True)
class FloatAgreement:
    """How the simulated outputs compare with the float model's (embedded by cramc compile)."""

    name: str
    samples: int
    top1_agree: int | None  # argmax per sample equal; None when an output has one element per sample
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.name,
            "samples": self.samples,
            "top1_agree": self.top1_agree,
            "max_abs_diff": self.max_abs_diff,
        }

    def line(self) -> str:
        diff = f"max |diff| {self.max_abs_diff:.4g}"
        if self.top1_agree is None:
            return f"float model: {self.name} on the {self.samples} validation inputs: {diff}"
        return (
            f"float model: {self.name} top-1 agrees on {self.top1_agree} of {self.samples} validation inputs "
            f"({self.top1_agree / max(self.samples, 1):.4f}); {diff}"
        )


def float_agreement(name: str, got: np.ndarray, want: np.ndarray) -> FloatAgreement:
    n = int(want.shape[0])
    g = got.astype(np.float64).reshape(n, -1)
    w = want.astype(np.float64).reshape(n, -1)
    top1 = int((g.argmax(axis=1) == w.argmax(axis=1)).sum()) if w.shape[1] > 1 else None
    return FloatAgreement(name, n, top1, float(np.abs(g - w).max()) if w.size else 0.0)


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
