"""Static counts: what the simulator would count for one inference, from the linked program alone.

The walk visits every node of `.init` and `.main` once, multiplying by the trip
counts of the enclosing loops (micro-program calls are already inlined by the
linker).  For each instruction it computes the simulator's ``row_ops`` by the
counting rule of the opcode's unit (cramc.isa.counting: the rule the simulator
counts by), filling in from the program's tensor shapes the factors the
instruction alone does not fix (a CMOS result's elements, the fields of a
``wr`` source).

No count depends on data or faults, so these are exact: the tests check them
against the simulator's counts.  Instructions are grouped by layer: the first
comment of each run of comments at the top level of a section (the compiler
writes the ONNX node name there; its own annotations, `; mvm %...` and
`; reload the weights ...`, do not start a layer), or the section name before
any comment.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cramc.isa import ast
from cramc.isa.counting import Factor, instruction_factors, rule
from cramc.isa.linked import BoundOp, Linked, Loop, Node, TRef
from cramc.isa.opcodes import Kind, Opcode, Unit


@dataclass
class Tally:
    """Per-opcode counts: mnemonic -> [instructions, row_ops] (per inference)."""

    ops: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def add(self, mnemonic: str, instructions: int, row_ops: int) -> None:
        d = self.ops[mnemonic]
        d[0] += instructions
        d[1] += row_ops

    def merge(self, other: Tally) -> None:
        for mn, (i, r) in other.ops.items():
            self.add(mn, i, r)

    def minus(self, other: Tally) -> Tally:
        out = Tally()
        for mn in set(self.ops) | set(other.ops):
            a = self.ops.get(mn, [0, 0])
            b = other.ops.get(mn, [0, 0])
            if a[0] - b[0] or a[1] - b[1]:
                out.add(mn, a[0] - b[0], a[1] - b[1])
        return out

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {mn: {"instructions": v[0], "row_ops": v[1]} for mn, v in sorted(self.ops.items()) if v[0] or v[1]}


@dataclass
class ProgramCounts:
    """Static counts of one inference, by section and by layer (in program order)."""

    init: dict[str, Tally]
    main: dict[str, Tally]

    @staticmethod
    def _total(d: dict[str, Tally]) -> Tally:
        t = Tally()
        for v in d.values():
            t.merge(v)
        return t

    @property
    def init_total(self) -> Tally:
        return self._total(self.init)

    @property
    def main_total(self) -> Tally:
        return self._total(self.main)


#: Comments the compiler writes inside a layer (not layer names).
_ANNOTATIONS = ("mvm %", "reload the weights", "weights of %")


def _layer_labels(section: ast.Section | None) -> dict[int, str]:
    """Source line of each top-level statement of a section -> its layer label."""
    out: dict[int, str] = {}
    if section is None:
        return out
    label = section.name
    prev_comment = False
    for s in section.body:
        if isinstance(s, ast.Comment):
            text = s.text.lstrip(";").strip()
            if not prev_comment and text and not text.startswith(_ANNOTATIONS):
                label = text
            prev_comment = True
            continue
        if isinstance(s, ast.Blank):
            continue
        prev_comment = False
        if s.loc is not None:
            out[s.loc.line] = label
    return out


def _defines(op: Opcode) -> bool:
    """Whether op's first operand is a tensor it writes (its instructions define that tensor)."""
    return bool(op.operands) and op.operands[0].writes and op.operands[0].kind is Kind.TENSOR


