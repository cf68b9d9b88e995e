"""Pass emit: turn the scheduled IR into a CRAM-ER assembly program (an ISA AST).

Per MVM layer the program
- writes the weights (bit-sliced, weight-stationary) in `.init`, or in `.main`
  when the layer is time-multiplexed and must reload,
- gathers each round's input chunks into a [rounds, arrays, rows] tensor with
  CMOS layout operations,
- loops over rounds: write the input bit-planes, clear the accumulators, call
  the layer's MAC micro-program once per output slot, read the accumulators,
- sums the K-chunk partial sums in CMOS and restores the [P, N] layout.
Every other IR operation is the CMOS instruction of the same name.  Comments
name the ONNX node each block comes from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cramc import __version__
from cramc.backend.lower_tiles import mac_micro, mac_name
from cramc.ir.graph import Graph, Op
from cramc.ir.semantics import infer_shapes
from cramc.ir.tiling import Cols, Place, Tile, mvm_dims
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


class Emitter:
    def __init__(self, g: Graph, arrays: int, rows: int, cols: int, accs: int, reduce: str = "tree"):
        self.g, self.arrays, self.rows, self.cols, self.accs = g, arrays, rows, cols, accs
        self.reduce = reduce
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
            if op.kind == "mvm" and self.reduce == "cram":
                from cramc.backend.cram_only import emit_mvm_cram_only

                emit_mvm_cram_only(self, op)
            elif op.kind == "mvm":
                self.mvm(op)
            else:
                attrs = {k: v for k, v in op.attrs.items()}
                self.main.append(instr(op.kind, None, "%" + op.out, *op.ins, **attrs))

    def mvm(self, op: Op) -> None:
        a = op.attrs
        t: Tile = a["tile"]
        cols: Cols = a["cols"]
        place: Place = a["place"]
        xcol, tcol, wcol = cols.x, cols.t, cols.w
        base, rep, passes, resident = place.base, place.replicas, place.passes, place.resident
        wb, xb, xs = a["wbits"], a["xbits"], a["xsigned"]
        plan = a.get("ecc")
        micro = mac_name(wb, xb, xs, plan)
        self.micros.setdefault(micro, mac_micro(wb, xb, xs, plan))
        w = self.g.consts[a["w"][1:]].astype(np.int64)
        g_, c, rows, per, og, la = t.groups, t.chunks, t.rows, t.per, t.ogroups, t.arrays
        p, k, n, kg, ng, rounds, pp = mvm_dims(self.shapes[op.ins[0][1:]][0], w, g_, rep)
        o = op.out
        wt = t.weight_planes(w)
        self.main.append(
            ast.Comment(
                f"; mvm %{o}: P={p} K={k} N={n} groups={g_}; tile: {c} chunk(s) of {rows} rows, {per} output(s) x "
                f"{og} group(s) per array, {la} arrays x {rep} replica(s), {rounds} round(s), {passes} pass(es)"
            )
        )
        # input layout [rounds, rep*arrays, rows]
        x = op.ins[0]
        cur = self._cmos("reshape", f"{o}.x3", x, shape=[p, g_, kg])
        if pp != p or c * rows != kg:
            cur = self._cmos("pad", f"{o}.xp", cur, pads=[0, 0, 0, pp - p, 0, c * rows - kg])
        cur = self._cmos("reshape", f"{o}.x5", cur, shape=[pp, g_, c, 1, rows])
        # the `og` output groups of a K chunk share its input: one entry, written to og arrays (wr repeat=og);
        # only when a pass must cut through the output groups of one chunk is the input copied per group
        bcast = og if passes == 1 or og <= self.arrays else 1
        if bcast != og:
            cur = self._cmos("tile", f"{o}.xt", cur, reps=[1, 1, 1, og, 1])
        xa = self._cmos("reshape", f"{o}.xa", cur, shape=[rounds, rep * la // bcast, rows])
        if passes > 1:
            span = (self.arrays // bcast) * bcast  # with bcast > 1, passes cut between K chunks only
            passes = math.ceil(la / span)
        else:
            span = la
        accs: list[str] = []
        for pi in range(passes):
            a0, a1 = pi * span, min(la, (pi + 1) * span)
            if passes == 1:
                wref = self.add_data(f"{o}.w", wt, "i8" if wb <= 8 else ("i16" if wb <= 16 else "i32"))
                xs_ref = xa
            else:
                wref = self.add_data(f"{o}.w.p{pi}", wt[a0:a1], "i8" if wb <= 8 else ("i16" if wb <= 16 else "i32"))
                xs_ref = self._cmos("slice", f"{o}.xa.p{pi}", xa, axis=1, start=a0 // bcast, end=a1 // bcast)
            nset = (a1 - a0) * rep
            region = (base, base + nset)
            loads = [
                instr(
                    "wr", (base + r * (a1 - a0), base + (r + 1) * (a1 - a0)), f"c{wcol}", wref, bits=wb, rows=(0, rows)
                )
                for r in range(rep)
            ]
            loads = [ast.Instr(i.mnemonic, i.arrays, (ast.Col(wcol), i.operands[1]), i.attrs) for i in loads]
            if resident:
                self.init.append(ast.Comment(f"; weights of %{o} ({op.origin})"))
                self.init.extend(loads)
            else:
                self.reload_bits += (a1 - a0) * rep * rows * per * wb
                if op.origin not in self.reload_layers:
                    self.reload_layers.append(op.origin)
                self.main.append(
                    ast.Comment(
                        f"; reload the weights of %{o}{f' (pass {pi + 1} of {passes})' if passes > 1 else ''}: "
                        "the arrays are shared"
                    )
                )
                self.main.extend(loads)
            acc = f"{o}.acc" if passes == 1 else f"{o}.acc.p{pi}"
            body: list[ast.Stmt] = [
                ast.Instr(
                    "wr",
                    ast.ArraySet(*region),
                    (ast.Col(xcol), ast.TensorRef(xs_ref[1:], "r")),
                    (
                        ast.AttrVal("bits", ast.Num(xb)),
                        *((ast.AttrVal("repeat", ast.Num(bcast)),) if bcast > 1 else ()),
                        ast.AttrVal("rows", ast.Range(0, rows)),
                    ),
                ),
                ast.Instr("aclr", ast.ArraySet(*region), (ast.AccRef(0, per),)),
            ]
            for j in range(per):
                body.append(
                    ast.Instr(
                        "call",
                        ast.ArraySet(*region),
                        (ast.Expr(micro),),
                        (
                            ast.AttrVal("w", ast.Col(wcol + j * wb)),
                            ast.AttrVal("x", ast.Col(xcol)),
                            ast.AttrVal("t", ast.Col(tcol)),
                            ast.AttrVal("y", ast.AccRef(j)),
                            ast.AttrVal("rows", ast.Range(0, rows)),
                        ),
                    )
                )
            body.append(ast.Instr("ard", ast.ArraySet(*region), (ast.TensorRef(acc, "r"), ast.AccRef(0, per))))
            self.main.append(ast.Repeat("r", rounds, tuple(body)))
            accs.append("%" + acc)
        cur = accs[0] if passes == 1 else self._cmos("concat", f"{o}.acc", *accs, axis=1)
        cur = self._cmos("reshape", f"{o}.a4", cur, shape=[pp, g_, c, og * per])
        cur = self._cmos("sum", f"{o}.s", cur, axis=2)
        if og * per != ng:
            cur = self._cmos("slice", f"{o}.sn", cur, axis=2, start=0, end=ng)
        if pp != p:
            cur = self._cmos("slice", f"{o}.sp", cur, axis=0, start=0, end=p)
        self.main.append(instr("reshape", None, "%" + o, cur, shape=[p, n]))

    def _cmos(self, mn: str, out: str, *ins: str, **attrs: Any) -> str:
        self.main.append(instr(mn, None, "%" + out, *ins, **attrs))
        return "%" + out

    def program(
        self,
        header: list[str],
        expect: list[ast.Stmt | ast.TopItem],
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
        items.extend(expect)  # type: ignore[arg-type]
        items.append(ast.Blank())
        items.append(ast.Section("init", tuple(self.init)))
        items.append(ast.Section("main", tuple(self.main)))
        return ast.Program(tuple(items))


def header_lines(model: str, arrays: int, rows: int, cols: int) -> list[str]:
    return [
        f"; compiled by cramc {__version__} from {model}",
        f"; chip: {arrays} CRAM arrays of {rows} x {cols}; MVMs in-array (AND) + CMOS adder tree (CRAM-ER hybrid)",
    ]
