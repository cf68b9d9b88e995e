"""The shipped fine-tuned digits models (models/digits_*_ft.onnx): no PyTorch needed.

Each keeps its original's graph, inputs and outputs, compiles, validates fault-free
against onnxruntime, and at the gate error rate it was tuned for is more accurate
on the test split than the original under the same gate-level faults (mean over
seeds 0 and 1; models/README.md has the figures over three seeds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cramtest import REPO

MODELS = REPO / "models"
#: model, input layout, the gate error rate it was tuned for (models/README.md)
CASES = [("mlp", "flat", "1.5e-2"), ("cnn", "img", "2e-3")]
#: tuned minus original accuracy at that rate; measured +0.094 (MLP) and +0.107 (CNN) over three seeds
MIN_GAIN = 0.05


def _accuracy(cli, prog: Path, layout: str, p: str, seed: int) -> float:
    res = cli(
        "run",
        str(prog),
        "--input",
        str(MODELS / f"digits_test_x_{layout}.npz"),
        "--labels",
        str(MODELS / "digits_test_labels.npy"),
        "--gate-error",
        p,
        "--seed",
        str(seed),
    )
    assert res.rc == 0, res.err
    return float(res.out.split("accuracy (logits argmax vs labels): ")[1].split()[0])


@pytest.mark.parametrize("name,layout,p", CASES)
def test_shipped_finetuned_model(cli, tmp_path: Path, name: str, layout: str, p: str) -> None:
    orig, tuned = MODELS / f"digits_{name}.onnx", MODELS / f"digits_{name}_ft.onnx"
    a, b = onnx.load(str(orig)), onnx.load(str(tuned))
    onnx.checker.check_model(b, full_check=True)
    assert [(n.op_type, list(n.input), list(n.output)) for n in a.graph.node] == [
        (n.op_type, list(n.input), list(n.output)) for n in b.graph.node
    ]
    assert a.graph.input == b.graph.input and a.graph.output == b.graph.output
    dims = [[(t.name, list(t.dims)) for t in m.graph.initializer] for m in (a, b)]
    assert dims[0] == dims[1]
    calib = str(MODELS / f"digits_calib_{layout}.npz")
    progs = {}
    for tag, model in (("orig", orig), ("tuned", tuned)):
        progs[tag] = tmp_path / f"{tag}.cram"
        assert cli("compile", str(model), "-o", str(progs[tag]), "--calibration", calib).rc == 0
    res = cli("run", str(progs["tuned"]))
    assert res.rc == 0 and "MISMATCH" not in res.out
    assert _accuracy(cli, progs["tuned"], layout, "0", 0) >= 0.96
    gain = np.mean(
        [_accuracy(cli, progs["tuned"], layout, p, s) - _accuracy(cli, progs["orig"], layout, p, s) for s in (0, 1)]
    )
    assert gain >= MIN_GAIN, gain
