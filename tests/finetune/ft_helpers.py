"""Helpers of the fine-tuning tests: a one-MVM model, its gate-level accumulator errors, test statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cramc.compiler import Options, compile_model
from cramc.errmodel import FaultModel
from cramc.isa.parser import parse
from cramc.isa.verifier import verify
from cramc.sim.interp import run
from cramc.train.noise import MvmNoise, state_counts, term_weights


def one_mvm_model(path: Path, w: np.ndarray) -> None:
    """QDQ model y = DQ(x uint8, 1, 0) @ DQ(w int8, 1, 0) with x [1, K]: the program's output is the accumulator."""
    k, n = w.shape
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    zx = numpy_helper.from_array(np.array(0, np.uint8), "zx")
    zw = numpy_helper.from_array(np.array(0, np.int8), "zw")
    wq = numpy_helper.from_array(w.astype(np.int8), "w_q")
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "one", "zx"], ["xf"], name="dqx"),
        helper.make_node("DequantizeLinear", ["w_q", "one", "zw"], ["wf"], name="dqw"),
        helper.make_node("MatMul", ["xf", "wf"], ["y"], name="mm"),
    ]
    g = helper.make_graph(
        nodes,
        "one_mvm",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [one, zx, zw, wq],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def gate_level_errors(
    tmp: Path, x: np.ndarray, w: np.ndarray, fm: FaultModel, samples: int, rows: int, seed: int
) -> tuple[np.ndarray, str]:
    """Accumulator errors of `samples` faulty gate-level runs of x [K] (uint8) times w [K, N] (int8): [samples, N].

    Also returns the program text (to check which micro-program the MVM used).
    """
    path = tmp / "one_mvm.onnx"
    one_mvm_model(path, w)
    text = compile_model(
        str(path), {"x": x.reshape(1, 1, -1).astype(np.uint8)}, Options(rows=rows, n_validation=1), log=_Null()
    )
    linked = verify(parse(text, "one_mvm.cram"))
    xs = np.broadcast_to(x.astype(np.int64), (samples, 1, x.size)).copy()
    res = run(linked, {"x": xs}, fm, seed=seed, max_memory=1 << 30)
    exact = x.astype(np.int64) @ w.astype(np.int64)
    got = res.outputs["y"].reshape(samples, -1).astype(np.float64)
    return got - exact[None].astype(np.float64), text


def model_samples(x: np.ndarray, w: np.ndarray, spec: MvmNoise, samples: int, seed: int) -> np.ndarray:
    """Draws of the binomial model (cramc.ir.noisy.mvm_error) for the same MVM: [samples, N]."""
    from cramc.ir.graph import Op
    from cramc.ir.noisy import mvm_error
    from cramc.ir.tiling import Tile

    op = Op("mvm", "y", ("%x",), {"wbits": spec.wbits, "xbits": spec.xbits, "xsigned": int(spec.xsigned)})
    # the tile only sets how many rows are counted: give mvm_error exactly spec.rows
    op.attrs["tile"] = Tile(1, 1, spec.rows, 1, 1)
    xs = np.broadcast_to(x.astype(np.int64), (samples, 1, x.size))
    err = mvm_error(xs, op, w.T.astype(np.int64), spec.rates, np.random.default_rng(seed))
    return err.reshape(samples, -1).astype(np.float64)


def kappa4(x: np.ndarray, w: np.ndarray, spec: MvmNoise) -> np.ndarray:
    """Fourth cumulant of the model's error per output (cumulants of independent terms add)."""
    n = state_counts(x.reshape(1, 1, -1), w.T, spec)[0, 0].astype(np.float64)  # [N, wb, xb, 3]
    e = spec.rates.reshape(spec.wbits, spec.xbits, 3)
    t4 = term_weights(spec.wbits, spec.xbits, spec.xsigned).astype(np.float64) ** 4

    def k4(n: np.ndarray, p: np.ndarray) -> np.ndarray:
        q = p * (1 - p)
        return n * q * (1 - 6 * q)

    return (t4 * k4(n, e).sum(-1)).sum(axis=(-2, -1))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D (exact for ties: both CDFs evaluated at every value)."""
    a, b = np.sort(a), np.sort(b)
    v = np.union1d(a, b)
    fa = np.searchsorted(a, v, side="right") / a.size
    fb = np.searchsorted(b, v, side="right") / b.size
    return float(np.abs(fa - fb).max())


def ks_critical(alpha: float, n: int, m: int) -> float:
    """Asymptotic critical D at significance alpha (conservative for discrete distributions)."""
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass
