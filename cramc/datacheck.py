"""Checks of the numbers in user data files, shared by `compile --calibration`, `run --input` and `sweep`.

A NaN or an infinity in an input does not fail loudly downstream: numpy warns (RuntimeWarning) and the
quantiser or the simulator turns it into some integer, so the results are silently wrong.  Complex
numbers lose their imaginary part the same way.  Both are errors here, naming the file, the array and
how many values are bad.
"""

from __future__ import annotations

import numpy as np

from cramc.errors import UserError


def check_values(arrays: dict[str, np.ndarray], source: str) -> None:
    """Raise a UserError unless every array of `source` holds real, finite numbers."""
    for name, x in arrays.items():
        if np.iscomplexobj(x):
            raise UserError(f"{source}: array '{name}' holds complex numbers ({x.dtype}); cramc takes real inputs")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise UserError(f"{source}: array '{name}' holds {x.dtype} values, not numbers")
        if not np.issubdtype(x.dtype, np.floating):
            continue
        nan = int(np.isnan(x).sum())
        inf = int(np.isinf(x).sum())
        if nan or inf:
            what = " and ".join(f"{k} {w}" for k, w in ((nan, "NaN"), (inf, "infinite")) if k)
            raise UserError(f"{source}: array '{name}' holds {what} value(s) (of {x.size}); cramc needs finite numbers")
