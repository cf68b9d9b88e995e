"""Verify a parsed program and link it into an executable form.

Checks, all reported as located `UserError`s:
- the machine header (known keys, sizes that can be allocated: checked before
  anything is allocated);
- every instruction against the opcode table: operand count and kinds,
  attributes, array set / column / accumulator / row ranges against the header;
- names: micro-programs, parameters, tensors, data constants, loop variables;
- dataflow, by walking `.init` then `.main` once (loops once, calls inlined):
  columns read before they are written, tensors used before they are defined,
  CMOS shapes (computed by the reference semantics on one zero sample).  What
  each instruction reads and writes, and over which extent, is declared per
  operand in the opcode table (cramc.isa.opcodes.Operand); `_dataflow` is one
  loop over those declarations, with no per-mnemonic case.

The result, a `Linked` program (cramc.isa.linked), has every micro-program
call inlined with its parameters bound (cramc.isa.link) and every constant
resolved, so the interpreter only executes.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from operator import itemgetter
from typing import Any

import numpy as np

from cramc.errors import Loc, UserError
from cramc.isa import ast
from cramc.isa import data as tdata
from cramc.isa.link import Env, bind_call, check_nesting, linked_size, suggest
from cramc.isa.linked import DISPATCH_COST as DISPATCH_COST  # docgen and the tests read it here
from cramc.isa.linked import (
    BoundOp,
    Expectation,
    IOSpec,
    Linked,
    Loop,
    MachineSpec,
    Node,
    TRef,
    Work,
)
from cramc.isa.opcodes import (
    OPCODES,
    Access,
    AKind,
    Bounds,
    Distinct,
    Kind,
    Opcode,
    Operand,
    Shape,
    Span,
    Unit,
)

#: Limits that keep a header from asking for absurd allocations.
MAX_ARRAYS = 1 << 22
MAX_ROWS = 1 << 16
MAX_COLS = 1 << 16
MAX_ACCS = 1 << 16
MAX_CELLS = 1 << 38  # 32 GiB of state per sample, bit-packed
#: Instructions of the linked program (micro-program calls are inlined, so calls that call calls can
#: multiply a short text into an enormous program; light ResNet-50 links to about 200 000).
MAX_LINKED = 1 << 20
#: Work (see `Work`) that `cramc run` does without --max-work: about half an hour of simulation on one
#: CPU core; 3x what light ResNet-50 needs for its 4 validation vectors, and enough to refuse any
#: program that executes a billion instructions.
DEFAULT_MAX_WORK = 5 * 10**13
#: Elements of one CMOS tensor per sample (declared or inferred): shapes are inferred by running
#: the reference semantics on zeros, so this bounds the verifier's own memory too.
MAX_TENSOR_ELEMENTS = 1 << 26
#: The most array-columns of a chip whose written cells the verifier tracks in one [column, array] table.
DENSE_WRITTEN = 1 << 22
MACHINE_KEYS = {"arrays": True, "rows": True, "cols": True, "accs": False}
DEFAULT_ACCS = 64


class _Checker:
    def __init__(self, program: ast.Program):
        self.p = program
        self.src = program.source
        self.file = program.file

    def err(self, msg: str, loc: Loc | None, site: tuple[Loc, ...] = ()) -> UserError:
        if site:
            lines = [f"line {s.line}" for s in site]
            if len(lines) > 4:  # calls nested deep: the outermost and the innermost
                lines = [*lines[:2], f"... {len(lines) - 4} more", *lines[-2:]]
            msg += " (in a micro-program called at " + ", ".join(lines) + ")"
        return UserError(msg, loc or Loc(self.file, 1, 1), self.src)

    # ------------------------------------------------------------------ header
    def machine(self) -> MachineSpec:
        ms = [i for i in self.p.items if isinstance(i, ast.Machine)]
        if not ms:
            raise self.err("missing .machine header (e.g. .machine arrays=4 rows=256 cols=256)", None)
        if len(ms) > 1:
            raise self.err("more than one .machine header", ms[1].loc)
        m = ms[0]
        vals: dict[str, int] = {}
        for a in m.attrs:
            if a.name not in MACHINE_KEYS:
                raise self.err(f"unknown machine parameter '{a.name}' (expected {', '.join(MACHINE_KEYS)})", a.loc)
            if a.name in vals:
                raise self.err(f"machine parameter '{a.name}' given twice", a.loc)
            if not isinstance(a.value, ast.Num) or not isinstance(a.value.value, int) or a.value.value < 1:
                raise self.err(f"machine parameter '{a.name}' must be a positive integer", a.loc)
            vals[a.name] = int(a.value.value)
        for k, req in MACHINE_KEYS.items():
            if req and k not in vals:
                raise self.err(f".machine needs {k}=N", m.loc)
        limits = {"arrays": MAX_ARRAYS, "rows": MAX_ROWS, "cols": MAX_COLS, "accs": MAX_ACCS}
        for k, v in vals.items():
            if v > limits[k]:
                loc = next(a.loc for a in m.attrs if a.name == k)
                raise self.err(f"{k}={v} exceeds the simulator limit of {limits[k]}", loc)
        spec = MachineSpec(vals["arrays"], vals["rows"], vals["cols"], vals.get("accs", DEFAULT_ACCS))
        if spec.arrays * spec.cols * spec.words * 64 > MAX_CELLS:
            raise self.err(
                f"chip of {spec.arrays} x {spec.rows} x {spec.cols} cells exceeds the simulator limit of "
                f"{MAX_CELLS} cells",
                m.loc,
            )
        return spec


def _value_desc(v: ast.Value) -> str:
    return {
        ast.Col: "a column",
        ast.AccRef: "an accumulator",
        ast.Expr: "a name",
        ast.TensorRef: "a tensor",
        ast.ConstRef: "a data constant",
        ast.Num: "a number",
        ast.Range: "a range",
        ast.ListVal: "a list",
    }[type(v)]


class Verifier(_Checker):
    def __init__(self, program: ast.Program):
        super().__init__(program)
        self.spec = self.machine()
        self.data = self._data()
        self.micros = self._micros()
        self._lines: list[str] | None = None
        self.written = _Written(self.spec.cols, self.spec.arrays)
        self.tensors: dict[str, tuple[tuple[int, ...], bool]] = {}
        self.cmos_cost: dict[int, int] = {}  # id(BoundOp) -> elements a CMOS instruction reads and writes
        # (column, lo, hi) whose arrays lo:hi are all written: `written` only ever gains cells, so an entry
        # never goes stale; it spares the reads and writes of the fast path their numpy slices
        self._full: set[tuple[int, int, int]] = set()
        self._plans: dict[int, _Plan | None] = {}  # id(ast.Instr) -> its fast path (see `_plan`), or None
        self._bodies: dict[str, _BodyPlan | None] = {}  # micro-program -> the fast path of its calls, or None

    # ------------------------------------------------------------ declarations
    def _data(self) -> dict[str, ast.DataDecl]:
        out: dict[str, ast.DataDecl] = {}
        for d in self.p.items:
            if isinstance(d, ast.DataDecl):
                if d.name in out:
                    raise self.err(f"data constant ${d.name} defined twice", d.loc)
                out[d.name] = d
        return out

    def _micros(self) -> dict[str, ast.Micro]:
        out: dict[str, ast.Micro] = {}
        for m in self.p.items:
            if isinstance(m, ast.Micro):
                if m.name in out:
                    raise self.err(f"micro-program '{m.name}' defined twice", m.loc)
                seen: set[str] = set()
                for q in m.params:
                    if q.name in seen:
                        raise self.err(f"parameter '{q.name}' declared twice", q.loc)
                    seen.add(q.name)
                out[m.name] = m
        return out

    def _ios(self, direction: str) -> tuple[IOSpec, ...]:
        out: list[IOSpec] = []
        names: set[str] = set()
        keys: dict[str, str] = {}
        for d in self.p.ios(direction):
            if d.name in names:
                raise self.err(f"{direction} '{d.name}' declared twice", d.loc)
            names.add(d.name)
            if d.key in keys:
                other = keys[d.key]
                raise self.err(
                    f"{direction} '{d.name}' has the same name in data files, '{d.key}', as {direction} '{other}'",
                    d.loc,
                )
            keys[d.key] = d.name
            size = int(np.prod(d.type.shape, dtype=object)) if d.type.shape else 1
            if size > MAX_TENSOR_ELEMENTS:
                raise self.err(
                    f"{direction} '{d.name}' has {size} elements per sample, more than the simulator limit of "
                    f"{MAX_TENSOR_ELEMENTS}",
                    d.loc,
                )
            out.append(IOSpec(d.name, d.type.dtype, d.type.shape, d.batch, d.key))
        return tuple(out)

    # ------------------------------------------------------------------ values
    def _int(self, v: ast.Value, env: Env, what: str, kinds: tuple[str, ...] = ("int",)) -> int:
        if isinstance(v, ast.Num) and isinstance(v.value, int):
            return int(v.value)
        if isinstance(v, ast.Expr):
            b = env.params.get(v.name)
            if b is None:
                raise self.err(f"unknown name '{v.name}' (expected {what})", v.loc, env.site)
            if b[0] not in kinds:
                raise self.err(f"parameter '{v.name}' is a {b[0]} parameter, expected {what}", v.loc, env.site)
            return int(b[1]) + v.offset  # type: ignore[arg-type]
        raise self.err(f"expected {what}, got {_value_desc(v)}", v.loc, env.site)

    def _col(self, v: ast.Value, env: Env) -> int:
        if isinstance(v, ast.Col):
            c = v.index
        elif isinstance(v, ast.Expr):
            c = self._int(v, env, "a column", ("col",))
        else:
            raise self.err(f"expected a column (c<N>), got {_value_desc(v)}", v.loc, env.site)
        if not 0 <= c < self.spec.cols:
            raise self.err(f"column {c} outside the array (cols={self.spec.cols})", v.loc, env.site)
        return c

    def _acc(self, v: ast.Value, env: Env, allow_range: bool) -> int | tuple[int, int]:
        if isinstance(v, ast.AccRef):
            lo, hi = v.lo, v.hi
            if hi is not None and not allow_range:
                raise self.err("expected one accumulator slot, got a range", v.loc, env.site)
        elif isinstance(v, ast.Expr):
            lo, hi = self._int(v, env, "an accumulator", ("acc",)), None
        else:
            raise self.err(f"expected an accumulator (acc<N>), got {_value_desc(v)}", v.loc, env.site)
        top = hi if hi is not None else lo + 1
        if lo < 0 or top > self.spec.accs:
            raise self.err(f"accumulator slot {top - 1} outside the file (accs={self.spec.accs})", v.loc, env.site)
        if allow_range:
            return (lo, top)
        return lo

    def _tref(self, v: ast.Value, env: Env) -> TRef:
        if not isinstance(v, ast.TensorRef):
            raise self.err(f"expected a tensor (%name), got {_value_desc(v)}", v.loc, env.site)
        if isinstance(v.index, str) and v.index not in env.loops:
            raise self.err(f"index '{v.index}' is not a loop variable in scope", v.loc, env.site)
        return TRef(v.name, v.index)

    def _attr(self, op: Opcode, a: ast.AttrVal, env: Env) -> Any:
        spec = op.attr_map[a.name]
        v = a.value
        k = spec.kind
        if k is AKind.INT:
            return self._int(v, env, f"an integer for {a.name}")
        if k is AKind.FLOAT:
            if isinstance(v, ast.Num):
                return float(v.value)
            raise self.err(f"{a.name} must be a number", v.loc, env.site)
        if k is AKind.SCALAR_OR_DATA:
            if isinstance(v, ast.Num):
                return v.value
            if isinstance(v, ast.ConstRef):
                return self._const(v, env).astype(np.float64 if a.name != "zp" else np.int64)
            raise self.err(f"{a.name} must be a number or a data constant", v.loc, env.site)
        if k is AKind.INTS:
            if isinstance(v, ast.ListVal) and all(isinstance(x, int) for x in v.items):
                return [int(x) for x in v.items]
            raise self.err(f"{a.name} must be a list of integers like [1, 2]", v.loc, env.site)
        if k is AKind.RANGE:
            if isinstance(v, ast.Range):
                return (v.lo, v.hi)
            raise self.err(f"{a.name} must be a range lo:hi", v.loc, env.site)
        if k is AKind.DTYPE:
            if isinstance(v, ast.Expr) and v.offset == 0 and v.name in tdata.DTYPES:
                return v.name
            raise self.err(f"{a.name} must be an element type ({', '.join(tdata.DTYPES)})", v.loc, env.site)
        raise AssertionError(k)

    def _const(self, v: ast.ConstRef, env: Env) -> np.ndarray:
        d = self.data.get(v.name)
        if d is None:
            raise self.err(f"undefined data constant ${v.name}{self._suggest(v.name, self.data)}", v.loc, env.site)
        return d.values

    _suggest = staticmethod(suggest)

    # --------------------------------------------------------------- the walk
    def link(self) -> Linked:
        inputs = self._ios("input")
        outputs = self._ios("output")
        sections: dict[str, ast.Section] = {}
        for s in self.p.items:
            if isinstance(s, ast.Section):
                if s.name in sections:
                    raise self.err(f".{s.name} appears twice", s.loc)
                sections[s.name] = s
        if "main" not in sections:
            raise self.err("missing .main { ... } section", None)
        for m in self.micros.values():
            self._static_body(m.body, m)
        for d in inputs:
            self.tensors[d.name] = (d.shape, not tdata.is_float(d.dtype))
        linked_size([sections[k] for k in ("init", "main") if k in sections], self.micros, MAX_LINKED, self.err)
        env = Env({}, {}, None, None)
        init = self._walk(sections["init"].body, env) if "init" in sections else ()
        main = self._walk(sections["main"].body, env)
        work = Work(*(a + b for a, b in zip(self._work(init), self._work(main), strict=True)))
        for decl in self.p.ios("output"):
            got = self.tensors.get(decl.name)
            if got is None:
                raise self.err(f"output %{decl.name} is never computed by .main", decl.loc)
            if got[0] != decl.type.shape:
                raise self.err(
                    f"output %{decl.name} is declared {list(decl.type.shape)} but computed as {list(got[0])}", decl.loc
                )
        expect = self._expect(inputs, outputs)
        trace = self._trace()
        return Linked(
            self.spec,
            inputs,
            outputs,
            init,
            main,
            expect,
            self.p,
            trace=trace,
            tensor_shapes=dict(self.tensors),
            work=work,
        )

    def _trace(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        env = Env({}, {}, None, None)
        for t in (i for i in self.p.items if isinstance(i, ast.Trace)):
            for a in t.attrs:
                if not isinstance(a.value, ast.ConstRef):
                    raise self.err(f"{a.name}= must name a data constant", a.loc)
                got = self.tensors.get(a.name)
                if got is None:
                    raise self.err(f"trace names tensor %{a.name}, which the program never defines", a.loc)
                arr = self._const(a.value, env)
                if tuple(arr.shape) != (1, *got[0]):
                    raise self.err(
                        f"trace data ${a.value.name} has shape {list(arr.shape)}, expected "
                        f"[1, {', '.join(map(str, got[0]))}]",
                        a.loc,
                    )
                out[a.name] = arr
        return out

    def _expect(self, inputs: tuple[IOSpec, ...], outputs: tuple[IOSpec, ...]) -> Expectation | None:
        exps = self.p.expects
        if not exps:
            floats = [i for i in self.p.items if isinstance(i, ast.ExpectFloat)]
            if floats:
                raise self.err(".expect_float needs an .expect line (the inputs its outputs belong to)", floats[0].loc)
            return None
        if len(exps) > 1:
            raise self.err("more than one .expect line", exps[1].loc)
        e = exps[0]
        ins: dict[str, np.ndarray] = {}
        outs: dict[str, np.ndarray] = {}
        tol = 0.0
        known = {d.name: d for d in (*inputs, *outputs)}
        env = Env({}, {}, None, None)
        for a in e.attrs:
            if a.name == "tol":
                if not isinstance(a.value, ast.Num) or a.value.value < 0:
                    raise self.err("tol must be a non-negative number", a.loc)
                tol = float(a.value.value)
                continue
            io = known.get(a.name)
            if io is None:
                raise self.err(f"'{a.name}' is not a declared input or output{self._suggest(a.name, known)}", a.loc)
            if not isinstance(a.value, ast.ConstRef):
                raise self.err(f"{a.name}= must name a data constant", a.loc)
            arr = self._const(a.value, env)
            if arr.ndim < 1 or tuple(arr.shape[1:]) != io.shape:
                raise self.err(
                    f"validation data ${a.value.name} has shape {list(arr.shape)}, expected [N, "
                    f"{', '.join(map(str, io.shape))}]",
                    a.loc,
                )
            (ins if io in inputs else outs)[a.name] = arr
        missing = [d.name for d in (*inputs, *outputs) if d.name not in ins and d.name not in outs]
        if missing:
            raise self.err(f".expect gives no data for {', '.join(missing)}", e.loc)
        ns = {v.shape[0] for v in (*ins.values(), *outs.values())}
        if len(ns) != 1:
            raise self.err(".expect data have different numbers of samples", e.loc)
        return Expectation(ins, outs, tol, self._expect_float(outputs, ns.pop()))

    def _expect_float(self, outputs: tuple[IOSpec, ...], n: int) -> dict[str, np.ndarray]:
        """.expect_float: the float model's outputs for the .expect inputs, [n, *shape] per output."""
        lines = [i for i in self.p.items if isinstance(i, ast.ExpectFloat)]
        if len(lines) > 1:
            raise self.err("more than one .expect_float line", lines[1].loc)
        out: dict[str, np.ndarray] = {}
        known = {d.name: d for d in outputs}
        env = Env({}, {}, None, None)
        for a in lines[0].attrs if lines else ():
            io = known.get(a.name)
            if io is None:
                raise self.err(f"'{a.name}' is not a declared output{self._suggest(a.name, known)}", a.loc)
            if a.name in out:
                raise self.err(f"'{a.name}' given twice", a.loc)
            if not isinstance(a.value, ast.ConstRef):
                raise self.err(f"{a.name}= must name a data constant", a.loc)
            arr = self._const(a.value, env)
            want = (n, *io.shape)
            if tuple(arr.shape) != want:
                raise self.err(
                    f"float outputs ${a.value.name} have shape {list(arr.shape)}, expected {list(want)} "
                    f"(one per .expect sample)",
                    a.loc,
                )
            out[a.name] = arr
        return out

    def _static_body(self, body: tuple[ast.Stmt, ...], micro: ast.Micro) -> None:
        """Checks that need no bindings: names of params used in the body exist, distinct operands differ."""
        names = {q.name for q in micro.params}
        for s in body:
            if isinstance(s, ast.Repeat):
                self._static_body(s.body, micro)
            elif isinstance(s, ast.Instr):
                self._opcode(s, ())
                if s.arrays is not None:
                    raise self.err(
                        "instructions inside a micro-program take no array set: the call supplies it", s.arrays.loc
                    )
                vals = [*s.operands, *(a.value for a in s.attrs if s.mnemonic != "call")]
                for v in vals:
                    if isinstance(v, ast.Expr) and v.name not in names and v.name not in tdata.DTYPES:
                        if s.mnemonic == "call" and v is s.operands[0]:
                            continue
                        raise self.err(
                            f"unknown name '{v.name}' in micro-program '{micro.name}'{self._suggest(v.name, names)}",
                            v.loc,
                        )
                self._static_distinct(s)

    def _static_distinct(self, ins: ast.Instr) -> None:
        """A `Distinct` rule broken by two operands that are the same expression, whatever a call binds.

        Different parameters may or may not bind to one column, so the walk
        checks the rule at each call (`_dataflow`); `w` and `w` are one column
        under every binding, so that is an error in the definition itself.
        """
        op = OPCODES.get(ins.mnemonic)
        if op is None or op.unit is Unit.CONTROL:
            return
        specs = op.operands + (op.operands[-1],) * (len(ins.operands) - len(op.operands))
        cols = [(o, v) for o, v in zip(specs, ins.operands, strict=False) if o.kind is Kind.COL]
        for i, (oa, va) in enumerate(cols):
            for ob, vb in cols[i + 1 :]:
                rule = _shared_rule(oa, ob)
                if rule is None or _expr_key(va) is None or _expr_key(va) != _expr_key(vb):
                    continue
                if rule.of_reads:
                    w, r = (oa, ob) if oa.writes else (ob, oa)
                    what = f"the {rule.what} operand {w.name} and the input operand {r.name}"
                else:
                    what = f"the {rule.what} operands {oa.name} and {ob.name}"
                raise self.err(f"{op.mnemonic}: {what} both name column {_expr_text(va)}; {rule.why}", vb.loc)

    def _opcode(self, ins: ast.Instr, site: tuple[Loc, ...]) -> Opcode:
        op = OPCODES.get(ins.mnemonic)
        if op is None:
            raise self.err(f"unknown instruction '{ins.mnemonic}'{self._suggest(ins.mnemonic, OPCODES)}", ins.loc, site)
        n = len(op.operands)
        got = len(ins.operands)
        if (got != n and not op.variadic) or (op.variadic and got < n):
            need = f"at least {n}" if op.variadic else str(n)
            names = ", ".join(o.name for o in op.operands)
            raise self.err(f"'{op.mnemonic}' takes {need} operands ({names}), got {got}", ins.loc, site)
        if op.mnemonic != "call":
            seen: set[str] = set()
            for a in ins.attrs:
                if a.name not in op.attr_map:
                    allowed = ", ".join(op.attr_map) or "none"
                    raise self.err(f"'{op.mnemonic}' has no attribute '{a.name}' (allowed: {allowed})", a.loc, site)
                if a.name in seen:
                    raise self.err(f"attribute '{a.name}' given twice", a.loc, site)
                seen.add(a.name)
            for spec in op.attrs:
                if spec.required and spec.name not in seen:
                    raise self.err(f"'{op.mnemonic}' needs the attribute {spec.name}=", ins.loc, site)
        if not op.on_arrays and ins.arrays is not None:
            raise self.err(f"'{op.mnemonic}' runs in the CMOS unit and takes no array set", ins.arrays.loc, site)
        return op

    def _work(self, nodes: tuple[Node, ...]) -> tuple[int, int]:
        """(instructions and loop iterations executed, row operations per sample) of `nodes`."""
        instructions = row_ops = 0
        rows, cost = self.spec.rows, self.cmos_cost
        for n in nodes:
            if isinstance(n, Loop):
                i, r = self._work(n.body)
                instructions += n.count * (i + 1)
                row_ops += n.count * r
                continue
            instructions += 1
            a = n.arrays
            if a is not None:
                r01 = n.rows
                row_ops += (a[1] - a[0]) * (r01[1] - r01[0] if r01 is not None else rows)
            else:
                row_ops += cost.get(id(n), 1)
        return instructions, row_ops

    def _walk(self, body: tuple[ast.Stmt, ...], env: Env) -> tuple[Node, ...]:
        out: list[Node] = []
        for s in body:
            if isinstance(s, ast.Repeat):
                if s.var in env.loops or s.var in env.params:
                    raise self.err(f"loop variable '{s.var}' shadows another name", s.loc, env.site)
                check_nesting(env, s.loc, self.err)
                inner = Env(env.params, {**env.loops, s.var: s.count}, env.arrays, env.rows, env.site, env.micro_stack)
                out.append(Loop(s.var, s.count, self._walk(s.body, inner), s.loc))
            elif isinstance(s, ast.Instr):
                plan = self._instr_plan(s)
                bop = self._fast(plan, s, env) if plan is not None else None
                if bop is not None:
                    out.append(bop)
                else:
                    out.extend(self._instr(s, env))
        return tuple(out)

    def _instr(self, ins: ast.Instr, env: Env) -> list[Node]:
        op = self._opcode(ins, env.site)
        in_micro = bool(env.micro_stack)
        arrays = env.arrays
        if op.on_arrays:
            if in_micro:
                if ins.arrays is not None:
                    raise self.err("instructions inside a micro-program take no array set", ins.arrays.loc, env.site)
            else:
                if ins.arrays is None:
                    raise self.err(f"'{op.mnemonic}' needs an array set, e.g. {op.mnemonic} @0:4 ...", ins.loc)
                a = ins.arrays
                if a.hi > self.spec.arrays:
                    raise self.err(f"array {a.hi - 1} outside the chip (arrays={self.spec.arrays})", a.loc)
                arrays = (a.lo, a.hi)
        rows = env.rows
        rows_v = ins.attr("rows")
        if rows_v is not None and op.on_arrays:
            if not isinstance(rows_v, ast.Range):
                raise self.err("rows must be a range lo:hi", rows_v.loc, env.site)
            if rows_v.hi > self.spec.rows:
                raise self.err(f"row {rows_v.hi - 1} outside the array (rows={self.spec.rows})", rows_v.loc, env.site)
            rows = (rows_v.lo, rows_v.hi)
        if op.mnemonic == "call":
            return self._call(ins, env, arrays, rows)
        operands: list[Any] = []
        for spec, v in zip(
            op.operands + (op.operands[-1],) * (len(ins.operands) - len(op.operands)), ins.operands, strict=False
        ):
            operands.append(self._operand(spec.kind, v, env))
        attrs = {a.name: self._attr(op, a, env) for a in ins.attrs if a.name != "rows"}
        bop = BoundOp(
            op,
            arrays if op.on_arrays else None,
            rows if op.on_arrays else None,
            tuple(operands),
            attrs,
            ins.loc,
            env.site,
            self._line_text(ins.loc),
        )
        self._dataflow(bop, ins, env)
        return [bop]

    # ----------------------------------------------------------- the fast path
    # `_walk` and `_call` take a fast path where they can: an instruction's `_Plan` (what no binding
    # changes, worked out once per instruction) and a flat micro-program body's `_BodyPlan` (its plans,
    # with the expressions its operands name each resolved once per call).  A fast path does exactly the
    # checks `_instr` and `_dataflow` do and builds the same instructions; where a check fails it gives up
    # before changing any state, and the slow path does the instruction (or the call) again and raises
    # the error it always raised, at the same place.

    def _plan(self, ins: ast.Instr) -> _Plan | None:
        """The fast path of `ins`; None for calls, CMOS and tensor operands, data constants, parameters in
        attributes, and instructions that are wrong under every binding (the slow path reports them)."""
        op = OPCODES.get(ins.mnemonic)
        if op is None or not op.on_arrays or op.unit is Unit.CONTROL:
            return None
        try:
            self._opcode(ins, ())
        except UserError:
            return None
        a = ins.arrays
        rows_v = ins.attr("rows")
        rows = None
        if rows_v is not None:
            if not isinstance(rows_v, ast.Range) or rows_v.hi > self.spec.rows:
                return None
            rows = (rows_v.lo, rows_v.hi)
        specs = op.operands + (op.operands[-1],) * (len(ins.operands) - len(op.operands))
        resolve = self._plan_operands(specs, ins.operands) if len(specs) == len(ins.operands) else None
        attrs = self._plan_attrs(op, ins) if resolve is not None else None
        flow = _plan_flow(specs, resolve, attrs) if resolve is not None and attrs is not None else None
        if flow is None or attrs is None or resolve is None:
            return None
        return _Plan(
            op,
            a is not None,
            (a.lo, a.hi) if a is not None and a.hi <= self.spec.arrays else None,
            rows,
            resolve,
            attrs,
            any(isinstance(x, list) for x in attrs.values()),
            *flow,
            self._line_text(ins.loc),
        )

    def _plan_operands(self, specs: tuple[Operand, ...], values: tuple[ast.Value, ...]) -> tuple[_Slot, ...] | None:
        """How each operand resolves (`_Slot`): literals checked now, parameters at each call (`_resolve`)."""
        out: list[_Slot] = []
        for o, v in zip(specs, values, strict=True):
            k = o.kind
            code = _CODES.get(k)
            if code is None:
                return None
            if isinstance(v, ast.Expr):
                out.append((None, v.name, v.offset, code))
            elif k is Kind.COL and isinstance(v, ast.Col):
                if not 0 <= v.index < self.spec.cols:
                    return None
                out.append((v.index, None, 0, code))
            elif k is not Kind.COL and k is not Kind.INT and isinstance(v, ast.AccRef):
                try:
                    out.append((self._acc(v, Env({}, {}, None, None), k is Kind.ACCS), None, 0, code))
                except UserError:
                    return None
            elif k is Kind.INT and isinstance(v, ast.Num) and isinstance(v.value, int):
                out.append((int(v.value), None, 0, code))
            else:
                return None
        return tuple(out)

    def _plan_attrs(self, op: Opcode, ins: ast.Instr) -> dict[str, Any] | None:
        """The attributes but rows, resolved, when no binding changes them and their bounds hold."""
        attrs: dict[str, Any] = {}
        amap = op.attr_map
        for at in ins.attrs:
            if at.name == "rows":
                continue
            v = at.value
            if isinstance(v, ast.ConstRef) or (isinstance(v, ast.Expr) and amap[at.name].kind is not AKind.DTYPE):
                return None
            try:
                attrs[at.name] = self._attr(op, at, Env({}, {}, None, None))
            except UserError:
                return None
        for spec in op.attrs:
            if spec.bounds is not None and spec.name in attrs and not spec.bounds.holds(attrs[spec.name]):
                return None
        return attrs

    def _resolve(self, slots: tuple[_Slot, ...], params: dict[str, tuple[str, int | tuple[int, int]]]) -> list | None:
        """The values of `slots` under a call's parameters, checked as `_col`, `_acc` and `_int` check them."""
        vals: list[Any] = []
        spec = self.spec
        for lit, name, off, code in slots:
            if name is None:
                vals.append(lit)
                continue
            b = params.get(name)
            if b is None or b[0] != _KINDS[code]:
                return None
            x = int(b[1]) + off  # type: ignore[arg-type]
            if code == _COL:
                if not 0 <= x < spec.cols:
                    return None
            elif code != _INT:
                if x < 0 or x + 1 > spec.accs:
                    return None
                if code == _ACCS:
                    vals.append((x, x + 1))
                    continue
            vals.append(x)
        return vals

    def _was_written(self, c: int, lo: int, hi: int) -> bool:
        """Whether column c of arrays lo:hi is written (as `_read_cols` checks it), remembered once it is."""
        if (c, lo, hi) in self._full:
            return True
        if c >= self.spec.cols:
            return False
        col = self.written.column(c)
        if col is None or not col[lo:hi].all():
            return False
        self._full.add((c, lo, hi))
        return True

    def _mark_written(self, c0: int, w: int, lo: int, hi: int) -> None:
        """`_write_cols` of columns c0 .. c0+w-1 (inside the array: the caller checked)."""
        if w == 1:
            if (c0, lo, hi) not in self._full:
                self.written.mark(c0, c0 + 1, lo, hi)
                self._full.add((c0, lo, hi))
        else:
            self.written.mark(c0, c0 + w, lo, hi)

    def _fast(self, plan: _Plan, ins: ast.Instr, env: Env) -> BoundOp | None:
        """`_instr(ins, env)` by its plan, or None (nothing changed) where a check fails."""
        if env.micro_stack:
            arrays = None if plan.has_arrays else env.arrays
        else:
            arrays = plan.arrays
        vals = self._resolve(plan.resolve, env.params) if arrays is not None else None
        if vals is None or arrays is None or not _flow_holds(plan, vals, self.spec.cols):
            return None
        lo, hi = arrays
        for pos, w in plan.reads:
            c0 = vals[pos]
            for c in range(c0, c0 + w):
                if not self._was_written(c, lo, hi):
                    return None
        for pos, w, _ in plan.writes:
            self._mark_written(vals[pos], w, lo, hi)
        attrs = plan.attrs
        return _bound_op(
            plan.op,
            arrays,
            plan.rows if plan.rows is not None else env.rows,
            tuple(vals),
            _copy_attrs(attrs) if plan.lists else dict(attrs),
            ins.loc,
            env.site,
            plan.text,
        )

    def _body_plan(self, m: ast.Micro) -> _BodyPlan | None:
        """The fast path of a call of `m`: its body flat (no loops, no calls) and every instruction planned."""
        if m.name in self._bodies:
            return self._bodies[m.name]
        plans: list[_Plan] = []
        for s in m.body:
            plan = self._instr_plan(s) if isinstance(s, ast.Instr) else None
            if plan is None or plan.has_arrays:
                self._bodies[m.name] = None
                return None
            plans.append(plan)
        bp = self._bodies[m.name] = _body_plan(plans, [s.loc for s in m.body if isinstance(s, ast.Instr)])
        return bp

    def _instr_plan(self, ins: ast.Instr) -> _Plan | None:
        """`_plan(ins)`, once per instruction."""
        key = id(ins)
        if key in self._plans:
            return self._plans[key]
        plan = self._plans[key] = self._plan(ins)
        return plan

    def _fast_call(self, bp: _BodyPlan, env: Env) -> list[Node] | None:
        """The instructions of a call walked under `env` by the body's plan, or None (nothing changed)."""
        vals = self._resolve(bp.slots, env.params)
        if vals is None or env.arrays is None:
            return None
        cols = self.spec.cols
        for k, bounds in bp.values:
            if not bounds.holds(vals[k]):
                return None
        for ka, kb in bp.distinct:
            if vals[ka] == vals[kb]:
                return None
        for kw, w, kr, rw in bp.apart:
            if max(vals[kw], vals[kr]) < min(vals[kw] + w, vals[kr] + rw):
                return None
        for k, w in bp.written:
            if vals[k] + w > cols:
                return None
        lo, hi = env.arrays
        for k, w, before in bp.reads:
            c0 = vals[k]
            for c in range(c0, c0 + w):
                if not any(vals[kb] <= c < vals[kb] + wb for kb, wb in before) and not self._was_written(c, lo, hi):
                    return None
        for k, w in bp.written:
            self._mark_written(vals[k], w, lo, hi)
        arrays, rows, site = env.arrays, env.rows, env.site
        return [
            _bound_op(
                op,
                arrays,
                r if r is not None else rows,
                get(vals),
                _copy_attrs(attrs) if lists else dict(attrs),
                loc,
                site,
                text,
            )
            for op, get, r, attrs, lists, loc, text in bp.instrs
        ]

    def _line_text(self, loc: Loc | None) -> str:
        if loc is None:
            return ""
        if self._lines is None:
            self._lines = self.src.splitlines()
        lines = self._lines
        return lines[loc.line - 1].strip() if 0 < loc.line <= len(lines) else ""

    def _operand(self, kind: Kind, v: ast.Value, env: Env) -> Any:
        if kind is Kind.COL:
            return self._col(v, env)
        if kind is Kind.ACC:
            return self._acc(v, env, False)
        if kind is Kind.ACCS:
            return self._acc(v, env, True)
        if kind is Kind.INT:
            return self._int(v, env, "an integer")
        if kind is Kind.TENSOR:
            return self._tref(v, env)
        if kind is Kind.SOURCE:
            if isinstance(v, ast.ConstRef):
                return self._const(v, env)
            return self._tref(v, env)
        raise self.err(f"unexpected operand {_value_desc(v)}", v.loc, env.site)

    def _call(
        self, ins: ast.Instr, env: Env, arrays: tuple[int, int] | None, rows: tuple[int, int] | None
    ) -> list[Node]:
        """A call, inlined: its micro-program's body walked with the arguments bound (cramc.isa.link)."""
        m, inner = bind_call(ins, env, self.micros, arrays, rows, self._argument, self.err)
        bp = self._body_plan(m)
        got = self._fast_call(bp, inner) if bp is not None else None
        return got if got is not None else list(self._walk(m.body, inner))

    def _argument(self, q: ast.Param, v: ast.Value, env: Env) -> int:
        """The value an argument binds to a micro-program parameter, checked like an operand of its kind."""
        if q.kind == "col":
            return self._col(v, env)
        if q.kind == "acc":
            return self._acc(v, env, False)  # type: ignore[return-value]
        return self._int(v, env, f"an integer for {q.name}")

    # --------------------------------------------------------------- dataflow
    def _read_cols(self, bop: BoundOp, cols: range, ins: ast.Instr, env: Env, pos: int) -> None:
        lo, hi = bop.arrays  # type: ignore[misc]
        for c in cols:
            if c >= self.spec.cols:
                raise self.err(f"column {c} outside the array (cols={self.spec.cols})", ins.loc, env.site)
            if (c, lo, hi) in self._full:
                continue
            col = self.written.column(c)
            w = col[lo:hi] if col is not None else None
            if w is None or not w.all():
                bad = lo + (int(np.argmin(w)) if w is not None else 0)
                loc = ins.operands[pos].loc if pos < len(ins.operands) else ins.loc
                raise self.err(f"column c{c} of array {bad} is read before anything is written to it", loc, env.site)

    def _write_cols(self, bop: BoundOp, cols: range, ins: ast.Instr, env: Env) -> None:
        if cols.stop > self.spec.cols:
            raise self.err(
                f"columns up to c{cols.stop - 1} needed, outside the array (cols={self.spec.cols})", ins.loc, env.site
            )
        lo, hi = bop.arrays  # type: ignore[misc]
        self._mark_written(cols.start, len(cols), lo, hi)

    def _shape_of(self, t: TRef, ins: ast.Instr, env: Env, pos: int) -> tuple[tuple[int, ...], bool]:
        got = self.tensors.get(t.name)
        loc = ins.operands[pos].loc
        if got is None:
            raise self.err(
                f"tensor %{t.name} is used before it is defined{self._suggest(t.name, self.tensors)}", loc, env.site
            )
        shape, is_int = got
        if t.index is None:
            return shape, is_int
        bound = env.loops[t.index] if isinstance(t.index, str) else t.index + 1
        if not shape or bound > shape[0]:
            raise self.err(f"index {t.index} of %{t.name} runs past its first axis ({list(shape)})", loc, env.site)
        return shape[1:], is_int

    def _define(self, t: TRef, shape: tuple[int, ...], is_int: bool, ins: ast.Instr, env: Env, pos: int) -> None:
        loc = ins.operands[pos].loc
        if t.index is None:
            self.tensors[t.name] = (shape, is_int)
            return
        lead = env.loops[t.index] if isinstance(t.index, str) else None
        cur = self.tensors.get(t.name)
        if cur is None:
            if lead is None:
                raise self.err(f"%{t.name}[{t.index}] writes into a tensor that does not exist yet", loc, env.site)
            self.tensors[t.name] = ((lead, *shape), is_int)
            return
        cshape, cint = cur
        bound = lead if lead is not None else int(t.index) + 1
        if not cshape or cshape[1:] != shape or cint != is_int or bound > cshape[0]:
            raise self.err(f"%{t.name}[{t.index}] does not fit %{t.name} of shape {list(cshape)}", loc, env.site)

    def _dataflow(self, bop: BoundOp, ins: ast.Instr, env: Env) -> None:
        """Check what the instruction reads and record what it writes, as its opcode declares per operand.

        One loop for every opcode (cramc.isa.opcodes: `Access`, `Span`, `Shape`,
        `Bounds`, `Distinct`): the attributes' bounds first, then the operands
        it reads (and the integers it takes), in operand order, then the ones it
        writes.  Reading first lets an instruction write what it reads.
        """
        op = bop.op
        for a in op.attrs:
            if a.bounds is not None and a.name in bop.attrs and not a.bounds.holds(bop.attrs[a.name]):
                raise self.err(a.bounds.error(a.name), ins.loc, env.site)
        specs = op.operands + (op.operands[-1],) * (len(bop.operands) - len(op.operands))
        flow = _Flow()
        for pos, (spec, v) in enumerate(zip(specs, bop.operands, strict=True)):
            if spec.access is Access.VALUE:
                if spec.bounds is not None and not spec.bounds.holds(v):
                    raise self.err(spec.bounds.error(spec.name), ins.operands[pos].loc, env.site)
            elif spec.reads:
                self._read(bop, spec, v, pos, flow, ins, env)
        for pos, (spec, v) in enumerate(zip(specs, bop.operands, strict=True)):
            if spec.writes:
                self._write(bop, spec, v, pos, flow, ins, env)

    def _columns(self, bop: BoundOp, spec: Operand, c: int, flow: _Flow) -> range:
        """The columns a column operand covers: one, or its `Span` of bits x fields."""
        span = spec.span
        if span is None:
            return range(c, c + 1)
        bits = bop.attrs[span.bits]
        fields = max(bop.attrs.get(span.fields, 0), 1) if span.fields else flow.fields[span.fields_of]
        return range(c, c + fields * bits)

    def _read(self, bop: BoundOp, spec: Operand, v: Any, pos: int, flow: _Flow, ins: ast.Instr, env: Env) -> None:
        if spec.kind is Kind.COL:
            cols = self._columns(bop, spec, v, flow)
            self._read_cols(bop, cols, ins, env, pos)
            if spec.distinct is not None:
                same = flow.distinct.setdefault(spec.distinct, {})
                if v in same:
                    # one column given twice: copies that are one column, two gate inputs that are one MTJ
                    raise self.err(
                        f"{bop.op.mnemonic}: the {spec.distinct.what} operands {same[v]} and {spec.name} both name "
                        f"column c{v}; {spec.distinct.why}",
                        ins.operands[pos].loc,
                        env.site,
                    )
                same[v] = spec.name
            flow.read_cols.append((spec.name, cols))
        elif spec.kind in (Kind.TENSOR, Kind.SOURCE):
            if isinstance(v, TRef):
                shape, is_int = self._shape_of(v, ins, env, pos)
                flow.sources.append((shape, is_int))
            else:  # a data constant
                shape, is_int = tuple(v.shape), bool(np.issubdtype(v.dtype, np.integer))
                flow.sources.append(v)
            if spec.shape is Shape.SLICED:
                flow.fields[spec.name] = self._sliced_source(bop, v, shape, is_int, pos, ins, env)
        # accumulator slots start at 0 (cramc.isa.opcodes.Access): nothing to check

    def _sliced_source(
        self, bop: BoundOp, v: Any, shape: tuple[int, ...], is_int: bool, pos: int, ins: ast.Instr, env: Env
    ) -> int:
        """Check a tensor the instruction bit-slices into columns; its fields (the third axis, or one)."""
        mn = bop.op.mnemonic
        loc = ins.operands[pos].loc
        if not is_int:
            if isinstance(v, TRef):
                raise self.err(
                    f"{mn} needs an integer tensor; %{v.name} holds floats (quantise it first)", loc, env.site
                )
            raise self.err(f"{mn} needs integer data", loc, env.site)
        span = _span(bop.op)
        n = bop.arrays[1] - bop.arrays[0]  # type: ignore[index]
        rep = bop.attrs.get(span.repeat, 1) if span.repeat else 1
        if rep < 1 or n % rep:
            raise self.err(f"{span.repeat}={rep} must divide the {n} arrays of the set", ins.loc, env.site)
        n //= rep
        nrows = (bop.rows[1] - bop.rows[0]) if bop.rows else self.spec.rows
        if len(shape) not in (2, 3) or shape[0] not in (1, n) or shape[1] != nrows:
            lead = f"{n} or 1" if n > 1 else "1"
            raise self.err(
                f"{mn} source has shape {list(shape)}; expected [{lead}, {nrows}] or [{lead}, {nrows}, F] "
                f"for {n} array{'s' if n > 1 else ''} and {nrows} active rows",
                loc,
                env.site,
            )
        return shape[2] if len(shape) == 3 else 1

    def _write(self, bop: BoundOp, spec: Operand, v: Any, pos: int, flow: _Flow, ins: ast.Instr, env: Env) -> None:
        if spec.kind is Kind.COL:
            cols = self._columns(bop, spec, v, flow)
            if spec.distinct is not None and spec.distinct.of_reads:
                for name, read in flow.read_cols:
                    both = range(max(cols.start, read.start), min(cols.stop, read.stop))
                    if both:  # a gate's output cell that is also one of its inputs
                        raise self.err(
                            f"{bop.op.mnemonic}: the {spec.distinct.what} operand {spec.name} and the input operand "
                            f"{name} both name column c{both.start}; {spec.distinct.why}",
                            ins.operands[pos].loc,
                            env.site,
                        )
            self._write_cols(bop, cols, ins, env)
        elif spec.kind is Kind.TENSOR:
            n = bop.arrays[1] - bop.arrays[0] if bop.arrays else 0
            if spec.shape is Shape.SLICED:
                span = _span(bop.op)
                fields = bop.attrs.get(span.fields, 0)
                nrows = (bop.rows[1] - bop.rows[0]) if bop.rows else self.spec.rows
                self._define(v, (n, nrows, fields) if fields else (n, nrows), True, ins, env, pos)
            elif spec.shape is Shape.SLOTS:
                lo, hi = next(o for s, o in zip(bop.op.operands, bop.operands, strict=False) if s.kind is Kind.ACCS)
                self._define(v, (n, hi - lo), True, ins, env, pos)
            elif spec.shape is Shape.SEMANTIC:
                res = self._evaluate(bop, flow.sources, ins, env)
                self._define(v, tuple(res.shape[1:]), bool(np.issubdtype(res.dtype, np.integer)), ins, env, pos)
            else:
                raise AssertionError(f"{bop.op.mnemonic}: a written tensor operand declares no shape")
        # accumulator slots start at 0 (cramc.isa.opcodes.Access): nothing to record

    def _evaluate(
        self, bop: BoundOp, sources: list[tuple[tuple[int, ...], bool] | np.ndarray], ins: ast.Instr, env: Env
    ) -> np.ndarray:
        """The result of a CMOS instruction on one zero sample of its sources: its shape and element type."""
        op = bop.op
        args = [
            s[None] if isinstance(s, np.ndarray) else np.zeros((1, *s[0]), dtype=np.int64 if s[1] else np.float32)
            for s in sources
        ]
        try:
            res = op.cmos(args, bop.attrs)  # type: ignore[misc]
        except (ValueError, IndexError, KeyError, TypeError) as e:
            raise self.err(f"{op.mnemonic}: {e}", ins.loc, env.site) from None
        except MemoryError:
            raise self.err(f"{op.mnemonic}: the result is too large to simulate", ins.loc, env.site) from None
        if res.size > MAX_TENSOR_ELEMENTS:
            raise self.err(
                f"{op.mnemonic}: the result has {res.size} elements per sample, more than the simulator "
                f"limit of {MAX_TENSOR_ELEMENTS}",
                ins.loc,
                env.site,
            )
        self.cmos_cost[id(bop)] = max(1, res.size + sum(a.size for a in args))
        return res


