"""Reference semantics of the CMOS vector unit.

Every function takes its tensor operands with a leading *sample* axis (one
inference per entry; constants arrive with a leading axis of length 1) and
returns the result with the same leading axis.  Axis and shape attributes are
written per inference, so the functions shift them by one.  Integers are
carried as int64 and floats as float32, as ONNX's quantised operators do.

The verifier calls these on one sample of zeros to infer shapes, so a shape
rule lives in exactly one place: here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Attrs = dict[str, Any]
CmosFn = Callable[[Sequence[np.ndarray], Attrs], np.ndarray]

#: Integer ranges of the quantised types (QuantizeLinear saturation bounds).
QRANGES: dict[str, tuple[int, int]] = {
    "i4": (-8, 7),
    "u4": (0, 15),
    "i8": (-128, 127),
    "u8": (0, 255),
    "i16": (-32768, 32767),
    "u16": (0, 65535),
    "i32": (-(2**31), 2**31 - 1),
}

CMOS_OPS: dict[str, CmosFn] = {}


def cmos(name: str) -> Callable[[CmosFn], CmosFn]:
    def register(fn: CmosFn) -> CmosFn:
        CMOS_OPS[name] = fn
        return fn

    return register


def _is_int(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer)


def _norm(a: np.ndarray) -> np.ndarray:
    """Carry integers as int64 and everything else as float32."""
    return a.astype(np.int64, copy=False) if _is_int(a) else a.astype(np.float32, copy=False)


def _axis(axis: int, ndim: int) -> int:
    """Per-inference axis -> axis of the sample-batched array."""
    if not -(ndim - 1) <= axis < ndim - 1:
        raise ValueError(f"axis {axis} out of range for a tensor of rank {ndim - 1}")
    return axis + 1 if axis >= 0 else axis + ndim


def _per_axis(v: Any, x: np.ndarray, axis: int, dtype: type) -> np.ndarray:
    """Broadcast a scalar or a per-channel vector along `axis` of x."""
    arr: np.ndarray = np.asarray(v, dtype=dtype)
    if arr.ndim == 0 or arr.size == 1:
        return arr.reshape(())
    if arr.ndim != 1:
        raise ValueError("per-channel parameter must be a scalar or a vector")
    ax = _axis(axis, x.ndim)
    if x.shape[ax] != arr.size:
        raise ValueError(f"per-channel parameter has {arr.size} entries but axis {axis} has {x.shape[ax]}")
    shape = [1] * x.ndim
    shape[ax] = arr.size
    return arr.reshape(shape)


@cmos("mov")
def mov(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    return _norm(np.array(args[0]))


@cmos("quant")
def quant(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = np.asarray(args[0], dtype=np.float32)
    axis = attrs.get("axis", 1)
    scale = _per_axis(attrs["scale"], x, axis, np.float32)
    zp = _per_axis(attrs.get("zp", 0), x, axis, np.int64)
    lo, hi = QRANGES[attrs.get("dtype", "i8")]
    q = np.rint(x / scale).astype(np.float64) + zp
    return np.clip(q, lo, hi).astype(np.int64)


@cmos("dequant")
def dequant(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    q = np.asarray(args[0])
    axis = attrs.get("axis", 1)
    scale = _per_axis(attrs["scale"], q, axis, np.float32)
    zp = _per_axis(attrs.get("zp", 0), q, axis, np.int64)
    return ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


@cmos("relu")
def relu(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = _norm(args[0])
    return np.maximum(x, x.dtype.type(0))


@cmos("clip")
def clip(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = _norm(args[0])
    lo = attrs.get("min", -np.inf)
    hi = attrs.get("max", np.inf)
    if _is_int(x):
        lo = int(np.ceil(lo)) if np.isfinite(lo) else np.iinfo(np.int64).min
        hi = int(np.floor(hi)) if np.isfinite(hi) else np.iinfo(np.int64).max
    return np.clip(x, lo, hi).astype(x.dtype)


@cmos("leakyrelu")
def leakyrelu(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = np.asarray(args[0], dtype=np.float32)
    alpha = np.float32(attrs.get("alpha", 0.01))
    return np.where(x >= 0, x, x * alpha).astype(np.float32)


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> CmosFn:
    def run(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
        a, b = _norm(np.asarray(args[0])), _norm(np.asarray(args[1]))
        if _is_int(a) != _is_int(b):
            raise ValueError("cannot mix integer and float tensors; dequantise first")
        return _norm(fn(a, b))

    return run


cmos("add")(_binary(np.add))
cmos("sub")(_binary(np.subtract))
cmos("mul")(_binary(np.multiply))
cmos("max")(_binary(np.maximum))


@cmos("sum")
def reduce_sum(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = _norm(args[0])
    return _norm(x.sum(axis=_axis(attrs["axis"], x.ndim), keepdims=bool(attrs.get("keepdims", 0))))


def _pool_windows(x: np.ndarray, attrs: Attrs, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Strided windows of an [S, B, C, H, W] tensor: ([S,B,C,OH,OW,kh,kw] (a view of the padded copy), valid
    mask [OH,OW,kh,kw])."""
    if x.ndim != 5:
        raise ValueError(f"pooling expects a rank-4 NCHW tensor, got rank {x.ndim - 1}")
    kh, kw = attrs["kernel"]
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError("kernel, strides and dilations must be >= 1 and pads >= 0")
    s, b, c, h, w = x.shape
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError("window larger than the padded input")
    xp = np.full((s, b, c, h + pt + pb, w + pl + pr), fill, dtype=x.dtype)
    xp[..., pt : pt + h, pl : pl + w] = x
    valid = np.zeros((h + pt + pb, w + pl + pr), dtype=bool)
    valid[pt : pt + h, pl : pl + w] = True
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(3, 4))[..., ::sh, ::sw, ::dh, ::dw]
    vmask = np.lib.stride_tricks.sliding_window_view(valid, span)[::sh, ::sw, ::dh, ::dw]
    return win[..., :oh, :ow, :, :], vmask[:oh, :ow]


