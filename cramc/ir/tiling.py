"""Tile geometry of an MVM on CRAM arrays (shared by the tiling pass and the IR verifier).

The annotations the backend passes add to an `mvm` are typed, frozen records, printed in the IR
text as lists: `Tile` (tile-mvm), `Cols` (allocate), `Place` (schedule).

Weight-stationary mapping (CRAM primer): a row of an array holds one element
of K; within a row, the input's bit-planes sit in xbits columns, one scratch
column receives each partial-product bit, and the weights of `per` outputs sit
in bit-plane groups of wbits columns (placed by the allocate pass).  The adder tree
popcounts t over the active rows and accumulates, shifted by b + c, into one
accumulator slot per output.

For an MVM [P, K] x [N, K]^T with G groups (block diagonal):
  Kg = K / G rows per group, split into `chunks` of `rows` rows each,
  Ng = N / G outputs per group, in `ogroups` of `per` outputs each,
  so one replica needs G * chunks * ogroups arrays; patches (the P axis) go
  through in rounds of `rep` replicas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cramc.errors import InternalError, UserError
from cramc.ir.ecc import replicas, scheme
from cramc.ir.graph import Graph, Op


def _ints(v: Any, n: int, what: str) -> list[int]:
    """The n integers of an annotation's text form [a, b, ...] (ValueError naming `what` otherwise)."""
    if not isinstance(v, (list, tuple)) or len(v) != n or not all(isinstance(x, (int, np.integer)) for x in v):
        raise ValueError(f"{what} takes {n} integers, got {v!r}")
    return [int(x) for x in v]


@dataclass(frozen=True)
class Tile:
    """How an MVM is cut into array-sized pieces (printed ``tile=[groups, chunks, rows, per, ogroups]``)."""

    groups: int
    chunks: int
    rows: int  # active rows per chunk (K padded to chunks * rows)
    per: int  # outputs per array
    ogroups: int

    @property
    def arrays(self) -> int:
        return self.groups * self.chunks * self.ogroups

    def as_attr(self) -> list[int]:
        """The text form: the fields in order."""
        return [self.groups, self.chunks, self.rows, self.per, self.ogroups]

    def weight_planes(self, w: np.ndarray) -> np.ndarray:
        """Weights [N, K/groups] laid out per array: [arrays, rows, per], arrays ordered (group, chunk, ogroup).

        Entry [a, r, j] is the weight of output j of array a for its row r; K padding rows and
        outputs past N are zero.
        """
        g, c, rows, per, og = self.groups, self.chunks, self.rows, self.per, self.ogroups
        n, kg = w.shape
        ng = n // g
        wpad = np.zeros((g, og * per, c * rows), dtype=np.int64)
        wpad[:, :ng, :kg] = w.reshape(g, ng, kg)
        return wpad.reshape(g, og, per, c, rows).transpose(0, 3, 1, 4, 2).reshape(self.arrays, rows, per)

    @staticmethod
    def from_attr(v: Any) -> Tile:
        """The record of the text form (the IR parser's decoder)."""
        return Tile(*_ints(v, 5, "tile"))


@dataclass(frozen=True)
class Cols:
    """Where an MVM's bit-planes sit in every array of its tile (printed ``cols=[x, t, w]``; the allocate pass).

    Input bit-planes in columns x .. x+xbits-1, the scratch column(s) from t, the weight bit-planes of
    output j of an array in w + j*wbits .. w + (j+1)*wbits - 1.  Under error correction with R operand
    replicas (`operand_replicas`), input replica i sits in x + i*xbits .., and output j's weights take
    R*wbits columns from w + j*R*wbits, replica i from w + (j*R + i)*wbits.
    """

    x: int
    t: int
    w: int

    def as_attr(self) -> list[int]:
        """The text form: the fields in order."""
        return [self.x, self.t, self.w]

    @staticmethod
    def from_attr(v: Any) -> Cols:
        """The record of the text form (the IR parser's decoder)."""
        return Cols(*_ints(v, 3, "cols"))


@dataclass(frozen=True)
class Place:
    """Where an MVM runs on the chip (printed ``place=[base, replicas, passes, resident]``; the schedule pass).

    Its arrays start at `base`; `replicas` copies of the tile process that many patches per round;
    a layer larger than the chip runs in `passes` passes; `resident` weights are written once in
    `.init`, others reload on every inference.
    """

    base: int
    replicas: int
    passes: int
    resident: bool

    def as_attr(self) -> list[int]:
        """The text form: the fields in order, `resident` as 0 or 1."""
        return [self.base, self.replicas, self.passes, int(self.resident)]

    @staticmethod
    def from_attr(v: Any) -> Place:
        """The record of the text form (the IR parser's decoder)."""
        base, replicas, passes, resident = _ints(v, 4, "place")
        if resident not in (0, 1):
            raise ValueError(f"place: resident is 0 or 1, got {resident}")
        return Place(base, replicas, passes, bool(resident))


