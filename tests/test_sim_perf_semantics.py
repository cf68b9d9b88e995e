"""The interpreter's fast paths compute exactly what the plain paths compute.

- every in-place gate kernel equals the opcode table's logic, also when the
  destination is one of the inputs;
- prepared runners (out= kernels, dense fault masks, row-range merges) and the
  reference path (table logic, fault injection, masked store) leave the same
  state, the same accumulators, the same outputs and the same counts, faults
  included, for the same seed;
- the counted faults are the bits that differ from a fault-free run, and only
  active rows change;
- the fault stream hands out the same successes whether a caller takes them
  as positions or as a rendered mask;
- the same seed gives the same result.

No timing assertions here: bench/bench_interp.py measures speed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from cramtest import link

from cramc.isa.counting import Counts
from cramc.isa.opcodes import OPCODES, Unit
from cramc.isa.verifier import Linked
from cramc.sim.backend import get_backend
from cramc.sim.faults import FaultModel, FaultStream, Rate
from cramc.sim.interp import execute, run
from cramc.sim.machine import Machine
from cramc.sim.ops.gates import GATE_MNEMONICS, kernels

SIGMAS = 5.0


# ---------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("mn", GATE_MNEMONICS)
def test_kernel_matches_table_logic(mn: str, backend: str) -> None:
    """Every backend's in-place kernel equals the opcode table's logic evaluated by numpy."""
    be = get_backend(backend)
    op = OPCODES[mn]
    kern, ntemp = kernels(be)[mn]
    n_in = len(op.operands) - 1
    rng = np.random.default_rng(hash(mn) % 2**32)
    shape = (3, 2, 4)
    ins = [rng.integers(0, 2**64, shape, dtype=np.uint64) for _ in range(n_in)]
    want = op.logic(*[a.copy() for a in ins])  # type: ignore[misc]
    temps = [be.empty_words(shape) for _ in range(ntemp)]
    d = be.empty_words(shape)
    kern([be.put(a.copy()) for a in ins], d, temps)
    np.testing.assert_array_equal(be.get_words(d), want)
    for k in range(n_in):  # the destination is input k (e.g. `and c3, c3, c4`)
        args = [be.put(a.copy()) for a in ins]
        kern(args, args[k], temps)
        np.testing.assert_array_equal(be.get_words(args[k]), want, err_msg=f"{mn} with dst = in{k}")
    if n_in >= 2:  # the same column twice, and the destination is it
        one = be.put(ins[0].copy())
        same = [one] * n_in
        want_same = op.logic(*[ins[0].copy()] * n_in)  # type: ignore[misc]
        kern(same, same[0], temps)
        np.testing.assert_array_equal(be.get_words(same[0]), want_same)


def test_every_gate_has_a_kernel(backend: str) -> None:
    assert set(kernels(get_backend(backend))) == {op.mnemonic for op in OPCODES.values() if op.unit is Unit.GATE}


# ---------------------------------------------------------------------------- random programs
def random_program(seed: int, rows: int, arrays: int = 4, cols: int = 20, n_instr: int = 60) -> str:
    """A program of random gates (random array subsets, row ranges, operands), trees and reads.

    A gate's inputs are different columns and its output is none of them (one MTJ per terminal, verified).
    """
    rng = np.random.default_rng(seed)
    lines = [
        f".machine arrays={arrays} rows={rows} cols={cols} accs=4",
        f".input x : u8[{arrays},{rows},6]",
        f".output y : i64[{arrays},{rows},{cols}]",
        f".output s : i64[{arrays},4]",
        ".init {",
        f"  wr @0:{arrays} c0, %x bits=1",
        f"  fill @0:{arrays} c6, 1",
        f"  fill @0:{arrays} c7, 0 rows={rows // 3}:{rows - 5}",
        *(f"  fill @0:{arrays} c{c}, {c % 2}" for c in range(8, cols)),
        f"  aclr @0:{arrays} acc0:4",
        "}",
        ".main {",
    ]
    written = list(range(cols))
    gates = [op for op in OPCODES.values() if op.unit is Unit.GATE]
    for _ in range(n_instr):
        lo = int(rng.integers(0, arrays))
        hi = int(rng.integers(lo + 1, arrays + 1))
        r = rng.random()
        if r < 0.35:
            rows_attr = ""
        elif r < 0.5:
            rows_attr = f" rows=0:{rows}"
        else:
            r0 = int(rng.integers(0, rows - 1))
            r1 = int(rng.integers(r0 + 1, rows + 1))
            rows_attr = f" rows={r0}:{r1}"
        if rng.random() < 0.15:
            mn = "tadd" if rng.random() < 0.5 else "tsub"
            src = int(rng.choice(written))
            acc, shift = int(rng.integers(0, 4)), int(rng.integers(0, 5))
            lines.append(f"  {mn} @{lo}:{hi} acc{acc}, c{src}, {shift}{rows_attr}")
            continue
        op = gates[int(rng.integers(0, len(gates)))]
        n_in = len(op.operands) - 1
        # the draws of the aliasing generator this replaced, so its programs (and their fault counts) stay;
        # a repeated input, and an output on an input, move to the next free column
        srcs: list[int] = []
        for c in rng.choice(written, size=n_in):
            srcs.append(_free(int(c), set(srcs), 0, cols))
        if rng.random() < 0.2:
            dst = _free(srcs[int(rng.integers(0, n_in))], set(srcs), 6, cols)  # beside the inputs
        else:
            dst = _free(int(rng.integers(6, cols)), set(srcs), 6, cols)
        lines.append(f"  {op.mnemonic} @{lo}:{hi} c{dst}, " + ", ".join(f"c{c}" for c in srcs) + rows_attr)
    lines += [
        f"  rd @0:{arrays} %y, c0 bits=1 fields={cols} signed=0",
        f"  ard @0:{arrays} %s, acc0:4",
        "}",
        "",
    ]
    return "\n".join(lines)


def _free(c: int, taken: set[int], lo: int, cols: int) -> int:
    """Column c, or the next one after it (cyclically over lo .. cols-1) that is not taken."""
    c = max(c, lo)
    while c in taken:
        c = lo + (c + 1 - lo) % (cols - lo)
    return c


def run_machine(
    linked: Linked, x: np.ndarray, faults: FaultModel, seed: int, reference: bool, backend: str = "numpy"
) -> Machine:
    m = Machine(linked, x.shape[0], faults, np.random.default_rng(seed), reference=reference, backend=backend)
    m.tensors["x"] = x.astype(np.int64)
    execute(m, linked.init)
    execute(m, linked.main)
    return m


MODELS = {
    "fault-free": FaultModel(),
    "dense p=0.02": FaultModel.uniform(0.02),
    "sparse p=3e-4": FaultModel.uniform(3e-4),  # mostly below one fault per instruction, a dozen per run
    "mixed": FaultModel(
        {"and": Rate(0.05, 0.01), "maj3": Rate(0.0, 0.03), "nor": Rate(0.02, 0.02), "not": Rate(1e-3, 1e-3)},
        write=Rate(0.01, 0.03),
        read=Rate(0.02, 0.02),
        tree=0.01,
    ),
}


@pytest.mark.parametrize("rows", [100, 128, 64, 200])
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("seed", [1, 2])
def test_fast_and_reference_paths_agree(rows: int, model: str, seed: int, backend: str) -> None:
    linked = link(random_program(seed, rows))
    x = np.random.default_rng(seed + 100).integers(0, 2, (3, 4, rows, 6), dtype=np.uint8)
    fast = run_machine(linked, x, MODELS[model], seed, reference=False, backend=backend)
    ref = run_machine(linked, x, MODELS[model], seed, reference=True, backend=backend)
    be = fast.be
    np.testing.assert_array_equal(be.get_words(fast.cells), be.get_words(ref.cells))
    np.testing.assert_array_equal(be.get(fast.acc), be.get(ref.acc))
    for k in ("y", "s"):
        np.testing.assert_array_equal(fast.tensors[k], ref.tensors[k])
    assert fast.counts == ref.counts
    if model != "fault-free":
        assert fast.counts.faults_injected > 0


def test_run_reference_flag_agrees(backend: str) -> None:
    linked = link(random_program(5, 128))
    x = np.random.default_rng(5).integers(0, 2, (6, 4, 128, 6), dtype=np.uint8)
    fm = FaultModel.uniform(0.01)
    a = run(linked, {"x": x}, fm, seed=3, lanes=2, backend=backend)
    b = run(linked, {"x": x}, fm, seed=3, lanes=2, reference=True, backend=backend)
    for k in a.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k])
    assert a.counts == b.counts


# ---------------------------------------------------------------------------- faults are what is counted
def _one_gate(rows: int, rows_attr: str, arrays: int = 8) -> str:
    return "\n".join(
        [
            f".machine arrays={arrays} rows={rows} cols=4 accs=1",
            f".input x : u8[{arrays},{rows},3]",
            ".main {",
            f"  wr @0:{arrays} c0, %x bits=1",
            f"  maj3 @0:{arrays} c3, c0, c1, c2{rows_attr}",
            "}",
            "",
        ]
    )


@pytest.mark.parametrize(
    ("rows", "r0", "r1", "p"),
    [(128, 0, 128, 0.01), (128, 0, 128, 1e-4), (100, 0, 100, 0.01), (256, 70, 190, 0.01), (256, 3, 4, 0.2)],
)
def test_counted_faults_are_the_flipped_bits(rows: int, r0: int, r1: int, p: float, backend: str) -> None:
    attr = "" if (r0, r1) == (0, rows) else f" rows={r0}:{r1}"
    linked = link(_one_gate(rows, attr))
    x = np.random.default_rng(8).integers(0, 2, (16, 8, rows, 3), dtype=np.uint8)
    ok = run_machine(linked, x, FaultModel(), 0, reference=False, backend=backend)
    bad = run_machine(linked, x, FaultModel.uniform(p), 4, reference=False, backend=backend)
    flipped = ok.be.get_words(ok.cells) ^ bad.be.get_words(bad.cells)
    diff = np.unpackbits(flipped.view(np.uint8), axis=-1, bitorder="little")[..., :rows]
    assert not diff[:3].any()  # inputs untouched
    assert not diff[3][..., :r0].any() and not diff[3][..., r1:].any()  # only active rows change
    n = int(diff.sum())
    assert n == bad.counts.faults["gate"] == bad.counts.faults_injected
    trials = 8 * 16 * (r1 - r0)
    sd = math.sqrt(trials * p * (1 - p))
    assert abs(n - trials * p) <= SIGMAS * sd + 1, (n, trials * p)


def test_dense_path_rate_and_asymmetry(backend: str) -> None:
    """Many full-row gates at an asymmetric rate: 0->1 and 1->0 flips at their own rates (5 sigma)."""
    rows, arrays = 128, 16
    text = "\n".join(
        [
            f".machine arrays={arrays} rows={rows} cols=3 accs=1",
            f".output z : i64[{arrays},{rows},1]",
            f".output o : i64[{arrays},{rows},1]",
            ".main {",
            f"  fill @0:{arrays} c0, 0",
            f"  fill @0:{arrays} c1, 1",
            f"  and @0:{arrays} c2, c0, c1",
            f"  rd @0:{arrays} %z, c2 bits=1 fields=1 signed=0",
            f"  or @0:{arrays} c2, c0, c1",
            f"  rd @0:{arrays} %o, c2 bits=1 fields=1 signed=0",
            "}",
            "",
        ]
    )
    fm = FaultModel({"and": Rate(0.02, 0.0), "or": Rate(0.0, 0.005)})
    linked = link(text)
    total_up = total_down = 0
    n = 0
    for seed in range(40):
        res = run(linked, {}, fm, seed=seed, backend=backend)
        total_up += int(res.outputs["z"].sum())  # AND of 0,1 is 0: every 1 is a 0->1 fault
        total_down += int((1 - res.outputs["o"]).sum())  # OR of 0,1 is 1: every 0 is a 1->0 fault
        assert res.counts.faults["gate"] == int(res.outputs["z"].sum() + (1 - res.outputs["o"]).sum())
        n += arrays * rows
    for k, p in ((total_up, 0.02), (total_down, 0.005)):
        assert abs(k - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p)), (k, n * p)


# ---------------------------------------------------------------------------- the stream
@pytest.mark.parametrize("p", [1.0, 0.3, 0.01, 1e-4, 1e-7])
def test_stream_positions_and_dense_masks_agree(p: float) -> None:
    sizes = [1, 7, 64, 3, 1000, 2, 70000, 5, 128, 1]
    a = FaultStream(p, np.random.default_rng(9), window=256)
    b = FaultStream(p, np.random.default_rng(9), window=256)
    total = 0
    for i, n in enumerate(sizes * 3):
        mask = np.zeros(n, dtype=np.uint64)
        got = a.take(n)
        if got is not None:
            w, mk = got
            assert (np.diff(w) >= 0).all() and w.size == 0 or (w.min() >= 0 and w.max() < n)
            np.bitwise_xor.at(mask, w, mk)
        # b alternates between the two ways of taking, which must not change anything
        if i % 2:
            dense = b.take_dense(n).copy()
        else:
            dense = np.zeros(n, dtype=np.uint64)
            got_b = b.take(n)
            if got_b is not None:
                np.bitwise_xor.at(dense, got_b[0], got_b[1])
        np.testing.assert_array_equal(mask, dense)
        total += int(np.bitwise_count(mask).sum())
        assert a.handed_out() == b.handed_out() == total
    if p == 1.0:
        assert total == 64 * sum(sizes) * 3


def test_stream_rate() -> None:
    p, n = 3e-3, 200_000
    st = FaultStream(p, np.random.default_rng(1))
    k = 0
    for _ in range(20):
        k += int(np.bitwise_count(st.take_dense(n // 20)).sum())
    trials = 64 * n
    assert abs(k - trials * p) <= SIGMAS * math.sqrt(trials * p * (1 - p))


# ---------------------------------------------------------------------------- counts, seeds, views
def test_counts_are_up_to_date_and_resettable(backend: str) -> None:
    linked = link(_one_gate(128, ""))
    x = np.random.default_rng(1).integers(0, 2, (4, 8, 128, 3), dtype=np.uint8)
    m = Machine(linked, 4, FaultModel.uniform(0.05), np.random.default_rng(2), backend=backend)
    m.tensors["x"] = x.astype(np.int64)
    execute(m, linked.main)
    first = m.counts.faults["gate"]
    assert first > 0
    m.counts = Counts()
    assert m.counts.faults["gate"] == 0  # a fresh Counts starts at zero ...
    execute(m, linked.main)
    assert 0 < m.counts.faults["gate"]  # ... and sees only the faults after it
    assert m.counts.gate_evals == 8 * 128 * 4


def test_same_seed_same_everything_different_seed_differs(backend: str) -> None:
    linked = link(random_program(3, 128, n_instr=120))
    x = np.random.default_rng(0).integers(0, 2, (5, 4, 128, 6), dtype=np.uint8)
    fm = MODELS["mixed"]
    a, b = run(linked, {"x": x}, fm, seed=11, backend=backend), run(linked, {"x": x}, fm, seed=11, backend=backend)
    c = run(linked, {"x": x}, fm, seed=12, backend=backend)
    for k in a.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k])
    assert a.counts == b.counts
    assert a.counts.faults != c.counts.faults or any(not np.array_equal(a.outputs[k], c.outputs[k]) for k in a.outputs)


def test_bits_is_a_view_of_cells(backend: str) -> None:
    linked = link(_one_gate(128, ""))
    m = Machine(linked, 2, FaultModel(), np.random.default_rng(0), backend=backend)
    m.bits[5, 2, 1, 1] = 7
    assert m.cells[2, 5, 1, 1] == 7
    assert tuple(m.bits.shape) == (8, 4, 2, 2)
