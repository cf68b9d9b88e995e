"""ONNX pass: fold BatchNormalization into the preceding Conv (or Gemm) when it is its only user.

y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta becomes a conv with
weights scaled per output channel and a new bias.  A BatchNormalization that
cannot be folded stays and is lowered to a per-channel affine CMOS operation.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

NAME = "fold-batchnorm"


def run(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    users: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    for o in g.output:
        users[o.name] = users.get(o.name, 0) + 1
    producer = {o: n for n in g.node for o in n.output}
    drop: set[int] = set()
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) > 1 and any(bn.output[1:]):
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or users.get(bn.input[0], 0) != 1:
            continue
        if not all(i in inits for i in bn.input[1:5]) or conv.input[1] not in inits:
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (
            numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
            if len(conv.input) > 2 and conv.input[2]
            else np.zeros(w.shape[0])
        )
        k = gamma / np.sqrt(var + eps)
        w2 = (w * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        b2 = ((b - mean) * k + beta).astype(np.float32)
        wname, bname = conv.input[1] + "_bnfold", bn.output[0] + "_bias_bnfold"
        g.initializer.extend([numpy_helper.from_array(w2, wname), numpy_helper.from_array(b2, bname)])
        new_inputs = [conv.input[0], wname, bname]
        del conv.input[:]
        conv.input.extend(new_inputs)
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
    keep = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return model
