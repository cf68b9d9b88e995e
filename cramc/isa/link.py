"""Linking: micro-program calls inlined with their parameters bound.

The verifier (cramc.isa.verifier) walks `.init` then `.main` once.  At every
`call` it binds the call's arguments to the micro-program's parameters
(`bind_call`) and walks the body under those bindings (an `Env`), so the linked
program (cramc.isa.linked) holds no calls, only bound instructions and loops.
Inlining multiplies: calls that call calls can turn a short text into an
enormous program, so `linked_size` bounds the result before the walk starts (the verifier's
MAX_LINKED), and
`check_nesting` bounds how deep loops and calls nest.

The functions here only bind and inline; checking an argument (a column inside
the array, an accumulator inside the file) is the verifier's, handed in as
`resolve`, and so is building a located error (`err`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cramc.errors import Loc, UserError
from cramc.isa import ast
from cramc.isa.parser import MAX_NESTING

#: err(message, location, call sites) -> the located error to raise.
ErrFn = Callable[[str, "Loc | None", "tuple[Loc, ...]"], UserError]
#: resolve(parameter, argument, env) -> the bound value (a column, an accumulator slot or an integer).
ResolveFn = Callable[[ast.Param, ast.Value, "Env"], int]


@dataclass
class Env:
    """Bindings while walking: micro parameters, loop variables, call sites, inherited rows."""

    params: dict[str, tuple[str, int | tuple[int, int]]]  # name -> (kind, value)
    loops: dict[str, int]  # loop var -> count
    arrays: tuple[int, int] | None
    rows: tuple[int, int] | None
    site: tuple[Loc, ...] = ()
    micro_stack: tuple[str, ...] = ()


def suggest(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_nesting(env: Env, loc: Loc | None, err: ErrFn) -> None:
    """Loops and calls nest at most MAX_NESTING deep, counted through calls (the passes recurse per level)."""
    if len(env.loops) + len(env.micro_stack) >= MAX_NESTING:
        raise err(
            f"loops and micro-program calls nest more than {MAX_NESTING} deep (the limit, counted through calls)",
            loc,
            env.site,
        )


def bind_call(
    ins: ast.Instr,
    env: Env,
    micros: dict[str, ast.Micro],
    arrays: tuple[int, int] | None,
    rows: tuple[int, int] | None,
    resolve: ResolveFn,
    err: ErrFn,
) -> tuple[ast.Micro, Env]:
    """The micro-program a `call` runs and the bindings to walk its body under.

    Refuses a call of an unknown micro-program, recursion, calls nested too deep, missing and
    unknown arguments; every argument is bound through `resolve` in the caller's environment.
    """
    target = ins.operands[0]
    if not isinstance(target, ast.Expr) or target.offset:
        raise err("call needs the name of a micro-program", target.loc, env.site)
    m = micros.get(target.name)
    if m is None:
        raise err(f"undefined micro-program '{target.name}'{suggest(target.name, micros)}", target.loc, env.site)
    check_nesting(env, ins.loc, err)
    if m.name in env.micro_stack:
        raise err(f"micro-program '{m.name}' calls itself (recursion is not allowed)", ins.loc, env.site)
    params: dict[str, tuple[str, int | tuple[int, int]]] = {}
    given = {a.name: a for a in ins.attrs if a.name != "rows"}
    for q in m.params:
        a = given.pop(q.name, None)
        if a is None:
            raise err(f"call of '{m.name}' is missing argument {q.name}= ({q.kind})", ins.loc, env.site)
        params[q.name] = (q.kind if q.kind in ("col", "acc") else "int", resolve(q, a.value, env))
    if given:
        extra = next(iter(given.values()))
        raise err(f"'{m.name}' has no parameter '{extra.name}'", extra.loc, env.site)
    inner = Env(
        params, env.loops, arrays, rows, (*env.site, ins.loc) if ins.loc else env.site, (*env.micro_stack, m.name)
    )
    return m, inner


def linked_size(sections: list[ast.Section], micros: dict[str, ast.Micro], limit: int, err: ErrFn) -> None:
    """Refuse, before linking, a program whose inlined calls would link to more than `limit` instructions.

    Sizes are counted per micro-program once (memoised), so calls that call calls twice cost nothing
    to count however much they multiply; recursion and over-deep calls count 0 here and are reported
    by the walk.
    """
    sizes: dict[str, int] = {}

    def size(body: tuple[ast.Stmt, ...], calls: tuple[str, ...], depth: int) -> int:
        if depth > MAX_NESTING:
            return 0
        n = 0
        for s in body:
            if isinstance(s, ast.Repeat):
                n += size(s.body, calls, depth + 1)
            elif isinstance(s, ast.Instr):
                target = s.operands[0] if s.mnemonic == "call" and s.operands else None
                m = micros.get(target.name) if isinstance(target, ast.Expr) else None
                if m is None:
                    n += 1
                elif m.name not in calls:
                    if m.name not in sizes:
                        sizes[m.name] = size(m.body, (*calls, m.name), depth + 1)
                    n += sizes[m.name]
        return n

    total = 0
    for sec in sections:
        for s in sec.body:
            total += size((s,), (), 1)
            if total > limit:
                raise err(
                    f"the program links to more than {limit} instructions (the limit; micro-program calls "
                    "are inlined, so calls inside called micro-programs multiply)",
                    getattr(s, "loc", None) or sec.loc,
                    (),
                )
