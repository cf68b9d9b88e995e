"""Light ResNet-50 and VGG-19 as float ONNX models (random weights) for the cost comparison.

"Light": the layer structure of the originals (ResNet-50: bottleneck stages of
3, 4, 6, 3 blocks with 1x1-3x3-1x1 convolutions and projection shortcuts;
VGG-19: 16 3x3 convolutions in 5 max-pooled stages and 3 fully connected
layers) at a quarter of the channel width, on 32x32 RGB inputs (CIFAR size)
with 10 classes, and without batch normalisation (it folds into the
convolutions anyway).  The weights are He-normal random numbers with a fixed
seed: the cost of a network does not depend on its weight values.

    python bench/light_models.py OUT_DIR      # writes resnet50_light.onnx, vgg19_light.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, name: str, seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def _id(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, gain: float = 1.0, relu: bool = True) -> str:
        name = self._id("conv")
        w = (self.rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (0.01 * self.rng.standard_normal(cout)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]
        p = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.weight", f"{name}.bias"],
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[p, p, p, p],
            )
        )
        return self.relu(name) if relu else name

    def relu(self, x: str) -> str:
        y = self._id("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y], name=y))
        return y

    def add(self, a: str, b: str) -> str:
        y = self._id("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y], name=y))
        return y

    def maxpool(self, x: str) -> str:
        y = self._id("pool")
        self.nodes.append(helper.make_node("MaxPool", [x], [y], name=y, kernel_shape=[2, 2], strides=[2, 2]))
        return y

    def gap_flatten(self, x: str) -> str:
        g = self._id("gap")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [g], name=g))
        f = self._id("flatten")
        self.nodes.append(helper.make_node("Flatten", [g], [f], name=f, axis=1))
        return f

    def flatten(self, x: str) -> str:
        f = self._id("flatten")
        self.nodes.append(helper.make_node("Flatten", [x], [f], name=f, axis=1))
        return f

    def fc(self, x: str, cin: int, cout: int, relu: bool, out: str | None = None) -> str:
        name = out or self._id("fc")
        w = (self.rng.standard_normal((cout, cin)) * np.sqrt(2.0 / cin)).astype(np.float32)
        b = (0.01 * self.rng.standard_normal(cout)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]
        self.nodes.append(helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [name], name=name, transB=1))
        return self.relu(name) if relu else name

    def model(self, out: str, classes: int) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", classes])
        g = helper.make_graph(self.nodes, self.name, [x], [y], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="cramc bench")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def resnet50_light(width: int = 16, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    b = _Builder("resnet50_light", seed)
    x = b.conv("input", 3, width, 3)
    cin = width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        mid = width * 2**stage
        cout = 4 * mid
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 0) else 1
            h = b.conv(x, cin, mid, 1)
            h = b.conv(h, mid, mid, 3, stride)
            h = b.conv(h, mid, cout, 1, gain=0.3, relu=False)
            short = b.conv(x, cin, cout, 1, stride, relu=False) if i == 0 else x
            x = b.relu(b.add(h, short))
            cin = cout
    return b.model(b.fc(b.gap_flatten(x), cin, classes, relu=False, out="logits"), classes)


def vgg19_light(width: int = 16, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    b = _Builder("vgg19_light", seed)
    x, cin = "input", 3
    for stage, convs in enumerate((2, 2, 4, 4, 4)):
        cout = width * 2 ** min(stage, 3)
        for _ in range(convs):
            x = b.conv(x, cin, cout, 3)
            cin = cout
        x = b.maxpool(x)
    x = b.flatten(x)  # [N, cin] after five 2x2 pools of 32x32
    hidden = 16 * width  # 4096 / 4 / 64 in the original's proportions: 256 at width 16
    x = b.fc(x, cin, hidden, relu=True)
    x = b.fc(x, hidden, hidden, relu=True)
    return b.model(b.fc(x, hidden, classes, relu=False, out="logits"), classes)


def write_all(out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fn in (("resnet50_light", resnet50_light), ("vgg19_light", vgg19_light)):
        p = out / f"{name}.onnx"
        onnx.save(fn(), str(p))
        paths[name] = p
    return paths


if __name__ == "__main__":
    for p in write_all(sys.argv[1] if len(sys.argv) > 1 else "bench/out").values():
        print(f"wrote {p}")
