"""Output files that never destroy what was there: one writer for every output.

- A regular file (or a new path) is written to a temporary file beside it, flushed,
  synced and renamed over it: the old file stays whole until the new one is complete.
  A symlink at the path is replaced by the file, never followed (its target is left
  alone).
- A path that is not a regular file (a terminal, `/dev/stdout`, a pipe, a FIFO, a
  character device) is written directly, appending, never replaced or truncated.
- A path that ends in `/` names a folder, never a file. A command's FILE output given as
  a folder (`-o out/`, or an existing folder) is written inside it under the command's
  default name (`into_folder`); the folder is created if missing.
- Any failure (no space: ENOSPC, file too large: EFBIG, read-only: EROFS, permission:
  EACCES...) raises `OutputError` naming the path; the previous file is intact and no
  temporary file is left.

`StreamingOutput` is the same for a file written line by line (train --metrics): the
lines go to `.NAME.XXXX.partial` beside the target, each flushed; `commit()` renames it
over the target; `abandon()` (an interrupted run) keeps it and returns its path, for the
command to name on stderr; `discard()` (an error) removes it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import os
import secrets
import stat
import tempfile
from pathlib import Path

import numpy as np

from ..errors import OutputError, preview

REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "input/output error",
    errno.ENAMETOOLONG: "file name too long",
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reason(e: OSError) -> str:
    return REASONS.get(e.errno, e.strerror or e.__class__.__name__)


def _fail(p: Path | str, e: OSError) -> OutputError:
    return OutputError(f"{p}: cannot write here ({_reason(e)})")


def _direct(p: Path) -> bool:
    """True if `p` exists and is (or links to) something other than a regular file."""
    try:
        st = os.stat(p)  # follows links: /dev/stdout -> /proc/self/fd/1 -> a pipe or tty
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise _fail(p, e) from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{p}: is a folder, cannot write a file there")
    if not stat.S_ISREG(st.st_mode):
        return True
    # a link into /proc (/dev/stdout redirected to a file): write through it, never replace it
    return p.is_symlink() and os.path.realpath(p).startswith("/proc/")


def check_target(path: str | Path) -> Path:
    """The output path, checked before anything is written: no NUL, not a folder."""
    text = str(path)
    if "\x00" in text:
        raise OutputError(f"output path {preview(text)}: a path cannot contain a NUL character")
    if text.endswith(("/", os.sep)) or text in (".", ".."):
        raise OutputError(f"{text}: names a folder (it ends in '/'); give a file name inside it")
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        raise OutputError(f"{p}: is a folder, cannot write a file there")
    return p


def names_folder(path: str | Path) -> bool:
    """`out/` (a trailing slash), `.`, `..`, or an existing folder (not a link to one: a
    link is replaced by the file, never followed)."""
    text = str(path)
    if text.endswith(("/", os.sep)) or text in (".", ".."):
        return True
    return os.path.isdir(text) and not os.path.islink(text)


def into_folder(path: str | Path, name: str) -> Path:
    """A command's FILE output: `path` itself, or `path/name` when `path` names a folder.
    Checked at once (commands call it before they compute), writing nothing: a path that
    cannot be written because of its name or a file in the way is exit 2 now, not after
    the work."""
    p = Path(path) / name if names_folder(path) else Path(path)
    check_target(p)
    parent = next((a for a in p.parents if a.exists() or a.is_symlink()), None)
    if parent is not None and not parent.is_dir():
        raise OutputError(f"{p}: cannot create the folder: {parent} is a file, not a folder")
    return p


def _parent(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        parent = next((a for a in p.parents if a.exists()), p.parent)
        raise OutputError(f"{p}: cannot create the folder: {parent} is a file, not a folder") from None
    except OSError as e:
        raise _fail(p, e) from None


def _write_direct(p: Path, data: bytes) -> Path:
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "wb", buffering=0) as fh:
            view = memoryview(data)
            while view:
                view = view[fh.write(view) :]
    except OSError as e:
        raise _fail(p, e) from None
    return p


def _mode_for(p: Path) -> int:
    try:
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)  # an existing file keeps its mode
    except OSError:
        pass
    return 0o666 & ~_umask()


def _unique_prefix(p: Path) -> str:
    """The start of a temporary's name beside p, made for one write alone (a token of it)."""
    return f".{p.name}.{secrets.token_hex(4)}."


