"""The verifier's fast paths (an instruction's `_Plan`, a call's `_BodyPlan`) link and refuse exactly as the
slow path does: the same linked instructions, the same errors at the same lines and call sites.

A plan is worked out once per instruction or micro-program and reused for every call, whatever the call
binds; these tests make a plan that wrongly reused a result (a check passed under one binding taken for
another) visible as a different result or a missing error.
"""

from __future__ import annotations

import random
import textwrap
from typing import Any

import numpy as np
import pytest
from cramtest import all_cram_files

from cramc.errors import UserError
from cramc.isa import ast
from cramc.isa import verifier as vmod
from cramc.isa.linked import BoundOp, Linked, Loop
from cramc.isa.parser import parse, parse_file
from cramc.isa.verifier import Verifier, verify


def _canon(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, Loop):
        return ("loop", x.var, x.count, _canon(x.body), x.loc)
    if isinstance(x, BoundOp):
        return ("op", x.op, x.arrays, x.rows, _canon(x.operands), _canon(x.attrs), x.loc, x.site, x.text)
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(_canon(i) for i in x))
    if isinstance(x, dict):
        return ("dict", tuple((k, _canon(v)) for k, v in x.items()))
    return x


def _result(linked: Linked) -> Any:
    return _canon(
        (
            linked.init,
            linked.main,
            linked.tensor_shapes,
            linked.trace,
            repr((linked.inputs, linked.outputs)),
            linked.work,
        )
    )


def _outcome(program: ast.Program, slow: bool) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        if slow:  # every instruction and call by `_instr` and `_walk`, as before the fast paths
            mp.setattr(Verifier, "_plan", lambda self, ins: None)
            mp.setattr(Verifier, "_body_plan", lambda self, m: None)
        try:
            return _result(verify(program))
        except UserError as e:
            return ("error", str(e))


def _both(text: str | ast.Program) -> tuple[Any, Any]:
    program = parse(text, "<fast>") if isinstance(text, str) else text
    return _outcome(program, slow=False), _outcome(program, slow=True)


_MICRO = """\
.machine arrays=8 rows=64 cols=64 accs=8
.micro mac(col w, col x, col t, acc y, int s) {
  and t, w, x
  tadd y, t, s
  and t+1, w+1, x
  tsub y, t+1, 1
}
.main {
  fill @0:8 c0, 1
  fill @0:8 c1, 1
  fill @0:8 c2, 1
  fill @0:4 c3, 1
  fill @0:8 c4, 1
  call @0:4 mac w=c0 x=c2 t=c10 y=acc0 s=0
  CALL2
}
"""


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ("call @4:8 mac w=c0 x=c2 t=c10 y=acc0 s=0", None),  # the same binding on other arrays: fine
        ("call @0:4 mac w=c0 x=c2 t=c2 y=acc0 s=0", "<fast>:3:and: the output operand dst and the input operand in1"),
        (
            "call @0:4 mac w=c0 x=c0 t=c10 y=acc0 s=0",
            "<fast>:3:and: the input operands in0 and in1 both name column c0",
        ),
        (
            "call @0:4 mac w=c0 x=c1 t=c10 y=acc0 s=0",
            "<fast>:5:and: the input operands in0 and in1 both name column c1",
        ),
        ("call @0:4 mac w=c0 x=c2 t=c63 y=acc0 s=0", "<fast>:5:column 64 outside the array (cols=64)"),
        ("call @0:4 mac w=c0 x=c2 t=c10 y=acc7 s=0", None),
        ("call @0:4 mac w=c0 x=c2 t=c10 y=acc0 s=63", "<fast>:4:shift must be between 0 and 62"),
        ("call @0:8 mac w=c2 x=c3 t=c10 y=acc0 s=0", "<fast>:3:column c3 of array 4 is read before anything"),
        ("call @0:4 mac w=c4 x=c2 t=c10 y=acc0 s=0", "<fast>:5:column c5 of array 0 is read before anything"),
        ("call @0:4 mac w=c0 x=c2 t=c10 y=acc0 s=0 rows=0:65", "<fast>:15:row 64 outside the array (rows=64)"),
    ],
)
def test_second_call_with_other_bindings(second: str, message: str | None) -> None:
    """The first call passes; the second binds the same body otherwise, and fails (or passes) on its own."""
    text = _MICRO.replace("CALL2", second)
    fast, slow = _both(text)
    assert fast == slow
    if message is None:
        assert fast[0] != "error"
    else:
        assert fast[0] == "error"
        where, what = message.split(":", 2)[1:]
        assert fast[1].startswith(f"<fast>:{where}:")  # the line of the instruction (the call's, for rows=)
        assert what in fast[1]
        if "rows=" not in second:
            assert "(in a micro-program called at line 15)" in fast[1]  # the second call, not the first


def test_call_after_a_call_that_wrote_its_inputs() -> None:
    """What a call may read depends on what ran before it: the same call fails before and passes after."""
    body = """\
    .machine arrays=4 rows=64 cols=64 accs=8
    .micro cp(col a, col b) {
      copy b, a
    }
    .main {
      fill @0:4 c0, 1
      call @0:4 cp a=c1 b=c2
    }
    """
    fast, slow = _both(textwrap.dedent(body))
    assert fast == slow and fast[0] == "error" and "column c1 of array 0 is read before" in fast[1]
    ok = textwrap.dedent(body).replace("  call @0:4 cp a=c1", "  call @0:4 cp a=c0 b=c1\n  call @0:4 cp a=c1")
    fast, slow = _both(ok)
    assert fast == slow and fast[0] != "error"


