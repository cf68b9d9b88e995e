"""The linked program: what the verifier hands the simulator and the cost model.

`cramc.isa.verifier.verify` checks a parsed program and links it: every
micro-program call inlined with its parameters bound (cramc.isa.link), every
constant resolved.  The result is a `Linked` program of `BoundOp`s and `Loop`s
that the interpreter only executes and the static cost model only counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cramc.errors import Loc
from cramc.isa import ast
from cramc.isa.opcodes import Opcode

#: Work units that dispatching one instruction costs, whatever its size: one gate on one array of 256
#: rows takes about 2.4 us, as long as 65 536 row operations of a wide gate take.
DISPATCH_COST = 1 << 16


@dataclass(frozen=True)
class MachineSpec:
    arrays: int
    rows: int
    cols: int
    accs: int

    @property
    def words(self) -> int:
        return (self.rows + 63) // 64

    @property
    def state_bytes(self) -> int:
        """Bytes of bit-packed array state per sample."""
        return self.arrays * self.cols * self.words * 8


@dataclass(frozen=True)
class TRef:
    """A resolved tensor operand: name and first-axis index (int, loop variable, or None)."""

    name: str
    index: int | str | None = None


@dataclass(frozen=True, eq=False)
class BoundOp:
    """One instruction with every parameter bound and constant resolved."""

    op: Opcode
    arrays: tuple[int, int] | None  # [lo, hi)
    rows: tuple[int, int] | None  # [lo, hi)
    operands: tuple[Any, ...]  # int (col/acc/int), (lo, hi) accs, TRef, np.ndarray (const)
    attrs: dict[str, Any]
    loc: Loc | None
    site: tuple[Loc, ...] = ()  # call sites, outermost first
    text: str = ""  # the source text of the instruction (for traces and errors)


@dataclass(frozen=True, eq=False)
class Loop:
    var: str
    count: int
    body: tuple[BoundOp | Loop, ...]
    loc: Loc | None = None


Node = BoundOp | Loop


@dataclass(frozen=True, eq=False)
class IOSpec:
    """A program input or output. `batch`: the axis of `shape` that is the model's batch axis (data files
    carry the samples there); `key`: the name in data files (the ONNX name; the program's name if not given)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    batch: int | None = None
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name)


@dataclass(frozen=True, eq=False)
class Expectation:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    tol: float
    #: the float model's outputs for the same inputs (.expect_float; empty if the program has none)
    float_outputs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Work:
    """What running the program costs the simulator, counted statically (loops unrolled by their trip
    counts, micro-program calls inlined, .init and .main together).

    `instructions`: instructions (and loop iterations) executed; the simulator dispatches each once per
    batch of sample lanes.  `row_ops`: per sample, the row operations of every executed instruction:
    arrays x active rows for an instruction on the arrays, elements read and written for a CMOS one.
    """

    instructions: int = 0
    row_ops: int = 0

    def estimate(self, samples: int, lanes: int) -> int:
        """Work units of a run of `samples` samples, `lanes` side by side: row operations + dispatches."""
        batches = -(-samples // max(lanes, 1))
        return self.row_ops * samples + DISPATCH_COST * self.instructions * batches


@dataclass(frozen=True, eq=False)
class Linked:
    machine: MachineSpec
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    init: tuple[Node, ...]
    main: tuple[Node, ...]
    expect: Expectation | None
    program: ast.Program
    trace: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> reference value for validation sample 0
    tensor_shapes: dict[str, tuple[tuple[int, ...], bool]] = field(default_factory=dict)  # name -> (shape, is_int)
    work: Work = field(default_factory=Work)
    #: what the simulator derives from this program alone (its extent, memory footprint, fuse rewrite and
    #: tallies), computed once per linked program however many runs, batches and checks read it; the
    #: program itself never changes, so nothing here goes stale
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)


def source_shape(linked: Linked, src: Any) -> tuple[int, ...]:
    """The per-sample shape of a source operand (a data constant or a tensor, indexed or not)."""
    if isinstance(src, np.ndarray):
        return tuple(src.shape)
    shape = linked.tensor_shapes[src.name][0]
    return tuple(shape[1:]) if src.index is not None else tuple(shape)
