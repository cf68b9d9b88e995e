"""The import structure of cramc: no cycle between modules, no import against the pipeline's direction.

Every module under cramc/ is parsed with `ast` (nothing is imported), and every
``import`` in it counts wherever it stands: at the top, inside a function (a
lazy import still ties the two modules together), under ``if TYPE_CHECKING:``
(a type that crosses a layer is a dependency that crosses it).  ``from A
import b`` is an edge to the module A.b when there is one, else to A; a
package's ``__init__`` is not an implicit target (Python runs it first, but it
is not what the importer depends on).

Layers.  `LAYERS` places every module in a layer (a package, or a sub-package
where the direction inside a package matters, e.g. ``ir.passes`` above the
IR itself) and says which layers it may import directly; it may also import
whatever those may import.  Data flows frontend -> ir -> backend -> ISA text
-> isa -> sim, and a stage imports the types of what it reads and writes: the
frontend builds IR, the backend reads IR and writes ISA.  The layers, bottom
to top (rank = the longest chain beneath a layer):

====  ==========================================================================
rank  layers
====  ==========================================================================
0     ``errors``; ``cramc`` (the package itself: ``__version__``)
1     ``fileio``, ``datacheck``, ``distributed`` (file, data and worker
      helpers); ``isa`` (the opcode table, AST, parser, verifier, linked
      programs: the language every stage agrees on)
2     ``errmodel`` (the fault model as data: it reads the gate names from the
      opcode table); ``cost`` (latency, energy and area of linked programs)
3     ``ir`` (the tiling IR, its semantics, the ECC registry, the statistical
      mode); ``sim`` (runs linked programs and samples the fault model)
4     ``ir.passes``; ``frontend`` (ONNX in, IR out)
5     ``backend`` (IR in, ISA AST out); ``train`` (fine-tuning: the frontend's
      quantised model and the statistical mode)
6     ``compiler`` (the one pipeline: frontend, passes, backend)
7     ``sweep`` (compiles and runs: everything beneath it)
8     ``cli``
====  ==========================================================================

Rank alone is not the rule: the compile side (ir, frontend, backend, compiler,
train) and the run side (sim, cost) sit side by side above isa and errmodel and
never import each other (the compiler and fine-tuning read the fault model,
never the simulator; the simulator never sees IR), and layers of one rank do
not import each other (sim and cost both read linked programs; neither needs
the other).  Only sweep and cli, on top, join the two sides.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cramc"

#: Each layer and the layers it may import directly (and, through them, whatever those may import).
#: A layer is a module or package path below cramc ("ir.passes" is cramc/ir/passes/); a module belongs
#: to the longest layer that contains it.  "cramc" is the package's own __init__ only.
LAYERS: dict[str, tuple[str, ...]] = {
    "errors": (),
    "cramc": (),
    "fileio": ("errors",),
    "datacheck": ("errors",),
    "distributed": ("errors",),
    "isa": ("errors",),
    "errmodel": ("isa",),
    "cost": ("isa", "fileio"),  # reports and plots are written through fileio (atomic, no half-written files)
    "ir": ("errmodel",),
    "sim": ("errmodel",),
    "ir.passes": ("ir",),
    "frontend": ("ir",),
    "backend": ("ir.passes", "cramc"),
    "train": ("frontend",),
    "compiler": ("frontend", "backend"),
    "sweep": ("compiler", "train", "sim", "cost", "fileio", "datacheck", "distributed"),
    "cli": ("sweep",),
}


@dataclass(frozen=True)
class Import:
    """One import statement's edge: `source` imports `target` at file:line."""

    source: str
    target: str
    file: str
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """cramc/ir/passes/auto_ecc.py -> cramc.ir.passes.auto_ecc; a package's __init__.py names the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool) -> list[tuple[str, int, bool]]:
    """(name, line, from) for every import in `source`, at any depth; relative imports resolved.

    ``import A.b`` gives (A.b, line, False): A.b must be a module.  ``from A import b`` gives (A.b, line,
    True): the module A.b if there is one, else the name b defined in A.
    """
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[str, int, bool]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, False) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out += [(f"{mod}.{a.name}", node.lineno, True) for a in node.names]
    return out


def collect(root: Path = PACKAGE) -> tuple[set[str], list[Import], list[Import]]:
    """The modules under `root`, their imports of one another, and imports of cramc names that are no module."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    top = root.name
    edges: list[Import] = []
    missing: list[Import] = []
    for mod, path in files.items():
        rel = str(path.relative_to(root.parent))
        for name, line, from_ in imported_names(path.read_text(encoding="utf-8"), mod, path.name == "__init__.py"):
            if name != top and not name.startswith(top + "."):
                continue
            parent = name.rpartition(".")[0]
            # `from A import b`: the module A.b if there is one, else A (b is a name defined in A)
            target = name if name in files else parent if from_ and parent in files else None
            if target is None:
                missing.append(Import(mod, name, rel, line))
            elif target != mod:
                edges.append(Import(mod, target, rel, line))
    return set(files), list(dict.fromkeys(edges)), missing


