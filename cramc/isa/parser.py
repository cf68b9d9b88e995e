"""Parse .cram text into a `Program`.

The Lark grammar (isa/cram.lark, shipped as cramc.lang) is line oriented; this
module turns each line into a statement and then nests the lines between
`{` and `}` into micro-programs, sections and repeat loops.  Every error is a
`UserError` carrying file, line and column.

A program is parsed first with cram.lark plus the shortcuts of isa/cram_fast.lark (attributes and number
lists as one token each), the rules' callbacks running inside the LALR parser (_FastAst: no parse tree);
if that parse fails for any reason, the text is parsed again with cram.lark alone into a tree with
positions (_ToAst), which gives the result or the error exactly as it always did.
"""

from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import importlib.resources
import json
import marshal
import math
import os
import re
import sys
import threading
from typing import TYPE_CHECKING, Any, cast

from cramc.errors import Loc, UserError, clip
from cramc.isa import ast
from cramc.isa import data as tdata
from cramc.isa._lark import (  # lark without its optional regex module (see there)
    Lark,
    Meta,
    Rule,
    TerminalDef,
    Token,
    Transformer,
    Tree,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
    lark,
    v_args,
)

if TYPE_CHECKING:
    import numpy as np


def grammar_text(fast: bool = False) -> str:
    """cram.lark; for the fast parse, with cram_fast.lark's shortcuts appended."""
    lang = importlib.resources.files("cramc.lang")
    text = (lang / "cram.lark").read_text(encoding="utf-8")
    return text + (lang / "cram_fast.lark").read_text(encoding="utf-8") if fast else text


def tables_key(grammar: str) -> str:
    """What the parse tables were built from: the grammar's text and the lark release that built them."""
    return f"sha256:{hashlib.sha256(grammar.encode('utf-8')).hexdigest()} lark:{lark.__version__}"


def build_tables(grammar: str) -> dict[str, Any]:
    """Lark's LALR parser for `grammar`, serialized (plain dicts, lists, tuples, strings and numbers)."""
    built = Lark(grammar, parser="lalr", maybe_placeholders=True)
    data, memo = built.memo_serialize([TerminalDef, Rule])
    return {"data": data, "memo": memo}


@functools.lru_cache(maxsize=2)
def _tables(fast: bool = False) -> dict[str, Any]:
    """The serialized parser: from cramc/isa/_cram_tables.py when it was made from this grammar by this lark.

    Building the LALR tables from cram.lark takes about 0.1 s at every start; `python -m cramc.isa.gen_tables`
    writes them into the package once (a module of the package, no cache file: nothing is read from a place
    another user could write), as marshal data of plain values.  The module records the grammar's hash and
    the lark version; when either differs from what is installed (the grammar was edited, lark upgraded) or
    the module cannot be read, the tables are built from the grammar as before, so a stale module costs
    time, never a wrong parse.  tests/isa/test_parser_tables.py checks that the shipped module is current.
    """
    grammar = grammar_text(fast)
    try:
        from cramc.isa import _cram_tables

        key, text = (
            (_cram_tables.FAST_KEY, _cram_tables.FAST_TABLES) if fast else (_cram_tables.KEY, _cram_tables.TABLES)
        )
        if key == tables_key(grammar):
            tables = marshal.loads(base64.b64decode(text, validate=True))
            if isinstance(tables, dict) and {"data", "memo"} <= tables.keys():
                return tables
    except (ImportError, AttributeError, ValueError, EOFError, TypeError):  # binascii.Error is a ValueError
        pass
    return build_tables(grammar)


def _load(fast: bool = False, **options: Any) -> Lark:
    """A Lark parser made from the serialized tables (what Lark's own cache does with its pickle)."""
    return Lark.__new__(Lark)._load(_tables(fast), **options)


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    """The parser that builds a parse tree with positions: _ToAst walks it; used for errors and as reference."""
    return _load(propagate_positions=True)


def _pos(tok: Token) -> tuple[int, int]:
    """A token's 1-based line and column.

    Lark types both as optional: every token the parser reads carries them (the grammar is parsed with
    positions), a token lark makes up itself has none and is placed at 1:1, as `_visit_loc` does.
    """
    return (tok.line if tok.line is not None else 1, tok.column if tok.column is not None else 1)


