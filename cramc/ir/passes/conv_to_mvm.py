"""Pass conv-to-mvm: rewrite every integer `conv` as im2col + `mvm` + layout back to NCHW.

    %y = conv %x w=$W kernel=.. group=G xzp=Z ...
becomes
    %y.cols = im2col %x kernel=.. value=Z        ; [OH*OW, C*kh*kw], K ordered like ONNX weights
    %y.mvm  = mvm %y.cols w=$W2 groups=G ...      ; W2 = W reshaped to [M, C/G*kh*kw]
    %y.nhwc = reshape %y.mvm shape=[1, OH, OW, M]
    %y      = transpose %y.nhwc perm=[0, 3, 1, 2]
Padding uses the activation zero point so that the zero-point correction in
the bias holds at the borders too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cramc.ir.graph import Graph, Op
from cramc.ir.semantics import infer_shapes


@dataclass(frozen=True)
class ConvToMvm:
    name: str = "conv-to-mvm"
    requires: ClassVar[frozenset[str]] = frozenset()
    ensures: ClassVar[frozenset[str]] = frozenset({"no-conv"})
    changes_input: ClassVar[bool] = True  # rewrites g.ops and reshapes the weight constants in place

    def run(self, g: Graph) -> Graph:
        shapes = infer_shapes(g)
        ops: list[Op] = []
        for op in g.ops:
            if op.kind != "conv":
                ops.append(op)
                continue
            a = op.attrs
            w = g.consts[a["w"][1:]]
            m = w.shape[0]
            g.consts[a["w"][1:]] = w.reshape(m, -1)
            oc, oh, ow = shapes[op.out][0][1:]
            win: dict[str, Any] = {k: a[k] for k in ("kernel", "strides", "pads", "dilations") if k in a}
            cols = Op("im2col", op.out + ".cols", op.ins, {**win, "value": a.get("xzp", 0)}, op.origin)
            mv = {"w": a["w"], "wbits": a["wbits"], "xbits": a["xbits"], "xsigned": a["xsigned"]}
            if a.get("group", 1) != 1:
                mv["groups"] = a["group"]
            mvm = Op("mvm", op.out + ".mvm", ("%" + cols.out,), mv, op.origin)
            nhwc = Op("reshape", op.out + ".nhwc", ("%" + mvm.out,), {"shape": [1, oh, ow, oc]}, op.origin)
            back = Op("transpose", op.out, ("%" + nhwc.out,), {"perm": [0, 3, 1, 2]}, op.origin)
            ops.extend([cols, mvm, nhwc, back])
        g.ops = ops
        return g
