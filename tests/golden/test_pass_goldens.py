"""A golden for every pass: the IR (or ONNX graph) text after each pass of small chains, tests/golden/passes/.

tests/compiler/test_ir_golden.py covers the default pipeline (import, conv-to-mvm, tile-mvm,
allocate, schedule) on two tiny QDQ models.  This file covers the passes it does not run, each from
a fixed input so that a pass's golden changes only when that pass (or a later one in the chain) does:

- the IR passes start from the committed conv-to-mvm golden of tests/golden/ir/<model>/ (parsed,
  not re-imported): insert-ecc with a mixed spec, auto-ecc under a uniform gate error and under the
  near_term preset (its plan report is a golden too), and tile-cram-only, each followed by the
  rest of its lowering (tile-mvm, allocate, schedule) so that the scratch columns every scheme
  reserves and the CRAM-only layout are pinned as well;
- the ONNX fold passes of the frontend (fold-constants, fold-batchnorm) run on the float models
  of tests/foldmodels.py, in the frontend's order, and print with foldmodels.onnx_text.

Every stage is checked as well as compared: the IR verifier passes, print/parse round-trips, the
IR still computes what its input computed (a protection plan or a tiling changes no value), and a
folded ONNX model computes what the original did under onnxruntime.  A last test fails when a pass
module exists without a golden here or in tests/golden/ir.

After an intended change to a pass, regenerate with

    CRAMC_UPDATE_GOLDEN=1 pytest tests/golden/test_pass_goldens.py

and read ``git diff tests/golden/passes`` before committing it; say in the commit why it changed.
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from cramtest import REPO
from foldmodels import const_chain, conv_bn, onnx_text, run_ort

from cramc.backend.allocate import Allocate
from cramc.backend.cram_only import TileCramOnly
from cramc.backend.schedule import Schedule
from cramc.errmodel import FaultModel, load_error_model
from cramc.frontend import fold_batchnorm, fold_constants
from cramc.ir.graph import Graph
from cramc.ir.passes.auto_ecc import AutoEcc
from cramc.ir.passes.insert_ecc import InsertEcc
from cramc.ir.passes.tile_mvm import TileMvm
from cramc.ir.semantics import evaluate, verify_graph
from cramc.ir.text import parse_graph, print_graph

UPDATE = os.environ.get("CRAMC_UPDATE_GOLDEN", "") not in ("", "0")
GOLDEN = Path(__file__).resolve().parent / "passes"
GOLDEN_IR = Path(__file__).resolve().parent / "ir"
#: Stages of tests/compiler/test_ir_golden.py (the default pipeline), covered there.
DEFAULT_STAGES = ("import", "conv-to-mvm", "tile-mvm", "allocate", "schedule")


def _calibration(shape: tuple[int, ...], n: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """n fixed pseudo-random samples for the input %x of the golden IR models, in [-1, 2)."""
    return {"x": np.random.default_rng(seed).uniform(-1.0, 2.0, (n, *shape)).astype(np.float32)}


@dataclass(frozen=True)
class IrChain:
    """Passes run in order on the parsed conv-to-mvm golden of tests/golden/ir/<model>/."""

    model: str
    passes: Callable[[io.StringIO], list]  # the log the passes report to -> the passes
    logged: bool = False  # the log is a golden too (auto-ecc's plan)

    def start(self) -> Graph:
        return parse_graph((GOLDEN_IR / self.model / "1-conv-to-mvm.cir").read_text(encoding="utf-8"))


# qdq_mlp: x[1,8] -> fc1 (8->6) -> fc2 (6->4); qdq_conv: x[1,4,5,5] -> grouped conv -> depthwise conv
IR_CHAINS: dict[str, IrChain] = {
    "ecc_qdq_mlp": IrChain(
        "qdq_mlp",
        lambda log: [
            InsertEcc("vote:sig>=12;dup:sig>=6;tmr:layer=fc2:sig<=1"),
            TileMvm(4, 32, 64),
            Allocate(32, 64),
            Schedule(4),
        ],
    ),
    "ecc_qdq_conv": IrChain(
        "qdq_conv",
        lambda log: [
            InsertEcc("dup:layer=conv_dw;vote:layer=conv_g2:sig>=12;tmr:sig=0"),
            TileMvm(8, 32, 64),
            Allocate(32, 64),
            Schedule(16),
        ],
    ),
    "auto_ecc_qdq_mlp": IrChain(
        "qdq_mlp",
        lambda log: [
            AutoEcc(FaultModel.uniform(1e-2), 0.3, _calibration((1, 8)), log=log),
            TileMvm(4, 32, 64),
            Allocate(32, 64),
            Schedule(4),
        ],
        logged=True,
    ),
    "auto_ecc_near_term_qdq_conv": IrChain(
        "qdq_conv",
        lambda log: [
            AutoEcc(load_error_model("near_term_flat").with_gate_error(3e-3), 0.1, _calibration((1, 4, 5, 5)), log=log),
            TileMvm(8, 32, 64),
            Allocate(32, 64),
            Schedule(16),
        ],
        logged=True,
    ),
    "cram_only_qdq_mlp": IrChain("qdq_mlp", lambda log: [TileCramOnly(4, 72, 64), Schedule(4)]),
    "cram_only_qdq_conv": IrChain("qdq_conv", lambda log: [TileCramOnly(8, 72, 64), Schedule(16)]),
}


@dataclass(frozen=True)
class OnnxChain:
    """The frontend's ONNX passes, in its order, on a float model of tests/foldmodels.py."""

    model: Callable[[], onnx.ModelProto]
    passes: list[tuple[str, Callable[[onnx.ModelProto], onnx.ModelProto]]] = field(default_factory=list)


