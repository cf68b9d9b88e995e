"""The canonical printer: Program -> text.

`print_program(parse(text)) == text` for canonical text; tests check this on
every .cram file in the repository.  Comments and blank lines are kept.
"""

from __future__ import annotations

import json
import math

from cramc.isa import ast
from cramc.isa import data as tdata

INDENT = "  "


def fmt_number(v: int | float) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(float(v))


def fmt_value(v: ast.Value) -> str:
    if isinstance(v, ast.Col):
        return f"c{v.index}"
    if isinstance(v, ast.AccRef):
        return f"acc{v.lo}" if v.hi is None else f"acc{v.lo}:{v.hi}"
    if isinstance(v, ast.Expr):
        if v.offset == 0:
            return v.name
        return f"{v.name}{'+' if v.offset > 0 else '-'}{abs(v.offset)}"
    if isinstance(v, ast.TensorRef):
        return f"%{v.name}" if v.index is None else f"%{v.name}[{v.index}]"
    if isinstance(v, ast.ConstRef):
        return f"${v.name}"
    if isinstance(v, ast.Num):
        return fmt_number(v.value)
    if isinstance(v, ast.Range):
        return f"{v.lo}:{v.hi}"
    if isinstance(v, ast.ListVal):
        return "[" + ", ".join(fmt_number(x) for x in v.items) + "]"
    raise TypeError(f"not a value: {v!r}")


def fmt_attrs(attrs: tuple[ast.AttrVal, ...]) -> str:
    return " ".join(f"{a.name}={fmt_value(a.value)}" for a in attrs)


def fmt_type(t: ast.TensorType) -> str:
    return f"{t.dtype}[{','.join(str(d) for d in t.shape)}]"


def _with_comment(text: str, comment: str | None) -> str:
    if comment is None:
        return text
    return f"{text}  {comment}" if text.strip() else f"{text}{comment}"


def fmt_instr(ins: ast.Instr) -> str:
    parts = [ins.mnemonic]
    if ins.arrays is not None:
        a = ins.arrays
        parts.append(f"@{a.lo}" if a.hi == a.lo + 1 else f"@{a.lo}:{a.hi}")
    head = " ".join(parts)
    if ins.operands:
        head += " " + ", ".join(fmt_value(o) for o in ins.operands)
    if ins.attrs:
        head += " " + fmt_attrs(ins.attrs)
    return head


def _stmt_lines(s: ast.Stmt, depth: int, out: list[str]) -> None:
    pad = INDENT * depth
    if isinstance(s, ast.Blank):
        out.append("")
    elif isinstance(s, ast.Comment):
        out.append(pad + s.text)
    elif isinstance(s, ast.Instr):
        out.append(_with_comment(pad + fmt_instr(s), s.comment))
    elif isinstance(s, ast.Repeat):
        out.append(_with_comment(f"{pad}repeat {s.var} {s.count} {{", s.comment))
        for b in s.body:
            _stmt_lines(b, depth + 1, out)
        out.append(pad + "}")
    else:
        raise TypeError(f"not a statement: {s!r}")


def fmt_data(d: ast.DataDecl) -> str:
    """Parsed payloads print verbatim (their bytes do not depend on this machine's zlib)."""
    payload = f'{d.encoding}"{d.raw}"' if d.raw is not None else tdata.encode(d.values, d.type.dtype, d.encoding)
    return f".data ${d.name} : {fmt_type(d.type)} = {payload}"


def fmt_io(d: ast.IODecl) -> str:
    """`.input x : f32[1,64] batch=0 name="x/0"`: the data name as a JSON string (any characters)."""
    text = f".{d.direction} {d.name} : {fmt_type(d.type)}"
    if d.batch is not None:
        text += f" batch={d.batch}"
    if d.data_name is not None:
        text += " name=" + json.dumps(d.data_name, ensure_ascii=False)
    return text


def print_program(p: ast.Program) -> str:
    out: list[str] = []
    for item in p.items:
        if isinstance(item, ast.Blank):
            out.append("")
        elif isinstance(item, ast.Comment):
            out.append(item.text)
        elif isinstance(item, ast.Machine):
            out.append(_with_comment(".machine " + fmt_attrs(item.attrs), item.comment))
        elif isinstance(item, ast.IODecl):
            out.append(_with_comment(fmt_io(item), item.comment))
        elif isinstance(item, ast.DataDecl):
            out.append(_with_comment(fmt_data(item), item.comment))
        elif isinstance(item, ast.Expect):
            out.append(_with_comment(".expect " + fmt_attrs(item.attrs), item.comment))
        elif isinstance(item, ast.ExpectFloat):
            out.append(_with_comment(".expect_float " + fmt_attrs(item.attrs), item.comment))
        elif isinstance(item, ast.Trace):
            out.append(_with_comment(".trace " + fmt_attrs(item.attrs), item.comment))
        elif isinstance(item, ast.Micro):
            params = ", ".join(f"{q.kind} {q.name}" for q in item.params)
            out.append(_with_comment(f".micro {item.name}({params}) {{", item.comment))
            for s in item.body:
                _stmt_lines(s, 1, out)
            out.append("}")
        elif isinstance(item, ast.Section):
            out.append(_with_comment(f".{item.name} {{", item.comment))
            for s in item.body:
                _stmt_lines(s, 1, out)
            out.append("}")
        else:
            raise TypeError(f"not a top-level item: {item!r}")
    return "\n".join(out) + "\n"
