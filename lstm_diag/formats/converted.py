"""What the Keras and ONNX readers hand on: a model converted to PyTorch `nn.LSTM` names.

Both formats hold the LSTM equations of docs/equations.md under other layouts
(docs/formats.md): the readers convert exactly (transposes, gate-block permutations,
a zero second bias) and keep a record of where each array came from, for `inspect`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.names import param_name
from ..errors import InputError

MAX_ARRAY_BYTES = 4 * 2**30  # one weight array of an LSTM model; larger is refused before reading


@dataclass
class Converted:
    """arrays:  PyTorch names -> arrays (`lstm.weight_ih_l0` (4H, I), ..., `head.weight` (O, D*H),
                `embedding.weight` (V, I)), gate order i, f, g, o.
    source:  one line on the file's own layout.
    mapping: one line per array: PyTorch name <- where it came from and how.
    notes:   what else was found and how it was read (weightless layers, ignored training-only
             settings, initial states).
    target:  "last" / "all" when the file says which steps the head reads, else None.
    head_activation: "softmax" when the model's output is softmax(head), else None."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    mapping: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    target: str | None = None
    head_activation: str | None = None

    def put(self, name: str, array: np.ndarray, origin: str) -> None:
        self.arrays[name] = array
        self.mapping.append(f"{name} {tuple(array.shape)} <- {origin}")

    def meta(self) -> dict[str, Any]:
        m: dict[str, Any] = {}
        if self.target is not None:
            m["head reads"] = "the last step" if self.target == "last" else "every step"
        if self.head_activation is not None:
            m["head activation"] = self.head_activation
        return m


def check_stacked(who: str, h: int, H: int | None, weight: str, reads: int, width: int | None) -> None:
    """One LSTM layer of a converted stack: its hidden size h must be the layers' below (H,
    None for the first: nn.LSTM and the engine have one hidden size), and its input weight
    (`weight`, e.g. "kernel (8, 64)") must read the `width` features below it (None: any)."""
    if H is not None and h != H:
        raise InputError(
            f"{who} has hidden size {h} and the LSTM below it {H}: nn.LSTM (and the engine) "
            "need one hidden size for all layers"
        )
    if width is not None and reads != width:
        raise InputError(f"{who}: {weight} does not read the {width} features below it")


def lstm_name(kind: str, layer: int, reverse: bool | int = False) -> str:
    """The converted LSTM's parameter names: `lstm.` + nn.LSTM's (core/names.py), e.g.
    lstm_name("weight_hh", 1, True) -> "lstm.weight_hh_l1_reverse"."""
    return "lstm." + param_name(kind, layer, reverse)


def reorder_blocks(a: np.ndarray, order: list[int], axis: int = 0) -> np.ndarray:
    """Gate blocks of a (…4H…) array: block j of the result is block order[j] of `a`."""
    H = a.shape[axis] // 4
    blocks = np.split(a, 4, axis=axis) if H else [a] * 4
    return np.ascontiguousarray(np.concatenate([blocks[j] for j in order], axis=axis))


def need(module: str, extra: str, path: Path):
    """Import an optional library or say which extra to install, in one line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(
            f"{path}: reading this file needs the {module} package: pip install 'lstm-diag[{extra}]'"
        ) from None


def float_array(a: np.ndarray, path: Path, where: str) -> np.ndarray:
    """A weight as a float array (float16 widened exactly to float32); others refused."""
    if a.dtype.kind != "f":
        raise InputError(f"{path}: {where} has dtype {a.dtype}, expected floating-point weights")
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{path}: {where} holds non-finite values (NaN or Inf)")
    return a


def check_size(shape: tuple[int, ...], itemsize: int, path: Path, where: str) -> None:
    n = itemsize
    for s in shape:
        n *= int(s)
    if n > MAX_ARRAY_BYTES:
        raise InputError(
            f"{path}: {where} declares {n / 2**30:.1f} GiB ({shape}); limit {MAX_ARRAY_BYTES / 2**30:.0f} GiB"
        )
