"""A float ONNX graph run in PyTorch with quantisation in the loop and CRAM faults injected at every MVM.

The graph is the user's float model, node for node; the weights and biases of
every Conv, Gemm and MatMul are the trainable parameters.  The forward pass
computes what the compiled program computes:

- every activation that onnxruntime's QDQ quantiser quantises (the
  `QParams` read from its output, see `activation_qparams`) is fake-quantised
  with the same scale and zero point: q = clamp(round(x / s) + z), x' = (q - z) s;
- weights are fake-quantised per output channel, int8 symmetric (scale =
  max |w| / 127, zero point 0), and biases to int32 with scale sx * sw, as the
  quantiser does;
- the output of every MVM gets the accumulator error of the gate-level fault
  model (cramc.train.noise) for its actual integer operands, scaled by sx * sw
  into the float domain.

Backward is the straight-through estimator: rounding and clamping pass the
gradient unchanged, and the integer accumulator error is a constant.  Its
float scale sx * sw is not: sw = max |w| / 127 keeps its gradient, and so does
sx through this batch's range of the activation (sx times the range over its
detached value: the calibrated scale in the forward pass, the gradient of a
min-max range in the backward pass).  Through them the network learns what
makes it robust in the integer domain (flatter weight rows, fewer activation
outliers); with the scales detached the same training gains much less
(gate-level test accuracy under faults, models/README.md: digits CNN at gate
error 2e-3 0.840 -> 0.854 instead of 0.947, digits MLP at 1.5e-2 0.849 ->
0.890 instead of 0.943).  The error is
sampled exactly (`binomial`: the distribution cramc.ir.noisy draws, one
Bernoulli trial per partial product and row, visited only where it flips:
cramc.train.noise.sample_flips) or from a normal distribution with the exact
mean and variance (`normal`: an approximation; the real error is a sum of a
few large, rare flips at high significance, far from normal per output).

The batch axis is the first axis of every tensor: the model's inputs must have
batch size 1 or a symbolic one, and layout operations must keep axis 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from cramc.errmodel import FaultModel
from cramc.errors import UserError
from cramc.ir.graph import bits_for
from cramc.train.noise import MvmNoise, counted_rows, rates_for, sample_flips, term_weights

MVM_OPS = ("Conv", "Gemm", "MatMul")
#: The elementwise arithmetic of two tensors.
_ARITH: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
}
LAYOUT_OPS = ("Flatten", "Reshape", "Transpose", "Concat", "Identity", "Dropout")
SUPPORTED = (
    *MVM_OPS,
    *LAYOUT_OPS,
    "Relu",
    "Clip",
    "LeakyRelu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Add",
    "Sub",
    "Mul",
    "Softmax",
    "Constant",
)
NOISE_MODES = ("binomial", "normal")
WEIGHT_BITS = 8


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantisation of an activation: q = clamp(round(x / scale) + zp, qmin, qmax)."""

    scale: float
    zp: int
    qmin: int
    qmax: int

    @property
    def bits(self) -> int:
        return int(self.qmax - self.qmin).bit_length()

    @property
    def signed(self) -> bool:
        return self.qmin < 0


def activation_qparams(qmodel: onnx.ModelProto) -> dict[str, QParams]:
    """Float tensor name -> its quantisation, read from onnxruntime's QDQ model.

    The quantiser inserts QuantizeLinear(T) for every activation T it
    quantises; a graph output T is renamed T_QuantizeLinear_Input first.
    """
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    out: dict[str, QParams] = {}
    for n in qmodel.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        scale = inits.get(n.input[1])
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else np.uint8(0)
        if scale is None or zp is None or np.asarray(scale).size != 1:
            continue
        info = np.iinfo(np.asarray(zp).dtype)
        name = n.input[0].removesuffix("_QuantizeLinear_Input")
        out[name] = QParams(
            float(np.asarray(scale).reshape(())), int(np.asarray(zp).reshape(())), int(info.min), int(info.max)
        )
    return out


