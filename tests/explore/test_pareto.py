"""Pareto fronts on hand-made points, and the parsing of `cramc explore`'s axis lists."""

from __future__ import annotations

import math

import pytest

from cramc.errors import UserError
from cramc.sweep.explore import (
    ExploreOptions,
    parse_choices,
    parse_ecc,
    parse_error_models,
    parse_gate_errors,
    parse_ints,
    parse_techs,
    points,
)
from cramc.sweep.pareto import mark_fronts, pareto_front


def test_front_of_hand_made_points() -> None:
    # (accuracy, cost): a is cheapest, c most accurate, b between them on both; d is dominated by b
    # (less accurate, dearer), e by c (as accurate, dearer)
    acc = [0.50, 0.80, 0.95, 0.70, 0.95]
    cost = [1.0, 2.0, 5.0, 3.0, 6.0]
    assert pareto_front(acc, cost) == [True, True, True, False, False]


def test_front_keeps_ties_and_drops_nan() -> None:
    # two equal points are both on the front; one equally cheap but less accurate is not;
    # a NaN point is on no front and dominates none (it would dominate everything otherwise)
    acc = [0.9, 0.9, 0.8, math.nan, 0.6]
    cost = [1.0, 1.0, 1.0, 0.1, math.nan]
    assert pareto_front(acc, cost) == [True, True, False, False, False]


def test_one_point_and_all_dominated_by_one() -> None:
    assert pareto_front([0.3], [7.0]) == [True]
    assert pareto_front([0.9, 0.5, 0.4, 0.8], [1.0, 2.0, 3.0, 1.5]) == [True, False, False, False]


def test_mark_fronts_skips_points_not_compiled() -> None:
    ok = {"status": "ok", "acc_mean": 0.9, "energy_j": 1.0, "latency_s": 2.0, "area_mm2": 3.0, "edp_js": 2.0}
    cheap = {**ok, "acc_mean": 0.5, "energy_j": 0.5, "latency_s": 5.0, "area_mm2": 3.0, "edp_js": 2.5}
    bad = {"status": "not compiled", "reason": "no"}
    rows = [ok, cheap, bad]
    mark_fronts(rows)
    assert [r["pareto_energy"] for r in rows] == [True, True, ""]
    assert [r["pareto_latency"] for r in rows] == [True, False, ""]
    assert [r["pareto_area"] for r in rows] == [True, False, ""]  # same area, less accurate
    assert [r["pareto_edp"] for r in rows] == [True, False, ""]


def test_axis_lists() -> None:
    assert parse_ints("--rows", "128, 256,128") == (128, 256)
    assert parse_ints("--wbits", "4,8", (4, 8)) == (4, 8)
    assert parse_choices("--reduce", "tree,cram-serial", ("tree", "cram", "cram-serial")) == ("tree", "cram-serial")
    assert parse_gate_errors("none,1e-3") == (None, 1e-3)
    assert parse_ecc("none,auto,auto:0.3,tmr:sig>=10") == ("none", "auto", "auto:0.3", "tmr:sig>=10")
    assert parse_error_models("none,near_term") == ("none", "near_term")
    assert parse_techs("default,cmos7nm") == ("default", "cmos7nm")
    o = ExploreOptions(model="m.onnx", rows=(128, 256), reduce=("tree", "cram"), ecc=("none", "auto"))
    grid = points(o)
    assert len(grid) == 8 and {(p.rows, p.reduce, p.ecc) for p in grid} == {
        (r, d, e) for r in (128, 256) for d in ("tree", "cram") for e in ("none", "auto")
    }


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: parse_ints("--rows", "128,,256"), "no empty item"),
        (lambda: parse_ints("--rows", ""), "no empty item"),
        (lambda: parse_ints("--rows", "12x"), "'12x' is not an integer"),
        (lambda: parse_ints("--arrays", "0"), "at least 1"),
        (lambda: parse_ints("--wbits", "2", (4, 8)), "2 is not one of 4, 8"),
        (lambda: parse_choices("--reduce", "tree,adder", ("tree", "cram")), "unknown value 'adder'"),
        (lambda: parse_gate_errors("1e-3,2"), "between 0 and 1"),
        (lambda: parse_gate_errors("lots"), "not a number"),
        (lambda: parse_ecc("auto:x"), "must be a number"),
        (lambda: parse_ecc("auto:-1"), "positive fraction"),
        (lambda: parse_ecc("triple"), "unknown scheme 'triple'"),
        (lambda: parse_error_models("none,nosuchpreset"), "nosuchpreset"),
        (lambda: parse_techs("nosuchtech"), "nosuchtech"),
        (lambda: points(ExploreOptions(model="m", arrays=tuple(range(1, 101)), rows=tuple(range(1, 102)))), "at most"),
    ],
)
def test_bad_axis_values(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(UserError, match=match):
        call()
