"""Pass auto-ecc: measure where faults hurt, then protect the most sensitive bits within a budget.

For a gate error rate (or a full fault model) the pass
1. measures, on the calibration inputs and with the statistical fault model of
   cramc.ir.noisy, how often the network's top-1 output changes when faults hit
   only one layer at one partial-product significance (b + c), unprotected and
   under each scheme of the registry cramc.ir.ecc (tmr, vote, dup and their
   replica forms); when the fault model has static defects (``[defects]``) the
   model draws them too, for the layer and scheme being scored
   (cramc.ir.noisy.layer_defects: defective weight, input and scratch cells,
   each sample on a chip of its own);
2. greedily picks the (layer, significance, scheme) choices with the best
   damage reduction per unit of overhead until the overhead reaches the budget
   (a fraction of the unprotected in-array operation count: every AND and every
   adder-tree operation of every MVM, which is what serialises in the arrays;
   a scheme with operand replicas also pays its extra input writes).  Without
   defects a replica scheme is skipped where its error rates are a cheaper
   scheme's (replicas act only on defective cells, so it cannot gain more);
   with defects every scheme is scored, and a replica form wins where defective
   operand cells, which every copy of its base scheme reads alike, dominate;
3. writes the plan as ``ecc=[...]`` exactly as insert-ecc does, and reports the
   damage predicted with and without it (defects included).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar, TextIO

import numpy as np

from cramc.errmodel import FaultModel
from cramc.ir.ecc import NONE, describe, protections
from cramc.ir.graph import Graph, Op
from cramc.ir.noisy import LayerDefects, all_defects, layer_defects, layer_rates, noisy_evaluate
from cramc.ir.semantics import evaluate, infer_shapes


@dataclass(eq=False)
class AutoEcc:
    faults: FaultModel
    budget: float
    calibration: dict[str, np.ndarray]
    seeds: int = 2
    max_samples: int = 64
    log: TextIO = field(default=sys.stderr)
    name: str = "auto-ecc"
    #: the plan must be known before tiling reserves each MVM's scratch columns
    requires: ClassVar[frozenset[str]] = frozenset({"no-conv", "untiled"})
    ensures: ClassVar[frozenset[str]] = frozenset()
    changes_input: ClassVar[bool] = True  # sets ecc= on the MVMs in place

    def run(self, g: Graph) -> Graph:
        shapes = infer_shapes(g)
        inputs = {k: v[: self.max_samples] for k, v in self.calibration.items()}
        # the fault-free values of every op: each scoring draws faults in one layer only, so the layers before
        # it (and any op no fault reaches) are taken from here, and that layer's per-term counts are kept
        self._clean = evaluate(g, inputs, keep=True)
        self._memo: dict[str, dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]]] = {}
        ref_out = self._clean[g.outputs[0].name]
        ref = ref_out.reshape(ref_out.shape[0], -1).astype(np.float64)
        self._spread = float(((ref - ref.mean(axis=0)) ** 2).sum(axis=1).mean()) or 1.0
        mvms = [op for op in g.ops if op.kind == "mvm"]
        work = {op.out: shapes[op.ins[0][1:]][0][0] * g.consts[op.attrs["w"][1:]].shape[0] for op in mvms}
        base = sum(work[op.out] * op.attrs["wbits"] * op.attrs["xbits"] * NONE.ops_per_term for op in mvms)
        cands: list[tuple[float, float, Op, int, int]] = []
        for op in mvms:
            terms = self._terms(op)
            for sig, n in terms.items():
                d_none = self._damage(g, inputs, ref, op, sig, NONE.code)
                if d_none <= 0:
                    continue
                best = self._best(g, inputs, ref, op, sig, d_none, work[op.out] * n)
                if best:
                    cands.append(best)
        cands.sort(key=lambda c: -c[0] / c[1])
        spent = 0.0
        plans = {op.out: [0] * (op.attrs["wbits"] * op.attrs["xbits"]) for op in mvms}
        for _gain, cost, op, sig, scheme in cands:
            if spent + cost > self.budget * base:
                continue
            spent += cost
            xb = op.attrs["xbits"]
            for i in range(len(plans[op.out])):
                if i // xb + i % xb == sig:
                    plans[op.out][i] = scheme
        before = self._top1_all(g, inputs, ref)
        for op in mvms:
            if any(plans[op.out]):
                op.attrs["ecc"] = plans[op.out]
        after = self._top1_all(g, inputs, ref)
        self.log.write(
            f"auto-ecc: budget {self.budget:.0%} of {base} in-array operations, used {spent / base:.1%}; "
            f"predicted top-1 changes on calibration data: {before:.1%} unprotected -> {after:.1%}\n"
        )
        for op in mvms:
            if any(plans[op.out]):
                self.log.write(
                    f"auto-ecc:   {op.origin or op.out}: "
                    f"{describe(plans[op.out], op.attrs['wbits'], op.attrs['xbits'])}\n"
                )
        return g

    def _best(
        self, g: Graph, inputs: dict[str, np.ndarray], ref: np.ndarray, op: Op, sig: int, d_none: float, work: int
    ) -> tuple[float, float, Op, int, int] | None:
        """The scheme with the best damage reduction per unit of overhead at (op, sig): (gain, cost, op, sig, code)."""
        best = None
        seen: list[tuple[float, float, float]] = []
        for s in protections():
            rates = s.pp_error_rates(self.faults)
            if rates in seen and not self.faults.defects.any:  # the rates of a cheaper scheme (a replica form,
                continue  # whose extra cells matter only against defects, and there are none): it cannot gain more
            seen.append(rates)
            gain = d_none - self._damage(g, inputs, ref, op, sig, s.code)
            cost = work * (s.ops_per_term - NONE.ops_per_term + s.extra_writes(op.attrs["wbits"]))
            if gain > 0 and (best is None or gain / cost > best[0] / best[1]):
                best = (gain, cost, op, sig, s.code)
        return best

    @staticmethod
    def _terms(op: Op) -> dict[int, int]:
        out: dict[int, int] = {}
        for b in range(op.attrs["wbits"]):
            for c in range(op.attrs["xbits"]):
                out[b + c] = out.get(b + c, 0) + 1
        return out

    def _score(self, out: dict[str, np.ndarray], ref: np.ndarray) -> tuple[float, float]:
        """(top-1 changes, output error energy relative to the outputs' spread) on the calibration set."""
        first = next(iter(out.values()))
        y = first.reshape(first.shape[0], -1).astype(np.float64)
        top1 = float((y.argmax(axis=1) != ref.argmax(axis=1)).mean())
        return top1, float(((y - ref) ** 2).sum(axis=1).mean()) / self._spread

    def _damage(self, g: Graph, inputs: dict[str, np.ndarray], ref: np.ndarray, op: Op, sig: int, scheme: int) -> float:
        rates = {op.out: layer_rates(self.faults, op, only_sig=sig, scheme_override=scheme)}
        d = layer_defects(self.faults, op, only_sig=sig, scheme_override=scheme)
        return self._mean_damage(g, inputs, ref, rates, {op.out: d} if d is not None else {})

    def _top1_all(self, g: Graph, inputs: dict[str, np.ndarray], ref: np.ndarray) -> float:
        rates = {op.out: layer_rates(self.faults, op) for op in g.ops if op.kind == "mvm"}
        defects = all_defects(g, self.faults)
        return (
            sum(self._score(self._noisy(g, inputs, rates, s, defects), ref)[0] for s in range(self.seeds)) / self.seeds
        )

    def _noisy(
        self,
        g: Graph,
        inputs: dict[str, np.ndarray],
        rates: dict[str, np.ndarray],
        seed: int,
        defects: dict[str, LayerDefects],
    ) -> dict[str, np.ndarray]:
        """The graph's first output under faults drawn from `seed` (noisy_evaluate from the clean values)."""
        out = noisy_evaluate(
            g, inputs, rates, np.random.default_rng(seed), defects=defects, clean=self._clean, memo=self._memo
        )
        return {g.outputs[0].name: out[g.outputs[0].name]}

    def _mean_damage(
        self,
        g: Graph,
        inputs: dict[str, np.ndarray],
        ref: np.ndarray,
        rates: dict[str, np.ndarray],
        defects: dict[str, LayerDefects],
    ) -> float:
        """Top-1 changes plus the relative output error (so that bits too small to flip a class alone still rank)."""
        d = 0.0
        for s in range(self.seeds):
            out = self._noisy(g, inputs, rates, s, defects)
            top1, energy = self._score(out, ref)
            d += top1 + energy
        return d / self.seeds
