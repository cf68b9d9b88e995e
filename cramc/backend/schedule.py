"""Pass schedule: order the layers and place every tiled MVM on the chip's arrays.

A networkx dependency graph of the IR operations is list-scheduled: among the
ready operations the one with the longest remaining path (weighted by its
work in adder-tree rounds) goes first.  MVMs are then placed weight-stationary:
- if every layer's tile fits the chip at once, each gets its own arrays, its
  weights are written once in `.init`, and spare arrays replicate the layers
  with the most rounds (replicas process several patches per round);
- otherwise layers are time-multiplexed: placed one after another, wrapping
  around the chip; a layer whose arrays another layer also uses reloads its
  weights on every inference (in `.main`, counted as writes), and a layer
  larger than the chip runs in several passes, each reloading its part.
Adds ``place=[base, replicas, passes, resident]`` (a cramc.ir.tiling.Place) to each MVM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import networkx as nx

from cramc.ir.graph import Graph, Op
from cramc.ir.semantics import infer_shapes
from cramc.ir.tiling import Place, Tile


def _work(op: Op, shapes: dict[str, tuple[tuple[int, ...], bool]]) -> int:
    if op.kind != "mvm":
        return 1
    t: Tile = op.attrs["tile"]
    p = shapes[op.ins[0][1:]][0][0]
    return p * t.per * op.attrs["wbits"] * op.attrs["xbits"]


@dataclass(frozen=True)
class Schedule:
    arrays: int = 1024
    name: str = "schedule"
    requires: ClassVar[frozenset[str]] = frozenset({"tiled"})
    ensures: ClassVar[frozenset[str]] = frozenset({"placed"})
    changes_input: ClassVar[bool] = True  # reorders g.ops and sets place= on the MVMs in place

    def run(self, g: Graph) -> Graph:
        shapes = infer_shapes(g)
        dag = nx.DiGraph()
        producer = {"%" + op.out: i for i, op in enumerate(g.ops)}
        for i, op in enumerate(g.ops):
            dag.add_node(i)
            for r in op.ins:
                if r in producer:
                    dag.add_edge(producer[r], i)
        work = {i: _work(op, shapes) for i, op in enumerate(g.ops)}
        tail: dict[int, int] = {}
        for i in reversed(list(nx.topological_sort(dag))):
            tail[i] = work[i] + max((tail[j] for j in dag.successors(i)), default=0)
        order = list(nx.lexicographical_topological_sort(dag, key=lambda i: (-tail[i], i)))
        g.ops = [g.ops[i] for i in order]
        self._place(g, shapes)
        return g

    def _place(self, g: Graph, shapes: dict[str, tuple[tuple[int, ...], bool]]) -> None:
        mvms = [op for op in g.ops if op.kind == "mvm"]
        if not mvms:
            return
        need = {op.out: op.attrs["tile"].arrays for op in mvms}
        patches = {op.out: shapes[op.ins[0][1:]][0][0] for op in mvms}
        if sum(need.values()) <= self.arrays:
            rep = {op.out: 1 for op in mvms}
            spare = self.arrays - sum(need.values())
            per_round = {op.out: op.attrs["tile"].per * op.attrs["wbits"] * op.attrs["xbits"] for op in mvms}
            while True:
                best, gain = None, 0.0
                step = 0
                for op in mvms:
                    o = op.out
                    rounds = math.ceil(patches[o] / rep[o])
                    if rounds <= 1:
                        continue
                    nxt = math.ceil(patches[o] / (rounds - 1))  # fewest replicas that save a round
                    cost = (nxt - rep[o]) * need[o]
                    if cost > spare:
                        continue
                    saved = (rounds - math.ceil(patches[o] / nxt)) * per_round[o]
                    if saved / cost > gain:
                        best, gain, step = o, saved / cost, nxt - rep[o]
                if best is None:
                    break
                rep[best] += step
                spare -= step * need[best]
            base = 0
            for op in mvms:
                op.attrs["place"] = Place(base, rep[op.out], 1, True)
                base += need[op.out] * rep[op.out]
            return
        cursor = 0
        regions: dict[str, tuple[int, int]] = {}
        for op in mvms:
            n = need[op.out]
            if n > self.arrays:
                op.attrs["place"] = Place(0, 1, math.ceil(n / self.arrays), False)
                regions[op.out] = (0, self.arrays)
                cursor = 0
                continue
            if cursor + n > self.arrays:
                cursor = 0
            regions[op.out] = (cursor, cursor + n)
            op.attrs["place"] = Place(cursor, 1, 1, True)
            cursor += n
        for op in mvms:
            lo, hi = regions[op.out]
            shared = any(o != op.out and lo < h and lo2 < hi for o, (lo2, h) in regions.items())
            if shared:
                op.attrs["place"] = replace(op.attrs["place"], resident=False)
