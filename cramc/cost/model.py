"""Latency, energy and area of a CRAM-ER program: static (from the program) and dynamic (from a run's counts).

Every opcode is costed through its unit in the opcode table (see
cramc/cost/params.py); the cost of one instruction is affine in what the
simulator counts for it:

    time   = latency_s                       all arrays of the set and all active rows at once
           + row_ops x cycle_s / ops_per_cycle   work serialised through a shared port
                                             (periphery writes and reads; CMOS lanes)
           (+ per-array excess)              writes and reads: where one array's periphery
                                             (row-wise or column-wise bits per cycle) is
                                             slower than its share of the port
                                             (`periphery_excess`, from the program)
           + drain                           an accumulator read waits for the adder-tree
                                             pipeline to empty (depth x stage delay)
    energy = row_ops x energy_j + instr_energy_j

The adder tree is pipelined: a tree instruction occupies it for one initiation
interval (its latency_s); the pipeline depth is paid once per accumulator read.
Instructions run one after another in program order: each one already uses
every array it names at once, and the compiler's stream is a dependence chain
at this granularity (a round's gates read the inputs its writes just stored,
the next round reuses the same columns), so overlapping independent
instructions is not modelled; the latency is an upper bound for a machine
that could.

Because the cost is affine in (instructions, row_ops) per opcode, the dynamic
estimate (from the counts of a run) and the static one (from the linked
program) agree exactly whenever the counts do, at any fault rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cramc.cost.params import OpCost, Tech
from cramc.cost.static import ProgramCounts, Tally, _Counter, _layer_labels, count_init, count_program
from cramc.isa import ast
from cramc.isa.counting import Counts
from cramc.isa.linked import BoundOp, Linked, Loop, MachineSpec, Node
from cramc.isa.opcodes import OPCODES


@dataclass
class Part:
    """Latency and energy of a part of a program (a layer, a unit, an opcode)."""

    latency_s: float = 0.0
    energy_j: float = 0.0
    instructions: int = 0
    row_ops: int = 0

    def add(self, cost: OpCost, instructions: int, row_ops: int) -> None:
        self.latency_s += cost.time(instructions, row_ops)
        self.energy_j += cost.energy(instructions, row_ops)
        self.instructions += instructions
        self.row_ops += row_ops

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "instructions": self.instructions,
            "row_ops": self.row_ops,
        }


@dataclass
class Estimate:
    """The cost of one inference (`.main`), the one-time setup (`.init`), and the chip's area."""

    method: str
    tech: str
    total: Part
    by_unit: dict[str, Part]
    by_opcode: dict[str, Part]
    setup: Part
    area_mm2: dict[str, float]
    layers: dict[str, Part] = field(default_factory=dict)
    recomputes: float = 0.0  # rows recomputed in CMOS per inference (duplicate-and-compare, dynamic only)

    @property
    def latency_s(self) -> float:
        return self.total.latency_s

    @property
    def energy_j(self) -> float:
        return self.total.energy_j

    @property
    def edp_js(self) -> float:
        return self.total.latency_s * self.total.energy_j

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "method": self.method,
            "tech": self.tech,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "edp_js": self.edp_js,
            "by_unit": {k: v.as_dict() for k, v in self.by_unit.items()},
            "by_opcode": {k: v.as_dict() for k, v in sorted(self.by_opcode.items())},
            "setup": self.setup.as_dict(),
            "area_mm2": self.area_mm2,
        }
        if self.recomputes:
            d["recomputes"] = self.recomputes
        if self.layers:
            d["layers"] = [{"layer": k, **v.as_dict()} for k, v in self.layers.items()]
        return d