class _LocatedError(Exception):
    """A problem found by a transformer callback, at the token it is about (parse() makes it a UserError)."""

    def __init__(self, message: str, tok: Token):
        super().__init__(message)
        self.message = message
        self.line, self.col = _pos(tok)


def _num(text: str) -> int | float:
    t = text.lower()
    if t in ("inf", "+inf"):
        return math.inf
    if t == "-inf":
        return -math.inf
    if t == "nan":
        return math.nan
    if any(ch in t for ch in ".e") or "inf" in t:
        return float(text)
    return int(text)


#: Attributes of an .input/.output declaration (see ast.IODecl).
IO_ATTRS = ("batch", "name")


def _batch_axis(tok: Token, typ: ast.TensorType) -> int:
    text = str(tok)
    if tok.type != "NUMBER" or not text.isdigit():
        raise _LocatedError(f"batch must be an axis number of {list(typ.shape)}, got {text}", tok)
    axis = int(text)
    shape = list(typ.shape)
    if axis >= len(shape):
        raise _LocatedError(f"batch={axis}: the declared shape {shape} has no axis {axis}", tok)
    if shape[axis] != 1:
        raise _LocatedError(
            f"batch={axis}: axis {axis} of {shape} has size {shape[axis]}; the batch axis holds one sample (size 1)",
            tok,
        )
    return axis


def _data_name(tok: Token) -> str:
    if tok.type != "STRING":
        raise _LocatedError(f'name must be a string in double quotes (name="x/y"), got {tok}', tok)
    value = json.loads(str(tok))
    if not value:
        raise _LocatedError("name must not be empty", tok)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _LocatedError("name holds an unpaired surrogate (not valid Unicode)", tok) from None
    return str(value)


#: One line of a program: (statement kind, its payload as the _ToAst callback for the kind built it, the
#: line's comment, where it starts).  _assemble nests these into blocks.
_Line = tuple[str, object, str | None, Loc]