#: One operand's resolution (`Verifier._resolve`): (literal value, parameter, offset, how); parameter None:
#: the literal.
_Slot = tuple[Any, "str | None", int, int]
_COL, _ACC, _ACCS, _INT = range(4)
_CODES = {Kind.COL: _COL, Kind.ACC: _ACC, Kind.ACCS: _ACCS, Kind.INT: _INT}
_KINDS = {_COL: "col", _ACC: "acc", _ACCS: "acc", _INT: "int"}  # the parameter kind each resolution takes


@dataclass(frozen=True, eq=False)
class _Plan:
    """An instruction's fast path (`Verifier._plan`): what no binding changes."""

    op: Opcode
    has_arrays: bool  # names an array set (an error inside a micro-program)
    arrays: tuple[int, int] | None  # that set, where it is inside the chip
    rows: tuple[int, int] | None  # its rows= (None: the call's)
    resolve: tuple[_Slot, ...]  # per operand
    attrs: dict[str, Any]  # every attribute but rows, resolved
    lists: bool  # an attribute is a list (each instruction gets its own copy)
    values: tuple[tuple[int, Bounds], ...]  # (operand, bounds) of integer operands given by a parameter
    reads: tuple[tuple[int, int], ...]  # (operand, columns) of the columns read
    distinct: tuple[tuple[int, ...], ...]  # operands read that must name different columns
    writes: tuple[tuple[int, int, bool], ...]  # (operand, columns, distinct from the reads) written
    text: str


