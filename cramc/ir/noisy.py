"""The statistical fault model of an MVM, derived from the gate-level fault model.

In the hybrid lowering each partial-product bit pp = w_b AND x_c is made by one
CRAM AND gate (or several, under error correction), sensed by the adder tree
and counted.  So the error of an accumulator is

    sum over (b, c) of s(b, c) * 2^(b+c) * (n01 - n10)

where, over the active rows of the tile, with n_k the rows in which k of the
two operand bits w_b, x_c are 1 (k = 2: the product is 1),

    n01 = Binomial(n_0, e_0) + Binomial(n_1, e_1),   n10 = Binomial(n_2, e_2),

all independent, and e_k is the probability that a sensed partial product is
wrong in operand state k.  It depends on k, not only on the product, when the
AND gate's rate is input-dependent (by_ones: an AND with one input at 1 sits
next to its threshold).  `pp_error_rates` derives (e_0, e_1, e_2) from the
fault model for each protection scheme (its entry in cramc.ir.ecc); when
e_0 = e_1 the two zero states are drawn as one binomial over the zero
products.  Padding rows hold w = x = 0 (state 0).  `noisy_evaluate` runs an IR
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


def pp_error_rates(fm: FaultModel, scheme: int) -> ecc.Rates:
    """(e_0, e_1, e_2): probability that the sensed partial product is wrong with k = 0, 1, 2 of its operand bits
    at 1, under a scheme (a plan code; each scheme's entry in cramc.ir.ecc derives them)."""
    return ecc.scheme(scheme).pp_error_rates(fm)


def bit_planes(v: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement bit-planes: [..., bits] of 0/1 (float32 for exact BLAS counting)."""
    return ((v.astype(np.int64)[..., None] >> np.arange(bits)) & 1).astype(np.float32)


def mvm_error(x: np.ndarray, op: Op, w: np.ndarray, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sampled accumulator error for x [S, P, K] (int) and weights w [N, K/groups].

    rates: [wbits * xbits, 3] of (e_0, e_1, e_2) per (b, c), b major (k = w_b + x_c).  The
    number of rows a partial product is counted over is the tile's padded chunk length
    (padding rows hold zero operands, whose product can flip too), or K if the op is not
    tiled yet.
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
            e0, e1, e2 = rates[b * xb + c]
            if e0 == 0 and e1 == 0 and e2 == 0:
                continue
            ones = np.empty((s, p, n), dtype=np.int64)
            one_op = np.empty((s, p, n), dtype=np.int64)  # rows with exactly one operand bit at 1
            for gi in range(groups):
                xs_ = xp[:, :, gi * kg : (gi + 1) * kg, c]
                ws_ = wp[gi * ng : (gi + 1) * ng, :, b]
                both = np.rint(xs_ @ ws_.T).astype(np.int64)
                ones[..., gi * ng : (gi + 1) * ng] = both
                if e0 != e1:
                    nx = np.rint(xs_.sum(axis=-1)).astype(np.int64)[..., None]  # [S, P, 1]
                    nw = np.rint(ws_.sum(axis=-1)).astype(np.int64)  # [Ng]
                    one_op[..., gi * ng : (gi + 1) * ng] = nx + nw - 2 * both
            zeros = rows_counted - ones
            if e0 == e1:  # one draw over all zero products (k = 0 and 1 alike)
                delta = rng.binomial(zeros, e0) - rng.binomial(ones, e2)
            else:
                delta = rng.binomial(zeros - one_op, e0) + rng.binomial(one_op, e1) - rng.binomial(ones, e2)
            neg = (b == wb - 1) != bool(xs and c == xb - 1)
            err += (-delta if neg else delta) << (b + c)
    return err


def layer_rates(fm: FaultModel, op: Op, only_sig: int | None = None, scheme_override: int | None = None) -> np.ndarray:
    """(e_0, e_1, e_2) per (b, c) of one MVM under its ecc plan (or an override), optionally only at one
    significance: [wbits * xbits, 3], b major."""
    wb, xb = op.attrs["wbits"], op.attrs["xbits"]
    plan = op.attrs.get("ecc", [0] * (wb * xb))
    out = np.zeros((wb * xb, 3))
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
