"""The CRAM-only lowering (``cramc compile --reduce cram``, cramc/backend/cram_only.py).

- its micro-programs: every Baugh-Wooley constant has a place for every operand width; the
  multiplier is exact over every input pair (exhaustive for 8 x 8 bits, signed and unsigned
  inputs, and for asymmetric widths in both stepping orientations); the adder is exact over
  every pair; their gate counts are the documented ones;
- small random MVMs, compiled through the real passes and emitter, are exact against numpy and
  equal to the hybrid lowering (signed and unsigned x, wbits 4 and 8, K not a power of two, K
  larger than the rows so several chunks, groups, output groups, time-multiplexed passes,
  several rounds), use no adder-tree or accumulator instruction, and execute the number of
  gates the module docstring states;
- the shipped digits MLP and CNN: `cramc run` validates the CRAM-only program (also the MLP's on a
  small chip that splits K and time-multiplexes the layers), and on the first 64 test images its
  outputs are identical to the hybrid's at zero faults; under a uniform gate
  error of 1e-3 (fixed seed) both lowerings' accuracies are printed (``pytest -s``) and the
  CRAM-only one, with several times the gates and long carry chains, is the worse.
  bench/bench_reduce.py measures the whole test split and several rates.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO

from cramc.backend.cram_only import (
    F_COLS,
    ONE_OFF,
    TMR_COLS,
    ZERO_OFF,
    Layout,
    TileCramOnly,
    add_micro,
    eff_wbits,
    levels,
    mul_micro,
    mul_name,
    mul_plan,
)
from cramc.backend.emit import ProgramBuilder
from cramc.backend.schedule import Schedule
from cramc.cli import main as cramc_main
from cramc.compiler import LOWERINGS
from cramc.errmodel import FaultModel
from cramc.errors import UserError
from cramc.ir.ecc import BY_NAME
from cramc.ir.graph import Graph, IOValue, Op
from cramc.ir.passes.manager import run_passes
from cramc.isa import ast
from cramc.isa.opcodes import OPCODES, Unit
from cramc.isa.parser import parse, parse_file
from cramc.isa.printer import print_program
from cramc.isa.verifier import Linked, verify
from cramc.sim.interp import RunResult, run
from cramc.sim.report import accuracy

MODELS = REPO / "models"


# ----------------------------------------------------------------------------- micro-programs
def _gates(m: ast.Micro) -> int:
    return sum(1 for s in m.body if isinstance(s, ast.Instr) and OPCODES[s.mnemonic].unit is Unit.GATE)


def _micro_program(
    micro: ast.Micro,
    rows: int,
    cols: int,
    inputs: list[tuple[str, int, int]],
    call: dict[str, int],
    out: tuple[int, int],
) -> Linked:
    """One array: write each input (name, column, bits), fill the constants, call the micro, read y."""

    def i(mn, *ops, **at):
        return ast.Instr(
            mn,
            ast.ArraySet(0, 1),
            ops,  # noqa: E731
            tuple(ast.AttrVal(k, ast.Num(v)) for k, v in at.items()),
        )

    body: list[ast.Stmt] = [i("wr", ast.Col(c), ast.TensorRef(n), bits=b) for n, c, b in inputs]
    if "f" in call:
        f = call["f"]
        body += [i("fill", ast.Col(f + ZERO_OFF), ast.Num(0)), i("fill", ast.Col(f + ONE_OFF), ast.Num(1))]
    body.append(
        ast.Instr(
            "call",
            ast.ArraySet(0, 1),
            (ast.Expr(micro.name),),
            tuple(ast.AttrVal(k, ast.Col(v)) for k, v in call.items()),
        )
    )
    body.append(i("rd", ast.TensorRef("y"), ast.Col(out[0]), bits=out[1]))
    items: list[ast.TopItem] = [
        ast.Machine(tuple(ast.AttrVal(k, ast.Num(v)) for k, v in (("arrays", 1), ("rows", rows), ("cols", cols))))
    ]
    items += [ast.IODecl("input", n, ast.TensorType("i32", (1, rows))) for n, _, _ in inputs]
    items += [ast.IODecl("output", "y", ast.TensorType("i64", (1, rows))), micro, ast.Section("main", tuple(body))]
    return verify(parse(print_program(ast.Program(tuple(items)))))


@pytest.mark.parametrize("wbits", [1, 2, 3, 4, 5, 7, 8, 12, 16])
@pytest.mark.parametrize("xbits", [2, 3, 4, 5, 8, 9, 16, 32])
@pytest.mark.parametrize("xsigned", [0, 1])
def test_every_baugh_wooley_constant_has_a_place(wbits: int, xbits: int, xsigned: int) -> None:
    pl = mul_plan(wbits, xbits, xsigned)
    assert pl.s >= pl.r >= 2  # steps over the wider operand
    assert pl.flip == 1  # a signed factor always contributes 2^(top)
    m = mul_micro(wbits, xbits, xsigned)
    assert _gates(m) == pl.r + (pl.s - 1) * 5 * pl.r - 1  # the count the module docstring states


@pytest.mark.parametrize(
    ("wbits", "xbits", "xsigned", "pairs"),
    [
        (8, 8, 1, None),
        (8, 8, 0, None),  # exhaustive 65536 pairs, one per row
        (4, 4, 1, None),
        (4, 4, 0, None),
        (3, 5, 1, None),
        (3, 5, 0, None),  # steps over x
        (5, 3, 1, None),
        (5, 3, 0, None),
        (8, 4, 0, None),
        (6, 2, 1, None),  # steps over w
        (1, 4, 1, None),
        (2, 2, 0, None),  # one-bit weights are stored with two bits
        (8, 16, 0, 4096),
        (12, 16, 1, 4096),
        (16, 8, 1, 4096),  # wide: random pairs incl. the extremes
    ],
)
def test_multiplier_is_exact(wbits: int, xbits: int, xsigned: int, pairs: int | None) -> None:
    wb = eff_wbits(wbits)
    wv = np.arange(-(1 << (wbits - 1)), 1 << (wbits - 1))
    xv = np.arange(-(1 << (xbits - 1)), 1 << (xbits - 1)) if xsigned else np.arange(0, 1 << xbits)
    if pairs is None:
        w, x = (a.ravel() for a in np.meshgrid(wv, xv, indexing="ij"))
    else:
        rng = np.random.default_rng(wbits * 100 + xbits)
        w = rng.choice(wv, pairs)
        x = rng.choice(xv, pairs)
        w[:4], x[:4] = [wv[0], wv[0], wv[-1], wv[-1]], [xv[0], xv[-1], xv[0], xv[-1]]
    rows = w.size
    r = min(wb, xbits)
    wcol, xcol, bank, f, y = 0, wb, wb + xbits, wb + xbits + r, wb + xbits + r + F_COLS
    micro = mul_micro(wbits, xbits, xsigned)
    linked = _micro_program(
        micro,
        rows,
        y + wb + xbits,
        [("w", wcol, wb), ("x", xcol, xbits)],
        {"w": wcol, "x": xcol, "bank": bank, "f": f, "y": y},
        (y, wb + xbits),
    )
    res = run(linked, {"w": w[None, None], "x": x[None, None]})
    assert np.array_equal(res.outputs["y"][0, 0], w * x)
    assert res.counts.gate_evals == rows * _gates(micro)
    assert mul_name(wbits, xbits, xsigned) == micro.name


@pytest.mark.parametrize("width", [2, 5, 13])
def test_adder_is_exact(width: int) -> None:
    # both operands are width-bit sums; the periphery writes b sign-extended to width + 1 bits
    av = bv = np.arange(-(1 << (width - 1)), 1 << (width - 1))
    a, b = (v.ravel() for v in np.meshgrid(av, bv, indexing="ij"))
    if a.size > 8192:
        keep = np.random.default_rng(width).choice(a.size, 8192, replace=False)
        keep[:4] = [0, a.size - 1, bv.size - 1, a.size - bv.size]  # the four extreme pairs
        a, b = a[keep], b[keep]
    acol, bcol, f = 0, width + 1, 2 * width + 3  # result lands one column below b
    micro = add_micro(width)
    linked = _micro_program(
        micro,
        a.size,
        f + F_COLS,
        [("a", acol, width), ("b", bcol, width + 1)],
        {"a": acol, "b": bcol, "f": f},
        (bcol - 1, width + 1),
    )
    res = run(linked, {"a": a[None, None], "b": b[None, None]})
    assert np.array_equal(res.outputs["y"][0, 0], a + b)
    assert _gates(micro) == 4 * width + 3


# ----------------------------------------------------------------------------- random MVMs
def _mvm_graph(
    p: int, k: int, n: int, wbits: int, xbits: int, xsigned: int, groups: int, rng: np.random.Generator
) -> tuple[Graph, np.ndarray]:
    w = rng.integers(-(1 << (wbits - 1)), 1 << (wbits - 1), size=(n, k // groups))
    w[0, : min(3, k // groups)] = -(1 << (wbits - 1))  # the most negative weight occurs
    g = Graph()
    g.inputs.append(IOValue("x", f"{'i' if xsigned else 'u'}{xbits}", (p, k)))
    wref = g.const("w", w.astype(np.int8 if wbits <= 8 else np.int16), "i8" if wbits <= 8 else "i16")
    g.ops.append(
        Op(
            "mvm",
            "y",
            ("%x",),
            {"w": wref, "wbits": wbits, "xbits": xbits, "xsigned": xsigned, "groups": groups},
            "mvm_test",
        )
    )
    g.outputs.append(IOValue("y", "i64", (p, n)))
    return g, w


def _lower(g: Graph, reduce: str, arrays: int, rows: int, cols: int, accs: int = 64) -> Linked:
    mvm = LOWERINGS[reduce]  # the compiler's: the lowering's own tiling passes, then schedule
    g = run_passes(g, [*mvm.tiling(rows, cols, accs), Schedule(arrays)])
    b = ProgramBuilder(g, arrays, rows, cols, accs, mvm)
    b.run()
    return verify(parse(print_program(b.program(["; test"], []))))


def _mnemonics(prog: ast.Program) -> set[str]:
    out: set[str] = set()

    def walk(body: tuple[ast.Stmt, ...]) -> None:
        for s in body:
            if isinstance(s, ast.Repeat):
                walk(s.body)
            elif isinstance(s, ast.Instr):
                out.add(s.mnemonic)

    for item in prog.items:
        if isinstance(item, (ast.Micro, ast.Section)):
            walk(item.body)
    return out


MVM_CASES = [
    # p, k, n, wbits, xbits, xsigned, groups, arrays, rows, cols
    (3, 37, 5, 8, 8, 1, 1, 64, 16, 128),  # 3 chunks of 13 rows (odd row counts at several levels)
    (3, 37, 5, 8, 8, 0, 1, 64, 16, 128),
    (4, 50, 6, 4, 8, 1, 1, 64, 16, 128),  # 4 chunks of 13 rows
    (4, 50, 6, 4, 8, 0, 1, 64, 16, 128),
    (5, 40, 12, 4, 8, 1, 1, 64, 16, 80),  # 7 outputs per array, 2 output groups (wr repeat=2)
    (5, 40, 12, 4, 8, 1, 1, 3, 16, 80),  # a chip of 3 arrays: time-multiplexed passes reload weights
    (9, 40, 6, 8, 8, 0, 1, 4, 16, 128),  # rounds: 3 arrays, one replica, 9 patches
    (7, 24, 6, 8, 8, 0, 3, 64, 8, 128),  # groups (block-diagonal weights)
    (2, 100, 3, 8, 4, 1, 1, 64, 64, 128),  # 4-bit x: the multiplier steps over w
]


@pytest.mark.parametrize(("p", "k", "n", "wbits", "xbits", "xsigned", "groups", "arrays", "rows", "cols"), MVM_CASES)
def test_random_mvm_exact_and_equal_to_hybrid(
    p: int, k: int, n: int, wbits: int, xbits: int, xsigned: int, groups: int, arrays: int, rows: int, cols: int
) -> None:
    rng = np.random.default_rng(p * 1000 + k)
    g, w = _mvm_graph(p, k, n, wbits, xbits, xsigned, groups, rng)
    lo, hi = (-(1 << (xbits - 1)), 1 << (xbits - 1)) if xsigned else (0, 1 << xbits)
    x = rng.integers(lo, hi, size=(4, p, k))
    x[0], x[1] = lo, hi - 1  # extreme inputs: the largest partial sums
    kg, ng = k // groups, n // groups
    want = np.concatenate([x[..., i * kg : (i + 1) * kg] @ w[i * ng : (i + 1) * ng].T for i in range(groups)], axis=-1)

    linked = _lower(g, "cram", arrays, rows, cols)
    mn = _mnemonics(linked.program)
    assert not {m for m in mn if OPCODES[m].unit in (Unit.TREE, Unit.ACC)}, "no adder tree or accumulators"
    assert {"maj3", "maj5", "rd", "wr"} <= mn
    res = run(linked, {"x": x})
    assert np.array_equal(res.outputs["y"], want)
    assert res.counts.reduces == 0 and res.counts.tree_sensed == 0

    hybrid = run(_lower(g, "tree", arrays, rows, cols), {"x": x})
    assert np.array_equal(hybrid.outputs["y"], res.outputs["y"])


def test_gate_count_is_the_documented_one() -> None:
    """Per output and round: rows x multiplier gates + sum over levels of h x (4W + 3)."""
    p, k, n, rows = 2, 13, 3, 16
    g, _ = _mvm_graph(p, k, n, 8, 8, 0, 1, np.random.default_rng(0))
    linked = _lower(g, "cram", 64, rows, 128)
    res = run(linked, {"x": np.ones((1, p, k), dtype=np.int64)})
    r = s = 8
    per_output = k * (r + (s - 1) * 5 * r - 1)
    m, width = k, 16
    while m > 1:
        h = (m + 1) // 2
        per_output += h * (4 * width + 3)
        m, width = h, width + 1
    assert levels(k) == 4 and width == 16 + 4
    assert res.counts.gate_evals == p * n * per_output  # one array, one replica per patch, 3 outputs


def test_cols_too_few_is_a_user_error_with_a_working_suggestion() -> None:
    g, _ = _mvm_graph(1, 64, 4, 8, 8, 1, 1, np.random.default_rng(0))
    with pytest.raises(UserError, match=r"use --cols (\d+) or more") as e:
        run_passes(g, [TileCramOnly(64, 40, 64)])
    need = int(e.value.message.rsplit("--cols ", 1)[1].split()[0])
    g, _ = _mvm_graph(1, 64, 4, 8, 8, 1, 1, np.random.default_rng(0))
    t = run_passes(g, [TileCramOnly(64, need, 64)]).ops[0].attrs["tile"]
    assert t.per == 1  # one output per array fits exactly
    g, _ = _mvm_graph(1, 64, 4, 8, 8, 1, 1, np.random.default_rng(0))
    with pytest.raises(UserError):
        run_passes(g, [TileCramOnly(64, need - 1, 64)])


def test_error_correction_in_the_arrays_only() -> None:
    """tmr (gates and a MAJ3 vote) runs in the arrays: 3 more scratch columns; vote and dup need the adder tree."""
    g, _ = _mvm_graph(1, 16, 4, 8, 8, 1, 1, np.random.default_rng(0))
    g.ops[0].attrs["ecc"] = [BY_NAME["vote"].code] * 64
    with pytest.raises(UserError, match="vote with --reduce cram: .*no adder tree"):
        run_passes(g, [TileCramOnly(64, 256, 64)])
    cols = []
    for plan in ([0] * 64, [BY_NAME["tmr"].code] * 64):
        g, _ = _mvm_graph(1, 16, 4, 8, 8, 1, 1, np.random.default_rng(0))
        g.ops[0].attrs["ecc"] = plan
        cols.append(Layout.from_attr(run_passes(g, [TileCramOnly(64, 256, 64)]).ops[0].attrs["cram_cols"]))
    assert cols[1].u - cols[0].u == TMR_COLS and cols[1].f == cols[0].f


def test_tmr_multiplier_is_exact() -> None:
    """Every partial product protected: the product is unchanged and the multiplier has 3 more gates per term."""
    tmr = frozenset((b, c) for b in range(8) for c in range(8))
    w = np.arange(-128, 128)[None, :].repeat(2, axis=0).reshape(-1)[::3]
    x = np.resize(np.arange(-128, 128)[::-1], w.size)
    f = 16 + 8
    micro = mul_micro(8, 8, 1, tmr)
    linked = _micro_program(
        micro,
        w.size,
        f + F_COLS + TMR_COLS + 16,
        [("w", 0, 8), ("x", 8, 8)],
        {"w": 0, "x": 8, "bank": 16, "f": f, "y": f + F_COLS + TMR_COLS},
        (f + F_COLS + TMR_COLS, 16),
    )
    res = run(linked, {"w": w[None, None], "x": x[None, None]})
    assert np.array_equal(res.outputs["y"][0, 0], w * x)
    assert _gates(micro) == _gates(mul_micro(8, 8, 1)) + 3 * 64


# ----------------------------------------------------------------------------- the digits models
def _cramc(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cramc_main(list(argv))
    return rc, out.getvalue() + err.getvalue()


DIGITS = {"mlp": "flat", "cnn": "img"}
N_IMAGES = 64


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Both digits models compiled with both lowerings (default chip): (model, reduce) -> program."""
    out = tmp_path_factory.mktemp("reduce")
    progs = {}
    for name, layout in DIGITS.items():
        for reduce in ("tree", "cram"):
            prog = out / f"digits_{name}_{reduce}.cram"
            rc, text = _cramc(
                "compile",
                str(MODELS / f"digits_{name}.onnx"),
                "-o",
                str(prog),
                "--calibration",
                str(MODELS / f"digits_calib_{layout}.npz"),
                "--reduce",
                reduce,
            )
            assert rc == 0, text
            progs[name, reduce] = prog
    return progs