@dataclass(frozen=True, eq=False)
class _BodyPlan:
    """A flat micro-program body's fast path (`Verifier._body_plan`): its operands resolved as `slots`, one
    per distinct expression, and the checks of all its instructions on those slots, each once."""

    slots: tuple[_Slot, ...]
    values: tuple[tuple[int, Bounds], ...]  # (slot, bounds) of integer parameters
    distinct: tuple[tuple[int, int], ...]  # pairs of slots that must name different columns (or one column
    #: of the pair is written and the other one read: both one column wide)
    apart: tuple[tuple[int, int, int, int], ...]  # (written slot, columns, read slot, columns): no overlap
    written: tuple[tuple[int, int], ...]  # (slot, columns) written
    #: (slot, columns, what the body wrote before) of every read that an earlier one does not cover
    reads: tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]
    #: per instruction: opcode, its operands from the slot values, rows, attributes, lists in them, loc, text
    instrs: tuple[tuple[Opcode, Callable[[list], tuple], Any, dict[str, Any], bool, Any, str], ...]


def _getter(idx: list[int]) -> Callable[[list], tuple]:
    """vals -> tuple(vals[i] for i in idx)."""
    if len(idx) >= 2:
        return itemgetter(*idx)
    if idx:
        i = idx[0]
        return lambda vals: (vals[i],)
    return lambda vals: ()