def layer_of(module: str) -> str | None:
    """The layer a module belongs to: the longest entry of LAYERS that contains it (None: in no layer)."""
    if module == "cramc":
        return "cramc"
    rest = module.removeprefix("cramc.")
    best = None
    for key in LAYERS:
        if key != "cramc" and (rest == key or rest.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    return best


def layer_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(LAYERS)
    g.add_edges_from((a, b) for a, deps in LAYERS.items() for b in deps)
    return g


def allowed() -> dict[str, set[str]]:
    """Each layer and every layer it may import (the transitive closure of LAYERS)."""
    g = layer_graph()
    return {a: nx.descendants(g, a) for a in LAYERS}


def ranks() -> dict[str, int]:
    """Each layer's rank: the length of the longest chain of layers beneath it."""
    g = layer_graph()
    rank: dict[str, int] = {}
    for a in reversed(list(nx.topological_sort(g))):
        rank[a] = 1 + max((rank[b] for b in g.successors(a)), default=-1)
    return rank


MODULES, EDGES, MISSING = collect()


def test_the_layer_table_is_a_hierarchy() -> None:
    g = layer_graph()
    assert set(g.nodes) == set(LAYERS), f"layers named as dependencies but not defined: {set(g.nodes) - set(LAYERS)}"
    assert nx.is_directed_acyclic_graph(g), nx.find_cycle(g)
    # the ranks the module docstring documents
    r = ranks()
    assert [sorted(k for k in r if r[k] == i) for i in range(max(r.values()) + 1)] == [
        ["cramc", "errors"],
        ["datacheck", "distributed", "fileio", "isa"],
        ["cost", "errmodel"],
        ["ir", "sim"],
        ["frontend", "ir.passes"],
        ["backend", "train"],
        ["compiler"],
        ["sweep"],
        ["cli"],
    ]


def test_every_module_is_in_a_layer() -> None:
    assert len(MODULES) > 50, "the scan found cramc's modules"
    homeless = sorted(m for m in MODULES if layer_of(m) is None)
    assert not homeless, f"modules in no layer (add their package to LAYERS in {__file__}): {homeless}"


def test_every_cramc_import_names_a_module() -> None:
    assert not MISSING, "imports of cramc modules that do not exist:\n" + "\n".join(
        f"  {i.where()}: {i.target}" for i in MISSING
    )


def test_no_import_cycle() -> None:
    g = nx.DiGraph()
    g.add_nodes_from(MODULES)
    at: dict[tuple[str, str], Import] = {}
    for e in EDGES:
        g.add_edge(e.source, e.target)
        at.setdefault((e.source, e.target), e)
    cycles = []
    for scc in nx.strongly_connected_components(g):
        if len(scc) > 1:
            cycle = nx.find_cycle(g.subgraph(scc))
            path = cycle[0][0] + "".join(f" -> {b} ({at[a, b].where()})" for a, b in cycle)
            cycles.append(f"  {path}   [strongly connected: {', '.join(sorted(scc))}]")
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_no_import_against_the_pipeline() -> None:
    may = allowed()
    bad = []
    for e in EDGES:
        a, b = layer_of(e.source), layer_of(e.target)
        if a is None or b is None or a == b:
            continue  # unplaced modules fail test_every_module_is_in_a_layer
        if b not in may[a]:
            bad.append(
                f"  {e.where()}: {e.source} ({a}) imports {e.target} ({b}); "
                f"{a} may import only {', '.join(sorted(may[a])) or 'nothing'}"
            )
    assert not bad, "imports against the layers (docstring of tests/test_layering.py):\n" + "\n".join(sorted(bad))


# ---------------------------------------------------------------------------- rules inside the simulator
def _imported_by(module: str) -> set[str]:
    return {e.target for e in EDGES if e.source == module}


def test_fuse_is_a_pure_rewrite() -> None:
    """cramc.sim.fuse rewrites node lists: it imports the ISA layer only, never the interpreter or the runners."""
    assert "cramc.sim.fuse" in MODULES
    bad = sorted(m for m in _imported_by("cramc.sim.fuse") if not m.startswith("cramc.isa"))
    assert not bad, f"cramc.sim.fuse imports {bad}"


def test_the_machine_knows_no_opcode_implementation() -> None:
    """The machine state sits below the opcode implementations: machine.py reaches nothing of cramc.sim.ops."""
    g = nx.DiGraph()
    g.add_edges_from((e.source, e.target) for e in EDGES)
    g.add_node("cramc.sim.machine")
    assert not sorted(m for m in nx.descendants(g, "cramc.sim.machine") if m.startswith("cramc.sim.ops"))


# ---------------------------------------------------------------------------- the diagram in the docs
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
BEGIN, END = "<!-- layers:begin (generated by: python tests/test_layering.py) -->", "<!-- layers:end -->"


def diagram() -> str:
    """LAYERS as the text diagram of docs/architecture.md: one line per layer, top rank first, with the
    layers it imports directly (an arrow is an allowed import; nothing points up)."""
    r = ranks()
    width = max(len(a) for a in LAYERS)
    lines = ["rank  layer" + " " * (width - 5) + "     imports directly"]
    for i in range(max(r.values()), -1, -1):
        for a in sorted(k for k in LAYERS if r[k] == i):
            deps = ", ".join(LAYERS[a]) or "-"
            lines.append(f"{i:>4}  {a:<{width}} ──▶ {deps}")
    return "```\n" + "\n".join(lines) + "\n```"


def _doc_block(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise AssertionError(f"{ARCHITECTURE}: the markers {BEGIN} ... {END} are missing")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_the_architecture_doc_shows_the_layer_table() -> None:
    assert _doc_block(ARCHITECTURE.read_text(encoding="utf-8")) == diagram(), (
        "docs/architecture.md's layer diagram is out of date: run python tests/test_layering.py"
    )


# ---------------------------------------------------------------------------- the scanner itself
def test_the_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Top-level, lazy, TYPE_CHECKING and relative imports are all edges; names defined in a module are not."""
    pkg = tmp_path / "cramc"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "base.py").write_text("X = 1\n")
    (pkg / "other.py").write_text("Y = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import cramc.base\n"
        "from cramc import __version__\n"
        "if TYPE_CHECKING:\n"
        "    from ..other import Y\n"
        "def f():\n"
        "    from . import sibling\n"
        "    from cramc.nowhere import Z\n"
        "    import cramc.base.X\n"
    )
    (pkg / "sub" / "sibling.py").write_text("")
    modules, edges, missing = collect(pkg)
    assert modules == {"cramc", "cramc.base", "cramc.other", "cramc.sub", "cramc.sub.mod", "cramc.sub.sibling"}
    assert {(e.source, e.target, e.line) for e in edges} == {
        ("cramc.sub.mod", "cramc.base", 2),
        ("cramc.sub.mod", "cramc", 3),
        ("cramc.sub.mod", "cramc.other", 5),
        ("cramc.sub.mod", "cramc.sub.sibling", 7),
    }
    assert [(i.target, i.line) for i in missing] == [("cramc.nowhere.Z", 8), ("cramc.base.X", 9)]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("cramc", "cramc"),
        ("cramc.errors", "errors"),
        ("cramc.ir.noisy", "ir"),
        ("cramc.ir.passes.auto_ecc", "ir.passes"),
        ("cramc.ir.passes", "ir.passes"),
        ("cramc.errmodel.model", "errmodel"),
        ("cramc.sim.faults", "sim"),
        ("cramc.irx", None),
        ("cramc.newpackage.mod", None),
    ],
)
def test_layer_of(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer


if __name__ == "__main__":  # rewrite the diagram in docs/architecture.md
    text = ARCHITECTURE.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    ARCHITECTURE.write_text(head + BEGIN + "\n" + diagram() + "\n" + END + rest.split(END, 1)[1], encoding="utf-8")