class _Callbacks:
    """One method per grammar rule: what the rule's children become, up to the flat (kind, payload) line records.

    `items` holds what the grammar rule's children became (tokens, None for an absent optional part, or
    what the child rules returned); where a rule fixes the shape of an item, a cast says so and names the rule.
    _ToAst runs them over a parse tree, _FastAst as the parser's own callbacks; they differ in `line` only.
    """

    def __init__(self, file: str):
        self.file = file
        self.data_bytes = 0  # decoded bytes of the data constants so far (bounded by tdata.MAX_DATA_BYTES)

    def _loc(self, tok: Token | None) -> Loc | None:
        if tok is None or tok.line is None:
            return None
        return Loc(self.file, *_pos(tok))

    def _mloc(self, meta: Meta) -> Loc | None:
        if meta.empty:
            return None
        return Loc(self.file, meta.line, meta.column)

    # ---- values
    def col(self, items: builtins.list[Token]) -> ast.Col:
        return ast.Col(int(items[0][1:]), self._loc(items[0]))

    def acc(self, items: builtins.list[Token | None]) -> ast.AccRef:
        tok = cast(Token, items[0])  # acc: ACC [":" INT]
        lo = int(tok[3:])
        hi = int(items[1]) if items[1] is not None else None
        if hi is not None and hi <= lo:
            raise _LocatedError(f"empty accumulator range acc{lo}:{hi}", tok)
        return ast.AccRef(lo, hi, self._loc(tok))

    def tensor(self, items: builtins.list[Token | None]) -> ast.TensorRef:
        idx = items[1]
        index: str | int | None = None
        if idx is not None:
            index = int(idx) if idx.type == "INT" else str(idx)
        return ast.TensorRef(str(items[0])[1:], index, self._loc(items[0]))

    def const(self, items: builtins.list[Token]) -> ast.ConstRef:
        return ast.ConstRef(str(items[0])[1:], self._loc(items[0]))

    def expr(self, items: builtins.list[Token | None]) -> ast.Expr:
        name, sign, off = items
        offset = 0 if off is None else int(off) * (-1 if sign == "-" else 1)
        return ast.Expr(str(name), offset, self._loc(name))

    def number(self, items: builtins.list[Token]) -> ast.Num:
        return ast.Num(_num(str(items[0])), str(items[0]), self._loc(items[0]))

    def range(self, items: builtins.list[Token]) -> ast.Range:
        lo, hi = _num(str(items[0])), _num(str(items[1]))
        if not isinstance(lo, int) or not isinstance(hi, int) or lo < 0:
            raise _LocatedError("a range needs non-negative integers lo:hi", items[0])
        if hi <= lo:
            raise _LocatedError(f"empty range {lo}:{hi}", items[0])
        return ast.Range(lo, hi, self._loc(items[0]))

    def list(self, items: builtins.list[Token | None]) -> ast.ListVal:
        vals = tuple(_num(str(t)) for t in items if t is not None)
        tok = next((t for t in items if t is not None), None)
        return ast.ListVal(vals, self._loc(tok))

    def attr(self, items: builtins.list[object]) -> ast.AttrVal:
        name, value = cast(Token, items[0]), cast(ast.Value, items[1])  # attr: NAME "=" value
        return ast.AttrVal(str(name), value, self._loc(name))

    def type(self, items: builtins.list[Token | None]) -> ast.TensorType:
        name = cast(Token, items[0])  # rule type: NAME "[" [INT ("," INT)*] "]"
        dtype = str(name)
        if dtype not in tdata.DTYPES:
            raise _LocatedError(f"unknown element type '{dtype}' (expected one of {', '.join(tdata.DTYPES)})", name)
        return ast.TensorType(dtype, tuple(int(t) for t in items[1:] if t is not None))

    def list_payload(self, items: builtins.list[Token | None]) -> tuple[str, object, Token | None]:
        toks = [t for t in items if t is not None]
        return ("list", [_num(str(t)) for t in toks], toks[0] if toks else None)

    def encoded_payload(self, items: builtins.list[Token]) -> tuple[str, object, Token]:
        text = str(items[0])
        enc, _, rest = text.partition('"')
        return (enc, rest[:-1], items[0])

    # ---- statements: (kind, value, comment placeholder)
    def machine(self, items: builtins.list[ast.AttrVal]) -> tuple[str, object]:
        return ("machine", tuple(items))

    def io_attr(self, items: builtins.list[Token]) -> tuple[Token, Token]:
        return (items[0], items[1])

    def io_decl(self, items: builtins.list[object]) -> tuple[str, object]:
        direction, name, typ = str(items[0])[1:], str(items[1]), items[2]
        assert isinstance(typ, ast.TensorType)
        batch: int | None = None
        data_name: str | None = None
        seen: set[str] = set()
        # io_decl: IODIR NAME ":" type io_attr*, each io_attr a (NAME, NUMBER | STRING) pair
        for key, val in cast("builtins.list[tuple[Token, Token]]", items[3:]):
            k = str(key)
            if k not in IO_ATTRS:
                raise _LocatedError(f"unknown attribute '{k}' of .{direction} (allowed: {', '.join(IO_ATTRS)})", key)
            if k in seen:
                raise _LocatedError(f"attribute '{k}' given twice", key)
            seen.add(k)
            if k == "batch":
                batch = _batch_axis(val, typ)
            else:
                data_name = _data_name(val)
        return ("io", (direction, name, typ, batch, data_name))

    def expect_float(self, items: builtins.list[ast.AttrVal]) -> tuple[str, object]:
        return ("expect_float", tuple(items))

    def data_decl(self, items: builtins.list[object]) -> tuple[str, object]:
        # data_decl: ".data" CONST ":" type "=" payload; payload is list_payload or encoded_payload's triple
        name = cast(Token, items[0])
        typ = cast(ast.TensorType, items[1])
        enc, payload, tok = cast("tuple[str, object, Token | None]", items[2])
        need = tdata.declared_bytes(typ.dtype, typ.shape)
        if self.data_bytes + need > tdata.MAX_DATA_BYTES:  # checked before anything is decoded
            total = f" bring the program's data constants to {self.data_bytes + need} bytes" if self.data_bytes else ""
            raise _LocatedError(
                f"data {name}: {need} bytes as declared{total}, more than the limit of {tdata.MAX_DATA_BYTES >> 20} "
                "MiB for all the data constants of a program",
                name,
            )
        self.data_bytes += need
        try:
            if enc == "list":  # list_payload: the numbers
                values = tdata.from_list(cast("builtins.list[int | float]", payload), typ.dtype, typ.shape)
            else:  # encoded_payload: the text between the quotes
                values = tdata.decode(enc, cast(str, payload), typ.dtype, typ.shape)
        except ValueError as e:
            raise _LocatedError(f"data {name}: {e}", tok if tok is not None else name) from None
        return ("data", (str(name)[1:], typ, values, enc, payload if enc != "list" else None))

    def expect(self, items: builtins.list[ast.AttrVal]) -> tuple[str, object]:
        return ("expect", tuple(items))

    def trace(self, items: builtins.list[ast.AttrVal]) -> tuple[str, object]:
        return ("trace", tuple(items))

    def param(self, items: builtins.list[Token]) -> ast.Param:
        return ast.Param(str(items[0]), str(items[1]), self._loc(items[1]))

    def micro_open(self, items: builtins.list[object]) -> tuple[str, object]:
        return ("micro", (str(items[0]), tuple(p for p in items[1:] if p is not None)))

    def section_open(self, items: builtins.list[Token]) -> tuple[str, object]:
        return ("section", str(items[0])[1:])

    def repeat_open(self, items: builtins.list[Token]) -> tuple[str, object]:
        return ("repeat", (str(items[0]), int(items[1])))

    def close(self, items: builtins.list[object]) -> tuple[str, object]:
        return ("close", None)

    def instr(self, items: builtins.list[object]) -> tuple[str, object]:
        name = items[0]
        arrays_tok = cast("Token | None", items[1])  # instr: NAME [ARRAYS] ...
        arrays = None
        if arrays_tok is not None:
            text = str(arrays_tok)[1:]
            lo, _, hi = text.partition(":")
            a_lo = int(lo)
            a_hi = int(hi) if hi else a_lo + 1
            if a_hi <= a_lo:
                raise _LocatedError(f"empty array set @{text}", arrays_tok)
            arrays = ast.ArraySet(a_lo, a_hi, self._loc(arrays_tok))
        rest = [i for i in items[2:] if i is not None]
        operands = tuple(i for i in rest if not isinstance(i, ast.AttrVal))
        attrs = tuple(i for i in rest if isinstance(i, ast.AttrVal))
        return ("instr", (str(name), arrays, operands, attrs))

    def _line(self, items: builtins.list[object], loc: Loc) -> _Line:
        stmt = next((i for i in items if isinstance(i, tuple)), None)
        comment = next((str(i) for i in items if isinstance(i, Token) and i.type == "COMMENT"), None)
        if stmt is None:
            return ("comment" if comment else "blank", None, comment, loc)
        return (stmt[0], stmt[1], comment, loc)


