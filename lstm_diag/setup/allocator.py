"""The process's memory allocator, set once for the engine's pattern of work (no math here).

The engine writes fresh result arrays on every run (gates, states, their gradients). glibc
hands the top of its heap back to the OS once more than its trim threshold is free there,
and serves large blocks from fresh mmaps, so every run then pays a page fault per 4 KiB of
those arrays (NumPy asks for huge pages only from 4 MiB on): at B = 16, T = 100, I = 32,
H = 64 about 700-800 faults per run, half of the NumPy engine's CPU time on our test
machine. With the thresholds below, freed memory up to TRIM_BYTES stays in the process for
the next run's arrays. Called by `analyze` and `train` (features/) before they run the engine.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_BYTES = 32 << 20  # blocks above this still come from mmap (NumPy madvises huge pages)
TRIM_BYTES = 256 << 20  # freed memory kept for reuse before the heap is trimmed
MALLOC_ENV = "LSTM_DIAG_MALLOC"  # "default": leave the C library's allocator as it is
_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Set the C library allocator's thresholds above, once per process (glibc on Linux; a
    no-op elsewhere or with LSTM_DIAG_MALLOC=default). Returns whether they are set."""
    if not _done:
        ok = False
        if sys.platform.startswith("linux") and os.environ.get(MALLOC_ENV) != "default":
            try:
                mallopt = ctypes.CDLL(None).mallopt
                M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
                ok = mallopt(M_MMAP_THRESHOLD, MMAP_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1
            except (OSError, AttributeError):  # not glibc
                ok = False
        _done.append(ok)
    return _done[0]
