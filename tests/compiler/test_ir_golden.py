"""File-based golden tests of the IR text after every pass: tests/golden/ir/<case>/.

Each case folder holds
- ``model.onnx``: a tiny QDQ model, written by the generator function of the same name below
  with fixed integer weights, scales and zero points (hand-quantised, so no quantiser version
  enters the goldens; every constant has at most 64 elements and prints as an inline list);
- ``0-import.cir``, ``1-conv-to-mvm.cir``, ``2-tile-mvm.cir``, ``3-allocate.cir``,
  ``4-schedule.cir``: the canonical IR text (cramc.ir.text.print_graph) after the import and
  after each pass of `cramc compile`, on the chip geometry given in CASES.

The test imports the model, runs the passes one at a time, runs the IR verifier
(cramc.ir.semantics.verify_graph) after each, checks the pass kept the graph's meaning
(cramc.ir.semantics.evaluate), and compares the printed IR with the golden exactly.  It also
checks parse(print(g)) == g for every graph and print(parse(text)) == text for every golden,
that `cramc compile --print-ir-after-all` prints the same IR to stderr, and that the compiled
program computes what the IR says.

After an intended change to the importer or a pass, regenerate the goldens with

    CRAMC_UPDATE_GOLDEN=1 pytest tests/compiler/test_ir_golden.py

and read `git diff tests/golden/ir` before committing it.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from compilertest import DIGITS, GOLDEN_IR, default_passes, graph_differences, load_npz, lower
from onnx import TensorProto, helper, numpy_helper

from cramc.compiler import Options, compile_model
from cramc.errors import InternalError
from cramc.frontend.pipeline import run_frontend
from cramc.ir.graph import Graph
from cramc.ir.semantics import evaluate, verify_graph
from cramc.ir.text import parse_graph, print_graph
from cramc.ir.tiling import Cols, Tile
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.interp import run

UPDATE = os.environ.get("CRAMC_UPDATE_GOLDEN", "") not in ("", "0")
STAGES = ["import", "conv-to-mvm", "tile-mvm", "allocate", "schedule"]


def _t(name: str, value: object) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _dq_weights(prefix: str, q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None = 0) -> tuple:
    inits = [_t(f"{prefix}_q", q), _t(f"{prefix}_s", scale), _t(f"{prefix}_z", zp)]
    kw = {"axis": axis} if axis is not None else {}
    node = helper.make_node(
        "DequantizeLinear", [f"{prefix}_q", f"{prefix}_s", f"{prefix}_z"], [prefix], name=f"{prefix}_dequant", **kw
    )
    return inits, node


def _qdq(x: str, scale: str, zp: str, name: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("QuantizeLinear", [x, scale, zp], [f"{name}_q"], name=f"{name}_quant"),
        helper.make_node("DequantizeLinear", [f"{name}_q", scale, zp], [f"{name}_dq"], name=f"{name}_dequant"),
    ]


def qdq_mlp() -> onnx.ModelProto:
    """x[1,8] -> Gemm(8->6, transB) -> Relu -> Q/DQ (u8) -> Gemm(6->4, transB) -> Q/DQ (i8, zp -3) -> y.

    fc1's Relu sits between the Gemm and its QuantizeLinear (float path), fc2's QuantizeLinear is
    fused into requantisation; per-channel weight scales, int32 biases with scale sx * sw.
    """
    rng = np.random.default_rng(7)
    sx, sh, sy = np.float32(1 / 128), np.float32(1 / 16), np.float32(1 / 8)
    s1 = (np.arange(1, 7) / 512).astype(np.float32)
    s2 = np.full(4, 1 / 256, np.float32)
    w1 = rng.integers(-127, 128, (6, 8)).astype(np.int8)
    w2 = rng.integers(-127, 128, (4, 6)).astype(np.int8)
    b1 = rng.integers(-500, 500, 6).astype(np.int32)
    b2 = rng.integers(-500, 500, 4).astype(np.int32)
    inits = [
        _t("sx", sx),
        _t("zx", np.uint8(128)),
        _t("sh", sh),
        _t("zh", np.uint8(0)),
        _t("sy", sy),
        _t("zy", np.int8(-3)),
    ]
    nodes = _qdq("x", "sx", "zx", "x")
    for name, w, s, b, bs in (("fc1", w1, s1, b1, sx * s1), ("fc2", w2, s2, b2, sh * s2)):
        i, n = _dq_weights(f"{name}_w", w, s, np.zeros(len(s), np.int8))
        inits += i
        nodes.append(n)
        i, n = _dq_weights(f"{name}_b", b, bs.astype(np.float32), np.zeros(len(s), np.int32))
        inits += i
        nodes.append(n)
    nodes.append(helper.make_node("Gemm", ["x_dq", "fc1_w", "fc1_b"], ["h"], name="fc1", transB=1))
    nodes.append(helper.make_node("Relu", ["h"], ["h_relu"], name="relu1"))
    nodes += _qdq("h_relu", "sh", "zh", "h")
    nodes.append(helper.make_node("Gemm", ["h_dq", "fc2_w", "fc2_b"], ["y_f"], name="fc2", transB=1))
    nodes.append(helper.make_node("QuantizeLinear", ["y_f", "sy", "zy"], ["y_q"], name="y_quant"))
    nodes.append(helper.make_node("DequantizeLinear", ["y_q", "sy", "zy"], ["y"], name="y_dequant"))
    g = helper.make_graph(
        nodes,
        "qdq_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8, producer_name="tests/compiler/test_ir_golden.py"
    )


def qdq_conv() -> onnx.ModelProto:
    """x[1,4,5,5] -> Conv(2x2, groups=2, pads 1,1,0,0) -> Q/DQ (i8, zp -5) -> depthwise Conv(3x3, stride 2,
    pads 1, 4-bit weights, per-tensor scale) -> Q/DQ (u8, zp 128) -> y[1,4,3,3].

    The activation zero points are nonzero, so padding must be filled with them.
    """
    rng = np.random.default_rng(11)
    sx, sh, sy = np.float32(1 / 64), np.float32(1 / 16), np.float32(1 / 4)
    s1 = (np.arange(1, 5) / 256).astype(np.float32)
    w1 = rng.integers(-127, 128, (4, 2, 2, 2)).astype(np.int8)
    w2 = rng.integers(-7, 8, (4, 1, 3, 3)).astype(np.int8)
    b1 = rng.integers(-300, 300, 4).astype(np.int32)
    inits = [
        _t("sx", sx),
        _t("zx", np.uint8(10)),
        _t("sh", sh),
        _t("zh", np.int8(-5)),
        _t("sy", sy),
        _t("zy", np.uint8(128)),
    ]
    nodes = _qdq("x", "sx", "zx", "x")
    i, n = _dq_weights("c1_w", w1, s1, np.zeros(4, np.int8))
    inits += i
    nodes.append(n)
    i, n = _dq_weights("c1_b", b1, (sx * s1).astype(np.float32), np.zeros(4, np.int32))
    inits += i
    nodes.append(n)
    i, n = _dq_weights("dw_w", w2, np.float32(1 / 32), np.int8(0), axis=None)
    inits += i
    nodes.append(n)
    nodes.append(
        helper.make_node(
            "Conv", ["x_dq", "c1_w", "c1_b"], ["h"], name="conv_g2", group=2, kernel_shape=[2, 2], pads=[1, 1, 0, 0]
        )
    )
    nodes += _qdq("h", "sh", "zh", "h")
    nodes.append(
        helper.make_node(
            "Conv",
            ["h_dq", "dw_w"],
            ["y_f"],
            name="conv_dw",
            group=4,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
        )
    )
    nodes.append(helper.make_node("QuantizeLinear", ["y_f", "sy", "zy"], ["y_q"], name="y_quant"))
    nodes.append(helper.make_node("DequantizeLinear", ["y_q", "sy", "zy"], ["y"], name="y_dequant"))
    g = helper.make_graph(
        nodes,
        "qdq_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
        inits,
    )
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8, producer_name="tests/compiler/test_ir_golden.py"
    )


@dataclass(frozen=True)
class GoldenCase:
    generator: Callable[[], onnx.ModelProto]
    geometry: dict[str, int]  # Options fields / `cramc compile` flags
    multiplexed: bool  # the chip cannot hold every layer at once: weights reload per inference

    @property
    def options(self) -> Options:
        return Options(**self.geometry)

    @property
    def flags(self) -> list[str]:
        return [a for k, v in self.geometry.items() for a in (f"--{k}", str(v))]


CASES = {
    # 4 arrays of 4 x 32: fc1 needs 6 arrays (2 K-chunks x 3 output groups), so it runs in 2 passes
    # and fc2 reloads its weights into the same arrays (time-multiplexed)
    "qdq_mlp": GoldenCase(qdq_mlp, {"rows": 4, "cols": 32, "arrays": 4}, multiplexed=True),
    # 16 arrays of 8 x 32: both layers fit (2 + 8 arrays), the spare 6 replicate the grouped conv
    "qdq_conv": GoldenCase(qdq_conv, {"rows": 8, "cols": 32, "arrays": 16}, multiplexed=False),
}


def _golden(case: str, index: int) -> Path:
    return GOLDEN_IR / case / f"{index}-{STAGES[index]}.cir"


def _check_or_update(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"{path} is missing; run CRAMC_UPDATE_GOLDEN=1 pytest {__file__}"
    want = path.read_text(encoding="utf-8")
    assert text == want, f"IR differs from {path.relative_to(GOLDEN_IR.parents[2])}"


def _roundtrip(g: Graph, where: str) -> None:
    text = print_graph(g)
    back = parse_graph(text, where)
    assert graph_differences(back, g) == [], where
    assert print_graph(back) == text, where


def _model(case: str) -> Path:
    path = GOLDEN_IR / case / "model.onnx"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(CASES[case].generator(), str(path))
    return path


def _sample_inputs(g: Graph, n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i.name: rng.uniform(-1.0, 2.0, (n, *i.shape)).astype(np.float32) for i in g.inputs}


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_matches_its_generator(case: str) -> None:
    model = CASES[case].generator()
    onnx.checker.check_model(model, full_check=True)
    committed = onnx.load(str(_model(case)))
    assert committed.graph == model.graph


@pytest.mark.parametrize("case", sorted(CASES))
def test_ir_after_each_pass(case: str) -> None:
    c = CASES[case]
    fe = run_frontend(str(_model(case)), None)
    g = fe.graph
    inputs = _sample_inputs(g)
    before = evaluate(g, inputs, keep=True)
    for i, p in enumerate([None, *default_passes(c.options)]):
        if p is not None:
            assert p.name == STAGES[i]
            g = p.run(g)
        verify_graph(g)
        _roundtrip(g, f"{case} after {STAGES[i]}")
        _check_or_update(_golden(case, i), print_graph(g))
        now = evaluate(g, inputs, keep=True)
        # passes keep the meaning: every value defined before has the same value, outputs included
        for name, v in before.items():
            if name in now:
                np.testing.assert_array_equal(now[name], v, err_msg=f"%{name} after {STAGES[i]}")
        assert all(o.name in now for o in g.outputs)
        before = {**before, **now}
    assert any(op.kind == "mvm" for op in g.ops)
    assert not any(op.kind == "conv" for op in g.ops)
    assert all({"tile", "cols", "place"} <= set(op.attrs) for op in g.ops if op.kind == "mvm")


def test_golden_folders_hold_exactly_the_cases() -> None:
    assert sorted(p.name for p in GOLDEN_IR.iterdir() if p.is_dir()) == sorted(CASES)
    for case in CASES:
        want = {"model.onnx"} | {_golden(case, i).name for i in range(len(STAGES))}
        assert {p.name for p in (GOLDEN_IR / case).iterdir()} == want


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("index", range(len(STAGES)), ids=STAGES)
def test_golden_text_is_canonical(case: str, index: int) -> None:
    path = _golden(case, index)
    text = path.read_text(encoding="utf-8")
    g = parse_graph(text, str(path))
    assert print_graph(g) == text
    verify_graph(g)
    assert all(c.size <= 64 for c in g.consts.values())  # inline lists: no zlib in the goldens


@pytest.mark.parametrize("case", sorted(CASES))
def test_print_ir_after_all(cli, case: str, tmp_path: Path) -> None:
    """`cramc compile --print-ir-after-all` prints the goldens (long constants elided) to stderr."""
    out = tmp_path / "prog.cram"
    res = cli("compile", str(_model(case)), "-o", str(out), "--print-ir-after-all", *CASES[case].flags)
    assert res.rc == 0, res.err
    assert res.out.startswith(f"wrote {out}: ") and "; IR after" not in res.out
    notes = [line for line in res.err.splitlines() if line.startswith("note: ")]
    assert bool(notes) == CASES[case].multiplexed and all("reload" in n for n in notes), notes
    ir = "".join(line + "\n" for line in res.err.splitlines() if not line.startswith("note: "))
    blocks = re.split(r"^; IR after (\S+)\n", ir, flags=re.M)
    assert blocks[0] == ""  # nothing before the first block: the model is already quantised
    assert blocks[1::2] == STAGES
    for i, printed in enumerate(blocks[2::2]):
        want = _golden(case, i).read_text(encoding="utf-8").splitlines()
        got = printed.splitlines()
        assert len(got) == len(want), STAGES[i]
        for line, full in zip(got, want, strict=True):
            if line != full:  # a long constant prints as its type and the payload's length
                head, _, payload = full.partition(" = ")
                assert full.startswith("const ") and line == f"{head} = <{len(payload)} chars>", (line, full)


@pytest.mark.parametrize("case", sorted(CASES))
def test_program_computes_the_ir(cli, case: str, tmp_path: Path) -> None:
    """The program compiled on the case's chip holds, in every tensor, what the scheduled golden IR says."""
    c = CASES[case]
    g = parse_graph(_golden(case, len(STAGES) - 1).read_text(encoding="utf-8"))
    inputs = _sample_inputs(g, n=8, seed=1)
    want = evaluate(g, inputs, keep=True)
    text = compile_model(str(_model(case)), {"x": inputs["x"]}, c.options, log=io.StringIO())
    prog = tmp_path / "prog.cram"
    prog.write_text(text, encoding="utf-8")
    res = run(verify(parse(text, str(prog))), dict(inputs), keep_tensors=True)
    for name, v in want.items():  # MVM accumulators included: exact integer products
        np.testing.assert_array_equal(res.tensors[name].reshape(v.shape), v, err_msg=f"%{name}")
    assert sum(op.kind == "mvm" for op in g.ops) == 2
    # and `cramc run` validates it against onnxruntime
    r = cli("run", str(prog))
    assert r.rc == 0 and " match (tol " in r.out, r.out + r.err


