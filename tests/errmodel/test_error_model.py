"""The fault model as data (cramc/errmodel): TOML error models, their validation and its messages.

The presets have their own file (test_error_model_presets.py); the samplers that draw these rates are
tested in tests/sim/test_faults.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cramtest import example

from cramc.errmodel import GATE_NAMES, FaultModel, Rate, load_error_model, parse_error_model
from cramc.errors import UserError


# ---------------------------------------------------------------------------- TOML files
def test_load_error_model(tmp_path: Path) -> None:
    path = tmp_path / "dev.toml"
    path.write_text(
        'name = "device A"\n'
        "tree = 1e-9\n"
        "[gates]\n"
        "default = 1e-3\n"
        "maj5 = { p01 = 2e-3, p10 = 5e-4 }\n"
        "not = { p = 1e-4 }\n"
        "[write]\n"
        "p01 = 1e-5\n"
        "[read]\n"
        "p = 1e-6\n",
        encoding="utf-8",
    )
    m = load_error_model(str(path))
    assert m.name == "device A"
    assert set(m.gates) == set(GATE_NAMES)
    assert m.gate("and") == Rate(1e-3, 1e-3)
    assert m.gate("maj5") == Rate(2e-3, 5e-4)
    assert m.gate("not") == Rate(1e-4, 1e-4)
    assert m.write == Rate(1e-5, 0.0)
    assert m.read == Rate(1e-6, 1e-6)
    assert m.tree == 1e-9
    assert not m.fault_free
    assert load_error_model_text(tmp_path, "").fault_free


def load_error_model_text(tmp_path: Path, text: str) -> FaultModel:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    return load_error_model(str(path))


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[gates]\nand = 0.1\nor = \n", 3, "invalid TOML"),
        ("[gates\nand = 0.1\n", 1, "invalid TOML"),
        ('name = "x"\n\n[gates]\nand = 0.1\nand = 0.2\n', 5, "invalid TOML"),
    ],
)
def test_bad_toml_is_located(tmp_path: Path, text: str, line: int, message: str) -> None:
    with pytest.raises(UserError) as ei:
        load_error_model_text(tmp_path, text)
    e = ei.value
    assert message in e.message
    assert e.loc is not None and e.loc.line == line and e.loc.file.endswith("m.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gates]\nxor = 0.1\n", "gates.xor: not a gate"),
        ("[gates]\nand = 1.5\n", "a probability must be between 0 and 1"),
        ("[gates]\nand = -0.1\n", "a probability must be between 0 and 1"),
        ("[gates]\nand = { q = 0.1 }\n", "unknown key(s) q"),
        ('[gates]\nand = "high"\n', "must be a number or a table"),
        ("[gates]\nand = { p01 = true }\n", "gates.and.p01 must be a number"),
        ("[wires]\np = 0.1\n", "unknown section(s) wires"),
        ('tree = "x"\n', "tree must be a number"),
        ("gates = 3\n", "[gates] must be a table"),
    ],
)
def test_bad_error_model_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=None) as ei:
        load_error_model_text(tmp_path, text)
    assert message in ei.value.message


def test_error_model_from_dict_and_gate_error_override() -> None:
    m = parse_error_model({"write": {"p10": 0.1}, "gates": {"and": 0.2}})
    o = m.with_gate_error(0.01)
    assert all(o.gate(g) == Rate(0.01, 0.01) for g in GATE_NAMES)
    assert o.write == Rate(0.0, 0.1)  # --gate-error keeps the file's write and read rates


def test_cli_bad_error_model(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gates]\nand = \n", encoding="utf-8")
    res = cli("run", str(example("full_adder.cram")), "--error-model", str(bad))
    assert res.rc == 1
    assert "Traceback" not in res.err
    assert res.err.startswith(f"{bad}:2:")
    assert ": error: invalid TOML" in res.err.splitlines()[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[gates]\nxor = 0.1\n",
            "gates.xor: not a gate (gates are not, copy, and, nand, or, nor, maj3, min3, maj5, min5)",
        ),
        ("[gates]\nand = 1.5\n", "gates.and: a probability must be between 0 and 1, got 1.5"),
        ("[gates]\nmaj5 = nan\n", "gates.maj5: a probability must be between 0 and 1, got nan"),
        ("[gates]\ndefault = inf\n", "gates.default: a probability must be between 0 and 1, got inf"),
        ("[gates]\nand = { q = 0.1, r = 1 }\n", "gates.and: unknown key(s) q, r (use p, p01, p10, by_ones)"),
        ('[gates]\nand = "high"\n', "gates.and must be a number or a table with p, p01, p10, by_ones"),
        ("[read]\np10 = [1]\n", "read.p10 must be a number"),
        ("read = true\n", "read must be a number or a table with p, p01, p10"),
        ("[write]\np01 = 2\n", "write.p01: a probability must be between 0 and 1, got 2.0"),
        ("tree = 2\n", "tree: a probability must be between 0 and 1, got 2.0"),
        (
            "[wires]\n[gates]\nxor = 1\n",
            "unknown section(s) wires (expected gates, write, read, tree, device, defects)",
        ),
        (
            "[gates]\nxor = 1\n[write]\np = 2\n",
            "gates.xor: not a gate (gates are not, copy, and, nand, or, nor, maj3, min3, maj5, min5)",
        ),
    ],
)
def test_error_messages_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    """The whole message, as `cramc run --error-model` prints it (unchanged by the move out of cramc.sim)."""
    with pytest.raises(UserError) as ei:
        load_error_model_text(tmp_path, text)
    assert ei.value.message == f"{tmp_path / 'm.toml'}: {message}"
    assert ei.value.loc is None


def test_metadata_keys_and_rate_tables() -> None:
    m = parse_error_model(
        {
            "name": "n",
            "source": "s",
            "preset": "x",
            "gates": {"default": {"p": 0.1, "p10": 0.2}, "and": 0.3},
            "tree": {"p": 0.5},
        },
        "f.toml",
    )
    assert m.name == "n" and m.tree == 0.5
    assert m.gate("or") == Rate(0.1, 0.2) and m.gate("and") == Rate(0.3, 0.3)
    assert parse_error_model({}, "dir/dev.toml").name == "dev"  # unnamed: the file's stem
    assert parse_error_model({}).fault_free


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UserError) as ei:
        load_error_model(str(tmp_path / "absent.toml"))
    assert ei.value.message == (
        f"cannot read error model {tmp_path / 'absent.toml'}: No such file or directory "
        "(or a preset: early, early_flat, near_term, near_term_flat, projected, projected_flat)"
    )
    (tmp_path / "latin1.toml").write_bytes(b'name = "\xe9"\n')
    with pytest.raises(UserError, match=r"error model .*latin1.toml is not UTF-8 text"):
        load_error_model(str(tmp_path / "latin1.toml"))


def test_uniform_and_gate_error() -> None:
    u = FaultModel.uniform(1e-3)
    assert u.name == "uniform gate error 0.001"
    assert set(u.gates) == set(GATE_NAMES) and all(r == Rate(1e-3, 1e-3) for r in u.gates.values())
    assert u.write.zero and u.read.zero and u.tree == 0.0 and not u.fault_free
    assert FaultModel.uniform(0.0).fault_free
    assert FaultModel(name="m").with_gate_error(0.5).name == "m, gate error 0.5"
    for bad in (1.5, -1e-9, float("nan"), float("inf")):
        with pytest.raises(UserError, match=f"--gate-error: a probability must be between 0 and 1, got {bad}"):
            FaultModel.uniform(bad)
        with pytest.raises(UserError, match="--gate-error: a probability"):
            FaultModel().with_gate_error(bad)


def test_to_dict_is_what_report_json_records() -> None:
    m = FaultModel({"and": Rate(0.1, 0.2)}, write=Rate(0.0, 0.3), read=Rate(0.4, 0.4), tree=1e-9, name="x")
    assert m.to_dict() == {
        "name": "x",
        "gates": {"and": {"p01": 0.1, "p10": 0.2}},
        "write": {"p01": 0.0, "p10": 0.3},
        "read": {"p01": 0.4, "p10": 0.4},
        "tree": 1e-9,
    }
    assert m.gate("or") == Rate()  # a gate not listed is exact
