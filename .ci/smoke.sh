#!/usr/bin/env bash
# Smoke test of an installed cramc, e.g. a wheel in a fresh virtual environment:
#     bash .ci/smoke.sh VENV_DIR
# It runs in a scratch directory outside the repository (and without PYTHONPATH), so only the installed
# package can be imported: every module (cramc.train.finetune included), every subcommand's --help,
# --version, and a compile + run of a shipped model that needs the packaged grammar, presets and
# technology files.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$(cd "$1" && pwd)"
py="$venv/bin/python"
cramc="$venv/bin/cramc"
unset PYTHONPATH
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

"$py" - "$repo" <<'PY'
import importlib, importlib.resources, pkgutil, sys
from importlib.metadata import version
from pathlib import Path

import cramc

repo = Path(sys.argv[1]).resolve()
where = Path(cramc.__file__).resolve()
if repo in where.parents:
    sys.exit(f"smoke: cramc was imported from the source tree ({where}), not from the installed package")
for m in pkgutil.walk_packages(cramc.__path__, "cramc."):
    if m.name != "cramc.train.qat":  # the one module that imports PyTorch at import time (an optional extra)
        importlib.import_module(m.name)
import cramc.train.finetune  # noqa: F401
lang = importlib.resources.files("cramc.lang")
for f in ("cram.lark", "error_models/near_term.toml", "examples/full_adder.cram"):
    assert lang.joinpath(f).is_file(), f"cramc.lang/{f} is not installed"
assert version("cramc") == cramc.__version__, (version("cramc"), cramc.__version__)
print(f"smoke: cramc {cramc.__version__} imported from {where.parent}")
PY

test "$("$cramc" --version)" = "cramc $("$py" -c 'import cramc; print(cramc.__version__)')"
"$cramc" --help >/dev/null
for cmd in compile check fmt run stats sweep finetune isa-doc; do
    "$cramc" "$cmd" --help >/dev/null
done
"$cramc" compile "$repo/models/digits_mlp.onnx" -o mlp.cram --calibration "$repo/models/digits_calib_flat.npz"
"$cramc" check mlp.cram
"$cramc" run mlp.cram  # validation against onnxruntime: exits 1 if the outputs differ
"$cramc" run mlp.cram --input "$repo/models/digits_test_x_flat.npz" --labels "$repo/models/digits_test_labels.npy" \
    --error-model near_term --output out.npz --report report.json
"$cramc" stats mlp.cram >/dev/null
"$cramc" fmt --check mlp.cram
"$cramc" isa-doc >/dev/null
test -s out.npz && test -s report.json
echo "smoke: ok"
