"""Reading .npz archives of named arrays: never unpickled; every failure is one line.

The reader raises `InputError` naming the file, e.g. `w.npz: not a valid weights .npz
file (BadZipFile)`. Checking the arrays against a model is setup's job (setup/weights.py).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError


def read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz, with pickles refused and every failure a one-line InputError."""
    p = Path(path)
    if "\x00" in str(p):
        raise InputError(f"{what} path {str(p)!r}: a path cannot contain a NUL character")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a {what} .npz file")
    try:
        loaded = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{p}: no such {what} file") from None
    except PermissionError:
        raise InputError(f"{p}: cannot read the {what} file (permission denied)") from None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError(
                f"{p}: {what} file holds pickled data, which is refused; save plain arrays"
            ) from None
        raise InputError(f"{p}: not a valid {what} .npz file ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(f"{p}: not a valid {what} .npz file ({e.__class__.__name__})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(
            f"{p}: {what} must be an .npz archive of named arrays (np.savez), not a single .npy"
        )
    try:
        with loaded as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise InputError(f"{p}: {what} file holds object (pickled) arrays, which are refused") from None
        raise InputError(f"{p}: not a valid {what} .npz file ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(f"{p}: not a valid {what} .npz file ({e.__class__.__name__})") from None
