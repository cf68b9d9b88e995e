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

Static defects (the fault model's ``[defects]``, cramc.sim.chip): each cell a
partial product of a row reads or writes is defective independently at the
given densities, as the simulator draws them: the weight cells (wbits per
operand replica), the input bit-plane cells (xbits per replica) and the
scratch columns the layer's schemes use (the AND copies, TMR's voter output;
twice as many when the tile is double-buffered, the odd terms writing the
second set).
A stuck operand cell is read as its stuck value by every copy that reads it
(every copy of a non-replica scheme; copy i of a replica scheme reads replica
i, and dup's recompute senses its replica's operands); a stuck scratch cell
holds its value whatever its gate computes; a weak scratch cell's gate fails at
``weak_factor`` times its rate for the input pattern (capped at 0.5); a weak
operand cell, written by the host, is an ordinary cell.  The rows of an output
that hold no defect take the binomials above; each row that holds one is
simulated bit by bit, term by term (`_defect_rows`: the copies' gates with
their input-dependent rates, the voter, the senses with their read rates,
dup's comparison and recompute), so that every partial product's error has
the gate level's probability given its row's defects.  Not modelled: that on
a chip one input or scratch cell serves every output of its array and every
patch of the layer, and that a chip's defects stay for every inference (each
sample here is drawn on a chip of its own): the per-inference error
distribution of one output, which is what accuracy averages over chips,
is the gate level's; the spread between chips is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class LayerDefects:
    """What the defect model needs of one MVM: the fault model (its densities, gate and read rates), the
    scheme of every term (b, c), b major, and which terms count (the others are taken exact)."""

    fm: FaultModel
    plan: tuple[int, ...]
    counted: tuple[bool, ...]
    #: double-buffered scratch (the tile's ``dbuf=1``, cramc.backend.lower_tiles): the odd terms (b major)
    #: write the second set of scratch columns, so a defective scratch cell meets half the terms
    double: bool = False


def layer_defects(
    fm: FaultModel, op: Op, only_sig: int | None = None, scheme_override: int | None = None
) -> LayerDefects | None:
    """The defect model of one MVM under its plan (or an override at `only_sig`, as layer_rates), or None when
    the fault model has no [defects]."""
    if not fm.defects.any:
        return None
    wb, xb = op.attrs["wbits"], op.attrs["xbits"]
    plan = list(op.attrs.get("ecc", [0] * (wb * xb)))
    counted = [True] * (wb * xb)
    for i in range(wb * xb):
        if only_sig is not None and i // xb + i % xb != only_sig:
            counted[i] = False
        elif scheme_override is not None:
            plan[i] = scheme_override
    return LayerDefects(fm, tuple(plan), tuple(counted), bool(op.attrs.get("dbuf")))


def mvm_error(
    x: np.ndarray,
    op: Op,
    w: np.ndarray,
    rates: np.ndarray,
    rng: np.random.Generator,
    defects: LayerDefects | None = None,
    counts: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] | None = None,
) -> np.ndarray:
    """Sampled accumulator error for x [S, P, K] (int) and weights w [N, K/groups].

    rates: [wbits * xbits, 3] of (e_0, e_1, e_2) per (b, c), b major (k = w_b + x_c).  The
    number of rows a partial product is counted over is the tile's padded chunk length
    (padding rows hold zero operands, whose product can flip too), or K if the op is not
    tiled yet.  With `defects`, the rows holding a defective cell are drawn bit by bit
    (module docstring) and the binomials count the other rows.

    `counts` memoises, per term (b, c), the rows whose product is 1 and those with exactly one operand bit at
    1 ([S, P, N] each; the latter None until a term needs it): they depend on x and w only, so a caller that
    draws errors for the same x many times (auto-ecc scoring one layer under each scheme and seed) passes
    one dict for that x.  Only the bit-planes of the terms drawn are made; the draws are the same either way.
    """
    wb, xb, xs = op.attrs["wbits"], op.attrs["xbits"], op.attrs["xsigned"]
    groups = op.attrs.get("groups", 1)
    s, p, k = x.shape
    n, kg = w.shape
    rows_counted = kg
    if "tile" in op.attrs:
        t: Tile = op.attrs["tile"]
        rows_counted = t.chunks * t.rows
    terms = _TermCounts(x, w, groups, counts)
    err = np.zeros((s, p, n), dtype=np.int64)
    taken = None  # [S, P, N, wb, xb, 3]: rows per operand state that the defect rows take from the binomials
    if defects is not None:
        taken = _defect_rows(x, w, op, rows_counted, defects, rng, err)
    for b in range(wb):
        for c in range(xb):
            e0, e1, e2 = rates[b * xb + c]
            if e0 == 0 and e1 == 0 and e2 == 0:
                continue
            ones, maybe_one = terms.get(b, c, e0 != e1)
            one_op = maybe_one if maybe_one is not None else ones  # read only where e0 != e1
            zeros = rows_counted - ones
            if taken is not None:
                t0, t1, t2 = (taken[..., b, c, k] for k in range(3))
                ones, zeros = ones - t2, zeros - t0 - t1
                if e0 != e1:
                    one_op = one_op - t1
            if e0 == e1:  # one draw over all zero products (k = 0 and 1 alike)
                delta = binomial(zeros, e0, rng) - binomial(ones, e2, rng)
            else:
                delta = binomial(zeros - one_op, e0, rng) + binomial(one_op, e1, rng) - binomial(ones, e2, rng)
            neg = (b == wb - 1) != bool(xs and c == xb - 1)
            err += (-delta if neg else delta) << (b + c)
    return err


