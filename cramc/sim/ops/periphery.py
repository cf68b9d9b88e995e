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

#: masks of the three swap steps of an 8 x 8 bit-matrix transpose in a uint64 (Warren, Hacker's Delight,
#: section 7-3 "Transposing a bit matrix"): bit 8 i + k <-> bit 8 k + i
_T8 = tuple((np.uint64(m), np.uint64(s)) for m, s in ((0x00AA00AA00AA00AA, 7), (0x0000CCCC0000CCCC, 14),
                                                     (0x00000000F0F0F0F0, 28)))  # fmt: skip


def _transpose8(x: np.ndarray) -> None:
    """Transpose the 8 x 8 bit matrix in each uint64 of x in place: byte i bit k -> byte k bit i."""
    t = np.empty_like(x)
    for mask, sh in _T8:
        np.right_shift(x, sh, out=t)
        t ^= x
        t &= mask
        x ^= t
        t <<= sh
        x ^= t


def _bit_planes(val: np.ndarray, bits: int, r0: int, words: int) -> np.ndarray:
    """int [S, n, nrows, F] placed at row r0 -> uint64 [F * bits, n, S, words]: column f * bits + b holds bit b
    of field f's little-endian two's complement (row r: bit r % 64 of word r // 64).

    Eight rows of one byte of the values are one uint64 (a byte a row); transposing its 8 x 8 bit matrix
    makes byte k of it bit k of the eight rows, packed: the bytes of the output words, without a byte per
    bit as a temporary.
    """
    S, n, nrows, nf = val.shape
    nb = (bits + 7) >> 3  # the bytes of a value that hold its low `bits` bits
    by = np.ascontiguousarray(val, dtype="<i8").view(np.uint8).reshape(S, n, nrows, nf, 8)
    pad = r0 & 7  # the rows before r0 in its byte: zero
    G = (pad + nrows + 7) >> 3
    rows = np.zeros((nf, nb, S, n, 8 * G), dtype=np.uint8)
    rows[..., pad : pad + nrows] = by[..., :nb].transpose(3, 4, 0, 1, 2)
    del by
    x = rows.view(np.uint64)  # [F, nb, S, n, G]: each word eight rows of one byte
    _transpose8(x)
    planes = x.view(np.uint8).reshape(nf, nb, S, n, G, 8).transpose(0, 1, 5, 3, 2, 4)  # [F, nb, 8, n, S, G]
    out = np.zeros((nf, nb * 8, n, S, words * 8), dtype=np.uint8)
    out[..., r0 >> 3 : (r0 >> 3) + G] = planes.reshape(nf, nb * 8, n, S, G)
    return out[:, :bits].reshape(nf * bits, n, S, words * 8).view(np.uint64)


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
    r0, r1 = m.rows(b)
    words = _bit_planes(val, bits, r0, m.words)  # [F*bits, n, S, W]
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