class _ToAst(_Callbacks, Transformer):
    """Parse tree -> flat list of (kind, payload) line records."""

    def __init__(self, file: str):
        Transformer.__init__(self)
        _Callbacks.__init__(self, file)

    @v_args(meta=True)
    def line(self, meta: Meta, items: builtins.list[object]) -> _Line:
        return self._line(items, self._mloc(meta) or Loc(self.file, 0, 1))


#: Where each line's first token is: after the blanks that start it (the lexer ignores them).  A newline and
#: the blanks after it (a search for the newline, fast on long lines) and the blanks that start the text.
_LINE_BREAK = re.compile(r"\n[ \t]*")
_BLANKS = re.compile(r"[ \t]*")


class _FastAst(_Callbacks):
    """The callbacks given to the LALR parser itself (Lark's transformer= option): no parse tree is built.

    Lark tells such callbacks nothing of where a rule's text starts, which `line` needs (its first token may
    be a keyword the grammar drops, or the newline of a blank line).  Every line ends with the one token that
    holds a newline (_NL: no other terminal matches one), so the n-th line the parser reduces is line n of the
    text, and its first token starts at its first character that is not a blank: the same place the parse
    tree's positions give _ToAst.  Its state is per parse (reset), so parse() holds _FAST_LOCK around it.
    """

    def __init__(self) -> None:
        super().__init__("<input>")
        self.columns: builtins.list[int] = []
        self.lines = 0
        self.number_re = re.compile("(?!)")  # the grammar's NUMBER, set by _fast()

    def reset(self, file: str, source: str) -> None:
        self.file = file
        self.data_bytes = 0
        self.lines = 0
        first = _BLANKS.match(source)
        assert first is not None  # it matches the empty string
        self.columns = [first.end() + 1, *(m.end() - m.start() for m in _LINE_BREAK.finditer(source))]

    # cram_fast.lark's shortcuts: the tokens cram.lark would have read there, then its callbacks
    def attr_num(self, items: builtins.list[Token]) -> ast.AttrVal:
        tok = items[0]  # ATTR_NUM: name=digits
        name, _, num = str(tok).partition("=")
        line, col = _pos(tok)
        value = self.number([Token("NUMBER", num, line=line, column=col + len(name) + 1)])
        return self.attr([Token("NAME", name, line=line, column=col), value])

    def attr_range(self, items: builtins.list[Token]) -> ast.AttrVal:
        tok = items[0]  # ATTR_RANGE: name=digits:digits
        name, _, rest = str(tok).partition("=")
        lo, _, hi = rest.partition(":")
        line, col = _pos(tok)
        at = col + len(name) + 1
        value = self.range(
            [Token("NUMBER", lo, line=line, column=at), Token("NUMBER", hi, line=line, column=at + len(lo) + 1)]
        )
        return self.attr([Token("NAME", name, line=line, column=col), value])

    def attr_col(self, items: builtins.list[Token]) -> ast.AttrVal:
        tok = items[0]  # ATTR_COL: name=c<digits>
        name, _, val = str(tok).partition("=")
        line, col = _pos(tok)
        value = self.col([Token("COL", val, line=line, column=col + len(name) + 1)])
        return self.attr([Token("NAME", name, line=line, column=col), value])

    def attr_acc(self, items: builtins.list[Token]) -> ast.AttrVal:
        tok = items[0]  # ATTR_ACC: name=acc<digits>
        name, _, val = str(tok).partition("=")
        line, col = _pos(tok)
        value = self.acc([Token("ACC", val, line=line, column=col + len(name) + 1), None])
        return self.attr([Token("NAME", name, line=line, column=col), value])

    def _numbers(self, tok: Token) -> tuple[builtins.list[int | float], Token | None]:
        """A NUMBER_LIST's numbers and the token of the first, as cram.lark's NUMBER tokens would be."""
        body = str(tok)[1:-1]
        if not body:
            return [], None
        parts = body.split(", ")
        for part in parts:  # NUMBER as the lexer matches it there, and nothing else (no blanks, no other comma)
            m = self.number_re.match(part)
            if m is None or m.end() != len(part):
                raise _LocatedError("not a plain list of numbers (the parse with cram.lark alone reads it)", tok)
        line, col = _pos(tok)
        return [_num(p) for p in parts], Token("NUMBER", parts[0], line=line, column=col + 1)

    def number_list(self, items: builtins.list[Token]) -> ast.ListVal:
        vals, first = self._numbers(items[0])
        return ast.ListVal(tuple(vals), self._loc(first))

    def number_list_payload(self, items: builtins.list[Token]) -> tuple[str, object, Token | None]:
        vals, first = self._numbers(items[0])
        return ("list", vals, first)

    def line(self, items: builtins.list[object]) -> _Line:
        self.lines += 1
        return self._line(items, Loc(self.file, self.lines, self.columns[self.lines - 1]))