def area_mm2(spec: MachineSpec, tech: Tech, units: set[str] | None = None) -> dict[str, float]:
    """Chip area: CRAM cells and their periphery, one adder tree and accumulator file per array, the CMOS unit.

    `units`: the units the program uses; a chip whose program uses no adder
    tree (or no accumulators), such as the CRAM-only baseline, is built without
    them.  None: all of them.

    The adder tree of an array of R rows: R sense amplifiers, then stages s = 1 ..
    ceil(log2 R) of ceil(R / 2^s) adders of s bits with (s + 1)-bit pipeline
    registers, then a 64-bit accumulate stage.
    """
    um2 = 1e-6
    cells = spec.arrays * spec.rows * spec.cols * tech.num("array", "cell_area_um2") * um2
    periphery = cells * tech.num("array", "periphery_fraction")
    fa, reg, sense = (tech.num("tree", k) for k in ("fa_area_um2", "reg_area_um2", "sense_area_um2"))
    tree = spec.rows * sense + 64 * (fa + reg)
    for s in range(1, max(1, math.ceil(math.log2(max(spec.rows, 2)))) + 1):
        adders = math.ceil(spec.rows / 2**s)
        tree += adders * (s * fa + (s + 1) * reg)
    trees = spec.arrays * tree * um2 if units is None or "tree" in units else 0.0
    with_accs = units is None or "acc" in units
    accs = spec.arrays * spec.accs * 64 * tech.num("acc", "bit_area_um2") * um2 if with_accs else 0.0
    cmos = tech.num("cmos", "area_mm2")
    total = cells + periphery + trees + accs + cmos
    return {
        "cells": cells,
        "periphery": periphery,
        "adder_trees": trees,
        "accumulators": accs,
        "cmos": cmos,
        "total": total,
    }


def _cost(tally: Tally, costs: dict[str, OpCost]) -> tuple[Part, dict[str, Part], dict[str, Part]]:
    total = Part()
    by_unit: dict[str, Part] = {}
    by_op: dict[str, Part] = {}
    for mn, (instrs, rows) in sorted(tally.ops.items()):  # a fixed order: equal counts, equal sums
        if not instrs and not rows:
            continue
        c = costs.get(mn)
        if c is None:
            raise KeyError(f"opcode '{mn}' is not in the opcode table")
        total.add(c, instrs, rows)
        by_unit.setdefault(c.unit, Part()).add(c, instrs, rows)
        by_op.setdefault(mn, Part()).add(c, instrs, rows)
    return total, by_unit, by_op


def estimate_counts(
    main: Tally, init: Tally, spec: MachineSpec, tech: Tech, method: str, layers: dict[str, Tally] | None = None
) -> Estimate:
    costs = tech.op_costs(spec.rows)
    total, by_unit, by_op = _cost(main, costs)
    setup, _, _ = _cost(init, costs)
    lay = {k: _cost(v, costs)[0] for k, v in (layers or {}).items()}
    units = {costs[mn].unit for t in (main, init) for mn, (i, r) in t.ops.items() if i or r}
    return Estimate(method, tech.name, total, by_unit, by_op, setup, area_mm2(spec, tech, units), lay)


def active_rows(b: BoundOp, rows: int) -> int:
    """The rows instruction b works on (the chip's `rows` when it names none)."""
    return (b.rows[1] - b.rows[0]) if b.rows is not None else rows


def periphery_excess(linked: Linked, tech: Tech) -> dict[tuple[str, str], float]:
    """(layer, mnemonic) -> the time per inference that the per-array periphery limits add to `.main`'s
    writes and reads beyond the chip-wide port (OpCost.array_excess); empty when the technology sets none.

    It depends on each instruction's arrays, rows and columns, not only on the counts, so it is taken from
    the program for the static and the dynamic estimate alike (counts do not depend on data)."""
    costs = tech.op_costs(linked.machine.rows)
    if not any(c.per_array for c in costs.values()):
        return {}
    counter = _Counter(linked)
    out: dict[tuple[str, str], float] = {}

    def go(nodes: tuple[Node, ...], mult: int, label: str | None) -> None:
        for n in nodes:
            if isinstance(n, Loop):
                go(n.body, mult * n.count, label)
                continue
            r = counter.row_ops(n)  # every node, in order: the counter infers CMOS shapes as it goes
            c = costs[n.op.mnemonic]
            if label is None or not c.per_array or n.arrays is None:
                continue
            x = c.array_excess(n.arrays[1] - n.arrays[0], active_rows(n, linked.machine.rows), r)
            if x:
                out[(label, n.op.mnemonic)] = out.get((label, n.op.mnemonic), 0.0) + mult * x

    go(linked.init, 1, None)
    sections = {s.name: s for s in linked.program.items if isinstance(s, ast.Section)}
    labels = _layer_labels(sections.get("main"))
    for n in linked.main:
        loc = n.site[0] if isinstance(n, BoundOp) and n.site else n.loc
        go((n,), 1, labels.get(loc.line, "main") if loc is not None else "main")
    return out


