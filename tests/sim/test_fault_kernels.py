"""The compiled fault loops (cramc.sim.faults.KERNEL = "numba", the optional cramc[fast]) against the numpy
reference: the same stream positions, the same rendered masks, the same flipped bits and counts, the same
program outputs and fault counts for a seed.  Without numba only the reference runs (and the forced kernel
is refused with one clear error)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from cramtest import REPO, link_file

from cramc.errmodel import FaultModel, Rate
from cramc.sim import faults
from cramc.sim.faults import FaultStream, Injector, row_mask_words
from cramc.sim.interp import run

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba (cramc[fast]) is not installed")


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set faults.KERNEL for one call of the test's scenario (the compiled loops from the first candidate on)."""
    monkeypatch.setattr(faults, "FAST_AFTER", 0)

    def use(name: str) -> None:
        monkeypatch.setattr(faults, "KERNEL", name)

    yield use


def _scenario(p: float, seed: int) -> list[Any]:
    """takes, dense takes and injections (rows partial, one word and several per block) on one stream."""
    st = FaultStream(p, np.random.default_rng(seed), batch=64)
    rng = np.random.default_rng(seed + 1)
    out: list[Any] = []
    for step in range(40):
        kind = step % 4
        n = int(rng.integers(1, 3000))
        if kind == 0:
            got = st.take(n)
            out.append(None if got is None else (got[0].copy(), got[1].copy()))
        elif kind == 1:
            out.append(st.take_dense(n).copy())
        else:
            block = 1 if kind == 2 else 3
            active = row_mask_words(5, 64 * block - 7, block)
            flat = rng.integers(0, 2**63, n * block, dtype=np.uint64)
            k = Injector(st, Rate(p, p), rng, block, active)(flat)
            out.append((flat, k))
        out.append((st.handed_out(), st.dropped))
    return out


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@needs_numba
@pytest.mark.parametrize("p", [0.3, 1e-2, 1e-4, 1e-17])
def test_stream_and_injector_loops_match_numpy(p: float, kernel: Any) -> None:
    """p = 1e-17: the capped gaps (`GAP_CAP`)."""
    kernel("numpy")
    want = _scenario(p, 7)
    kernel("numba")
    got = _scenario(p, 7)
    assert len(got) == len(want)
    for a, b in zip(want, got, strict=True):
        _same(a, b)
    if p >= 1e-2:
        assert any(isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], int) and x[1] > 0 for x in got)


def _mlp_run(p: float, seed: int) -> tuple[dict[str, np.ndarray], Any]:
    linked = link_file(REPO / "tests" / "golden" / "programs" / "digits_mlp.cram")
    assert linked.expect is not None
    res = run(linked, dict(linked.expect.inputs), FaultModel.uniform(p), seed=seed)
    return res.outputs, res.counts


@needs_numba
@pytest.mark.parametrize("p", [1e-2, 3e-3])
def test_program_outputs_and_counts_match_numpy(p: float, kernel: Any) -> None:
    """A compiled MLP at a high gate error (the stacked fused path) and a lower one (the product path)."""
    kernel("numpy")
    want_out, want_counts = _mlp_run(p, 3)
    kernel("numba")
    got_out, got_counts = _mlp_run(p, 3)
    assert got_counts == want_counts and got_counts.faults_injected > 0
    assert set(got_out) == set(want_out)
    for k in want_out:
        np.testing.assert_array_equal(got_out[k], want_out[k])


def test_forced_numba_without_numba_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "KERNEL", "numba")
    monkeypatch.setattr(faults, "_COMPILED", [None])
    with pytest.raises(ValueError, match="numba"):
        faults._kernels(1)
