"""The interpreter's dispatch tables: one implementation per opcode, filed by mnemonic.

Each opcode of the table (cramc.isa.opcodes) has one small function,
registered with ``@impl``; the opcode modules of this package register them
when cramc.sim.ops is imported.  Opcodes on the hot path also register a
``@prepare`` function that builds a runner per instruction on its first
execution (views of the operand columns, row masks, the kernel, the fault
injector), so that later executions cost one call.  `runner` picks between
the two and caches the result on the machine; on a chip with static defects it
puts the instructions that write a defective cell behind cramc.sim.chip.guard.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from cramc.isa.linked import BoundOp
from cramc.isa.opcodes import OPCODES, Unit
from cramc.sim.chip import guard
from cramc.sim.machine import Machine

ImplFn = Callable[[Machine, BoundOp], None]
PrepareFn = Callable[[Machine, BoundOp], Callable[[], None]]

#: The units whose instructions write cells (gate outputs, fill, wr): where a chip's defects act.
WRITES_CELLS = frozenset((Unit.GATE, Unit.WRITE))
#: mnemonic -> the function that executes one instruction.
IMPLS: dict[str, ImplFn] = {}
#: Opcodes with a specialised runner: built once per instruction, then called directly.
PREPARE: dict[str, PrepareFn] = {}


def _registrar(table: dict[str, Any], what: str) -> Callable[..., Callable[[Any], Any]]:
    """A decorator factory that files a function under opcode mnemonics of the opcode table."""

    def decorator(*mnemonics: str) -> Callable[[Any], Any]:
        def register(fn: Any) -> Any:
            for mn in mnemonics:
                if mn not in OPCODES:
                    raise AssertionError(f"@{what} for unknown opcode {mn}")
                table[mn] = fn
            return fn

        return register

    return decorator


impl = _registrar(IMPLS, "impl")
prepare = _registrar(PREPARE, "prepare")


def runner(m: Machine, b: BoundOp) -> Callable[[], None]:
    """A zero-argument callable that executes b on m (built once, then cached on the machine).

    With ``m.reference`` gates take their plain path (their `impl`), never a prepared kernel.
    """
    fn = m._runners.get(b)
    if fn is None:
        prep = None if m.reference and b.op.unit is Unit.GATE else PREPARE.get(b.op.mnemonic)
        fn = prep(m, b) if prep is not None else functools.partial(IMPLS[b.op.mnemonic], m, b)
        if m.defects is not None and b.op.unit in WRITES_CELLS:
            fn = guard(m, b, fn)  # the chip's stuck and weak cells in what b writes (none: fn itself)
        m._runners[b] = fn
    return fn
