"""The stochastic fault model and its sampler.

Every CRAM gate writes its output cell; that write can go wrong.  A gate of
type g whose correct output is 0 produces 1 with probability ``p01[g]`` and a
correct 1 becomes 0 with probability ``p10[g]``, independently per row and per
array.  Writes of host data and sensed reads (rd, and the adder tree's sensing
of a column) have their own optional rates; the adder tree itself and the CMOS
vector unit are exact unless a tree rate is configured.

Sampling costs O(faults), not O(bits).  The bits an operation produces are
trials of a Bernoulli process at the larger of the two rates, pmax; the gaps
between its successes are i.i.d. geometric, so the positions of the candidate
faults are cumulative sums of geometric draws (`FaultStream`), and an operation
that gets none costs one comparison.  Each candidate is then kept with
probability p(value)/pmax, where value is the bit's correct value (thinning).
This is exact: every bit fails independently with the rate for its value.
docs/error-model.md gives the argument in full.
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
#: Geometric gaps drawn per refill of a `FaultStream` (amortises the RNG call).
STREAM_BATCH = 4096
#: At most about this many candidate faults are materialised at once.
CHUNK_CANDIDATES = 1 << 22
_ONE = np.uint64(1)


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


class FaultStream:
    """The successes of an endless sequence of independent Bernoulli(p) trials.

    Trials are consumed 64 at a time (one uint64 word of rows); `take(n)` hands
    out the successes among the next ``64 * n`` trials as word indices relative
    to the start of that region and one-bit masks.  Successes are found by
    summing geometric gaps, drawn `batch` at a time, so the cost is
    proportional to the number of successes plus one comparison per call.
    Trials a caller does not use (rows outside the active range) are simply
    discarded, which leaves the others independent.
    """

    def __init__(self, p: float, rng: np.random.Generator, batch: int = STREAM_BATCH):
        if not 0.0 < p <= 1.0:
            raise ValueError(f"a fault stream needs 0 < p <= 1, got {p}")
        self.p = p
        self.rng = rng
        self.batch = batch
        self.t = 0  # words consumed so far
        self._last = -1  # absolute trial index of the last success drawn
        self._w = np.empty(0, dtype=np.int64)  # word of each drawn success (absolute)
        self._m = np.empty(0, dtype=np.uint64)  # its bit within the word
        self._i = 0  # first success not handed out yet
        self._next = 0  # its word, as a Python int (the common-case test)
        self._refill(batch)

    def _refill(self, want: int) -> None:
        gaps = self.rng.geometric(self.p, size=max(self.batch, want))
        pos = gaps.cumsum()
        pos += self._last
        self._last = int(pos[-1])
        self._w = pos >> 6
        self._m = np.left_shift(_ONE, (pos & 63).astype(np.uint64))
        self._i = 0

    def take(self, nwords: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Successes among the next 64*nwords trials: (word index in [0, nwords), bit mask), or None."""
        t0 = self.t
        end = t0 + nwords
        self.t = end
        if self._next >= end:
            return None
        ws: list[np.ndarray] = []
        ms: list[np.ndarray] = []
        while True:
            j = int(self._w.searchsorted(end))
            ws.append(self._w[self._i : j])
            ms.append(self._m[self._i : j])
            if j < self._w.size:
                self._i = j
                break
            self._refill(int((end * 64 - self._last) * self.p * 1.1) + 16)
        self._next = int(self._w[self._i])
        if len(ws) == 1:
            return ws[0] - t0, ms[0]
        return np.concatenate(ws) - t0, np.concatenate(ms)


def inject(
    flat: np.ndarray,
    stream: FaultStream,
    rate: Rate,
    rng: np.random.Generator,
    block: int = 0,
    active: np.ndarray | None = None,
) -> int:
    """Flip bits of the 1-D uint64 array `flat` in place at `rate`; return how many flipped.

    `flat` is the region the stream covers, word by word.  With `active` (a
    uint64 row mask of `block` words), only bits set in ``active[i % block]``
    of word i are trials; the others are left alone.  The correct value of a
    bit is its value in `flat` before the call.
    """
    pmax = rate.pmax
    total = flat.size
    step = max(block, 1, int(CHUNK_CANDIDATES / (64.0 * pmax)))
    if block and step % block:
        step -= step % block
    flipped = 0
    for s in range(0, total, step):
        sub = flat[s : s + step] if step < total else flat
        got = stream.take(sub.size)
        if got is None:
            continue
        w, mk = got
        if active is not None:
            keep = (active[w % block] & mk) != 0
            w, mk = w[keep], mk[keep]
        if not rate.symmetric:
            one = (sub[w] & mk) != 0
            keep = rng.random(w.size) * pmax < np.where(one, rate.p10, rate.p01)
            w, mk = w[keep], mk[keep]
        np.bitwise_xor.at(sub, w, mk)
        flipped += int(w.size)
    return flipped


def row_mask_words(r0: int, r1: int, words: int) -> np.ndarray:
    """uint64 [words] with bits r0 .. r1-1 set (row r is bit r % 64 of word r // 64)."""
    full = np.zeros(words * 64, dtype=bool)
    full[r0:r1] = True
    return np.packbits(full, bitorder="little").view(np.uint64)


def flip_bits(words: np.ndarray, r0: int, r1: int, rate: Rate, rng: np.random.Generator) -> int:
    """Flip bits of rows [r0, r1) in a [M, W] uint64 array in place; return the number flipped.

    Row r of lane m is bit (r % 64) of words[m, r // 64].  Each of those bits
    flips independently with p01 if it is 0 and p10 if it is 1.  Cost is
    proportional to the number of faults (one short geometric draw when there
    are none), whatever the size of the array.
    """
    if rate.zero or r1 <= r0 or words.size == 0:
        return 0
    m_lanes, n_words = words.shape
    w0, w1 = r0 >> 6, (r1 + 63) >> 6
    nw = w1 - w0
    region = words[:, w0:w1]
    contiguous = region.flags.c_contiguous
    flat = region.reshape(-1) if contiguous else np.ascontiguousarray(region).reshape(-1)
    expected = flat.size * 64 * rate.pmax
    stream = FaultStream(rate.pmax, rng, batch=int(expected + 4 * math.sqrt(expected)) + 4)
    whole_words = r0 & 63 == 0 and r1 & 63 == 0
    active = None if whole_words else row_mask_words(r0 - 64 * w0, r1 - 64 * w0, nw)
    n = inject(flat, stream, rate, rng, nw, active)
    if not contiguous:
        words[:, w0:w1] = flat.reshape(m_lanes, nw)
    return n
