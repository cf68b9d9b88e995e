"""The one compile pipeline (cramc.compiler: passes, lower, build_program, compile_frontend).

- the pass list follows the options: error correction before tiling, the tiling passes of the
  lowering `--reduce` names, schedule last; unknown reductions and stop points are refused;
- `lower` leaves the frontend's IR as it was, so one frontend result compiles to the same text
  any number of times and equals `compile_model`'s;
- `stop_before="schedule"` (what `cramc sweep --mode statistical` evaluates) is the compiled IR
  before scheduling: tiled and allocated, not placed, in import order.
"""

from __future__ import annotations

import io

import pytest
from compilertest import DIGITS, load_npz

from cramc import compiler
from cramc.compiler import Options
from cramc.errors import InternalError, UserError
from cramc.frontend.pipeline import run_frontend
from cramc.ir.text import print_graph


def _names(opts: Options) -> list[str]:
    return [p.name for p in compiler.passes(opts)]


def test_the_pass_list_follows_the_options() -> None:
    assert _names(Options()) == ["conv-to-mvm", "tile-mvm", "allocate", "schedule"]
    assert _names(Options(reduce="cram")) == ["conv-to-mvm", "tile-cram-only", "schedule"]
    assert _names(Options(ecc="dup:sig>=4")) == ["conv-to-mvm", "insert-ecc", "tile-mvm", "allocate", "schedule"]
    with pytest.raises(UserError, match="--reduce adder: expected tree"):
        compiler.passes(Options(reduce="adder"))
    with pytest.raises(UserError, match="--ecc auto needs the fault rate"):
        compiler.passes(Options(ecc="auto"))
    with pytest.raises(InternalError, match="calibration data"):  # auto-ecc without a frontend result
        compiler.passes(Options(ecc="auto", gate_error=1e-3))


def test_one_frontend_result_compiles_like_compile_model() -> None:
    d = DIGITS["mlp"]
    calib = load_npz(d.calib)
    fe = run_frontend(str(d.model), calib, log=io.StringIO())
    before = print_graph(fe.graph)
    opts = Options(ecc="vote:sig>=10", n_validation=2)
    texts = [compiler.compile_frontend(str(d.model), fe, opts, io.StringIO()) for _ in range(2)]
    assert print_graph(fe.graph) == before
    assert texts[0] == texts[1] == compiler.compile_model(str(d.model), calib, opts, io.StringIO())
    tiled = compiler.lower(fe, opts, io.StringIO(), stop_before="schedule")
    full = compiler.lower(fe, opts, io.StringIO())
    mvms = [op for op in tiled.ops if op.kind == "mvm"]
    assert mvms and all({"tile", "cols", "ecc"} <= op.attrs.keys() and "place" not in op.attrs for op in mvms)
    assert all("place" in op.attrs for op in full.ops if op.kind == "mvm")
    assert [op.out for op in tiled.ops] == [op.out for op in compiler.lower(fe, Options(), stop_before="tile-mvm").ops]
    with pytest.raises(InternalError, match="no pass fold in the pipeline"):
        compiler.lower(fe, opts, io.StringIO(), stop_before="fold")
