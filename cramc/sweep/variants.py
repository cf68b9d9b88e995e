"""The program variants of a sweep, compiled once each through the compile pipeline (cramc.compiler).

A variant is one (model, explicit error-correction spec) pair: ``--ecc auto``
is tuned per gate error rate by the pipeline's auto-ecc pass and recorded as
the explicit spec that reproduces its plan, so equal plans share one program.
In statistical mode a variant also keeps the IR the program was compiled
from, up to the schedule pass (which only orders and places operations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from cramc.errors import InternalError, UserError
from cramc.ir.ecc import scheme
from cramc.sweep.options import SweepOptions, fault_model

if TYPE_CHECKING:
    from cramc.frontend.pipeline import Frontend

# cramc.compiler and the frontend are imported where they are used: a Dask worker that only runs
# points (cramc.sweep.running) need not load onnx and onnxruntime.


@dataclass
class Variant:
    """One compiled program (and, in statistical mode, its IR)."""

    model: str
    ecc: str  # the explicit insert-ecc spec it was compiled with ('' = none)
    linked: Any  # cramc.isa.verifier.Linked
    graph: Any = None  # cramc.ir.graph.Graph: the compiled IR before schedule (statistical mode)
    counts: dict[str, float] = field(default_factory=dict)  # per inference, fault-free (statistical mode)
    #: rows sensed per inference by the tree operations of each scheme that recomputes rows (statistical mode)
    recompute_rows: dict[str, float] = field(default_factory=dict)
    init: Any = None  # the cost model's tally of `.init` (computed once)


def spec_from_plans(g: Any) -> str:
    """An explicit insert-ecc spec that reproduces the `ecc` plans of graph g (one rule per layer and scheme)."""
    rules = []
    for op in g.ops:
        plan = op.attrs.get("ecc") if op.kind == "mvm" else None
        if not plan or not any(plan):
            continue
        xb = op.attrs["xbits"]
        by_sig: dict[int, int] = {}
        for i, code in enumerate(plan):
            s = i // xb + i % xb
            if by_sig.setdefault(s, code) != code:
                raise InternalError(f"ecc plan of {op.out} differs within significance {s}")
        for code in sorted(set(by_sig.values()) - {0}):
            sigs = sorted(s for s, c in by_sig.items() if c == code)
            # contiguous runs of significances -> sig>=a:sig<=b
            start = prev = sigs[0]
            for s in [*sigs[1:], None]:
                if s is not None and s == prev + 1:
                    prev = s
                    continue
                cond = f"sig={start}" if start == prev else f"sig>={start}:sig<={prev}"
                rules.append(f"{scheme(code).name}:layer={op.out}:{cond}")
                if s is not None:
                    start = prev = s
    return ";".join(rules)


def _check_spec(g: Any, spec: str) -> None:
    """The explicit spec must give every MVM exactly the plan auto-ecc chose."""
    from cramc.ir.passes.insert_ecc import parse_spec, plan_for

    rules = parse_spec(spec)
    for op in g.ops:
        if op.kind == "mvm" and plan_for(op, rules) != list(op.attrs.get("ecc") or plan_for(op, [])):
            raise InternalError(f"spec '{spec}' does not reproduce the ecc plan of {op.out}")


class VariantBuilder:
    """Compiles and caches the variants of a sweep, each model's frontend run once."""

    def __init__(self, o: SweepOptions, calibration: dict[str, np.ndarray] | None, log: TextIO):
        self.o = o
        self.calibration = calibration
        self.log = log
        self._frontends: dict[str, Frontend] = {}
        self._variants: dict[tuple[str, str], Variant] = {}
        self.specs: dict[tuple[str, float], str] = {}  # (protection, rate) -> explicit spec
        self.tech = _load_tech(o.tech, o.error_model)

    def frontend(self, model: str) -> Frontend:
        from cramc.frontend.pipeline import run_frontend

        if model not in self._frontends:
            self._frontends[model] = run_frontend(model, self.calibration, log=self.log)
        return self._frontends[model]

    def variants(self) -> list[Variant]:
        """Every variant compiled so far, once each."""
        return list(self._variants.values())

    def variant(self, protection: str, rate: float) -> Variant:
        from cramc.compiler import Options, lower

        o = self.o
        model = o.finetuned if protection in ("finetuned", "both") else o.model
        assert model is not None
        want = o.ecc if protection in ("ecc", "both") else ""
        if want == "auto":
            self.log.write(f"sweep: auto-ecc for {protection} at gate error {rate:g}\n")
            auto = Options(ecc="auto", ecc_budget=o.ecc_budget)
            g = lower(self.frontend(model), auto, self.log, faults=fault_model(rate, o.error_model, o.keep_shape))
            spec = spec_from_plans(g)
            _check_spec(g, spec)
        else:
            spec = want
        self.specs[(protection, rate)] = spec
        key = (model, spec)
        v = self._variants.get(key)
        if v is None:
            v = self._variants[key] = self._compile(model, spec)
        return v

    def _compile(self, model: str, spec: str) -> Variant:
        from cramc.compiler import Options, compile_frontend, lower
        from cramc.isa.parser import parse
        from cramc.isa.verifier import verify

        self.log.write(f"sweep: compiling {model}" + (f" with --ecc '{spec}'" if spec else "") + "\n")
        opts = Options(ecc=spec, trace=False, n_validation=1)
        text = compile_frontend(model, self.frontend(model), opts, self.log)
        v = Variant(model, spec, verify(parse(text, f"<{Path(model).name}>")))
        if self.o.mode == "statistical":
            v.graph = lower(self.frontend(model), opts, self.log, stop_before="schedule")
        return v


def _load_tech(path: str | None, error_model: str | None = None) -> Any:
    """The cost model's technology parameters, or None where cramc has no cost model.  With a base error model
    that has a [device] section, its CRAM gate energy and latency replace the file's (as in cramc run)."""
    try:
        from cramc.cost.params import Tech
    except ImportError:
        if path:
            raise UserError("--tech: this cramc has no cost model") from None
        return None
    tech = Tech.load(path)
    if error_model:
        from cramc.errmodel import load_error_model
        from cramc.errmodel.device import cost_overrides

        params = load_error_model(error_model).device
        if params is not None:
            tech = tech.with_overrides(cost_overrides(params, tech.name))
    return tech
