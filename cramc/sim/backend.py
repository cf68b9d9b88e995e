"""Where the machine state lives: numpy on the CPU, or PyTorch on a GPU (or on its CPU).

The interpreter (cramc.sim.interp) is one program for every backend: it holds
the cell rows, the accumulators and its scratch buffers as arrays of the
backend and calls the backend for the few things array libraries spell
differently.  Both libraries give ``out=`` forms of the bitwise ufuncs,
views for basic slicing, ``reshape(-1)`` views of contiguous blocks, advanced
indexing along the first axis and Python's ``& | ^ ~`` operators, which is
what the interpreter's kernels and the opcode table's gate logic use; a
`Backend` adds to that:

- the word type (uint64 for numpy; int64 for torch, whose unsigned 64-bit type
  lacks operations: the bits are the same, the interpreter never does
  arithmetic on cell words),
- transfers between the host (numpy) and the device,
- population count summed along the last axis,
- the fault sampler.

Fault sampling is the one place where the backends differ in more than
spelling.  numpy uses the host `FaultStream` of cramc.sim.faults: a single
Bernoulli stream per fault kind and rate, walked in program order, so that a
fused run and the same gates one at a time draw the same faults.  A device
cannot afford a host round trip per instruction, so `TorchBackend` samples
each injection region on the device (`RegionSampler`): the same exact
process (geometric gaps between the faulty bits of the region, thinned for
asymmetric rates and inactive rows) drawn from a seeded ``torch.Generator``,
with no synchronisation with the host.  Results are therefore identical across
backends without faults, equal in distribution with faults (tests check both),
and reproducible for a given seed, backend and device type.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cramc.errors import UserError
from cramc.sim.faults import GAP_CAP, FaultInjector, FaultStream, Injector, Rate, chunk_step

#: Names accepted by --backend (torch:DEVICE picks a torch device, e.g. torch:cuda:1).
BACKEND_HELP = "numpy (default), torch (its default device: cuda when available), torch:cpu, torch:cuda[:N]"


class Backend:
    """The array library of a machine: numpy here; `TorchBackend` overrides what differs."""

    name = "numpy"
    device = "cpu"
    #: The uint64 word with every bit set, in the backend's word type.
    ONES: Any = np.uint64(0xFFFFFFFFFFFFFFFF)

    # out= ufuncs: f(a, b, out=d) / f(a, out=d)
    and_: Callable[..., Any] = staticmethod(np.bitwise_and)
    or_: Callable[..., Any] = staticmethod(np.bitwise_or)
    xor: Callable[..., Any] = staticmethod(np.bitwise_xor)
    not_: Callable[..., Any] = staticmethod(np.invert)
    add: Callable[..., Any] = staticmethod(np.add)
    sub: Callable[..., Any] = staticmethod(np.subtract)

    def __repr__(self) -> str:
        return f"<backend {self.label}>"

    @property
    def label(self) -> str:
        return self.name if self.device == "cpu" and self.name == "numpy" else f"{self.name}:{self.device}"

    #: The default memory budget for the machine state (--max-memory) on the host.
    HOST_BUDGET = 2 << 30

    def memory_budget(self) -> int:
        """The default budget for the machine state of all lanes together, in bytes."""
        return self.HOST_BUDGET

    # ---- allocation and transfer
    def words(self, shape: tuple[int, ...]) -> Any:
        """Zeroed cell words."""
        return np.zeros(shape, dtype=np.uint64)

    def empty_words(self, shape: tuple[int, ...]) -> Any:
        return np.empty(shape, dtype=np.uint64)

    def full_words(self, shape: tuple[int, ...], ones: bool) -> Any:
        return np.full(shape, self.ONES if ones else 0, dtype=np.uint64)

    def ints(self, shape: tuple[int, ...]) -> Any:
        """Zeroed int64 accumulators."""
        return np.zeros(shape, dtype=np.int64)

    def put(self, a: np.ndarray) -> Any:
        """A host array on the device: uint64 words stay words, integers become int64.

        numpy may return `a` itself; callers that modify the result pass a copy they own.
        """
        if a.dtype == np.uint64:
            return np.ascontiguousarray(a)
        return np.ascontiguousarray(a, dtype=np.int64)

    def get(self, x: Any) -> np.ndarray:
        """A device array on the host (words as uint64, integers as int64)."""
        return x

    def get_words(self, x: Any) -> np.ndarray:
        """Device words on the host as uint64."""
        return x

    def copy(self, x: Any) -> Any:
        """A C-contiguous copy (``np.array`` alone keeps the strides' order: a copy of a broadcast or
        transposed view would not be C-contiguous, and `flat` of it would not be a view)."""
        return np.array(x, order="C")

    def contiguous(self, x: Any) -> Any:
        return np.ascontiguousarray(x)

    def broadcast(self, x: Any, shape: tuple[int, ...]) -> Any:
        """A writable C-contiguous copy of x broadcast to `shape`."""
        return np.array(np.broadcast_to(x, shape), order="C")

    def expand(self, x: Any, shape: tuple[int, ...]) -> Any:
        """A read-only view of x broadcast to `shape` (no copy): a lane-invariant column seen by every lane."""
        return np.broadcast_to(x, shape)

    def flat(self, x: Any) -> Any:
        """x as a 1-D view of its memory, for in-place fault injection.

        ``reshape(-1)`` silently copies an array that is not C-contiguous, and flips injected into
        that copy would be counted but never stored: this refuses instead.
        """
        if not x.flags.c_contiguous:
            raise AssertionError(f"fault injection into a non-contiguous block of shape {x.shape}")
        return x.reshape(-1)

    def is_contiguous(self, x: Any) -> bool:
        return bool(x.flags.c_contiguous)

    def copyto(self, dst: Any, src: Any) -> None:
        np.copyto(dst, src)

    # ---- arithmetic the interpreter needs
    def popcount_sum(self, words: Any) -> Any:
        """Set bits of each row of `words` [..., W], summed along W: int64 [...]."""
        return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)

    def weighted_sum(self, weights: Any, x: Any) -> Any:
        """sum_i weights[i] * x[i] (int64)."""
        return np.tensordot(weights, x, axes=(0, 0))

    def popcounts(self, words: Any) -> Any:
        """Set bits per word [..., U] (uint8 here, int64 on torch), whose sum along U is the popcount along W
        (U = W)."""
        return np.bitwise_count(words)

    def floats(self, a: np.ndarray) -> Any:
        """A host float64 array on the device."""
        return np.ascontiguousarray(a, dtype=np.float64)

    def contract(self, wmat: Any, counts: Any) -> Any:
        """int64 [k, M]: sum over i and u of wmat[k, i] * counts[i, m, u] for counts [n, ..., U] (M = the
        middle axes) and float64 wmat [k, n] from `floats`: one float64 matrix product, then a sum over U
        of the k-times-smaller result.  The caller guarantees that no partial sum reaches 2**53."""
        n, u = counts.shape[0], counts.shape[-1]
        out = wmat @ counts.reshape(n, -1).astype(np.float64)
        return out.reshape(wmat.shape[0], -1, u).sum(axis=-1).astype(np.int64)

    def total(self, x: Any) -> int:
        """The sum of an integer array as a Python int (synchronises a device)."""
        return int(x.sum())

    # ---- faults
    def stream(self, p: float, key: list[int]) -> FaultStream | RegionSampler:
        """The Bernoulli(p) fault stream of one fault kind and rate, seeded by `key`."""
        return FaultStream(p, np.random.default_rng(key))

    def injector(
        self, stream: Any, rate: Rate, rng: np.random.Generator, block: int, active: np.ndarray | None
    ) -> FaultInjector:
        """Flips bits of regions of words at `rate` (see cramc.sim.faults.Injector)."""
        return Injector(stream, rate, rng, block, active)


NUMPY = Backend()


#: SWAR popcount masks (all below 2**63, so valid int64 scalars)
_M1, _M2, _M4 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F


class TorchBackend(Backend):
    """PyTorch tensors on one device; cell words are int64 (the same 64 bits as numpy's uint64)."""

    name = "torch"
    ONES = -1

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.dev = torch.device(device)
        self.device = str(self.dev)
        self.and_ = torch.bitwise_and
        self.or_ = torch.bitwise_or
        self.xor = torch.bitwise_xor
        self.not_ = torch.bitwise_not
        self.add = torch.add
        self.sub = torch.sub

    #: Share of a GPU's free memory the state may take by default: the rest is for the fused runs'
    #: temporaries (a few times their [pairs, arrays, lanes, words] blocks) and the sampler.
    GPU_SHARE = 0.4

    def memory_budget(self) -> int:
        if self.dev.type != "cuda":
            return self.HOST_BUDGET
        free, _ = self.torch.cuda.mem_get_info(self.dev)
        return int(free * self.GPU_SHARE)

    def words(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.int64, device=self.dev)

    def empty_words(self, shape: tuple[int, ...]) -> Any:
        return self.torch.empty(shape, dtype=self.torch.int64, device=self.dev)

    def full_words(self, shape: tuple[int, ...], ones: bool) -> Any:
        return self.torch.full(shape, -1 if ones else 0, dtype=self.torch.int64, device=self.dev)

    def ints(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.int64, device=self.dev)

    def put(self, a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a)
        a = a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64, copy=False)
        if not a.flags.writeable:
            a = a.copy()
        return self.torch.from_numpy(a).to(self.dev, copy=True)  # never shares memory with the host array

    def get(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def get_words(self, x: Any) -> np.ndarray:
        return self.get(x).view(np.uint64)

    def copy(self, x: Any) -> Any:
        return x.clone(memory_format=self.torch.contiguous_format)

    def contiguous(self, x: Any) -> Any:
        return x.contiguous()

    def broadcast(self, x: Any, shape: tuple[int, ...]) -> Any:
        return x.expand(shape).contiguous()

    def expand(self, x: Any, shape: tuple[int, ...]) -> Any:
        return x.expand(shape)

    def is_contiguous(self, x: Any) -> bool:
        return bool(x.is_contiguous())

    def flat(self, x: Any) -> Any:
        return x.view(-1)  # raises where a view is impossible, never copies

    def copyto(self, dst: Any, src: Any) -> None:
        dst.copy_(src)

    def popcount_sum(self, words: Any) -> Any:
        return self.popcounts(words).sum(dim=-1)

    def weighted_sum(self, weights: Any, x: Any) -> Any:
        # elementwise, not tensordot: CUDA has no int64 matrix product
        return (x * weights.view(-1, *([1] * (x.dim() - 1)))).sum(dim=0)

    def popcounts(self, words: Any) -> Any:
        # SWAR popcount per int64 word (U = W), in two buffers of the words' size: per 2, 4 and 8 bits,
        # then the bytes summed by shifts.  Arithmetic right shifts only smear the sign bit into bits the
        # masks clear (and from the byte stage on the words are non-negative).  Summing the bytes as
        # int64 words, not as a uint8 view, avoids an 8x int64 copy in the reductions (a `sum(dtype=)`
        # casts its whole input first).
        t = self.torch
        x = words >> 1
        x &= _M1
        t.sub(words, x, out=x)
        y = x >> 2
        y &= _M2
        x &= _M2
        x += y
        t.bitwise_right_shift(x, 4, out=y)
        x += y
        x &= _M4
        for k in (8, 16, 32):
            t.bitwise_right_shift(x, k, out=y)
            x += y
        x &= 0x7F
        return x

    def floats(self, a: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(self.dev, copy=True)

    def contract(self, wmat: Any, counts: Any) -> Any:
        # per-word counts: sum them per row first (a cheap reduction on a device, in int64: no copy of the
        # input), so the float64 operand is W times smaller than the counts would be converted whole
        n, u = counts.shape[0], counts.shape[-1]
        rows = counts.reshape(n, -1, u).sum(dim=-1).to(self.torch.float64)
        return (wmat @ rows).to(self.torch.int64)

    def total(self, x: Any) -> int:
        return int(x.sum().item())

    def stream(self, p: float, key: list[int]) -> RegionSampler:
        seed = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))
        return RegionSampler(self, p, seed)

    def injector(
        self, stream: Any, rate: Rate, rng: np.random.Generator, block: int, active: np.ndarray | None
    ) -> FaultInjector:
        return RegionInjector(stream, rate, block, None if active is None else self.put(active))


