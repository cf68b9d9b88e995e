"""Compile benchmark: the light model zoo shipped with onnx, one `cramc compile` per model.

onnx ships "light" versions of nine ImageNet classifiers in
``onnx/backend/test/data/light`` (real topologies and shapes, weights made by
ConstantOfShape nodes).  For each model this script runs, in a subprocess with
a timeout,

    python -m cramc.cli compile MODEL.onnx -o OUT/MODEL.cram      (no calibration data: synthetic inputs)
    python -m cramc.cli check OUT/MODEL.cram

and prints the compile wall time, the compiler's peak resident memory (from
``os.wait4``), the program size in MB, what the program does with the chip
(MVM layers, how many are time-multiplexed and reload their weights on every
inference), and the `cramc check` verdict with its time.  A model that does not
compile prints the compiler's error line (which node or operator stops it, and
why).  For ResNet-50 it also prints the ratios against the targets: compile
within 60 s, program within 50 MB.

The light models' weights are one constant per tensor, so the weight data in
the program compresses to almost nothing.  ``--random-weights`` replaces the
weight tensor of every Conv and Gemm with seeded random values of the same
shape (scaled by 1/sqrt(fan-in)), which is what a trained model's program
size looks like.

    python bench/bench_compile.py [--models resnet50 vgg19 ...] [--timeout 600] [--random-weights] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

MODELS = (
    "resnet50",
    "vgg19",
    "bvlc_alexnet",
    "squeezenet",
    "shufflenet",
    "inception_v1",
    "inception_v2",
    "densenet121",
    "zfnet512",
)
TARGET_COMPILE_S = 60.0  # ResNet-50
TARGET_PROGRAM_MB = 50.0  # ResNet-50
MVM_COMMENT = re.compile(
    r"; mvm %\S+: P=(\d+) K=(\d+) N=(\d+) .*?(\d+) arrays x (\d+) replica\(s\), (\d+) round\(s\), "
    r"(\d+) pass\(es\)"
)


def light_dir() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@dataclass
class Proc:
    rc: int | None  # None: killed at the timeout
    wall_s: float
    cpu_s: float  # user + system CPU time of the child: less sensitive than wall time to a busy machine
    peak_rss_mb: float
    stdout: str
    stderr: str


def run_measured(cmd: list[str], timeout: float) -> Proc:
    """Run cmd; wall time and the child's own peak RSS (os.wait4), killing it at the timeout.

    Linux carries a process's peak RSS across exec, so the child's figure is at least this
    process's RSS when it forks: keep this process small (models are randomised in a subprocess).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True)
        rc: int | None = None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() - t0 > timeout:
                os.killpg(p.pid, signal.SIGKILL)
                _, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        p.returncode = rc if rc is not None else -9  # wait4 reaped it; keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        return Proc(rc, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, out.read(), err.read())