@functools.lru_cache(maxsize=1)
def _fast() -> tuple[Lark, _FastAst]:
    callbacks = _FastAst()
    parser = _load(fast=True, transformer=callbacks)
    callbacks.number_re = re.compile(parser.get_terminal("NUMBER").pattern.to_regexp())
    return parser, callbacks


_FAST_LOCK = threading.Lock()


def _describe_expected(expected: set[str]) -> str:
    names = {
        "_NL": "end of line",
        "COMMA": "','",
        "NAME": "a name",
        "COL": "a column (c<N>)",
        "ACC": "an accumulator (acc<N>)",
        "TENSOR": "a tensor (%name)",
        "CONST": "a data constant ($name)",
        "NUMBER": "a number",
        "INT": "an integer",
        "ARRAYS": "an array set (@lo:hi)",
        "EQUAL": "'='",
        "LBRACE": "'{'",
        "RBRACE": "'}'",
        "COLON": "':'",
        "LSQB": "'['",
        "RSQB": "']'",
        "LPAR": "'('",
        "RPAR": "')'",
        "PKIND": "a parameter kind (col, acc, int)",
        "ENCODED": 'an encoded payload (b64z"...")',
        "STRING": 'a string ("...")',
        "COMMENT": "a comment",
        "IODIR": "'.input', '.output'",
        "SECTION": "'.init', '.main'",
        "SIGN": "'+', '-'",
        "REPEAT": "'repeat'",
    }
    if "NAME" in expected and "SECTION" in expected:  # the start of a line: anything goes
        return "an instruction, a directive (.machine, .input, .data, .main, ...), '}' or a comment"

    def describe(e: str) -> str:
        if e in names:
            return names[e]
        if e.startswith("__ANON"):  # an unnamed keyword of the grammar, e.g. '.machine'
            try:
                return f"'{_lark().get_terminal(e).pattern.value}'"
            except KeyError:
                pass
        return e.lower().strip("_")

    # descriptions first, then literal tokens
    shown = sorted({describe(e) for e in expected}, key=lambda d: (d.startswith("'"), d))
    return ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")


