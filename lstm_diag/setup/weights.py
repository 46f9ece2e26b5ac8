"""Weight files -> parameters in the engine's layout, checked against the model.

Loading checks once, at the border, and raises `InputError` naming the file and
the array, e.g. `weights.npz: weight_hh_l0 has shape (64, 8), expected (128, 32)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.engine import Spec
from ..errors import InputError
from ..formats.npz import read_npz


def check_numeric(a: np.ndarray, p: Path, name: str, what: str = "a numeric array") -> None:
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise InputError(f"{p}: {name} has dtype {a.dtype}, expected {what}")


def _match_names(found: list[str], expected: list[str], path: Path) -> dict[str, str]:
    """Map expected PyTorch names to keys in the file, allowing a common prefix (`lstm.`)."""
    mapping, used = {}, set()
    for name in expected:
        hits = [k for k in found if k == name or k.endswith("." + name)]
        if len(hits) > 1:
            raise InputError(f"{path}: {name} matches several arrays: {', '.join(sorted(hits))}")
        if hits:
            mapping[name] = hits[0]
            used.add(hits[0])
    missing = [n for n in expected if n not in mapping]
    extra = [k for k in found if k not in used]
    if missing:
        raise InputError(
            f"{path}: missing {', '.join(missing)} (the config's model needs "
            f"{len(expected)} arrays: {', '.join(expected)})"
        )
    if extra:
        raise InputError(f"{path}: unexpected arrays {', '.join(extra)} for this model")
    return mapping


def load_weights(path: str | Path, spec: Spec, dtype: str) -> dict[str, np.ndarray]:
    """Weights under PyTorch names (`lstm.weight_ih_l0` or `weight_ih_l0`, `head.weight`)."""
    p = Path(path)
    arrays = read_npz(p, "weights")
    shapes = spec.param_shapes()
    mapping = _match_names(list(arrays), list(shapes), p)
    params = {}
    for name, shape in shapes.items():
        a = arrays[mapping[name]]
        if a.shape != shape:
            raise InputError(f"{p}: {mapping[name]} has shape {a.shape}, expected {shape} from the config")
        check_numeric(a, p, mapping[name], "a float array")
        params[name] = np.ascontiguousarray(a, dtype=dtype)
    return params