def _body_plan(plans: list[_Plan], locs: list[Loc | None]) -> _BodyPlan:
    slot_of: dict[_Slot, int] = {}
    values: dict[tuple[int, Bounds], None] = {}  # dicts as ordered sets
    distinct: dict[tuple[int, int], None] = {}
    apart: dict[tuple[int, int, int, int], None] = {}
    written: dict[tuple[int, int], None] = {}
    seen: set[tuple[int, int]] = set()  # (slot, columns) read or written so far: a read of one is covered
    reads: list[tuple[int, int, tuple[tuple[int, int], ...]]] = []
    instrs = []
    for plan, loc in zip(plans, locs, strict=True):
        idx = [slot_of.setdefault(s, len(slot_of)) for s in plan.resolve]
        values.update(((idx[p], b), None) for p, b in plan.values)
        for g in plan.distinct:
            distinct.update(((idx[a], idx[b]), None) for i, a in enumerate(g) for b in g[i + 1 :])
        for pos, w, of_reads in plan.writes:
            for rp, rw in plan.reads if of_reads else ():
                if w == rw == 1:
                    distinct[idx[pos], idx[rp]] = None
                else:
                    apart[idx[pos], w, idx[rp], rw] = None
        for pos, w in plan.reads:
            if (idx[pos], w) not in seen:
                reads.append((idx[pos], w, tuple(written)))
                seen.add((idx[pos], w))
        for pos, w, _ in plan.writes:
            written[idx[pos], w] = None
            seen.add((idx[pos], w))
        instrs.append((plan.op, _getter(idx), plan.rows, plan.attrs, plan.lists, loc, plan.text))
    return _BodyPlan(
        tuple(slot_of), tuple(values), tuple(distinct), tuple(apart), tuple(written), tuple(reads), tuple(instrs)
    )


