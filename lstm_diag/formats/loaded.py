"""What every reader returns: named arrays under their names in the file, read lazily.

`LoadedFile.arrays` maps each name to its array; an array is read from disk (and
converted: bfloat16 -> float32, the file's byte order) only when it is first looked
up, so that finding the model in a 10 GB checkpoint reads its headers, and analysing
it reads only the arrays the model needs. `LoadedFile.info` gives every array's shape
and stored dtype without reading anything.

Checkpoint dicts (`{"model": state_dict, "optimizer": ..., "epoch": 3}`) are flattened
by `flatten` into dotted names (`model.lstm.weight_ih_l0`, `optimizer.state.0.exp_avg`);
their scalar entries (`epoch`, `step`, `optimizer.param_groups.0.lr`) go to `meta`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .converted import Converted

# Bounds on the structure of a checkpoint tree: a pickle or a JSON header of a few KB
# could otherwise describe exponentially many entries through shared sub-objects.
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_META = 500
MAX_META_TEXT = 200


@dataclass(frozen=True)
class ArrayInfo:
    """An array's shape and dtype as stored (`bfloat16` for bf16; read as float32)."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class LazyArrays(Mapping):
    """name -> np.ndarray, each read on first access (then cached). Arrays from PyTorch
    and safetensors files are read-only views of the file's buffer: copy before writing."""

    def __init__(self, info: Mapping[str, ArrayInfo], read: Callable[[str], np.ndarray]):
        self._info = dict(info)
        self._read = read
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._info:
            raise KeyError(name)
        if name not in self._cache:
            self._cache[name] = self._read(name)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._info)

    def __len__(self) -> int:
        return len(self._info)

    def __repr__(self) -> str:
        return f"LazyArrays({len(self._info)} arrays, {len(self._cache)} read)"


@dataclass
class LoadedFile:
    """A weights (or data) file as read: arrays by name, scalar metadata, format.

    arrays:   name -> array (lazy, see `LazyArrays`), names as in the file, nested dicts
              flattened with dots.
    info:     name -> ArrayInfo (shape, stored dtype), known without reading the data.
    meta:     scalar entries of a checkpoint dict (`epoch`, `step`, ...) and string
              metadata (safetensors `__metadata__`), under dotted names.
    format:   "torch", "safetensors", "npz" (or a reader added later: "keras", "onnx").
    sections: top-level keys of a checkpoint dict whose values hold tensors (e.g.
              ("model", "optimizer")); empty when the file is a flat state dict.
    skipped:  entries that are neither arrays nor scalars (None, lists of ints...) with
              what they were, for `inspect`.
    note:     one line when the extension disagrees with the content, else None.
    converted: for files in another framework's layout (Keras, ONNX): the source layout,
              where each PyTorch-named array came from, notes, and which steps the head
              reads (formats/converted.py); None for PyTorch-named files.
    """

    path: Path
    format: str
    arrays: Mapping[str, np.ndarray]
    info: dict[str, ArrayInfo]
    meta: dict[str, bool | int | float | str] = field(default_factory=dict)
    sections: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    converted: Converted | None = None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.info.items()}


def eager(path: Path, fmt: str, arrays: dict[str, np.ndarray], **kw: Any) -> LoadedFile:
    """A LoadedFile over arrays already in memory (.npz)."""
    info = {k: ArrayInfo(tuple(int(s) for s in a.shape), str(a.dtype)) for k, a in arrays.items()}
    return LoadedFile(path=path, format=fmt, arrays=arrays, info=info, **kw)


def from_converted(path: Path, fmt: str, conv: Converted) -> LoadedFile:
    """A Keras or ONNX model's conversion (formats/converted.py) as a LoadedFile."""
    return eager(path, fmt, conv.arrays, meta=conv.meta(), converted=conv)


@dataclass
class Flat:
    """A checkpoint tree flattened: leaves that are arrays, scalars, and the rest."""

    leaves: dict[str, Any] = field(default_factory=dict)  # name -> an array leaf (reader's type)
    meta: dict[str, bool | int | float | str] = field(default_factory=dict)
    sections: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)


def _scalar(v: Any) -> bool | int | float | str | None:
    if isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)  # meta stays strict JSON
    if isinstance(v, str):
        return v if len(v) <= MAX_META_TEXT else v[:MAX_META_TEXT] + f"... ({len(v)} characters)"
    if isinstance(v, np.generic) and v.dtype.kind in "biuf":
        return v.item()
    return None


def flatten(tree: Any, path: Path, is_array: Callable[[Any], bool]) -> Flat:
    """Dotted names for every leaf of nested dicts/lists; bounded in depth, size and cycles."""
    out = Flat()
    budget = [MAX_NODES]
    on_path: set[int] = set()

    def walk(node: Any, name: str, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise InputError(f"{path}: the file's structure has more than {MAX_NODES} entries; refused")
        if depth > MAX_DEPTH:
            raise InputError(f"{path}: {name}: nested more than {MAX_DEPTH} levels deep; refused")
        if is_array(node):
            name = name or "tensor"  # torch.save(tensor): one unnamed array
            if name in out.leaves:
                raise InputError(f"{path}: two entries are both named {name!r} once flattened")
            out.leaves[name] = node
            return
        if isinstance(node, Mapping) or isinstance(node, (list, tuple)):
            if id(node) in on_path:
                raise InputError(f"{path}: {name or 'the top level'} contains itself; refused")
            on_path.add(id(node))
            if not isinstance(node, Mapping) and not any(
                is_array(v) or isinstance(v, (Mapping, list, tuple)) for v in node
            ):  # a list of plain values (betas, param ids): not metadata one by one
                on_path.discard(id(node))
                out.skipped[name] = f"a list of {len(node)} values" if node else "an empty list"
                return
            items = node.items() if isinstance(node, Mapping) else enumerate(node)
            for k, v in items:
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    out.skipped[f"{name}.<{type(k).__name__} key>"] = "a key that is not a string"
                    continue
                walk(v, f"{name}.{k}" if name else str(k), depth + 1)
            on_path.discard(id(node))
            return
        s = _scalar(node)
        if s is not None:
            if len(out.meta) < MAX_META:
                out.meta[name] = s
            return
        out.skipped[name] = "None" if node is None else f"a {type(node).__name__}"

    walk(tree, "", 0)
    if isinstance(tree, Mapping):
        out.sections = tuple(
            str(k)
            for k, v in tree.items()
            if isinstance(v, Mapping) and any(n.startswith(f"{k}.") for n in out.leaves)
        )
    return out
