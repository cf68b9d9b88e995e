"""`cramc sweep`: accuracy under gate faults across error rates, protections and seeds.

A sweep answers "which protection pays off at which gate error rate" for one
model on labelled data.  It compiles every program variant it needs once,

    none       the model, unprotected
    ecc        the model under an error-correction spec (`--ecc`, default
               ``auto``: the auto-ecc pass, tuned anew for each gate error rate)
    finetuned  the error-aware fine-tuned model (`--finetuned TUNED.onnx`)
    both       the fine-tuned model under the same error correction

then runs every (gate error rate, protection, seed) on the data and reports,
per (rate, protection), the mean accuracy over seeds with a 95% confidence
interval, and the per-inference event counts that make up the protection's
overhead (gate evaluations, writes, reads, adder-tree sensed bits, CMOS
recomputes, and the cost model's latency and energy).  The simulator repeats
`.init` (loading the weights) for every sample; its events are taken off the
per-inference counts, and its writes reported once as ``init_writes``.

Two simulation modes:

- ``gate`` (default): the bit-level interpreter (cramc.sim.interp) on the
  compiled program, exactly as ``cramc run PROG --gate-error P --seed S``.
- ``statistical``: the IR evaluated exactly except that each MVM output gets
  an error drawn from the binomial model of cramc.ir.noisy, derived from the
  same fault model.  For gate and read faults this has the same distribution
  as the gate-level run (each partial-product row fails independently, and
  the accumulator error is the signed, shifted sum of those flips); it does
  not model write faults (weights and activations written into the arrays)
  or adder-tree faults, and it draws different random numbers, so its
  results equal gate-level results in distribution, not sample by sample.
  Event counts in this mode come from one fault-free gate-level inference
  (they do not depend on faults), and recomputes are their expected value.

Confidence interval: a Student-t interval over the per-seed accuracies
(mean +- t(0.975, n-1) * sd / sqrt(n), clipped to [0, 1]): it measures the spread the random
faults cause on this fixed data set.  A Wilson score interval over all
(seed, sample) trials pooled is recorded too (``wilson_low``/``wilson_high``)
and is what the plot shows when there is a single seed.

Reproducibility: seed s of a run is the simulator seed (``cramc run --seed
s``); seeds are 0 .. n-1.  Same inputs, options and seeds give the same file.

The package: `options` (what to sweep), `variants` (the programs, compiled
through cramc.compiler), `running` (the points and their rows), `stats` (the
intervals) and `output` (files, plot, table, the command).
"""

from __future__ import annotations

from cramc.sweep.options import (
    MODES,
    PROTECTIONS,
    SweepOptions,
    check_options,
    fault_model,
    parse_protections,
    parse_rates,
)
from cramc.sweep.output import format_table, main_sweep, plot, write_results
from cramc.sweep.running import COST_FIELDS, COUNT_FIELDS, REL_FIELDS, SweepResult, run_sweep
from cramc.sweep.stats import t975, t_interval, wilson
from cramc.sweep.variants import Variant, VariantBuilder, spec_from_plans

__all__ = [
    "COST_FIELDS",
    "COUNT_FIELDS",
    "MODES",
    "PROTECTIONS",
    "REL_FIELDS",
    "SweepOptions",
    "SweepResult",
    "Variant",
    "VariantBuilder",
    "check_options",
    "fault_model",
    "format_table",
    "main_sweep",
    "parse_protections",
    "parse_rates",
    "plot",
    "run_sweep",
    "spec_from_plans",
    "t975",
    "t_interval",
    "wilson",
    "write_results",
]