def test_linked_instructions_are_their_own() -> None:
    """Each call links its own instructions, with its own attributes, however many calls share a plan."""
    text = _MICRO.replace("CALL2", "call @4:8 mac w=c0 x=c4 t=c20 y=acc3 s=2")
    linked = verify(parse(text, "<fast>"))
    ops = [n for n in linked.main if isinstance(n, BoundOp)]
    assert len({id(b) for b in ops}) == len(ops)
    assert len({id(b.attrs) for b in ops}) == len(ops)
    first, second = ops[5:9], ops[9:13]
    assert [b.operands for b in first] == [(10, 0, 2), (0, 10, 0), (11, 1, 2), (0, 11, 1)]
    assert [b.operands for b in second] == [(20, 0, 4), (3, 20, 2), (21, 1, 4), (3, 21, 1)]
    assert {b.arrays for b in second} == {(4, 8)}


def _random_program(seed: int) -> str:
    """A small program of micro-programs and calls, with errors at rate e (some bindings wrong)."""
    r = random.Random(seed)
    e = r.choice([0.0, 0.01, 0.05])
    bad = lambda: r.random() < e  # noqa: E731

    def col(params: list[str]) -> str:
        if params and r.random() < 0.85:
            off = r.choice([0, 0, 1, 3]) if not bad() else 61
            return r.choice(params) + (f"+{off}" if off else "")
        return f"c{r.randint(0, 15) if not bad() else 64}"

    def cols(n: int, params: list[str]) -> str:
        out: list[str] = []
        for _ in range(n):
            c = col(params)
            while c in out and not bad():
                c = col(params)
            out.append(c)
        return ", ".join(out)

    def instr(params: list[str], in_micro: bool) -> str:
        arr = "" if in_micro else f" @{r.randint(0, 3)}:{r.randint(4, 8 if not bad() else 9)}"
        rows = f" rows={r.randint(0, 8)}:{r.randint(9, 64 if not bad() else 65)}" if r.random() < 0.2 else ""
        k = r.random()
        if k < 0.5:
            g, n = r.choice([("not", 1), ("and", 2), ("nor", 2), ("maj3", 3), ("maj5", 5)])
            return f"{g}{arr} {cols(n + 1, params)}{rows}"
        if k < 0.65:
            return f"fill{arr} {col(params)}, {r.choice(['0', '1']) if not bad() else '2'}{rows}"
        if k < 0.85:
            acc = (
                f"y+{r.choice([0, 1]) if not bad() else 9}"
                if in_micro and r.random() < 0.7
                else f"acc{r.randint(0, 7)}"
            )
            shift = "s" if in_micro and r.random() < 0.4 else str(r.choice([0, 5, 62]) if not bad() else 63)
            return f"{r.choice(['tadd', 'tsub'])}{arr} {acc}, {col(params)}, {shift}{rows}"
        if k < 0.95:
            return f"tvadd{arr} acc1, {cols(3, params)}, 1{rows}"
        return f"aclr{arr} acc{r.randint(0, 3)}:{r.randint(4, 8 if not bad() else 9)}"

    lines = [".machine arrays=8 rows=64 cols=64 accs=8"]
    for m in range(r.randint(1, 3)):
        lines.append(f".micro m{m}(col a, col b, col t, acc y, int s) {{")
        lines += ["  " + instr(["a", "b", "t"], True) for _ in range(r.randint(1, 10))]
        lines.append("}")
    lines.append(".main {")
    lines += [f"  fill @0:8 c{c}, 1" for c in range(20 if not bad() else r.randint(0, 20))]
    for _ in range(r.randint(1, 12)):
        if r.random() < 0.7:
            lo = r.randint(0, 7)
            args = [f"a=c{r.randint(0, 2)}", f"b=c{r.randint(6, 8)}", f"t=c{r.randint(12, 16)}"]
            args = [a if not bad() else a.replace("=c", "=c1") for a in args]  # may overlap, or be unwritten
            args += [f"y=acc{r.randint(0, 7)}", f"s={r.choice([0, 1, 2]) if not bad() else 63}"]
            lines.append(f"  call @{lo}:{r.randint(lo + 1, 8)} m{r.randint(0, 2)} " + " ".join(args))
        else:
            lines.append("  " + instr([], False))
    lines.append("}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("dense", [True, False])
def test_random_programs_fast_equals_slow(dense: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast and slow paths agree on random calls of random bodies, valid or not, on both tables of written
    columns (`_Written`: dense on a small chip, per column on a huge one)."""
    if not dense:
        monkeypatch.setattr(vmod, "DENSE_WRITTEN", 0)
    kinds = {"ok": 0, "error": 0, "in a call": 0}
    for seed in range(300):
        text = _random_program(seed)
        fast, slow = _both(text)
        assert fast == slow, text
        kinds["error" if fast[0] == "error" else "ok"] += 1
        kinds["in a call"] += fast[0] == "error" and "in a micro-program called at" in fast[1]
    assert min(kinds.values()) >= 30, kinds  # the programs exercise both outcomes, and errors inside calls


def test_shipped_programs_fast_equals_slow() -> None:
    """Every .cram file in the repository links (or is refused) the same by both paths."""
    seen = 0
    for path in all_cram_files():
        if path.stat().st_size > 200_000:  # the compiled models: as the small ones, only slower
            continue
        try:
            program = parse_file(str(path))
        except UserError:
            continue
        fast, slow = _both(program)
        assert fast == slow, path
        seen += 1
    assert seen >= 20