class _FakeQuant(torch.autograd.Function):
    """q = clamp(round(x / s) + z), forward (q - z) s, backward the identity (straight through)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float, zp: int, qmin: int, qmax: int) -> Any:
        q = torch.clamp(torch.round(x / scale) + zp, qmin, qmax)
        ctx.mark_non_differentiable(q)
        return (q - zp) * scale, q

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_q: torch.Tensor) -> Any:
        return grad, None, None, None, None


def fake_quant(x: torch.Tensor, qp: QParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantised value with a straight-through gradient, the integer q as float without gradient).

    One autograd node (`_FakeQuant`): its forward is the dequantised value itself, (q - zp) * scale, where
    x + (dq - x).detach() rounded twice (the same value but for an ulp) and cost two more ops and a node."""
    if not x.requires_grad:
        q = torch.clamp(torch.round(x / qp.scale) + qp.zp, qp.qmin, qp.qmax)
        return (q - qp.zp) * qp.scale, q
    dq, q = _FakeQuant.apply(x, qp.scale, qp.zp, qp.qmin, qp.qmax)
    return dq, q


def weight_scale(w: torch.Tensor, axis: int, bits: int = WEIGHT_BITS, live: bool = False) -> torch.Tensor:
    """Per-output-channel symmetric scale max |w| / (2^(bits-1) - 1), shaped to broadcast against w.

    With `live` the scale keeps its gradient (through the largest |w| of each channel).
    """
    dims = [d for d in range(w.dim()) if d != axis % w.dim()]
    v = w if live else w.detach()
    absmax = v.abs().amax(dim=dims, keepdim=True) if dims else v.abs()
    s = absmax / float(2 ** (bits - 1) - 1)
    return torch.where(s > 0, s, torch.ones_like(s))


def fake_quant_weight(
    w: torch.Tensor, axis: int, bits: int = WEIGHT_BITS, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dequantised weights with straight-through gradient, integer weights, per-channel scale [N]).

    `scale`: weight_scale(w, axis, bits) when the caller has it already (detached here)."""
    s = weight_scale(w, axis, bits) if scale is None else scale.detach()
    qmax = float(2 ** (bits - 1) - 1)
    q = torch.clamp(torch.round(w.detach() / s), -qmax, qmax)
    return w + (q * s - w).detach(), q, s.reshape(-1)


def fake_quant_bias(b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bias quantised to int32 with scale sx * sw per output channel (straight-through)."""
    q = torch.clamp(torch.round(b.detach() / scale), -(2.0**31), 2.0**31 - 1)
    return b + (q * scale - b).detach()


