"""Print and parse the IR's textual form (canonical; parse(print(g)) prints the same text).

Annotation records (cramc.ir.tiling: Tile, Cols, Place) print as integer lists and parse back into
their records, as the table of operation kinds (cramc.ir.ops) declares.
"""

from __future__ import annotations

import builtins
import functools
import importlib.resources
import math
from typing import Any

import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedInput, VisitError

from cramc.errors import Loc, UserError
from cramc.ir.graph import Graph, IOValue, Op
from cramc.ir.ops import IR_OPS, decode_attr
from cramc.ir.tiling import Cols, Place, Tile
from cramc.isa import data as tdata


def _fmt_num(v: int | float) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if math.isnan(v):
        return "nan"
    return repr(v)


def _fmt_val(v: Any) -> str:
    if isinstance(v, (Tile, Cols, Place)):
        v = v.as_attr()  # a record prints as its fields' list: tile=[1, 2, 4, 2, 3]
    if isinstance(v, str):
        return v
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return f"{v[0]}:{v[1]}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_num(x) for x in v) + "]"
    return _fmt_num(v)


def print_graph(g: Graph) -> str:
    lines: list[str] = []
    for i in g.inputs:
        lines.append(f"input %{i.name} : {i.dtype}[{','.join(map(str, i.shape))}]")
    for name, arr in g.consts.items():
        dt = g.const_types[name]
        payload = tdata.encode(arr, dt, tdata.default_encoding(arr))
        lines.append(f"const ${name} : {dt}[{','.join(map(str, arr.shape))}] = {payload}")
    for op in g.ops:
        text = f"%{op.out} = {op.kind}"
        if op.ins:
            text += " " + ", ".join(op.ins)
        if op.attrs:
            text += " " + " ".join(f"{k}={_fmt_val(v)}" for k, v in op.attrs.items())
        if op.origin:
            text += f"  ; {op.origin}"
        lines.append(text)
    for o in g.outputs:
        lines.append(f"output %{o.name} : {o.dtype}[{','.join(map(str, o.shape))}]")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    text = (importlib.resources.files("cramc.ir") / "ir.lark").read_text()
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _num(t: str) -> int | float:
    s = t.lower()
    if "inf" in s or "nan" in s or "." in s or "e" in s:
        return float(s)
    return int(s)


class _Build(Transformer):
    def tensor(self, items: builtins.list[Token]) -> str:
        return str(items[0])

    def const_ref(self, items: builtins.list[Token]) -> str:
        return str(items[0])

    def number(self, items: builtins.list[Token]) -> int | float:
        return _num(str(items[0]))

    def range(self, items: builtins.list[Token]) -> tuple[int, int]:
        return (int(items[0]), int(items[1]))

    def list(self, items: builtins.list[Token | None]) -> builtins.list[int | float]:
        return [_num(str(t)) for t in items if t is not None]

    def name(self, items: builtins.list[Token]) -> str:
        return str(items[0])

    def attr(self, items: builtins.list[Any]) -> tuple[str, Any]:
        return (str(items[0]), items[1])

    def type(self, items: builtins.list[Token | None]) -> tuple[str, tuple[int, ...]]:
        return (str(items[0]), tuple(int(t) for t in items[1:] if t is not None))

    def list_payload(self, items: builtins.list[Token | None]) -> tuple[str, Any]:
        return ("list", [_num(str(t)) for t in items if t is not None])

    def encoded_payload(self, items: builtins.list[Token]) -> tuple[str, Any]:
        enc, _, rest = str(items[0]).partition('"')
        return (enc, rest[:-1])

    def io(self, items: builtins.list[Any]) -> tuple[str, Any]:
        return ("io", (str(items[0]), str(items[1])[1:], items[2]))

    def const(self, items: builtins.list[Any]) -> tuple[str, Any]:
        return ("const", (str(items[0])[1:], items[1], items[2]))

    def op(self, items: builtins.list[Any]) -> tuple[str, Any]:
        out, kind = str(items[0])[1:], str(items[1])
        rest = [i for i in items[2:] if i is not None]
        ins = tuple(i for i in rest if isinstance(i, str))
        attrs: dict[str, Any] = dict(i for i in rest if isinstance(i, tuple))  # the attr rule's (name, value)s
        return ("op", (out, kind, ins, attrs))

    def line(self, items: builtins.list[Any]) -> tuple[str, Any, str | None]:
        stmt = next((i for i in items if isinstance(i, tuple)), None)
        comment = next((str(i) for i in items if isinstance(i, Token) and i.type == "COMMENT"), None)
        return (stmt[0] if stmt else "blank", stmt[1] if stmt else None, comment)


def parse_graph(text: str, file: str = "<ir>") -> Graph:
    src = text if text.endswith("\n") else text + "\n"
    try:
        tree = _lark().parse(src)
        lines = _Build().transform(tree).children
    except UnexpectedInput as e:
        raise UserError("IR syntax error", Loc(file, e.line, e.column), src) from None
    except VisitError as e:
        raise UserError(f"IR error: {e.orig_exc}", Loc(file, 1, 1), src) from None
    g = Graph()
    for line, (kind, val, comment) in enumerate(lines, start=1):  # one `line` per source line
        if kind == "io":
            d, name, (dt, shape) = val
            (g.inputs if d == "input" else g.outputs).append(IOValue(name, dt, shape))
        elif kind == "const":
            name, (dt, shape), (enc, payload) = val
            arr = tdata.from_list(payload, dt, shape) if enc == "list" else tdata.decode(enc, payload, dt, shape)
            g.consts[name] = arr
            g.const_types[name] = dt
        elif kind == "op":
            out, k, ins, attrs = val
            origin = comment[1:].strip() if comment else ""
            if k not in IR_OPS:
                raise UserError(f"unknown IR operation '{k}'", Loc(file, line, 1), src)
            try:
                attrs = {name: decode_attr(k, name, v) for name, v in attrs.items()}
            except (ValueError, TypeError) as e:
                raise UserError(f"IR error: {e}", Loc(file, line, 1), src) from None
            g.ops.append(Op(k, out, ins, attrs, origin))
    return g
