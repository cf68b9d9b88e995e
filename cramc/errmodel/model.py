"""The fault model: what can flip in a CRAM-ER chip and how often, and where those rates come from.

Every CRAM gate writes its output cell; that write can go wrong.  A gate of
type g whose correct output is 0 produces 1 with probability ``p01[g]`` and a
correct 1 becomes 0 with probability ``p10[g]``, independently per row and per
array.  Writes of host data and sensed reads (rd, and the adder tree's sensing
of a column) have their own optional rates; the adder tree itself and the CMOS
vector unit are exact unless a tree rate is configured.

A `FaultModel` is plain data: the compiler (``--ecc auto``), the statistical
mode (cramc/ir/noisy.py), fine-tuning (cramc/train) and the simulator all read
it, and only the simulator samples it (cramc/sim/faults.py).  It comes from
``--gate-error P`` (`FaultModel.uniform`), from a TOML file or from a shipped
preset (isa/error_models/NAME.toml, installed as cramc.lang);
docs/error-model.md gives the TOML format and the sources of the presets'
numbers.  Each top-level table of the TOML document is read by its own
function below: a new section is one such function, its entry in `SECTIONS` and
the `FaultModel` field it fills.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cramc.errors import Loc, UserError
from cramc.isa.opcodes import OPCODES, Unit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: The CRAM gates, in opcode-table order: each has its own rate.
GATE_NAMES = tuple(op.mnemonic for op in OPCODES.values() if op.unit is Unit.GATE)
#: The top-level tables of an error-model document that set rates, in the order error messages list them.
SECTIONS = ("gates", "write", "read", "tree")
#: Top-level keys that describe the document rather than set a rate.
META_KEYS = ("name", "source", "preset")
#: The keys of a rate table: ``p`` sets both directions, ``p01``/``p10`` one each (overriding ``p``).
RATE_KEYS = ("p", "p01", "p10")
#: Named error models shipped with cramc: isa/error_models/NAME.toml, installed in the package cramc.lang.
PRESET_DIR = "error_models"


@dataclass(frozen=True)
class Rate:
    """Asymmetric flip probabilities: p01 (0 read as 1) and p10 (1 read as 0)."""

    p01: float = 0.0
    p10: float = 0.0

    @property
    def zero(self) -> bool:
        return self.p01 == 0.0 and self.p10 == 0.0

    @property
    def pmax(self) -> float:
        return max(self.p01, self.p10)

    @property
    def symmetric(self) -> bool:
        return self.p01 == self.p10


@dataclass(frozen=True)
class FaultModel:
    """The flip rates of one chip: per gate type, of host writes, of sensed reads, of adder-tree count bits.

    A gate missing from `gates` is exact.  The default model is fault-free.
    """

    gates: dict[str, Rate] = field(default_factory=dict)
    write: Rate = Rate()
    read: Rate = Rate()
    tree: float = 0.0  # each bit of an adder-tree partial sum flips with this probability
    name: str = "fault-free"

    def gate(self, mnemonic: str) -> Rate:
        return self.gates.get(mnemonic, Rate())

    @property
    def fault_free(self) -> bool:
        return all(r.zero for r in self.gates.values()) and self.write.zero and self.read.zero and self.tree == 0.0

    @staticmethod
    def uniform(p: float) -> FaultModel:
        """Every gate flips its output with probability p, symmetric; writes and reads exact."""
        _check_p(p, "--gate-error")
        return FaultModel({g: Rate(p, p) for g in GATE_NAMES}, name=f"uniform gate error {p:g}")

    def with_gate_error(self, p: float) -> FaultModel:
        """This model with every gate at p, symmetric (``--gate-error`` over ``--error-model``): writes and
        reads keep their rates."""
        _check_p(p, "--gate-error")
        return replace(self, gates={g: Rate(p, p) for g in GATE_NAMES}, name=f"{self.name}, gate error {p:g}")

    def to_dict(self) -> dict[str, Any]:
        """The model as REPORT.json records it."""
        return {
            "name": self.name,
            "gates": {g: {"p01": r.p01, "p10": r.p10} for g, r in self.gates.items()},
            "write": {"p01": self.write.p01, "p10": self.write.p10},
            "read": {"p01": self.read.p01, "p10": self.read.p10},
            "tree": self.tree,
        }


def _check_p(p: float, what: str) -> None:
    if not (isinstance(p, (int, float)) and math.isfinite(p) and 0.0 <= p <= 1.0):
        raise UserError(f"{what}: a probability must be between 0 and 1, got {p}")


def _rate(v: Any, where: str, file: str) -> Rate:
    """A rate given as a number (both directions) or a table of `RATE_KEYS`."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        _check_p(float(v), f"{file}: {where}")
        return Rate(float(v), float(v))
    if isinstance(v, dict):
        unknown = set(v) - set(RATE_KEYS)
        if unknown:
            raise UserError(
                f"{file}: {where}: unknown key(s) {', '.join(sorted(unknown))} (use {', '.join(RATE_KEYS)})"
            )
        base = v.get("p", 0.0)
        p01, p10 = v.get("p01", base), v.get("p10", base)
        for k, x in (("p01", p01), ("p10", p10)):
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                raise UserError(f"{file}: {where}.{k} must be a number")
            _check_p(float(x), f"{file}: {where}.{k}")
        return Rate(float(p01), float(p10))
    raise UserError(f"{file}: {where} must be a number or a table with {', '.join(RATE_KEYS)}")


