"""Whole-process workload benchmarks: speed and memory of `cramc run`, `sweep` and `finetune` against references.

Every figure is a ratio of two things measured side by side in this one run
of the script, printed as

    name: measured / reference = ratio (target <= X): PASS|FAIL

(``>=`` where more is better).  Every cramc figure is a whole process,
``python -m cramc.cli ...`` started as a subprocess: start-up, imports,
parsing, the simulation and writing the outputs all count.  Sections
(``--only``, comma-separated; default all, in this order):

``lenet``
    The shipped MNIST LeNet-5 (models/mnist_lenet5.onnx, compiled with
    models/mnist_calib_img.npz) on the 1000 test images, gate level:
    ``cramc run PROG --input X --labels Y --report R --output O``, fault-free
    (target <= 50) and at ``--gate-error 1e-3`` (target <= 100), against
    onnxruntime on the same images in one batch, one thread
    (intra_op_num_threads=1), best of --repeat.  The reference of the ratio
    is cramc's own quantised model (the QDQ model that cramc compile
    derives, run_frontend's qmodel, with its batch axis made symbolic so the
    1000 images go in one batch): the faster of onnxruntime's default graph
    optimisation and the graph as written (ORT_DISABLE_ALL, what cramc's
    validation reference uses; the fused kernels saturate on CPUs without
    VNNI).  The float model's time is printed beside it.
``memory``
    Peak resident memory of ``cramc run`` (LeNet-5, the test images,
    fault-free) and of ``cramc sweep`` (LeNet-5, one gate error rate 1e-3, one
    seed, protection none) at the default --max-memory and at
    ``--max-memory`` --small-budget (0.5): target peak <= budget + 0.5 GiB.
``squeezenet``
    onnx's light SqueezeNet (onnx/backend/test/data/light, compiled without
    calibration data as bench_compile.py does) on one 224x224 image, the
    input onnx's backend test feeds it (Runner.generate_dummy_data):
    REPORT.json's gate_evals over the whole process's wall time, fault-free
    and at p = 1e-3, against numpy's AND + popcount throughput measured here
    with bench_interp.py's function on one gate instruction's words of the
    program's chip (arrays x rows, one lane): target >= 0.5.
``finetune``
    ``cramc finetune models/mnist_lenet5.onnx --data models/mnist_train_x_img.npz
    --labels models/mnist_train_labels.npy --gate-error 1e-3 --epochs 2``
    (4000 images): epoch 2 by cramc's own timer (its re-quantisation and its
    training steps, as every epoch after the first pays them) against one
    plain PyTorch training epoch of the same network (models/train_mnist.py's
    LeNet5) on the same data with finetune's own batch size, optimiser and
    learning rate (best of --repeat epochs, in this process, the faster of
    torch's default thread count and finetune's): target <= 3.  Printed beside
    it as information: the same ratio in CPU time, and the whole process
    (start-up, epoch 0's accuracy pass, both epochs, writing) against two
    plain epochs.  Skipped without PyTorch.
``sweep``
    ``cramc sweep`` on LeNet-5: 6 gate error rates x 3 seeds x the 1000 test
    images, protection none and ecc, gate level: wall time against 120 s
    (target <= 1).  Killed at --sweep-timeout; the figure is then a lower
    bound and FAILs.  The same process's peak RSS is a memory figure too
    (against the default --max-memory + 0.5 GiB).

Peak memory is the cramc process's own ``ru_maxrss``.  Linux carries a
process's peak RSS across fork and exec, so each cramc process is started by
a small launcher process (this script with ``--launch``, started fresh) and
not by this one, which grows to hundreds of MB: the figure is then exact
down to the launcher's own size (printed as the floor; about 50 MB).

``--quick`` is a smoke run: 16 test (and 64 training) images, sweeps of one
rate and seed, one timing repeat.  ``--json OUT.json`` writes every figure
and the details.  The script exits 1 if a measurement could not be made (a
cramc process failed), 0 otherwise, whatever PASS or FAIL say.

    python bench/bench_workloads.py [--only lenet,memory,squeezenet,finetune,sweep] [--quick] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compile import Proc, error_line, light_dir, run_measured  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
LENET = MODELS / "mnist_lenet5.onnx"
CALIB = MODELS / "mnist_calib_img.npz"
TEST_X = MODELS / "mnist_test_x_img.npz"
TEST_Y = MODELS / "mnist_test_labels.npy"
TRAIN_X = MODELS / "mnist_train_x_img.npz"
TRAIN_Y = MODELS / "mnist_train_labels.npy"
SECTIONS = ("lenet", "memory", "squeezenet", "finetune", "sweep")
P = 1e-3
SWEEP_RATES = "1e-5,1e-4,3e-4,1e-3,3e-3,1e-2"
SWEEP_SEEDS = 3
SWEEP_TARGET_S = 120.0
MEMORY_SLACK = 0.5  # GiB over --max-memory
NUMPY_CALLS = 4096  # AND + popcount pairs per timing of the numpy reference (bench_interp's default program)
QUICK_TEST, QUICK_TRAIN = 16, 64
GIB = 2**30


@dataclass
class Figure:
    """One measured ratio against its target."""

    name: str
    measured: float
    reference: float
    unit: str  # of `measured`
    ref_unit: str  # of `reference`
    target: float
    op: str  # "<=" or ">="
    what: str  # what was measured
    against: str  # what the reference is
    lower_bound: bool = False  # the measured value is only a lower bound (killed at a timeout)
    error: str | None = None  # the measurement could not be made

    @property
    def ratio(self) -> float:
        return self.measured / self.reference

    @property
    def ok(self) -> bool:
        if self.error or self.lower_bound:  # a lower bound (killed at a timeout) is no measurement
            return False
        return self.ratio <= self.target if self.op == "<=" else self.ratio >= self.target

    def line(self) -> str:
        if self.error:
            return f"{self.name}: not measured ({self.error}) (target {self.op} {self.target:g}): FAIL"
        gt = ">" if self.lower_bound else ""
        return (
            f"{self.name}: {gt}{_num(self.measured)} {self.unit} / {_num(self.reference)} {self.ref_unit} = "
            f"{gt}{self.ratio:.3g} (target {self.op} {self.target:g}): {'PASS' if self.ok else 'FAIL'}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ratio=None if self.error else self.ratio, passed=self.ok)
        return d


def _short(arg: str, tmp: Path) -> str:
    """A command-line argument as printed: scratch files by name, repository files relative to the root."""
    if arg.startswith(str(tmp)):
        return Path(arg).name
    if arg.startswith(f"{REPO}{os.sep}"):
        return os.path.relpath(arg, REPO)
    return arg


def _num(v: float) -> str:
    return f"{v:.3e}" if abs(v) >= 1e5 or 0 < abs(v) < 1e-3 else f"{v:.4g}"


@dataclass
class Run:
    """A finished cramc process: its measurement, its REPORT.json (if it wrote one), its files."""

    proc: Proc
    floor_mb: float  # the launcher's own peak RSS: the child's ru_maxrss is at least this
    report: dict[str, Any] | None
    output: Path | None
    cmd: list[str]

    @property
    def error(self) -> str | None:
        if self.proc.rc is None:
            return f"timed out after {self.proc.wall_s:.0f} s"
        if self.proc.rc < 0:
            return f"killed by signal {-self.proc.rc} after {self.proc.wall_s:.0f} s"
        if self.proc.rc != 0:
            return f"exit {self.proc.rc}: {error_line(self.proc.stderr)}"
        return None


@dataclass
class Bench:
    """Shared state of one benchmark run: the scratch folder, the data, the compiled programs, finished runs."""

    tmp: Path
    quick: bool
    repeat: int
    timeout: float
    figures: list[Figure] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    errors: int = 0

    # ---- data
    def test_data(self) -> tuple[Path, Path, int]:
        """The MNIST test images and labels (the first 16 with --quick)."""
        return self._subset("test", TEST_X, TEST_Y, QUICK_TEST)

    def train_data(self) -> tuple[Path, Path, int]:
        """The MNIST training images and labels (the first 64 with --quick)."""
        return self._subset("train", TRAIN_X, TRAIN_Y, QUICK_TRAIN)

    def _subset(self, name: str, x: Path, y: Path, n_quick: int) -> tuple[Path, Path, int]:
        import numpy as np

        labels = np.load(y)
        if not self.quick:
            return x, y, int(labels.shape[0])
        xs, ys = self.tmp / f"{name}_x.npz", self.tmp / f"{name}_y.npy"
        if not xs.exists():
            with np.load(x) as z:
                np.savez(xs, **{k: z[k][:n_quick] for k in z.files})
            np.save(ys, labels[:n_quick])
        return xs, ys, n_quick

    # ---- processes
    def cramc(self, name: str, *args: str, report: bool = True, output: str | None = None) -> Run:
        """`python -m cramc.cli ARGS` through the launcher, once per `name` (later calls get the same Run)."""
        if name in self.runs:
            print(f"  [{name}] measured above", flush=True)
            return self.runs[name]
        cmd = [sys.executable, "-m", "cramc.cli", *args]
        rep = self.tmp / f"{name}.report.json" if report else None
        out = self.tmp / f"{name}{output}" if output else None
        if rep:
            cmd += ["--report", str(rep)]
        if out:
            cmd += ["--output" if output == ".npz" else "-o", str(out)]
        proc, floor = launch(cmd, self.timeout)
        r = Run(proc, floor, json.loads(rep.read_text()) if rep and proc.rc == 0 else None, out, cmd)
        shown = " ".join(_short(a, self.tmp) for a in cmd[3:])
        status = f"exit {proc.rc}" if proc.rc is not None else "timed out"
        print(
            f"  [{name}] cramc {shown}\n    {status}, {proc.wall_s:.2f} s wall, {proc.cpu_s:.2f} s CPU, "
            f"peak RSS {proc.peak_rss_mb:.0f} MB (launcher floor {floor:.0f} MB)",
            flush=True,
        )
        if r.error:
            print(f"    FAILED: {r.error}")
            self.errors += 1
        self.runs[name] = r
        self.info.setdefault("processes", {})[name] = {
            "cmd": shown,
            "rc": proc.rc,
            "wall_s": proc.wall_s,
            "cpu_s": proc.cpu_s,
            "peak_rss_mb": proc.peak_rss_mb,
            "launcher_floor_mb": floor,
            "error": r.error,
            # what a failed process said last (a sweep's progress: the variants it was compiling)
            "stderr_tail": proc.stderr[-2000:] if r.error else None,
        }
        return r

    def lenet_program(self) -> Path | None:
        prog = self.tmp / "mnist_lenet5.cram"
        r = self.cramc(
            "compile_lenet", "compile", str(LENET), "-o", str(prog), "--calibration", str(CALIB), report=False
        )
        return None if r.error else prog

    def add(self, fig: Figure) -> None:
        self.figures.append(fig)
        print(fig.line())
        print(f"    measured: {fig.what}\n    reference: {fig.against}", flush=True)


# --------------------------------------------------------------------------
# The launcher: a fresh, small process that starts one cramc process and reports its measurement
# --------------------------------------------------------------------------


def launch(cmd: list[str], timeout: float) -> tuple[Proc, float]:
    """Run `cmd` from a fresh launcher process; its wall time, CPU time and own peak RSS, and the launcher's floor."""
    import subprocess

    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--launch", str(timeout), "--", *cmd],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"the launcher failed: {done.stderr.strip()}")
    d = json.loads(done.stdout)
    floor = d.pop("launcher_floor_mb")
    return Proc(**d), floor


