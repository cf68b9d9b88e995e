"""The CRAM-ER hybrid lowering of `mvm` (``cramc compile --reduce tree``, the default).

A CRAM array computes the partial-product bits of its outputs, one AND per
bit (cramc.backend.lower_tiles), and the CMOS adder tree beside it counts,
shifts and accumulates them into one accumulator slot per output: the
carries never happen in the array.  Per round every array clears its
accumulators, calls the layer's MAC micro-program once per output slot, and
the accumulators are read out (``ard``).  The weights, the input layout, the
passes and the CMOS sum over K chunks are the program builder's
(cramc.backend.emit), shared with the CRAM-only lowering.

Tiling: the tile-mvm pass (tile, and ``dbuf=1`` where the layer's scratch is
double-buffered) and the allocate pass (``cols=[x, t, w]``).
Under error correction with operand replicas (cramc.ir.ecc) every round writes
its input bit-planes once per replica, into distinct columns, and each output's
weights are stored once per replica (the program builder repeats them in the
weight data, cramc.backend.emit): copy i of a partial product reads replica i.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cramc.backend.allocate import Allocate
from cramc.backend.emit import MvmPass, ProgramBuilder
from cramc.backend.lower_tiles import mac_micro, mac_name
from cramc.errors import InternalError
from cramc.ir.graph import Op
from cramc.ir.passes.manager import Pass
from cramc.ir.passes.tile_mvm import TileMvm
from cramc.ir.tiling import Cols, Tile, operand_replicas
from cramc.isa import ast


@dataclass(frozen=True)
class HybridLayer:
    """One MVM layer of the hybrid: columns from the allocate pass, its MAC micro-program."""

    x_col: int
    t_col: int
    w_col: int
    wbits: int
    micro: str
    xbits: int = 0
    replicas: int = 1  # operand replicas: the builder stores each weight this many times, side by side

    def comment(self, out: str, tile: str) -> str:
        if self.replicas > 1:
            return f"; mvm %{out}: {tile}; operands stored {self.replicas} times (copies read distinct cells)"
        return f"; mvm %{out}: {tile}"

    def emit_pass(self, b: ProgramBuilder, p: MvmPass, body: list[ast.Stmt]) -> list[str]:
        """Write the input's other replicas, clear the accumulators, one MAC call per output slot, read the
        accumulators out."""
        region, rows, per = ast.ArraySet(*p.region), p.tile.rows, p.tile.per
        acc = f"{p.op.out}.acc" if p.passes == 1 else f"{p.op.out}.acc.p{p.index}"
        first = body[0]  # the builder's write of the round's input bit-planes into replica 0
        if self.replicas > 1:
            if not isinstance(first, ast.Instr) or first.mnemonic != "wr" or first.operands[0] != ast.Col(self.x_col):
                raise InternalError(f"mvm %{p.op.out}: the round does not start with the input's write")
            for i in range(1, self.replicas):
                col = ast.Col(self.x_col + i * self.xbits)
                body.append(replace(first, operands=(col, *first.operands[1:]), comment=f"; input replica {i}"))
        body.append(ast.Instr("aclr", region, (ast.AccRef(0, per),)))
        for j in range(per):
            body.append(
                ast.Instr(
                    "call",
                    region,
                    (ast.Expr(self.micro),),
                    (
                        ast.AttrVal("w", ast.Col(self.w_col + j * self.wbits * self.replicas)),
                        ast.AttrVal("x", ast.Col(self.x_col)),
                        ast.AttrVal("t", ast.Col(self.t_col)),
                        ast.AttrVal("y", ast.AccRef(j)),
                        ast.AttrVal("rows", ast.Range(0, rows)),
                    ),
                )
            )
        body.append(ast.Instr("ard", region, (ast.TensorRef(acc, "r"), ast.AccRef(0, per))))
        return ["%" + acc]


@dataclass(frozen=True)
class HybridMvm:
    """The `MvmLowering` of the CRAM-ER hybrid: AND in the arrays, accumulation in the CMOS adder tree.

    `double_buffer`: give each layer a second set of scratch columns where its tile keeps its outputs per
    array (cramc.ir.passes.tile_mvm), so a term's AND and the previous term's tree count can overlap.
    """

    name: str = "tree"
    reports_reloads: bool = True
    double_buffer: bool = True

    def chip_line(self, arrays: int, rows: int, cols: int) -> str:
        return (
            f"; chip: {arrays} CRAM arrays of {rows} x {cols}; MVMs in-array (AND) + CMOS adder tree (CRAM-ER hybrid)"
        )

    def tiling(self, rows: int, cols: int, accs: int) -> list[Pass]:
        return [TileMvm(rows, cols, accs, self.double_buffer), Allocate(cols, accs)]

    def layer(self, b: ProgramBuilder, op: Op, tile: Tile) -> HybridLayer:
        a = op.attrs
        cols: Cols = a["cols"]
        wb, xb, xs = a["wbits"], a["xbits"], a["xsigned"]
        plan = a.get("ecc")
        db = bool(a.get("dbuf"))
        micro = b.micro(mac_name(wb, xb, xs, plan, db), lambda: mac_micro(wb, xb, xs, plan, db))
        return HybridLayer(cols.x, cols.t, cols.w, wb, micro, xb, operand_replicas(op))
