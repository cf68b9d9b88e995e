"""Helpers shared by the compiler tests (imported as a plain module: tests/compiler is on sys.path)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cramtest import REPO

from cramc import compiler
from cramc.cli import main
from cramc.compiler import Options
from cramc.frontend.pipeline import Frontend, run_frontend
from cramc.ir.graph import Graph
from cramc.isa import data as tdata

MODELS = REPO / "models"
GOLDEN_IR = REPO / "tests" / "golden" / "ir"


@dataclass(frozen=True)
class Digits:
    """One shipped handwritten-digit model and its data files (models/README.md): sklearn digits or MNIST."""

    name: str  # "mlp" or "cnn" (digits), "lenet5" or "mlp" (mnist)
    layout: str  # "flat" [N, 64] / [N, 784] or "img" [N, 1, 8, 8] / [N, 1, 28, 28]
    dataset: str = "digits"  # file name prefix: "digits" or "mnist"

    @property
    def model(self) -> Path:
        return MODELS / f"{self.dataset}_{self.name}.onnx"

    @property
    def calib(self) -> Path:
        return MODELS / f"{self.dataset}_calib_{self.layout}.npz"

    @property
    def test_x(self) -> Path:
        return MODELS / f"{self.dataset}_test_x_{self.layout}.npz"

    @property
    def labels(self) -> Path:
        return MODELS / f"{self.dataset}_test_labels.npy"

    @property
    def train_x(self) -> Path:
        return MODELS / f"{self.dataset}_train_x_{self.layout}.npz"

    @property
    def train_labels(self) -> Path:
        return MODELS / f"{self.dataset}_train_labels.npy"


DIGITS = {"mlp": Digits("mlp", "flat"), "cnn": Digits("cnn", "img")}
MNIST = {"lenet5": Digits("lenet5", "img", "mnist"), "mlp": Digits("mlp", "flat", "mnist")}


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@dataclass(frozen=True)
class CliRun:
    rc: int
    out: str
    err: str


def cramc(*argv: str) -> CliRun:
    """`cramc ARGV...` in-process, for fixtures that cannot use the function-scoped `cli` fixture."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = int(e.code or 0)
    return CliRun(rc, out.getvalue(), err.getvalue())


def default_passes(opts: Options) -> list:
    """The passes `compile_model` runs for `opts` (here without auto-ecc, which needs a frontend): the
    compiler's own list, cramc.compiler.passes.

    tests/compiler/test_digits.py checks that `lower` below and `compile_model` print the same IR after
    every pass.
    """
    return compiler.passes(opts)


def lower(
    model: Path, calibration: dict[str, np.ndarray] | None, opts: Options | None = None, log: io.StringIO | None = None
) -> tuple[Frontend, Graph]:
    """Frontend + the default passes: the IR graph that `compile_model` emits, and the frontend result."""
    opts = opts or Options()
    log = log if log is not None else io.StringIO()
    fe = run_frontend(str(model), calibration, opts.weight_bits, opts.act_bits, log)
    return fe, compiler.lower(fe, opts, log)


def graph_differences(a: Graph, b: Graph) -> list[str]:
    """Structural differences between two IR graphs (empty when they are equal).

    Constants compare by declared element type, shape and value (not by numpy storage type:
    the parser stores an i8 constant as int8, the importer may hold it as int64).
    """
    diffs: list[str] = []
    if a.inputs != b.inputs:
        diffs.append(f"inputs {a.inputs} != {b.inputs}")
    if a.outputs != b.outputs:
        diffs.append(f"outputs {a.outputs} != {b.outputs}")
    if list(a.consts) != list(b.consts):
        diffs.append(f"constant names {list(a.consts)} != {list(b.consts)}")
    for name in a.consts.keys() & b.consts.keys():
        x, y = a.consts[name], b.consts[name]
        if a.const_types.get(name) != b.const_types.get(name):
            diffs.append(f"${name}: type {a.const_types.get(name)} != {b.const_types.get(name)}")
        if x.shape != y.shape or not np.array_equal(x, y):
            diffs.append(f"${name}: values differ")
    if len(a.ops) != len(b.ops):
        diffs.append(f"{len(a.ops)} ops != {len(b.ops)} ops")
    for p, q in zip(a.ops, b.ops, strict=False):  # a length mismatch is reported above
        if (p.kind, p.out, tuple(p.ins), p.origin) != (q.kind, q.out, tuple(q.ins), q.origin):
            diffs.append(f"op %{p.out} ({p.kind} {p.ins} ; {p.origin}) != %{q.out} ({q.kind} {q.ins} ; {q.origin})")
        elif p.attrs != q.attrs:
            diffs.append(f"op %{p.out}: attrs {p.attrs} != {q.attrs}")
    return diffs


def storage(arr: np.ndarray, dtype: str) -> np.ndarray:
    """An array as the IR/ISA text stores an element type."""
    return np.asarray(arr).astype(tdata.DTYPES[dtype])
