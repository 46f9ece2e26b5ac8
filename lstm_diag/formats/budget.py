"""The memory budget every reader and estimate is checked against, before allocating.

`memory_limit()` is the smallest of: 80% of physical memory, 80% of what the address-space
limit (`ulimit -v`, `prlimit --as`) leaves, and 80% of a cgroup memory limit. A declared
size is checked with `check_declared`, whose message names the file, the array, the
size, the compression ratio and the limit:

    data.npz: x declares 3.8 GB (ratio 2000:1 compressed); limit 19 GB
"""

from __future__ import annotations

import functools
import os
import resource
from pathlib import Path

from ..errors import InputError

FRACTION = 0.8


@functools.cache  # fixed for the life of the process
def _physical() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> int | None:
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None  # the usual case: no /proc read
    try:
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(soft - used, 0)


@functools.cache  # a cgroup's limit is set from outside; read once per command
def _cgroup() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def memory_limit() -> int:
    """Bytes one command may plan to allocate (see the module docstring)."""
    found = [v for v in (_physical(), _address_space_left(), _cgroup()) if v is not None]
    return int(FRACTION * min(found)) if found else 2**62


def human(n: float) -> str:
    """Bytes as people read them: 512 bytes, 3.8 MB, 19 GB, 24 TB (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{int(n)} bytes"


def check_declared(path: str | Path, name: str, nbytes: int, compressed: int | None = None) -> None:
    """Refuse an array whose declared size is over the budget, before reading it."""
    limit = memory_limit()
    if nbytes > limit:
        ratio = ""
        if compressed is not None and nbytes > 2 * compressed:
            ratio = f" (ratio {nbytes // max(compressed, 1)}:1 compressed)"
        raise InputError(f"{path}: {name} declares {human(nbytes)}{ratio}; limit {human(limit)}")
