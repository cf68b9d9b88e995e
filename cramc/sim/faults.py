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
docs/error-model.md gives the argument in full, the TOML format of
``--error-model`` and the shipped presets (isa/error_models/*.toml).
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
#: At most about this many candidate faults are materialised at once (a region with more is injected in
#: chunks): it bounds the sampler's buffers, a few tens of bytes per candidate (cramc.sim.memory.STREAM_BYTES).
CHUNK_CANDIDATES = 1 << 18
_ONE = np.uint64(1)
GAP_CAP = float(2**52)
#: Words of flip mask a `FaultStream` renders at once for `take_dense` ...
WINDOW_WORDS = 1 << 17
#: ... or fewer, so that a window holds about this many successes at most (high rates).
WINDOW_SUCCESSES = 1 << 15


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
        raise UserError(f"{file}: unknown section(s) {', '.join(sorted(unknown))} (expected gates, write, read, tree)")
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


#: Named error models shipped with cramc: isa/error_models/NAME.toml, installed in the package cramc.lang.
PRESET_DIR = "error_models"


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


class FaultStream:
    """The successes of an endless sequence of independent Bernoulli(p) trials.

    Trials are consumed 64 at a time, one uint64 word of rows, in order; no
    trial is ever used twice.  Successes are found by summing geometric gaps,
    drawn in batches, so the cost is proportional to the number of successes
    plus a constant per call.  Two ways to consume the next n words:

    - `take(n)`: the successes as (word index relative to the region, one-bit
      mask) pairs, for callers that filter or thin them;
    - `take_dense(n)`: the same successes as n words of flip mask, a view of a
      window rendered in bulk (for callers that flip every success).

    Both read the same successes, so which one a caller uses never changes a
    result.  Trials a caller does not use (rows outside the active range) are
    discarded, which leaves the others independent.  `handed_out()` is the
    number of successes in the words consumed so far; callers that drop some
    of what `take` gave them add those to `dropped`.
    """

    def __init__(self, p: float, rng: np.random.Generator, batch: int = STREAM_BATCH, window: int = WINDOW_WORDS):
        if not 0.0 < p <= 1.0:
            raise ValueError(f"a fault stream needs 0 < p <= 1, got {p}")
        self.p = p
        self.rng = rng
        self.batch = batch
        self.window = window
        self.t = 0  # words consumed so far
        self.dropped = 0  # successes handed out by take() that the caller did not flip
        # Geometric(p) gaps by inversion: 1 + floor(ln(1-U) / ln(1-p)) with U uniform on [0, 1) has
        # P(gap > k) = (1-p)^k; -ln(1-U) is a standard exponential (numpy's own inversion formula).
        self._inv_lambda = 0.0 if p == 1.0 else -1.0 / math.log1p(-p)
        self._scale = -self._inv_lambda  # ln(1-U) <= 0 times this: the gap minus one, before flooring
        # Gaps are capped at 2**52 trials: a stream reaches that only after ~4.5e15 trials.
        self._capped = self._inv_lambda > GAP_CAP / 64
        self._u = np.empty(0)  # scratch for the uniforms of one batch
        self._last = -1  # absolute trial index of the last success drawn
        self._w = np.empty(0, dtype=np.int64)  # absolute word of each drawn success ...
        self._m = np.empty(0, dtype=np.uint64)  # ... and its bit within the word
        self._gone = 0  # successes removed from the front of the buffer (all consumed)
        self._i = 0  # index of the first success whose word is >= t, unless _lazy
        self._lazy = False  # take_dense advanced t without moving _i
        self._next = 0  # word of success _i, as a Python int: the common-case test of take()
        self._span = max(1, min(window, int(WINDOW_SUCCESSES / (64 * p))))  # words per rendered window
        self._pool = np.zeros(0, dtype=np.uint64)  # rendered flip masks of words [_base, _end)
        self._base = 0
        self._end = 0
        self._touched: np.ndarray | None = None  # the pool words the last render set
        self._extend(batch)

    def _sync(self) -> None:
        if self._lazy:
            self._i = int(self._w.searchsorted(self.t))
            self._next = int(self._w[self._i])
            self._lazy = False

    def _extend(self, want: int) -> None:
        """Draw at least `want` more successes after the last one; forget the consumed ones."""
        self._sync()
        n = max(self.batch, want)
        i, old_w, old_m = self._i, self._w, self._m
        keep = old_w.size - i
        # The unconsumed successes, then the new ones, written in place (no temporaries).
        w = np.empty(keep + n, dtype=np.int64)
        m = np.empty(keep + n, dtype=np.uint64)
        if keep:
            w[:keep] = old_w[i:]
            m[:keep] = old_m[i:]
        u = self._u
        if u.size < n:
            u = np.empty(n)
            if n <= 1 << 17:
                self._u = u  # kept for the next batch (an outsized one is not)
        u = u[:n]
        self.rng.random(out=u)
        np.subtract(1.0, u, out=u)  # exact: 1 - k/2**53 is a double; in (0, 1]
        np.log(u, out=u)
        g = w[keep:]
        if self._capped:
            u *= self._scale
            np.minimum(u, GAP_CAP, out=u)
            np.copyto(g, u, casting="unsafe")
        else:
            np.multiply(u, self._scale, out=g, casting="unsafe")  # >= 0, so the cast truncates: floor
        g += 1
        g[0] += self._last
        np.cumsum(g, out=g)  # absolute trial index of each new success
        self._last = int(g[-1])
        bit = m[keep:]
        np.bitwise_and(g, 63, out=bit.view(np.int64))
        np.left_shift(_ONE, bit, out=bit)
        np.right_shift(g, 6, out=g)
        self._gone += i
        self._w, self._m, self._i = w, m, 0
        self._next = int(w[0])

    def _cover(self, end: int) -> None:
        """Make sure some drawn success lies at or after word `end` (so searches stop inside the buffer)."""
        while (self._last >> 6) < end:
            self._extend(int((end * 64 - self._last) * self.p * 1.1) + 16)

    def handed_out(self) -> int:
        """Successes in the words consumed so far."""
        self._sync()
        return self._gone + self._i

    def take(self, nwords: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Successes among the next 64*nwords trials: (word index in [0, nwords), bit mask), or None."""
        if self._lazy:
            self._sync()
        t0 = self.t
        end = t0 + nwords
        if self._next >= end:
            self.t = end
            return None
        if (self._last >> 6) < end:
            self._cover(end)
        i, w = self._i, self._w
        j = int(w.searchsorted(end))
        self._i = j
        self._next = int(w[j])
        self.t = end
        return w[i:j] - t0, self._m[i:j]

    @property
    def window_words(self) -> int:
        """Words `take_dense` renders at once: callers that take at most this many keep its pool this small."""
        return self._span

    def take_dense(self, nwords: int) -> np.ndarray:
        """The next 64*nwords trials as nwords words of flip mask (a read-only view; valid until the next call)."""
        t0 = self.t
        t1 = t0 + nwords
        if t1 > self._end:
            self._render(max(self._span, nwords))
        self.t = t1
        self._lazy = True
        o = t0 - self._base
        return self._pool[o : o + nwords]

    def _render(self, size: int) -> None:
        """Render the successes of words [t, t + size) into the pool (a bulk scatter)."""
        t0 = self.t
        end = t0 + size
        if (self._last >> 6) < end:
            # Draw for this window and about two more at once: fewer, longer numpy calls.
            self._extend(int(((end + 2 * size) * 64 - self._last) * self.p) + 16)
            self._cover(end)
        self._sync()
        pool = self._pool
        if pool.size < size:
            pool = self._pool = np.zeros(size, dtype=np.uint64)
        elif self._touched is not None:
            # Clear what the last window set: O(faults), not O(words), unless that is most of it.
            if 8 * self._touched.size < size:
                pool[self._touched] = 0
            else:
                pool.fill(0)
        i, w = self._i, self._w
        j = int(w.searchsorted(end))
        self._touched = None
        if j > i:
            ws = w[i:j] - t0
            # Successes are distinct trials, so the masks that fall in one word are distinct
            # bits and their sum is their OR: one (fast, unbuffered) add per success.
            np.add.at(pool, ws, self._m[i:j])
            self._touched = ws
        self._base = t0
        self._end = end


def chunk_step(block: int, pmax: float) -> int:
    """Words per chunk of a region, a multiple of `block`, so that a chunk holds about CHUNK_CANDIDATES candidates."""
    step = max(block, int(CHUNK_CANDIDATES / (64.0 * pmax)))
    return step - step % block


class Injector:
    """Flips bits of regions of words at one rate, drawing from one stream.

    A region is a 1-D uint64 array, `block` words per lane and array, in which
    only the bits set in ``active[i % block]`` of word i are trials (all bits
    when `active` is None).  Calling it flips the region in place and returns
    how many bits flipped; a bit's correct value is its value before the call.
    """

    def __init__(
        self, stream: FaultStream, rate: Rate, rng: np.random.Generator, block: int, active: np.ndarray | None
    ):
        self.stream, self.rate, self.rng = stream, rate, rng
        self.block, self.active = block, active
        self.pmax = rate.pmax
        self.symmetric = rate.symmetric
        self.step = chunk_step(block, self.pmax)

    def plain(self, size: int) -> bool:
        """True when a region of `size` words needs no row filter, no thinning and no chunking."""
        return self.active is None and self.symmetric and size <= self.step

    def dense(self, size: int) -> bool:
        """True when a plain region of `size` words expects a fault or more: XOR a rendered mask instead."""
        return self.plain(size) and 64 * size * self.pmax >= 1.0

    def __call__(self, flat: np.ndarray) -> int:
        if flat.size > self.step:
            return sum(self(flat[s : s + self.step]) for s in range(0, flat.size, self.step))
        got = self.stream.take(flat.size)
        if got is None:
            return 0
        w, mk = got
        k = w.size
        if self.active is not None:
            keep = (self.active[w % self.block] & mk) != 0
            w, mk = w[keep], mk[keep]
        if not self.symmetric:
            one = (flat[w] & mk) != 0
            keep = self.rng.random(w.size) * self.pmax < np.where(one, self.rate.p10, self.rate.p01)
            w, mk = w[keep], mk[keep]
        np.bitwise_xor.at(flat, w, mk)
        self.stream.dropped += k - w.size
        return w.size


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
    m_lanes = words.shape[0]
    w0, w1 = r0 >> 6, (r1 + 63) >> 6
    nw = w1 - w0
    region = words[:, w0:w1]
    contiguous = region.flags.c_contiguous
    flat = region.reshape(-1) if contiguous else np.ascontiguousarray(region).reshape(-1)
    expected = flat.size * 64 * rate.pmax
    stream = FaultStream(rate.pmax, rng, batch=int(expected + 4 * math.sqrt(expected)) + 4)
    whole_words = r0 & 63 == 0 and r1 & 63 == 0
    active = None if whole_words else row_mask_words(r0 - 64 * w0, r1 - 64 * w0, nw)
    n = Injector(stream, rate, rng, nw, active)(flat)
    if not contiguous:
        words[:, w0:w1] = flat.reshape(m_lanes, nw)
    return n
