"""The periphery split (cramc/cost/params.py OpCost.array_excess, cramc/cost/model.py periphery_excess).

- By hand: one `wr` of 8 bit-planes over 64 rows of 4 arrays.  Through the chip-wide port alone
  (the default file) it takes 2048 bits / 1024 per 5 ns cycle = 10 ns.  With a periphery per array
  (`per_array`: each array 256 bits per cycle along a row or along a column, no chip-wide limit) each
  array writes its 8 columns in 8 column-wise cycles, 40 ns; row-wise only it would be 64 rows = 320 ns;
  with both the port and the arrays limited, the slower one counts.
- The default file leaves every figure as before (no opcode has a per-array limit), and a user file with
  only the old keys works unchanged.
- Static = dynamic and timeline (without overlap) = summed latency also with the per-array limits.
"""

from __future__ import annotations

import pytest
from cramtest import REPO, link

from cramc.cost.model import dynamic_estimate, static_estimate
from cramc.cost.params import Tech
from cramc.cost.timeline import timeline
from cramc.errors import UserError
from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify
from cramc.sim.interp import run

WR = (
    ".machine arrays=4 rows=64 cols=8 accs=1\n.input x : i8[4,64]\n.output y : i64[4,64]\n\n"
    ".main {\n  wr @0:4 c0, %x bits=8\n  rd @0:4 %y, c0 bits=8\n}\n"
)


def _wr_time(tech: Tech) -> float:
    est = static_estimate(link(WR), tech)
    return est.by_opcode["wr"].latency_s


def test_hand_computed_write() -> None:
    assert _wr_time(Tech.load()) == pytest.approx(2048 / 1024 * 5e-9, rel=1e-12)
    per = Tech.load("per_array")
    assert _wr_time(per) == pytest.approx(8 * 5e-9, rel=1e-12)  # column-wise: 8 columns, all 64 rows at once
    rows_only = per.with_overrides({"write": {"array_col_bits_per_cycle": 0}})
    assert _wr_time(rows_only) == pytest.approx(64 * 5e-9, rel=1e-12)  # row-wise: 64 rows, 8 bits each
    narrow = per.with_overrides({"write": {"array_row_bits_per_cycle": 4, "array_col_bits_per_cycle": 16}})
    assert _wr_time(narrow) == pytest.approx(min(64 * 2, 8 * 4) * 5e-9, rel=1e-12)
    both = per.with_overrides({"write": {"ops_per_cycle": 64}})  # the port now slower than the arrays
    assert _wr_time(both) == pytest.approx(2048 / 64 * 5e-9, rel=1e-12)


def test_default_file_has_no_per_array_limit() -> None:
    costs = Tech.load().op_costs(256)
    assert not any(c.per_array for c in costs.values())
    per = Tech.load("per_array").op_costs(256)
    assert {mn for mn, c in per.items() if c.per_array} == {"wr", "fill", "rd"}


def test_old_keys_still_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "old.toml"
    p.write_text("[write]\nops_per_cycle = 256\ncycle_s = 5e-9\n", encoding="utf-8")
    assert _wr_time(Tech.load(str(p))) == pytest.approx(2048 / 256 * 5e-9, rel=1e-12)
    bad = tmp_path / "bad.toml"
    bad.write_text("[read]\narray_col_bits_per_cycle = -1\n", encoding="utf-8")
    with pytest.raises(UserError, match="array_col_bits_per_cycle must be a non-negative number"):
        Tech.load(str(bad))


@pytest.mark.parametrize("case", ["digits_mlp-no_double_buffer", "digits_mlp-reduce_cram"])
def test_static_dynamic_and_timeline_agree_with_per_array_limits(case: str) -> None:
    linked = verify(parse_file(str(REPO / "tests" / "golden" / "programs" / f"{case}.cram")))
    tech = Tech.load("per_array")
    st = static_estimate(linked, tech)
    assert st.latency_s != pytest.approx(static_estimate(linked, Tech.load()).latency_s, rel=1e-6)
    assert linked.expect is not None
    res = run(linked, dict(linked.expect.inputs))
    dyn = dynamic_estimate(res.counts, res.samples, linked, tech)
    assert dyn.latency_s == pytest.approx(st.latency_s, rel=1e-12)
    assert sum(p.latency_s for p in st.layers.values()) == pytest.approx(st.latency_s, rel=1e-12)
    tl = timeline(linked, tech)
    assert tl.serial_s == pytest.approx(st.latency_s, rel=1e-12)
    assert tl.latency_s == pytest.approx(st.latency_s, rel=1e-12)  # single buffer: nothing overlaps
