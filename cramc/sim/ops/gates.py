"""The CRAM gates: row-parallel logic in the arrays, with their in-place kernels.

Every gate of the opcode table (unit GATE) runs through one function driven by
the table: the reference ("plain") path evaluates the opcode's ``logic`` into a
fresh array, injects the gate faults and stores the active rows; the prepared
path writes straight into the destination column with the backend's ``out=``
ufuncs (no temporaries when every row is active) and draws the very same
faults.  The in-place kernels are what makes the prepared path fast; a gate
without one runs the table's logic.  An input-dependent rate (by_ones) reads
the gate's input words at its candidate faults: every path hands the injector
the inputs laid out as the output region.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from cramc.isa.linked import BoundOp
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim.backend import Backend
from cramc.sim.machine import Machine, word_range
from cramc.sim.ops.registry import impl, prepare, runner

# In-place kernels: (inputs, out, temporaries).  Each writes `out` only after it
# has read every input for the last time, so out may be one of the inputs
# (`and c3, c3, c4`).  tests/test_sim_perf_semantics.py checks each against the
# opcode table's logic, aliased and not, on every backend.
Kernel = Callable[[list[Any], Any, list[Any]], None]


@functools.cache
def kernels(be: Backend) -> dict[str, tuple[Kernel, int]]:
    """mnemonic -> (kernel, temporaries it needs), built from the backend's out= ufuncs.

    A gate without one runs the opcode table's logic.
    """
    _and, _or, _inv, _copy = be.and_, be.or_, be.not_, be.copyto

    def k_not(i: list[Any], d: Any, t: list[Any]) -> None:
        _inv(i[0], out=d)

    def k_copy(i: list[Any], d: Any, t: list[Any]) -> None:
        _copy(d, i[0])

    def k_and(i: list[Any], d: Any, t: list[Any]) -> None:
        _and(i[0], i[1], out=d)

    def k_nand(i: list[Any], d: Any, t: list[Any]) -> None:
        _and(i[0], i[1], out=d)
        _inv(d, out=d)

    def k_or(i: list[Any], d: Any, t: list[Any]) -> None:
        _or(i[0], i[1], out=d)

    def k_nor(i: list[Any], d: Any, t: list[Any]) -> None:
        _or(i[0], i[1], out=d)
        _inv(d, out=d)

    def k_maj3(i: list[Any], d: Any, t: list[Any]) -> None:
        a, b, c = i
        t0 = t[0]
        _or(a, b, out=t0)
        _and(t0, c, out=t0)  # c & (a | b)
        _and(a, b, out=d)
        _or(d, t0, out=d)

    def k_min3(i: list[Any], d: Any, t: list[Any]) -> None:
        k_maj3(i, d, t)
        _inv(d, out=d)

    def k_maj5(i: list[Any], d: Any, t: list[Any]) -> None:
        a, b, c, q, e = i
        ab, a_b, cq, c_q, x = t
        _and(a, b, out=ab)
        _or(a, b, out=a_b)
        _and(c, q, out=cq)
        _or(c, q, out=c_q)
        _and(ab, c_q, out=x)
        _and(a_b, c_q, out=c_q)
        _or(c_q, ab, out=c_q)
        _and(cq, a_b, out=a_b)
        _or(c_q, cq, out=c_q)  # at least two among a..q: ab | cq | (a_b & c_q)
        _or(x, a_b, out=x)  # at least three among a..q: (ab & c_q) | (cq & a_b)
        _and(c_q, e, out=c_q)
        _or(x, c_q, out=d)

    def k_min5(i: list[Any], d: Any, t: list[Any]) -> None:
        k_maj5(i, d, t)
        _inv(d, out=d)

    return {
        "not": (k_not, 0),
        "copy": (k_copy, 0),
        "and": (k_and, 0),
        "nand": (k_nand, 0),
        "or": (k_or, 0),
        "nor": (k_nor, 0),
        "maj3": (k_maj3, 1),
        "min3": (k_min3, 1),
        "maj5": (k_maj5, 5),
        "min5": (k_min5, 5),
    }


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
        ins = [cells[c, lo:hi] for c in srcs]
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
    ins = [cells[c, lo:hi, :, w0:w1] for c in srcs]
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
    ins = [m.cells[c, lo:hi] for c in srcs]
    res = b.op.logic(*ins)  # type: ignore[misc]
    m.flip(res, b, m.faults.gate(b.op.mnemonic), "gate", ins)
    m.put_column(b, slice(dst, dst + 1), res[None])