def _mutated(case: str, edit: Callable[[Graph], None]) -> Graph:
    g = parse_graph(_golden(case, len(STAGES) - 1).read_text(encoding="utf-8"))
    edit(g)
    return g


def _mvm(g: Graph, n: int = 0):  # noqa: ANN202 - an Op
    return [op for op in g.ops if op.kind == "mvm"][n]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: _mvm(g).attrs.update(cols=Cols(0, 4, 9)), "columns of %h_mvm overlap"),
        (lambda g: _mvm(g).attrs.update(tile=Tile(1, 1, 4, 2, 3)), "does not cover K=8"),
        (lambda g: _mvm(g).attrs.update(tile=Tile(2, 2, 4, 2, 3)), "groups 2 != 1"),
        (lambda g: _mvm(g).attrs.update(cols=[0, 8, 9]), "mvm %h_mvm: cols must be a Cols record, got [0, 8, 9]"),
        (lambda g: _mvm(g).attrs.update(place=None), "mvm %h_mvm: place must be a Place record, got None"),
        (lambda g: _mvm(g).attrs.update(wbits=8.0), "mvm %h_mvm: wbits must be an integer, got 8.0"),
        (lambda g: _mvm(g).attrs.pop("xbits"), "mvm %h_mvm needs the attribute xbits="),
        (lambda g: _mvm(g).attrs.update(shape=[1, 2]), "mvm %h_mvm has no attribute 'shape' (allowed: w, wbits"),
        (lambda g: setattr(g.ops[0], "kind", "quantize"), "has an unknown operation kind 'quantize'"),
        (lambda g: setattr(_mvm(g), "ins", ("%x_q", "%x_q")), "mvm %h_mvm takes 1 input(s), got 2"),
        (lambda g: setattr(_mvm(g), "ins", ("%nowhere",)), "uses undefined value %nowhere"),
        (lambda g: _mvm(g).attrs.update(w="$nothing"), "uses undefined constant $nothing"),
        (lambda g: g.ops.append(g.ops[0]), "defined twice"),
        (lambda g: g.ops.insert(0, g.ops.pop(1)), "uses undefined value %x_q"),
    ],
    ids=[
        "column-overlap",
        "tile-short",
        "tile-groups",
        "cols-not-a-record",
        "place-not-a-record",
        "attr-type",
        "attr-missing",
        "attr-unknown",
        "kind-unknown",
        "arity",
        "undefined-value",
        "undefined-const",
        "redefined",
        "use-before-def",
    ],
)
def test_verifier_rejects_broken_ir(edit: Callable[[Graph], None], message: str) -> None:
    verify_graph(_mutated("qdq_mlp", lambda g: None))
    with pytest.raises(InternalError, match=re.escape(message)):
        verify_graph(_mutated("qdq_mlp", edit))


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_digits_ir_roundtrips_after_every_pass(name: str) -> None:
    """The shipped models' IR (constants above 64 elements print as b64z payloads) round-trips too."""
    d = DIGITS[name]
    fe = run_frontend(str(d.model), load_npz(d.calib), log=io.StringIO())
    g = fe.graph
    _roundtrip(g, f"{name} after import")
    for p in default_passes(Options()):
        g = p.run(g)
        verify_graph(g)
        _roundtrip(g, f"{name} after {p.name}")
    assert any(c.size > 64 for c in g.consts.values())


def test_print_ir_after_all_digits(cli, tmp_path: Path) -> None:
    d = DIGITS["cnn"]
    out = tmp_path / "cnn.cram"
    res = cli("compile", str(d.model), "-o", str(out), "--calibration", str(d.calib), "--print-ir-after-all")
    assert res.rc == 0, res.err
    assert re.findall(r"^; IR after (\S+)$", res.err, flags=re.M) == STAGES
    assert "; IR after" not in res.out
    # the same text the passes print, in order
    log = io.StringIO()
    lower(d.model, load_npz(d.calib), Options(print_ir_after_all=True), log=log)
    assert log.getvalue() in res.err
