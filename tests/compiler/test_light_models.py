"""The light ImageNet-architecture models shipped with onnx (onnx/backend/test/data/light).

Only light_squeezenet is compiled here (a few seconds: 26 convolutions, concatenations, pooling,
softmax); the bigger ones (ResNet-50, VGG-19, DenseNet-121, ...) are exercised by a benchmark
script, not by unit tests.  No calibration data ships with them, so cramc quantises on synthetic
inputs and says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def test_light_models_are_shipped() -> None:
    names = {p.stem for p in LIGHT.glob("light_*.onnx")}
    assert {"light_squeezenet", "light_resnet50", "light_vgg19"} <= names


def test_compile_light_squeezenet(cli, tmp_path: Path) -> None:
    model = LIGHT / "light_squeezenet.onnx"
    prog = tmp_path / "squeezenet.cram"
    res = cli("compile", str(model), "-o", str(prog), "--validation", "1")
    assert res.rc == 0, res.err
    assert "Traceback" not in res.err
    assert res.err.startswith("warning: no --calibration data: quantising on synthetic")
    # the program size is reported, and is the size written
    m = re.fullmatch(
        rf"wrote {re.escape(str(prog))}: (\d+\.\d\d) MB, 1024 arrays of 256 x 256, compiled in "
        r"\d+\.\d s\n",
        res.out,
    )
    assert m, res.out
    assert float(m.group(1)) == round(prog.stat().st_size / 1e6, 2)
    assert prog.stat().st_size > 1_000_000  # ~1.2 M parameters, stationary in the arrays
    res = cli("check", str(prog))
    assert res.rc == 0, res.err
    assert res.out == f"{prog}: ok (1024 arrays of 256 x 256, 64 accumulators per array)\n"
    text = prog.read_text(encoding="utf-8")
    assert text.count("; mvm %") == sum(n.op_type == "Conv" for n in onnx.load(str(model)).graph.node)
