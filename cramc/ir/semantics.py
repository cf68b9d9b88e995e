"""Reference semantics of the IR: exact numpy evaluation, shape inference (cached) and the IR verifier.

CMOS operations reuse the ISA's reference functions (cramc.isa.cmos), so the
IR and the emitted program cannot disagree about what, say, `im2col` means.
MVMs are exact int64 matrix products.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cramc.errors import InternalError
from cramc.ir.graph import Graph, Op
from cramc.ir.ops import check_op, semantic_attrs
from cramc.ir.tiling import check_tiling
from cramc.isa.cmos import CMOS_OPS

MVM_KINDS = ("mvm", "conv")


def _attrs(g: Graph, op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in op.attrs.items():
        out[k] = g.consts[v[1:]] if isinstance(v, str) and v.startswith("$") else v
    return out


def mvm(x: np.ndarray, w: np.ndarray, groups: int = 1) -> np.ndarray:
    """x [S, P, K] int, w [N, K/groups] int (block-diagonal over groups) -> [S, P, N] int64."""
    x = x.astype(np.int64)
    w = w.astype(np.int64)
    n, kg = w.shape
    s, p, k = x.shape
    if k != kg * groups or n % groups:
        raise InternalError(f"mvm shapes: x K={k}, w {list(w.shape)}, groups={groups}")
    ng = n // groups
    out = np.empty((s, p, n), dtype=np.int64)
    # numpy multiplies int64 matrices without BLAS (tens of times slower): where every partial sum of the
    # products is an integer float64 holds exactly (below 2^53 in magnitude), BLAS's float64 product gives
    # the same integers in any order of summation
    bound = (int(np.abs(x).max(initial=0)) * int(np.abs(w).max(initial=0))) * max(kg, 1)
    if bound < 2**53:
        xf, wf = x.astype(np.float64), w.astype(np.float64)
        for gi in range(groups):
            out[..., gi * ng : (gi + 1) * ng] = xf[..., gi * kg : (gi + 1) * kg] @ wf[gi * ng : (gi + 1) * ng].T
        return out
    for gi in range(groups):
        out[..., gi * ng : (gi + 1) * ng] = x[..., gi * kg : (gi + 1) * kg] @ w[gi * ng : (gi + 1) * ng].T
    return out


def conv(x: np.ndarray, w: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """Integer 2-D convolution via im2col + mvm; x [S,1,C,H,W], w [M, C/g, kh, kw] -> [S,1,M,OH,OW]."""
    cols = CMOS_OPS["im2col"]([x], {**a, "value": a.get("xzp", 0)})  # [S, OH*OW, C*kh*kw]
    s, _, m, oh, ow = _conv_out(x, w, a)
    acc = mvm(cols, w.reshape(m, -1), a.get("group", 1))  # [S, P, M]
    return acc.reshape(s, oh, ow, m).transpose(0, 3, 1, 2).reshape(s, 1, m, oh, ow)


def _conv_out(x: np.ndarray, w: np.ndarray, a: dict[str, Any]) -> tuple[int, ...]:
    _, _, _, h, wd = x.shape
    kh, kw = a["kernel"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError("convolution window larger than the padded input")
    if x.shape[2] != w.shape[1] * a.get("group", 1):
        raise ValueError(f"input has {x.shape[2]} channels, weights expect {w.shape[1] * a.get('group', 1)}")
    return (x.shape[0], 1, w.shape[0], oh, ow)


def eval_op(g: Graph, op: Op, args: list[np.ndarray], shape_only: bool = False) -> np.ndarray:
    """Evaluate one op; with shape_only, MVMs return zeros of the right shape without multiplying."""
    a = _attrs(g, op)
    if shape_only and op.kind == "mvm":
        x, w = args[0], a["w"]
        groups = a.get("groups", 1)
        if x.ndim != 3 or x.shape[2] != w.shape[1] * groups or w.shape[0] % groups:
            raise ValueError(f"mvm of x {list(x.shape[1:])} with w {list(w.shape)} (groups={groups})")
        return np.zeros((x.shape[0], x.shape[1], w.shape[0]), dtype=np.int64)
    if shape_only and op.kind == "conv":
        return np.zeros(_conv_out(args[0], a["w"], a), dtype=np.int64)
    if op.kind == "mvm":
        return mvm(args[0], a["w"], a.get("groups", 1))
    if op.kind == "conv":
        return conv(args[0], a["w"], a)
    fn = CMOS_OPS.get(op.kind)
    if fn is None:
        raise InternalError(f"IR op '{op.kind}' has no semantics")
    return fn(args, a)


def input_env(g: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The graph's inputs as IR values: floats as float32, integers as int64."""
    env: dict[str, np.ndarray] = {}
    for i in g.inputs:
        x = inputs[i.name]
        env["%" + i.name] = x.astype(np.float32) if i.dtype.startswith("f") else x.astype(np.int64)
    return env