def _temporary(p: Path, prefix: str, suffix: str) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=p.parent, prefix=prefix, suffix=suffix)
    except OSError as e:
        raise _fail(p, e) from None


def _remove_temporaries(p: Path, prefix: str) -> None:
    """Remove the temporary of the write that made `prefix`, if it exists. By the prefix, not
    by the name mkstemp returns: an interrupt (Ctrl-C, `Terminated`) can land after the file
    exists and before its name reaches the writer (5 of 40 interrupted write loops left one)."""
    for left in p.parent.glob(glob.escape(prefix) + "*"):
        with contextlib.suppress(OSError):
            left.unlink()


def atomic_write_bytes(path: str | Path, data: bytes, *, sync: bool = True) -> Path:
    """Write `data` to `path` (see the module docstring): whole or not at all. `sync=False`
    skips the fsync (the rename is still atomic: readers see the old file or the whole new
    one), for files that are checked when read and cheap to lose in a power cut (the sweep
    cache: ~15 ms an fsync would cap it at ~70 entries/s)."""
    p = check_target(path)
    if _direct(p):
        return _write_direct(p, data)
    _parent(p)
    prefix = _unique_prefix(p)
    try:
        fd, tmp = _temporary(p, prefix, ".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(p))
        os.replace(tmp, p)
    except BaseException as e:
        _remove_temporaries(p, prefix)  # after the rename there is none: the target stays
        if isinstance(e, OSError):
            raise _fail(p, e) from None
        raise
    return p


def atomic_write_text(path: str | Path, text: str, *, sync: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), sync=sync)


class StreamingOutput:
    """A text file written line by line, never clobbering the target until `commit()`."""

    def __init__(self, path: str | Path):
        self.path = check_target(path)
        self.direct = _direct(self.path)
        self.tmp: str | None = None
        if self.direct:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOCTTY", 0))
            except OSError as e:
                raise _fail(self.path, e) from None
        else:
            _parent(self.path)
            prefix = _unique_prefix(self.path)
            try:
                fd, self.tmp = _temporary(self.path, prefix, ".partial")
            except BaseException:
                _remove_temporaries(self.path, prefix)
                raise
        self.fh = open(fd, "w", encoding="utf-8", newline="")

    def write(self, text: str) -> None:
        """Write and flush (a line, or several): on disk as soon as this returns."""
        try:
            self.fh.write(text)
            self.fh.flush()
        except OSError as e:
            self.discard()
            raise _fail(self.path, e) from None

    def commit(self) -> Path:
        """Complete: the file replaces the target (or, written directly, is closed)."""
        try:
            self.fh.flush()
            if self.tmp is not None:
                os.fsync(self.fh.fileno())
            self.fh.close()
            if self.tmp is not None:
                os.chmod(self.tmp, _mode_for(self.path))
                os.replace(self.tmp, self.path)
                self.tmp = None
        except OSError as e:
            self.discard()
            raise _fail(self.path, e) from None
        return self.path

    def abandon(self) -> Path | None:
        """Interrupted: close and keep what was written beside the target; its path
        (None if nothing was written, or the target was written directly)."""
        with contextlib.suppress(OSError):
            self.fh.close()
        if self.tmp is None:
            return None
        tmp, self.tmp = Path(self.tmp), None
        if tmp.stat().st_size == 0:
            tmp.unlink(missing_ok=True)
            return None
        return tmp

    def discard(self) -> None:
        """Failed: close and remove the temporary file; the target is untouched."""
        with contextlib.suppress(OSError):
            self.fh.close()
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def save_weights(path: str | Path, params: dict[str, np.ndarray]) -> Path:
    """PyTorch names: LSTM tensors under `lstm.`, the head under `head.`, so that
    `model.load_state_dict({k: torch.from_numpy(v) ...})` works on a module with
    submodules `lstm` (nn.LSTM, batch_first=True) and `head` (nn.Linear)."""
    buf = io.BytesIO()
    named = {(k if k.startswith("head.") else f"lstm.{k}"): v for k, v in params.items()}
    np.savez(buf, **named)
    return atomic_write_bytes(path, buf.getvalue())
