"""Every simulator backend runs the one interpreter with the same semantics.

The `backend` fixture (tests/conftest.py) runs each test on numpy, on torch's
CPU device where PyTorch is installed, and on CUDA where there is a GPU:

- without faults every backend leaves the same outputs, counts and cell state
  as numpy, on the ISA examples, on random programs and on the compiled digits
  models;
- with faults the device sampler is exact: per-bit flip rates (symmetric,
  asymmetric, row ranges, regions split into chunks) are within 5 sigma, the
  counted faults are the flipped bits, and it fails loudly instead of running
  short; faulty runs of the digits CNN agree in distribution with numpy's
  (two-sample Kolmogorov-Smirnov test and a Poisson test of the fault counts);
- `--backend` on `cramc run` and `cramc sweep`, and its errors.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from cramtest import REPO, example_paths, link, link_file
from scipy.stats import ks_2samp
from test_sim_perf_semantics import random_program

from cramc.errors import UserError
from cramc.isa.parser import parse_file
from cramc.isa.verifier import Linked, Loop, Node, verify
from cramc.sim.backend import Backend, get_backend
from cramc.sim.faults import FaultModel, Rate
from cramc.sim.interp import execute, run
from cramc.sim.machine import Machine

SIGMAS = 5.0
MODELS = REPO / "models"


@pytest.fixture
def device(backend: str) -> Backend:
    """A backend that samples faults on its device (torch): the numpy stream has its own tests."""
    if backend == "numpy":
        pytest.skip("numpy samples faults with the host stream (tests/sim/test_faults.py)")
    return get_backend(backend)


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Linked, np.ndarray, np.ndarray]:
    from cramc.cli import main

    prog = tmp_path_factory.mktemp("backends") / "cnn.cram"
    rc = main(
        [
            "compile",
            str(MODELS / "digits_cnn.onnx"),
            "-o",
            str(prog),
            "--calibration",
            str(MODELS / "digits_calib_img.npz"),
        ]
    )
    assert rc == 0
    x = np.load(MODELS / "digits_test_x_img.npz")["input"]
    return verify(parse_file(str(prog))), x, np.load(MODELS / "digits_test_labels.npy")


# ---------------------------------------------------------------------------- no faults: identical
def test_popcount_sum(backend: str) -> None:
    be = get_backend(backend)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 2**64, (5, 3, 7), dtype=np.uint64)
    w[0, 0, :] = np.uint64(2**64 - 1)  # all ones (-1 as int64)
    w[0, 1, :] = 0
    w[1, 0, :] = np.uint64(1 << 63)  # the sign bit alone
    got = be.get(be.popcount_sum(be.put(w)))
    np.testing.assert_array_equal(got, np.bitwise_count(w).sum(axis=-1))
    assert got[0, 0] == 64 * 7 and got[1, 0] == 7


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_examples_identical_to_numpy(path: Path, backend: str) -> None:
    linked = link_file(path)
    assert linked.expect is not None
    want = run(linked, dict(linked.expect.inputs), seed=0)
    got = run(linked, dict(linked.expect.inputs), seed=0, backend=backend)
    for k, v in want.outputs.items():
        np.testing.assert_array_equal(got.outputs[k], v)
        np.testing.assert_array_equal(got.outputs[k], linked.expect.outputs[k])
    assert got.counts == want.counts


def _final_state(linked: Linked, x: np.ndarray, backend: str) -> Machine:
    m = Machine(linked, x.shape[0], FaultModel(), np.random.default_rng(0), backend=backend)
    m.tensors["x"] = x.astype(np.int64)
    execute(m, linked.init)
    execute(m, linked.main)
    return m


@pytest.mark.parametrize("rows", [64, 100, 256])
def test_random_programs_leave_the_same_state(rows: int, backend: str) -> None:
    linked = link(random_program(rows + 7, rows, n_instr=150))
    x = np.random.default_rng(rows).integers(0, 2, (3, 4, rows, 6), dtype=np.uint8)
    want, got = _final_state(linked, x, "numpy"), _final_state(linked, x, backend)
    np.testing.assert_array_equal(got.be.get_words(got.cells), want.cells)
    np.testing.assert_array_equal(got.be.get(got.acc), want.acc)
    for k in ("y", "s"):
        np.testing.assert_array_equal(got.tensors[k], want.tensors[k])
    assert got.counts == want.counts


def test_digits_cnn_identical_to_numpy(digits_cnn: tuple[Linked, np.ndarray, np.ndarray], backend: str) -> None:
    linked, x, labels = digits_cnn
    want = run(linked, {"input": x[:40]}, seed=0, lanes=16)
    got = run(linked, {"input": x[:40]}, seed=0, lanes=16, backend=backend)
    out = linked.outputs[0].name
    np.testing.assert_array_equal(got.outputs[out], want.outputs[out])
    assert got.counts == want.counts
    assert got.init == want.init
    acc = float(np.mean(got.outputs[out].reshape(40, -1).argmax(-1) == labels[:40]))
    assert acc >= 0.9


# ---------------------------------------------------------------------------- faults: exact sampling
@pytest.mark.parametrize(
    ("p", "words", "chunk"),
    [(1.0, 300, None), (0.3, 1000, None), (1e-2, 5000, None), (1e-2, 5000, 64), (1e-4, 200_000, None)],
)
def test_device_sampler_rate(device: Backend, p: float, words: int, chunk: int | None) -> None:
    """Flip rate of the device sampler over many regions (5 sigma); every counted fault is a flipped bit."""
    st = device.stream(p, [7, 0, 1])
    inj = device.injector(st, Rate(p, p), np.random.default_rng(0), 1, None)
    if chunk is not None:
        inj.step = chunk  # type: ignore[attr-defined]  # split each region into chunks of this many words
    flips = 0
    for _ in range(10):
        region = device.words((words,))
        inj(region)
        flips += int(device.get(device.popcount_sum(region)))
    assert st.handed_out() == flips
    n = 10 * 64 * words
    assert abs(flips - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p)) + 1, (flips, n * p)


@pytest.mark.parametrize(("p01", "p10"), [(1e-2, 1e-3), (0.0, 0.05), (0.2, 0.0)])
def test_device_sampler_asymmetric_and_row_ranges(device: Backend, p01: float, p10: float) -> None:
    """Thinning by the bit's value and the active-row filter, on half-ones words and rows 10..50 of each 64."""
    rate = Rate(p01, p10)
    st = device.stream(rate.pmax, [9, 1, 2])
    active = np.array([((1 << 50) - 1) ^ ((1 << 10) - 1)], dtype=np.uint64)
    inj = device.injector(st, rate, np.random.default_rng(0), 1, active)
    pattern = np.uint64(0x00000000FFFFFFFF)  # rows 0..31 hold 1, rows 32..63 hold 0
    up = down = outside = 0
    for _ in range(20):
        host = np.full(20_000, pattern, dtype=np.uint64)
        region = device.put(host)
        inj(region)
        diff = device.get_words(region) ^ host
        down += int(np.bitwise_count(diff & pattern & active[0]).sum())
        up += int(np.bitwise_count(diff & ~pattern & active[0]).sum())
        outside += int(np.bitwise_count(diff & ~active[0]).sum())
    assert outside == 0
    assert st.handed_out() == up + down
    n1 = 20 * 20_000 * 22  # active rows holding 1: 10..31
    n0 = 20 * 20_000 * 18  # active rows holding 0: 32..49
    for k, n, p in ((down, n1, p10), (up, n0, p01)):
        assert abs(k - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p)) + 1, (k, n * p)


