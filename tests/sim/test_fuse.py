"""Fused multiply-accumulate execution (cramc.sim.fuse) is exactly sequential execution."""

from __future__ import annotations

import numpy as np
import pytest

from cramc.isa.parser import parse_file
from cramc.isa.verifier import Linked, verify
from cramc.sim import interp
from cramc.sim.faults import FaultModel, Rate
from cramc.sim.fuse import FusedMac, fuse
from cramc.sim.machine import Machine

DOT = "isa/examples/dot256.cram"


@pytest.mark.parametrize("p", [0.0, 1e-2, 0.2])
def test_fused_equals_sequential(p: float, monkeypatch: pytest.MonkeyPatch) -> None:
    linked = verify(parse_file(DOT))
    inputs = dict(linked.expect.inputs)
    fm = FaultModel({"and": Rate(p, p / 2)})
    results = []
    for fused in (True, False):
        monkeypatch.setattr(Machine, "fuse_mac", fused)
        r = interp.run(linked, dict(inputs), fm, seed=7)
        results.append((r.outputs, r.counts))
    (o1, c1), (o2, c2) = results
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    assert c1.gate_evals == c2.gate_evals and c1.reduces == c2.reduces
    assert c1.faults == c2.faults
    assert c1.per_opcode == c2.per_opcode


def test_dot256_is_fused() -> None:
    linked = verify(parse_file(DOT))
    assert any(isinstance(n, FusedMac) for n in fuse(linked.main)), "the 64 AND/tadd pairs should fuse"


def fused_and_sequential(linked: Linked, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, np.ndarray]]:
    """The fault-free outputs with and without fusion, checked equal."""
    outs = []
    for fused in (True, False):
        monkeypatch.setattr(Machine, "fuse_mac", fused)
        outs.append(interp.run(linked, dict(linked.expect.inputs), FaultModel(), seed=1).outputs)
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k])
    return outs


def test_aliasing_gate_is_rejected_and_never_fused() -> None:
    """A gate that reads the scratch column it writes: the verifier rejects it (one MTJ per terminal), and the
    fuser, a pure rewrite of whatever node list it is given, leaves such a pair out of its runs."""
    import dataclasses

    from cramc.errors import UserError
    from cramc.isa.linked import BoundOp
    from cramc.isa.parser import parse

    src = open(DOT).read()
    text = src.replace("and @0 c16, c0, c9", "and @0 c16, c16, c9", 1)
    assert text != src
    with pytest.raises(UserError, match="the output operand dst and the input operand in0 both name column c16"):
        verify(parse(text))
    nodes = list(verify(parse(src)).main)
    at = next(
        i for i, n in enumerate(nodes) if isinstance(n, BoundOp) and n.op.mnemonic == "and" and n.operands == (16, 0, 9)
    )
    nodes[at] = dataclasses.replace(nodes[at], operands=(16, 16, 9))
    fused = fuse(tuple(nodes))
    assert any(isinstance(n, FusedMac) for n in fused)
    for n in fused:
        if isinstance(n, FusedMac):
            for g, _ in n.pairs:
                assert g.operands[0] not in g.operands[1:]


@pytest.mark.parametrize("shift", [0, 20, 30])  # 30: sum |w| * rows = 2**54
def test_large_shifts_take_the_integer_path(shift: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights too large for an exact float64 product (sum |w| * rows >= 2**53) are summed in int64."""
    import re

    from cramc.isa.parser import parse

    src = open(DOT).read()
    # every tree shift s becomes s + shift: the accumulator is the dot product times 2**shift
    text = re.sub(r"(t(?:add|sub) @0 acc\d+, c\d+, )(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) + shift}", src)
    linked = verify(parse(text))
    assert any(isinstance(n, FusedMac) for n in fuse(linked.main))
    outs = fused_and_sequential(linked, monkeypatch)
    for k in outs[0]:
        want = linked.expect.outputs[k].astype(np.int64) << shift
        np.testing.assert_array_equal(outs[0][k], want)


def _double_buffered(src: str) -> str:
    """dot256 with its odd pairs writing (and counting) c17: the scratch alternation of a double-buffered MAC."""
    out, k = [], 0
    for line in src.replace(".machine arrays=1 rows=256 cols=17", ".machine arrays=1 rows=256 cols=18").splitlines():
        if line.lstrip().startswith("and @0 c16,"):
            k += 1
        if k % 2 == 0 and line.lstrip().startswith(("and @0 c16,", "tadd @0 acc0, c16,", "tsub @0 acc0, c16,")):
            line = line.replace("c16", "c17", 1)
        out.append(line)
    return "\n".join(out) + "\n"


def _final_state(linked: Linked, fm: FaultModel, fused: bool, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """The whole machine after .init and .main on the validation inputs: cells, accumulators, fault counts."""
    monkeypatch.setattr(Machine, "fuse_mac", fused)
    m = Machine(linked, 4, fm, np.random.default_rng(3))
    for spec in linked.inputs:
        m.tensors[spec.name] = np.repeat(np.asarray(linked.expect.inputs[spec.name])[:1], 4, axis=0)
    interp.execute(m, linked.init)
    interp.execute(m, linked.main)
    return m.cells.copy(), m.acc.copy(), dict(m.counts.faults), m.counts.gate_evals


@pytest.mark.parametrize("p", [0.0, 1e-2, 0.2])
def test_double_buffered_scratch_fuses_and_leaves_each_column_its_last_output(
    p: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose gates alternate two scratch columns (cramc compile's double-buffered MAC) fuses into one
    run, and leaves every cell, accumulator and fault count as sequential execution does; a gate that reads
    the other scratch column ends the run."""
    from cramc.isa.parser import parse

    src = open(DOT).read()
    linked = verify(parse(_double_buffered(src)))
    runs = [n for n in fuse(linked.main) if isinstance(n, FusedMac)]
    assert runs and runs[0].scratch == (16, 17) and len(runs[0].pairs) == 64
    assert runs[0].last_writes == ((62, 16), (63, 17))
    fm = FaultModel({"and": Rate(p, p / 2)})
    got = _final_state(linked, fm, True, monkeypatch)
    want = _final_state(linked, fm, False, monkeypatch)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2:] == want[2:]
    assert not np.array_equal(got[0][16], got[0][17])  # both columns were written, with different outputs
    # pair 2 reading c17, which pair 1 wrote: the run stops before it
    db = _double_buffered(src)
    text = db.replace("and @0 c16, c0, c10", "and @0 c16, c17, c10", 1)
    assert text != db
    runs = [n for n in fuse(verify(parse(text)).main) if isinstance(n, FusedMac)]
    assert runs and all(len(n.pairs) < 64 for n in runs)
    for n in runs:
        assert not any(c in n.scratch for g, _ in n.pairs for c in g.operands[1:])
