"""The statistical fault model of an MVM, derived from the gate-level fault model.

In the hybrid lowering each partial-product bit pp = w_b AND x_c is made by one
CRAM AND gate (or several, under error correction), sensed by the adder tree
and counted.  So the error of an accumulator is

    sum over (b, c) of s(b, c) * 2^(b+c) * (n01 - n10)

where, over the active rows of the tile, n01 ~ Binomial(#zero products, e0)
and n10 ~ Binomial(#one products, e1) are independent, and (e0, e1) are the
probabilities that a sensed partial product whose correct value is 0 (1) is
wrong.  `pp_error_rates` derives (e0, e1) from the fault model for each
protection scheme (its entry in cramc.ir.ecc); `noisy_evaluate` runs an IR
graph exactly, except that every MVM gets that error sampled per output.  This
is what `auto` error correction, error-aware fine-tuning and the statistical
simulation mode use; a test checks it against the gate-level interpreter.
"""

from __future__ import annotations

import numpy as np

from cramc.errmodel import FaultModel
from cramc.ir import ecc
from cramc.ir.graph import Graph, Op
from cramc.ir.semantics import eval_op, input_env
from cramc.ir.tiling import Tile


def pp_error_rates(fm: FaultModel, scheme: int) -> tuple[float, float]:
    """(e0, e1): probability that the sensed partial product is wrong, by its correct value, under a scheme
    (a plan code; each scheme's entry in cramc.ir.ecc derives them)."""
    return ecc.scheme(scheme).pp_error_rates(fm)


def bit_planes(v: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement bit-planes: [..., bits] of 0/1 (float32 for exact BLAS counting)."""
    return ((v.astype(np.int64)[..., None] >> np.arange(bits)) & 1).astype(np.float32)


def mvm_error(x: np.ndarray, op: Op, w: np.ndarray, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sampled accumulator error for x [S, P, K] (int) and weights w [N, K/groups].

    rates: [wbits * xbits, 2] of (e0, e1) per (b, c), b major.  The number of rows a
    partial product is counted over is the tile's padded chunk length (padding rows
    hold zeros that can flip too), or K if the op is not tiled yet.
    """
    wb, xb, xs = op.attrs["wbits"], op.attrs["xbits"], op.attrs["xsigned"]
    groups = op.attrs.get("groups", 1)
    s, p, k = x.shape
    n, kg = w.shape
    ng = n // groups
    rows_counted = kg
    if "tile" in op.attrs:
        t: Tile = op.attrs["tile"]
        rows_counted = t.chunks * t.rows
    xp = bit_planes(x, xb)  # [S, P, K, xb]
    wp = bit_planes(w, wb)  # [N, Kg, wb]
    err = np.zeros((s, p, n), dtype=np.int64)
    for b in range(wb):
        for c in range(xb):
            e0, e1 = rates[b * xb + c]
            if e0 == 0 and e1 == 0:
                continue
            ones = np.empty((s, p, n), dtype=np.int64)
            for gi in range(groups):
                xs_ = xp[:, :, gi * kg : (gi + 1) * kg, c]
                ws_ = wp[gi * ng : (gi + 1) * ng, :, b]
                ones[..., gi * ng : (gi + 1) * ng] = np.rint(xs_ @ ws_.T).astype(np.int64)
            zeros = rows_counted - ones
            delta = rng.binomial(zeros, e0) - rng.binomial(ones, e1)
            neg = (b == wb - 1) != bool(xs and c == xb - 1)
            err += (-delta if neg else delta) << (b + c)
    return err


def layer_rates(fm: FaultModel, op: Op, only_sig: int | None = None, scheme_override: int | None = None) -> np.ndarray:
    """(e0, e1) per (b, c) of one MVM under its ecc plan (or an override), optionally only at one significance."""
    wb, xb = op.attrs["wbits"], op.attrs["xbits"]
    plan = op.attrs.get("ecc", [0] * (wb * xb))
    out = np.zeros((wb * xb, 2))
    for i in range(wb * xb):
        sig = i // xb + i % xb
        if only_sig is not None and sig != only_sig:
            continue
        out[i] = pp_error_rates(fm, plan[i] if scheme_override is None else scheme_override)
    return out


def noisy_evaluate(
    g: Graph,
    inputs: dict[str, np.ndarray],
    rates: dict[str, np.ndarray],
    rng: np.random.Generator,
    keep: bool = False,
) -> dict[str, np.ndarray]:
    """Evaluate the graph exactly except for a sampled error on every MVM named in `rates`."""
    env = input_env(g, inputs)
    for op in g.ops:
        args = [env[n] if n.startswith("%") else g.consts[n[1:]][None] for n in op.ins]
        out = eval_op(g, op, args)
        r = rates.get(op.out)
        if r is not None and op.kind == "mvm" and r.any():
            out = out + mvm_error(args[0], op, g.consts[op.attrs["w"][1:]], r, rng)
        env["%" + op.out] = out
    if keep:
        return {k[1:]: v for k, v in env.items()}
    return {o.name: env["%" + o.name] for o in g.outputs}


def all_rates(g: Graph, fm: FaultModel) -> dict[str, np.ndarray]:
    return {op.out: layer_rates(fm, op) for op in g.ops if op.kind == "mvm"}
