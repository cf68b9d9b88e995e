"""The fault model: what can flip in a CRAM-ER chip and how often, and where those rates come from.

Every CRAM gate writes its output cell; that write can go wrong.  A gate of
type g whose correct output is 0 produces 1 with probability ``p01[g]`` and a
correct 1 becomes 0 with probability ``p10[g]``, independently per row and per
array.  Writes of host data and sensed reads (rd, and the adder tree's sensing
of a column) have their own optional rates; the adder tree itself and the CMOS
vector unit are exact unless a tree rate is configured.

A gate's rate can instead depend on its input pattern: ``by_ones[k]`` is the
probability that its output is wrong when k of its n inputs are 1 (a CRAM gate
is a threshold device, so its error concentrates next to the threshold).  A
``[device]`` section gives MTJ parameters (`cramc.errmodel.device.DeviceParams`)
from which every gate's ``by_ones`` table is derived; the cost model reads the
same parameters for gate energy and latency.

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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from cramc.errmodel import device as dev
from cramc.errors import Loc, UserError
from cramc.isa.opcodes import OPCODES, Unit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: The CRAM gates, in opcode-table order: each has its own rate.
GATE_NAMES = tuple(op.mnemonic for op in OPCODES.values() if op.unit is Unit.GATE)
#: The top-level tables of an error-model document that set rates, in the order error messages list them.
SECTIONS = ("gates", "write", "read", "tree", "device", "defects")
#: Top-level keys that describe the document rather than set a rate.
META_KEYS = ("name", "source", "preset")
#: The keys of a rate table: ``p`` sets both directions, ``p01``/``p10`` one each (overriding ``p``).
RATE_KEYS = ("p", "p01", "p10")
#: The input-dependent form of a gate's rate: ``by_ones = [p0, ..., pn]``, P(output wrong | k of n inputs at 1).
BY_ONES = "by_ones"
#: The keys of a gate's rate table: the output-conditioned `RATE_KEYS` or the input-dependent `BY_ONES`.
GATE_RATE_KEYS = (*RATE_KEYS, BY_ONES)
#: Named error models shipped with cramc: isa/error_models/NAME.toml, installed in the package cramc.lang.
PRESET_DIR = "error_models"


def gate_inputs(mnemonic: str) -> int:
    """How many inputs gate `mnemonic` has (its operands less the output), from the opcode table."""
    return len(OPCODES[mnemonic].operands) - 1


def gate_output(mnemonic: str, ones: int) -> int:
    """The correct output of gate `mnemonic` when `ones` of its inputs are 1 (every CRAM gate is symmetric in its
    inputs, so the count decides), from the opcode table's logic."""
    n = gate_inputs(mnemonic)
    if not 0 <= ones <= n:
        raise ValueError(f"{mnemonic} has {n} inputs, not {ones} at 1")
    words = [np.array([np.uint64(0xFFFFFFFFFFFFFFFF) if i < ones else np.uint64(0)]) for i in range(n)]
    return int(OPCODES[mnemonic].logic(*words)[0]) & 1  # type: ignore[misc]


@dataclass(frozen=True)
class Rate:
    """A fault rate: flip probabilities by correct value, or, for a gate, by how many of its inputs are 1.

    ``p01``: a correct 0 comes out 1; ``p10``: a correct 1 comes out 0.
    ``by_ones`` (gates only): when set, the output is wrong with probability
    ``by_ones[k]`` when k of the gate's inputs are 1, and p01 / p10 are 0 and
    unused.  Which value is correct for k ones is the gate's logic
    (`gate_output`).
    """

    p01: float = 0.0
    p10: float = 0.0
    by_ones: tuple[float, ...] | None = None

    @property
    def zero(self) -> bool:
        return self.p01 == 0.0 and self.p10 == 0.0 and not any(self.by_ones or ())

    @property
    def pmax(self) -> float:
        """The largest of all the rate's probabilities (by_ones included): what a sampler draws candidates at."""
        return max(self.p01, self.p10, *(self.by_ones or ()))

    @property
    def symmetric(self) -> bool:
        """p01 == p10 and no input dependence: every trial flips at pmax, nothing to thin."""
        return self.p01 == self.p10 and self.by_ones is None

    def p_wrong(self, ones: int, out: int) -> float:
        """P(output wrong) for an evaluation with `ones` inputs at 1 whose correct output is `out` (both forms)."""
        if self.by_ones is not None:
            return self.by_ones[ones]
        return self.p10 if out else self.p01

    def to_dict(self) -> dict[str, Any]:
        if self.by_ones is not None:
            return {"by_ones": list(self.by_ones)}
        return {"p01": self.p01, "p10": self.p10}