def test_device_sampler_fails_loudly_when_short(device: Backend) -> None:
    """A region that draws too few candidates is reported, never silently under-faulted."""
    st = device.stream(0.5, [1, 2, 3])
    pos, inside = st.candidates(64_000, 1e-6)  # type: ignore[attr-defined]  # sized for p=1e-6, drawn at 0.5
    assert bool(inside.all())
    with pytest.raises(RuntimeError, match="ran out of candidates"):
        st.handed_out()


def test_device_sampler_is_seeded(device: Backend) -> None:
    def draw(key: list[int]) -> np.ndarray:
        st = device.stream(1e-2, key)
        inj = device.injector(st, Rate(1e-2, 1e-2), np.random.default_rng(0), 1, None)
        region = device.words((4096,))
        inj(region)
        return device.get_words(region)

    np.testing.assert_array_equal(draw([1, 2, 3]), draw([1, 2, 3]))
    assert not np.array_equal(draw([1, 2, 3]), draw([1, 2, 4]))


#: The two-sample models: a symmetric rate, and an input-dependent one (by_ones: an AND with one input at 1
#: is marginal), whose device sampler reads the gate's inputs at its candidates.
DISTRIBUTION_MODELS = {
    "uniform 2e-3": FaultModel.uniform(2e-3),
    "by_ones": FaultModel({"and": Rate(by_ones=(1e-4, 5e-3, 1e-3))}),
}