def parse(text: str, file: str = "<input>") -> ast.Program:
    """Parse program text; raise UserError with a location on any problem.

    The parser's own callbacks build the lines (_FastAst); when that fails, the text is parsed again into
    a tree with positions and walked by _ToAst (_parse_tree), which says what is wrong and where.
    """
    source = text if text.endswith("\n") else text + "\n"
    try:
        with _FAST_LOCK:
            parser, callbacks = _fast()
            callbacks.reset(file, source)
            lines = cast("list[_Line]", cast(Tree, parser.parse(source)).children)
    except (UnexpectedInput, _LocatedError, ValueError):
        lines = _parse_tree(source, file)
    return _assemble(lines, file, source)


def _parse_tree(source: str, file: str) -> list[_Line]:
    """The lines of `source` through a parse tree with positions; UserError with a location on any problem."""
    try:
        tree = _lark().parse(source)
        lines = _ToAst(file).transform(tree)
    except UnexpectedCharacters as e:
        pos = e.pos_in_stream or 0  # always set on this error (typed optional on lark's base class)
        raise UserError(f"unexpected character {source[pos]!r}", Loc(file, e.line, e.column), source) from None
    except UnexpectedToken as e:
        tok = e.token
        what = "end of line" if tok.type == "_NL" else f"'{clip(str(tok), 60)}'"
        msg = f"unexpected {what}; expected {_describe_expected(set(e.expected))}"
        raise UserError(msg, Loc(file, e.line, e.column), source) from None
    except UnexpectedEOF as e:
        raise UserError("unexpected end of file", Loc(file, e.line, e.column), source) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark input errors
        raise UserError(str(e).splitlines()[0], Loc(file, e.line, e.column), source) from None
    except VisitError as e:
        inner = e.orig_exc
        if isinstance(inner, _LocatedError):
            raise UserError(inner.message, Loc(file, inner.line, inner.col), source) from None
        if isinstance(inner, ValueError) and "integer string conversion" in str(inner):
            raise UserError(
                f"integer with more than {sys.get_int_max_str_digits()} digits", _visit_loc(e, file), source
            ) from None
        raise
    return cast("list[_Line]", lines.children)


