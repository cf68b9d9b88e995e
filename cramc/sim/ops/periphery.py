"""The periphery: host data into the arrays (``fill``, ``wr``) and columns back out (``rd``).

Values cross between the CMOS tensors on the host and the bit-packed cells:
``wr`` bit-slices integers into columns (two's complement, LSB first) and
``rd`` reassembles them, each a byte of rows at a time so that the only
temporaries are packed bytes.  Write faults apply to the stored bits, read
faults to the sensed bits (the cells keep their values).  ``fill`` and ``rd``
are counted by the interpreter's tally (cramc.isa.counting), ``wr`` here:
its columns follow its source's shape.
"""

from __future__ import annotations

import numpy as np

from cramc.isa import counting
from cramc.isa.linked import BoundOp
from cramc.sim.machine import Machine, word_range
from cramc.sim.ops.registry import impl


def _pack_rows(planes: np.ndarray, r0: int, words: int) -> np.ndarray:
    """0/1 uint8 or bool [..., nrows] placed at row r0 -> uint64 [..., words] (row r: bit r % 64 of word r // 64).

    Packed a byte at a time (8 rows), so the only temporaries are the packed bytes, not a bool row per
    row of the array.
    """
    pad = r0 & 7
    if pad:  # start the first byte at a multiple of 8 rows
        planes = np.concatenate([np.zeros((*planes.shape[:-1], pad), dtype=planes.dtype), planes], axis=-1)
    packed = np.packbits(planes, axis=-1, bitorder="little")
    out = np.zeros((*planes.shape[:-1], words * 8), dtype=np.uint8)
    out[..., r0 >> 3 : (r0 >> 3) + packed.shape[-1]] = packed
    return out.view(np.uint64)


def _unpack_rows(words: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """uint64 [..., W] -> uint8 bits [..., r1 - r0]."""
    by = np.ascontiguousarray(words).view(np.uint8)
    return np.unpackbits(by, axis=-1, bitorder="little")[..., r0:r1]


@impl("fill")
def fill(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, value = b.operands
    r0, r1 = m.rows(b)
    rate = m.faults.write
    if rate.zero and r0 == 0 and r1 == m.spec.rows:
        m.cells[dst, lo:hi] = m.be.ONES if value else 0
    else:
        res = m.be.full_words((1, hi - lo, m.lanes, m.words), bool(value))
        m.flip(res, b, rate, "write")
        m.put_column(b, slice(dst, dst + 1), res)


@impl("wr")
def wr(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, src = b.operands
    bits = b.attrs["bits"]
    val = m.load(src)  # [S|1, n|1, nrows(, F)]
    if val.ndim == 3:
        val = val[..., None]
    nf = val.shape[3]
    # Bit b of a value is bit b of its little-endian two's-complement int64: unpacked from the bytes,
    # one byte per bit (no int64 temporary per bit).
    by = np.ascontiguousarray(val, dtype="<i8").view(np.uint8).reshape(*val.shape, 8)
    planes = np.unpackbits(by, axis=-1, count=bits, bitorder="little")  # [S, n, nrows, F, bits]
    del by
    planes = planes.reshape(*planes.shape[:3], nf * bits).transpose(3, 1, 0, 2)  # [F*bits, n, S, nrows]
    r0, r1 = m.rows(b)
    words = _pack_rows(np.ascontiguousarray(planes), r0, m.words)
    del planes
    rep = b.attrs.get("repeat", 1)
    if rep > 1 and words.shape[1] > 1:
        words = np.repeat(words, rep, axis=1)
    # Sent once, broadcast over arrays and lanes on the backend (weights are the same in every lane);
    # a writable copy of the full shape only when write faults go in, each lane its own.
    words = m.be.put(words)
    if not m.faults.write.zero:
        words = m.be.broadcast(words, (nf * bits, hi - lo, m.lanes, m.words))
        m.flip(words, b, m.faults.write, "write")
    m.put_column(b, slice(dst, dst + nf * bits), words)
    # the columns written follow the source's shape: counted here, by the unit's rule
    m._counts.add(b.op, counting.instruction_factors(b, m.spec.rows, tensor_fields=nf), m.lanes)


@impl("rd")
def rd(m: Machine, b: BoundOp) -> None:
    lo, hi = b.arrays  # type: ignore[misc]
    dst, src = b.operands
    bits = b.attrs["bits"]
    fields = b.attrs.get("fields", 0)
    nf = max(fields, 1)
    r0, r1 = m.rows(b)
    w0, w1 = word_range(r0, r1)
    words = m.be.copy(m.columns(src, src + nf * bits, lo, hi, w0, w1))  # [F*bits, nA, S, nw]: the words sensed
    rate = m.faults.read
    if not rate.zero:  # the region `flip` would inject into: the words of the active rows
        m.injector("read", rate, r0, r1)(m.be.flat(words))
    planes = _unpack_rows(m.be.get_words(words), r0 - 64 * w0, r1 - 64 * w0)  # uint8 [F*bits, nA, S, nrows]
    del words
    planes = planes.reshape(nf, bits, hi - lo, m.lanes, r1 - r0)
    signed = b.attrs.get("signed", 1)
    vals = np.zeros((nf, hi - lo, m.lanes, r1 - r0), dtype=np.int64)
    for k in range(bits):  # one int64 temporary at a time
        term = planes[:, k].astype(np.int64)
        term <<= k
        if signed and k == bits - 1:
            vals -= term
        else:
            vals += term
    del planes, term
    vals = vals.transpose(2, 1, 3, 0)  # [S, nA, nrows, F]
    if not fields:
        vals = vals[..., 0]
    m.store(b, dst, np.ascontiguousarray(vals))
