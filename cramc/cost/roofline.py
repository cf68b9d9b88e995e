"""CPU and GPU baselines: the work of an ONNX model, roofline latency and energy, onnxruntime's measured time.

The work of a model, per inference (batch 1), layer by layer:
- MACs of every Conv, ConvInteger, QLinearConv, Gemm, MatMul, MatMulInteger and
  QLinearMatMul (output elements x reduction length);
- bytes: the layer's weights plus, if ``[roofline] activations_from_memory``,
  its input and output activations, at one byte per value (int8, the
  precision the CRAM program computes in);
- every other node: one operation per output element, no memory traffic
  (assumed fused into the neighbouring layers).

Roofline per layer: time = max(2 x MACs / peak_ops_per_s, bytes /
memory_bandwidth) + layer_overhead_s; energy = power_w x time, plus bytes x 8
x energy per bit of the memory where the power figure leaves the memory out.
This is a best case for the CPU or GPU: it assumes peak throughput whenever
the layer is compute-bound and peak bandwidth otherwise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cramc.cost.params import Tech
from cramc.errors import UserError

MAC_OPS = {"Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}


@dataclass(frozen=True)
class LayerWork:
    name: str
    op_type: str
    macs: int
    ops: int  # operations that are not MACs (element-wise)
    weight_values: int
    in_values: int
    out_values: int

    def bytes(self, activations: bool, value_bytes: float = 1.0) -> float:
        vals = self.weight_values + ((self.in_values + self.out_values) if activations else 0)
        return vals * value_bytes


def _static_model(path: str) -> Any:
    import onnx

    try:
        m = onnx.load(path)
    except Exception as e:  # noqa: BLE001 - onnx raises several types for bad files
        raise UserError(f"{path}: cannot load the ONNX model: {e}") from None
    for vi in (*m.graph.input, *m.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param or not d.dim_value:
                d.dim_value = 1
    return onnx.shape_inference.infer_shapes(m)


def model_work(path: str) -> list[LayerWork]:
    """The layers of an ONNX model with their MACs and values moved, batch 1."""
    from onnx import numpy_helper

    m = _static_model(path)
    g = m.graph
    inits = {t.name: tuple(t.dims) for t in g.initializer}
    consts = set(inits)
    for n in g.node:
        if n.op_type == "Constant":
            consts.update(n.output)
            for a in n.attribute:
                if a.name == "value":
                    inits[n.output[0]] = tuple(numpy_helper.to_array(a.t).shape)
    shapes: dict[str, tuple[int, ...]] = dict(inits)
    for vi in (*g.input, *g.value_info, *g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)

    def size(name: str) -> int:
        s = shapes.get(name)
        return int(np.prod(s, dtype=np.int64)) if s is not None else 0

    out: list[LayerWork] = []
    for i, n in enumerate(g.node):
        if n.op_type in ("Constant", "Identity"):
            continue
        name = n.name or f"{n.op_type}_{i}"
        outs = sum(size(o) for o in n.output)
        if n.op_type in MAC_OPS:
            ins = [x for x in n.input if x]
            # data input and weight input by position (QLinear ops interleave scales and zero points)
            if n.op_type == "QLinearConv" or n.op_type == "QLinearMatMul":
                x, w = ins[0], ins[3]
            else:
                x, w = ins[0], ins[1]
            wshape = shapes.get(w)
            if wshape is None:
                raise UserError(f"{path}: shape of {w} (input of {name}) unknown")
            if n.op_type in ("Conv", "ConvInteger", "QLinearConv"):
                red = int(np.prod(wshape[1:], dtype=np.int64))  # C/groups x kh x kw
            elif n.op_type == "Gemm":
                trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
                red = wshape[1] if trans_b else wshape[0]
            else:
                red = wshape[-2]
            wvals = size(w) if w in consts else 0
            xvals = size(x) + (0 if w in consts else size(w))
            out.append(LayerWork(name, n.op_type, outs * red, 0, wvals, xvals, outs))
        else:
            out.append(LayerWork(name, n.op_type, 0, outs, 0, 0, 0))
    return out


@dataclass(frozen=True)
class DeviceEstimate:
    device: str
    label: str
    latency_s: float
    energy_j: float
    macs: int
    bytes: float
    bound: str  # "compute", "memory" or "mixed": which roof limits most of the time
    die_area_mm2: float

    @property
    def edp_js(self) -> float:
        return self.latency_s * self.energy_j

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "label": self.label,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "edp_js": self.edp_js,
            "macs": self.macs,
            "bytes": self.bytes,
            "bound": self.bound,
            "area_mm2": self.die_area_mm2,
        }


def roofline(work: list[LayerWork], tech: Tech, device: str) -> DeviceEstimate:
    d = tech.devices().get(device)
    if d is None:
        raise UserError(f"technology file: no [device.{device}] (have: {', '.join(tech.devices())})")
    peak = float(d["peak_ops_per_s"])
    bw = float(d["memory_bandwidth_bytes_per_s"])
    power = float(d["power_w"])
    overhead = float(d.get("layer_overhead_s", 0.0))
    acts = bool(tech.data.get("roofline", {}).get("activations_from_memory", True))
    e_bit = tech.num(d.get("memory", "hbm"), "energy_j_per_bit")
    t = 0.0
    t_compute = t_memory = 0.0
    nbytes = 0.0
    macs = 0
    for w in work:
        b = w.bytes(acts)
        tc = (2 * w.macs + w.ops) / peak
        tm = b / bw
        t += max(tc, tm) + (overhead if w.macs else 0.0)
        t_compute += tc if tc >= tm else 0.0
        t_memory += tm if tm > tc else 0.0
        nbytes += b
        macs += w.macs
    energy = power * t
    if not d.get("memory_energy_in_power", False):
        energy += nbytes * 8 * e_bit
    bound = "compute" if t_compute > 2 * t_memory else "memory" if t_memory > 2 * t_compute else "mixed"
    return DeviceEstimate(
        device, str(d.get("label", device)), t, energy, macs, nbytes, bound, float(d.get("die_area_mm2", math.nan))
    )


#: Nodes that only relabel a tensor's shape: no kernel is launched for them.
SHAPE_OPS = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Constant"}


def batched(work: list[LayerWork], batch: int) -> list[LayerWork]:
    """The work of one batch of `batch` inferences: MACs, operations and activations scale, weights do not."""
    if batch < 1:
        raise UserError(f"batch must be at least 1, got {batch}")
    return [
        LayerWork(
            w.name, w.op_type, w.macs * batch, w.ops * batch, w.weight_values, w.in_values * batch, w.out_values * batch
        )
        for w in work
    ]


def gpu_launch_model(work: list[LayerWork], tech: Tech, device: str = "gpu", batch: int = 1) -> DeviceEstimate:
    """A GPU as it runs at small batch: one kernel per layer, each paying a launch, on part of the chip; per inference.

    Per kernel (every node of the model but the shape-only ones, SHAPE_OPS; element-wise nodes are
    kernels of their own, as in an unfused runtime), for one batch of `batch` inferences:

        blocks = ceil(outputs / outputs_per_block);  u = min(1, blocks / sm_count)
        t_exec = max((2 x MACs + ops) / (peak_ops_per_s x u), bytes / (memory_bandwidth x u))
        t      = max(kernel_launch_s, t_exec)

    so a kernel too small to fill the streaming multiprocessors gets only the fraction u of the
    peak throughput and bandwidth (utilisation by SM occupancy, the wave-quantisation view of
    NVIDIA's GEMM performance guide), and a kernel shorter than the launch waits for the host's
    next launch (launches are asynchronous, so they overlap execution: the longer of the two
    counts).  bytes are the roofline's (weights + activations, one byte per value; element-wise
    nodes move none).  Energy: power_w x t_exec + launch_power_w x (t - t_exec), plus the memory
    energy where power_w leaves it out.  Time and energy are the batch's divided by `batch`.
    The [device.NAME] keys kernel_launch_s, sm_count, outputs_per_block and launch_power_w hold
    the figures (default.toml gives their sources).
    """
    d = tech.devices().get(device)
    if d is None:
        raise UserError(f"technology file: no [device.{device}] (have: {', '.join(tech.devices())})")
    for key in ("kernel_launch_s", "sm_count", "outputs_per_block"):
        if key not in d:
            raise UserError(f"technology file: [device.{device}] needs {key} = ... for the launch model")
    peak = float(d["peak_ops_per_s"])
    bw = float(d["memory_bandwidth_bytes_per_s"])
    power = float(d["power_w"])
    launch = float(d["kernel_launch_s"])
    sms = float(d["sm_count"])
    per_block = float(d["outputs_per_block"])
    p_wait = float(d.get("launch_power_w", power))
    acts = bool(tech.data.get("roofline", {}).get("activations_from_memory", True))
    e_bit = tech.num(d.get("memory", "hbm"), "energy_j_per_bit")
    t = energy = nbytes = 0.0
    t_launch_bound = 0.0
    macs = 0
    for w in batched(work, batch):
        if w.op_type in SHAPE_OPS:
            continue
        outputs = w.out_values if w.macs else w.ops
        u = min(1.0, math.ceil(max(outputs, 1) / per_block) / sms)
        b = w.bytes(acts)
        t_exec = max((2 * w.macs + w.ops) / (peak * u), b / (bw * u))
        tk = max(launch, t_exec)
        t += tk
        t_launch_bound += tk if launch > t_exec else 0.0
        energy += power * t_exec + p_wait * (tk - t_exec)
        nbytes += b
        macs += w.macs
    if not d.get("memory_energy_in_power", False):
        energy += nbytes * 8 * e_bit
    bound = "launch" if t_launch_bound > 0.5 * t else "execution"
    label = f"{d.get('label', device)}, batch-{batch} model (launch + SM utilisation)"
    return DeviceEstimate(
        device,
        label,
        t / batch,
        energy / batch,
        macs // batch,
        nbytes / batch,
        bound,
        float(d.get("die_area_mm2", math.nan)),
    )


def measure_onnxruntime(path: str, min_time_s: float = 1.0, warmup: int = 5, seed: int = 0) -> float:
    """Median wall time of one batch-1 inference of the model with onnxruntime on this machine's CPU."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dt = np.float32 if "float" in i.type else np.int64
        feed[i.name] = rng.random(shape).astype(dt)
    for _ in range(warmup):
        sess.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time_s or len(times) < 5:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
