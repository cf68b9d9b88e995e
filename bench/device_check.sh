#!/usr/bin/env bash
# The prepared GPU check of issues 6 and 14, for a session that is lent a device machine (H100/H200).
#
# The device image has PyTorch, numpy, onnx, onnxruntime, networkx, matplotlib, tqdm, threadpoolctl,
# pytest and scipy, but not lark, and nothing can be fetched there.  On the development machine first:
#
#     pip download "lark>=1.1.9" --no-deps -d .device-wheels     # .device-wheels/ is git-ignored
#
# then call the device tool's run with  carry: [".device-wheels"],  timeout_s: 540,
#     command: bash bench/device_check.sh
# It installs cramc (no dependencies fetched), runs the simulator-backend tests on CUDA (at most 3 min),
# then bench/bench_device.py: LeNet-5 on 1000 MNIST images (fault-free and p = 1e-3) and light ResNet-50
# on one input (p = 1e-3), numpy against torch:cuda in one process with the same seed: times, the
# throughput ratio (target >= 100 on LeNet-5), fault-free outputs identical, fault counts within 5 sd
# (at most 4 min).  Under 8 minutes in all; the outputs are also written to $OUT (returned by the tool).
# Give the machine back afterwards.
#
#     bash bench/device_check.sh --cpu-dry-run
# runs the same benchmark on torch:cpu (32 LeNet images, no ResNet-50, no install, no tests) on any
# machine: the check that the script works before device time is spent on it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
if [[ "${1:-}" == "--cpu-dry-run" ]]; then
    timeout 600 python3 bench/bench_device.py --cpu-dry-run 2>&1 | tee "$out/bench_device.txt"
    exit "${PIPESTATUS[0]}"
fi
python3 -m pip install --quiet --no-index --no-deps .device-wheels/*.whl
python3 -m pip install --quiet --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
# every backend-parametrised test on the cuda backend (the numpy and torch:cpu ones ran in CI)
timeout 180 python3 -m pytest -q -p no:logging -k "cuda" tests/sim/test_backends.py tests/test_sim_perf_semantics.py \
    2>&1 | tail -20 | tee "$out/tests_cuda.txt" || true
timeout 240 python3 bench/bench_device.py --backend torch:cuda 2>&1 | tee "$out/bench_device.txt"
