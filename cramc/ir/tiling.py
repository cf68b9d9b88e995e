"""Tile geometry of an MVM on CRAM arrays (shared by the tiling pass and the IR verifier).

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
from cramc.ir.graph import Graph, Op


@dataclass(frozen=True)
class Tile:
    groups: int
    chunks: int
    rows: int  # active rows per chunk (K padded to chunks * rows)
    per: int  # outputs per array
    ogroups: int

    @property
    def arrays(self) -> int:
        return self.groups * self.chunks * self.ogroups

    def as_attr(self) -> list[int]:
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
        return Tile(*[int(x) for x in v])


def mvm_dims(x_shape: tuple[int, ...], w: np.ndarray, groups: int, replicas: int) -> tuple[int, ...]:
    """(P, K, N, Kg, Ng, rounds, padded P) of an mvm with input [P, K] and weights w [N, Kg] run by `replicas`."""
    p, k = x_shape
    n, kg = w.shape
    rounds = math.ceil(p / replicas)
    return p, k, n, kg, n // groups, rounds, rounds * replicas


def scratch_columns(op: Op) -> int:
    """Scratch columns an MVM's micro-program needs (1, or more for the copies error correction makes)."""
    from cramc.ir.passes.insert_ecc import SCRATCH

    return max((SCRATCH[c] for c in op.attrs.get("ecc", [])), default=1)


def plan_tile(
    k: int, n: int, groups: int, wbits: int, xbits: int, rows: int, cols: int, accs: int, scratch: int = 1
) -> Tile:
    """Choose the tile for one MVM on arrays of rows x cols with accs accumulators."""
    kg, ng = k // groups, n // groups
    per = min((cols - xbits - scratch) // wbits, accs, ng)
    if per < 1:
        raise UserError(
            f"arrays of {cols} columns cannot hold {xbits} input bit-planes, {scratch} scratch "
            f"column(s) and one {wbits}-bit weight; use --cols {xbits + scratch + wbits} or more"
        )
    chunks = math.ceil(kg / rows)
    rows_used = math.ceil(kg / chunks)
    ogroups = math.ceil(ng / per)
    per = math.ceil(ng / ogroups)  # balance the output groups: no array computes outputs that do not exist
    return Tile(groups, chunks, rows_used, per, ogroups)


def check_tiling(op: Op, shapes: dict[str, tuple[tuple[int, ...], bool]], g: Graph) -> None:
    t = Tile.from_attr(op.attrs["tile"])
    p, k = shapes[op.ins[0][1:]][0]
    w = g.consts[op.attrs["w"][1:]]
    n = w.shape[0]
    if t.groups != op.attrs.get("groups", 1):
        raise InternalError(f"tile of %{op.out}: groups {t.groups} != {op.attrs.get('groups', 1)}")
    if t.chunks * t.rows < k // t.groups or t.per * t.ogroups < n // t.groups:
        raise InternalError(f"tile of %{op.out} does not cover K={k} N={n}")
    if "cols" in op.attrs:
        x, tc, wc = op.attrs["cols"]
        xb, wb = op.attrs["xbits"], op.attrs["wbits"]
        spans = sorted([(x, x + xb), (tc, tc + scratch_columns(op)), (wc, wc + t.per * wb)])
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)) or min(x, tc, wc) < 0:
            raise InternalError(f"columns of %{op.out} overlap: {op.attrs['cols']}")
