"""cramc: compile ONNX networks to CRAM-ER programs and simulate them with gate faults."""

from __future__ import annotations

__version__ = "0.1.0"