def mvm_dims(x_shape: tuple[int, ...], w: np.ndarray, groups: int, replicas: int) -> tuple[int, ...]:
    """(P, K, N, Kg, Ng, rounds, padded P) of an mvm with input [P, K] and weights w [N, Kg] run by `replicas`."""
    p, k = x_shape
    n, kg = w.shape
    rounds = math.ceil(p / replicas)
    return p, k, n, kg, n // groups, rounds, rounds * replicas


def term_scratch(op: Op) -> int:
    """Scratch columns one partial-product term of an MVM uses (1, or more for the copies error correction
    makes)."""
    return plan_scratch(op.attrs.get("ecc"))


def plan_scratch(plan: list[int] | None) -> int:
    """Scratch columns one term uses under an ecc plan (per-term scheme codes; none: unprotected)."""
    return max((scheme(c).scratch for c in set(plan or ())), default=1)


def scratch_columns(op: Op) -> int:
    """Scratch columns an MVM's micro-program needs: one term's (`term_scratch`), twice that when the tile-mvm
    pass double-buffered it (``dbuf=1``: successive terms alternate between the two sets, so the adder tree
    senses one while the next AND writes the other)."""
    return term_scratch(op) * (2 if op.attrs.get("dbuf") else 1)


def operand_replicas(op: Op) -> int:
    """Copies of its operands (weights, input bit-planes) an MVM stores: 1, or more when its error correction
    places the copies of a partial product on distinct cells (cramc.ir.ecc, the replica schemes)."""
    return replicas(op.attrs.get("ecc"))


def plan_tile(
    k: int,
    n: int,
    groups: int,
    wbits: int,
    xbits: int,
    rows: int,
    cols: int,
    accs: int,
    scratch: int = 1,
    replicas: int = 1,
) -> Tile:
    """Choose the tile for one MVM on arrays of rows x cols with accs accumulators (`replicas` copies of its
    input bit-planes and of every weight stored)."""
    kg, ng = k // groups, n // groups
    per = min((cols - replicas * xbits - scratch) // (replicas * wbits), accs, ng)
    if per < 1:
        copies = f"{replicas} x " if replicas > 1 else ""
        need = replicas * (xbits + wbits) + scratch
        raise UserError(
            f"arrays of {cols} columns cannot hold {copies}{xbits} input bit-planes, {scratch} scratch "
            f"column(s) and {copies}one {wbits}-bit weight; use --cols {need} or more"
        )
    chunks = math.ceil(kg / rows)
    rows_used = math.ceil(kg / chunks)
    ogroups = math.ceil(ng / per)
    per = math.ceil(ng / ogroups)  # balance the output groups: no array computes outputs that do not exist
    return Tile(groups, chunks, rows_used, per, ogroups)


def check_tiling(op: Op, shapes: dict[str, tuple[tuple[int, ...], bool]], g: Graph) -> None:
    """A tiled MVM's tile covers its K and N, and its columns (when allocated) do not overlap."""
    t: Tile = op.attrs["tile"]
    p, k = shapes[op.ins[0][1:]][0]
    w = g.consts[op.attrs["w"][1:]]
    n = w.shape[0]
    if t.groups != op.attrs.get("groups", 1):
        raise InternalError(f"tile of %{op.out}: groups {t.groups} != {op.attrs.get('groups', 1)}")
    if t.chunks * t.rows < k // t.groups or t.per * t.ogroups < n // t.groups:
        raise InternalError(f"tile of %{op.out} does not cover K={k} N={n}")
    if "cols" in op.attrs:
        cols: Cols = op.attrs["cols"]
        x, tc, wc = cols.x, cols.t, cols.w
        xb, wb, r = op.attrs["xbits"], op.attrs["wbits"], operand_replicas(op)
        spans = sorted([(x, x + r * xb), (tc, tc + scratch_columns(op)), (wc, wc + t.per * r * wb)])
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)) or min(x, tc, wc) < 0:
            raise InternalError(f"columns of %{op.out} overlap: {cols.as_attr()}")