ONNX_CHAINS: dict[str, OnnxChain] = {
    "fold_const_chain": OnnxChain(const_chain, [(fold_constants.NAME, fold_constants.run)]),
    "fold_conv_bn": OnnxChain(
        conv_bn, [(fold_constants.NAME, fold_constants.run), (fold_batchnorm.NAME, fold_batchnorm.run)]
    ),
}


def _check_or_update(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"{path} is missing; run CRAMC_UPDATE_GOLDEN=1 pytest {__file__}"
    want = path.read_text(encoding="utf-8")
    assert text == want, f"output of the pass differs from {path.relative_to(REPO)}"


def _stage_file(chain: str, i: int, name: str, suffix: str) -> Path:
    return GOLDEN / chain / f"{i}-{name}{suffix}"


@pytest.mark.parametrize("chain", sorted(IR_CHAINS))
def test_ir_pass_chain(chain: str) -> None:
    c = IR_CHAINS[chain]
    g = c.start()
    verify_graph(g)
    x = _calibration(g.inputs[0].shape, n=4, seed=9)
    before = evaluate(g, x, keep=True)
    log = io.StringIO()
    for i, p in enumerate(c.passes(log), start=1):
        g = p.run(g)
        verify_graph(g)
        text = print_graph(g)
        back = parse_graph(text, f"{chain} after {p.name}")
        assert print_graph(back) == text
        now = evaluate(back, x, keep=True)
        for name, v in before.items():  # every value the input defined, outputs included
            np.testing.assert_array_equal(now[name], v, err_msg=f"{chain}: %{name} after {p.name}")
        _check_or_update(_stage_file(chain, i, p.name, ".cir"), text)
    if c.logged:
        assert log.getvalue(), f"{chain}: the pass reported nothing"
        _check_or_update(GOLDEN / chain / "log.txt", log.getvalue())
    else:
        assert log.getvalue() == ""
    mvms = [op for op in g.ops if op.kind == "mvm"]
    assert mvms and all("place" in op.attrs for op in mvms)


@pytest.mark.parametrize("chain", sorted(ONNX_CHAINS))
def test_onnx_pass_chain(chain: str) -> None:
    c = ONNX_CHAINS[chain]
    model = c.model()
    onnx.checker.check_model(model, full_check=True)
    _check_or_update(_stage_file(chain, 0, "model", ".onnx.txt"), onnx_text(model))
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(4).normal(0, 1, shape).astype(np.float32)
    want = run_ort(model, {model.graph.input[0].name: x})
    for i, (name, run) in enumerate(c.passes, start=1):
        model = run(copy.deepcopy(model))
        onnx.checker.check_model(model, full_check=True)
        got = run_ort(model, {model.graph.input[0].name: x})
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{chain} after {name}")
        _check_or_update(_stage_file(chain, i, name, ".onnx.txt"), onnx_text(model))


def _expected_files() -> set[str]:
    want: set[str] = set()
    for chain, c in IR_CHAINS.items():
        want |= {f"{chain}/{i}-{p.name}.cir" for i, p in enumerate(c.passes(io.StringIO()), start=1)}
        if c.logged:
            want.add(f"{chain}/log.txt")
    for chain, oc in ONNX_CHAINS.items():
        want.add(f"{chain}/0-model.onnx.txt")
        want |= {f"{chain}/{i}-{name}.onnx.txt" for i, (name, _) in enumerate(oc.passes, start=1)}
    return want


def test_golden_folder_holds_exactly_the_chains() -> None:
    have = {p.relative_to(GOLDEN).as_posix() for p in GOLDEN.rglob("*") if p.is_file()}
    assert have == _expected_files()


def test_every_pass_has_a_golden() -> None:
    """Each module of cramc/ir/passes (one file per pass, named after it) and each ONNX fold of the frontend."""
    covered = set(DEFAULT_STAGES)
    for c in IR_CHAINS.values():
        covered |= {p.name for p in c.passes(io.StringIO())}
    for oc in ONNX_CHAINS.values():
        covered |= {name for name, _ in oc.passes}
    passes = {p.stem.replace("_", "-") for p in (REPO / "cramc" / "ir" / "passes").glob("*.py")}
    passes -= {"--init--", "manager"}
    folds = {p.stem.replace("_", "-") for p in (REPO / "cramc" / "frontend").glob("fold_*.py")}
    assert passes and folds
    assert passes | folds | {"tile-cram-only"} <= covered, sorted((passes | folds) - covered)
