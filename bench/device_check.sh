#!/usr/bin/env bash
# The prepared GPU check of issue 6, for a session that is lent a device machine (H100/H200).
#
# The device image has PyTorch, numpy, onnx, onnxruntime, networkx, matplotlib, tqdm, threadpoolctl,
# pytest and scipy, but not lark, and nothing can be fetched there.  On the development machine first:
#
#     pip download "lark>=1.1.9" --no-deps -d .device-wheels     # .device-wheels/ is git-ignored
#
# then call the device tool's run with  carry: [".device-wheels"],  timeout_s: 540,
#     command: bash bench/device_check.sh
# It installs cramc (no dependencies fetched), runs the simulator-backend tests on CUDA, then
# bench/bench_backends.py on torch:cuda against numpy on the same machine; the outputs are also
# written to $OUT (returned by the tool).  Give the machine back afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
python3 -m pip install --quiet --no-index --no-deps .device-wheels/*.whl
python3 -m pip install --quiet --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
# every backend-parametrised test on the cuda backend (the numpy and torch:cpu ones ran in CI)
timeout 180 python3 -m pytest -q -p no:logging -k "cuda" tests/sim/test_backends.py tests/test_sim_perf_semantics.py \
    2>&1 | tail -20 | tee "$out/tests_cuda.txt"
timeout 300 python3 bench/bench_backends.py --backend torch:cuda 2>&1 | tee "$out/bench_backends.txt"
