"""The fault model as data: rates, presets, TOML loading and validation (cramc/errmodel/model.py).

It sits beneath every user of the model: the compiler and the IR (``--ecc
auto``, the statistical mode), fine-tuning, sweeps and the simulator, whose
samplers (cramc/sim/faults.py) draw the faults this model describes.  It
imports nothing but the ISA's opcode table (for the gate names) and
cramc.errors.
"""

from __future__ import annotations

from cramc.errmodel.model import (
    GATE_NAMES,
    PRESET_DIR,
    Defects,
    FaultModel,
    Rate,
    load_error_model,
    load_preset,
    parse_error_model,
    preset_names,
)

__all__ = [
    "GATE_NAMES",
    "PRESET_DIR",
    "Defects",
    "FaultModel",
    "Rate",
    "load_error_model",
    "load_preset",
    "parse_error_model",
    "preset_names",
]