@pytest.mark.parametrize("model", list(DISTRIBUTION_MODELS))
def test_faulty_runs_agree_in_distribution(
    digits_cnn: tuple[Linked, np.ndarray, np.ndarray], backend: str, model: str
) -> None:
    """The digits CNN with gate faults on numpy and on the backend: logit errors from one distribution, fault
    counts within 5 sigma of each other (independent seeds)."""
    linked, x, _ = digits_cnn
    out = linked.outputs[0].name
    xs = {"input": x[:48]}
    clean = run(linked, dict(xs), seed=0, lanes=16).outputs[out]
    fm = DISTRIBUTION_MODELS[model]
    errs: dict[str, list[np.ndarray]] = {"numpy": [], "backend": []}
    faults = dict.fromkeys(errs, 0)
    for which, be, seed0 in (("numpy", "numpy", 0), ("backend", backend, 100)):  # independent seeds
        for seed in range(seed0, seed0 + 3):
            r = run(linked, dict(xs), fm, seed=seed, lanes=16, backend=be)
            errs[which].append((r.outputs[out] - clean).ravel())
            faults[which] += r.counts.faults["gate"]
    a, b = (np.concatenate(v) for v in errs.values())
    assert np.count_nonzero(a) > 100 and np.count_nonzero(b) > 100
    assert ks_2samp(a, b).pvalue > 1e-4
    fa, fb = faults.values()
    assert abs(fa - fb) <= SIGMAS * math.sqrt(fa + fb), (fa, fb)


