"""Output files, written atomically: a temporary file beside the target, then a rename.

A path that cannot be written raises `OutputError` naming it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename: never a partial file."""
    p = Path(path)
    if "\x00" in str(p):
        raise OutputError(f"output path {str(p)!r}: a path cannot contain a NUL character")
    if p.is_dir():
        raise OutputError(f"{p}: is a folder, cannot write a file there")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except (FileExistsError, NotADirectoryError):
        parent = next(a for a in p.parents if a.exists())
        raise OutputError(f"{p}: cannot create the folder: {parent} is a file, not a folder") from None
    except OSError as e:
        raise OutputError(f"{p}: cannot write here ({e.strerror or e.__class__.__name__})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_weights(path: str | Path, params: dict[str, np.ndarray]) -> Path:
    """PyTorch names: LSTM tensors under `lstm.`, the head under `head.`, so that
    `model.load_state_dict({k: torch.from_numpy(v) ...})` works on a module with
    submodules `lstm` (nn.LSTM, batch_first=True) and `head` (nn.Linear)."""
    import io as _io

    buf = _io.BytesIO()
    named = {(k if k.startswith("head.") else f"lstm.{k}"): v for k, v in params.items()}
    np.savez(buf, **named)
    return atomic_write_bytes(path, buf.getvalue())
