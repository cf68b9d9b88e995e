"""The fault samplers: they draw the flips a fault model (cramc.errmodel) describes.

Every CRAM gate writes its output cell, and that write can go wrong with the
rates of a `cramc.errmodel.FaultModel` (per gate type and correct output value;
host writes, sensed reads and adder-tree count bits have their own).  This
module turns those rates into flipped bits.

Sampling costs O(faults), not O(bits).  The bits an operation produces are
trials of a Bernoulli process at the larger of the two rates, pmax; the gaps
between its successes are i.i.d. geometric, so the positions of the candidate
faults are cumulative sums of geometric draws (`FaultStream`), and an operation
that gets none costs one comparison.  Each candidate is then kept with
probability p(value)/pmax, where value is the bit's correct value (thinning).
This is exact: every bit fails independently with the rate for its value.
An input-dependent gate rate (``by_ones[k]``: the output is wrong with that
probability when k of the gate's inputs are 1) is thinned the same way, by
by_ones[k]/pmax with pmax = max(by_ones): k is read from the gate's input
words at the candidates only, so the cost stays proportional to the faults.
docs/error-model.md gives the argument in full.

`FaultModel` and `Rate` are re-exported here for the simulator's own modules
(``from cramc.sim.faults import FaultModel``); everything outside cramc/sim
imports them from cramc.errmodel.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from cramc.errmodel import FaultModel, Rate

__all__ = [
    "CHUNK_CANDIDATES",
    "GAP_CAP",
    "STREAM_BATCH",
    "WINDOW_SUCCESSES",
    "WINDOW_WORDS",
    "FaultInjector",
    "FaultModel",
    "FaultStream",
    "Injector",
    "Rate",
    "chunk_step",
    "flip_bits",
    "row_mask_words",
]

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
#: How the streams turn their uniforms into positions and how the injectors flip the candidates of a
#: region: "numba" (compiled loops, the optional extra ``cramc[fast]``), "numpy" (the vectorised reference)
#: or "auto": numba where it is installed, once the process has handled FAST_AFTER candidates through the
#: numpy path (importing and loading numba costs about half a second, which a run with few faults never
#: wins back).  Both read the same random numbers in the same order and flip the same bits
#: (tests/sim/test_fault_kernels.py).
KERNEL = "auto"
FAST_AFTER = 1 << 24
_COMPILED: list[Any] = []  # [(positions, flip, render) compiled, or None without numba], filled on first use
_handled = [0]  # candidates handled through the numpy path so far ("auto")


def _positions_loop(lg: Any, scale: float, capped: bool, cap: float, last: int, w: Any, m: Any) -> int:
    """The compiled form of `FaultStream._extend`'s numpy code: uniforms' logarithms `lg` -> absolute word and
    bit mask of each success after trial `last`; returns the last trial."""
    pos = last
    for k in range(lg.size):
        x = lg[k] * scale
        if capped and x > cap:
            x = cap
        pos += np.int64(x) + 1
        w[k] = pos >> 6
        m[k] = np.uint64(1) << np.uint64(pos & 63)
    return pos


def _flip_loop(flat: Any, w: Any, m: Any, t0: int, active: Any, block: int) -> int:
    """The compiled form of a symmetric `Injector.__call__`: flip the candidates (absolute words w, bits m)
    whose row is active (``active[word % block]``) into `flat` (word t0 is flat[0]); returns the flips."""
    n = 0
    if block == 1:
        a0 = active[0]
        for k in range(w.size):
            mk = m[k] & a0
            flat[w[k] - t0] ^= mk
            n += mk != 0
        return n
    prev, r = 0, 0  # r = prev % block, followed without a division while the words advance by less than a block
    for k in range(w.size):
        i = w[k] - t0
        d = i - prev
        if d < block:
            r += d
            if r >= block:
                r -= block
        else:
            r = i % block
        prev = i
        mk = m[k] & active[r]
        flat[i] ^= mk
        n += mk != 0
    return n


def _render_loop(pool: Any, w: Any, m: Any, t0: int) -> None:
    """The compiled form of `FaultStream._render`'s scatter: OR each success's bit into its word."""
    for k in range(w.size):
        pool[w[k] - t0] |= m[k]


def _kernels(n: int) -> Any:
    """The compiled loops for a call that handles `n` candidates, or None: use the numpy code (`KERNEL`)."""
    if KERNEL == "numpy":
        return None
    if KERNEL == "auto" and _handled[0] < FAST_AFTER:
        _handled[0] += n
        return None
    if not _COMPILED:
        try:
            numba = importlib.import_module("numba")
        except ImportError:
            _COMPILED.append(None)
        else:
            jit = numba.njit(cache=True, nogil=True, error_model="numpy")
            _COMPILED.append((jit(_positions_loop), jit(_flip_loop), jit(_render_loop)))
    if KERNEL == "numba" and _COMPILED[0] is None:
        raise ValueError("the numba fault kernels need numba (pip install 'cramc[fast]')")
    return _COMPILED[0]


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
        fast = _kernels(n)
        if fast is not None:
            self._last = int(fast[0](u, self._scale, self._capped, GAP_CAP, self._last, g, m[keep:]))
            self._gone += i
            self._w, self._m, self._i = w, m, 0
            self._next = int(w[0])
            return
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
        if not self._lazy and self._next >= self.t + nwords:  # the common case: none
            self.t += nwords
            return None
        raw = self.take_raw(nwords)
        return None if raw is None else (raw[0] - raw[2], raw[1])

    def take_raw(self, nwords: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """What `take` gives, as read-only views of the buffer: (absolute words, bit masks, first word t0)."""
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
        return w[i:j], self._m[i:j], t0

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
        fast = _kernels(j - i) if j > i else None
        if fast is not None:
            self._touched = w[i:j] - t0
            fast[2](pool, w[i:j], self._m[i:j], t0)
        elif j > i:
            ws = w[i:j] - t0
            # Successes are distinct trials, so the masks that fall in one word are distinct
            # bits and their sum is their OR: one (fast, unbuffered) add per success.
            np.add.at(pool, ws, self._m[i:j])
            self._touched = ws
        self._base = t0
        self._end = end


class FaultInjector(Protocol):
    """What a backend's injector offers (`Injector` on the host, backend.RegionInjector on a torch device)."""

    stream: Any
    step: int

    def __call__(self, flat: Any, ins: list[Any] | None = None) -> Any:
        """Flip bits of the region `flat` (a gate's inputs `ins` for an input-dependent rate)."""

    def dense(self, size: int) -> bool:
        """Whether a region of `size` words takes the rendered-mask path."""

    def pick(self, ins: list[Any], size: int) -> Any:
        """An input-dependent rate's faults in a region of `size` words, read from the inputs only."""

    def flip(self, flat: Any, picked: Any) -> Any:
        """Flip what `pick` chose."""


