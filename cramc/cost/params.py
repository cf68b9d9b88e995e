"""Technology parameters of the cost model: the shipped TOML defaults, merged with a user file.

The file is plain data (see cramc/cost/tech/default.toml for every key and
docs/cost-model.md for the source of every figure).  Costs of instructions are
looked up through the opcode table: an opcode's unit names a section
(``[gate]``, ``[write]``, ...), a sub-table named after the mnemonic
(``[gate.maj5]``) overrides single keys of it.  So an opcode added to the table
is costed by its unit's figures without any change here.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from cramc.errors import UserError
from cramc.isa.opcodes import OPCODES, Kind, Opcode, Unit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Keys a unit section or an opcode sub-table may set, with their defaults.
OP_KEYS: dict[str, float] = {
    "latency_s": 0.0,
    "energy_j": 0.0,
    "instr_energy_j": 0.0,
    "cycle_s": 0.0,
    "ops_per_cycle": 1.0,
    # the periphery of one array ([write], [read]): bits it moves per cycle_s along a row (row-wise access:
    # one row, several columns) and along a column (column-wise: one column, several rows); 0: no per-array
    # limit, only the chip-wide port (ops_per_cycle) serialises
    "array_row_bits_per_cycle": 0.0,
    "array_col_bits_per_cycle": 0.0,
}


@dataclass(frozen=True)
class OpCost:
    """The cost of one opcode, affine in what the simulator counts.

    time   = instructions * latency_s + row_ops * op_time_s (+ drain_s per instruction)
    energy = instructions * instr_energy_j + row_ops * energy_j
    """

    mnemonic: str
    unit: str
    latency_s: float  # per instruction
    op_time_s: float  # per row op: serialised through a shared port
    energy_j: float  # per row op
    instr_energy_j: float  # per instruction
    cycle_s: float = 0.0
    row_bits: float = 0.0  # per array, row-wise access: bits per cycle (0: no per-array limit)
    col_bits: float = 0.0  # per array, column-wise access: bits per cycle (0: no per-array limit)

    def time(self, instructions: float, row_ops: float) -> float:
        return instructions * self.latency_s + row_ops * self.op_time_s

    @property
    def per_array(self) -> bool:
        """Whether one array's periphery limits this opcode (beyond the chip-wide port)."""
        return self.cycle_s > 0 and (self.row_bits > 0 or self.col_bits > 0)

    def array_excess(self, arrays: int, rows: int, row_ops: int) -> float:
        """Time one instruction takes beyond `time(1, row_ops)` because each of its `arrays` arrays moves its
        rows x columns bits through its own periphery: row-wise rows x ceil(columns / row_bits) cycles,
        column-wise columns x ceil(rows / col_bits), whichever the array allows and is faster, against the
        chip-wide port's row_ops / ops_per_cycle cycles (the two work at once: the slower one counts)."""
        if not self.per_array or arrays <= 0 or rows <= 0 or row_ops <= 0:
            return 0.0
        cols = row_ops // (arrays * rows)
        ways = []
        if self.row_bits > 0:
            ways.append(rows * math.ceil(cols / self.row_bits))
        if self.col_bits > 0:
            ways.append(cols * math.ceil(rows / self.col_bits))
        return max(0.0, min(ways) * self.cycle_s - row_ops * self.op_time_s)

    def energy(self, instructions: float, row_ops: float) -> float:
        return instructions * self.instr_energy_j + row_ops * self.energy_j


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


UNIT_SECTIONS = tuple(u.value for u in Unit)


