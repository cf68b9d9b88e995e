"""ONNX operator conformance: the node test cases shipped in the onnx package, compiled and simulated.

The cases come from ``onnx.backend.test.case.node.collect_testcases(None)`` (the same models and
data onnx's backend test suite uses).  A case belongs to an op family checked here when its model
is a single node of one of FAMILIES; every such case is either SELECTED (runs) or EXCLUDED (with
the reason, and the diagnostic cramc gives for it, which is checked too).  A new onnx release that
adds cases makes `test_every_family_case_is_selected_or_excluded` fail until they are sorted.

Harness: every graph input but the first (the activation) becomes an initializer holding the
test's value, because cramc keeps weights stationary in the arrays: they must be constants.  The
model is compiled with the test input itself as calibration data, the program verified and run on
the simulator at zero faults, and its output compared:
- integer outputs (MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv, MaxPool on uint8) must
  equal onnx's expected output exactly;
- float outputs must (a) agree with onnxruntime running the same quantised QDQ model (from
  cramc.frontend.pipeline.run_frontend): at least 99% of the elements identical and none more than
  one output quantisation step (Frontend.output_tol) apart, and (b) lie within 5% of the expected
  output's range of onnx's float expected output.  Where onnxruntime's quantiser leaves the node in
  float (a lone MaxPool/AveragePool has no quantised neighbour, so the QDQ model is the float model
  and output_tol is 0) there is no quantisation step: cramc's CMOS float operation must then equal
  onnxruntime's to float32 rounding (a few ulp of the output's magnitude; summation order differs).

onnx generates the case data with numpy's global generator, so it is seeded before collecting.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cramc.compiler import Options, compile_model, run_onnxruntime
from cramc.errors import UserError
from cramc.frontend.pipeline import run_frontend
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.interp import run

FAMILIES = frozenset(
    {
        "MatMulInteger",
        "ConvInteger",
        "QLinearMatMul",
        "QLinearConv",
        "Gemm",
        "MatMul",
        "Conv",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
    }
)

SELECTED = [
    # integer operators: exact
    "test_matmulinteger",
    "test_convinteger_without_padding",
    "test_convinteger_with_padding",
    "test_qlinearmatmul_2D_uint8_float32",
    "test_qlinearmatmul_3D_uint8_float32",
    "test_qlinearmatmul_2D_uint8_float16",
    "test_qlinearmatmul_3D_uint8_float16",
    "test_qlinearmatmul_2D_int8_float32",
    "test_qlinearmatmul_3D_int8_float32",
    "test_qlinearmatmul_2D_int8_float16",
    "test_qlinearmatmul_3D_int8_float16",
    "test_qlinearconv",
    "test_maxpool_2d_uint8",
    # float operators: within quantisation tolerance
    "test_gemm_default_zero_bias",
    "test_gemm_default_no_bias",
    "test_gemm_default_scalar_bias",
    "test_gemm_default_single_elem_vector_bias",
    "test_gemm_default_vector_bias",
    "test_gemm_default_matrix_bias",
    "test_gemm_transposeA",
    "test_gemm_transposeB",
    "test_gemm_alpha",
    "test_gemm_beta",
    "test_gemm_all_attributes",
    "test_matmul_2d",
    "test_matmul_3d",
    "test_matmul_4d",
    "test_matmul_bcast",
    "test_matmul_1d_3d",
    "test_matmul_4d_1d",
    "test_matmul_1d_1d",
    "test_basic_conv_with_padding",
    "test_basic_conv_without_padding",
    "test_conv_with_strides_padding",
    "test_conv_with_strides_no_padding",
    "test_conv_with_strides_and_asymmetric_padding",
    "test_conv_with_autopad_same",
    "test_maxpool_2d_default",
    "test_maxpool_2d_precomputed_pads",
    "test_maxpool_2d_precomputed_strides",
    "test_maxpool_2d_precomputed_same_upper",
    "test_maxpool_2d_same_upper",
    "test_maxpool_2d_same_lower",
    "test_maxpool_2d_pads",
    "test_maxpool_2d_strides",
    "test_maxpool_2d_ceil",
    "test_maxpool_2d_ceil_output_size_reduce_by_one",
    "test_maxpool_2d_dilations",
    "test_averagepool_2d_default",
    "test_averagepool_2d_precomputed_pads",
    "test_averagepool_2d_precomputed_pads_count_include_pad",
    "test_averagepool_2d_precomputed_strides",
    "test_averagepool_2d_precomputed_same_upper",
    "test_averagepool_2d_same_upper",
    "test_averagepool_2d_same_lower",
    "test_averagepool_2d_pads",
    "test_averagepool_2d_pads_count_include_pad",
    "test_averagepool_2d_strides",
    "test_averagepool_2d_ceil",
    "test_averagepool_2d_ceil_last_window_starts_on_pad",
    "test_averagepool_2d_dilations",
    "test_globalaveragepool",
    "test_globalaveragepool_precomputed",
]

_REJECTS = "cramc rejects it: "
_ONLY_2D = (
    f"cramc lowers 2-D (NCHW) pooling only, and a 1-D or 3-D window has no im2col/pool instruction; "
    f"{_REJECTS}only 2-D pooling is supported"
)
_INDICES = (
    "MaxPool with its optional second output Indices (the flattened int64 position of each maximum): "
    "cramc's maxpool instruction yields the pooled values only and no CMOS instruction computes argmax "
    f"positions; {_REJECTS}MaxPool with an Indices output is not supported"
)
EXCLUDED: dict[str, str] = {
    "test_averagepool_1d_default": "1-D pooling ([1, 3, 32] input): " + _ONLY_2D,
    "test_maxpool_1d_default": "1-D pooling ([1, 3, 32] input): " + _ONLY_2D,
    "test_averagepool_3d_default": "3-D pooling ([1, 3, 32, 32, 32] input): " + _ONLY_2D,
    "test_averagepool_3d_dilations_small": "3-D pooling ([1, 1, 4, 4, 4] input): " + _ONLY_2D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": "3-D pooling: " + _ONLY_2D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": "3-D pooling: " + _ONLY_2D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": "3-D pooling: " + _ONLY_2D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": "3-D pooling: " + _ONLY_2D,
    "test_maxpool_3d_default": "3-D pooling ([1, 3, 32, 32, 32] input): " + _ONLY_2D,
    "test_maxpool_3d_dilations": "3-D pooling ([1, 1, 4, 4, 4] input): " + _ONLY_2D,
    "test_maxpool_3d_dilations_use_ref_impl": "3-D pooling ([1, 1, 4, 4, 4] input): " + _ONLY_2D,
    "test_maxpool_3d_dilations_use_ref_impl_large": "3-D pooling ([1, 1, 32, 32, 32] input): " + _ONLY_2D,
    "test_maxpool_with_argmax_2d_precomputed_pads": _INDICES,
    "test_maxpool_with_argmax_2d_precomputed_strides": _INDICES,
}

SEED = 20260601
SAME_FRACTION = 0.99  # of the elements identical to onnxruntime's QDQ result
FLOAT_SPAN = 0.05  # of the expected output's range, against onnx's float expected output


@functools.lru_cache(maxsize=1)
def _family_cases() -> dict[str, object]:
    """name -> onnx TestCase for the single-node models of FAMILIES (collected once per process, seeded)."""
    from onnx.backend.test.case.node import collect_testcases

    state = np.random.get_state()
    np.random.seed(SEED)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            cases = collect_testcases(None)
    finally:
        np.random.set_state(state)
    return {c.name: c for c in cases if len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in FAMILIES}


@pytest.fixture(scope="module")
def cases() -> dict[str, object]:
    return _family_cases()


def _freeze(model: onnx.ModelProto, inputs: list[np.ndarray], folder: Path) -> tuple[Path, str]:
    """Every graph input but the first becomes an initializer with the test's value."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi, x in zip(list(g.input)[1:], inputs[1:], strict=True):
        g.initializer.append(numpy_helper.from_array(np.asarray(x), vi.name))
    first = g.input[0].name
    del g.input[1:]
    path = folder / "model.onnx"
    onnx.save(m, str(path))
    return path, first