class RegionSampler:
    """Faulty-bit sampling on a torch device: an exact Bernoulli(p) process per region.

    The host's `FaultStream` walks one stream of trials across instructions and
    needs the host to know where each success lies.  On a device that would
    cost a synchronisation per instruction, so here each region draws its own
    candidates: K exponential variates from the generator, turned into
    geometric gaps (floor(E / -ln(1 - p)) + 1, which has P(gap > k) = (1-p)^k)
    and summed into positions.  A region of n trials needs Poisson-many
    candidates with mean n*p; K = n*p + 8 sqrt(n*p) + 40 runs short with
    probability below 1e-15 per region, and when it does (the last position
    falls inside the region) the run fails loudly when counts are next read
    (`check`), never silently.  Candidates past the end of the region are
    discarded; the memorylessness of the Bernoulli process makes the next
    region's fresh draw exact.

    The successes flipped so far accumulate in a device counter read by
    `handed_out` (which synchronises).
    """

    dropped = 0  # the host stream's bookkeeping; every success counted here was flipped

    def __init__(self, be: TorchBackend, p: float, seed: int):
        if not 0.0 < p <= 1.0:
            raise ValueError(f"a fault stream needs 0 < p <= 1, got {p}")
        t = be.torch
        self.be, self.p, self.t = be, p, t
        self.gen = t.Generator(device=be.dev)
        self.gen.manual_seed(seed)
        self.inv_lambda = 0.0 if p == 1.0 else -1.0 / math.log1p(-p)
        self.flipped = t.zeros((), dtype=t.int64, device=be.dev)
        self.short = t.zeros((), dtype=t.int64, device=be.dev)

    def handed_out(self) -> int:
        self.check()
        return int(self.flipped.item())

    def check(self) -> None:
        if int(self.short.item()):
            raise RuntimeError(
                "the device fault sampler ran out of candidates in a region (probability < 1e-15 per "
                "region); rerun with another seed"
            )

    def candidates(self, trials: int, pmax: float) -> tuple[Any, Any]:
        """Sorted positions of the Bernoulli(pmax) successes among `trials` trials (clamped to `trials`)
        and whether each is inside."""
        t = self.t
        lam = trials * pmax
        k = int(math.ceil(lam + 8.0 * math.sqrt(lam) + 40.0))
        e = t.empty(k, dtype=t.float64, device=self.be.dev).exponential_(generator=self.gen)
        # gaps beyond the region are as good as infinite: clamping keeps the sums in range
        cap = float(min(trials, GAP_CAP))
        gaps = e.mul_(self.inv_lambda).clamp_(max=cap).to(t.int64).add_(1)
        pos = t.cumsum(gaps, 0).sub_(1)
        self.short.add_(pos[-1] < trials)
        inside = pos < trials
        return pos.clamp_(max=trials), inside