@dataclass(frozen=True)
class Defects:
    """Static defects of a chip instance: cells that are broken for the chip's lifetime, drawn once per chip.

    Densities are per cell (each cell of the chip independently, at most one defect per cell):
    ``stuck0``/``stuck1``: the cell holds 0 / 1 whatever is written into it (gate outputs, ``fill``,
    ``wr``); ``weak``: the cell switches unreliably, so a gate whose output is that cell fails with
    ``weak_factor`` times the gate's rate for its input pattern (capped at 0.5; host writes into it keep
    the write rate).  The simulator draws them per chip seed (cramc.sim.chip); docs/error-model.md,
    section "Chips and static defects".
    """

    stuck0: float = 0.0
    stuck1: float = 0.0
    weak: float = 0.0
    weak_factor: float = 1.0

    @property
    def any(self) -> bool:
        return self.stuck0 > 0.0 or self.stuck1 > 0.0 or self.weak > 0.0

    @property
    def density(self) -> float:
        """The probability that a cell has a defect of some kind."""
        return self.stuck0 + self.stuck1 + self.weak

    def to_dict(self) -> dict[str, float]:
        return {"stuck0": self.stuck0, "stuck1": self.stuck1, "weak": self.weak, "weak_factor": self.weak_factor}


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
    #: the [device] section's MTJ parameters (the gates' by_ones tables and the cost model's gate energy and
    #: latency derive from them), or None
    device: dev.DeviceParams | None = None
    #: static defects drawn once per chip instance (the [defects] section); none by default
    defects: Defects = Defects()

    def gate(self, mnemonic: str) -> Rate:
        return self.gates.get(mnemonic, Rate())

    def gate_wrong(self, mnemonic: str, ones: int) -> float:
        """P(gate `mnemonic` outputs the wrong value) when `ones` of its inputs are 1, whichever form its rate has."""
        return self.gate(mnemonic).p_wrong(ones, gate_output(mnemonic, ones))

    @property
    def input_dependent(self) -> list[str]:
        """The gates whose rate is given per input count (by_ones), in opcode-table order."""
        return [g for g in GATE_NAMES if self.gate(g).by_ones is not None]

    @property
    def fault_free(self) -> bool:
        return (
            all(r.zero for r in self.gates.values())
            and self.write.zero
            and self.read.zero
            and self.tree == 0.0
            and not self.defects.any
        )

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

    def scaled_to(self, p: float) -> FaultModel:
        """This model with its gate probabilities scaled by one factor so that the largest (over every gate
        and, for by_ones, every input count) is p: the shape across gates and input states stays
        (``cramc sweep --keep-shape``); writes and reads keep their rates.  A fault-free gate set stays
        fault-free at every level but 0, where the gates are exact."""
        _check_p(p, "--gate-error")
        worst = max((r.pmax for r in self.gates.values()), default=0.0)
        if worst == 0.0:
            raise UserError(f"--keep-shape: the error model '{self.name}' has no gate faults to scale")
        k = p / worst

        def scale(r: Rate) -> Rate:
            if r.by_ones is not None:
                return Rate(by_ones=tuple(k * x for x in r.by_ones))
            return Rate(k * r.p01, k * r.p10)

        gates = {g: scale(r) for g, r in self.gates.items()}
        return replace(self, gates=gates, name=f"{self.name}, gate rates scaled to a largest of {p:g}")

    def to_dict(self) -> dict[str, Any]:
        """The model as REPORT.json records it."""
        out: dict[str, Any] = {
            "name": self.name,
            "gates": {g: r.to_dict() for g, r in self.gates.items()},
            "write": self.write.to_dict(),
            "read": self.read.to_dict(),
            "tree": self.tree,
        }
        if self.device is not None:
            out["device"] = device_dict(self.device)
        if self.defects.any:
            out["defects"] = self.defects.to_dict()
        return out