def bit_planes(v: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement bit-planes of integer-valued v: [..., bits] of 0/1 floats."""
    shifts = torch.arange(bits, dtype=torch.int64)
    return ((v.to(torch.int64).unsqueeze(-1) >> shifts) & 1).to(torch.float32)


def ones_counts(x: torch.Tensor, w: torch.Tensor, wbits: int, xbits: int, groups: int = 1) -> torch.Tensor:
    """popcount(w_b AND x_c) over K for x [S, P, K], w [N, K/groups]: float [S, P, N, wbits, xbits]."""
    s, p, k = x.shape
    n, kg = w.shape
    ng = n // groups
    xp = bit_planes(x, xbits)  # [S, P, K, xb]
    wp = bit_planes(w, wbits)  # [N, Kg, wb]
    parts = []
    for gi in range(groups):
        xs = xp[:, :, gi * kg : (gi + 1) * kg].permute(0, 1, 3, 2).reshape(s * p * xbits, kg)
        ws = wp[gi * ng : (gi + 1) * ng].permute(1, 0, 2).reshape(kg, ng * wbits)
        parts.append((xs @ ws).reshape(s, p, xbits, ng, wbits).permute(0, 1, 3, 4, 2))
    return parts[0] if groups == 1 else torch.cat(parts, dim=2)


def operand_ones(x: torch.Tensor, w: torch.Tensor, wbits: int, xbits: int, groups: int = 1) -> torch.Tensor:
    """popcount(w_b) + popcount(x_c) over K (each output's group of K): float [S, P, N, wbits, xbits]."""
    s, p, k = x.shape
    n, kg = w.shape
    ng = n // groups
    nx = bit_planes(x, xbits).reshape(s, p, groups, kg, xbits).sum(dim=3)  # [S, P, G, xb]
    nw = bit_planes(w, wbits).sum(dim=1)  # [N, wb]
    nx_n = nx.repeat_interleave(ng, dim=2)  # [S, P, N, xb]
    return nx_n[:, :, :, None, :] + nw[None, None, :, :, None]


def term_groups(spec: MvmNoise) -> list[tuple[np.ndarray, int, float, float, float]]:
    """Partial-product terms that can share one binomial draw: (mask [wbits, xbits], weight, e_0, e_1, e_2).

    Terms (b, c) with the same signed weight s(b, c) 2^(b+c) and the same rates
    add Binom(n1, p) + Binom(n2, p) = Binom(n1 + n2, p): drawing once per group
    is exact and needs about a third of the draws (22 instead of 64 for 8 x 8 bits).
    """
    t = term_weights(spec.wbits, spec.xbits, spec.xsigned)
    e = [spec.rates[:, k].reshape(t.shape) for k in range(3)]
    keys = sorted({(int(t[i]), float(e[0][i]), float(e[1][i]), float(e[2][i])) for i in np.ndindex(t.shape)})
    return [
        ((t == tw) & (e[0] == a) & (e[1] == b) & (e[2] == c), tw, a, b, c)
        for tw, a, b, c in keys
        if a > 0 or b > 0 or c > 0
    ]


def _numpy_rng(gen: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from the next draw of `gen`: the same seed gives the same stream."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))


def sample_error(
    x: torch.Tensor,
    w: torch.Tensor,
    spec: MvmNoise,
    gen: torch.Generator,
    mode: str = "binomial",
    threads: int = 1,
) -> torch.Tensor:
    """One draw of the accumulator error (float64 [S, P, N]) for integer x [S, P, K] and w [N, K/groups].

    `binomial`: exact, flip by flip (cramc.train.noise.sample_flips, seeded from `gen`): rows with
    k = w_b + x_c operand bits at 1 flip with e_k.  `normal`: the exact mean and variance per output.
    x goes to the sampler as it is (float32 with integer values: no int64 copy of the patches); `threads`:
    the sampler's (the draw does not depend on it).
    """
    if mode == "binomial":
        wi = w.detach().to(torch.int64).numpy()
        return torch.from_numpy(sample_flips(x.detach().numpy(), wi, spec, _numpy_rng(gen), threads=threads))
    if mode != "normal":
        raise ValueError(f"unknown noise mode {mode}")
    ones = ones_counts(x, w, spec.wbits, spec.xbits, spec.groups)
    groups = term_groups(spec)
    if not groups:
        return torch.zeros(ones.shape[:3], dtype=torch.float64)
    member = torch.as_tensor(np.stack([m.reshape(-1) for m, *_ in groups], axis=1), dtype=torch.float32)
    ones_g = ones.reshape(*ones.shape[:3], -1) @ member  # [S, P, N, G]: ones summed over each group's terms
    zeros_g = member.sum(0) * spec.rows - ones_g
    tw = torch.tensor([g[1] for g in groups], dtype=torch.float64)
    e0, e1, e2 = (torch.tensor([g[k] for g in groups], dtype=torch.float32) for k in (2, 3, 4))
    z, o, p0, p2 = zeros_g.double(), ones_g.double(), e0.double(), e2.double()
    if bool((e0 != e1).any()):  # rows with exactly one operand bit at 1, per group
        one_op = operand_ones(x, w, spec.wbits, spec.xbits, spec.groups) - 2 * ones
        m1, p1 = (one_op.reshape(*one_op.shape[:3], -1) @ member).double(), e1.double()
        z = z - m1
        mean = (tw * (z * p0 + m1 * p1 - o * p2)).sum(-1)
        var = (tw * tw * (z * p0 * (1 - p0) + m1 * p1 * (1 - p1) + o * p2 * (1 - p2))).sum(-1)
    else:
        mean = (tw * (z * p0 - o * p2)).sum(-1)
        var = (tw * tw * (z * p0 * (1 - p0) + o * p2 * (1 - p2))).sum(-1)
    return mean + var.sqrt() * torch.randn(mean.shape, generator=gen, dtype=torch.float64)


#: Integers up to this magnitude are exact in float32 (24-bit significand).
_F32_EXACT = float(2**24)


def _scaled(err: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """err (float64 [S, P, N], integer values) times scale [N] as `dtype`.

    In float32 when every |err| <= 2^24, with the values of (err * scale.double()).to(float32): err is then exact
    in float32, the product of two float32 numbers is exact in float64 (24 + 24 bits), and both paths round that
    product once to float32.  The float64 path (what large errors need) costs two conversions and a double
    multiply in the forward pass and again in the backward pass; only the backward's sum over samples and
    positions (scale's gradient) rounds differently.
    """
    small = not err.numel() or float(err.abs().max()) <= _F32_EXACT
    if dtype == torch.float32 and scale.dtype == torch.float32 and small:
        return err.to(torch.float32) * scale
    return (err * scale.double()).to(dtype)


def conv_patches(
    xq: torch.Tensor, zp: int, kernel: tuple[int, int], pads: list[int], strides: list[int], dilations: list[int]
) -> torch.Tensor:
    """The integer MVM input of a convolution: im2col of xq [S, C, H, W] padded with the zero point.

    [S, OH*OW, C*kh*kw], K ordered like the ONNX weights, as cramc's conv-to-mvm pass builds it.  One gather
    of the padded image (`patch_index`), which is many times faster than F.unfold for few channels.
    """
    pt, pl, pb, pr = pads
    padded = _pad(xq, (pl, pr, pt, pb), float(zp))
    s, c, h, w = padded.shape
    idx = patch_index(c, h, w, tuple(kernel), tuple(strides), tuple(dilations))
    return torch.index_select(padded.reshape(s, -1), 1, idx.reshape(-1)).reshape(s, *idx.shape)


def _pad(x: torch.Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    """F.pad of the last two axes, skipped when every pad is 0 (F.pad would copy x)."""
    return F.pad(x, pads, value=value) if any(pads) else x


@functools.lru_cache(maxsize=64)
def patch_index(
    c: int, h: int, w: int, kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...]
) -> torch.Tensor:
    """Offsets into one padded image [C, H, W] of every (output position, K row): int64 [OH*OW, C*kh*kw]."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    rows = (torch.arange(oh) * sh)[:, None, None, None, None] + (torch.arange(kh) * dh)[None, None, None, :, None]
    cols = (torch.arange(ow) * sw)[None, :, None, None, None] + (torch.arange(kw) * dw)[None, None, None, None, :]
    chan = (torch.arange(c) * (h * w))[None, None, :, None, None]
    return (chan + rows * w + cols).reshape(oh * ow, c * kh * kw)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _where(node: onnx.NodeProto) -> str:
    return f"node '{node.name or node.output[0]}' ({node.op_type})"


class QatGraph(torch.nn.Module):
    """The float ONNX graph as a PyTorch module (see the module docstring)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        faults: FaultModel,
        rows: int = 256,
        noise: str = "binomial",
        range_grad: bool = True,
    ):
        super().__init__()
        self.range_grad = range_grad
        self.noise_threads = 1  # threads of the exact sampler (cramc.train.noise.sample_flips); same draws
        if noise not in NOISE_MODES:
            raise UserError(f"noise model '{noise}': expected one of {', '.join(NOISE_MODES)}")
        self.graph = model.graph
        self.faults, self.rows, self.noise = faults, rows, noise
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.param_names: list[str] = []
        self.params = torch.nn.ParameterList()
        self.qparams: dict[str, QParams] = {}
        self._raw: dict[str, torch.Tensor] = {}  # the last forward's activations before fake quantisation
        self._rates: dict[tuple[int, int], np.ndarray] = {}
        for node in model.graph.node:
            if node.op_type not in SUPPORTED or node.domain not in ("", "ai.onnx"):
                raise UserError(f"{_where(node)}: cramc finetune supports {', '.join(sorted(SUPPORTED))}")
            if node.op_type in MVM_OPS:
                self._check_mvm(node)
                for name in node.input[1:3]:
                    if name and name not in self.param_names:
                        self.param_names.append(name)
                        self.params.append(torch.nn.Parameter(torch.tensor(self.consts[name], dtype=torch.float32)))
        self._index = {n: i for i, n in enumerate(self.param_names)}

    # ------------------------------------------------------------- checks
    def _check_mvm(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if node.input[1] not in self.consts:
            raise UserError(f"{_where(node)}: the weights '{node.input[1]}' must be an initializer")
        if len(node.input) > 2 and node.input[2] and node.input[2] not in self.consts:
            raise UserError(f"{_where(node)}: the bias '{node.input[2]}' must be an initializer")
        w = self.consts[node.input[1]]
        if node.op_type == "Gemm":
            if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
                raise UserError(f"{_where(node)}: cramc finetune needs transA=0, alpha=1, beta=1")
            nout = w.shape[0 if a.get("transB", 0) else 1]
            if len(node.input) > 2 and node.input[2] and self.consts[node.input[2]].size not in (1, nout):
                raise UserError(f"{_where(node)}: the bias must be a vector over the outputs")
        if node.op_type == "MatMul" and w.ndim != 2:
            raise UserError(f"{_where(node)}: cramc finetune needs 2-D constant weights")
        if node.op_type == "Conv" and (w.ndim != 4 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
            raise UserError(f"{_where(node)}: cramc finetune supports 2-D convolutions with explicit pads")

    def _live_scale(self, name: str, qp: QParams) -> torch.Tensor:
        """The activation scale with a gradient: sx times this batch's range over its own detached value."""
        r = self._raw[name]
        span = r.max().clamp(min=0) - r.min().clamp(max=0)
        if float(span.detach()) <= 0:
            return torch.tensor(qp.scale, dtype=torch.float32)
        return qp.scale * span / span.detach()

    def param(self, name: str) -> torch.Tensor:
        return self.params[self._index[name]]

    def state(self) -> dict[str, np.ndarray]:
        """The current float weights and biases by initializer name."""
        pairs = zip(self.param_names, self.params, strict=True)
        return {n: p.detach().numpy().astype(np.float32).copy() for n, p in pairs}

    def spec(self, wbits: int, xbits: int, xsigned: bool, k_per_group: int, groups: int) -> MvmNoise:
        key = (wbits, xbits)
        if key not in self._rates:
            self._rates[key] = rates_for(self.faults, wbits, xbits)
        return MvmNoise(wbits, xbits, xsigned, counted_rows(k_per_group, self.rows), self._rates[key], groups)

    # ------------------------------------------------------------- forward
    def forward(self, inputs: dict[str, torch.Tensor], gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Run the graph; faults are injected when `gen` is given, none otherwise."""
        env: dict[str, torch.Tensor] = {}
        ints: dict[str, torch.Tensor] = {}
        self._raw = {}

        def put(name: str, v: torch.Tensor) -> None:
            qp = self.qparams.get(name)
            if qp is not None:
                self._raw[name] = v
                v, ints[name] = fake_quant(v, qp)
            env[name] = v

        for vi in self.graph.input:
            if vi.name in inputs:
                put(vi.name, inputs[vi.name])
        for node in self.graph.node:
            if node.op_type in MVM_OPS:
                out = self._mvm(node, env, ints, gen)
            elif node.op_type == "Constant":
                out = torch.as_tensor(numpy_helper.to_array(_attrs(node)["value"]))
            else:
                out = self._cmos(node, [self._get(n, env) if n else None for n in node.input])
            put(node.output[0], out)
        return {o.name: env[o.name] for o in self.graph.output}

    def _get(self, name: str, env: dict[str, torch.Tensor]) -> torch.Tensor:
        if name in env:
            return env[name]
        return torch.as_tensor(self.consts[name])

    def _mvm(
        self,
        node: onnx.NodeProto,
        env: dict[str, torch.Tensor],
        ints: dict[str, torch.Tensor],
        gen: torch.Generator | None,
    ) -> torch.Tensor:
        a = _attrs(node)
        xname = node.input[0]
        qx = self.qparams.get(xname)
        if qx is None or xname not in ints:
            raise UserError(
                f"{_where(node)}: onnxruntime's quantiser did not quantise its input '{xname}', so it "
                "is no integer MVM on CRAM"
            )
        x, xq = env[xname], ints[xname]
        w = self.param(node.input[1])
        b = self.param(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "Gemm":
            axis = 0 if a.get("transB", 0) else 1
        else:
            axis = 1
        live_sw = weight_scale(w, axis, live=True) if self.range_grad and gen is not None else None
        wd, wq, sw = fake_quant_weight(w, axis, scale=live_sw)
        sxw = qx.scale * sw  # [N]
        if b is not None:
            b = fake_quant_bias(b.reshape(-1).expand(sw.numel()), sxw)
        groups = 1
        if node.op_type == "Conv":
            kh, kw = a.get("kernel_shape", list(w.shape[2:]))
            strides = list(a.get("strides", [1, 1]))
            dil = list(a.get("dilations", [1, 1]))
            pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
            groups = int(a.get("group", 1))
            y = F.conv2d(_pad(x, (pl, pr, pt, pb)), wd, b, stride=strides, dilation=dil, groups=groups)
            if gen is None:
                return y
            patches = conv_patches(xq, qx.zp, (kh, kw), [pt, pl, pb, pr], strides, dil)
            wmat = wq.reshape(wq.shape[0], -1)
        elif node.op_type == "Gemm":
            wmat = wq if a.get("transB", 0) else wq.t()
            y = x @ (wd.t() if a.get("transB", 0) else wd)
            if b is not None:
                y = y + b
            if gen is None:
                return y
            patches = xq.reshape(xq.shape[0], 1, -1)
        else:
            wmat = wq.t()
            y = x @ wd
            if b is not None:
                y = y + b
            if gen is None:
                return y
            patches = xq.reshape(xq.shape[0], -1, xq.shape[-1])
        wbits, _ = bits_for(wmat.numpy().astype(np.int64), signed=True)
        spec = self.spec(wbits, qx.bits, qx.signed, patches.shape[-1] // groups, groups)
        scale = sxw
        if self.range_grad:
            assert live_sw is not None
            scale = self._live_scale(xname, qx) * live_sw.reshape(-1)
        err = _scaled(sample_error(patches, wmat, spec, gen, self.noise, self.noise_threads), scale, y.dtype)
        if node.op_type == "Conv":
            return y + err.transpose(1, 2).reshape(y.shape)
        return y + err.reshape(y.shape)

    def _cmos(self, node: onnx.NodeProto, args: list[torch.Tensor | None]) -> torch.Tensor:
        op, a = node.op_type, _attrs(node)
        x = args[0]
        assert x is not None
        if op in LAYOUT_OPS:
            return self._layout(node, x, args, a)
        if op == "Relu":
            return F.relu(x)
        if op == "LeakyRelu":
            return F.leaky_relu(x, float(a.get("alpha", 0.01)))
        if op == "Clip":
            lo = float(args[1]) if len(args) > 1 and args[1] is not None else float(a.get("min", -math.inf))
            hi = float(args[2]) if len(args) > 2 and args[2] is not None else float(a.get("max", math.inf))
            return torch.clamp(x, lo, hi)
        if op in ("Add", "Sub", "Mul"):
            y = args[1]
            assert y is not None
            return _ARITH[op](x, y.to(x.dtype))
        if op == "Softmax":
            return torch.softmax(x, dim=int(a.get("axis", -1 if self.opset >= 13 else 1)))
        if op == "GlobalAveragePool":
            return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        if op in ("MaxPool", "AveragePool"):
            return self._pool(node, x, a)
        raise UserError(f"{_where(node)}: not supported by cramc finetune")

    def _layout(
        self, node: onnx.NodeProto, x: torch.Tensor, args: list[torch.Tensor | None], a: dict[str, Any]
    ) -> torch.Tensor:
        """The LAYOUT_OPS: values move, none changes."""
        op = node.op_type
        if op in ("Identity", "Dropout"):
            return x
        if op == "Flatten":
            if int(a.get("axis", 1)) % x.dim() != 1:
                raise UserError(f"{_where(node)}: cramc finetune supports Flatten with axis=1 (keeps the batch axis)")
            return x.reshape(x.shape[0], -1)
        if op == "Reshape":
            shape = [int(v) for v in np.asarray(args[1]).reshape(-1)]
            if not a.get("allowzero", 0):
                shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
            if shape and shape[0] in (1, -1) and -1 not in shape[1:]:
                shape[0] = -1
            elif shape and shape[0] == 1:
                shape[0] = x.shape[0]
            return x.reshape(shape)
        if op == "Transpose":
            perm = list(a.get("perm", range(x.dim() - 1, -1, -1)))
            if perm[0] != 0:
                raise UserError(f"{_where(node)}: Transpose must keep the batch axis first")
            return x.permute(perm)
        assert op == "Concat", op
        return torch.cat([t for t in args if t is not None], dim=int(a["axis"]))

    def _pool(self, node: onnx.NodeProto, x: torch.Tensor, a: dict[str, Any]) -> torch.Tensor:
        k = list(a["kernel_shape"])
        if len(k) != 2 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UserError(f"{_where(node)}: cramc finetune supports 2-D pooling with explicit pads")
        strides = list(a.get("strides", [1, 1]))
        pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
        ceil = bool(a.get("ceil_mode", 0))
        if node.op_type == "MaxPool":
            dil = list(a.get("dilations", [1, 1]))
            return F.max_pool2d(_pad(x, (pl, pr, pt, pb), -math.inf), k, strides, 0, dil, ceil_mode=ceil)
        if (pt, pl) != (pb, pr):
            raise UserError(f"{_where(node)}: AveragePool with asymmetric pads")
        return F.avg_pool2d(
            x, k, strides, (pt, pl), ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0))
        )
