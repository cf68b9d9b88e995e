"""The timeline cost model (cramc/cost/timeline.py): gate/tree overlap, hazards, loops, the layer pipeline.

- Where nothing can overlap (the single-buffer programs the compiler emitted before double buffering,
  the CRAM-only lowerings), the timeline's critical path is exactly cramc.cost.model's summed latency;
  with overlap turned off it is that sum for every program.
- By hand: 4 AND + 4 tadd on one array.  Single buffer (one scratch column): each AND waits for the tree
  to finish sensing the column it overwrites, 4 (G + T).  Double-buffered (alternating two columns): the
  AND of term k+1 runs while term k is counted; with G >= T the gates are the bottleneck, 4 G + T, and
  with T > G the tree is, G + 4 T.  G and T are the technology file's AND and tadd latencies.
- Hazards across array sets: a tree op waits for a gate that writes its column on a shared array, not
  for one on other arrays.
- A loop's result is the unrolled program's (the periodic-state shortcut is exact).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from cramtest import REPO, link

from cramc.compiler import Options, compile_model
from cramc.cost.model import static_estimate
from cramc.cost.params import Tech
from cramc.cost.timeline import timeline
from cramc.isa.linked import Linked
from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify

GOLDEN = REPO / "tests" / "golden" / "programs"
TECH = Tech.load()


def _single_buffer(case: str) -> Linked:
    """A golden single-buffer program, or the MLP compiled with one scratch set under the scheme `case`."""
    if case.startswith("ecc_"):
        opts = Options(ecc=case[4:], double_buffer=False, n_validation=1, trace=False)
        m = REPO / "models"
        cal = dict(np.load(m / "digits_calib_flat.npz"))
        return link(compile_model(str(m / "digits_mlp.onnx"), cal, opts, log=io.StringIO()))
    text = (GOLDEN / f"{case}.cram").read_text()
    assert "_db" not in text
    return link(text)


@pytest.mark.parametrize(
    "case",
    ["digits_mlp-no_double_buffer", "digits_cnn-no_double_buffer", "digits_mlp-reduce_cram", "ecc_vote",
     "ecc_dup"],
)  # fmt: skip
def test_no_overlap_possible_gives_the_summed_latency(case: str) -> None:
    linked = _single_buffer(case)
    tl = timeline(linked, TECH)
    est = static_estimate(linked, TECH)
    assert tl.latency_s == pytest.approx(est.latency_s, rel=1e-12)
    assert tl.serial_s == pytest.approx(est.latency_s, rel=1e-12)
    assert sum(tl.layers.values()) == pytest.approx(tl.latency_s, rel=1e-12)


@pytest.mark.parametrize("case", ["digits_mlp", "digits_cnn", "digits_mlp-small_chip", "digits_mlp-ecc_tmr"])
def test_double_buffered_programs_overlap(case: str) -> None:
    linked = verify(parse_file(str(GOLDEN / f"{case}.cram")))
    est = static_estimate(linked, TECH)
    serial, tl = timeline(linked, TECH, overlap=False), timeline(linked, TECH)
    assert serial.latency_s == pytest.approx(est.latency_s, rel=1e-12) == tl.serial_s
    assert tl.latency_s < 0.95 * est.latency_s  # every MAC term hides the shorter of gate and tree
    assert sum(tl.layers.values()) == pytest.approx(tl.latency_s, rel=1e-12)


def _mac4(double: bool, reps: int = 1, loop: bool = False) -> str:
    """4 AND + 4 tadd on one array of 8 rows, the product into c2 (or alternately c2 and c3); `reps` times,
    unrolled or in a loop."""
    terms = []
    for k in range(4):
        t = 2 + (k % 2 if double else 0)
        terms += [f"and @0 c{t}, c0, c1", f"tadd @0 acc0, c{t}, {k}"]
    if loop:
        body = f"  repeat r {reps} {{\n" + "\n".join(f"    {s}" for s in terms) + "\n  }"
    else:
        body = "\n".join(f"  {s}" for s in terms * reps)
    return (
        ".machine arrays=1 rows=8 cols=4 accs=1\n.input w : i8[1,8]\n.input x : i8[1,8]\n.output y : i64[1,1]\n\n"
        ".main {\n  wr @0 c0, %w bits=1\n  wr @0 c1, %x bits=1\n  aclr @0 acc0\n"
        f"{body}\n  ard @0 %y, acc0\n}}\n"
    )


def _fixed(tech: Tech) -> float:
    """The two input writes, the clear and the accumulator read of `_mac4`: serial in every schedule."""
    c = tech.op_costs(8)
    return 2 * c["wr"].time(1, 8) + c["aclr"].time(1, 1) + c["ard"].time(1, 1)


def test_hand_computed_overlap_of_four_terms() -> None:
    c = TECH.op_costs(8)
    g, t = c["and"].latency_s, c["tadd"].latency_s
    assert (g, t) == (6e-9, 2e-9)  # the default technology file: [gate] 6 ns, [tree] 2 ns
    single, double = timeline(link(_mac4(False)), TECH), timeline(link(_mac4(True)), TECH)
    assert single.latency_s - _fixed(TECH) == pytest.approx(32e-9, rel=1e-12)  # 4 x (6 + 2) ns
    assert double.latency_s - _fixed(TECH) == pytest.approx(26e-9, rel=1e-12)  # 4 x 6 + 2 ns
    assert single.serial_s == double.serial_s == pytest.approx(single.latency_s, rel=1e-12)
    assert single.latency_s == pytest.approx(static_estimate(link(_mac4(False)), TECH).latency_s, rel=1e-12)


def test_a_slower_tree_is_the_bottleneck() -> None:
    tech = TECH.with_overrides({"tree": {"latency_s": 10e-9}})
    assert tech.op_costs(8)["tadd"].latency_s == 10e-9
    double = timeline(link(_mac4(True)), tech)
    assert double.latency_s - _fixed(tech) == pytest.approx(6e-9 + 4 * 10e-9, rel=1e-12)  # G + 4 T
    single = timeline(link(_mac4(False)), tech)
    assert single.latency_s - _fixed(tech) == pytest.approx(4 * 16e-9, rel=1e-12)


def test_hazards_follow_the_array_sets() -> None:
    head = ".machine arrays=4 rows=8 cols=4 accs=1\n.input x : i8[4,8]\n.output y : i64[4,1]\n\n.main {\n"
    head += "  wr @0:4 c0, %x bits=3\n  aclr @0:4 acc0\n"
    tail = "  ard @0:4 %y, acc0\n}\n"
    shared = head + "  and @0:2 c2, c0, c1\n  tadd @1:3 acc0, c2, 0\n" + tail  # array 1 reads what the AND wrote
    apart = head + "  and @0:2 c2, c0, c1\n  tadd @2:4 acc0, c2, 0\n" + tail  # arrays 2, 3: not written
    g, t = TECH.op_costs(8)["and"].latency_s, TECH.op_costs(8)["tadd"].latency_s
    a, b = timeline(link(shared), TECH), timeline(link(apart), TECH)
    assert a.latency_s == pytest.approx(a.serial_s, rel=1e-12)
    assert a.latency_s - b.latency_s == pytest.approx(min(g, t), rel=1e-9)


@pytest.mark.parametrize("n", [1, 2, 3, 50])
def test_a_loop_equals_its_unrolled_body(n: int) -> None:
    unrolled, looped = _mac4(True, n), _mac4(True, n, loop=True)
    a, b = timeline(link(unrolled), TECH), timeline(link(looped), TECH)
    assert b.latency_s == pytest.approx(a.latency_s, rel=1e-12)
    assert b.serial_s == pytest.approx(a.serial_s, rel=1e-12)
    g, t = TECH.op_costs(8)["and"].latency_s, TECH.op_costs(8)["tadd"].latency_s
    assert b.latency_s - _fixed(TECH) == pytest.approx(4 * n * g + t, rel=1e-12)  # the gates never wait