class _Counter:
    def __init__(self, linked: Linked, defs: dict[str, int] | None = None):
        """`defs`: how often each tensor is defined whole (`_defines`, index None) in .init and .main, if
        the caller has walked the program already; otherwise the counter walks it."""
        self.linked = linked
        self.spec = linked.machine
        self.shapes: dict[str, tuple[int, ...]] = {d.name: tuple(d.shape) for d in linked.inputs}
        self.is_int: dict[str, bool] = {d.name: not d.dtype.startswith("f") for d in linked.inputs}
        self.defs: dict[str, int] = defaultdict(int)
        if defs is not None:
            self.defs.update(defs)
            return
        for nodes in (linked.init, linked.main):
            self._count_defs(nodes)

    def _count_defs(self, nodes: tuple[Node, ...]) -> None:
        for n in nodes:
            if isinstance(n, Loop):
                self._count_defs(n.body)
            elif _defines(n.op):
                ref = n.operands[0]
                if ref.index is None:
                    self.defs[ref.name] += 1

    # ------------------------------------------------------------ shapes
    def _shape(self, src: Any) -> tuple[int, ...]:
        if isinstance(src, np.ndarray):
            return tuple(src.shape)
        shape = self.shapes.get(src.name)
        if shape is None:
            shape = self.linked.tensor_shapes[src.name][0]
        return shape[1:] if src.index is not None else shape

    def _define(self, ref: TRef, shape: tuple[int, ...], is_int: bool) -> None:
        if ref.index is None:
            self.shapes[ref.name] = shape
        elif ref.name in self.linked.tensor_shapes:
            self.shapes[ref.name] = self.linked.tensor_shapes[ref.name][0]
        self.is_int[ref.name] = is_int

    def _cmos_shape(self, b: BoundOp) -> tuple[int, ...]:
        dst: TRef = b.operands[0]
        known = self.linked.tensor_shapes.get(dst.name)
        if known is not None and dst.index is None and self.defs[dst.name] == 1:
            shape, is_int = known
        elif known is not None and dst.index is not None:
            shape, is_int = known[0][1:], known[1]
        else:  # a tensor defined more than once: run the reference semantics on one zero sample
            args = []
            for s in b.operands[1:]:
                if isinstance(s, np.ndarray):
                    args.append(s[None])
                else:
                    integer = self.is_int.get(s.name, True)
                    args.append(np.zeros((1, *self._shape(s)), dtype=np.int64 if integer else np.float32))
            res = b.op.cmos(args, b.attrs)  # type: ignore[misc]
            shape, is_int = tuple(res.shape[1:]), bool(np.issubdtype(res.dtype, np.integer))
        self._define(dst, tuple(shape), is_int)
        return tuple(shape)

    # ------------------------------------------------------------ counts
    def row_ops(self, b: BoundOp) -> int:
        """What instruction b adds to its opcode's row_ops, by its unit's counting rule (cramc.isa.counting)."""
        op = b.op
        unit = op.unit
        tensor_fields = None
        for spec in op.operands:
            if spec.span is not None and spec.span.fields_of:
                names = [o.name for o in op.operands]
                shape = self._shape(b.operands[names.index(spec.span.fields_of)])
                tensor_fields = shape[2] if len(shape) == 3 else 1
        f = instruction_factors(b, self.spec.rows, tensor_fields)
        if unit is Unit.CMOS:
            f[Factor.ELEMENTS] = int(np.prod(self._cmos_shape(b), dtype=np.int64))
        elif unit is Unit.ACC:
            for spec, v in zip(op.operands, b.operands, strict=False):
                if spec.kind is Kind.TENSOR and spec.writes:
                    self._define(v, (f[Factor.ARRAYS], f[Factor.SLOTS]), True)
        elif unit is Unit.READ:
            fields = int(b.attrs.get("fields", 0))
            dst = b.operands[0]
            if isinstance(dst, TRef):
                arrays, rows = f[Factor.ARRAYS], f[Factor.ROWS]
                self._define(dst, (arrays, rows, fields) if fields else (arrays, rows), True)
        return rule(op).row_ops(f)

    def walk(self, nodes: tuple[Node, ...], labels: dict[int, str], default: str) -> dict[str, Tally]:
        out: dict[str, Tally] = {}

        def go(ns: tuple[Node, ...], mult: int, label: str) -> None:
            for n in ns:
                if isinstance(n, Loop):
                    go(n.body, mult * n.count, label)
                    continue
                t = out.get(label)
                if t is None:
                    t = out[label] = Tally()
                t.add(n.op.mnemonic, mult, mult * self.row_ops(n))

        for n in nodes:
            loc = n.site[0] if isinstance(n, BoundOp) and n.site else n.loc
            label = labels.get(loc.line, default) if loc is not None else default
            go((n,), 1, label)
        return out


def count_program(linked: Linked) -> ProgramCounts:
    """Per-opcode counts of one inference (`.init` and `.main`), by layer."""
    sections = {s.name: s for s in linked.program.items if isinstance(s, ast.Section)}
    c = _Counter(linked)
    init = c.walk(linked.init, _layer_labels(sections.get("init")), "init")
    main = c.walk(linked.main, _layer_labels(sections.get("main")), "main")
    return ProgramCounts(init, main)


def count_init(linked: Linked) -> Tally:
    """Per-opcode counts of `.init` (the one-time setup: weights)."""
    t = Tally()
    for v in _Counter(linked).walk(linked.init, {}, "init").values():
        t.merge(v)
    return t
