"""Pass allocate: place each tiled MVM's bit-planes in columns and its outputs in accumulators.

Adds ``cols=[x, t, w]`` (a cramc.ir.tiling.Cols): input bit-planes in columns x..x+xbits-1, the scratch
column(s) from t (one, or up to four under error correction), then the weight
bit-planes of output j of an array in columns
w + j*wbits .. w + (j+1)*wbits - 1; output j accumulates in slot j.  With R
operand replicas (error correction whose copies read distinct cells) the input
takes R*xbits columns and each output R*wbits (cramc.ir.tiling.Cols).  The layout
is the same in every array of a layer, so one micro-program call drives all of
them at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cramc.errors import UserError
from cramc.ir.graph import Graph
from cramc.ir.tiling import Cols, Tile, operand_replicas, scratch_columns


@dataclass(frozen=True)
class Allocate:
    cols: int = 256
    accs: int = 64
    name: str = "allocate"
    requires: ClassVar[frozenset[str]] = frozenset({"tiled"})
    ensures: ClassVar[frozenset[str]] = frozenset({"allocated"})
    changes_input: ClassVar[bool] = True  # sets cols= on the MVMs in place

    def run(self, g: Graph) -> Graph:
        for op in g.ops:
            if op.kind != "mvm":
                continue
            t: Tile = op.attrs["tile"]
            r = operand_replicas(op)
            xb, wb = op.attrs["xbits"], op.attrs["wbits"]
            x_col, t_col, w_col = 0, r * xb, r * xb + scratch_columns(op)
            if w_col + t.per * r * wb > self.cols or t.per > self.accs:
                raise UserError(f"layer {op.origin}: {t.per} outputs of {wb} bits do not fit {self.cols} columns")
            op.attrs["cols"] = Cols(x_col, t_col, w_col)
        return g
