"""What a run counts: the event record shared by the simulator, the cost model and the reports.

`Counts` is the record the interpreter fills (summed over sample lanes) and
that REPORT.json, the sweep and the dynamic cost estimate read.  It lives in
the ISA layer, upstream of both the simulator (which counts) and the cost
model (which prices what is counted), so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Counts:
    """Row-level event counts, summed over sample lanes."""

    per_opcode: dict[str, dict[str, int]] = field(default_factory=dict)
    gate_evals: int = 0
    writes: int = 0  # host-data bits written (wr, fill)
    reads: int = 0  # bits sensed by rd
    tree_sensed: int = 0  # bits sensed by the adder trees
    reduces: int = 0  # adder-tree operations (one per array per tadd/tsub)
    recomputes: int = 0  # rows whose duplicated partial products disagreed and were recomputed in CMOS (td*)
    faults: dict[str, int] = field(default_factory=lambda: {"gate": 0, "write": 0, "read": 0, "tree": 0})

    def op(self, mnemonic: str, instrs: int, rows: int) -> None:
        d = self.per_opcode.get(mnemonic)
        if d is None:
            d = self.per_opcode[mnemonic] = {"instructions": 0, "row_ops": 0}
        d["instructions"] += instrs
        d["row_ops"] += rows

    def merge(self, other: Counts) -> None:
        for k, d in other.per_opcode.items():
            mine = self.per_opcode.setdefault(k, {"instructions": 0, "row_ops": 0})
            for kk, v in d.items():
                mine[kk] += v
        self.gate_evals += other.gate_evals
        self.writes += other.writes
        self.reads += other.reads
        self.tree_sensed += other.tree_sensed
        self.reduces += other.reduces
        self.recomputes += other.recomputes
        for k, v in other.faults.items():
            self.faults[k] += v

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())
