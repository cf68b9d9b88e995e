"""The bounds on what a program can ask for (docs/isa.md, Limits): each one is a located error, and the
static work estimate counts exactly what the simulator executes."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
from cramtest import example, link, link_file

from cramc.errors import Loc, UserError, excerpt
from cramc.isa import data as tdata
from cramc.isa import parser as isa_parser
from cramc.isa import verifier
from cramc.isa.parser import MAX_NESTING, parse
from cramc.isa.verifier import Loop, verify
from cramc.sim.interp import run

HEAD = ".machine arrays=1 rows=8 cols=4\n.input x : u8[1,8]\n.output y : i64[1,8]\n"


def _error(text: str) -> UserError:
    with pytest.raises(UserError) as e:
        verify(parse(text, "t.cram"))
    return e.value


def _nested(depth: int) -> str:
    """.main with `depth` nested repeat blocks around one gate (depth + 1 blocks in all)."""
    lines = [HEAD.rstrip("\n"), ".main {", "  wr @0 c0, %x bits=1"]
    lines += [f"  repeat i{k} 1 {{" for k in range(depth)]
    lines += ["  not @0 c1, c0"] + ["  }"] * depth + ["  rd @0 %y, c1 bits=1 signed=0", "}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ nesting
def test_nesting_up_to_the_limit_verifies() -> None:
    verify(parse(_nested(MAX_NESTING - 1)))  # .main plus 63 repeats: 64 blocks


@pytest.mark.parametrize("depth", [MAX_NESTING, 5000])
def test_deeper_nesting_is_a_located_error(depth: int) -> None:
    e = _error(_nested(depth))
    assert e.loc is not None and e.loc.line == 6 + MAX_NESTING - 1  # the 64th repeat (65th block)
    assert f"blocks nest more than {MAX_NESTING} deep" in e.message


def test_nesting_through_calls_is_bounded() -> None:
    """Micro-programs that call each other in a chain: each call level counts, as the loops inside do."""
    n = MAX_NESTING + 5
    micros = [f".micro m{k}(col d, col s) {{\n  call m{k + 1} d=d s=s\n}}" for k in range(n)]
    micros.append(f".micro m{n}(col d, col s) {{\n  not d, s\n}}")
    text = HEAD + "\n".join(micros) + "\n.main {\n  wr @0 c0, %x bits=1\n  call @0 m0 d=c1 s=c0\n}\n"
    e = _error(text)
    assert "nest more than 64 deep (the limit, counted through calls)" in e.message
    assert "in a micro-program called at line" in e.message


def test_calls_that_multiply_hit_the_linked_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each micro-program calls the next one twice: 2^20 gates from a text of 40 lines."""
    monkeypatch.setattr(verifier, "MAX_LINKED", 1000)
    n = 20
    micros = [f".micro m{k}(col d, col s) {{\n  call m{k + 1} d=d s=s\n  call m{k + 1} d=d s=s\n}}" for k in range(n)]
    micros.append(f".micro m{n}(col d, col s) {{\n  not d, s\n}}")
    text = HEAD + "\n".join(micros) + "\n.main {\n  wr @0 c0, %x bits=1\n  call @0 m0 d=c1 s=c0\n}\n"
    e = _error(text)
    assert "the program links to more than 1000 instructions" in e.message


# ------------------------------------------------------------------ data constants
def test_a_declared_size_over_the_data_limit_is_refused_before_decoding() -> None:
    n = tdata.MAX_DATA_BYTES + 1
    text = HEAD + f'.data $w : u8[{n}] = b64z"{base64.b64encode(zlib.compress(b"")).decode()}"\n'
    e = _error(text)
    assert e.loc == Loc("t.cram", 4, 7)
    assert e.message.startswith(f"data $w: {n} bytes as declared, more than the limit of 512 MiB")
    assert "more than the limit of 512 MiB" in e.message


def test_the_data_limit_counts_all_constants_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tdata, "MAX_DATA_BYTES", 3000)
    z = base64.b64encode(zlib.compress(bytes(1000))).decode()
    ok = HEAD + "".join(f'.data $w{k} : u8[1000] = b64z"{z}"\n' for k in range(3)) + ".main {\n  fill @0 c0, 1\n}\n"
    assert len(parse(ok).items) > 3  # 3000 bytes: exactly the limit
    bad = ok.replace(".main", f'.data $w3 : u8[1] = b64z"{base64.b64encode(zlib.compress(bytes(1))).decode()}"\n.main')
    e = _error(bad)
    assert e.message.startswith("data $w3: 1 bytes as declared bring the program's data constants to 3001 bytes")
    assert e.loc is not None and e.loc.line == 7


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (bytes(1001), "payload holds more than the 1000 bytes the type needs"),
        (bytes(999), "payload holds 999 bytes, the type needs 1000"),
    ],
)
def test_zlib_payloads_inflate_to_exactly_the_declared_size(payload: bytes, message: str) -> None:
    z = base64.b64encode(zlib.compress(payload)).decode()
    with pytest.raises(ValueError, match=message):
        tdata.decode("b64z", z, "u8", (1000,))
    truncated = base64.b64encode(zlib.compress(bytes(1000))[:-6]).decode()
    with pytest.raises(ValueError, match="truncated zlib payload"):
        tdata.decode("b64z", truncated, "u8", (1000,))


def test_inflating_in_chunks_gives_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tdata, "_CHUNK", 7)  # many steps, a partial last one
    arr = np.arange(-500, 500, dtype=np.int16)
    text = tdata.encode(arr, "i16", "b64z")
    got = tdata.decode("b64z", text[5:-1], "i16", (1000,))
    np.testing.assert_array_equal(got, arr)


