"""Data files -> (x, y) checked against the model and the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.engine import Spec
from ..errors import InputError
from ..formats.npz import read_npz
from .weights import check_numeric


def load_data(path: str | Path, spec: Spec, loss: str, target: str, dtype: str):
    """x (B, T, I) and y from an .npz, checked against the model and the loss."""
    p = Path(path)
    arrays = read_npz(p, "data")
    for key in ("x", "y"):
        if key not in arrays:
            raise InputError(f"{p}: missing array {key!r} (found: {', '.join(arrays) or 'none'})")
    x, y = arrays["x"], arrays["y"]
    check_numeric(x, p, "x")
    check_numeric(y, p, "y")
    if x.ndim != 3 or x.shape[2] != spec.input_size:
        raise InputError(
            f"{p}: x has shape {x.shape}, expected (B, T, {spec.input_size}) (model.input_size)"
        )
    B, T, _ = x.shape
    if B == 0 or T == 0:
        raise InputError(f"{p}: x has shape {x.shape}, needs at least one sample and one step")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{p}: x holds non-finite values (NaN or Inf)")
    lead = (B,) if target == "last" else (B, T)
    if loss == "mse":
        want = lead + (spec.output_size,)
        if spec.output_size == 1 and y.shape == lead:
            y = y[..., None]  # one output: (B,) or (B, T) reads as (B, 1) or (B, T, 1)
        if y.shape != want:
            raise InputError(f"{p}: y has shape {y.shape}, expected {want} for mse with target {target}")
        if not np.all(np.isfinite(y)):
            raise InputError(f"{p}: y holds non-finite values (NaN or Inf)")
        y = y.astype(dtype)
    else:
        if y.shape != lead:
            raise InputError(
                f"{p}: y has shape {y.shape}, expected {lead} class ids "
                f"for cross_entropy with target {target}"
            )
        if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
            raise InputError(f"{p}: y must hold integer class ids for cross_entropy")
        if y.size and (y.min() < 0 or y.max() >= spec.output_size):
            raise InputError(
                f"{p}: y has class ids in [{int(y.min())}, {int(y.max())}], "
                f"expected 0..{spec.output_size - 1} (model.output_size)"
            )
        y = y.astype(np.int64)
    return x.astype(dtype), y


def read_logits(path: str | Path) -> np.ndarray | None:
    """The model's own outputs saved with the data (`logits`, (B, O) or (B, T, O)), or None.
    Only that member of the .npz is read."""
    import zipfile

    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "logits" not in z.files:
                return None
            logits = z["logits"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{p}: cannot read logits ({e.__class__.__name__}: {e})") from None
    if logits.dtype.kind != "f" or not np.all(np.isfinite(logits)):
        raise InputError(f"{p}: logits must be finite floats (the model's outputs), got dtype {logits.dtype}")
    return logits