def _plan_flow(
    specs: tuple[Operand, ...], resolve: tuple[_Slot, ...], attrs: dict[str, Any]
) -> tuple[tuple, tuple, tuple, tuple] | None:
    """(values, reads, distinct, writes) of a `_Plan`: the dataflow `_dataflow` checks, by operand."""
    values: list[tuple[int, Bounds]] = []
    reads: list[tuple[int, int]] = []
    groups: dict[Distinct, list[int]] = {}
    writes: list[tuple[int, int, bool]] = []
    for pos, o in enumerate(specs):
        if o.access is Access.VALUE:
            if o.bounds is not None:
                lit, name, _, _ = resolve[pos]
                if name is not None:
                    values.append((pos, o.bounds))
                elif not o.bounds.holds(lit):
                    return None
        elif o.kind is Kind.COL:
            w = _width(o, attrs)
            if w is None:
                return None
            if o.reads:
                reads.append((pos, w))
                if o.distinct is not None:
                    groups.setdefault(o.distinct, []).append(pos)
            if o.writes:
                writes.append((pos, w, o.distinct is not None and o.distinct.of_reads))
    return tuple(values), tuple(reads), tuple(tuple(g) for g in groups.values() if len(g) > 1), tuple(writes)


def _flow_holds(plan: _Plan, vals: list, cols: int) -> bool:
    """The checks of `_dataflow` on an instruction's resolved operands that need no machine state."""
    for pos, bounds in plan.values:
        if not bounds.holds(vals[pos]):
            return False
    for group in plan.distinct:
        if len({vals[p] for p in group}) < len(group):
            return False
    for pos, w, of_reads in plan.writes:
        c0 = vals[pos]
        if of_reads:
            for rpos, rw in plan.reads:
                r0 = vals[rpos]
                if max(c0, r0) < min(c0 + w, r0 + rw):
                    return False
        if c0 + w > cols:
            return False
    return True


