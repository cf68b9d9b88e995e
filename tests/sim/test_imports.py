"""The simulator's modules import each other one way: no cycle, fuse a pure rewrite, nothing against the flow.

Imports are read from the source text (inside functions and under TYPE_CHECKING too), so a lazy
import that hides a cycle counts.
"""

from __future__ import annotations

import ast as pyast

import networkx as nx
from cramtest import REPO

PACKAGES = ("cramc/isa", "cramc/sim", "cramc/cost")


def _module(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _imports() -> nx.DiGraph:
    """cramc module -> the cramc modules it imports, anywhere in its text."""
    g = nx.DiGraph()
    for d in PACKAGES:
        for f in (REPO / d).rglob("*.py"):
            me = _module(str(f.relative_to(REPO)))
            g.add_node(me)
            for node in pyast.walk(pyast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, pyast.ImportFrom) and node.module and node.module.startswith("cramc"):
                    if node.module != me:  # a package importing its own submodules
                        g.add_edge(me, node.module)
                    for a in node.names:  # `from cramc.sim.ops import tree` imports the module cramc.sim.ops.tree
                        sub = f"{node.module}.{a.name}"
                        if (REPO / (sub.replace(".", "/") + ".py")).exists():
                            g.add_edge(me, sub)
                elif isinstance(node, pyast.Import):
                    g.add_edges_from((me, a.name) for a in node.names if a.name.startswith("cramc"))
    return g


def test_no_import_cycle_in_isa_sim_cost() -> None:
    g = _imports()
    ours = {n for n in g if n.startswith(("cramc.isa", "cramc.sim", "cramc.cost"))}
    cycles = list(nx.simple_cycles(g.subgraph(ours)))
    assert not cycles, cycles


def test_fuse_is_a_pure_rewrite() -> None:
    """cramc.sim.fuse rewrites node lists: it imports the ISA layer only, never the interpreter."""
    g = _imports()
    assert "cramc.sim.fuse" in g
    assert all(m.startswith("cramc.isa") for m in g.successors("cramc.sim.fuse")), list(g.successors("cramc.sim.fuse"))


def test_imports_follow_the_pipeline() -> None:
    """The ISA layer imports neither the simulator nor the cost model; the cost model never imports the simulator."""
    g = _imports()
    against = [
        (a, b)
        for a, b in g.edges
        if (a.startswith("cramc.isa") and b.startswith(("cramc.sim", "cramc.cost")))
        or (a.startswith("cramc.cost") and b.startswith("cramc.sim"))
    ]
    assert not against, against


def test_the_machine_knows_no_opcode_implementation() -> None:
    """Machine state sits below the opcode implementations: machine.py imports nothing of cramc.sim.ops."""
    g = _imports()
    assert not [b for b in nx.descendants(g, "cramc.sim.machine") if b.startswith("cramc.sim.ops")]
