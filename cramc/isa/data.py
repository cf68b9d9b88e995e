"""Tensor types and the compact text encodings of the data section.

A payload is either an inline list (`[1, -2, 3]`, for small hand-written
constants) or base64 of the little-endian bytes, optionally zlib-compressed
(`b64"..."`, `b64z"..."`).  Decoding never executes anything and refuses to
inflate past the size the declared type implies.
"""

from __future__ import annotations

import base64
import binascii
import math
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

#: Elements of one data constant.
MAX_ELEMENTS = 1 << 31
#: Bytes of all the data constants of one program together, decoded (512 MiB).  Realistic programs
#: hold less: light ResNet-50 of onnx's model zoo 27 MiB (57 MiB with its trace data), VGG-19 with
#: random int8 weights about 140 MiB.  Each constant is checked against the rest of the budget before
#: it is decoded, and decoding never inflates past the declared size, so a small file (zlib inflates
#: up to about 1000:1) cannot make cramc allocate or inflate more than this.
MAX_DATA_BYTES = 1 << 29


def is_float(dtype: str) -> bool:
    return dtype.startswith("f")


def declared_bytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of a constant of this type once decoded (exact: no overflow for absurd shapes)."""
    return math.prod(shape) * DTYPES[dtype].itemsize


def decode(encoding: str, text: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Payload text -> array of the declared type; raises ValueError with a reason.

    A zlib payload is inflated by one streaming decompressor bounded by the declared size (plus one
    byte, to tell a payload that is too long), so a decompression bomb costs no more than its type says.
    """
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise ValueError(f"declared size {count} elements exceeds the limit {MAX_ELEMENTS}")
    store = DTYPES[dtype]
    nbytes = count * store.itemsize
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError(f"bad base64 payload: {e}") from None
    if encoding == "b64z":
        arr = _inflate(raw, nbytes).view(store).reshape(shape)
    else:
        if len(raw) != nbytes:
            raise ValueError(f"payload holds {len(raw)} bytes, the type needs {nbytes}")
        arr = np.frombuffer(raw, dtype=store).reshape(shape).copy()
    check_range(arr, dtype)
    return arr


#: Bytes inflated per step: the output goes straight into the array, never into one huge bytes object.
_CHUNK = 1 << 24


def _inflate(raw: bytes, nbytes: int) -> np.ndarray:
    """The zlib stream `raw` inflated into exactly `nbytes` bytes; ValueError if it holds more or less."""
    out = np.empty(nbytes, dtype=np.uint8)
    view = out.data  # a memoryview of the array's bytes
    d = zlib.decompressobj()
    pos = 0
    data = raw
    try:
        while True:
            chunk = d.decompress(data, min(_CHUNK, nbytes - pos + 1))  # at most one byte past the type
            if pos + len(chunk) > nbytes:
                raise ValueError(f"payload holds more than the {nbytes} bytes the type needs")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
            data = d.unconsumed_tail
            if d.eof or not (chunk or data):
                break
    except zlib.error as e:
        raise ValueError(f"bad zlib payload: {e}") from None
    if not d.eof:
        raise ValueError("truncated zlib payload")
    if pos != nbytes:
        raise ValueError(f"payload holds {pos} bytes, the type needs {nbytes}")
    return out


def from_list(items: list[int | float], dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
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