class RegionInjector:
    """Flips bits of regions of device words at one rate (the device twin of faults.Injector).

    An input-dependent gate rate (``by_ones``) is thinned at each candidate by by_ones[k]/pmax, k the
    number of the gate's inputs at 1 in that row, gathered from `ins` (the input words laid out as the
    region, [..., block]) at the candidates only.
    """

    def __init__(self, stream: RegionSampler, rate: Rate, block: int, active: Any | None):
        self.stream, self.rate = stream, rate
        self.block, self.active = block, active
        self.pmax = rate.pmax
        self.symmetric = rate.symmetric
        self.step = chunk_step(block, self.pmax)
        t, dev = stream.t, stream.be.dev
        self.accept = (
            None
            if rate.by_ones is None
            else t.tensor([p / self.pmax for p in rate.by_ones], dtype=t.float64, device=dev)
        )

    def dense(self, size: int) -> bool:
        """Never: the host's rendered-mask path has no device counterpart (see faults.Injector.dense)."""
        return False

    def __call__(self, flat: Any, ins: list[Any] | None = None) -> None:
        rows = self._rows(ins)
        n = flat.numel()
        for s in range(0, n, self.step):  # one chunk at a time: bounded candidate buffers
            self.flip(flat, [self._chunk(s, min(self.step, n - s), flat, rows)])

    def _rows(self, ins: list[Any] | None) -> list[Any] | None:
        """The gate's inputs as [-1, block] words, for an input-dependent rate (None otherwise)."""
        if self.accept is None:
            return None
        assert ins is not None, "an input-dependent rate needs the gate's inputs"
        return [x.reshape(-1, self.block) for x in ins]

    def pick(self, ins: list[Any], size: int) -> list[tuple[int, Any, Any]]:
        """The faults of an input-dependent rate in a region of `size` words, per chunk: (first word, word
        index, flip mask).  Reads only the inputs, so a caller may pick before the gate overwrites one and
        `flip` after; draws what ``__call__`` draws."""
        rows = self._rows(ins)
        return [self._chunk(s, min(self.step, size - s), None, rows) for s in range(0, size, self.step)]

    def _chunk(self, s: int, n: int, flat: Any, rows: list[Any] | None) -> tuple[int, Any, Any]:
        st = self.stream
        t = st.t
        pos, inside = st.candidates(64 * n, self.pmax)
        w = pos >> 6  # == n for the candidates past the end: they land in delta[n], discarded
        mk = t.bitwise_left_shift(t.ones_like(pos), pos & 63)
        keep = inside
        if self.active is not None:
            keep = keep & ((self.active[w % self.block] & mk) != 0)
        if rows is not None:
            accept = self.accept
            assert accept is not None
            wc = w.clamp(max=n - 1) + s
            r, c = wc // self.block, wc % self.block
            ones = t.zeros_like(w)
            for x in rows:
                ones += (x[r, c] & mk) != 0
            u = t.rand(pos.shape, dtype=t.float64, device=pos.device, generator=st.gen)
            keep = keep & (u < accept[ones])
        elif not self.symmetric:
            one = (flat[s + w.clamp(max=n - 1)] & mk) != 0
            u = t.rand(pos.shape, dtype=t.float64, device=pos.device, generator=st.gen) * self.pmax
            keep = keep & (u < t.where(one, self.rate.p10, self.rate.p01))
        st.flipped.add_(keep.sum())
        return s, w, t.where(keep, mk, 0)

    def flip(self, flat: Any, picked: list[tuple[int, Any, Any]]) -> None:
        """XOR what `pick` chose into the region."""
        t = self.stream.t
        for s, w, mk in picked:
            n = min(self.step, flat.numel() - s)
            # Same-word successes are distinct bits: their sum is their OR, with no carries.
            delta = t.zeros(n + 1, dtype=t.int64, device=flat.device)
            delta.index_add_(0, w, mk)
            part = flat[s : s + n]
            part.bitwise_xor_(delta[:n])


_MADE: dict[str, Backend] = {}


def get_backend(spec: str | Backend | None) -> Backend:
    """The backend named by `spec` (see BACKEND_HELP); a Backend passes through.  One instance per device."""
    if spec is None or isinstance(spec, Backend):
        return spec or NUMPY
    if spec not in _MADE:
        _MADE[spec] = _make_backend(spec)
    return _MADE[spec]


def _make_backend(spec: str) -> Backend:
    name, _, device = spec.partition(":")
    if name == "numpy":
        if device not in ("", "cpu"):
            raise UserError(f"--backend {spec}: numpy runs on the CPU only")
        return NUMPY
    if name != "torch":
        raise UserError(f"unknown backend '{spec}' (choose {BACKEND_HELP})")
    try:
        import torch
    except ImportError:
        raise UserError(f"--backend {spec} needs PyTorch, which is not installed (pip install 'cramc[gpu]')") from None
    if not device:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"--backend {spec}: '{device}' is not a torch device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--backend {spec}: this PyTorch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--backend {spec}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UserError(f"--backend {spec}: only cpu and cuda devices are supported")
    return TorchBackend(str(dev))
