"""Reading .npz archives of named arrays: headers first, never unpickled, every failure one line.

`open_npz` reads only the zip directory and each member's .npy header (a few hundred
bytes), checks every declared size before anything is decompressed, and returns a
`LoadedFile` whose arrays are read on first look-up: an unused array, however large, is
never decompressed. The checks:

- every member is a `.npy` (an np.savez archive), named once;
- the zip entry's sizes agree with what its compression can produce (deflate expands at
  most ~1032:1) and with the .npy header (shape x itemsize + header = declared size);
- the dtype is plain numbers (no objects, no pickles);
- when an array is read: its declared size fits the memory budget (formats/budget.py),
  refused with its compression ratio otherwise, before it is decompressed.

The reader raises `InputError` naming the file (and member), e.g. `w.npz: not a valid
weights .npz file (BadZipFile)`. Checking the arrays against a model is setup's job.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError, preview, unreadable
from .budget import check_declared
from .loaded import ArrayInfo, LazyArrays, LoadedFile

MAX_HEADER = 10_000  # numpy's own default bound on an .npy header
DEFLATE_MAX_RATIO = 1100  # deflate's ceiling is ~1032:1; a larger claim is a lie
CHUNK = 16 * 2**20


def _bad(p: Path, what: str, why: str) -> InputError:
    return InputError(f"{p}: not a valid {what} .npz file ({why})")


def _header(p: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str):
    """(shape, fortran_order, dtype, header bytes) of one member, from its first bytes."""
    name = info.filename
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_HEADER)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_HEADER)
            else:
                raise ValueError(f"unknown .npy version {version}")
            offset = fh.tell()
    except Exception as e:  # numpy parses the header text: ValueError, SyntaxError, TokenError...
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        if "pickle" in msg.lower() or "object" in msg.lower():
            raise InputError(f"{p}: {what} file holds object (pickled) arrays, which are refused") from None
        raise InputError(
            f"{p}: member {preview(name)} is not a valid .npy array ({preview(msg, 100)})"
        ) from None
    return shape, fortran, dtype, offset


def open_npz(path: str | Path, what: str = "weights") -> LoadedFile:
    """An .npz's arrays by name, lazily, each member's size checked from its header."""
    p = Path(path)
    if "\x00" in str(p):
        raise InputError(f"{what} path {str(p)!r}: a path cannot contain a NUL character")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a {what} .npz file")
    try:
        with open(p, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise InputError(f"{p}: not a regular file (a device or a pipe); expected a {what} .npz file")
            magic = fh.read(6)
    except OSError as e:
        raise unreadable(p, f"{what} file", e) from None
    if magic == b"\x93NUMPY":
        raise InputError(f"{p}: {what} must be an .npz archive of named arrays (np.savez), not a single .npy")
    if magic[:2] == b"\x80\x04" or magic[:1] == b"\x80":
        raise InputError(f"{p}: {what} file holds pickled data, which is refused; save plain arrays")
    try:
        zf = zipfile.ZipFile(p)
    except zipfile.BadZipFile:
        raise _bad(p, what, "not a zip archive: " + _what_it_is(magic)) from None
    except (OSError, EOFError, ValueError) as e:
        raise _bad(p, what, e.__class__.__name__) from None
    return _lazy(p, zf, what)


def _what_it_is(magic: bytes) -> str:
    if not magic:
        return "the file is empty"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in magic):
        return "a text file"
    if magic == b"\x00" * len(magic):
        return "zero bytes"
    return "unknown content"


def _lazy(p: Path, zf: zipfile.ZipFile, what: str) -> LoadedFile:
    size = p.stat().st_size
    infos: dict[str, ArrayInfo] = {}
    members: dict[str, tuple[zipfile.ZipInfo, bool, np.dtype, int]] = {}
    for info in zf.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise InputError(f"{p}: member {preview(name)} is not a .npy array; not an np.savez archive")
        key = name[: -len(".npy")]
        if key in members:
            raise InputError(f"{p}: the array {preview(key)} is stored twice; refused")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise _bad(p, what, f"member {preview(name)} declares two different sizes")
        if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > DEFLATE_MAX_RATIO * max(
            info.compress_size, 1
        ):
            raise _bad(
                p, what, f"member {preview(name)} declares {info.file_size} bytes from {info.compress_size}"
            )
        if info.header_offset + info.compress_size > size:
            raise _bad(p, what, f"member {preview(name)} lies beyond the end of the file (truncated?)")
        shape, fortran, dtype, offset = _header(p, zf, info, what)
        if dtype.hasobject:
            raise InputError(f"{p}: {what} file holds object (pickled) arrays, which are refused")
        count = 1
        for s in shape:
            count *= int(s)
        nbytes = count * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise _bad(
                p,
                what,
                f"{preview(key)} declares shape {shape} {dtype} but its member holds {info.file_size} bytes",
            )
        infos[key] = ArrayInfo(tuple(int(s) for s in shape), str(dtype))
        members[key] = (info, fortran, dtype, offset)

    def read(key: str) -> np.ndarray:
        info, fortran, dtype, offset = members[key]
        check_declared(p, key, infos[key].size * dtype.itemsize, info.compress_size)
        shape = infos[key].shape
        out = np.empty(infos[key].size, dtype=dtype)  # the one allocation, writable
        if dtype.itemsize == 0:
            return out.reshape(shape)
        buf, got = out.view(np.uint8), 0
        try:
            with zf.open(info) as fh:
                fh.read(offset)
                while got < len(buf):
                    chunk = fh.read(min(CHUNK, len(buf) - got))
                    if not chunk:
                        break
                    buf[got : got + len(chunk)] = np.frombuffer(chunk, np.uint8)
                    got += len(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise InputError(f"{p}: {preview(key)} cannot be read ({e.__class__.__name__})") from None
        if got != len(buf):
            raise InputError(f"{p}: {preview(key)} holds {got} bytes, its header declares {len(buf)}")
        return out.reshape(shape[::-1]).T if fortran else out.reshape(shape)

    return LoadedFile(path=p, format="npz", arrays=LazyArrays(infos, read), info=infos)


def read_npz(path: str | Path, what: str, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The named arrays of an .npz (all when `names` is None), each checked from its header
    before it is decompressed; arrays not asked for are never read."""
    loaded = open_npz(path, what)
    wanted = list(loaded.arrays) if names is None else [n for n in names if n in loaded.arrays]
    return {k: loaded.arrays[k] for k in wanted}
