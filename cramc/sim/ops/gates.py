"""The CRAM gates: row-parallel logic in the arrays, with their in-place kernels.

Every gate of the opcode table (unit GATE) runs through one function driven by
the table: the reference ("plain") path evaluates the opcode's ``logic`` into a
fresh array, injects the gate faults and stores the active rows; the prepared
path writes straight into the destination column with the backend's ``out=``
ufuncs (no temporaries when every row is active) and draws the very same
faults.  The in-place kernels are what makes the prepared path fast; they are
compiled from the same ``logic`` (traced into out= steps), so a gate's function
is written once, in the table.  An input-dependent rate (by_ones) reads
the gate's input words at its candidate faults: every path hands the injector
the inputs laid out as the output region.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cramc.isa.linked import BoundOp
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim.backend import Backend
from cramc.sim.machine import Machine, word_range
from cramc.sim.ops.registry import impl, prepare, runner

# In-place kernels: (inputs, out, temporaries).  Each is compiled from the opcode
# table's logic (`compile_kernel`), so the table is the only place a gate's
# function is written.  A kernel writes `out` only in its last step, after it has
# read every input for the last time, so out may even be one of the inputs (the
# verifier forbids that in programs: one MTJ per terminal).
# tests/test_sim_perf_semantics.py checks each against the table's logic, on
# every backend.
Kernel = Callable[[list[Any], Any, list[Any]], None]


class _Traced:
    """A value in a trace of a gate's logic: the logic runs on these instead of packed words."""

    def __init__(self, steps: list[tuple[str, tuple[int, ...]]], ref: int) -> None:
        self.steps, self.ref = steps, ref

    def _emit(self, fn: str, *args: _Traced) -> _Traced:
        self.steps.append((fn, tuple(a.ref for a in args)))
        return _Traced(self.steps, -len(self.steps))  # step k (1-based) is referred to as -k

    def __and__(self, other: _Traced) -> _Traced:
        return self._emit("copy" if other.ref == self.ref else "and", self, other)

    def __or__(self, other: _Traced) -> _Traced:
        return self._emit("copy" if other.ref == self.ref else "or", self, other)

    def __invert__(self) -> _Traced:
        return self._emit("not", self)


@dataclass(frozen=True)
class KernelCode:
    """A gate's logic as straight-line out= steps: each (function, argument places, result place).

    Places: ``i0, i1, ...`` the inputs, ``t0, t1, ...`` temporaries (reused once dead), ``d`` the output.
    """

    mnemonic: str
    steps: tuple[tuple[str, tuple[str, ...], str], ...]
    temps: int

    def source(self) -> str:
        n_in = len(OPCODES[self.mnemonic].operands) - 1
        lines = [f"def k_{self.mnemonic}(i, d, t):"]
        lines.append(f"    {', '.join(f'i{k}' for k in range(n_in))}, = i")
        if self.temps:
            lines.append(f"    {', '.join(f't{k}' for k in range(self.temps))}, = t[:{self.temps}]")
        for fn, args, out in self.steps:
            if fn == "copy":
                lines.append(f"    _copy({out}, {args[0]})")
            else:
                lines.append(f"    _{fn}({', '.join(args)}, out={out})")
        return "\n".join(lines) + "\n"


@functools.cache
def compile_kernel(mnemonic: str) -> KernelCode:
    """Trace the opcode table's logic of gate `mnemonic` and allocate its intermediate values to temporaries.

    Linear scan over the steps: a step's arguments whose last use it is free their places before its
    result takes one, so the kernel needs as many temporaries as values are live at once.  `d` joins the
    free places at the last step that reads an input (a step reads its arguments before it writes, so
    that step may already write d): from then on no input is read, so out may alias an input.  The last
    step writes `d`.
    """
    op = OPCODES[mnemonic]
    assert op.logic is not None and op.unit is Unit.GATE
    n_in = len(op.operands) - 1
    steps: list[tuple[str, tuple[int, ...]]] = []
    result: Any = op.logic(*(_Traced(steps, k) for k in range(n_in)))  # a _Traced (the logic is typed on arrays)
    if not steps or result.ref != -len(steps):  # the logic returned an input unchanged: a buffer
        steps.append(("copy", (result.ref,)))
    last_use = {ref: k for k, (_, args) in enumerate(steps) for ref in args}
    inputs_read = max(k for k, (_, args) in enumerate(steps) if any(a >= 0 for a in args))
    place: dict[int, str] = {k: f"i{k}" for k in range(n_in)}
    free: list[str] = []
    n_temps = 0
    code = []
    for k, (fn, args) in enumerate(steps):
        ins = tuple(place[a] for a in args)
        for a in dict.fromkeys(args):
            if a < 0 and last_use[a] == k:
                free.append(place[a])
        if k == inputs_read:
            free.append("d")
        if k == len(steps) - 1:
            out = "d"  # free by now: every earlier value in d had its last use at or before this step
        elif "d" in free:
            out = free.pop(free.index("d"))
        elif free:
            out = free.pop()
        else:
            out, n_temps = f"t{n_temps}", n_temps + 1
        place[-(k + 1)] = out
        code.append((fn, ins if fn != "copy" else ins[:1], out))
    return KernelCode(mnemonic, tuple(code), n_temps)


