"""The CMOS side of the chip: the accumulator file beside each array (``aclr``, ``ard``) and the vector unit.

Both are exact (no faults).  The vector unit runs each opcode's reference
semantics (cramc.isa.cmos) on the host tensors, with the sample lanes as the
leading axis; ``ard`` hands accumulators over to it as an int64 tensor.  The
accumulator ops are counted by the interpreter's tally (cramc.isa.counting),
the vector unit's here (the elements it produces follow the shapes).
"""

from __future__ import annotations

import numpy as np

from cramc.isa.counting import Factor
from cramc.isa.linked import BoundOp
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim.machine import Machine
from cramc.sim.ops.registry import impl


# ---------------------------------------------------------------- accumulator file
@impl("aclr")
def aclr(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    s0, s1 = b.operands[0]
    m.acc[lo:hi, s0:s1] = 0


@impl("ard")
def ard(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, (s0, s1) = b.operands
    m.store(b, dst, np.ascontiguousarray(m.be.get(m.acc[lo:hi, s0:s1]).transpose(2, 0, 1)))


# ---------------------------------------------------------------- CMOS vector unit
@impl(*(op.mnemonic for op in OPCODES.values() if op.unit is Unit.CMOS))
def cmos_op(m: Machine, b: BoundOp) -> None:
    dst, *srcs = b.operands
    res = b.op.cmos([m.load(s) for s in srcs], b.attrs)  # type: ignore[misc]
    if res.shape[0] != m.lanes:
        res = np.ascontiguousarray(np.broadcast_to(res, (m.lanes, *res.shape[1:])))
    m.store(b, dst, res)
    # the elements produced follow the sources' shapes: counted here, by the unit's rule
    m._counts.add(b.op, {Factor.ELEMENTS: int(res.size) // m.lanes}, m.lanes)