def _width(o: Operand, attrs: dict[str, Any]) -> int | None:
    """The columns a column operand covers when its span's fields do not come from a tensor (else None)."""
    span = o.span
    if span is None:
        return 1
    if not span.fields or span.bits not in attrs:
        return None
    return int(attrs[span.bits]) * max(attrs.get(span.fields, 0), 1)


def _copy_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, list) else v for k, v in attrs.items()}


_BOUND_FIELDS = ("op", "arrays", "rows", "operands", "attrs", "loc", "site", "text")
if (
    tuple(f.name for f in fields(BoundOp)) != _BOUND_FIELDS
    or hasattr(BoundOp, "__post_init__")
    or hasattr(BoundOp, "__slots__")
):
    raise AssertionError("BoundOp changed: update verifier._bound_op")
_new = object.__new__


def _bound_op(
    op: Opcode,
    arrays: tuple[int, int] | None,
    rows: tuple[int, int] | None,
    operands: tuple[Any, ...],
    attrs: dict[str, Any],
    loc: Loc | None,
    site: tuple[Loc, ...],
    text: str,
) -> BoundOp:
    """BoundOp(...) without the frozen dataclass's __init__ (a third of its cost): the same fields, set the
    same way (the check above holds it to BoundOp's fields)."""
    b = _new(BoundOp)
    b.__dict__.update(op=op, arrays=arrays, rows=rows, operands=operands, attrs=attrs, loc=loc, site=site, text=text)
    return b


