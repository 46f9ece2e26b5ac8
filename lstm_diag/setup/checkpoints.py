"""Checkpoint files over a training run: which files, and the training step of each.

`find_checkpoints(args)` expands the command line's CKPT arguments (files, folders,
quoted globs) into files (a file found in a folder or by a pattern that holds no LSTM,
such as a data file, is skipped with a note), and gives each its training step, from the
first of:

1. the checkpoint's own metadata: `step`, `global_step` or `epoch` at the top level of a
   checkpoint dict (`{"model": ..., "step": 1200}`, also as a 0-d tensor), a safetensors
   `__metadata__` entry of that name, or a 0-d array of that name in an .npz;
2. the last number in the file name (`ckpt_step00600.pt` -> 600);
3. the order given (0, 1, 2, ...), used for every file as soon as one file has neither,
   since positions and step numbers cannot share an axis.

Only headers and scalar metadata are read here (formats are lazy); the arrays are read
when the checkpoint is analysed. Nothing is printed: `notes` says what a person should know.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..formats.sniff import EXTENSIONS, read_arrays

META_KEYS = ("step", "global_step", "epoch")  # in this order of preference
SUFFIXES = tuple(sorted(ext for ext, kind in EXTENSIONS.items() if kind in ("torch", "safetensors", "npz")))
_NUMBER = re.compile(r"\d+")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: float  # an int unless the metadata holds a fractional epoch
    source: str  # "meta:step" | "meta:global_step" | "meta:epoch" | "file name" | "order given"

    @property
    def source_text(self) -> str:
        """How the step was found, in words, for stderr."""
        if self.source.startswith("meta:"):
            return f"`{self.source[5:]}` in the checkpoint"
        return "the number in the file name" if self.source == "file name" else "the order given"


@dataclass
class Found:
    checkpoints: list[Checkpoint]  # sorted by step (ties: the order given)
    notes: list[str] = field(default_factory=list)


def expand(args: list[str] | tuple[str, ...]) -> list[tuple[Path, bool]]:
    """Files named, every checkpoint file in a folder named (sorted by name), and the
    matches of a glob the shell did not expand; each file once, in the order given, with
    whether it was found (in a folder or by a pattern) rather than named."""
    out: list[tuple[Path, bool]] = []
    for arg in args:
        p = Path(arg).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not files:
                raise InputError(f"{p}: a folder with no checkpoint files ({', '.join(SUFFIXES)})")
            out += [(f, True) for f in files]
        elif not p.exists() and _GLOB.search(str(arg)):
            files = sorted(Path(f) for f in glob.glob(str(p)) if Path(f).is_file())
            if not files:
                raise InputError(f"{arg}: no file matches this pattern")
            out += [(f, True) for f in files]
        else:
            out.append((p, False))  # read_arrays names a missing or unreadable file
    seen: set[Path] = set()
    unique = []
    for p, found in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((p, found))
    return unique


def _holds_lstm(p: Path) -> str | None:
    """None if the file holds an nn.LSTM, else why not (one line)."""
    from .weights import find_model

    try:
        find_model(p)
    except InputError as e:
        return str(e)
    return None


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return int(v) if float(v).is_integer() else float(v)


def step_from_meta(loaded) -> tuple[float, str] | None:
    """(step, key) from a file's top-level metadata, or None."""
    for key in META_KEYS:
        value = _number(loaded.meta.get(key))
        if value is None and key in loaded.info and loaded.info[key].shape == ():  # a 0-d array or tensor
            value = _number(loaded.arrays[key].item())
        if value is not None:
            return value, key
    return None


def step_from_name(path: Path) -> int | None:
    """The last number in the file's name without its extension (`run3-step120.pt` -> 120)."""
    numbers = _NUMBER.findall(path.name.split(".")[0])
    return int(numbers[-1]) if numbers else None


def find_checkpoints(args: list[str] | tuple[str, ...]) -> Found:
    """The checkpoints of `args` with their steps, sorted by step; see the module docstring."""
    notes = []
    paths = []
    for p, found in expand(args):
        why = _holds_lstm(p) if found else None
        if why is None:
            paths.append(p)
        else:  # a data file or an export beside the checkpoints in a folder
            notes.append(f"note: skipped {p} (no LSTM: {why.removeprefix(f'{p}: ')})")
    if not paths:
        raise InputError("no checkpoint with an LSTM among " + ", ".join(args)[:200])
    steps: list[tuple[float, str] | None] = []
    for p in paths:
        meta = step_from_meta(read_arrays(p, "weights"))
        named = step_from_name(p)
        steps.append(
            (meta[0], f"meta:{meta[1]}") if meta else (named, "file name") if named is not None else None
        )
    if any(s is None for s in steps):
        unnamed = next(p for p, s in zip(paths, steps, strict=True) if s is None)
        if len(paths) > 1:
            notes.append(
                f"note: {unnamed.name} has no step, global_step or epoch and no number in its name: "
                "every checkpoint's step is its position in the order given"
            )
        steps = [(k, "order given") for k in range(len(paths))]
    kinds = sorted({src for _, src in steps if src.startswith("meta:")})
    if len(kinds) > 1:
        notes.append(f"warning: the steps come from different metadata ({', '.join(k[5:] for k in kinds)})")
    found = [Checkpoint(p, s, src) for p, (s, src) in zip(paths, steps, strict=True)]
    order = sorted(range(len(found)), key=lambda k: found[k].step)
    values = [c.step for c in found]
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        notes.append(
            f"warning: several checkpoints have step {', '.join(f'{v:g}' for v in duplicates)}; "
            "they are kept in the order given"
        )
    return Found([found[k] for k in order], notes)
