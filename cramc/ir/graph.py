"""The MVM-tiling IR: a straight-line graph of integer MVMs and CMOS operations.

Every layer of the network is either
- an ``mvm`` (or, before the conv-to-MVM pass, a ``conv``): an exact integer
  matrix-vector product over quantised values, later annotated with how it is
  tiled onto CRAM arrays (which rows hold which K chunk, which columns hold
  weight bit-planes, input bit-planes and scratch, which arrays, how many
  rounds), or
- a CMOS vector operation with exactly the semantics of the ISA instruction
  of the same mnemonic (cramc.isa.cmos), which is what it is emitted as.

Values are named ``%name`` and are either integer or float tensors with a
static per-inference shape; constants are ``$name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cramc.errors import InternalError


@dataclass(frozen=True)
class IOValue:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class Op:
    """One IR operation: ``%out = kind ins... attrs``; `origin` names the ONNX node."""

    kind: str
    out: str
    ins: tuple[str, ...]  # "%value" or "$const"
    attrs: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


@dataclass
class Graph:
    inputs: list[IOValue] = field(default_factory=list)
    outputs: list[IOValue] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # name without '$' -> array
    const_types: dict[str, str] = field(default_factory=dict)  # name -> element type (i8, u8, i32, f32 ...)
    ops: list[Op] = field(default_factory=list)
    #: cramc.ir.semantics.infer_shapes' memo: what an operation computes (kind, semantic attributes,
    #: input shapes and types) -> its result's shape and whether it is integer.  A pure function's
    #: cache, keyed by everything it depends on, so edits of the graph never make it stale.
    shape_memo: dict[tuple, tuple[tuple[int, ...], bool]] = field(default_factory=dict, repr=False, compare=False)

    def copy(self) -> Graph:
        """A copy that can be changed without changing this graph: new lists, dicts, ops and attribute
        lists; constant arrays are shared (passes replace a constant, they never write into one)."""
        ops = [
            Op(
                op.kind,
                op.out,
                op.ins,
                {k: list(v) if isinstance(v, list) else v for k, v in op.attrs.items()},
                op.origin,
            )
            for op in self.ops
        ]
        return Graph(
            list(self.inputs), list(self.outputs), dict(self.consts), dict(self.const_types), ops, dict(self.shape_memo)
        )

    def const(self, name: str, value: np.ndarray, dtype: str) -> str:
        """Add a constant under a fresh name derived from `name`; return its '$' reference."""
        base = sanitize(name)
        n, i = base, 1
        while n in self.consts:
            n = f"{base}.{i}"
            i += 1
        self.consts[n] = value
        self.const_types[n] = dtype
        return "$" + n

    def producers(self) -> dict[str, Op]:
        return {op.out: op for op in self.ops}

    def users(self) -> dict[str, list[Op]]:
        out: dict[str, list[Op]] = {}
        for op in self.ops:
            for i in op.ins:
                out.setdefault(i, []).append(op)
            for v in op.attrs.values():
                if isinstance(v, str) and v.startswith("$"):
                    out.setdefault(v, []).append(op)
        return out


def sanitize(name: str) -> str:
    """ONNX names -> IR/ISA identifiers ([A-Za-z_][A-Za-z0-9_.]*)."""
    s = "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in name)
    if not s or not (s[0].isalpha() or s[0] == "_"):
        s = "v" + s
    return s


def bits_for(values: np.ndarray, signed: bool | None = None) -> tuple[int, bool]:
    """Smallest two's-complement (or unsigned) width that holds every value."""
    if values.size == 0:
        return 1, False
    lo, hi = int(values.min()), int(values.max())
    if signed is None:
        signed = lo < 0
    if signed:
        b = 1
        while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
            b += 1
        return b, True
    if lo < 0:
        raise InternalError("negative values for an unsigned width")
    return max(1, hi.bit_length()), False