def _visit_loc(e: VisitError, file: str) -> Loc:
    """Where the tree node or token that a transformer callback failed on starts."""
    obj = e.obj
    if isinstance(obj, Token) and obj.line is not None:
        return Loc(file, obj.line, obj.column or 1)
    meta = getattr(obj, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return Loc(file, meta.line, meta.column)
    return Loc(file, 1, 1)


_BLOCK_KINDS = ("micro", "section", "repeat")
#: Blocks (.init, .main, .micro and repeat) nest at most this deep; the verifier applies the same bound
#: to loops and micro-program calls together (the passes over a program recurse once per level).
MAX_NESTING = 64


def _assemble(lines: list[_Line], file: str, source: str) -> ast.Program:
    """Nest the flat lines into blocks and build the Program."""
    top: list[ast.TopItem] = []
    # open blocks: (kind, header, comment, loc, collected statements)
    stack: list[tuple[str, object, str | None, Loc, list[ast.Stmt]]] = []

    def err(msg: str, loc: Loc) -> UserError:
        return UserError(msg, loc, source)

    for kind, val, comment, loc in lines:
        if kind in ("blank", "comment"):
            item = ast.Blank(loc) if kind == "blank" else ast.Comment(comment or "", loc)
            if stack:
                stack[-1][4].append(item)
            else:
                top.append(item)
        elif kind in _BLOCK_KINDS:
            _check_open(kind, val, len(stack), loc, source)
            stack.append((kind, val, comment, loc, []))
        elif kind == "close":
            if not stack:
                raise err("'}' without an open block", loc)
            block = _close_block(*stack.pop(), comment, loc, source)
            if isinstance(block, ast.Repeat):  # opened inside a block (checked above), so one is still open
                stack[-1][4].append(block)
            else:  # .micro and sections open at top level only
                top.append(block)
        elif kind == "instr":
            if not stack:
                raise err("instructions must be inside .init { }, .main { } or a .micro", loc)
            # instr's payload: (name, ArraySet | None, operands, attrs)
            name, arrays, operands, attrs = cast(
                "tuple[str, ast.ArraySet | None, tuple[ast.Value, ...], tuple[ast.AttrVal, ...]]", val
            )
            stack[-1][4].append(ast.Instr(name, arrays, operands, attrs, comment, loc))
        else:
            if stack:
                raise err(f".{kind if kind != 'io' else 'input/.output'} must be at top level", loc)
            top.append(_declaration(kind, val, comment, loc))
    if stack:
        raise err("block is never closed with '}'", stack[-1][3])
    return ast.Program(tuple(top), file, source)


def _check_open(kind: str, header: object, depth: int, loc: Loc, source: str) -> None:
    """UserError unless a block of `kind` may open inside `depth` open blocks."""
    if kind in ("micro", "section") and depth:
        what = ".micro" if kind == "micro" else "." + str(header)
        raise UserError(f"a {what} block must be at top level", loc, source)
    if kind == "repeat" and not depth:
        raise UserError("repeat must be inside .init, .main or a micro-program", loc, source)
    if depth >= MAX_NESTING:
        raise UserError(
            f"blocks nest more than {MAX_NESTING} deep (the limit; .init, .main and .micro count)", loc, source
        )


def _close_block(
    kind: str,
    header: object,
    comment: str | None,
    loc: Loc,
    body: list[ast.Stmt],
    close_comment: str | None,
    close_loc: Loc,
    source: str,
) -> ast.Micro | ast.Section | ast.Repeat:
    """The block opened by the line (kind, header, comment, loc) and closed by a '}' line (its comment kept)."""
    if close_comment is not None:
        body.append(ast.Comment(close_comment, close_loc))
    if kind == "micro":
        name, params = cast("tuple[str, tuple[ast.Param, ...]]", header)  # micro_open's payload
        return ast.Micro(name, params, tuple(body), comment, loc)
    if kind == "section":
        return ast.Section(str(header), tuple(body), comment, loc)
    var, count = cast("tuple[str, int]", header)  # repeat_open's payload
    if count < 1:
        raise UserError("repeat count must be at least 1", loc, source)
    return ast.Repeat(var, count, tuple(body), comment, loc)


def _declaration(kind: str, val: object, comment: str | None, loc: Loc) -> ast.TopItem:
    """A top-level declaration line as its node; `val` is the payload the _ToAst callback for `kind` built."""
    if kind == "machine":
        return ast.Machine(cast("tuple[ast.AttrVal, ...]", val), comment, loc)
    if kind == "io":
        direction, name, typ, batch, data_name = cast("tuple[str, str, ast.TensorType, int | None, str | None]", val)
        return ast.IODecl(direction, name, typ, comment, loc, batch=batch, data_name=data_name)
    if kind == "data":
        dname, dtyp, values, enc, raw = cast("tuple[str, ast.TensorType, np.ndarray, str, str | None]", val)
        return ast.DataDecl(dname, dtyp, values, enc, comment, loc, raw)
    attrs = cast("tuple[ast.AttrVal, ...]", val)  # .expect, .expect_float, .trace: attr*
    if kind == "expect":
        return ast.Expect(attrs, comment, loc)
    if kind == "expect_float":
        return ast.ExpectFloat(attrs, comment, loc)
    if kind == "trace":
        return ast.Trace(attrs, comment, loc)
    raise AssertionError(f"no statement kind {kind!r} in the grammar")


#: Bytes of program text: room for MAX_DATA_BYTES of data in base64 and the instructions.
MAX_SOURCE_BYTES = 2 << 30


def parse_file(path: str) -> ast.Program:
    try:
        size = os.stat(path).st_size
        if size > MAX_SOURCE_BYTES:
            raise UserError(f"{path} is {size} bytes, more than the limit of {MAX_SOURCE_BYTES} for a program")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    return parse(text, path)
