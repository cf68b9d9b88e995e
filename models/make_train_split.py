"""Write the training split of the digits data, for `cramc finetune`.

The split is the one models/train_digits.py trains on (load_digits, X/16 as
float32, train_test_split(test_size=0.2, random_state=0, stratify=y)):

* ``digits_train_x_flat.npz``: key ``input``, float32 [1437, 64] (MLP input);
* ``digits_train_x_img.npz``: key ``input``, float32 [1437, 1, 8, 8] (CNN input);
* ``digits_train_labels.npy``: int64 [1437].

Its first 64 samples are the calibration set ``digits_calib_*.npz``, which
the script checks.

Usage::

    python models/make_train_split.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from train_digits import N_CALIB, load_split

MODELS_DIR = Path(__file__).resolve().parent


def main() -> None:
    x_train, _, y_train, _ = load_split()
    calib = np.load(MODELS_DIR / "digits_calib_flat.npz")["input"]
    if not np.array_equal(calib, x_train[:N_CALIB]):
        raise RuntimeError("the training split does not start with digits_calib_flat.npz: regenerate both")
    np.savez(MODELS_DIR / "digits_train_x_flat.npz", input=x_train)
    np.savez(MODELS_DIR / "digits_train_x_img.npz", input=x_train.reshape(-1, 1, 8, 8))
    np.save(MODELS_DIR / "digits_train_labels.npy", y_train)
    print(f"wrote {len(y_train)} training samples to {MODELS_DIR}/digits_train_*")


if __name__ == "__main__":
    main()
