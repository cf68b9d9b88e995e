"""print(parse(x)) == x for every .cram file in the repository, and printer details.

The file list is globbed from the whole repository, so examples, golden files
and any program that appears later under models/ or elsewhere are covered
without editing this test.  A golden error case that does not parse must fail
with exactly its expected diagnostic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cramtest import GOLDEN_ERRORS, REPO, all_cram_files
from hypothesis import given, settings
from hypothesis import strategies as st

from cramc.errors import UserError
from cramc.isa import data as tdata
from cramc.isa.parser import parse
from cramc.isa.printer import print_program

FILES = all_cram_files()


def test_the_glob_finds_the_programs() -> None:
    names = {p.relative_to(REPO).as_posix() for p in FILES}
    for ex in ("full_adder", "ripple_adder8", "mul8x8", "dot256", "tmr_and"):
        assert f"isa/examples/{ex}.cram" in names
    assert any(n.startswith("tests/golden/errors/") for n in names)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_round_trip(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        prog = parse(text, path.name)
    except UserError as e:
        # only golden error cases may fail to parse, and only with their own diagnostic
        assert path.parent == GOLDEN_ERRORS, f"{path} does not parse: {e}"
        assert e.render().splitlines()[0] == path.with_suffix(".expected").read_text(encoding="utf-8").strip()
        return
    assert print_program(prog) == text


def test_printer_normalises_layout() -> None:
    messy = (
        ".machine   arrays=1 rows=8  cols=4\n"
        ".main {   ; the body\n"
        "        fill @0 c0,1 rows=0:4;set\n"
        "and @0:1 c1 ,c0,  c0\n"
        "\n"
        "   ; note\n"
        "}\n"
    )
    want = (
        ".machine arrays=1 rows=8 cols=4\n"
        ".main {  ; the body\n"
        "  fill @0 c0, 1 rows=0:4  ;set\n"
        "  and @0 c1, c0, c0\n"
        "\n"
        "  ; note\n"
        "}\n"
    )
    assert print_program(parse(messy)) == want
    assert print_program(parse(want)) == want


def test_printer_numbers_and_values() -> None:
    text = (
        ".machine arrays=1 rows=8 cols=4\n"
        ".input x : f32[1,4]\n"
        ".main {\n"
        "  quant %q, %x scale=0.25 zp=-3 dtype=i8\n"
        "  clip %c, %q min=-inf max=1e+20\n"
        "  pad %p, %c pads=[0, 1, 0, 2] value=0.5\n"
        "}\n"
    )
    assert print_program(parse(text)) == text


_INT_TYPES = ["i4", "u4", "i8", "u8", "i16", "u16", "i32", "i64"]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    dtype=st.sampled_from([*_INT_TYPES, "f32"]),
    n=st.integers(0, 90),
    enc=st.sampled_from(["list", "b64", "b64z"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_data_payload_round_trip(dtype: str, n: int, enc: str, seed: int) -> None:
    """Any constant prints and parses back to the same values, in every encoding."""
    rng = np.random.default_rng(seed)
    store = tdata.DTYPES[dtype]
    if dtype == "f32":
        arr = rng.standard_normal(n).astype(np.float32)
    else:
        lo, hi = tdata.NARROW.get(dtype, (np.iinfo(store).min, np.iinfo(store).max))
        arr = rng.integers(lo, hi, n, endpoint=True, dtype=np.int64).astype(store)
    text = (
        ".machine arrays=1 rows=8 cols=4\n"
        f".data $d : {dtype}[{n}] = {tdata.encode(arr, dtype, enc)}\n"
        ".main {\n"
        "  fill @0 c0, 1\n"
        "}\n"
    )
    prog = parse(text)
    got = prog.data["d"].values
    assert got.dtype == store
    np.testing.assert_array_equal(got, arr)
    assert print_program(prog) == text