def _own_peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM: the address space's high-water mark, not ru_maxrss's inherited one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _launcher_main(argv: list[str]) -> None:
    timeout, sep, cmd = float(argv[0]), argv[1], argv[2:]
    assert sep == "--" and cmd
    floor = _own_peak_rss_mb()
    proc = run_measured(cmd, timeout)
    print(json.dumps({**asdict(proc), "launcher_floor_mb": max(floor, _own_peak_rss_mb())}))


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def with_batch_axis(model: Any) -> Any:
    """A copy of a model whose graph inputs and outputs have a symbolic leading (batch) axis.

    cramc's quantised model is built for one sample ([1, ...]); onnxruntime runs the same graph on a
    whole batch once the leading axis is symbolic (value_info shapes go, onnxruntime infers them)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in [*m.graph.input, *m.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 0 or dims[0].dim_param or dims[0].dim_value != 1:
            raise SystemExit(f"cramc's quantised LeNet-5: {v.name} has no leading axis of 1 ({dims})")
        dims[0].dim_param = "N"
    del m.graph.value_info[:]
    return m


def onnxruntime_lenet(b: Bench, x_path: Path, y_path: Path) -> dict[str, Any]:
    """Best single-thread onnxruntime time on one batch of the test images: float model, QDQ (optimised, as written)."""
    import numpy as np
    import onnxruntime as ort
    from bench_interp import interleaved_best

    from cramc.fileio import load_npz
    from cramc.frontend.pipeline import run_frontend
    from cramc.sim.report import accuracy

    fe = run_frontend(str(LENET), load_npz(str(CALIB)), log=io.StringIO())
    x = {k: v for k, v in np.load(x_path).items()}
    labels = np.load(y_path)
    models = {
        "float": LENET.read_bytes(),
        "qdq": with_batch_axis(fe.qmodel).SerializeToString(),
    }
    sessions = {}
    for name, level in (
        ("float", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        ("qdq", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        ("qdq_as_written", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
    ):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = level
        sessions[name] = ort.InferenceSession(models[name.split("_")[0]], so, providers=["CPUExecutionProvider"])
    best = interleaved_best({k: (lambda s=s: s.run(None, x)) for k, s in sessions.items()}, b.repeat)
    out = {k: s.run(None, x)[0] for k, s in sessions.items()}
    return {
        "best_s": best,
        "accuracy": {k: accuracy(v, labels) for k, v in out.items()},
        "logits": out,
        "version": ort.__version__,
    }


def section_lenet(b: Bench) -> None:
    import numpy as np

    x, y, n = b.test_data()
    ref = onnxruntime_lenet(b, x, y)
    t = ref["best_s"]
    ref_s = min(t["qdq"], t["qdq_as_written"])
    print(
        f"  onnxruntime {ref['version']}, 1 thread, one batch of {n}, best of {b.repeat}: float {t['float']:.4f} s "
        f"(accuracy {ref['accuracy']['float']:.4f}); QDQ optimised {t['qdq']:.4f} s "
        f"({ref['accuracy']['qdq']:.4f}), QDQ as written {t['qdq_as_written']:.4f} s "
        f"({ref['accuracy']['qdq_as_written']:.4f})"
    )
    b.info["lenet_onnxruntime"] = {"images": n, "best_s": t, "accuracy": ref["accuracy"]}
    prog = b.lenet_program()
    for label, extra, target in (("fault_free", (), 50.0), (f"p{P:g}", ("--gate-error", f"{P:g}"), 100.0)):
        if prog is None:
            b.add(Figure(f"lenet_{label}", 0, ref_s, "s", "s", target, "<=", "", "", error="compile failed"))
            continue
        r = b.cramc(
            f"lenet_run_{label}", "run", str(prog), "--input", str(x), "--labels", str(y), *extra, output=".npz"
        )
        what = f"`cramc run` {'fault-free' if not extra else f'--gate-error {P:g}'} on {n} images, whole process"
        against = (
            f"onnxruntime on cramc's QDQ model, 1 thread, one batch, best of {b.repeat} (faster of optimised / as "
            f"written; the float model takes {t['float']:.4f} s)"
        )
        fig = Figure(f"lenet_{label}", r.proc.wall_s, ref_s, "s", "s", target, "<=", what, against, error=r.error)
        b.add(fig)
        if r.report:
            rep = r.report
            print(
                f"    cramc: accuracy {rep.get('accuracy', float('nan')):.4f}, simulation {rep['wall_s']:.2f} s of the "
                f"{r.proc.wall_s:.2f} s process ({r.proc.wall_s - rep['wall_s']:.2f} s start-up, parse, checks, "
                f"write), {rep['gate_evals']:.3e} gate evals, {rep['faults_injected']} faults"
            )
            b.info[f"lenet_run_{label}"] = {
                k: rep.get(k) for k in ("accuracy", "wall_s", "gate_evals", "faults_injected", "samples")
            }
        if not extra and r.output and r.output.exists():
            with np.load(r.output) as z:
                got = z[z.files[0]] if len(z.files) == 1 else None
            if got is not None:
                same = int((got.reshape(n, -1).argmax(1) == ref["logits"]["qdq_as_written"].argmax(1)).sum())
                print(f"    fault-free top-1 equal to onnxruntime's (QDQ as written) in {same} of {n} images")
                b.info["lenet_top1_equal_onnxruntime"] = same


def section_memory(b: Bench, small: float) -> None:
    from cramc.sim.backend import get_backend

    x, y, n = b.test_data()
    prog = b.lenet_program()
    default = get_backend("numpy").memory_budget() / GIB
    for gib, flag in ((default, ()), (small, ("--max-memory", f"{small:g}"))):
        limit = (gib + MEMORY_SLACK) * GIB
        tag = "default" if not flag else f"{small:g}"
        budget = f"--max-memory {gib:g} GiB{' (default)' if not flag else ''}"
        # the default-budget run is the lenet section's fault-free run when that ran (same command)
        r = (
            None
            if prog is None
            else b.cramc(
                "lenet_run_fault_free" if not flag else f"lenet_run_fault_free_mem{tag}",
                "run",
                str(prog),
                "--input",
                str(x),
                "--labels",
                str(y),
                *flag,
                output=".npz",
            )
        )
        b.add(
            Figure(
                f"memory_run_{tag}",
                r.proc.peak_rss_mb * 2**20 / 1e6 if r else 0,
                limit / 1e6,
                "MB",
                "MB",
                1.0,
                "<=",
                f"peak RSS of `cramc run` LeNet-5, {n} images, fault-free, {budget}",
                f"{budget} + {MEMORY_SLACK} GiB",
                error=r.error if r else "compile failed",
            )
        )
        s = b.cramc(
            f"sweep_mem{tag}",
            *_sweep_args(x, y, f"{P:g}", "none", 1),
            *flag,
            report=False,
            output=".json",
        )
        b.add(
            Figure(
                f"memory_sweep_{tag}",
                s.proc.peak_rss_mb * 2**20 / 1e6,
                limit / 1e6,
                "MB",
                "MB",
                1.0,
                "<=",
                f"peak RSS of `cramc sweep` LeNet-5, {n} images, p={P:g}, 1 seed, protection none, {budget}",
                f"{budget} + {MEMORY_SLACK} GiB",
                error=s.error,
            )
        )


def squeezenet_input(model: Path, out: Path) -> dict[str, tuple[int, ...]]:
    """The input onnx's backend test feeds a light model (Runner.generate_dummy_data, seed 0), as DATA.npz."""
    import numpy as np
    import onnx
    from onnx.backend.test.runner import Runner

    m = onnx.load(str(model), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    feeds = {
        v.name: Runner.generate_dummy_data(v, seed=0, name="squeezenet", random=False)
        for v in m.graph.input
        if v.name not in inits
    }
    np.savez(out, **feeds)
    return {k: v.shape for k, v in feeds.items()}


def program_geometry(prog: Path) -> tuple[int, int]:
    """(arrays, rows) from the program's `.machine` line."""
    with open(prog) as f:
        for line in f:
            m = re.match(r"\s*\.machine\b.*\barrays=(\d+)\b.*\brows=(\d+)", line)
            if m:
                return int(m.group(1)), int(m.group(2))
    raise SystemExit(f"{prog}: no .machine line")


def section_squeezenet(b: Bench) -> None:
    from bench_interp import interleaved_best, numpy_and_popcount

    model = light_dir() / "light_squeezenet.onnx"
    prog = b.tmp / "light_squeezenet.cram"
    c = b.cramc("compile_squeezenet", "compile", str(model), "-o", str(prog), "--no-trace", report=False)
    x = b.tmp / "squeezenet_input.npz"
    shapes = squeezenet_input(model, x)
    print(f"  input: onnx's backend-test data {shapes}")
    if c.error:
        for label in ("fault_free", f"p{P:g}"):
            b.add(Figure(f"squeezenet_{label}", 0, 1, "", "", 0.5, ">=", "", "", error=f"compile: {c.error}"))
        return
    arrays, rows = program_geometry(prog)
    ref_s = interleaved_best({"numpy": numpy_and_popcount(arrays, rows, 1, NUMPY_CALLS)}, 5)["numpy"]
    ref = NUMPY_CALLS * arrays * rows / ref_s
    print(f"  numpy AND+popcount on {arrays} x {rows} bits (one lane), best of 5: {ref:.3e} bit evals/s")
    b.info["squeezenet_numpy_bit_evals_per_s"] = ref
    for label, extra in (("fault_free", ()), (f"p{P:g}", ("--gate-error", f"{P:g}"))):
        r = b.cramc(f"squeezenet_run_{label}", "run", str(prog), "--input", str(x), *extra, output=".npz")
        evals = r.report["gate_evals"] if r.report else 0
        b.add(
            Figure(
                f"squeezenet_{label}",
                evals / r.proc.wall_s,
                ref,
                "gate evals/s",
                "bit evals/s",
                0.5,
                ">=",
                f"REPORT.json gate_evals ({evals:.3e}) / whole-process wall ({r.proc.wall_s:.2f} s) of `cramc run` on "
                f"one image{'' if not extra else f', --gate-error {P:g}'}"
                + (f"; simulation alone {r.report['wall_s']:.2f} s" if r.report else ""),
                "numpy AND+popcount (bench_interp.numpy_and_popcount) on one gate instruction's words, best of 5",
                error=r.error,
            )
        )


def plain_torch_epoch(
    x_path: Path, y_path: Path, repeat: int, threads: int = 0, give_up: float = float("inf")
) -> tuple[float, int, int, float]:
    """Best wall time of a plain PyTorch epoch of LeNet-5 on the data; the batch size, torch's thread count and
    the best CPU time of the process over the same epochs.

    `threads`: torch's thread count for these epochs (0: as it is); restored afterwards.  `give_up`: stop
    after an epoch slower than this (it cannot be the reference; a loaded machine makes two threads slow)."""
    import time

    import numpy as np
    import torch

    from cramc.train.finetune import Options

    sys.path.insert(0, str(MODELS))
    from train_mnist import LeNet5

    opts = Options()
    with np.load(x_path) as z:
        xt = torch.from_numpy(z[z.files[0]].reshape(-1, 1, 28, 28).astype(np.float32))
    yt = torch.from_numpy(np.load(y_path).astype(np.int64))
    n = xt.shape[0]
    torch.manual_seed(opts.seed)
    net = LeNet5()
    opt = torch.optim.Adam(net.parameters(), lr=opts.lr)
    rng = np.random.default_rng(opts.seed)
    best = best_cpu = float("inf")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            net.train()
            losses, correct = [], 0
            order = rng.permutation(n)
            for start in range(0, n, opts.batch_size):
                idx = torch.from_numpy(order[start : start + opts.batch_size])
                out = net(xt[idx])
                loss = torch.nn.functional.cross_entropy(out, yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                correct += int((out.argmax(1) == yt[idx]).sum())
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
            if best > give_up:
                break
    finally:
        torch.set_num_threads(before)
    return best, opts.batch_size, used, best_cpu


def section_finetune(b: Bench) -> None:
    try:
        import torch
    except ImportError:
        print("  skipped: PyTorch is not installed (pip install -e '.[train]')")
        b.info["finetune"] = "skipped: no PyTorch"
        return
    from cramc.train.finetune import Options

    x, y, n = b.train_data()
    # the reference: the faster of torch's default thread count and finetune's own (Options.threads), each the
    # best of --repeat epochs; on a shared machine two threads can be many times slower than one
    plain = {Options().threads: plain_torch_epoch(x, y, b.repeat, Options().threads)}
    if torch.get_num_threads() != Options().threads:  # torch's default, unless it is that count
        plain[0] = plain_torch_epoch(x, y, b.repeat, 0, give_up=2 * plain[Options().threads][0])
    for sec, batch, used, cpu in plain.values():
        print(
            f"  plain PyTorch LeNet-5 epoch on {n} images, batch {batch}, Adam, {used} thread(s): best {sec:.3f} s "
            f"(CPU {cpu:.3f} s)"
        )
    ref, batch, threads, ref_cpu = min(plain.values())
    epochs = 2  # epoch 2 pays for its re-quantisation, as every epoch after the first does
    r = b.cramc(
        "finetune",
        "finetune",
        str(LENET),
        "--data",
        str(x),
        "--labels",
        str(y),
        "--gate-error",
        f"{P:g}",
        "--epochs",
        str(epochs),
        "--calibration",
        str(CALIB),
        report=False,
        output=".onnx",
    )
    found = list(re.finditer(r"epoch (\d+)/\d+:.*\(([\d.]+) s, CPU ([\d.]+) s\)", r.proc.stdout))
    timers = {int(m.group(1)): float(m.group(2)) for m in found}
    cpus = {int(m.group(1)): float(m.group(3)) for m in found}
    m = re.search(r"^before:.*; ([\d.]+) s, CPU [\d.]+ s\)", r.proc.stdout, re.M)
    before = float(m.group(1)) if m else None
    err = r.error or (None if epochs in timers else "no epoch timer in cramc's output")
    b.add(
        Figure(
            "finetune_epoch",
            timers.get(epochs, float("nan")),
            ref,
            "s",
            "s",
            3.0,
            "<=",
            f"epoch {epochs} of `cramc finetune --epochs {epochs} --gate-error {P:g}` on {n} images, cramc's own "
            "timer: the epoch's re-quantisation (onnxruntime's quantiser on the calibration data) and its "
            "training steps with the exact noise",
            f"one plain PyTorch epoch of the same network, same data, batch {batch}, Adam (best of {b.repeat} epochs, "
            f"in this process, {threads} torch thread(s): the faster of torch's default and finetune's count)",
            error=err,
        )
    )
    if epochs in cpus:
        print(
            f"    finetune_epoch_cpu (information): CPU time of that epoch {cpus[epochs]:.2f} s / the plain epoch's "
            f"{ref_cpu:.3f} s = {cpus[epochs] / ref_cpu:.3g} (the ratio that a loaded machine moves least)",
            flush=True,
        )
        b.info["finetune_epoch_cpu"] = {"cramc_s": cpus[epochs], "plain_s": ref_cpu, "ratio": cpus[epochs] / ref_cpu}
    if not r.error:
        whole = r.proc.wall_s
        rest = whole - sum(timers.values()) - (before or 0.0)
        print(
            f"    finetune_process (information, no target): whole process {whole:.2f} s / {epochs} plain epochs "
            f"{epochs * ref:.3f} s = {whole / (epochs * ref):.3g}; of it epoch 0 (quantisation and the accuracy "
            f"pass under faults on the {n} images) {before if before is not None else float('nan'):.2f} s, epochs "
            + ", ".join(f"{e}: {t:.2f} s" for e, t in sorted(timers.items()))
            + f", start-up, loading, export and writing {rest:.2f} s",
            flush=True,
        )
        b.info["finetune_process"] = {
            "wall_s": whole,
            "cpu_s": r.proc.cpu_s,
            "epochs": epochs,
            "ratio_to_plain_epochs": whole / (epochs * ref),
            "epoch0_s": before,
            "epoch_s": timers,
            "rest_s": rest,
        }
    b.info["finetune_plain_epoch_s"] = {str(used): sec for sec, _, used, _ in plain.values()}


def _sweep_args(x: Path, y: Path, rates: str, protection: str, seeds: int) -> list[str]:
    """`cramc sweep` of LeNet-5 on the given data (the campaign and the memory sections share it)."""
    return [
        "sweep",
        str(LENET),
        "--data",
        str(x),
        "--labels",
        str(y),
        "--calibration",
        str(CALIB),
        "--gate-error",
        rates,
        "--protection",
        protection,
        "--seeds",
        str(seeds),
        "--no-progress",
    ]


def section_sweep(b: Bench, timeout: float) -> None:
    x, y, n = b.test_data()
    rates, seeds = (f"{P:g}", 1) if b.quick else (SWEEP_RATES, SWEEP_SEEDS)
    saved, b.timeout = b.timeout, timeout
    r = b.cramc(
        "sweep",
        *_sweep_args(x, y, rates, "none,ecc", seeds),
        "--mode",
        "gate",
        report=False,
        output=".json",
    )
    b.timeout = saved
    said = [ln for ln in r.proc.stdout.splitlines() if ln.startswith("swept ")]
    if said:
        print(f"    cramc: {said[-1]}")
    points = None
    if r.output and r.output.exists():
        points = len(json.loads(r.output.read_text())["results"])
        print(f"    {points} (rate, protection) points x {seeds} seed(s) written")
    b.info["sweep"] = {"rates": rates, "seeds": seeds, "images": n, "points": points}
    # killed at the timeout, or by a signal from outside (rc < 0): the wall time so far is a lower bound
    timed_out = r.proc.rc is None or r.proc.rc < 0
    b.add(
        Figure(
            "sweep_lenet",
            r.proc.wall_s,
            SWEEP_TARGET_S,
            "s",
            "s",
            1.0,
            "<=",
            f"`cramc sweep` LeNet-5, rates {rates} x {seeds} seed(s) x {n} images, protection none,ecc, gate level, "
            "whole process" + (f" (killed: {r.error}; a lower bound)" if timed_out else ""),
            "the 120 s target",
            lower_bound=timed_out,
            error=None if timed_out else r.error,
        )
    )
    from cramc.sim.backend import get_backend

    gib = get_backend("numpy").memory_budget() / GIB
    # the same process's peak RSS: a long sweep is where memory that is never freed shows
    b.add(
        Figure(
            "memory_sweep_campaign",
            r.proc.peak_rss_mb * 2**20 / 1e6,
            (gib + MEMORY_SLACK) * GIB / 1e6,
            "MB",
            "MB",
            1.0,
            "<=",
            f"peak RSS of this sweep (--max-memory {gib:g} GiB, the default)"
            + (" until it was killed" if timed_out else ""),
            f"--max-memory {gib:g} GiB + {MEMORY_SLACK} GiB",
            lower_bound=timed_out,
            error=None if timed_out else r.error,
        )
    )


# --------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    d: dict[str, Any] = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "ram_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for mod in ("onnx", "onnxruntime", "torch"):
        try:
            d[mod] = __import__(mod).__version__
        except ImportError:
            d[mod] = None
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default all: {SECTIONS})")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 16 test / 64 training images, one repeat")
    ap.add_argument("--repeat", type=int, default=5, help="best of N for the onnxruntime and numpy references")
    ap.add_argument("--small-budget", type=float, default=0.5, help="the small --max-memory of the memory section")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per cramc process (the sweep aside)")
    ap.add_argument("--sweep-timeout", type=float, default=5400.0, help="seconds for the sweep section's sweep")
    ap.add_argument("--json", help="write every figure and the details to this JSON file")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    repeat = 1 if args.quick else max(args.repeat, 1)
    mach = machine()
    started = datetime.datetime.now().astimezone()
    print(
        f"{started:%Y-%m-%d %H:%M %Z}; {mach['cpu']}, {mach['cpus']} CPUs, {mach['ram_gib']:.0f} GiB; python "
        f"{mach['python']}, numpy {mach['numpy']}, onnx {mach['onnx']}, onnxruntime {mach['onnxruntime']}, torch "
        f"{mach['torch']}; load average {os.getloadavg()[0]:.1f}{'; QUICK (smoke run)' if args.quick else ''}",
        flush=True,
    )
    loads: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_workloads_") as tmp:
        b = Bench(Path(tmp), args.quick, repeat, args.timeout)
        run_section: dict[str, Callable[[], None]] = {
            "lenet": lambda: section_lenet(b),
            "memory": lambda: section_memory(b, args.small_budget),
            "squeezenet": lambda: section_squeezenet(b),
            "finetune": lambda: section_finetune(b),
            "sweep": lambda: section_sweep(b, args.sweep_timeout),
        }
        for name in SECTIONS:
            if name not in only:
                continue
            before = os.getloadavg()[0]
            print(f"\n[{name}] load average {before:.1f}", flush=True)
            run_section[name]()
            loads[name] = [before, os.getloadavg()[0]]
    passed = sum(f.ok for f in b.figures)
    print(
        f"\n{passed} of {len(b.figures)} figures meet their targets; load average at the end {os.getloadavg()[0]:.1f}"
    )
    for f in b.figures:
        print(f"  {f.line()}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "date": started.isoformat(timespec="seconds"),
                    "machine": mach,
                    "quick": args.quick,
                    "sections": only,
                    "load_average": loads,
                    "figures": [f.to_dict() for f in b.figures],
                    "info": b.info,
                },
                indent=1,
            )
        )
    return 1 if b.errors else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--launch"]:
        _launcher_main(sys.argv[2:])
    else:
        sys.exit(main())
