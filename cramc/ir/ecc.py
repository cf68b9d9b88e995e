"""The error-correction schemes of a partial-product bit: their codes in the IR and what they occupy.

An MVM's ``ecc=[...]`` annotation (written by the insert-ecc and auto-ecc passes) holds one code
per partial-product bit (b, c), b major; see cramc.ir.passes.insert_ecc for what each scheme does
and docs/error-correction.md for what it costs.  The tile geometry (cramc.ir.tiling) reads the
scratch columns from here, so the IR layer does not depend on a pass.
"""

from __future__ import annotations

#: scheme name -> its code in ``ecc=[...]``
SCHEMES = {"none": 0, "tmr": 1, "vote": 2, "dup": 3}
NAMES = {v: k for k, v in SCHEMES.items()}
#: Scratch columns each scheme needs (copies of the partial product, plus the in-array vote).
SCRATCH = {0: 1, 1: 4, 2: 3, 3: 2}
