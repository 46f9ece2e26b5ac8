"""`.safetensors` files, through the `safetensors` package's NumPy API (the format's
reference implementation; optional extra `safetensors`).

Layout: 8 bytes little-endian header length N, N bytes of JSON
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the data. The package checks the header against the file when it opens it; the
header length is checked here first, before anything is allocated, so that a header
claiming more than the file holds is one clean line.

NumPy has no bfloat16, and `safetensors.numpy` refuses BF16 tensors; those are read
from their byte range (validated by the package) and widened to float32 exactly
(bfloat16 is the high half of a float32).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError
from .loaded import ArrayInfo, LazyArrays, LoadedFile

MAX_HEADER = 100 * 2**20  # the package's own limit
EXTRA = "pip install 'lstm-diag[safetensors]'"

# safetensors dtype -> numpy type name as reported by ArrayInfo
DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


def header(p: Path) -> tuple[int, dict]:
    """The header length and JSON, checked against the file size; no other reading."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise InputError(f"{p}: too short for a safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise InputError(
                    f"{p}: safetensors header declares {n} bytes, but the file holds {size - 8} "
                    f"after the length (limit {MAX_HEADER}); refused"
                )
            text = fh.read(n)
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e.strerror or e.__class__.__name__})") from None
    try:
        meta = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{p}: the safetensors header is not valid JSON") from None
    if not isinstance(meta, dict):
        raise InputError(f"{p}: the safetensors header is not a JSON object")
    return n, meta


def _check_entries(p: Path, n: int, head: dict, size: int) -> dict[str, ArrayInfo]:
    infos = {}
    for name, e in head.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = e["dtype"], e["shape"], e["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise InputError(f"{p}: header entry {name!r:.80} is malformed") from None
        if dtype not in DTYPES:
            raise InputError(f"{p}: {name} has dtype {dtype!r:.20}, which lstm-diag does not read")
        if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
            raise InputError(f"{p}: {name} has a malformed shape")
        count = int(np.prod(shape, dtype=object))
        nbytes = count * (2 if dtype == "BF16" else np.dtype(DTYPES[dtype]).itemsize)
        if not (type(begin) is int and type(end) is int and 0 <= begin <= end):
            raise InputError(f"{p}: {name} has malformed data offsets")
        if end - begin != nbytes or 8 + n + end > size:
            raise InputError(
                f"{p}: {name} declares shape {tuple(shape)} {dtype} ({nbytes} bytes) at bytes "
                f"[{begin}, {end}) of a data section of {size - 8 - n}; refused"
            )
        infos[name] = ArrayInfo(tuple(shape), DTYPES[dtype])
    return infos


def read_safetensors(path: str | Path) -> LoadedFile:
    """Every tensor of a .safetensors file, lazily; `__metadata__` strings in meta."""
    p = Path(path)
    try:
        from safetensors import safe_open
    except ImportError:
        raise InputError(f"{p}: reading .safetensors files needs the safetensors package: {EXTRA}") from None
    n, head = header(p)
    infos = _check_entries(p, n, head, p.stat().st_size)
    try:  # the package validates the header again (overlaps, gaps, order)
        with safe_open(str(p), framework="np") as f:
            names = set(f.keys())
            metadata = f.metadata() or {}
    except Exception as e:  # SafetensorError and friends
        raise InputError(f"{p}: not a valid safetensors file ({_first_line(e)})") from None
    if names != set(infos):
        raise InputError(f"{p}: the safetensors header lists different tensors than the package reads")
    start = 8 + n

    def read(name: str) -> np.ndarray:
        begin, end = head[name]["data_offsets"]
        if infos[name].dtype == "bfloat16":
            with open(p, "rb") as fh:
                fh.seek(start + begin)
                raw = fh.read(end - begin)
            if len(raw) != end - begin:
                raise InputError(f"{p}: {name}: the file is shorter than its header says")
            u16 = np.frombuffer(raw, dtype="<u2")
            out = (u16.astype(np.uint32) << 16).view(np.float32).reshape(infos[name].shape)
        else:
            try:
                with safe_open(str(p), framework="np") as f:
                    out = f.get_tensor(name)
            except Exception as e:
                raise InputError(f"{p}: {name} cannot be read ({_first_line(e)})") from None
        out.flags.writeable = False
        return out

    meta = {str(k)[:200]: _number_or_text(str(v)) for k, v in list(metadata.items())[:500]}
    return LoadedFile(path=p, format="safetensors", arrays=LazyArrays(infos, read), info=infos, meta=meta)


def _number_or_text(v: str) -> int | float | str:
    """safetensors metadata are strings: `"step": "1200"` becomes the number 1200."""
    for kind in (int, float):
        try:
            x = kind(v)
        except ValueError:
            continue
        if math.isfinite(x):
            return x
    return v[:200]


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else e.__class__.__name__)[:200]