def chunk_step(block: int, pmax: float) -> int:
    """Words per chunk of a region, a multiple of `block`, so that a chunk holds about CHUNK_CANDIDATES candidates."""
    step = max(block, int(CHUNK_CANDIDATES / (64.0 * pmax)))
    return step - step % block


class Injector:
    """Flips bits of regions of words at one rate, drawing from one stream.

    A region is a 1-D uint64 array, `block` words per lane and array, in which
    only the bits set in ``active[i % block]`` of word i are trials (all bits
    when `active` is None).  Calling it flips the region in place and returns
    how many bits flipped.

    Candidates come from the stream at pmax and are thinned to the rate of
    each bit: for p01/p10 by the bit's correct value (its value before the
    call); for an input-dependent gate rate (``by_ones``) by k, the number of
    the gate's inputs at 1 in that row, read from `ins` at the candidates only
    (cost O(candidates), never O(words)).  `ins` are the gate's input words
    laid out as the region is: arrays of shape [..., block] whose C-order
    flattening matches the region word for word.
    """

    def __init__(
        self, stream: FaultStream, rate: Rate, rng: np.random.Generator, block: int, active: np.ndarray | None
    ):
        self.stream, self.rate, self.rng = stream, rate, rng
        self.block, self.active = block, active
        self.pmax = rate.pmax
        self.symmetric = rate.symmetric
        self.step = chunk_step(block, self.pmax)
        #: by_ones[k] / pmax: the acceptance probability of a candidate whose gate has k inputs at 1
        self.accept = None if rate.by_ones is None else np.array(rate.by_ones) / self.pmax
        self._all_rows = np.full(1, ~np.uint64(0))  # every row a trial: the compiled flip's `active`

    def _in_rows(self, w: np.ndarray, mk: np.ndarray) -> np.ndarray:
        """Whether each candidate (word w of the region, bit mk) is a trial: its row is active."""
        assert self.active is not None
        if self.block == 1:  # one word a row range: no index arithmetic
            return (mk & self.active[0]) != 0
        return (self.active[w % self.block] & mk) != 0

    def plain(self, size: int) -> bool:
        """True when a region of `size` words needs no row filter, no thinning and no chunking."""
        return self.active is None and self.symmetric and size <= self.step

    def dense(self, size: int) -> bool:
        """True when a plain region of `size` words expects a fault or more: XOR a rendered mask instead."""
        return self.plain(size) and 64 * size * self.pmax >= 1.0

    def __call__(self, flat: np.ndarray, ins: list[np.ndarray] | None = None) -> int:
        if self.accept is not None:
            return self.flip(flat, self.pick(ins, flat.size))  # O(faults) buffers: no chunked flipping needed
        if flat.size > self.step:
            return sum(self(flat[s : s + self.step]) for s in range(0, flat.size, self.step))
        if self.symmetric and isinstance(self.stream, FaultStream):
            raw = self.stream.take_raw(flat.size)
            if raw is None:
                return 0
            fast = _kernels(raw[0].size)
            if fast is not None:
                w, mk, t0 = raw
                act = self._all_rows if self.active is None else self.active
                n = int(fast[1](flat, w, mk, t0, act, 1 if self.active is None else self.block))
                self.stream.dropped += w.size - n
                return n
            got: tuple[np.ndarray, np.ndarray] | None = (raw[0] - raw[2], raw[1])
        else:
            got = self.stream.take(flat.size)
        if got is None:
            return 0
        w, mk = got
        k = w.size
        if self.active is not None:
            keep = self._in_rows(w, mk)
            w, mk = w[keep], mk[keep]
        if not self.symmetric:
            one = (flat[w] & mk) != 0
            keep = self.rng.random(w.size) * self.pmax < np.where(one, self.rate.p10, self.rate.p01)
            w, mk = w[keep], mk[keep]
        np.bitwise_xor.at(flat, w, mk)
        self.stream.dropped += k - w.size
        return w.size

    def pick(self, ins: list[np.ndarray] | None, size: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The faults of an input-dependent gate rate in a region of `size` words: (word, bit mask), or None.

        Reads only the inputs, so a caller may pick before the gate overwrites an input and `flip` after.
        Draws what ``__call__`` draws (the same candidates, chunks and thinning uniforms, in order).
        """
        assert self.accept is not None and ins is not None, "an input-dependent rate needs the gate's inputs"
        flat = [x.reshape(-1) for x in ins]
        w, mk = self.sample(size, inputs=lambda at: [x[at] for x in flat])
        return (w, mk) if w.size else None

    def sample(
        self,
        size: int,
        value: Callable[[np.ndarray], np.ndarray] | None = None,
        inputs: Callable[[np.ndarray], list[np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The flips that calling this injector on a region of `size` words would make, without the region:
        (word index, one-bit mask) of each, in order, from the same draws (stream words, thinning uniforms).

        `value(w)` gives the region's words at indices w (their values before the call: what asymmetric
        rates thin by), `inputs(w)` a gate's input words there (what an input-dependent rate reads).  For
        callers that know the region's words at any place cheaply but never hold the region itself.
        """
        ws, ms = [], []
        for s in range(0, size, self.step):
            got = self.stream.take(min(self.step, size - s))
            if got is None:
                continue
            w, mk = got
            n = w.size
            if self.active is not None:
                keep = self._in_rows(w, mk)
                w, mk = w[keep], mk[keep]
            if self.accept is not None:
                assert inputs is not None, "an input-dependent rate needs the gate's inputs"
                ones = np.zeros(w.size, dtype=np.intp)
                for x in inputs(w + s):
                    ones += (x & mk) != 0
                keep = self.rng.random(w.size) < self.accept[ones]
                w, mk = w[keep], mk[keep]
            elif not self.symmetric:
                assert value is not None, "an asymmetric rate needs the region's values"
                one = (value(w + s) & mk) != 0
                keep = self.rng.random(w.size) * self.pmax < np.where(one, self.rate.p10, self.rate.p01)
                w, mk = w[keep], mk[keep]
            self.stream.dropped += n - w.size
            ws.append(w + s)
            ms.append(mk)
        if not ws:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
        return (ws[0], ms[0]) if len(ws) == 1 else (np.concatenate(ws), np.concatenate(ms))

    @staticmethod
    def flip(flat: np.ndarray, picked: tuple[np.ndarray, np.ndarray] | None) -> int:
        """Flip the bits `pick` chose; return how many."""
        if picked is None:
            return 0
        w, mk = picked
        np.bitwise_xor.at(flat, w, mk)
        return int(w.size)


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
