"""PyTorch side of error-aware fine-tuning: every test here is skipped when PyTorch is absent.

CI installs only ".[test]"; PyTorch is the optional extra cramc[train].  What
needs no PyTorch (the binomial model against the gate level, the shipped
fine-tuned models, the CLI's message without PyTorch, compile and run never
importing it) is in the other test files of this folder.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from cramtest import REPO
from ft_helpers import gate_level_errors, kappa4, ks_2samp, ks_critical

from cramc.compiler import run_onnxruntime
from cramc.errmodel import FaultModel, Rate
from cramc.frontend.load import load_model
from cramc.frontend.pipeline import run_frontend
from cramc.isa.cmos import CMOS_OPS
from cramc.train.noise import MvmNoise, counted_rows, error_moments, rates_for, term_weights

torch = pytest.importorskip("torch", reason="PyTorch is optional (cramc[train]); these tests need it")

from cramc.train import qat  # noqa: E402 - imports torch

MODELS = REPO / "models"
K, N, ROWS, SAMPLES = 40, 6, 16, 3000
SIGMAS, ALPHA = 5.0, 1e-3
FAULTS = {
    "uniform-0.02": FaultModel.uniform(0.02),
    "asymmetric-and-read": FaultModel({"and": Rate(0.03, 0.005)}, read=Rate(0.002, 0.01), name="asym"),
}


def _operands() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=K)
    w = rng.integers(-127, 128, size=(K, N))
    w[0, 0] = -127
    return x, w


def _torch_draws(x: np.ndarray, w: np.ndarray, spec: MvmNoise, mode: str, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    xs = torch.as_tensor(np.broadcast_to(x, (SAMPLES, 1, x.size)).astype(np.float32))
    err = qat.sample_error(xs, torch.as_tensor(w.T.astype(np.float32)), spec, gen, mode)
    return err.reshape(SAMPLES, -1).numpy()


def _moment_checks(got: np.ndarray, x: np.ndarray, w: np.ndarray, spec: MvmNoise) -> None:
    mean, var = (m[0, 0] for m in error_moments(x.reshape(1, 1, -1), w.T, spec))
    se_mean = np.sqrt(var / SAMPLES)
    se_var = np.sqrt((kappa4(x, w, spec) + 2 * var**2) / SAMPLES)
    assert np.all(np.abs(got.mean(0) - mean) <= SIGMAS * se_mean), (got.mean(0), mean, se_mean)
    assert np.all(np.abs(got.var(0, ddof=1) - var) <= SIGMAS * se_var), (got.var(0, ddof=1), var, se_var)


@pytest.mark.parametrize("name", list(FAULTS))
def test_torch_binomial_injection_matches_gate_level(tmp_path: Path, name: str) -> None:
    """torch's exact draws vs the gate-level interpreter: moments within 5 sigma, KS at alpha 1e-3 per output."""
    fm = FAULTS[name]
    x, w = _operands()
    spec = MvmNoise(8, 8, False, counted_rows(K, ROWS), rates_for(fm, 8, 8))
    gate, _ = gate_level_errors(tmp_path, x, w, fm, SAMPLES, ROWS, seed=11)
    draws = _torch_draws(x, w, spec, "binomial", seed=3)
    _moment_checks(gate, x, w, spec)
    _moment_checks(draws, x, w, spec)
    crit = ks_critical(ALPHA, SAMPLES, SAMPLES)
    for j in range(N):
        assert ks_2samp(gate[:, j], draws[:, j]) <= crit, f"output {j}"


def test_torch_normal_injection_has_the_exact_moments() -> None:
    """The normal approximation matches mean and variance (5 sigma); its shape is not the real one (no KS)."""
    fm = FAULTS["asymmetric-and-read"]
    x, w = _operands()
    spec = MvmNoise(8, 8, False, counted_rows(K, ROWS), rates_for(fm, 8, 8))
    _moment_checks(_torch_draws(x, w, spec, "normal", seed=4), x, w, spec)


def test_term_groups_partition_the_terms() -> None:
    rates = np.random.default_rng(0).choice([0.0, 0.01, 0.02], size=(64, 3))
    spec = MvmNoise(8, 8, False, 10, rates)
    seen = np.zeros((8, 8), dtype=int)
    t = term_weights(8, 8, False)
    for mask, weight, *es in qat.term_groups(spec):
        seen += mask
        assert np.all(t[mask] == weight)
        assert all(np.all(rates[mask.reshape(-1), k] == es[k]) for k in range(3))
    zero = (rates == 0).all(axis=1).reshape(8, 8)
    assert np.array_equal(seen, (~zero).astype(int))


