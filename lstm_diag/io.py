"""Files in and out: weight and data .npz files (never unpickled), atomic writes.

Loading checks once, at the border, and raises `ConfigError` naming the file and
the array, e.g. `weights.npz: weight_hh_l0 has shape (64, 8), expected (128, 32)`.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .config import ConfigError
from .engine import Spec


def read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz, with pickles refused and every failure a one-line ConfigError."""
    p = Path(path)
    if "\x00" in str(p):
        raise ConfigError(f"{what} path {str(p)!r}: a path cannot contain a NUL character")
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, expected a {what} .npz file")
    try:
        loaded = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such {what} file") from None
    except PermissionError:
        raise ConfigError(f"{p}: cannot read the {what} file (permission denied)") from None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ConfigError(
                f"{p}: {what} file holds pickled data, which is refused; save plain arrays"
            ) from None
        raise ConfigError(f"{p}: not a valid {what} .npz file ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ConfigError(f"{p}: not a valid {what} .npz file ({e.__class__.__name__})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ConfigError(
            f"{p}: {what} must be an .npz archive of named arrays (np.savez), not a single .npy"
        )
    try:
        with loaded as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise ConfigError(f"{p}: {what} file holds object (pickled) arrays, which are refused") from None
        raise ConfigError(f"{p}: not a valid {what} .npz file ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ConfigError(f"{p}: not a valid {what} .npz file ({e.__class__.__name__})") from None


def _numeric(a: np.ndarray, p: Path, name: str, what: str = "a numeric array") -> None:
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise ConfigError(f"{p}: {name} has dtype {a.dtype}, expected {what}")


def _match_names(found: list[str], expected: list[str], path: Path) -> dict[str, str]:
    """Map expected PyTorch names to keys in the file, allowing a common prefix (`lstm.`)."""
    mapping, used = {}, set()
    for name in expected:
        hits = [k for k in found if k == name or k.endswith("." + name)]
        if len(hits) > 1:
            raise ConfigError(f"{path}: {name} matches several arrays: {', '.join(sorted(hits))}")
        if hits:
            mapping[name] = hits[0]
            used.add(hits[0])
    missing = [n for n in expected if n not in mapping]
    extra = [k for k in found if k not in used]
    if missing:
        raise ConfigError(
            f"{path}: missing {', '.join(missing)} (the config's model needs "
            f"{len(expected)} arrays: {', '.join(expected)})"
        )
    if extra:
        raise ConfigError(f"{path}: unexpected arrays {', '.join(extra)} for this model")
    return mapping


def load_weights(path: str | Path, spec: Spec, dtype: str) -> dict[str, np.ndarray]:
    """Weights under PyTorch names (`lstm.weight_ih_l0` or `weight_ih_l0`, `head.weight`)."""
    p = Path(path)
    arrays = read_npz(p, "weights")
    shapes = spec.param_shapes()
    mapping = _match_names(list(arrays), list(shapes), p)
    params = {}
    for name, shape in shapes.items():
        a = arrays[mapping[name]]
        if a.shape != shape:
            raise ConfigError(f"{p}: {mapping[name]} has shape {a.shape}, expected {shape} from the config")
        _numeric(a, p, mapping[name], "a float array")
        params[name] = np.ascontiguousarray(a, dtype=dtype)
    return params


def load_data(path: str | Path, spec: Spec, loss: str, target: str, dtype: str):
    """x (B, T, I) and y from an .npz, checked against the model and the loss."""
    p = Path(path)
    arrays = read_npz(p, "data")
    for key in ("x", "y"):
        if key not in arrays:
            raise ConfigError(f"{p}: missing array {key!r} (found: {', '.join(arrays) or 'none'})")
    x, y = arrays["x"], arrays["y"]
    _numeric(x, p, "x")
    _numeric(y, p, "y")
    if x.ndim != 3 or x.shape[2] != spec.input_size:
        raise ConfigError(
            f"{p}: x has shape {x.shape}, expected (B, T, {spec.input_size}) (model.input_size)"
        )
    B, T, _ = x.shape
    if B == 0 or T == 0:
        raise ConfigError(f"{p}: x has shape {x.shape}, needs at least one sample and one step")
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{p}: x holds non-finite values (NaN or Inf)")
    lead = (B,) if target == "last" else (B, T)
    if loss == "mse":
        want = lead + (spec.output_size,)
        if spec.output_size == 1 and y.shape == lead:
            y = y[..., None]  # one output: (B,) or (B, T) reads as (B, 1) or (B, T, 1)
        if y.shape != want:
            raise ConfigError(f"{p}: y has shape {y.shape}, expected {want} for mse with target {target}")
        if not np.all(np.isfinite(y)):
            raise ConfigError(f"{p}: y holds non-finite values (NaN or Inf)")
        y = y.astype(dtype)
    else:
        if y.shape != lead:
            raise ConfigError(
                f"{p}: y has shape {y.shape}, expected {lead} class ids "
                f"for cross_entropy with target {target}"
            )
        if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
            raise ConfigError(f"{p}: y must hold integer class ids for cross_entropy")
        if y.size and (y.min() < 0 or y.max() >= spec.output_size):
            raise ConfigError(
                f"{p}: y has class ids in [{int(y.min())}, {int(y.max())}], "
                f"expected 0..{spec.output_size - 1} (model.output_size)"
            )
        y = y.astype(np.int64)
    return x.astype(dtype), y


# ---------------------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename: never a partial file."""
    p = Path(path)
    if "\x00" in str(p):
        raise ConfigError(f"output path {str(p)!r}: a path cannot contain a NUL character")
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, cannot write a file there")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except (FileExistsError, NotADirectoryError):
        parent = next(a for a in p.parents if a.exists())
        raise ConfigError(f"{p}: cannot create the folder: {parent} is a file, not a folder") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot write here ({e.strerror or e.__class__.__name__})") from None
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