def _compile_and_run(path: Path, first: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    with open(os.devnull, "w") as devnull:
        text = compile_model(str(path), {first: x[None]}, Options(arrays=64), log=devnull)
    linked = verify(parse(text, str(path.with_suffix(".cram"))))
    assert len(linked.inputs) == 1 and len(linked.outputs) == 1
    res = run(linked, {linked.inputs[0].name: x[None]})
    return res.outputs[linked.outputs[0].name][0], linked.outputs[0].dtype


def test_every_family_case_is_selected_or_excluded(cases: dict[str, object]) -> None:
    assert len(SELECTED) == len(set(SELECTED))
    assert not set(SELECTED) & set(EXCLUDED)
    assert set(cases) == set(SELECTED) | set(EXCLUDED)
    for reason in EXCLUDED.values():
        assert _REJECTS in reason


@pytest.mark.parametrize("name", SELECTED, ids=SELECTED)
def test_conformance(name: str, cases: dict[str, object], tmp_path: Path) -> None:
    case = cases[name]
    assert case.data_sets, name  # type: ignore[attr-defined]
    for inputs, expected in case.data_sets:  # type: ignore[attr-defined]
        path, first = _freeze(case.model, inputs, tmp_path)  # type: ignore[attr-defined]
        x = np.asarray(inputs[0])
        got, dtype = _compile_and_run(path, first, x)
        want = np.asarray(expected[0])
        assert got.size == want.size
        got = got.reshape(want.shape)
        if np.issubdtype(want.dtype, np.integer):
            assert dtype == {np.dtype("uint8"): "u8", np.dtype("int8"): "i8", np.dtype("int32"): "i32"}[want.dtype]
            np.testing.assert_array_equal(got, want)
            continue
        # (a) against onnxruntime on the quantised model cramc compiled
        with open(os.devnull, "w") as devnull:
            fe = run_frontend(str(path), {first: x[None]}, log=devnull)
        out_name = fe.qmodel.graph.output[0].name
        ref = run_onnxruntime(fe.qmodel, fe.calibration)[out_name][0].reshape(want.shape).astype(np.float64)
        diff = np.abs(got.astype(np.float64) - ref)
        if fe.output_tol > 0:
            same = float((diff == 0).mean())
            assert same >= SAME_FRACTION, f"only {same:.1%} identical to onnxruntime (QDQ)"
            assert diff.max() <= fe.output_tol * (1 + 1e-6), f"{diff.max()} > one step {fe.output_tol}"
        else:
            assert not any(n.op_type == "QuantizeLinear" for n in fe.qmodel.graph.node)
            ulp = np.spacing(np.float32(np.abs(ref).max(initial=1.0)))
            assert diff.max() <= 4 * ulp, f"float op differs from onnxruntime by {diff.max()}"
        # (b) against onnx's float expected output
        span = float(np.ptp(want)) or float(np.abs(want).max())
        err = float(np.abs(got.astype(np.float64) - want).max())
        assert err <= FLOAT_SPAN * span, f"max |cramc - expected| = {err:.4g} > 5% of the range {span:.4g}"


@pytest.mark.parametrize("name", sorted(EXCLUDED), ids=sorted(EXCLUDED))
def test_excluded_case_is_rejected_with_its_reason(name: str, cases: dict[str, object], tmp_path: Path) -> None:
    case = cases[name]
    inputs, _ = case.data_sets[0]  # type: ignore[attr-defined]
    path, first = _freeze(case.model, inputs, tmp_path)  # type: ignore[attr-defined]
    x = np.asarray(inputs[0])
    with pytest.raises(UserError) as info, open(os.devnull, "w") as devnull:
        compile_model(str(path), {first: x[None]}, Options(arrays=64), log=devnull)
    assert EXCLUDED[name].split(_REJECTS)[1] in info.value.message
    node = case.model.graph.node[0]  # type: ignore[attr-defined]
    assert f"node '{node.name or node.output[0]}'" in info.value.message  # where: unnamed nodes by their output