@pytest.mark.parametrize("name,layout", [("mlp", "flat"), ("cnn", "img")])
def test_qat_forward_without_faults_is_onnxruntimes_qdq_model(name: str, layout: str) -> None:
    """Quantisation in the loop reproduces onnxruntime's quantised model (the compile reference) exactly."""
    calib = dict(np.load(MODELS / f"digits_calib_{layout}.npz"))
    x = np.load(MODELS / f"digits_test_x_{layout}.npz")["input"][:100]
    fe = run_frontend(str(MODELS / f"digits_{name}.onnx"), calib, log=io.StringIO())
    ref = run_onnxruntime(fe.qmodel, {"input": x.reshape(x.shape[0], 1, *x.shape[1:])})["logits"]
    net = qat.QatGraph(load_model(str(MODELS / f"digits_{name}.onnx")), FaultModel.uniform(1e-3))
    net.qparams = qat.activation_qparams(fe.qmodel)
    with torch.no_grad():
        got = net({"input": torch.from_numpy(x)})["logits"].numpy()
    assert np.abs(got - ref.reshape(got.shape)).max() <= 1e-6


def test_conv_patches_are_cramcs_im2col() -> None:
    """The integer MVM input of a padded, strided, dilated conv equals cramc's im2col filled with the zero point."""
    rng = np.random.default_rng(1)
    xq = rng.integers(0, 256, size=(3, 2, 7, 6))
    attrs = {"kernel": [3, 2], "strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2], "value": 37}
    want = CMOS_OPS["im2col"]([xq[:, None]], attrs)
    got = qat.conv_patches(
        torch.as_tensor(xq, dtype=torch.float32), 37, (3, 2), attrs["pads"], attrs["strides"], attrs["dilations"]
    )
    assert np.array_equal(got.numpy().astype(np.int64), want)


def _split(layout: str, n: int) -> tuple[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_train, _, y_train, _ = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    x_train = x_train[:n] if layout == "flat" else x_train[:n].reshape(-1, 1, 8, 8)
    return x_train, y_train[:n].astype(np.int64)


@pytest.mark.parametrize("name,layout", [("mlp", "flat"), ("cnn", "img")])
def test_cli_finetune_end_to_end(cli, tmp_path: Path, name: str, layout: str) -> None:
    """Same graph, inputs and outputs; new weights; it compiles and validates fault-free against onnxruntime."""
    x, y = _split(layout, 128)
    np.savez(tmp_path / "x.npz", input=x)
    np.save(tmp_path / "y.npy", y)
    src = MODELS / f"digits_{name}.onnx"
    out = tmp_path / "ft.onnx"
    res = cli(
        "finetune",
        str(src),
        "--data",
        str(tmp_path / "x.npz"),
        "--labels",
        str(tmp_path / "y.npy"),
        "--gate-error",
        "5e-3",
        "-o",
        str(out),
        "--epochs",
        "1",
        "--seed",
        "1",
    )
    assert res.rc == 0, res.err
    assert "epoch 1/1" in res.out and f"wrote {out}" in res.out
    a, b = onnx.load(str(src)), onnx.load(str(out))
    onnx.checker.check_model(b, full_check=True)
    assert [(n.op_type, list(n.input), list(n.output)) for n in a.graph.node] == [
        (n.op_type, list(n.input), list(n.output)) for n in b.graph.node
    ]
    assert a.graph.input == b.graph.input and a.graph.output == b.graph.output
    wa = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: onnx.numpy_helper.to_array(t) for t in b.graph.initializer}
    assert wa.keys() == wb.keys()
    assert all(wa[k].shape == wb[k].shape and wa[k].dtype == wb[k].dtype for k in wa)
    assert any(not np.array_equal(wa[k], wb[k]) for k in wa)
    prog = tmp_path / "ft.cram"
    calib = MODELS / f"digits_calib_{layout}.npz"
    assert cli("compile", str(out), "-o", str(prog), "--calibration", str(calib)).rc == 0
    res = cli("run", str(prog))
    assert res.rc == 0 and "MISMATCH" not in res.out


def test_finetune_is_reproducible(tmp_path: Path) -> None:
    from cramc.train.finetune import Options, finetune

    x, y = _split("flat", 64)
    runs = [
        finetune(
            str(MODELS / "digits_mlp.onnx"),
            {"input": x},
            y,
            FaultModel.uniform(1e-2),
            Options(epochs=1, seed=5),
            log=io.StringIO(),
        )
        for _ in range(2)
    ]
    assert runs[0].model.SerializeToString() == runs[1].model.SerializeToString()
    logs = [[{k: v for k, v in e.items() if k not in ("wall_s", "cpu_s")} for e in r.log] for r in runs]
    assert logs[0] == logs[1] and len(logs[0]) == 2


def test_torch_accuracy_under_faults_matches_gate_level(cli) -> None:
    """The whole model: accuracy with injected faults (torch) vs the gate-level run, 3 seeds each, MLP at 1e-2.

    Tolerance 0.07: 5 sigma of the difference of two 3-seed means of an accuracy
    over 360 samples near 0.9 (sigma = sqrt(0.9 * 0.1 / 360) * sqrt(2 / 3) = 0.013).
    """
    from cramc.compiler import Options, compile_model
    from cramc.isa.parser import parse
    from cramc.isa.verifier import verify
    from cramc.sim.interp import run

    calib = dict(np.load(MODELS / "digits_calib_flat.npz"))
    x = np.load(MODELS / "digits_test_x_flat.npz")["input"]
    y = np.load(MODELS / "digits_test_labels.npy")
    fm = FaultModel.uniform(1e-2)
    linked = verify(parse(compile_model(str(MODELS / "digits_mlp.onnx"), calib, Options(), log=io.StringIO())))
    gate = np.mean(
        [
            (
                run(linked, {"input": x.reshape(-1, 1, 64)}, fm, seed=s).outputs["logits"].reshape(-1, 10).argmax(1)
                == y
            ).mean()
            for s in range(3)
        ]
    )
    fe = run_frontend(str(MODELS / "digits_mlp.onnx"), calib, log=io.StringIO())
    net = qat.QatGraph(load_model(str(MODELS / "digits_mlp.onnx")), fm)
    net.qparams = qat.activation_qparams(fe.qmodel)
    accs = []
    with torch.no_grad():
        for s in range(3):
            out = net({"input": torch.from_numpy(x)}, torch.Generator().manual_seed(s))["logits"]
            accs.append(float((out.argmax(1).numpy() == y).mean()))
    assert abs(np.mean(accs) - gate) <= 0.07, (accs, gate)


def test_cli_finetune_rejects_bad_data(cli, tmp_path: Path) -> None:
    x, y = _split("flat", 32)
    np.savez(tmp_path / "x.npz", input=x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "y_short.npy", y[:10])
    base = ["--gate-error", "1e-3", "-o", str(tmp_path / "ft.onnx"), "--epochs", "1"]
    res = cli(
        "finetune",
        str(MODELS / "digits_cnn.onnx"),
        "--data",
        str(tmp_path / "x.npz"),
        "--labels",
        str(tmp_path / "y.npy"),
        *base,
    )
    assert res.rc == 1 and "--data: 'input' has shape [32, 64]; expected [N, 1, 8, 8]" in res.err
    res = cli(
        "finetune",
        str(MODELS / "digits_mlp.onnx"),
        "--data",
        str(tmp_path / "x.npz"),
        "--labels",
        str(tmp_path / "y_short.npy"),
        *base,
    )
    assert res.rc == 1 and "--labels: expected 32 non-negative integer class labels" in res.err
    assert not (tmp_path / "ft.onnx").exists()


def test_adam_is_torchs_adam_bit_for_bit() -> None:
    """finetune's own Adam (no torch._dynamo import at start-up) updates as torch.optim.Adam does, bit for bit,
    over 40 steps of random gradients (a parameter without a gradient on some steps is left alone by both)."""
    from cramc.train.finetune import Adam

    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(6, 5, generator=gen), torch.randn(7, generator=gen)]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    theirs = [torch.nn.Parameter(t.clone()) for t in init]
    a, b = Adam(torch, ours, lr=3e-3), torch.optim.Adam(theirs, lr=3e-3)
    for step in range(40):
        grads = [torch.randn(t.shape, generator=gen) * 10.0 ** (step % 5 - 2) for t in init]
        for params, opt in ((ours, a), (theirs, b)):
            opt.zero_grad()
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                if not (i == 1 and step % 7 == 3):
                    p.grad = g.clone()
            opt.step()
        for p, q in zip(ours, theirs, strict=True):
            assert torch.equal(p, q), step
    assert not torch.equal(ours[0], init[0])