class _Written:
    """Which arrays have each column written.

    Dense, [column, array], where the chip has at most DENSE_WRITTEN array-columns (a span of columns is
    marked in one step); else one array per column, allocated on its first write, so that a huge chip
    costs only what the program touches (a legal chip can have 2^32 array-columns).
    """

    def __init__(self, cols: int, arrays: int):
        self.arrays = arrays
        self.dense = np.zeros((cols, arrays), dtype=bool) if cols * arrays <= DENSE_WRITTEN else None
        self.touched = np.zeros(cols if self.dense is not None else 0, dtype=bool)  # dense: columns ever written
        self.sparse: dict[int, np.ndarray] = {}

    def column(self, c: int) -> np.ndarray | None:
        """The arrays with column c written; None if no instruction wrote c, on any arrays (not even none)."""
        if self.dense is not None:
            return self.dense[c] if self.touched[c] else None
        return self.sparse.get(c)

    def mark(self, c0: int, c1: int, lo: int, hi: int) -> None:
        """Columns c0 .. c1-1 of arrays lo:hi written."""
        if self.dense is not None:
            self.dense[c0:c1, lo:hi] = True
            self.touched[c0:c1] = True
            return
        for c in range(c0, c1):
            col = self.sparse.get(c)
            if col is None:
                col = self.sparse[c] = np.zeros(self.arrays, dtype=bool)
            col[lo:hi] = True


