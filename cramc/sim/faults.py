"""The stochastic fault model and its sampler.

Every CRAM gate writes its output cell; that write can go wrong.  A gate of
type g whose correct output is 0 produces 1 with probability ``p01[g]`` and a
correct 1 becomes 0 with probability ``p10[g]``, independently per row and per
array.  Writes of host data and sensed reads (rd, and the adder tree's sensing
of a column) have their own optional rates; the adder tree itself and the CMOS
vector unit are exact unless a tree rate is configured.

Sampling costs O(faults), not O(bits): draw how many candidate positions fail
(binomial at the larger of the two rates), draw those positions, then thin
each by the rate that applies to its correct value.  This is exact: each bit
fails independently with the rate for its value.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cramc.errors import Loc, UserError
from cramc.isa.opcodes import OPCODES, Unit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GATE_NAMES = tuple(op.mnemonic for op in OPCODES.values() if op.unit is Unit.GATE)
#: Above this rate a dense Bernoulli draw is cheaper than sampling positions.
DENSE_RATE = 0.02


@dataclass(frozen=True)
class Rate:
    """Asymmetric flip probabilities: p01 (0 read as 1) and p10 (1 read as 0)."""

    p01: float = 0.0
    p10: float = 0.0

    @property
    def zero(self) -> bool:
        return self.p01 == 0.0 and self.p10 == 0.0


@dataclass(frozen=True)
class FaultModel:
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
        _check_p(p, "--gate-error")
        return replace(self, gates={g: Rate(p, p) for g in GATE_NAMES}, name=f"{self.name}, gate error {p:g}")

    def to_dict(self) -> dict[str, Any]:
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
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        _check_p(float(v), f"{file}: {where}")
        return Rate(float(v), float(v))
    if isinstance(v, dict):
        unknown = set(v) - {"p", "p01", "p10"}
        if unknown:
            raise UserError(f"{file}: {where}: unknown key(s) {', '.join(sorted(unknown))} (use p, p01, p10)")
        base = v.get("p", 0.0)
        p01, p10 = v.get("p01", base), v.get("p10", base)
        for k, x in (("p01", p01), ("p10", p10)):
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                raise UserError(f"{file}: {where}.{k} must be a number")
            _check_p(float(x), f"{file}: {where}.{k}")
        return Rate(float(p01), float(p10))
    raise UserError(f"{file}: {where} must be a number or a table with p, p01, p10")


def parse_error_model(doc: dict[str, Any], file: str = "<error model>") -> FaultModel:
    """Build a FaultModel from a TOML document (see docs/error-model.md)."""
    unknown = set(doc) - {"name", "gates", "write", "read", "tree", "source", "preset"}
    if unknown:
        raise UserError(f"{file}: unknown section(s) {', '.join(sorted(unknown))} "
                        "(expected gates, write, read, tree)")
    gates: dict[str, Rate] = {}
    gdoc = doc.get("gates", {})
    if not isinstance(gdoc, dict):
        raise UserError(f"{file}: [gates] must be a table")
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
    tree = doc.get("tree", 0.0)
    if isinstance(tree, dict):
        tree = tree.get("p", 0.0)
    if not isinstance(tree, (int, float)):
        raise UserError(f"{file}: tree must be a number")
    _check_p(float(tree), f"{file}: tree")
    return FaultModel(
        gates,
        _rate(doc.get("write", 0.0), "write", file),
        _rate(doc.get("read", 0.0), "read", file),
        float(tree),
        str(doc.get("name", Path(file).stem)),
    )


def load_error_model(path: str) -> FaultModel:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise UserError(f"cannot read error model {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", 1) or 1
        col = getattr(e, "colno", 1) or 1
        raise UserError(f"invalid TOML: {e.args[0] if e.args else e}", Loc(path, line, col)) from None
    return parse_error_model(doc, path)


def flip_bits(words: np.ndarray, r0: int, r1: int, rate: Rate, rng: np.random.Generator) -> int:
    """Flip bits of rows [r0, r1) in a [M, W] uint64 array in place; return the number flipped.

    Row r of lane m is bit (r % 64) of words[m, r // 64].
    """
    if rate.zero:
        return 0
    m_lanes, _ = words.shape
    nrows = r1 - r0
    total = m_lanes * nrows
    pmax = max(rate.p01, rate.p10)
    if pmax >= DENSE_RATE:
        return _flip_dense(words, r0, r1, rate, rng)
    k = int(rng.binomial(total, pmax))
    if k == 0:
        return 0
    idx = rng.choice(total, size=k, replace=False) if k > 1 else rng.integers(0, total, size=1)
    lane = idx // nrows
    row = r0 + idx % nrows
    w = row >> 6
    bit = (row & 63).astype(np.uint64)
    if rate.p01 != rate.p10:
        val = (words[lane, w] >> bit) & np.uint64(1)
        keep_p = np.where(val == 1, rate.p10, rate.p01) / pmax
        keep = rng.random(k) < keep_p
        lane, w, bit = lane[keep], w[keep], bit[keep]
    np.bitwise_xor.at(words, (lane, w), np.left_shift(np.uint64(1), bit))
    return int(lane.size)


def _flip_dense(words: np.ndarray, r0: int, r1: int, rate: Rate, rng: np.random.Generator) -> int:
    m_lanes, n_words = words.shape
    bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, r0:r1]
    u = rng.random(bits.shape)
    flip = np.where(bits == 1, u < rate.p10, u < rate.p01)
    full = np.zeros((m_lanes, n_words * 64), dtype=bool)
    full[:, r0:r1] = flip
    words ^= np.packbits(full, axis=1, bitorder="little").view(np.uint64)
    return int(flip.sum())
