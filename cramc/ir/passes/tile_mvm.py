"""Pass tile-mvm: annotate every `mvm` with its tile on the given array geometry.

Adds ``tile=[groups, chunks, rows, per, ogroups]`` (see cramc.ir.tiling):
how K is split into row chunks, how many outputs share an array (bounded by
the columns left after the input bit-planes and a scratch column, and by the
accumulators), and so how many arrays one replica of the layer needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cramc.ir.graph import Graph
from cramc.ir.semantics import infer_shapes
from cramc.ir.tiling import operand_replicas, plan_tile, scratch_columns


@dataclass(frozen=True)
class TileMvm:
    rows: int = 256
    cols: int = 256
    accs: int = 64
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
            t = plan_tile(
                k,
                n,
                op.attrs.get("groups", 1),
                op.attrs["wbits"],
                op.attrs["xbits"],
                self.rows,
                self.cols,
                self.accs,
                scratch_columns(op),
                operand_replicas(op),
            )
            op.attrs["tile"] = t
        return g
