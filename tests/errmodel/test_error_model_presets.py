"""The shipped error-model presets (isa/error_models/*.toml) load, by name and by path, and say where
their numbers come from."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import pytest
from cramtest import REPO, example

from cramc.errmodel import GATE_NAMES, load_error_model, load_preset, preset_names
from cramc.errmodel.device import gate_error_table
from cramc.errors import UserError

PRESET_FILES = sorted((REPO / "isa" / "error_models").glob("*.toml"))
#: The device presets: every gate's by_ones table derived from their [device] section.
DEVICE_PRESETS = ("early", "near_term", "projected")
#: The class each output-conditioned (_flat) preset claims: every gate rate lies in [lo, hi].
CLASSES = {"early_flat": (1e-2, 1e-1), "near_term_flat": (1e-4, 1e-2), "projected_flat": (1e-8, 1e-6)}


def test_the_presets_are_the_shipped_files() -> None:
    assert {*DEVICE_PRESETS, *CLASSES} <= set(preset_names())
    assert sorted(p.stem for p in PRESET_FILES) == preset_names()
    shipped = importlib.resources.files("cramc.lang").joinpath("error_models")
    assert sorted(e.name for e in shipped.iterdir() if e.name.endswith(".toml")) == [p.name for p in PRESET_FILES]


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_every_preset_loads(path: Path) -> None:
    by_name = load_error_model(path.stem)
    by_path = load_error_model(str(path))
    assert by_name == by_path == load_preset(path.stem)
    assert not by_name.fault_free
    assert set(by_name.gates) == set(GATE_NAMES)  # every gate has a rate
    if path.stem in DEVICE_PRESETS:
        assert by_name.device is not None
        for g in GATE_NAMES:  # derived from the device, none overridden
            assert by_name.gate(g).by_ones == gate_error_table(g, by_name.device), (path.stem, g)
        flat = load_preset(f"{path.stem}_flat")  # the same write, read and tree rates as before
        assert (flat.write, flat.read, flat.tree) == (by_name.write, by_name.read, by_name.tree)
        return
    lo, hi = CLASSES[path.stem]
    for g in GATE_NAMES:
        r = by_name.gate(g)
        assert r.by_ones is None and lo <= r.p01 <= hi and lo <= r.p10 <= hi, (path.stem, g, r)


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_every_number_says_where_it_comes_from(path: Path) -> None:
    """Each rate line sits under a comment that cites a source ([X]) or says ASSUMPTION."""
    lines = path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(lines)
    assert re.search(r'^source = """', text, re.M), "a preset lists its sources"
    for i, line in enumerate(lines):
        if re.match(r'^\s*(default|p|p01|p10|tree|[a-z0-9_]+)\s*=\s*([0-9.eE+-]+|"[a-z]+")\s*$', line):
            j = i - 1
            while j >= 0 and not lines[j].startswith("#"):
                j -= 1
            comment = lines[j] if j >= 0 else ""
            k = j
            while k > 0 and lines[k - 1].startswith("#"):  # the whole comment block above
                k -= 1
                comment = lines[k] + comment
            assert "ASSUMPTION" in comment or re.search(r"\[[A-Z][a-z]*\d\d\]", comment), (path.name, line)


def test_unknown_preset_names_the_presets() -> None:
    names = "early, early_flat, near_term, near_term_flat, projected, projected_flat"
    with pytest.raises(UserError, match=f"presets: {names}"):
        load_error_model("earliest")


def test_cli_runs_with_a_preset(cli) -> None:
    res = cli("run", str(example("full_adder.cram")), "--error-model", "near_term_flat")
    assert res.rc == 0, res.err
    assert "error model: near term" in res.out

