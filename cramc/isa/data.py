"""Tensor types and the compact text encodings of the data section.

A payload is either an inline list (`[1, -2, 3]`, for small hand-written
constants) or base64 of the little-endian bytes, optionally zlib-compressed
(`b64"..."`, `b64z"..."`).  Decoding never executes anything and refuses to
inflate past the size the declared type implies.
"""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np

#: Storage dtype of each element type name (4-bit types are stored one per byte).
DTYPES: dict[str, np.dtype] = {
    "i4": np.dtype("int8"),
    "u4": np.dtype("uint8"),
    "i8": np.dtype("int8"),
    "u8": np.dtype("uint8"),
    "i16": np.dtype("<i2"),
    "u16": np.dtype("<u2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "f32": np.dtype("<f4"),
}

#: Value range of the narrow types whose storage is wider than they are.
NARROW = {"i4": (-8, 7), "u4": (0, 15)}

#: Payloads up to this many elements print inline as lists.
INLINE_MAX = 64

MAX_ELEMENTS = 1 << 31


def is_float(dtype: str) -> bool:
    return dtype.startswith("f")


def decode(encoding: str, text: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Payload text -> array of the declared type; raises ValueError with a reason."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count > MAX_ELEMENTS:
        raise ValueError(f"declared size {count} elements exceeds the limit {MAX_ELEMENTS}")
    store = DTYPES[dtype]
    nbytes = count * store.itemsize
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError(f"bad base64 payload: {e}") from None
    if encoding == "b64z":
        d = zlib.decompressobj()
        try:
            raw = d.decompress(raw, nbytes + 1)
        except zlib.error as e:
            raise ValueError(f"bad zlib payload: {e}") from None
        if not d.eof and len(raw) <= nbytes:
            raise ValueError("truncated zlib payload")
    if len(raw) != nbytes:
        raise ValueError(f"payload holds {len(raw)} bytes, the type needs {nbytes}")
    arr = np.frombuffer(raw, dtype=store).reshape(shape).copy()
    check_range(arr, dtype)
    return arr


def from_list(items: list[int | float], dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(items) != count:
        raise ValueError(f"{len(items)} values given, the type needs {count}")
    if not is_float(dtype) and any(isinstance(v, float) for v in items):
        raise ValueError(f"float value in an integer ({dtype}) constant")
    store = DTYPES[dtype]
    if not is_float(dtype):
        info = np.iinfo(store)
        bad = [v for v in items if not info.min <= v <= info.max]
        if bad:
            raise ValueError(f"value {bad[0]} does not fit {dtype}")
    arr = np.array(items, dtype=store).reshape(shape)
    check_range(arr, dtype)
    return arr


def check_range(arr: np.ndarray, dtype: str) -> None:
    if dtype in NARROW:
        lo, hi = NARROW[dtype]
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise ValueError(f"values outside the {dtype} range [{lo}, {hi}]")


def encode(arr: np.ndarray, dtype: str, encoding: str) -> str:
    """Array -> payload text in the given encoding (deterministic)."""
    store = DTYPES[dtype]
    flat = np.ascontiguousarray(arr, dtype=store).reshape(-1)
    if encoding == "list":
        if is_float(dtype):
            return "[" + ", ".join(repr(float(v)) for v in flat) + "]"
        return "[" + ", ".join(str(int(v)) for v in flat) + "]"
    raw = flat.tobytes()
    if encoding == "b64z":
        raw = zlib.compress(raw, 6)
    return f'{encoding}"{base64.b64encode(raw).decode("ascii")}"'


def default_encoding(arr: np.ndarray) -> str:
    return "list" if arr.size <= INLINE_MAX else "b64z"
