"""Pass emit: turn the scheduled IR into a CRAM-ER assembly program (an ISA AST).

`ProgramBuilder` walks the IR in order.  Every operation but `mvm` is the CMOS
instruction of the same name.  Every `mvm` is lowered by the MVM lowering the
compiler chose (an `MvmLowering`: the CRAM-ER hybrid of cramc.backend.hybrid,
or the CRAM-only baseline of cramc.backend.cram_only); what every lowering
shares is written once, here:
- the weights, bit-sliced and weight-stationary, written once per replica in
  `.init`, or in `.main` before the layer when it is time-multiplexed and must
  reload (one part per pass when the layer is larger than the chip),
- each round's input chunks gathered into a [rounds, arrays, rows] tensor with
  CMOS layout operations,
- per pass a loop over rounds that writes the round's input bit-planes and then
  runs the lowering's in-array work (`MvmLayer.emit_pass`),
- the K-chunk partial sums added in CMOS and the [P, N] layout restored.
Comments name the ONNX node each block comes from.  The compiler adds the
validation vectors (cramc.backend.validation) and the header, and `program`
assembles the whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cramc import __version__
from cramc.ir.graph import Graph, Op
from cramc.ir.passes.manager import Pass
from cramc.ir.semantics import infer_shapes
from cramc.ir.tiling import Place, Tile, mvm_dims
from cramc.isa import ast
from cramc.isa import data as tdata


def _val(v: Any) -> ast.Value:
    if isinstance(
        v, ast.Col | ast.AccRef | ast.Expr | ast.TensorRef | ast.ConstRef | ast.Num | ast.Range | ast.ListVal
    ):
        return v
    if isinstance(v, (bool, np.bool_)):
        return ast.Num(int(v))
    if isinstance(v, (int, np.integer)):
        return ast.Num(int(v))
    if isinstance(v, (float, np.floating)):
        return ast.Num(float(v))
    if isinstance(v, tuple):
        return ast.Range(int(v[0]), int(v[1]))
    if isinstance(v, list):
        return ast.ListVal(tuple(int(x) if isinstance(x, (int, np.integer)) else float(x) for x in v))
    if isinstance(v, str) and v.startswith("$"):
        return ast.ConstRef(v[1:])
    if isinstance(v, str) and v.startswith("%"):
        return ast.TensorRef(v[1:])
    if isinstance(v, str):
        return ast.Expr(v)
    raise TypeError(v)


def instr(
    mn: str, arrays: tuple[int, int] | None, *operands: Any, comment: str | None = None, **attrs: Any
) -> ast.Instr:
    arr = ast.ArraySet(arrays[0], arrays[1]) if arrays else None
    return ast.Instr(
        mn, arr, tuple(_val(o) for o in operands), tuple(ast.AttrVal(k, _val(v)) for k, v in attrs.items()), comment
    )


def _dtype_for(arr: np.ndarray) -> str:
    if np.issubdtype(arr.dtype, np.floating):
        return "f32"
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for name in ("i8", "i16", "i32"):
        info = np.iinfo(tdata.DTYPES[name])
        if info.min <= lo and hi <= info.max:
            return name
    return "i64"


@dataclass(frozen=True)
class MvmPass:
    """One pass of an MVM layer: the arrays that run it (`region`) and its names' suffix ('' or '.pN')."""

    op: Op
    tile: Tile
    index: int
    passes: int
    region: tuple[int, int]
    suffix: str


class MvmLayer(Protocol):
    """One MVM layer as a lowering lays it out (returned by `MvmLowering.layer`)."""

    @property
    def x_col(self) -> int:
        """First column of the input bit-planes."""
        ...

    @property
    def w_col(self) -> int:
        """First column of the weights of output slot 0; slot j's start wbits * j columns further."""
        ...

    @property
    def wbits(self) -> int:
        """Columns a stored weight takes."""
        ...

    def comment(self, out: str, tile: str) -> str:
        """The layer's comment line in .main, given its value name and the tile description."""
        ...

    def emit_pass(self, b: ProgramBuilder, p: MvmPass, body: list[ast.Stmt]) -> list[str]:
        """Append one round's in-array work to `body` (which has written the round's input already) and
        return the tensors that round reads out (several are concatenated on the output axis).  Set-up the
        pass needs once, before its rounds, goes to `b.main`."""
        ...


class MvmLowering(Protocol):
    """How `mvm` operations become CRAM instructions: one strategy per `cramc compile --reduce` mode."""

    @property
    def name(self) -> str:
        """The --reduce value that chooses it."""
        ...

    @property
    def reports_reloads(self) -> bool:
        """Whether the weight bits reloaded per inference are counted (in the header and a note)."""
        ...

    def chip_line(self, arrays: int, rows: int, cols: int) -> str:
        """The program header's description of the chip and of how it computes an MVM."""
        ...

    def tiling(self, rows: int, cols: int, accs: int) -> list[Pass]:
        """The passes that give every `mvm` the tile and columns this lowering reads."""
        ...

    def layer(self, b: ProgramBuilder, op: Op, tile: Tile) -> MvmLayer:
        """Lay out one tiled, placed `mvm` (registering the micro-programs it calls with `b.micro`)."""
        ...