class _TermCounts:
    """Per term (b, c) of an MVM: the rows whose product is 1 and those with exactly one operand bit at 1,
    [S, P, N] each, from the bit-planes of the terms asked for only (float32 for exact BLAS counting)."""

    def __init__(
        self,
        x: np.ndarray,
        w: np.ndarray,
        groups: int,
        memo: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] | None,
    ):
        self.x, self.w = x.astype(np.int64, copy=False), w.astype(np.int64, copy=False)
        self.groups, self.memo = groups, memo
        self.xplanes: dict[int, np.ndarray] = {}  # c -> [S, P, K]
        self.wplanes: dict[int, np.ndarray] = {}  # b -> [N, Kg]

    def get(self, b: int, c: int, need_one: bool) -> tuple[np.ndarray, np.ndarray | None]:
        got = None if self.memo is None else self.memo.get((b, c))
        if got is not None and (got[1] is not None or not need_one):
            return got
        if c not in self.xplanes:
            self.xplanes[c] = ((self.x >> c) & 1).astype(np.float32)
        if b not in self.wplanes:
            self.wplanes[b] = ((self.w >> b) & 1).astype(np.float32)
        xpc, wpb = self.xplanes[c], self.wplanes[b]
        s, p, _ = xpc.shape
        n, kg = wpb.shape
        ng = n // self.groups
        ones = np.empty((s, p, n), dtype=np.int64)
        one_op = np.empty((s, p, n), dtype=np.int64) if need_one else None  # rows with one operand bit at 1
        for gi in range(self.groups):
            xs_ = xpc[:, :, gi * kg : (gi + 1) * kg]
            ws_ = wpb[gi * ng : (gi + 1) * ng]
            both = np.rint(xs_ @ ws_.T).astype(np.int64)
            ones[..., gi * ng : (gi + 1) * ng] = both
            if one_op is not None:
                nx = np.rint(xs_.sum(axis=-1)).astype(np.int64)[..., None]  # [S, P, 1]
                nw = np.rint(ws_.sum(axis=-1)).astype(np.int64)  # [Ng]
                one_op[..., gi * ng : (gi + 1) * ng] = nx + nw - 2 * both
        if self.memo is not None:
            self.memo[(b, c)] = (ones, one_op)
        return ones, one_op


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
    defects: dict[str, LayerDefects] | None = None,
    clean: dict[str, np.ndarray] | None = None,
    memo: dict[str, dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]]] | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate the graph exactly except for a sampled error on every MVM named in `rates` (and, with
    `defects`, the static defects of the MVMs named there).

    `clean` is the fault-free evaluation of the same inputs (`evaluate(g, inputs, keep=True)`): an op that
    draws no error and reads only values no error reached takes its value from there instead of being
    evaluated again (the same value: the evaluation is deterministic and draws nothing), so scoring faults
    in one layer costs that layer's draws and the layers after it.  With `clean`, `memo` keeps the per-term
    counts of `mvm_error` of every MVM whose input is clean, by op (its `counts`), across calls."""
    env = input_env(g, inputs)
    defects = defects or {}
    dirty: set[str] = set()  # values an error reached (with `clean`)
    for op in g.ops:
        r = rates.get(op.out)
        d = defects.get(op.out)
        noisy = op.kind == "mvm" and ((r is not None and r.any()) or d is not None)
        pure = clean is not None and not any(n in dirty for n in op.ins)
        if pure and not noisy:
            env["%" + op.out] = clean[op.out]  # type: ignore[index]
            continue
        args = [env[n] if n.startswith("%") else g.consts[n[1:]][None] for n in op.ins]
        out = clean[op.out] if pure else eval_op(g, op, args)  # type: ignore[index]
        if noisy:
            wb, xb = op.attrs["wbits"], op.attrs["xbits"]
            r = np.zeros((wb * xb, 3)) if r is None else r
            counts = memo.setdefault(op.out, {}) if pure and memo is not None else None
            out = out + mvm_error(args[0], op, g.consts[op.attrs["w"][1:]], r, rng, d, counts)
        env["%" + op.out] = out
        dirty.add("%" + op.out)
    if keep:
        return {k[1:]: v for k, v in env.items()}
    return {o.name: env["%" + o.name] for o in g.outputs}


def all_rates(g: Graph, fm: FaultModel) -> dict[str, np.ndarray]:
    return {op.out: layer_rates(fm, op) for op in g.ops if op.kind == "mvm"}


def all_defects(g: Graph, fm: FaultModel) -> dict[str, LayerDefects]:
    """The defect model of every MVM under its plan (empty without [defects])."""
    out = {}
    for op in g.ops:
        d = layer_defects(fm, op) if op.kind == "mvm" else None
        if d is not None:
            out[op.out] = d
    return out


# ----------------------------------------------------------------------------- static defects
#: The defect kinds of a cell here: none, stuck at 0, stuck at 1, weak.
_S0, _S1, _WEAK = 1, 2, 3  # 0: a sound cell
#: The value read from a cell of defect kind k holding bit v, at 2k + v.
_STORED = np.array([0, 1, 0, 0, 1, 1, 0, 1], dtype=np.int8)


def _defect_rows(
    x: np.ndarray, w: np.ndarray, op: Op, rows: int, d: LayerDefects, rng: np.random.Generator, err: np.ndarray
) -> np.ndarray:
    """Draw the defective cells of every (sample, patch, output, row), add the error of the rows holding one to
    `err` [S, P, N] (bit by bit, `_row_errors`), and return how many of those rows each (b, c) has in each
    operand state k (true operand bits), [S, P, N, wb, xb, 3], for the binomials to leave out."""
    wb, xb, xs = op.attrs["wbits"], op.attrs["xbits"], op.attrs["xsigned"]
    groups = op.attrs.get("groups", 1)
    s, p, _k = x.shape
    n, kg = w.shape
    ng = n // groups
    schemes = {c: ecc.scheme(c) for c in set(d.plan)}
    rep = max(sc.replicas for sc in schemes.values())
    scratch = max(sc.scratch for sc in schemes.values()) * (2 if d.double else 1)
    cells = rep * (wb + xb) + scratch  # per row: weight cells, input cells, scratch cells
    tb, tc = np.nonzero(np.array(d.counted).reshape(wb, xb))  # the counted terms (the others are exact)
    # only the cells a counted term uses can change its product: draw those (a row whose defects all lie
    # elsewhere behaves as a sound row for the counted terms, so the binomials may keep it)
    bs, cs = np.unique(tb), np.unique(tc)
    used = np.concatenate(
        [
            (np.arange(rep)[:, None] * wb + bs[None, :]).reshape(-1),
            rep * wb + (np.arange(rep)[:, None] * xb + cs[None, :]).reshape(-1),
            rep * (wb + xb) + np.arange(scratch),
        ]
    )
    shape = (s, p, n, wb, xb, 3)  # the rows taken per (sample, patch, output, b, c, k)
    df = d.fm.defects
    total = s * p * n * rows * used.size
    pos = _bernoulli_positions(total, df.density, rng)
    if pos.size == 0:
        return np.zeros(shape, dtype=np.int64)
    kind = rng.choice(3, size=pos.size, p=np.array([df.stuck0, df.stuck1, df.weak]) / df.density) + 1
    row_id, cell = np.divmod(pos, used.size)
    new = np.empty(row_id.size, dtype=bool)  # row_id is sorted: a row starts where it changes
    new[0], new[1:] = True, row_id[1:] != row_id[:-1]
    ids, inv = row_id[new], np.cumsum(new) - 1
    kinds = np.zeros((ids.size, cells), dtype=np.int8)
    kinds[inv, used[cell]] = kind
    si, pi, ni, ri = np.unravel_index(ids, (s, p, n, rows))
    inside = ri < kg  # padding rows hold zero operands
    rr = np.minimum(ri, kg - 1)
    xv = np.where(inside, x[si, pi, (ni // ng) * kg + rr], 0).astype(np.int64)
    wv = np.where(inside, w[ni, rr], 0).astype(np.int64)
    wbit = ((wv[:, None] >> np.arange(wb)) & 1).astype(np.int8)  # [D, wb]
    xbit = ((xv[:, None] >> np.arange(xb)) & 1).astype(np.int8)  # [D, xb]
    wk = kinds[:, : rep * wb].reshape(-1, rep, wb)
    xk = kinds[:, rep * wb : rep * (wb + xb)].reshape(-1, rep, xb)
    tk = kinds[:, rep * (wb + xb) :]
    delta = _row_errors(wbit, xbit, wk, xk, tk, d, schemes, tb, tc, rng)  # [D, T]: sensed - true product
    sign = np.where(tb == wb - 1, -1, 1)
    if xs:
        sign = np.where(tc == xb - 1, -sign, sign)
    weight = sign.astype(np.int64) << (tb + tc)
    np.add.at(err, (si, pi, ni), delta @ weight)
    # flat index into `shape`
    state = wbit[:, tb] + xbit[:, tc]  # [D, T]
    flat = ((si * p + pi) * n + ni)[:, None] * (wb * xb * 3) + ((tb * xb + tc) * 3)[None, :] + state
    return np.bincount(flat.reshape(-1), minlength=math.prod(shape)).reshape(shape)


def binomial(n: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Independent Binomial(n_i, p) draws, one per element of `n` (non-negative integers), int64.

    Where fewer than one success per element is expected, the n.sum() trials are laid end to end, their
    successes drawn by geometric gaps (`_bernoulli_positions`) and counted per element: the successes of
    element i are those among its own n_i independent Bernoulli(p) trials, so the counts are independent
    Binomial(n_i, p), the same distribution as ``rng.binomial(n, p)`` at a cost per success rather than per
    element (numpy's binomial costs about 36 ns an element here; at p = 1e-3 most elements draw none).
    Otherwise ``rng.binomial``.  Either way the draws are a function of (n, p) and the generator's state.
    """
    n = np.asarray(n, dtype=np.int64)
    if p == 0.0 or n.size == 0:
        return np.zeros(n.shape, dtype=np.int64)
    ends = np.cumsum(n, dtype=np.int64).ravel()
    total = int(ends[-1])
    if p >= 0.5 or total * p >= n.size:
        return rng.binomial(n, p).astype(np.int64, copy=False)
    pos = _bernoulli_positions(total, p, rng)
    return np.bincount(np.searchsorted(ends, pos, side="right"), minlength=n.size).reshape(n.shape)


