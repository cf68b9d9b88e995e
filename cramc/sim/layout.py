"""Data files <-> the program's tensors: names and the sample axis, as onnxruntime lays them out.

Inside a program every input and output is a per-sample tensor `[*shape]` and the simulator stacks the
samples on a new leading axis, `[N, *shape]`.  Data files (`cramc run --input/--output`) use the
model's layout instead:

- names: the key of an array is the tensor's ONNX name (`.input x : ... name="gpu_0/data_0"`), the
  program's own name when the declaration gives none;
- samples: where a declaration names its batch axis (`batch=0`, an axis of size 1), the samples lie on
  that axis, as in the `[N, 784] -> [N, 10]` arrays onnxruntime takes and gives; inputs may also come
  with the sample axis in front of the batch axis (`[N, 1, 784]`).  Without `batch=`, the samples are a
  leading axis in front of the declared shape (and, as before, a leading 1 of the declared shape may be
  left out of input data).
"""

from __future__ import annotations

import numpy as np

from cramc.errors import UserError
from cramc.isa.linked import IOSpec, Linked


def user_shape(spec: IOSpec) -> str:
    """The shape a data file holds for `spec`, with N for the samples: `[N, 784]`, `[N, 1, 8, 8]`."""
    dims = [str(d) for d in spec.shape]
    if spec.batch is None:
        dims.insert(0, "N")
    else:
        dims[spec.batch] = "N"
    return "[" + ", ".join(dims) + "]"


def _to_program(spec: IOSpec, x: np.ndarray) -> np.ndarray | None:
    """`x` in the program's layout `[N, *shape]`, or None if its shape fits neither layout."""
    shape = tuple(spec.shape)
    got = tuple(x.shape)
    if x.ndim >= 1 and got[1:] == shape:  # samples in front (of the batch axis, if there is one)
        return x
    if spec.batch is not None:
        b = spec.batch
        rest = shape[:b] + shape[b + 1 :]
        if x.ndim == len(shape) and got[:b] + got[b + 1 :] == rest:  # samples on the batch axis
            return np.expand_dims(np.moveaxis(x, b, 0), b + 1)
    elif shape[:1] == (1,) and x.ndim >= 1 and got[1:] == shape[1:]:  # a leading batch 1 left out
        return x.reshape(got[0], *shape)
    return None


def program_inputs(linked: Linked, data: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """The arrays of a data file (`source`, for messages) as the program's inputs, `[N, *shape]` each."""
    keys = {s.key: s for s in linked.inputs}
    extra = sorted(set(data) - set(keys))
    if extra:
        raise UserError(
            f"{source}: no program input is named {', '.join(repr(k) for k in extra)} "
            f"(the program's inputs: {', '.join(repr(k) for k in keys) or 'none'})"
        )
    out: dict[str, np.ndarray] = {}
    n: int | None = None
    first = ""
    for spec in linked.inputs:
        if spec.key not in data:
            raise UserError(f"{source}: no array named '{spec.key}' (input of shape {user_shape(spec)})")
        x = data[spec.key]
        y = _to_program(spec, x)
        if y is None:
            raise UserError(
                f"{source}: input '{spec.key}' has shape {list(x.shape)}; expected {user_shape(spec)} (N samples)"
            )
        if y.shape[0] == 0:
            raise UserError(f"{source}: input '{spec.key}' holds no samples (shape {list(x.shape)})")
        if n is not None and y.shape[0] != n:
            raise UserError(f"{source}: input '{spec.key}' has {y.shape[0]} samples, input '{first}' has {n}")
        n, first = int(y.shape[0]), spec.key
        out[spec.name] = y
    return out


def user_outputs(linked: Linked, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The program's outputs `[N, *shape]` as a data file holds them: ONNX names, samples on the batch axis."""
    out: dict[str, np.ndarray] = {}
    for spec in linked.outputs:
        y = outputs[spec.name]
        if spec.batch is not None:
            y = np.moveaxis(np.squeeze(y, axis=spec.batch + 1), 0, spec.batch)
        out[spec.key] = y
    return out