def merge_tech(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into `base` key by key; the most specific figure of the later file wins.

    A unit-level figure in `over` ([gate] energy_j) replaces that figure in every
    opcode sub-table of `base` ([gate.maj5] energy_j) too: setting a unit's energy
    sets it for all its opcodes, except those `over` itself gives one for.
    """
    out = _merge(base, over)
    for unit in UNIT_SECTIONS:
        o, b = over.get(unit), base.get(unit)
        if not isinstance(o, dict) or not isinstance(b, dict):
            continue
        for key, v in o.items():
            if isinstance(v, dict):
                continue
            for mn, sub in b.items():
                if isinstance(sub, dict) and key in sub and not (isinstance(o.get(mn), dict) and key in o[mn]):
                    out[unit][mn] = {k: x for k, x in out[unit][mn].items() if k != key}
    return out


def default_path() -> Path:
    return Path(str(resources.files("cramc.cost") / "tech" / "default.toml"))


def _read(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise UserError(f"{path}: cannot read the technology file: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None


class Tech:
    """A set of technology parameters (defaults merged with an optional user file)."""

    def __init__(self, data: dict[str, Any], name: str = "default", sources: tuple[str, ...] = ()):
        self.data = data
        self.name = str(data.get("name", name))
        self.sources = sources
        self._check()

    @classmethod
    def load(cls, path: str | Path | None = None) -> Tech:
        base = _read(default_path())
        if path is None:
            return cls(base, sources=(str(default_path()),))
        shipped = Path(str(resources.files("cramc.cost") / "tech" / f"{path}.toml"))
        p = shipped if not Path(path).exists() and shipped.exists() else Path(path)
        return cls(merge_tech(base, _read(p)), sources=(str(default_path()), str(p)))

    def with_overrides(self, over: dict[str, Any]) -> Tech:
        """A copy with some figures replaced (nested dicts: {"gate": {"latency_s": 1e-9}}), merged as a file is."""
        return Tech(merge_tech(self.data, over), sources=(*self.sources, "<overrides>"))

    # ------------------------------------------------------------ lookups
    def section(self, name: str) -> dict[str, Any]:
        s = self.data.get(name)
        if not isinstance(s, dict):
            raise UserError(f"technology file: missing section [{name}]")
        return s

    def get(self, section: str, key: str, default: Any = None) -> Any:
        v = self.section(section).get(key, default)
        if v is None:
            raise UserError(f"technology file: [{section}] needs {key} = ...")
        return v

    def num(self, section: str, key: str, default: float | None = None) -> float:
        v = self.get(section, key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise UserError(f"technology file: [{section}] {key} must be a non-negative number, got {v!r}")
        return float(v)

    def op_value(self, op: Opcode, key: str) -> float:
        """[unit.mnemonic] key, else [unit] key, else the key's default."""
        unit = self.data.get(op.unit.value)
        if not isinstance(unit, dict):
            raise UserError(
                f"technology file: no section [{op.unit.value}] for unit '{op.unit.value}' of opcode '{op.mnemonic}'"
            )
        sub = unit.get(op.mnemonic)
        v = sub.get(key) if isinstance(sub, dict) else None
        if v is None:
            v = unit.get(key, OP_KEYS[key])
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            where = f"[{op.unit.value}.{op.mnemonic}]" if isinstance(sub, dict) and key in sub else f"[{op.unit.value}]"
            raise UserError(f"technology file: {where} {key} must be a non-negative number, got {v!r}")
        return float(v)

    def op_cost(self, op: Opcode) -> OpCost:
        cycle = self.op_value(op, "cycle_s")
        per = self.op_value(op, "ops_per_cycle")
        if per <= 0:
            raise UserError(f"technology file: ops_per_cycle of '{op.mnemonic}' must be positive")
        return OpCost(
            op.mnemonic,
            op.unit.value,
            latency_s=self.op_value(op, "latency_s"),
            op_time_s=cycle / per,
            energy_j=self.op_value(op, "energy_j"),
            instr_energy_j=self.op_value(op, "instr_energy_j"),
            cycle_s=cycle,
            row_bits=self.op_value(op, "array_row_bits_per_cycle"),
            col_bits=self.op_value(op, "array_col_bits_per_cycle"),
        )

    def op_costs(self, rows: int) -> dict[str, OpCost]:
        """The cost of every opcode of the table on arrays of `rows` rows (accumulator reads include the drain)."""
        out: dict[str, OpCost] = {}
        for mn, op in OPCODES.items():
            c = self.op_cost(op)
            drain = self.drain_s(op, rows)
            out[mn] = replace(c, latency_s=c.latency_s + drain) if drain else c
        return out

    def tree_depth(self, rows: int) -> int:
        """Pipeline stages of the adder tree of an array of `rows` rows: the popcount stages + the accumulate."""
        return max(1, math.ceil(math.log2(max(rows, 2)))) + 1

    def drain_s(self, op: Opcode, rows: int) -> float:
        """Extra latency of an instruction that reads accumulators: the adder-tree pipeline drains first.

        Derived from the opcode table: an ACC-unit instruction with an accumulator
        operand it does not write (``ard``) reads the accumulators.
        """
        if op.unit is not Unit.ACC:
            return 0.0
        reads = any(o.kind in (Kind.ACC, Kind.ACCS) and not o.writes for o in op.operands)
        return self.tree_depth(rows) * self.num("tree", "stage_delay_s") if reads else 0.0

    def devices(self) -> dict[str, dict[str, Any]]:
        devs = self.data.get("device", {})
        if not isinstance(devs, dict):
            raise UserError("technology file: [device.NAME] sections expected")
        return devs

    def _check(self) -> None:
        for op in OPCODES.values():
            self.op_cost(op)
        for unit in UNIT_SECTIONS:
            sec = self.data.get(unit, {})
            for where, table in [
                (f"[{unit}]", sec),
                *((f"[{unit}.{k}]", v) for k, v in sec.items() if isinstance(v, dict)),
            ]:
                for key in OP_KEYS:
                    v = table.get(key)
                    if v is not None and (
                        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
                    ):
                        raise UserError(f"technology file: {where} {key} must be a non-negative number, got {v!r}")
        for name, d in self.devices().items():
            for k in ("peak_ops_per_s", "power_w", "memory_bandwidth_bytes_per_s"):
                v = d.get(k)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                    raise UserError(f"technology file: [device.{name}] {k} must be a positive number")
            mem = d.get("memory", "hbm")
            if mem not in self.data or "energy_j_per_bit" not in self.data[mem]:
                raise UserError(
                    f"technology file: [device.{name}] memory = {mem!r} needs a section [{mem}] with energy_j_per_bit"
                )
