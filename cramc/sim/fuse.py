"""Fusion of multiply-accumulate runs: a pure rewrite of a linked node list.

A compiled MVM spends nearly all its instructions in pairs
    <gate> t, a_i, b_i        ; one partial-product bit per row
    tadd|tsub y_i, t, s_i     ; the adder tree counts it
on the same arrays and rows.  `fuse` replaces each long run of such pairs by
one `FusedMac` node, so that the interpreter can execute the run in a few
vector operations instead of a Python dispatch per micro-op (the runner is
cramc.sim.ops.tree.prepare_fused: same gates, same faults in the same order,
same sums).  This module only rewrites node lists into node lists: it knows
nothing of the machine, and the interpreter decides when a rewritten list may
run (`Machine.fusable`).

Every gate and tree operation is still evaluated (and counted, by the
program's tally); only the interleaving of Python calls changes.  Runs are
fused only when nothing can observe the difference: no read or adder-tree
faults configured, no instruction tracing (the interpreter's side), gate
inputs distinct from the scratch columns, one gate type, one array set and one
row range, and a plain (unprotected) tree operation (this rewrite's side).
A run's gates write one scratch column, or two for a double-buffered MAC
(cramc compile's default: odd terms use the second scratch set,
cramc.backend.lower_tiles.mac_micro); after the run each holds its last
pair's output (`FusedMac.last_writes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cramc.isa.linked import BoundOp, Loop, Node
from cramc.isa.opcodes import Unit

#: The fewest pairs worth fusing.
MIN_PAIRS = 4
#: The most scratch columns one run's gates may write (two: a double-buffered MAC alternates t and t+1).
MAX_SCRATCH = 2


@dataclass(frozen=True, eq=False)
class FusedMac:
    """A run of (gate, tree op) pairs that execute as one vectorised step (identity-hashed: a runner key)."""

    pairs: tuple[tuple[BoundOp, BoundOp], ...]

    @property
    def first(self) -> BoundOp:
        return self.pairs[0][0]

    @property
    def scratch(self) -> tuple[int, ...]:
        """The scratch columns the run's gates write (one, or two for a double-buffered MAC), ascending."""
        return tuple(sorted({g.operands[0] for g, _ in self.pairs}))

    @property
    def last_writes(self) -> tuple[tuple[int, int], ...]:
        """(pair index, column) of the last pair writing each scratch column: what the column holds after the
        run, as sequential execution leaves it."""
        last = {g.operands[0]: i for i, (g, _) in enumerate(self.pairs)}
        return tuple(sorted((i, c) for c, i in last.items()))


def _pairable(g: BoundOp, t: BoundOp) -> bool:
    if g.op.unit is not Unit.GATE or t.op.tree is None or t.op.tree.copies != 1:
        return False
    dst, *srcs = g.operands
    return len(srcs) == 2 and dst not in srcs and t.operands[1] == dst and g.arrays == t.arrays and g.rows == t.rows


def fused_of(memo: dict[int, tuple[tuple[Node, ...], tuple[object, ...]]], nodes: tuple[Node, ...]) -> tuple:
    """`fuse(nodes)`, computed once per body: `memo` is keyed by the body's id and keeps the body alive beside
    its rewrite (so the id stays its own); the interpreter and the memory footprint share it."""
    got = memo.get(id(nodes))
    if got is None:
        got = memo[id(nodes)] = (nodes, fuse(nodes))
    return got[1]


def fuse(nodes: tuple[Node, ...]) -> tuple[Node | FusedMac, ...]:
    """`nodes` with every run of at least MIN_PAIRS fusable pairs replaced by a `FusedMac` (loops recursed)."""
    out: list[Node | FusedMac] = []
    i = 0
    while i < len(nodes):
        n = nodes[i]
        if isinstance(n, Loop):
            out.append(Loop(n.var, n.count, fuse(n.body), n.loc))  # type: ignore[arg-type]
            i += 1
            continue
        run: list[tuple[BoundOp, BoundOp]] = []
        dsts: set[int] = set()  # the run's scratch columns so far ...
        srcs: set[int] = set()  # ... and its gates' inputs: never one of them (no pair reads another's output)
        j = i
        while j + 1 < len(nodes):
            g, t = nodes[j], nodes[j + 1]
            if not (isinstance(g, BoundOp) and isinstance(t, BoundOp)) or not _pairable(g, t):
                break
            dst, *ins = g.operands
            if run and (
                g.op is not run[0][0].op
                or g.arrays != run[0][0].arrays
                or g.rows != run[0][0].rows
                or (dst not in dsts and (len(dsts) == MAX_SCRATCH or dst in srcs))
                or not dsts.isdisjoint(ins)
            ):
                break
            run.append((g, t))
            dsts.add(dst)
            srcs.update(ins)
            j += 2
        if len(run) >= MIN_PAIRS:
            out.append(FusedMac(tuple(run)))
            i = j
        else:
            out.append(n)
            i += 1
    return tuple(out)
