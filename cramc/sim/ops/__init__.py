"""The opcode implementations of the interpreter, one module per unit of the opcode table.

- `gates`: the CRAM logic gates and their in-place kernels (unit GATE);
- `periphery`: ``fill``, ``wr`` and ``rd`` (units WRITE and READ);
- `tree`: the adder-tree ops and the fused multiply-accumulate runner (unit TREE);
- `cmos`: the accumulator file and the CMOS vector unit (units ACC and CMOS);
- `registry`: the dispatch tables they register into, and `registry.runner`.

Importing this package registers every implementation (tests/isa/test_gates.py
checks that every executable opcode has one).
"""

from __future__ import annotations

from cramc.sim.ops import cmos, gates, periphery, registry, tree

__all__ = ["cmos", "gates", "periphery", "registry", "tree"]