def _add_excess(est: Estimate, excess: dict[tuple[str, str], float]) -> Estimate:
    for (layer, mn), x in excess.items():
        est.total.latency_s += x
        est.by_unit[OPCODES[mn].unit.value].latency_s += x
        est.by_opcode[mn].latency_s += x
        if layer in est.layers:
            est.layers[layer].latency_s += x
    return est


def static_estimate(linked: Linked, tech: Tech, counts: ProgramCounts | None = None) -> Estimate:
    """From the program alone: every instruction of `.main` (loops multiplied) costed by its unit."""
    pc = counts or count_program(linked)
    est = estimate_counts(pc.main_total, pc.init_total, linked.machine, tech, "static", pc.main)
    return _add_excess(est, periphery_excess(linked, tech))


def tally_of_run(counts: Counts, samples: int) -> Tally:
    """The per-opcode counts of a run, per inference (the simulator sums them over samples)."""
    t = Tally()
    n = max(samples, 1)
    for mn, d in counts.per_opcode.items():
        i, r = d["instructions"], d["row_ops"]
        if i % n or r % n:
            raise ValueError(f"counts of '{mn}' are not a multiple of the {n} samples")
        t.add(mn, i // n, r // n)
    return t


def dynamic_estimate(counts: Counts, samples: int, linked: Linked, tech: Tech, init: Tally | None = None) -> Estimate:
    """From the counts of a run.

    The simulator starts every sample on a fresh chip and runs `.init` (the
    weight writes) for each; the hardware runs it once.  Counts do not depend on
    data, so the `.init` part is known exactly from the program and is taken off
    to leave the cost of one inference; it is reported as the setup.
    """
    per = tally_of_run(counts, samples)
    init = init if init is not None else count_init(linked)
    main = per.minus(init)
    bad = [mn for mn, (i, r) in main.ops.items() if i < 0 or r < 0]
    if bad:
        raise ValueError(f"run counts are smaller than the program's .init counts for {', '.join(bad)}")
    est = _add_excess(estimate_counts(main, init, linked.machine, tech, "dynamic"), periphery_excess(linked, tech))
    # Rows a duplicate-and-compare tree op recomputed in CMOS: they happen only where faults made the
    # copies differ, so a static estimate (fault-free) has none.
    recomputes = getattr(counts, "recomputes", 0) / max(samples, 1)
    if recomputes:
        e = recompute_energy(recomputes, tech)
        est.total.energy_j += e
        est.by_unit.setdefault("tree", Part()).energy_j += e
        est.recomputes = recomputes
    return est


def recompute_energy(recomputes: float, tech: Tech) -> float:
    """Energy of `recomputes` rows duplicate-and-compare recomputed in CMOS (``[tree] recompute_energy_j``)."""
    return recomputes * float(tech.num("tree", "recompute_energy_j", 0.0))


def every_opcode_costed(tech: Tech, rows: int = 256) -> dict[str, OpCost]:
    """The cost of every opcode of the table (raises if one cannot be costed)."""
    costs = tech.op_costs(rows)
    missing = set(OPCODES) - set(costs)
    if missing:
        raise KeyError(f"no cost for {', '.join(sorted(missing))}")
    return costs