def device_dict(params: dev.DeviceParams) -> dict[str, Any]:
    """The device parameters by field name, as the TOML [device] section spells them."""
    return {f.name: getattr(params, f.name) for f in fields(params)}


def _check_p(p: float, what: str) -> None:
    if not (isinstance(p, (int, float)) and math.isfinite(p) and 0.0 <= p <= 1.0):
        raise UserError(f"{what}: a probability must be between 0 and 1, got {p}")


class _Where:
    """Where a value of an error-model document is, for its error message: the file, and the TOML text when the
    document came from one (then an error names the line of the key)."""

    def __init__(self, file: str, text: str | None = None):
        self.file, self.text = file, text

    def __str__(self) -> str:
        return self.file

    def line_of(self, section: str, key: str) -> tuple[int, int] | None:
        """(line, column) of ``key = ...`` in table [section] (or of ``section.key = ...`` at the top), if found."""
        if self.text is None:
            return None
        current = ""
        for i, raw in enumerate(self.text.splitlines(), 1):
            line = raw.strip()
            head = re.match(r"^\[\s*([A-Za-z0-9_.\s]+?)\s*\]", line)
            if head:
                current = head.group(1).replace(" ", "")
                continue
            for name, want in ((key, section), (f"{section}.{key}", "")):
                m = re.match(rf"^(\s*){re.escape(name)}\s*=", raw)
                if m and current == want:
                    return i, len(m.group(1)) + 1
        return None

    def error(self, section: str, key: str, where: str, msg: str) -> UserError:
        """A UserError ``where: msg``, located at the line of `key` in [section] when the text shows it."""
        at = self.line_of(section, key)
        if at is None:
            return UserError(f"{self.file}: {where}: {msg}")
        return UserError(f"{where}: {msg}", Loc(self.file, at[0], at[1]), self.text)


