"""Pass tile-mvm: annotate every `mvm` with its tile on the given array geometry.

Adds ``tile=[groups, chunks, rows, per, ogroups]`` (see cramc.ir.tiling):
how K is split into row chunks, how many outputs share an array (bounded by
the columns left after the input bit-planes and a scratch column, and by the
accumulators), and so how many arrays one replica of the layer needs.

With `double_buffer` (the CRAM-ER hybrid's default; ``cramc compile --no-double-buffer``
turns it off) a layer gets a second set of scratch columns and ``dbuf=1`` when the
extra columns leave its tile as it is (the same outputs per array, so the same
arrays): its MAC micro-program then alternates the two sets term by term, so the
adder tree can sense one while the next AND writes the other (cramc.cost.timeline).
Where the extra columns would cost outputs per array, the layer keeps one set and
no ``dbuf``: the plan records which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cramc.errors import UserError
from cramc.ir.graph import Graph, Op
from cramc.ir.semantics import infer_shapes
from cramc.ir.tiling import Tile, operand_replicas, plan_tile, term_scratch


@dataclass(frozen=True)
class TileMvm:
    rows: int = 256
    cols: int = 256
    accs: int = 64
    double_buffer: bool = False
    name: str = "tile-mvm"
    requires: ClassVar[frozenset[str]] = frozenset({"no-conv"})
    ensures: ClassVar[frozenset[str]] = frozenset({"tiled"})
    changes_input: ClassVar[bool] = True  # sets tile= on the MVMs in place

    def run(self, g: Graph) -> Graph:
        shapes = infer_shapes(g)
        for op in g.ops:
            if op.kind != "mvm":
                continue
            _, k = shapes[op.ins[0][1:]][0]
            n = g.consts[op.attrs["w"][1:]].shape[0]
            s = term_scratch(op)
            t = self._tile(op, k, n, s)
            op.attrs.pop("dbuf", None)
            if self.double_buffer and self._fits(op, k, n, 2 * s) == t:
                op.attrs["dbuf"] = 1
            op.attrs["tile"] = t
        return g

    def _tile(self, op: Op, k: int, n: int, scratch: int) -> Tile:
        a = op.attrs
        return plan_tile(
            k,
            n,
            a.get("groups", 1),
            a["wbits"],
            a["xbits"],
            self.rows,
            self.cols,
            self.accs,
            scratch,
            operand_replicas(op),
        )

    def _fits(self, op: Op, k: int, n: int, scratch: int) -> Tile | None:
        """The tile with `scratch` scratch columns, or None where they leave no column for a weight."""
        try:
            return self._tile(op, k, n, scratch)
        except UserError:
            return None