@cmos("maxpool")
def maxpool(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = _norm(args[0])
    fill = np.iinfo(np.int64).min if _is_int(x) else -np.inf
    win, _ = _pool_windows(x, attrs, fill)
    # the window's elements one strided view at a time: a reduction over the two window axes of the
    # view walks it element by element (4x slower on LeNet-5's 2 x 2 pools); max is exact in any order
    out = win[..., 0, 0].copy()
    for i in range(win.shape[-2]):
        for j in range(win.shape[-1]):
            if i or j:
                np.maximum(out, win[..., i, j], out=out)
    return out


@cmos("avgpool")
def avgpool(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = np.asarray(args[0], dtype=np.float32)
    win, valid = _pool_windows(x, attrs, 0.0)
    win, valid = win.reshape(*win.shape[:-2], -1), valid.reshape(*valid.shape[:-2], -1)  # the window's sum order
    total = win.sum(axis=-1, dtype=np.float32)
    if attrs.get("count_include_pad", 0):
        count = np.float32(win.shape[-1])
    else:
        count = valid.sum(axis=-1).astype(np.float32)
    return (total / count).astype(np.float32)


@cmos("gavgpool")
def gavgpool(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = np.asarray(args[0], dtype=np.float32)
    if x.ndim < 4:
        raise ValueError("global pooling expects a rank >= 3 tensor")
    axes = tuple(range(3, x.ndim))
    return x.mean(axis=axes, keepdims=True, dtype=np.float32).astype(np.float32)


@cmos("im2col")
def im2col(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    """[S, B, C, H, W] -> [S, B*OH*OW, C*kh*kw]; K ordered (c, i, j) like ONNX weights."""
    x = _norm(args[0])
    win, _ = _pool_windows(x, attrs, attrs.get("value", 0))
    s, b, c, oh, ow, kh, kw = win.shape
    return np.ascontiguousarray(win.transpose(0, 1, 3, 4, 2, 5, 6)).reshape(s, b * oh * ow, c * kh * kw)


@cmos("reshape")
def reshape(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = _norm(args[0])
    return x.reshape((x.shape[0], *attrs["shape"]))


@cmos("transpose")
def transpose(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = _norm(args[0])
    perm = list(attrs["perm"])
    if sorted(perm) != list(range(x.ndim - 1)):
        raise ValueError(f"perm {perm} is not a permutation of the {x.ndim - 1} axes")
    return np.ascontiguousarray(x.transpose([0, *(p + 1 for p in perm)]))


@cmos("slice")
def slice_(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = _norm(args[0])
    ax = _axis(attrs["axis"], x.ndim)
    idx = [slice(None)] * x.ndim
    idx[ax] = slice(attrs["start"], attrs["end"], attrs.get("step", 1))
    out = x[tuple(idx)]
    if out.shape[ax] == 0:
        raise ValueError("slice selects nothing")
    return np.ascontiguousarray(out)


@cmos("concat")
def concat(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    xs = [_norm(a) for a in args]
    if len({_is_int(a) for a in xs}) > 1:
        raise ValueError("cannot concatenate integer and float tensors")
    s = max(a.shape[0] for a in xs)
    xs = [np.broadcast_to(a, (s, *a.shape[1:])) for a in xs]
    return np.concatenate(xs, axis=_axis(attrs["axis"], xs[0].ndim))


@cmos("pad")
def pad(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    """ONNX pad order: all begins then all ends, per inference axis."""
    x = _norm(args[0])
    pads = list(attrs["pads"])
    r = x.ndim - 1
    if len(pads) != 2 * r or min(pads) < 0:
        raise ValueError(f"pads needs {2 * r} non-negative entries")
    width = [(0, 0)] + [(pads[i], pads[i + r]) for i in range(r)]
    return np.pad(x, width, constant_values=attrs.get("value", 0))


@cmos("tile")
def tile(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = _norm(args[0])
    reps = list(attrs["reps"])
    if len(reps) != x.ndim - 1 or min(reps) < 1:
        raise ValueError(f"reps needs {x.ndim - 1} entries >= 1")
    return np.tile(x, [1, *reps])


@cmos("softmax")
def softmax(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = np.asarray(args[0], dtype=np.float32)
    ax = _axis(attrs.get("axis", -1), x.ndim)
    e = np.exp(x - x.max(axis=ax, keepdims=True))
    return (e / e.sum(axis=ax, keepdims=True)).astype(np.float32)


@cmos("lrn")
def lrn(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x = np.asarray(args[0], dtype=np.float32)
    size = int(attrs["size"])
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    sq = np.square(x)
    c = x.shape[2]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    padded = np.pad(sq, [(0, 0), (0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 3))
    acc = sum(padded[:, :, i : i + c] for i in range(size))
    return (x / np.power(bias + alpha / size * acc, beta)).astype(np.float32)


@cmos("cast")
def cast(args: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    to = attrs["dtype"]
    x = np.asarray(args[0])
    if to == "f32":
        return x.astype(np.float32)
    if to == "i64":
        return np.rint(x).astype(np.int64) if not _is_int(x) else x.astype(np.int64)
    raise ValueError(f"cast supports dtype f32 or i64, not {to}")
