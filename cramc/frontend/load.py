"""Load an ONNX model safely: clear errors for corrupt files and unsafe external data."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from cramc.errors import UserError


def load_model(path: str) -> onnx.ModelProto:
    """Load, check external-data paths, run the ONNX checker; raise UserError on any problem."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{path}: is a directory, not an ONNX model file")
    if not p.is_file():
        raise UserError(f"{path}: no such model file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        raise UserError(f"{path}: not a valid ONNX model (corrupt or truncated file: {e})") from None
    if not model.graph.node and not model.graph.output:
        raise UserError(f"{path}: not a valid ONNX model (empty graph; corrupt or truncated file?)")
    base = p.resolve().parent
    has_external = False
    for t in _all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            has_external = True
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            target = (base / loc).resolve()
            if os.path.isabs(loc) or base not in target.parents:
                raise UserError(
                    f"{path}: initializer '{t.name}' points to external data '{loc}' outside the model's folder"
                )
            if not target.is_file():
                raise UserError(f"{path}: initializer '{t.name}': external data file '{loc}' is missing")
    if has_external:
        try:
            onnx.load_external_data_for_model(model, str(base))
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read external data: {e}") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
        raise UserError(f"{path}: the ONNX checker rejects the model: {first}") from None
    return model


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    out = list(model.graph.initializer)
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                out.append(a.t)
    return out