def _bernoulli_positions(total: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """The indices in [0, total) of independent Bernoulli(p) successes, ascending: geometric gaps (cheaper than
    a binomial count and a choice without replacement, and the same distribution)."""
    chunk = int(total * p * 1.05) + 64
    parts, last = [], -1
    while last < total:
        g = last + np.cumsum(rng.geometric(p, size=chunk))
        parts.append(g)
        last = int(g[-1])
    pos = np.concatenate(parts)
    return pos[pos < total]


def _stored(bit: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """The value a cell holding `bit` reads as, given its defect kind (stuck cells their stuck value)."""
    return _STORED[2 * kind + bit]


def _gate(
    ones: np.ndarray, out: np.ndarray, mnemonic: str, cell: np.ndarray, d: LayerDefects, rng: np.random.Generator
) -> np.ndarray:
    """The value a gate leaves in its output cell: its correct `out`, flipped at the gate's rate for `ones`
    inputs at 1 (weak cell: weak_factor times, capped at 0.5), then a stuck cell's value."""
    fm = d.fm
    rate = np.array([fm.gate_wrong(mnemonic, k) for k in range(int(ones.max(initial=0)) + 1)])
    if not rate.any() and fm.defects.weak == 0:
        return _stored(out, cell)
    p = rate[ones]
    if fm.defects.weak > 0:
        p = np.where(cell == _WEAK, np.maximum(p, np.minimum(0.5, fm.defects.weak_factor * p)), p)
    v = out ^ (rng.random(out.shape) < p)
    return _stored(v, cell)


def _sense(v: np.ndarray, d: LayerDefects, rng: np.random.Generator) -> np.ndarray:
    r = d.fm.read
    if r.p10 == 0 and r.p01 == 0:
        return v
    return v ^ (rng.random(v.shape) < np.where(v == 1, r.p10, r.p01))


def _row_errors(
    wbit: np.ndarray,
    xbit: np.ndarray,
    wk: np.ndarray,
    xk: np.ndarray,
    tk: np.ndarray,
    d: LayerDefects,
    schemes: dict[int, ecc.Scheme],
    terms_b: np.ndarray,
    terms_c: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sensed minus true partial product of the terms (terms_b, terms_c) [T] of every defective row [D, T],
    each term under its scheme: the copies' ANDs (copy i reads operand replica sc.replica(i) into scratch t + i),
    then the vote (a MAJ3 into t + 3, sensed), the periphery's vote of the sensed copies, or dup's comparison
    and recompute from the sensed operands."""
    dd, wb = wbit.shape
    xb = xbit.shape[1]
    # with double buffering the odd terms (b major) use scratch t+S .. t+2S-1
    width = tk.shape[1] // (2 if d.double else 1)
    plan = np.array(d.plan).reshape(wb, xb)[terms_b, terms_c]
    out = np.zeros((dd, terms_b.size), dtype=np.int64)
    stored: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per replica: the operand bits as its cells read
    for code, sc in schemes.items():
        j = np.flatnonzero(plan == code)  # the scheme's terms: work on [D, T_scheme]
        if j.size == 0:
            continue
        tb, tc = terms_b[j], terms_c[j]
        shift = width * ((tb * xb + tc) % 2) if d.double else np.zeros_like(tb)

        def operands(replica: int, tb: np.ndarray = tb, tc: np.ndarray = tc) -> tuple[np.ndarray, np.ndarray]:
            if replica not in stored:
                stored[replica] = _stored(wbit, wk[:, replica]), _stored(xbit, xk[:, replica])
            sw, sx = stored[replica]
            return sw[:, tb], sx[:, tc]

        copies = []
        for i in range(sc.copies):
            w_, x_ = operands(sc.replica(i))
            ones = w_ + x_
            copies.append(_gate(ones, (ones == 2).astype(np.int8), "and", tk[:, i + shift], d, rng))
        if sc.name.startswith("tmr"):
            ones = copies[0] + copies[1] + copies[2]
            sensed = _sense(_gate(ones, (ones >= 2).astype(np.int8), "maj3", tk[:, 3 + shift], d, rng), d, rng)
        elif sc.tree == ecc.VOTE.tree:
            a, b, c = (_sense(v, d, rng) for v in copies)
            sensed = (a + b + c >= 2).astype(np.int8)
        elif sc.tree == ecc.DUP.tree:
            a, b = (_sense(v, d, rng) for v in copies)
            w_, x_ = operands(sc.replica(sc.copies))
            again = _sense(w_, d, rng) & _sense(x_, d, rng)
            sensed = np.where(a == b, a, again)
        else:
            sensed = _sense(copies[0], d, rng)
        out[:, j] = sensed - (wbit[:, tb] & xbit[:, tc])
    return out