def _rate(v: Any, where: str, file: str, keys: tuple[str, ...] = RATE_KEYS) -> Rate:
    """A rate given as a number (both directions) or a table of `RATE_KEYS`."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        _check_p(float(v), f"{file}: {where}")
        return Rate(float(v), float(v))
    if isinstance(v, dict):
        unknown = set(v) - set(keys)
        if unknown:
            raise UserError(f"{file}: {where}: unknown key(s) {', '.join(sorted(unknown))} (use {', '.join(keys)})")
        base = v.get("p", 0.0)
        p01, p10 = v.get("p01", base), v.get("p10", base)
        checked: list[float] = []
        for k, x in (("p01", p01), ("p10", p10)):
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                raise UserError(f"{file}: {where}.{k} must be a number")
            _check_p(float(x), f"{file}: {where}.{k}")
            checked.append(float(x))
        return Rate(checked[0], checked[1])
    raise UserError(f"{file}: {where} must be a number or a table with {', '.join(keys)}")


def _by_ones(gate: str, v: dict[str, Any], src: _Where) -> Rate:
    """``{ by_ones = [p0, ..., pn] }``: P(output wrong | k of the gate's n inputs at 1), k = 0..n."""
    where = f"gates.{gate}"
    mixed = sorted(set(v) & set(RATE_KEYS))
    if mixed:
        raise src.error(
            "gates",
            gate,
            where,
            f"by_ones cannot be combined with {', '.join(mixed)} (by_ones gives the rate per number of inputs at 1, "
            "p/p01/p10 per correct output: use one form)",
        )
    unknown = sorted(set(v) - {BY_ONES})
    if unknown:
        raise src.error("gates", gate, where, f"unknown key(s) {', '.join(unknown)} (use {', '.join(GATE_RATE_KEYS)})")
    n = gate_inputs(gate)
    table = v[BY_ONES]
    need = f"{n + 1} probabilities, for 0..{n} of its {n} input{'s' if n > 1 else ''} at 1"
    if not isinstance(table, list):
        raise src.error("gates", gate, f"{where}.by_ones", f"must be a list of {need}")
    if len(table) != n + 1:
        raise src.error("gates", gate, f"{where}.by_ones", f"has {len(table)} value(s); {gate} needs {need}")
    for k, x in enumerate(table):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise src.error("gates", gate, f"{where}.by_ones[{k}]", f"must be a number, got {x!r}")
        if not (math.isfinite(x) and 0.0 <= x <= 1.0):
            raise src.error("gates", gate, f"{where}.by_ones[{k}]", f"a probability must be between 0 and 1, got {x}")
    return Rate(by_ones=tuple(float(x) for x in table))


def _gates(doc: dict[str, Any], file: str, src: _Where | None = None, derived: dict[str, Rate] | None = None):
    """[gates]: ``default`` for every gate, then one entry per gate that overrides it.

    With a [device] section (`derived`: every gate's by_ones table from it) the listed gates override the
    derived ones, and ``default`` is an error: it would override the device for every gate.
    """
    src = src or _Where(file)
    gdoc = doc.get("gates", {})
    if not isinstance(gdoc, dict):
        raise UserError(f"{file}: [gates] must be a table")
    gates: dict[str, Rate] = dict(derived or {})
    default = gdoc.get("default")
    if default is not None:
        if derived is not None:
            raise src.error(
                "gates",
                "default",
                "gates.default",
                "the [device] section derives every gate's rate; list the gates to override instead of a default",
            )
        if isinstance(default, dict) and BY_ONES in default:
            raise src.error(
                "gates", "default", "gates.default", "by_ones depends on each gate's input count: give it per gate"
            )
        r = _rate(default, "gates.default", file)
        gates = {g: r for g in GATE_NAMES}
    for k, v in gdoc.items():
        if k == "default":
            continue
        if k not in GATE_NAMES:
            raise UserError(f"{file}: gates.{k}: not a gate (gates are {', '.join(GATE_NAMES)})")
        if isinstance(v, dict) and BY_ONES in v:
            gates[k] = _by_ones(k, v, src)
        else:
            gates[k] = _rate(v, f"gates.{k}", file, GATE_RATE_KEYS)
    return gates


#: The fields of a [device] section: DeviceParams, SI units.
DEVICE_KEYS = tuple(f.name for f in fields(dev.DeviceParams))
_DEVICE_TEXT = ("switching_model", "voltage_rule")


def _device(doc: dict[str, Any], file: str, src: _Where | None = None) -> dev.DeviceParams | None:
    """[device]: MTJ, cell and pulse parameters (`cramc.errmodel.device.DeviceParams`), each checked on its own."""
    src = src or _Where(file)
    d = doc.get("device")
    if d is None:
        return None
    if not isinstance(d, dict):
        raise UserError(f"{file}: [device] must be a table")
    for k in d:
        if k not in DEVICE_KEYS:
            known = ", ".join(DEVICE_KEYS)
            raise src.error("device", k, f"device.{k}", f"not a device parameter (parameters are {known})")
    for k, v in d.items():
        if k in _DEVICE_TEXT:
            if not isinstance(v, str):
                raise src.error("device", k, f"device.{k}", f"must be a string, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise src.error("device", k, f"device.{k}", f"must be a number, got {v!r}")
        try:
            dev.DeviceParams(**{k: v})
        except UserError as e:
            msg = e.message.removeprefix(f"device parameter {k}: ")
            raise src.error("device", k, f"device.{k}", msg) from None
    return dev.DeviceParams(**d)


def device_rates(params: dev.DeviceParams) -> dict[str, Rate]:
    """Every gate's by_ones rate, derived from device parameters (cramc.errmodel.device.gate_error_table)."""
    out: dict[str, Rate] = {}
    for g in GATE_NAMES:
        table = dev.gate_error_table(g, params)
        if not all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in table):  # pragma: no cover - the model's own check
            raise UserError(f"device model: the parameters give no valid error table for {g}: {table}")
        out[g] = Rate(by_ones=table)
    return out


#: The keys of a [defects] section: three densities per cell and the weak cells' rate factor.
DEFECT_KEYS = ("stuck0", "stuck1", "weak", "weak_factor")


def _defects(doc: dict[str, Any], file: str, src: _Where | None = None) -> Defects:
    """[defects]: per-cell densities of stuck-at-0, stuck-at-1 and weak cells, and the weak cells' factor."""
    src = src or _Where(file)
    d = doc.get("defects")
    if d is None:
        return Defects()
    if not isinstance(d, dict):
        raise UserError(f"{file}: [defects] must be a table")
    for k in d:
        if k not in DEFECT_KEYS:
            raise src.error("defects", k, f"defects.{k}", f"not a defect parameter (use {', '.join(DEFECT_KEYS)})")
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise src.error("defects", k, f"defects.{k}", f"must be a number, got {v!r}")
        if k == "weak_factor":
            if v < 1.0:
                raise src.error(
                    "defects", k, f"defects.{k}", f"must be at least 1 (a weak cell fails more often), got {v}"
                )
        elif not 0.0 <= v <= 1.0:
            raise src.error("defects", k, f"defects.{k}", f"a density per cell must be between 0 and 1, got {v}")
    out = Defects(**{k: float(v) for k, v in d.items()})
    if out.density > 1.0:
        first = next(k for k in DEFECT_KEYS if k in d)
        msg = f"stuck0 + stuck1 + weak is {out.density:g}; a cell has at most one defect, so they sum to 1 at most"
        raise src.error("defects", first, "defects", msg)
    if "weak_factor" in d and out.weak == 0.0:
        raise src.error("defects", "weak_factor", "defects.weak_factor", "is set but weak is 0: give weak a density")
    return out


def _tree(doc: dict[str, Any], file: str) -> float:
    """``tree``: the flip probability of each adder-tree count bit, a number or a table with ``p``."""
    tree = doc.get("tree", 0.0)
    if isinstance(tree, dict):
        tree = tree.get("p", 0.0)
    if not isinstance(tree, (int, float)):
        raise UserError(f"{file}: tree must be a number")
    _check_p(float(tree), f"{file}: tree")
    return float(tree)


def parse_error_model(doc: dict[str, Any], file: str = "<error model>", text: str | None = None) -> FaultModel:
    """Build a FaultModel from a TOML document (see docs/error-model.md); `file` names it in errors and `text`,
    the document's TOML source if there is one, lets errors in by_ones tables and [device] name their line."""
    unknown = set(doc) - set(SECTIONS) - set(META_KEYS)
    if unknown:
        raise UserError(f"{file}: unknown section(s) {', '.join(sorted(unknown))} (expected {', '.join(SECTIONS)})")
    src = _Where(file, text)
    params = _device(doc, file, src)
    gates = _gates(doc, file, src, None if params is None else device_rates(params))
    tree = _tree(doc, file)
    return FaultModel(
        gates,
        _rate(doc.get("write", 0.0), "write", file),
        _rate(doc.get("read", 0.0), "read", file),
        tree,
        str(doc.get("name", Path(file).stem)),
        params,
        _defects(doc, file, src),
    )


def preset_names() -> list[str]:
    """The names of the shipped error-model presets (docs/error-model.md)."""
    folder = importlib.resources.files("cramc.lang").joinpath(PRESET_DIR)
    return sorted(e.name[: -len(".toml")] for e in folder.iterdir() if e.name.endswith(".toml"))


def _load_toml(data: bytes, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(_text(data, where))
    except tomllib.TOMLDecodeError as e:
        msg = str(e.args[0] if e.args else e)
        # Python < 3.14 has no lineno/colno; the position is only in the message
        at = re.search(r" \(at line (\d+), column (\d+)\)$", msg)
        line = getattr(e, "lineno", None) or (int(at.group(1)) if at else 1)
        col = getattr(e, "colno", None) or (int(at.group(2)) if at else 1)
        if at:
            msg = msg[: at.start()]
        raise UserError(f"invalid TOML: {msg}", Loc(where, line, col)) from None


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"error model {where} is not UTF-8 text") from None


def load_preset(name: str) -> FaultModel:
    """A shipped error-model preset by name (early, near_term, projected, ...)."""
    names = preset_names()
    if name not in names:
        raise UserError(f"no error-model preset named '{name}' (presets: {', '.join(names)})")
    res = importlib.resources.files("cramc.lang") / PRESET_DIR / f"{name}.toml"
    label = f"preset {name} ({PRESET_DIR}/{name}.toml)"
    data = res.read_bytes()
    return parse_error_model(_load_toml(data, label), label, _text(data, label))


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
    return parse_error_model(_load_toml(data, path), path, _text(data, path))