def _gates(doc: dict[str, Any], file: str) -> dict[str, Rate]:
    """[gates]: ``default`` for every gate, then one entry per gate that overrides it."""
    gdoc = doc.get("gates", {})
    if not isinstance(gdoc, dict):
        raise UserError(f"{file}: [gates] must be a table")
    gates: dict[str, Rate] = {}
    default = gdoc.get("default")
    if default is not None:
        r = _rate(default, "gates.default", file)
        gates = {g: r for g in GATE_NAMES}
    for k, v in gdoc.items():
        if k == "default":
            continue
        if k not in GATE_NAMES:
            raise UserError(f"{file}: gates.{k}: not a gate (gates are {', '.join(GATE_NAMES)})")
        gates[k] = _rate(v, f"gates.{k}", file)
    return gates


def _tree(doc: dict[str, Any], file: str) -> float:
    """``tree``: the flip probability of each adder-tree count bit, a number or a table with ``p``."""
    tree = doc.get("tree", 0.0)
    if isinstance(tree, dict):
        tree = tree.get("p", 0.0)
    if not isinstance(tree, (int, float)):
        raise UserError(f"{file}: tree must be a number")
    _check_p(float(tree), f"{file}: tree")
    return float(tree)


def parse_error_model(doc: dict[str, Any], file: str = "<error model>") -> FaultModel:
    """Build a FaultModel from a TOML document (see docs/error-model.md); `file` names it in errors."""
    unknown = set(doc) - set(SECTIONS) - set(META_KEYS)
    if unknown:
        raise UserError(f"{file}: unknown section(s) {', '.join(sorted(unknown))} (expected {', '.join(SECTIONS)})")
    gates = _gates(doc, file)
    tree = _tree(doc, file)
    return FaultModel(
        gates,
        _rate(doc.get("write", 0.0), "write", file),
        _rate(doc.get("read", 0.0), "read", file),
        tree,
        str(doc.get("name", Path(file).stem)),
    )


def preset_names() -> list[str]:
    """The names of the shipped error-model presets (docs/error-model.md)."""
    folder = importlib.resources.files("cramc.lang").joinpath(PRESET_DIR)
    return sorted(e.name[: -len(".toml")] for e in folder.iterdir() if e.name.endswith(".toml"))


def _load_toml(data: bytes, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"error model {where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e.args[0] if e.args else e)
        # Python < 3.14 has no lineno/colno; the position is only in the message
        at = re.search(r" \(at line (\d+), column (\d+)\)$", msg)
        line = getattr(e, "lineno", None) or (int(at.group(1)) if at else 1)
        col = getattr(e, "colno", None) or (int(at.group(2)) if at else 1)
        if at:
            msg = msg[: at.start()]
        raise UserError(f"invalid TOML: {msg}", Loc(where, line, col)) from None


def load_preset(name: str) -> FaultModel:
    """A shipped error-model preset by name (early, near_term, projected, ...)."""
    names = preset_names()
    if name not in names:
        raise UserError(f"no error-model preset named '{name}' (presets: {', '.join(names)})")
    res = importlib.resources.files("cramc.lang").joinpath(PRESET_DIR, f"{name}.toml")
    label = f"preset {name} ({PRESET_DIR}/{name}.toml)"
    return parse_error_model(_load_toml(res.read_bytes(), label), label)


def load_error_model(path: str) -> FaultModel:
    """An error model from FILE.toml, or, when no such file exists, the shipped preset of that name."""
    if not os.path.exists(path) and os.sep not in path and "/" not in path and not path.endswith(".toml"):
        return load_preset(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        hint = f" (or a preset: {', '.join(preset_names())})" if not os.path.exists(path) else ""
        raise UserError(f"cannot read error model {path}: {e.strerror}{hint}") from None
    return parse_error_model(_load_toml(data, path), path)