class ProgramBuilder:
    """Builds the program of a scheduled IR graph on a chip, lowering its MVMs with `lowering`."""

    def __init__(self, g: Graph, arrays: int, rows: int, cols: int, accs: int, lowering: MvmLowering):
        self.g, self.arrays, self.rows, self.cols, self.accs = g, arrays, rows, cols, accs
        self.lowering = lowering
        self.reload_bits = 0  # weight bits rewritten on every inference (time-multiplexed layers)
        self.reload_layers: list[str] = []
        self.shapes = infer_shapes(g)
        self.data: list[ast.DataDecl] = []
        self.data_names: set[str] = set()
        self.init: list[ast.Stmt] = []
        self.main: list[ast.Stmt] = []
        self.micros: dict[str, ast.Micro] = {}

    def add_data(self, name: str, arr: np.ndarray, dtype: str | None = None) -> str:
        dt = dtype or _dtype_for(arr)
        base, n, i = name, name, 1
        while n in self.data_names:
            n = f"{base}.{i}"
            i += 1
        self.data_names.add(n)
        store = np.ascontiguousarray(arr).astype(tdata.DTYPES[dt])
        self.data.append(ast.DataDecl(n, ast.TensorType(dt, tuple(store.shape)), store, tdata.default_encoding(store)))
        return "$" + n

    def micro(self, name: str, make: Callable[[], ast.Micro]) -> str:
        """Register micro-program `name` (built by `make()` the first time it is asked for); its name."""
        if name not in self.micros:
            self.micros[name] = make()
        return name

    def run(self) -> None:
        used: set[str] = set()
        for op in self.g.ops:
            if op.kind != "mvm":
                used.update(r[1:] for r in op.ins if r.startswith("$"))
                used.update(v[1:] for v in op.attrs.values() if isinstance(v, str) and v.startswith("$"))
        for name in self.g.consts:
            if name in used:
                arr = self.g.consts[name]
                self.add_data(
                    name, arr, self.g.const_types.get(name) if self.g.const_types.get(name) in tdata.DTYPES else None
                )
        last_origin = None
        for op in self.g.ops:
            if op.origin != last_origin:
                self.main.append(ast.Comment(f"; {op.origin}"))
                last_origin = op.origin
            if op.kind == "mvm":
                self.mvm(op)
            else:
                attrs = {k: v for k, v in op.attrs.items()}
                self.main.append(instr(op.kind, None, "%" + op.out, *op.ins, **attrs))

    def mvm(self, op: Op) -> None:
        """One tiled, placed `mvm`: what every lowering shares, around its `MvmLayer.emit_pass`."""
        a = op.attrs
        t: Tile = a["tile"]
        place: Place = a["place"]
        base, rep, passes, resident = place.base, place.replicas, place.passes, place.resident
        layer = self.lowering.layer(self, op, t)
        wb = layer.wbits
        w = self.g.consts[a["w"][1:]].astype(np.int64)
        g_, c, rows, per, og, la = t.groups, t.chunks, t.rows, t.per, t.ogroups, t.arrays
        p, k, n, kg, ng, rounds, pp = mvm_dims(self.shapes[op.ins[0][1:]][0], w, g_, rep)
        o = op.out
        wt = t.weight_planes(w)
        copies = getattr(layer, "replicas", 1)  # operand replicas of error correction (cramc.backend.hybrid)
        if copies > 1:  # each weight `copies` times side by side: [arrays, rows, per * copies]
            wt = np.repeat(wt, copies, axis=2)
        self.main.append(
            ast.Comment(
                layer.comment(
                    o,
                    f"P={p} K={k} N={n} groups={g_}; tile: {c} chunk(s) of {rows} rows, {per} output(s) x {og} "
                    f"group(s) per array, {la} arrays x {rep} replica(s), {rounds} round(s), {passes} pass(es)",
                )
            )
        )
        # input layout [rounds, rep*arrays, rows]
        x = op.ins[0]
        cur = self.cmos("reshape", f"{o}.x3", x, shape=[p, g_, kg])
        if pp != p or c * rows != kg:
            cur = self.cmos("pad", f"{o}.xp", cur, pads=[0, 0, 0, pp - p, 0, c * rows - kg])
        cur = self.cmos("reshape", f"{o}.x5", cur, shape=[pp, g_, c, 1, rows])
        # the `og` output groups of a K chunk share its input: one entry, written to og arrays (wr repeat=og);
        # only when a pass must cut through the output groups of one chunk is the input copied per group
        bcast = og if passes == 1 or og <= self.arrays else 1
        if bcast != og:
            cur = self.cmos("tile", f"{o}.xt", cur, reps=[1, 1, 1, og, 1])
        xa = self.cmos("reshape", f"{o}.xa", cur, shape=[rounds, rep * la // bcast, rows])
        if passes > 1:
            span = (self.arrays // bcast) * bcast  # with bcast > 1, passes cut between K chunks only
            passes = math.ceil(la / span)
        else:
            span = la
        wdt = "i8" if wb <= 8 else ("i16" if wb <= 16 else "i32")
        results: list[str] = []
        for pi in range(passes):
            a0, a1 = pi * span, min(la, (pi + 1) * span)
            sfx = "" if passes == 1 else f".p{pi}"
            wref = self.add_data(f"{o}.w{sfx}", wt if passes == 1 else wt[a0:a1], wdt)
            xs_ref = xa
            if passes > 1:
                xs_ref = self.cmos("slice", f"{o}.xa{sfx}", xa, axis=1, start=a0 // bcast, end=a1 // bcast)
            region = (base, base + (a1 - a0) * rep)
            loads = [
                ast.Instr(
                    "wr",
                    ast.ArraySet(base + r * (a1 - a0), base + (r + 1) * (a1 - a0)),
                    (ast.Col(layer.w_col), ast.ConstRef(wref[1:])),
                    (ast.AttrVal("bits", ast.Num(wb)), ast.AttrVal("rows", ast.Range(0, rows))),
                )
                for r in range(rep)
            ]
            if resident:
                self.init.append(ast.Comment(f"; weights of %{o} ({op.origin})"))
                self.init.extend(loads)
            else:
                if self.lowering.reports_reloads:
                    self.reload_bits += (a1 - a0) * rep * rows * per * copies * wb
                    if op.origin not in self.reload_layers:
                        self.reload_layers.append(op.origin)
                which = f" (pass {pi + 1} of {passes})" if passes > 1 else ""
                self.main.append(ast.Comment(f"; reload the weights of %{o}{which}: the arrays are shared"))
                self.main.extend(loads)
            body: list[ast.Stmt] = [
                ast.Instr(
                    "wr",
                    ast.ArraySet(*region),
                    (ast.Col(layer.x_col), ast.TensorRef(xs_ref[1:], "r")),
                    (
                        ast.AttrVal("bits", ast.Num(a["xbits"])),
                        *((ast.AttrVal("repeat", ast.Num(bcast)),) if bcast > 1 else ()),
                        ast.AttrVal("rows", ast.Range(0, rows)),
                    ),
                )
            ]
            outs = layer.emit_pass(self, MvmPass(op, t, pi, passes, region, sfx), body)
            self.main.append(ast.Repeat("r", rounds, tuple(body)))
            results.append(outs[0] if len(outs) == 1 else self.cmos("concat", f"{o}{sfx}.acc", *outs, axis=2))
        cur = results[0] if passes == 1 else self.cmos("concat", f"{o}.acc", *results, axis=1)
        cur = self.cmos("reshape", f"{o}.a4", cur, shape=[pp, g_, c, og * per])
        cur = self.cmos("sum", f"{o}.s", cur, axis=2)
        if og * per != ng:
            cur = self.cmos("slice", f"{o}.sn", cur, axis=2, start=0, end=ng)
        if pp != p:
            cur = self.cmos("slice", f"{o}.sp", cur, axis=0, start=0, end=p)
        self.main.append(instr("reshape", None, "%" + o, cur, shape=[p, n]))

    def cmos(self, mn: str, out: str, *ins: str, **attrs: Any) -> str:
        """Append CMOS instruction `mn` defining %out to .main; returns '%out'."""
        self.main.append(instr(mn, None, "%" + out, *ins, **attrs))
        return "%" + out

    def program(
        self,
        header: list[str],
        expect: Sequence[ast.TopItem],
        io: dict[str, tuple[int | None, str | None]] | None = None,
    ) -> ast.Program:
        """The program; `io` gives an input's or output's (batch axis, name in data files), see ast.IODecl."""
        io = io or {}
        items: list[ast.TopItem] = [ast.Comment(h) for h in header]
        items.append(
            ast.Machine(
                tuple(
                    ast.AttrVal(k, ast.Num(v))
                    for k, v in (("arrays", self.arrays), ("rows", self.rows), ("cols", self.cols), ("accs", self.accs))
                )
            )
        )
        for i in self.g.inputs:
            batch, key = io.get(i.name, (None, None))
            items.append(ast.IODecl("input", i.name, ast.TensorType(i.dtype, i.shape), batch=batch, data_name=key))
        for o in self.g.outputs:
            batch, key = io.get(o.name, (None, None))
            dtype = o.dtype if o.dtype in tdata.DTYPES else "i64"
            items.append(ast.IODecl("output", o.name, ast.TensorType(dtype, o.shape), batch=batch, data_name=key))
        items.append(ast.Blank())
        for m in self.micros.values():
            items.append(m)
        items.append(ast.Blank())
        items.extend(self.data)
        items.extend(expect)
        items.append(ast.Blank())
        items.append(ast.Section("init", tuple(self.init)))
        items.append(ast.Section("main", tuple(self.main)))
        return ast.Program(tuple(items))


def header_lines(model: str, arrays: int, rows: int, cols: int, lowering: MvmLowering) -> list[str]:
    """The program's first lines: where it comes from, and the chip as the MVM lowering uses it."""
    return [f"; compiled by cramc {__version__} from {model}", lowering.chip_line(arrays, rows, cols)]
