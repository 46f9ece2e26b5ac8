"""Which implementation runs the engine's step loops (config `engine:`, `--engine`).

- numpy: the NumPy loops of core/engine.py, the reference; always available.
- fast: per-step fused numba kernels (core/fused.py), GEMMs still in BLAS; needs the
  optional extra `fast` (`pip install 'lstm-diag[fast]'`).
- auto: fast when numba is importable, else numpy.

Selecting compiles the kernels for a dtype on first use (numba caches them on disk, in
`__pycache__` next to the package or wherever the environment variable `NUMBA_CACHE_DIR`
says) and reports how long that took, so that the command layer can say so; nothing
here prints. numba is imported only here, only when fast or auto is selected, never
for `--help`.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from . import diagnostics, engine

ENGINES = ("numpy", "fast", "auto")
EXTRA_HINT = "pip install 'lstm-diag[fast]'"


@dataclass(frozen=True)
class Selection:
    requested: str  # numpy | fast | auto
    used: str  # numpy | fast
    dtype: str = "float64"
    note: str | None = None  # why numpy runs when fast or auto was asked for
    compile_s: float | None = None  # seconds spent compiling kernels now (None: loaded or nothing to do)
    cache_dir: str | None = None


def fast_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def uncovered(spec) -> str | None:
    """Why the fused kernels cannot run this model's layout (None: they can)."""
    if getattr(spec, "proj_size", 0):
        return "proj_size (LSTM with projections)"
    return None


_warm: set[str] = set()
_last: list[Selection] = []  # the latest selection, for the command layer to report


_compiled: list[Selection] = []  # selections that compiled kernels, not yet reported


def last() -> Selection | None:
    """The latest selection in this process (None: nothing selected yet)."""
    return _last[-1] if _last else None


def take_compiled() -> list[Selection]:
    """The selections that compiled kernels since the last call (for the command layer to say)."""
    out = list(_compiled)
    _compiled.clear()
    return out


def select(name: str, dtype: str = "float64", spec=None) -> Selection:
    """Install the engine for the following engine calls (process-wide) and say what runs."""
    sel = _select(name, dtype, spec)
    _last[:] = [sel]
    if sel.compile_s is not None:
        _compiled.append(sel)
    return sel


def _select(name: str, dtype: str, spec) -> Selection:
    if name not in ENGINES:
        raise InputError(f"engine: {name!r} is not one of {', '.join(ENGINES)}")
    if name == "numpy":
        engine.FUSED = diagnostics.FUSED = None
        return Selection(name, "numpy", dtype)
    if not fast_installed():
        engine.FUSED = diagnostics.FUSED = None
        if name == "fast":
            raise InputError(f"engine: fast needs numba, which is not installed: {EXTRA_HINT}")
        return Selection(name, "numpy", dtype, f"numba is not installed (the fast engine needs {EXTRA_HINT})")
    why = uncovered(spec) if spec is not None else None
    if why:
        engine.FUSED = diagnostics.FUSED = None
        return Selection(name, "numpy", dtype, f"the fast engine does not cover {why}; the NumPy engine runs")
    from . import fused, fused_guard, fused_kernels

    kernels = fused_kernels.KERNELS[np.dtype(dtype)] + fused_kernels.DIAGNOSTICS + fused_guard.KERNELS
    compile_s = None
    if dtype not in _warm:
        misses = sum(sum(k.stats.cache_misses.values()) for k in kernels)
        t0 = time.perf_counter()
        fused.warm_up(np.dtype(dtype))
        compiled = sum(sum(k.stats.cache_misses.values()) for k in kernels) > misses
        compile_s = time.perf_counter() - t0 if compiled else None
        _warm.add(dtype)
    engine.FUSED = fused
    diagnostics.FUSED = fused_kernels
    return Selection(name, "fast", dtype, None, compile_s, kernels[0].stats.cache_path)