def error_line(stderr: str) -> str:
    """The line that says why: cramc's `error:` line, else the last line of a traceback."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error:" in ln:
            return ln
    return lines[-1] if lines else "(no message)"


def randomise_weights(src: Path, dst: Path, seed: int = 0) -> None:
    """Replace every constant Conv/Gemm weight (a ConstantOfShape or an initializer) with random values."""
    m = onnx.load(str(src))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    wnames = {n.input[1] for n in g.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1}
    rng = np.random.default_rng(seed)
    keep = []
    new_inits = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.output[0] in wnames and n.input[0] in inits:
            shape = [int(d) for d in numpy_helper.to_array(inits[n.input[0]]).reshape(-1)]
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            w = (rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
            new_inits.append(numpy_helper.from_array(w, n.output[0]))
            continue
        keep.append(n)
    for name in wnames:
        if name in inits and inits[name].data_type == onnx.TensorProto.FLOAT:
            shape = list(inits[name].dims)
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            inits[name].CopyFrom(
                numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32), name)
            )
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    m.ir_version = max(m.ir_version, 4)  # from IR 4 on, initializers need not be listed as graph inputs
    onnx.save(m, str(dst))


def program_stats(path: Path) -> dict[str, float]:
    """MVM layers and weight reloads (from the emitter's comments); MB of weight data and of
    validation + trace data (the `.data $expect.*` / `$trace.*` vectors)."""
    mvms = reloads = multipass = 0
    wdata = vdata = 0
    with open(path) as f:
        for line in f:
            s = line.lstrip()
            if s.startswith(".data $expect.") or s.startswith(".data $trace."):
                vdata += len(line)
                continue
            if s.startswith(".data $") and re.match(r"\.data \$\S+\.w(\.p\d+)? ", s):
                wdata += len(line)
                continue
            if not s.startswith(";"):
                continue
            m = MVM_COMMENT.match(s)
            if m:
                mvms += 1
                multipass += int(m.group(7)) > 1
            elif s.startswith("; reload the weights"):
                reloads += 1
    return {
        "mvms": mvms,
        "reload_blocks": reloads,
        "multipass": multipass,
        "weights_mb": wdata / 1e6,
        "vectors_mb": vdata / 1e6,
    }


def bench_one(name: str, model: Path, out: Path, timeout: float) -> dict[str, object]:
    cmd = [sys.executable, "-m", "cramc.cli", "compile", str(model), "-o", str(out)]
    c = run_measured(cmd, timeout)
    res: dict[str, object] = {"model": name, "wall_s": c.wall_s, "cpu_s": c.cpu_s, "rss_mb": c.peak_rss_mb}
    if c.rc is None:
        res["error"] = f"timed out after {timeout:.0f} s"
        return res
    if c.rc != 0:
        res["error"] = error_line(c.stderr)
        return res
    res["size_mb"] = out.stat().st_size / 1e6
    res.update(program_stats(out))
    k = run_measured([sys.executable, "-m", "cramc.cli", "check", str(out)], timeout)
    res["check_s"] = k.wall_s
    res["check"] = (
        "ok"
        if k.rc == 0
        else (f"timed out after {timeout:.0f} s" if k.rc is None else "FAILED: " + error_line(k.stderr))
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        choices=MODELS,
        metavar="NAME",
        help=f"models to compile (default all: {' '.join(MODELS)})",
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per compile (and per check)")
    ap.add_argument(
        "--random-weights",
        action="store_true",
        help="replace Conv/Gemm weights by seeded random values (realistic program size)",
    )
    ap.add_argument("--keep", help="write the programs to this folder and keep them (default: a temporary folder)")
    ap.add_argument("--randomise", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.randomise:
        randomise_weights(Path(args.randomise[0]), Path(args.randomise[1]))
        return

    import onnxruntime

    src = light_dir()
    print(f"light models from {src}")
    print(
        f"python {sys.version.split()[0]}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"numpy {np.__version__}; {os.cpu_count()} CPUs; weights: "
        f"{'random (seed 0)' if args.random_weights else 'as shipped (constant per tensor)'}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    tmp = tempfile.TemporaryDirectory(prefix="bench_compile_")
    outdir = Path(args.keep) if args.keep else Path(tmp.name)
    outdir.mkdir(parents=True, exist_ok=True)
    head = (
        f"{'model':<14} {'compile s':>9} {'CPU s':>6} {'peak RSS MB':>11} {'program MB':>10} {'weights':>7} "
        f"{'vectors':>7} {'MVMs':>5} {'reloaded':>8} {'check':>6} {'check s':>7}"
    )
    print(head)
    print("-" * len(head))
    results = []
    for name in args.models:
        model = src / f"light_{name}.onnx"
        if args.random_weights:
            rnd = Path(tmp.name) / f"light_{name}_random.onnx"
            subprocess.run([sys.executable, __file__, "--randomise", str(model), str(rnd)], check=True)
            model = rnd
        r = bench_one(name, model, outdir / f"{name}.cram", args.timeout)
        results.append(r)
        if "error" in r:
            print(
                f"{name:<14} {r['wall_s']:>9.1f} {r['cpu_s']:>6.1f} {r['rss_mb']:>11.0f}  FAILED: {r['error']}",
                flush=True,
            )
            continue
        print(
            f"{name:<14} {r['wall_s']:>9.1f} {r['cpu_s']:>6.1f} {r['rss_mb']:>11.0f} {r['size_mb']:>10.2f} "
            f"{r['weights_mb']:>7.2f} {r['vectors_mb']:>7.2f} {r['mvms']:>5} {r['reload_blocks']:>8} "
            f"{r['check'] if r['check'] == 'ok' else 'FAIL':>6} {r['check_s']:>7.1f}",
            flush=True,
        )
        if r["check"] != "ok":
            print(f"{'':<14} check: {r['check']}")
    print()
    print("compile s: wall time; CPU s: the compiler's user + system CPU time (a busy machine inflates the first,")
    print("  hardly the second). weights / vectors: MB of the program that are weight data / validation and trace")
    print("  vectors (.expect, .trace; cramc compile --no-trace drops the trace part). reloaded: weight-load blocks")
    print("  in .main (time-multiplexed layers write their weights on every inference).")
    r50 = next((r for r in results if r["model"] == "resnet50"), None)
    if r50 is not None:
        if "error" in r50:
            print(f"ResNet-50 targets: not met, it does not compile ({r50['error']})")
        else:
            print(
                f"ResNet-50 targets: compile {r50['wall_s']:.1f} s / {TARGET_COMPILE_S:.0f} s = "
                f"{r50['wall_s'] / TARGET_COMPILE_S:.2f} (CPU {r50['cpu_s']:.1f} s: "
                f"{r50['cpu_s'] / TARGET_COMPILE_S:.2f}); program {r50['size_mb']:.2f} MB / "
                f"{TARGET_PROGRAM_MB:.0f} MB = {r50['size_mb'] / TARGET_PROGRAM_MB:.2f}  (<= 1 meets the target)"
            )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs")
    ok = sum("error" not in r and r.get("check") == "ok" for r in results)
    print(f"{ok} of {len(results)} models compiled and verified")
    if args.keep:
        print(f"programs kept in {outdir}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