@dataclass
class _Flow:
    """What the reads of one instruction found, for its writes."""

    #: the tensors read, in operand order: (shape, integer) of a tensor, or a data constant itself
    sources: list[tuple[tuple[int, ...], bool] | np.ndarray] = field(default_factory=list)
    fields: dict[str, int] = field(default_factory=dict)  # SLICED source operand -> its fields
    distinct: dict[Distinct, dict[int, str]] = field(default_factory=dict)  # column -> the operand naming it
    read_cols: list[tuple[str, range]] = field(default_factory=list)  # (operand, the columns it reads)


def _shared_rule(a: Operand, b: Operand) -> Distinct | None:
    """The `Distinct` rule that keeps two column operands of one instruction apart, or None."""
    for x, y in ((a, b), (b, a)):
        rule = x.distinct
        if rule is not None and rule.of_reads and y.reads:
            return rule
    if a.distinct is not None and a.distinct == b.distinct and not a.distinct.of_reads:
        return a.distinct
    return None


def _expr_key(v: ast.Value) -> tuple[str, int] | int | None:
    """What a column operand is, as written: a literal column, a parameter plus offset, or None."""
    if isinstance(v, ast.Col):
        return v.index
    if isinstance(v, ast.Expr):
        return (v.name, v.offset)
    return None


def _expr_text(v: ast.Value) -> str:
    if isinstance(v, ast.Col):
        return f"c{v.index}"
    assert isinstance(v, ast.Expr)
    return v.name + (f"{v.offset:+d}" if v.offset else "")


def _span(op: Opcode) -> Span:
    """The column span of an instruction that moves a bit-sliced tensor (wr, rd)."""
    return next(o.span for o in op.operands if o.span is not None)


def verify(program: ast.Program) -> Linked:
    """Check a program and return its linked, executable form (raises UserError).

    The cyclic garbage collector is off while it links: linking allocates a few objects per instruction it
    links and leaves no cycles to collect, and the collector's passes over the growing heap cost about as
    much as the linking itself (SqueezeNet's 81 000 instructions: 0.75 s with it, 0.44 s without).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return Verifier(program).link()
    finally:
        if enabled:
            gc.enable()
