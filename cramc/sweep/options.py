"""What a sweep runs: its options, their parsing and checks, and the fault model of one point."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cramc.errmodel import FaultModel
from cramc.errors import UserError

PROTECTIONS = ("none", "ecc", "finetuned", "both")
MODES = ("gate", "statistical")


@dataclass(frozen=True)
class SweepOptions:
    """What to sweep.  `ecc` is an insert-ecc spec or ``auto`` (tuned per rate with `ecc_budget`)."""

    model: str
    rates: tuple[float, ...]
    protections: tuple[str, ...] = ("none", "ecc")
    seeds: int = 5
    ecc: str = "auto"
    ecc_budget: float = 0.2
    finetuned: str | None = None
    error_model: str | None = None
    mode: str = "gate"
    samples: int | None = None
    max_memory: int | None = None  # bytes of simulator state (None: the backend's default budget)
    tech: str | None = None  # technology file of the cost model (None: its defaults)
    workers: int = 0  # > 0: run the (rate, protection, seed) points on a local Dask cluster of this many processes
    scheduler: str | None = None  # or on an existing Dask cluster at this address
    backend: str = "numpy"  # gate mode: the simulator backend (cramc.sim.backend), on every worker
    chips: int = 1  # gate mode: chip instances per point (chip seeds 0..chips-1, each with every seed)
    keep_shape: bool = False  # a level scales the error model's gate rates to that largest (FaultModel.scaled_to)


def parse_rates(text: str) -> tuple[float, ...]:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            p = float(part)
        except ValueError:
            raise UserError(
                f"--gate-error: '{part}' is not a number (give a comma-separated list, e.g. 1e-4,1e-3,1e-2)"
            ) from None
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise UserError(f"--gate-error: a probability must be between 0 and 1, got {part}")
        out.append(p)
    if not out:
        raise UserError("--gate-error: give at least one gate error rate")
    return tuple(dict.fromkeys(out))


def parse_protections(text: str) -> tuple[str, ...]:
    out = [p.strip() for p in text.split(",") if p.strip()]
    for p in out:
        if p not in PROTECTIONS:
            raise UserError(f"--protection: unknown protection '{p}' (choose from {', '.join(PROTECTIONS)})")
    if not out:
        raise UserError("--protection: give at least one of " + ", ".join(PROTECTIONS))
    return tuple(dict.fromkeys(out))


def fault_model(rate: float, error_model: str | None, keep_shape: bool = False) -> FaultModel:
    """The fault model of one sweep point: as `cramc run --gate-error rate [--error-model FILE]` (every gate at
    the rate), or with `keep_shape` the error model's own gate rates, every gate and input state scaled by
    one factor so that the largest is the rate (its input-dependent tables keep their shape)."""
    from cramc.errmodel import load_error_model

    if error_model:
        base = load_error_model(error_model)
        return base.scaled_to(rate) if keep_shape else base.with_gate_error(rate)
    return FaultModel.uniform(rate)


def _check_error_model(o: SweepOptions) -> None:
    """A bad error-model file, or --keep-shape with nothing to scale, before anything is compiled."""
    if o.keep_shape and not o.error_model:
        raise UserError("--keep-shape scales the gate rates of an error model: give --error-model FILE|PRESET")
    if o.error_model:
        fault_model(1.0, o.error_model, o.keep_shape)


def check_options(o: SweepOptions) -> None:
    if o.mode not in MODES:
        raise UserError(f"--mode {o.mode}: expected one of {', '.join(MODES)}")
    if o.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if o.chips < 1:
        raise UserError(f"--chips must be at least 1, got {o.chips}")
    if o.chips > 1 and o.mode != "gate":
        raise UserError("--chips needs --mode gate: the statistical mode has no chip instances (.init, defects)")
    if o.samples is not None and o.samples < 1:
        raise UserError("--samples must be at least 1")
    if not o.rates:
        raise UserError("--gate-error: give at least one gate error rate")
    need = [p for p in o.protections if p in ("finetuned", "both")]
    if need and not o.finetuned:
        raise UserError(
            f"--protection {','.join(need)} needs the fine-tuned model: --finetuned TUNED.onnx "
            "(made by `cramc finetune`)"
        )
    if any(p in ("ecc", "both") for p in o.protections):
        if not o.ecc:
            raise UserError("--ecc: give a spec (e.g. 'dup', 'vote:sig>=10;dup:sig>=6') or 'auto'")
        if o.ecc == "auto":
            if not o.ecc_budget > 0:
                raise UserError("--ecc-budget must be positive (a fraction, e.g. 0.2 for 20% more operations)")
        else:
            from cramc.ir.passes.insert_ecc import parse_spec

            parse_spec(o.ecc)
    for p in (o.model, o.finetuned):
        if p and not Path(p).is_file():
            raise UserError(f"{p}: no such file")
    _check_error_model(o)
    from cramc.sim.backend import get_backend

    get_backend(o.backend)  # an unknown or unavailable backend, before compiling anything