@pytest.fixture(scope="module")
def digits_linked(digits: dict[tuple[str, str], Path]) -> dict[tuple[str, str], Linked]:
    return {key: verify(parse_file(str(prog))) for key, prog in digits.items()}


def _test_split(name: str, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    with np.load(MODELS / f"digits_test_x_{DIGITS[name]}.npz") as z:
        x = {k: z[k][:n] for k in z.files}
    return x, np.load(MODELS / "digits_test_labels.npy")[:n]


@pytest.mark.parametrize("name", list(DIGITS))
def test_digits_cram_only_validates_and_equals_hybrid(
    name: str,
    digits: dict[tuple[str, str], Path],
    digits_linked: dict[tuple[str, str], Linked],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cram = digits[name, "cram"]
    text = cram.read_text()
    assert "tadd" not in text and "tsub" not in text and "CRAM-only" in text
    rc, out = _cramc("run", str(cram))
    assert rc == 0, out
    assert "match" in out

    x, labels = _test_split(name, N_IMAGES)
    res: dict[str, RunResult] = {}
    for reduce in ("tree", "cram"):
        res[reduce] = run(digits_linked[name, reduce], x, FaultModel(), seed=0)
    for o in res["tree"].outputs:
        assert np.array_equal(res["cram"].outputs[o], res["tree"].outputs[o])
    t, c = res["tree"].counts, res["cram"].counts
    assert c.reduces == 0 and t.reduces > 0
    assert c.gate_evals > 3 * t.gate_evals
    with capsys.disabled():
        print(
            f"\n[reduce] digits {name}: identical logits on {N_IMAGES} images, accuracy "
            f"{accuracy(res['tree'].outputs['logits'], labels):.4f}; gate evaluations per inference: "
            f"hybrid {t.gate_evals // N_IMAGES}, CRAM-only {c.gate_evals // N_IMAGES} "
            f"({c.gate_evals / t.gate_evals:.2f}x)"
        )


@pytest.mark.parametrize("name", list(DIGITS))
def test_digits_accuracy_under_gate_faults(
    name: str, digits_linked: dict[tuple[str, str], Linked], capsys: pytest.CaptureFixture[str]
) -> None:
    """Uniform gate error 1e-3, seed 0, the first 96 test images; both lowerings at the same rate."""
    rate, n = 1e-3, 96
    x, labels = _test_split(name, n)
    acc, counts = {}, {}
    for reduce in ("tree", "cram"):
        r = run(digits_linked[name, reduce], x, FaultModel.uniform(rate), seed=0)
        acc[reduce], counts[reduce] = accuracy(r.outputs["logits"], labels), r.counts
        # every gate evaluation flips with probability `rate`: the count is binomial (5 sigma)
        ev = r.counts.gate_evals
        assert abs(r.counts.faults["gate"] - rate * ev) <= 5 * math.sqrt(rate * ev) + 1
    with capsys.disabled():
        print(
            f"\n[reduce] digits {name}, gate error {rate:g}, seed 0, {n} test images: accuracy hybrid "
            f"{acc['tree']:.4f}, CRAM-only {acc['cram']:.4f} (faults {counts['tree'].faults['gate']} vs "
            f"{counts['cram'].faults['gate']})"
        )
    # long in-array carry chains and high-significance sum bits: one flip can cost thousands
    assert acc["cram"] < acc["tree"] - 0.1


def test_digits_mlp_on_a_small_chip_validates(tmp_path: Path) -> None:
    """24-row arrays and 8 of them: K split in 3 chunks, layers time-multiplexed in passes that reload weights."""
    prog = tmp_path / "mlp_small.cram"
    rc, text = _cramc(
        "compile",
        str(MODELS / "digits_mlp.onnx"),
        "-o",
        str(prog),
        "--calibration",
        str(MODELS / "digits_calib_flat.npz"),
        "--reduce",
        "cram",
        "--rows",
        "24",
        "--arrays",
        "8",
        "--cols",
        "100",
    )
    assert rc == 0, text
    assert "3 chunk(s) of 22 rows" in prog.read_text() and "6 pass(es)" in prog.read_text()
    rc, out = _cramc("run", str(prog))
    assert rc == 0 and "match" in out, out