# ---------------------------------------------------------------------------- choosing a backend
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tpu", "unknown backend 'tpu'"),
        ("numpy:cuda", "numpy runs on the CPU only"),
    ],
)
def test_bad_backend_names(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        get_backend(spec)


def test_torch_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cramc.sim import backend as backend_module

    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    monkeypatch.setattr(backend_module, "_MADE", {})  # no backend made earlier in this process
    with pytest.raises(UserError, match=r"needs PyTorch, which is not installed"):
        get_backend("torch:cpu")


def test_cli_run_backend(cli, backend: str) -> None:  # noqa: ANN001
    res = cli("run", str(REPO / "isa" / "examples" / "mul8x8.cram"), "--backend", backend)
    assert res.rc == 0, res.err
    assert f"on {get_backend(backend).label};" in res.out


def test_cli_bad_backend(cli) -> None:  # noqa: ANN001
    res = cli("run", str(REPO / "isa" / "examples" / "mul8x8.cram"), "--backend", "tpu")
    assert res.rc == 1 and "Traceback" not in res.err
    assert "error: unknown backend 'tpu'" in res.err


def test_cli_cuda_without_a_gpu(cli) -> None:  # noqa: ANN001
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    res = cli("run", str(REPO / "isa" / "examples" / "mul8x8.cram"), "--backend", "torch:cuda")
    assert res.rc == 1 and "sees no CUDA device" in res.err and "Traceback" not in res.err


def test_sweep_on_a_backend(cli, tmp_path: Path, backend: str) -> None:  # noqa: ANN001
    args = [
        "sweep",
        str(MODELS / "digits_mlp.onnx"),
        "--data",
        str(MODELS / "digits_test_x_flat.npz"),
        "--labels",
        str(MODELS / "digits_test_labels.npy"),
        "--calibration",
        str(MODELS / "digits_calib_flat.npz"),
        "--gate-error",
        "0,1e-2",
        "--protection",
        "none",
        "--seeds",
        "1",
        "--samples",
        "24",
        "--no-progress",
    ]
    ref = cli(*args, "-o", str(tmp_path / "numpy.json"))
    got = cli(*args, "-o", str(tmp_path / "b.json"), "--backend", backend)
    assert ref.rc == 0 and got.rc == 0, got.err
    import json

    rows_ref = json.loads((tmp_path / "numpy.json").read_text())["results"]
    rows_got = json.loads((tmp_path / "b.json").read_text())["results"]
    zero = [(r, g) for r, g in zip(rows_ref, rows_got, strict=True) if r["gate_error"] == 0]
    assert zero and all(r["acc_mean"] == g["acc_mean"] for r, g in zero)


@pytest.mark.parametrize("ecc", ["dup", "vote", "tmr"])
def test_protected_programs_identical_to_numpy(ecc: str, backend: str, tmp_path: Path) -> None:
    """Error-corrected programs (duplicate-and-compare and voting trees, in-array TMR) on every backend."""
    from cramc.cli import main

    prog = tmp_path / f"mlp_{ecc}.cram"
    args = ["compile", str(MODELS / "digits_mlp.onnx"), "-o", str(prog), "--ecc", ecc]
    assert main([*args, "--calibration", str(MODELS / "digits_calib_flat.npz"), "--no-trace"]) == 0
    linked = verify(parse_file(str(prog)))
    used = _mnemonics(linked.main)
    assert used & {"tdadd", "tdsub", "tvadd", "tvsub", "maj3"}, used  # the protection is in the program
    x = {"input": np.load(MODELS / "digits_test_x_flat.npz")["input"][:12]}
    want = run(linked, dict(x), seed=0)
    got = run(linked, dict(x), seed=0, backend=backend)
    for k, v in want.outputs.items():
        np.testing.assert_array_equal(got.outputs[k], v)
    assert got.counts == want.counts
    # with faults: the corrections happen on the backend too (td* recomputes rows that disagree)
    faulty = run(linked, dict(x), FaultModel.uniform(3e-3), seed=1, backend=backend)
    assert faulty.counts.faults["gate"] > 0
    if any(mn.startswith("td") for mn in used):
        assert faulty.counts.recomputes > 0


def _mnemonics(nodes: tuple[Node, ...]) -> set[str]:
    out: set[str] = set()
    for n in nodes:
        out |= _mnemonics(n.body) if isinstance(n, Loop) else {n.op.mnemonic}
    return out


def test_default_memory_budget(backend: str) -> None:
    be = get_backend(backend)
    budget = be.memory_budget()
    if be.device.startswith("cuda"):
        import torch

        assert 0 < budget < torch.cuda.mem_get_info(torch.device(be.device))[0]
    else:
        assert budget == 2 << 30


def test_cli_bad_max_memory(cli) -> None:  # noqa: ANN001
    res = cli("run", str(REPO / "isa" / "examples" / "mul8x8.cram"), "--max-memory", "-1")
    assert res.rc == 1 and "--max-memory must be a positive, finite number of GiB" in res.err


def test_cli_device_out_of_memory(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A GPU allocation failure (torch raises a RuntimeError) is a one-line error, not a traceback."""
    import cramc.sim.interp as interp

    def oom(*a: object, **k: object) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    monkeypatch.setattr(interp, "run", oom)
    res = cli("run", str(REPO / "isa" / "examples" / "mul8x8.cram"))
    assert res.rc == 1
    assert "error: the device ran out of memory (CUDA out of memory. Tried to allocate 20.00 GiB)" in res.err
    assert "Traceback" not in res.err and "more detail" not in res.err