@functools.cache
def kernels(be: Backend) -> dict[str, tuple[Kernel, int]]:
    """mnemonic -> (kernel, temporaries it needs) for every gate of the table, on the backend's out= ufuncs."""
    names = {"_and": be.and_, "_or": be.or_, "_not": be.not_, "_copy": be.copyto}
    out: dict[str, tuple[Kernel, int]] = {}
    for mn in GATE_MNEMONICS:
        code = compile_kernel(mn)
        scope: dict[str, Any] = dict(names)
        exec(code.source(), scope)  # noqa: S102 - source generated above from the opcode table's logic
        out[mn] = (scope[f"k_{mn}"], code.temps)
    return out


GATE_MNEMONICS = tuple(op.mnemonic for op in OPCODES.values() if op.unit is Unit.GATE)


@impl(*GATE_MNEMONICS)
def gate(m: Machine, b: BoundOp) -> None:
    if m.reference:
        _gate_plain(m, b)
    else:
        runner(m, b)()


@prepare(*GATE_MNEMONICS)
def prepare_gate(m: Machine, b: BoundOp) -> Callable[[], None]:
    """A gate as a few ufunc calls writing straight into the destination column.

    All rows active: the kernel writes into the column's block of words, faults
    are injected there.  A row range: the kernel works on the words that hold
    the range, in a scratch buffer, and the active rows are merged in.
    """
    mn = b.op.mnemonic
    lo, hi = b.arrays  # type: ignore[misc]
    dst, *srcs = b.operands
    r0, r1 = m.rows(b)
    rate = m.faults.gate(mn)
    table = kernels(m.be)
    if mn not in table:
        return functools.partial(_gate_plain, m, b)
    kern, ntemp = table[mn]
    cells = m.cells
    if r0 == 0 and r1 == m.spec.rows:
        ins = [m.column(c, lo, hi) for c in srcs]
        d = cells[dst, lo:hi]
        temps = m.scratch(d.shape, ntemp)
        if rate.zero:
            return functools.partial(kern, ins, d, temps)
        flat = m.be.flat(d)  # the column block is contiguous
        inj = m.injector("gate", rate, r0, r1)
        n_words = math.prod(d.shape)
        if rate.by_ones is not None:
            # Input-dependent rate: the faults are picked from the inputs before the kernel runs (the
            # output may be one of them), then flipped into the output.
            pick, flip = inj.pick, inj.flip

            def run_full_by_ones() -> None:
                picked = pick(ins, n_words)
                kern(ins, d, temps)
                flip(flat, picked)

            return run_full_by_ones
        if inj.dense(n_words):
            # Faults expected in most instructions: XOR a flip mask rendered in bulk, one stream window
            # at a time (the same successes as one mask of the whole block, in bounded memory).
            take_dense, xor = inj.stream.take_dense, m.be.xor
            piece = inj.stream.window_words
            if n_words <= piece:

                def run_full_dense() -> None:
                    kern(ins, d, temps)
                    xor(flat, take_dense(n_words), out=flat)

                return run_full_dense
            pieces = [flat[s : s + piece] for s in range(0, n_words, piece)]

            def run_full_dense_pieces() -> None:
                kern(ins, d, temps)
                for f in pieces:
                    xor(f, take_dense(f.size), out=f)

            return run_full_dense_pieces

        def run_full_faulty() -> None:
            kern(ins, d, temps)
            inj(flat)

        return run_full_faulty
    w0, w1 = word_range(r0, r1)
    ins = [m.column(c, lo, hi, w0, w1) for c in srcs]
    d = cells[dst, lo:hi, :, w0:w1]
    out, *temps = m.scratch(d.shape, 1 + ntemp)
    out_flat = m.be.flat(out)
    mask = m.mask(r0, r1, w0, w1)
    inj_rows = None if rate.zero else m.injector("gate", rate, r0, r1)
    by_ones = None if rate.by_ones is None else ins  # what an input-dependent rate reads (out is scratch)
    xor, and_ = m.be.xor, m.be.and_

    def run_rows() -> None:
        kern(ins, out, temps)
        if inj_rows is not None:
            inj_rows(out_flat, by_ones)
        # d = out on active rows, d elsewhere: d ^= (out ^ d) & mask
        xor(out, d, out=out)
        and_(out, mask, out=out)
        xor(d, out, out=d)

    return run_rows


def _gate_plain(m: Machine, b: BoundOp) -> None:
    """The plain path: the table's logic into a fresh array, faults, masked store."""
    lo, hi = b.arrays  # type: ignore[misc]
    dst, *srcs = b.operands
    ins = [m.column(c, lo, hi) for c in srcs]
    res = b.op.logic(*ins)  # type: ignore[misc]
    m.flip(res, b, m.faults.gate(b.op.mnemonic), "gate", ins)
    m.put_column(b, slice(dst, dst + 1), res[None])
