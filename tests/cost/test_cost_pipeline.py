"""Latency and throughput (cramc/cost/timeline.py): the layer pipeline, `cramc stats` and REPORT.json.

- A two-layer program whose figures are computed by hand from the default technology file: layer A on
  array 0 (two terms, double-buffered), a CMOS `tile` between, layer B on array 1 (three terms); the
  latency is the sum of the three parts, the pipeline interval the slower layer, the throughput its
  inverse.  Two layers on the same array are one stage (they cannot hold two samples at once).
- `cramc stats --json` and `cramc run --report` carry latency with and without overlap, the interval,
  the throughput and the energy per inference, equal to the timeline model's; throughput >= 1 / latency.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cramtest import REPO, link

from cramc.cost.model import static_estimate
from cramc.cost.params import Tech
from cramc.cost.timeline import timeline
from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify

TECH = Tech.load()


def _two_layers(b_array: int) -> str:
    return (
        ".machine arrays=2 rows=8 cols=4 accs=1\n.input x : i8[1,8]\n.output y : i64[1,1]\n\n.main {\n"
        "  ; A\n  wr @0 c0, %x bits=2\n  aclr @0 acc0\n"
        "  and @0 c2, c0, c1\n  tadd @0 acc0, c2, 0\n  and @0 c3, c0, c1\n  tadd @0 acc0, c3, 1\n"
        "  ard @0 %a, acc0\n"
        "  ; B\n  tile %b, %a reps=[1, 8]\n"
        f"  wr @{b_array} c0, %b bits=2\n  aclr @{b_array} acc0\n"
        + "".join(f"  and @{b_array} c{2 + k % 2}, c0, c1\n  tadd @{b_array} acc0, c{2 + k % 2}, {k}\n"
                  for k in range(3))
        + f"  ard @{b_array} %y, acc0\n}}\n"
    )  # fmt: skip


def test_hand_computed_pipeline() -> None:
    c = TECH.op_costs(8)
    # the default technology file: a write cycle of 5 ns moves 1024 bits; gate 6 ns, tree 2 ns, accumulator
    # access 1 ns, its read waits for a 4-stage tree of 0.5 ns stages; CMOS 1 ns issue + 64 elements per ns
    assert (c["and"].latency_s, c["tadd"].latency_s, c["aclr"].latency_s) == (6e-9, 2e-9, 1e-9)
    assert c["wr"].op_time_s == 5e-9 / 1024 and c["ard"].latency_s == 1e-9 + 4 * 0.5e-9
    assert (c["tile"].latency_s, c["tile"].op_time_s) == (1e-9, 1e-9 / 64)
    wr = 16 * 5e-9 / 1024  # 8 rows x 2 bits
    a = wr + 1e-9 + (6e-9 + 6e-9 + 2e-9) + 3e-9  # AND, AND (other column) while tadd, last tadd
    cmos = 1e-9 + 8e-9 / 64  # tile: 8 elements
    b = wr + 1e-9 + (3 * 6e-9 + 2e-9) + 3e-9  # the third AND reuses c2 after the first tadd has sensed it
    tl = timeline(link(_two_layers(1)), TECH)
    assert tl.latency_s == pytest.approx(a + cmos + b, rel=1e-12)
    assert tl.serial_s == pytest.approx(a + cmos + b + 2e-9 + 2 * 2e-9, rel=1e-12)  # the hidden tree counts
    assert [s.layers for s in tl.stages] == [("A",), ("B",)]
    assert [s.time_s for s in tl.stages] == pytest.approx([a, b], rel=1e-12)
    assert tl.layers["B"] == pytest.approx(cmos + b, rel=1e-12)
    assert (tl.cmos_s, tl.port_s) == pytest.approx((cmos, 2 * wr), rel=1e-12)
    assert tl.interval_s == pytest.approx(b, rel=1e-12) and tl.throughput == pytest.approx(1 / b, rel=1e-12)
    assert tl.bottleneck == "stage B"
    # on one array the two layers are one stage: the interval is their sum
    same = timeline(link(_two_layers(0)), TECH)
    assert [s.layers for s in same.stages] == [("A", "B")]
    assert same.interval_s == pytest.approx(a + b, rel=1e-12) and same.latency_s == pytest.approx(tl.latency_s)


GOLDEN = REPO / "tests" / "golden" / "programs"


@pytest.mark.parametrize("case", ["digits_cnn", "digits_mlp-small_chip"])
def test_stats_and_report_give_the_timeline(cli, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    prog = str(GOLDEN / f"{case}.cram")
    st, rep = tmp_path / "s.json", tmp_path / "r.json"
    res = cli("stats", prog, "--json", str(st))
    assert res.rc == 0, res.err
    assert "latency with overlap:" in res.out and "throughput:" in res.out and "pipeline interval:" in res.out
    assert cli("run", prog, "--report", str(rep)).rc == 0
    linked = verify(parse_file(prog))
    tl = timeline(linked, TECH)
    s = json.loads(st.read_text(encoding="utf-8"))["timeline"]
    r = json.loads(rep.read_text(encoding="utf-8"))
    for d in (s, r, r["cost"]["timeline"]):
        assert d["latency_overlap_s"] == tl.latency_s and d["latency_no_overlap_s"] == tl.serial_s
        assert d["interval_s"] == tl.interval_s and d["throughput_per_s"] == tl.throughput
        assert d["energy_per_inference_j"] == static_estimate(linked, TECH).energy_j
        assert d["throughput_per_s"] >= 1 / d["latency_overlap_s"]
    assert r["latency_s"] == pytest.approx(tl.serial_s, rel=1e-12)  # the summed latency, as before
    assert tl.latency_s < tl.serial_s