def test_program_text_over_the_limit_is_refused_before_reading(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isa_parser, "MAX_SOURCE_BYTES", 10)
    p = tmp_path / "p.cram"
    p.write_text(HEAD, encoding="utf-8")
    with pytest.raises(UserError, match=f"p.cram is {len(HEAD)} bytes, more than the limit of 10"):
        isa_parser.parse_file(str(p))


@pytest.mark.parametrize(
    ("old", "new"),
    [("repeat i 2 {", "repeat i {n} {{"), ("not @0 c1, c0", "not @0 c{n}, c0"), ("arrays=1", "arrays={n}")],
)
def test_integers_beyond_pythons_digit_limit_are_located_errors(old: str, new: str) -> None:
    base = HEAD + ".main {\n  wr @0 c0, %x bits=1\n  repeat i 2 {\n    not @0 c1, c0\n  }\n}\n"
    e = _error(base.replace(old, new.format(n="1" + "0" * 5000)))
    assert "integer with more than" in e.message and e.loc is not None
    assert len(e.render()) < 400  # the 5000-digit line is shown as an excerpt


# ------------------------------------------------------------------ error excerpts
def test_a_long_line_is_shown_as_a_window_around_the_caret() -> None:
    line = ".data $w : u9[3] = [" + ", ".join(["1"] * 100000) + "]"
    e = _error(HEAD + line + "\n.main {\n  fill @0 c0, 1\n}\n")
    head, shown, caret = e.render().splitlines()
    assert (
        head
        == "t.cram:4:12: error: unknown element type 'u9' (expected one of i4, u4, i8, u8, i16, u16, i32, i64, f32)"
    )
    assert len(shown) < 2 + 100 + 6 and shown.endswith("...")
    assert shown[caret.index("^") : caret.index("^") + 2] == "u9"


@pytest.mark.parametrize("col", [0, 1, 49, 50, 51, 500, 998, 999])
def test_the_excerpt_keeps_the_caret_on_its_character(col: int) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    shown, at = excerpt(text, col)
    assert shown[at] == text[col]
    assert len(shown) <= 106
    assert shown.startswith("...") == (col > 50)


def test_an_absurdly_long_token_is_clipped_in_the_message() -> None:
    e = _error(HEAD + ".main {\n  fill @0 c0, 1 " + "z" * 100000 + "\n}\n")
    assert len(e.render()) < 600


# ------------------------------------------------------------------ work
WORK_PROG = """
.machine arrays=4 rows=16 cols=8
.input x : u8[4,16]
.output y : f32[2,16]
.micro inv(col d, col s) {
  not d, s
  copy d+1, d
}
.main {
  wr @0:4 c0, %x bits=1
  repeat i 3 {
    repeat j 5 {
      call @0:2 inv d=c1 s=c0 rows=0:8
    }
    not @1:4 c2, c0
  }
  rd @0:2 %q, c1 bits=1 signed=0
  dequant %f, %q scale=0.5
  relu %y, %f
}
"""


def test_work_counts_what_the_simulator_executes() -> None:
    """Instructions, loop iterations and row operations of Linked.work, against an executed trace."""
    linked = link(WORK_PROG)
    executed: list[int] = []

    def trace(b, m) -> None:  # noqa: ANN001 - BoundOp, Machine
        if b.arrays is not None:
            r0, r1 = b.rows if b.rows is not None else (0, 16)
            executed.append((b.arrays[1] - b.arrays[0]) * (r1 - r0))
        else:  # CMOS: the elements it reads and writes, per sample (2 x 16 in, 2 x 16 out)
            executed.append(64)

    run(linked, {"x": np.zeros((1, 4, 16), np.uint8)}, trace=trace)
    loops = sum(n.count for n in linked.main if isinstance(n, Loop))
    loops += sum(3 * 5 for n in linked.main if isinstance(n, Loop))  # the inner loop's iterations
    assert linked.work.instructions == len(executed) + loops == 1 + 3 * (5 * 2 + 1) + 3 + 18
    assert linked.work.row_ops == sum(executed) == 4 * 16 + 3 * (5 * 2 * 2 * 8 + 3 * 16) + 2 * 16 + 64 + 64


def test_the_estimate_charges_dispatches_per_batch_and_rows_per_sample() -> None:
    w = link(WORK_PROG).work
    d = verifier.DISPATCH_COST
    assert w.estimate(1, 1) == w.row_ops + d * w.instructions
    assert w.estimate(10, 4) == 10 * w.row_ops + 3 * d * w.instructions


def test_loop_iterations_cost_even_with_an_empty_body() -> None:
    linked = link(HEAD + ".main {\n  wr @0 c0, %x bits=1\n  repeat i 1000000000000000000000000000000 {\n  }\n"
                  "  rd @0 %y, c0 bits=1 signed=0\n}\n")  # fmt: skip
    assert linked.work.instructions == 10**30 + 2
    assert linked.work.estimate(1, 1) > verifier.DEFAULT_MAX_WORK


def test_shipped_examples_are_far_below_the_default_work_limit() -> None:
    for name in ("full_adder", "ripple_adder8", "mul8x8", "dot256", "tmr_and"):
        w = link_file(example(f"{name}.cram")).work
        assert 0 < w.estimate(4, 4) < verifier.DEFAULT_MAX_WORK / 1000, name


def test_a_billion_instructions_exceed_the_default() -> None:
    linked = link(HEAD + ".main {\n  wr @0 c0, %x bits=1\n  repeat i 1000000000 {\n    not @0 c1, c0\n  }\n"
                  "  rd @0 %y, c1 bits=1 signed=0\n}\n")  # fmt: skip
    assert linked.work.estimate(1, 1) > verifier.DEFAULT_MAX_WORK
