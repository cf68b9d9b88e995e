"""The program builder (cramc/backend/emit.py) and its MVM lowerings (hybrid.py, cram_only.py).

- the builder knows its lowerings only through the `MvmLowering` protocol: it imports neither,
  and no module of the compiler (cramc.ir, cramc.backend, cramc.compiler, cramc.sweep) is part of
  an import cycle, counting imports inside functions and under TYPE_CHECKING;
- what the two lowerings share is written once: for the same MVM (in passes, replicated, with padded
  rows and patches) both programs lay the input out and gather the result with the same CMOS
  instructions, and write the weights with the same `wr`s, apart from the column;
- the header's chip line is the lowering's own.
"""

from __future__ import annotations

import ast as pyast

import networkx as nx
import numpy as np
import pytest
from cramtest import REPO

from cramc.backend.emit import ProgramBuilder, header_lines
from cramc.backend.schedule import Schedule
from cramc.compiler import LOWERINGS
from cramc.ir.graph import Graph, IOValue, Op
from cramc.ir.passes.manager import run_passes
from cramc.isa import ast
from cramc.isa.printer import print_program

PACKAGES = ("cramc/ir", "cramc/backend", "cramc/sweep")


def _module(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _imports() -> nx.DiGraph:
    """cramc module -> the cramc modules it imports, anywhere in its text."""
    files = [p for d in PACKAGES for p in (REPO / d).rglob("*.py")] + [REPO / "cramc" / "compiler.py"]
    g = nx.DiGraph()
    for f in files:
        me = _module(str(f.relative_to(REPO)))
        g.add_node(me)
        for node in pyast.walk(pyast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, pyast.ImportFrom) and node.module and node.module.startswith("cramc"):
                g.add_edge(me, node.module)
                for a in node.names:  # `from cramc.ir import ecc` imports the module cramc.ir.ecc
                    sub = f"{node.module}.{a.name}"
                    if (REPO / (sub.replace(".", "/") + ".py")).exists():
                        g.add_edge(me, sub)
            elif isinstance(node, pyast.Import):
                g.add_edges_from((me, a.name) for a in node.names if a.name.startswith("cramc"))
    return g


def test_no_import_cycle_and_the_builder_imports_no_lowering() -> None:
    g = _imports()
    ours = {n for n in g if n.startswith(("cramc.ir", "cramc.backend", "cramc.sweep")) or n == "cramc.compiler"}
    cycles = list(nx.simple_cycles(g.subgraph(ours)))
    assert not cycles, cycles
    assert not {"cramc.backend.hybrid", "cramc.backend.cram_only"} & set(g.successors("cramc.backend.emit"))
    # the IR layer never imports the backend, the compiler or the sweep
    back = [(a, b) for a, b in g.edges if a.startswith("cramc.ir") and b.startswith(("cramc.backend", "cramc.co"))]
    assert not back, back


def _mvm_graph(p: int, k: int, n: int) -> Graph:
    rng = np.random.default_rng(3)
    g = Graph()
    g.inputs.append(IOValue("x", "i64", (p, k)))
    g.consts["w"] = rng.integers(-8, 8, (n, k)).astype(np.int64)
    g.const_types["w"] = "i8"
    attrs = {"w": "$w", "wbits": 4, "xbits": 4, "xsigned": 0, "groups": 1}
    g.ops.append(Op("mvm", "y", ("%x",), attrs, "layer"))
    g.outputs.append(IOValue("y", "i64", (p, n)))
    return g


def _program(reduce: str, arrays: int) -> ast.Program:
    """y = x [5, 21] . w [12, 21]^T on arrays of 16 rows: 2 K chunks of 11 rows, 4 output groups of 3 (the
    hybrid is held to 3 accumulators, the CRAM-only lowering to 53 columns), 8 arrays a replica."""
    rows, cols, accs = 16, 53, 3
    mvm = LOWERINGS[reduce]
    g = run_passes(_mvm_graph(5, 21, 12), [*mvm.tiling(rows, cols, accs), Schedule(arrays)])
    assert g.ops[0].attrs["tile"].as_attr() == [1, 2, 11, 3, 4]
    b = ProgramBuilder(g, arrays, rows, cols, accs, mvm)
    b.run()
    return b.program(header_lines("m.onnx", arrays, rows, cols, mvm), [])


def _flat(prog: ast.Program, section: str) -> list[ast.Instr]:
    out: list[ast.Instr] = []

    def walk(body: tuple[ast.Stmt, ...]) -> None:
        for s in body:
            if isinstance(s, ast.Repeat):
                walk(s.body)
            elif isinstance(s, ast.Instr):
                out.append(s)

    for item in prog.items:
        if isinstance(item, ast.Section) and item.name == section:
            walk(item.body)
    return out


#: values the builder defines for every lowering: the input's layout, the result's gather
SHARED = ("y.x3", "y.xp", "y.x5", "y.xt", "y.xa", *(f"y.xa.p{i}" for i in range(4)), "y.a4", "y.s", "y.sn", "y.sp", "y")


def _shared(prog: ast.Program) -> list[str]:
    """The CMOS instructions that define SHARED values, and every weight write without its column."""
    out = []
    for i in _flat(prog, "init") + _flat(prog, "main"):
        if i.arrays is None and isinstance(i.operands[0], ast.TensorRef) and i.operands[0].name in SHARED:
            out.append(print_program(ast.Program((ast.Section("main", (i,)),))).splitlines()[1].strip())
        elif i.mnemonic == "wr" and isinstance(i.operands[1], ast.ConstRef):
            out.append(f"wr {i.arrays} {i.operands[1].name} {i.attrs}")
    return out


@pytest.mark.parametrize("arrays", [2, 20, 64])
def test_the_lowerings_share_layout_weights_and_gather(arrays: int) -> None:
    hybrid, cram = _shared(_program("tree", arrays)), _shared(_program("cram", arrays))
    assert hybrid == cram
    assert sum(s.startswith("wr ") for s in hybrid) > 1
    pads = {2: "pads=[0, 0, 0, 0, 0, 1]", 20: "pads=[0, 0, 0, 1, 0, 1]", 64: "pads=[0, 0, 0, 0, 0, 1]"}
    assert f"pad %y.xp, %y.x3 {pads[arrays]}" in hybrid  # K rows padded; at 20 arrays the patches too
    assert any(s.startswith("slice %y.xa.p3") for s in hybrid) == (arrays == 2)  # 4 passes of 2 arrays


def test_the_chip_line_is_the_lowerings() -> None:
    for reduce, mvm in LOWERINGS.items():
        text = print_program(_program(reduce, 64))
        assert text.splitlines()[1] == mvm.chip_line(64, 16, 53)
        assert ("adder tree (CRAM-ER hybrid)" in text) == (reduce == "tree")