def evaluate(g: Graph, inputs: dict[str, np.ndarray], keep: bool = False) -> dict[str, np.ndarray]:
    """Run the graph on inputs (name -> [S, *shape]); return outputs (or every value if keep)."""
    env = input_env(g, inputs)
    for op in g.ops:
        args = [env[n] if n.startswith("%") else g.consts[n[1:]][None] for n in op.ins]
        env["%" + op.out] = eval_op(g, op, args)
    if keep:
        return {k[1:]: v for k, v in env.items()}
    return {o.name: env["%" + o.name] for o in g.outputs}


def _memo_key(g: Graph, op: Op, env: dict[str, tuple[tuple[int, ...], bool]]) -> tuple:
    """Everything the shape of `op`'s result depends on: its kind, its semantic attributes (constants by
    shape and type) and the shapes and types of its inputs.  Annotations (tile, cols, ...) do not enter."""

    def const(name: str) -> tuple:
        arr = g.consts[name]
        return ("$", arr.shape, arr.dtype.str)

    def freeze(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("$"):
            return const(v[1:])
        if isinstance(v, list):
            return tuple(freeze(x) for x in v)
        return v

    ins = tuple(("%", *env[n]) if n.startswith("%") else const(n[1:]) for n in op.ins)
    return (op.kind, ins, tuple((k, freeze(v)) for k, v in semantic_attrs(op).items()))


def infer_shapes(g: Graph) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Value name -> (per-inference shape, is integer); checks the graph is well formed.

    Every call checks the structure (kinds and attributes against cramc.ir.ops, values defined once
    and before use, constants that exist), but each operation's shape is inferred only once: it is
    remembered in `g.shape_memo` under everything it depends on (`_memo_key`), so the passes, the
    verifier after every pass and the emitter, which all ask, pay for one inference of each op.
    """
    env: dict[str, tuple[tuple[int, ...], bool]] = {}
    for i in g.inputs:
        env["%" + i.name] = (tuple(i.shape), not i.dtype.startswith("f"))
    for op in g.ops:
        check_op(op)
        for n in op.ins:
            if n.startswith("%") and n not in env:
                raise InternalError(f"IR: {op.kind} {op.out} uses undefined value {n}")
            if n.startswith("$") and n[1:] not in g.consts:
                raise InternalError(f"IR: {op.kind} {op.out} uses undefined constant {n}")
        for v in op.attrs.values():
            if isinstance(v, str) and v.startswith("$") and v[1:] not in g.consts:
                raise InternalError(f"IR: {op.kind} {op.out} uses undefined constant {v}")
        if "%" + op.out in env:
            raise InternalError(f"IR: value %{op.out} defined twice")
        if op.kind in MVM_KINDS and not (env[op.ins[0]][1] if op.ins[0].startswith("%") else _int_const(g, op.ins[0])):
            raise InternalError(f"IR: {op.kind} %{op.out} needs an integer input")
        key = _memo_key(g, op, env)
        got = g.shape_memo.get(key)
        if got is None:
            args = [
                np.zeros((1, *env[n][0]), dtype=np.int64 if env[n][1] else np.float32)
                if n.startswith("%")
                else g.consts[n[1:]][None]
                for n in op.ins
            ]
            res = eval_op(g, op, args, shape_only=True)
            got = g.shape_memo[key] = (tuple(res.shape[1:]), bool(np.issubdtype(res.dtype, np.integer)))
        env["%" + op.out] = got
    for o in g.outputs:
        if "%" + o.name not in env:
            raise InternalError(f"IR: output %{o.name} is never defined")
    return {k[1:]: v for k, v in env.items()}


def _int_const(g: Graph, ref: str) -> bool:
    return bool(np.issubdtype(g.consts[ref[1:]].dtype, np.integer))


def verify_graph(g: Graph) -> None:
    """The IR verifier: kinds and attributes (cramc.ir.ops), well-formedness, shapes, and tiling
    annotations (when present)."""
    shapes = infer_shapes(g)
    for op in g.ops:
        if op.kind == "mvm" and "tile" in op.attrs:
            check_tiling(op, shapes, g)
