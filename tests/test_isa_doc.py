"""docs/isa.md is generated from the opcode table and must match it."""

from __future__ import annotations

from pathlib import Path

from cramtest import REPO

from cramc.isa import verifier
from cramc.isa.docgen import render_isa_reference, truth_table
from cramc.isa.opcodes import OPCODES, Unit

DOC = REPO / "docs" / "isa.md"


def test_docs_isa_md_is_up_to_date() -> None:
    assert DOC.is_file(), "docs/isa.md is missing: run `cramc isa-doc -o docs/isa.md`"
    assert DOC.read_text(encoding="utf-8") == render_isa_reference(), (
        "docs/isa.md differs from the opcode table: run `cramc isa-doc -o docs/isa.md`"
    )


def test_every_opcode_and_limit_is_documented() -> None:
    text = render_isa_reference()
    for op in OPCODES.values():
        assert f"| `{op.mnemonic}` |" in text, op.mnemonic
        for a in op.attrs:
            assert f"`{a.name}=`" in text
    for k in verifier.MACHINE_KEYS:
        assert f"| `{k}` |" in text
    assert str(verifier.MAX_ROWS) in text and str(verifier.DEFAULT_ACCS) in text
    assert "Each gate includes the preset write of its output cell" in text
    for section in (".machine", ".input", ".output", ".data", ".expect", ".micro", ".init", ".main", "repeat"):
        assert f"`{section}" in text, section


def test_truth_tables_follow_the_logic() -> None:
    assert truth_table(OPCODES["and"]) == "0001"
    assert truth_table(OPCODES["nor"]) == "1000"
    assert truth_table(OPCODES["maj3"]) == "00010111"
    maj5 = truth_table(OPCODES["maj5"])
    assert all(maj5[k] == str(int(bin(k).count("1") >= 3)) for k in range(32))
    for op in OPCODES.values():
        if op.unit is Unit.GATE:
            assert len(truth_table(op)) == 2 ** (len(op.operands) - 1)


def test_cli_isa_doc(cli, tmp_path: Path) -> None:
    out = tmp_path / "isa.md"
    res = cli("isa-doc", "-o", str(out))
    assert res.rc == 0
    assert out.read_text(encoding="utf-8") == render_isa_reference()
    res = cli("isa-doc")
    assert res.rc == 0 and res.out == render_isa_reference()
