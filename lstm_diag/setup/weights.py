"""Weight files -> parameters in the engine's layout, checked against the model.

Any file `formats.sniff.read_arrays` reads (PyTorch torch.save, safetensors, npz, ...);
the model in it is found by `setup.discover` (names and shapes only), and only the
arrays the model needs are read. Errors are one line naming the file and the array,
e.g. `weights.npz: lstm.weight_hh_l0 has shape (64, 8), expected (128, 32)`.

`model_fields` gives the config the sizes the arrays determine (input_size,
hidden_size, num_layers, output_size, and the layout: proj_size, bidirectional, bias);
`unsupported_layout` is the one place that knows which layouts the engine runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..core.engine import Spec
from ..errors import InputError, InputWarning
from ..formats.loaded import LoadedFile
from ..formats.sniff import read_arrays
from .discover import FoundModel, discover

SELECTORS = ("weights_key", "lstm", "head", "embedding")  # config fields that pick arrays
LAYOUT_DEFAULTS = {"proj_size": 0, "bidirectional": False, "bias": True}  # nn.LSTM's defaults


def check_numeric(a: np.ndarray, p: Path, name: str, what: str = "a numeric array") -> None:
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise InputError(f"{p}: {name} has dtype {a.dtype}, expected {what}")


def find_model(path: str | Path, **selection: str | None) -> tuple[LoadedFile, FoundModel]:
    """Read a weights file's names and shapes and find the model in it (no array data read).

    selection: weights_key, lstm, head, embedding (the config fields of the same names).
    """
    loaded = read_arrays(path, "weights")
    found = discover(
        loaded.shapes(),
        sections=loaded.sections,
        source=str(loaded.path),
        **{k: v for k, v in selection.items() if k in SELECTORS},
    )
    return loaded, found


def model_fields(found: FoundModel) -> dict[str, Any]:
    """The model.* config values the arrays determine."""
    lstm = found.lstm
    fields: dict[str, Any] = {
        "input_size": lstm.input_size,
        "hidden_size": lstm.hidden_size,
        "num_layers": lstm.num_layers,
        "proj_size": lstm.proj_size,
        "bidirectional": lstm.bidirectional,
        "bias": lstm.bias,
    }
    if found.head is not None:
        fields["output_size"] = found.head.out_features
    return fields


def unsupported_layout(found: FoundModel) -> str | None:
    """What the engine cannot run yet in this model, or None.

    The engine's `Spec` has a field for each layout option it supports (proj_size,
    bidirectional, bias); a non-default value without its field cannot be run.
    """
    known = {f.name for f in dataclasses.fields(Spec)}
    got = model_fields(found)
    missing = [f"{k}={got[k]}" for k, d in LAYOUT_DEFAULTS.items() if k not in known and got[k] != d]
    if not missing:
        return None
    return (
        f"{found.source} holds {found.lstm.describe()}; this version of lstm-diag analyses "
        f"unidirectional LSTMs with biases and no projection, not {', '.join(missing)}"
    )


def load_weights(
    path: str | Path,
    spec: Spec,
    dtype: str,
    with_head: bool = True,
    with_embedding: bool = False,
    **selection: str | None,
) -> dict[str, np.ndarray]:
    """The engine's parameters (`weight_ih_l0`..., `head.weight`, `head.bias`) from a
    weights file, in `dtype`, checked against `spec`; other arrays are not read.
    with_head=False: without the head (the upstream mode); with_embedding: with the model's
    embedding as `embedding.weight` (V, I) (the data holds token ids)."""
    loaded, found = find_model(path, **selection)
    p = loaded.path
    problem = unsupported_layout(found)
    if problem:
        raise InputError(problem)
    names = found.param_names(with_head=with_head)
    shapes = {k: v for k, v in spec.param_shapes().items() if with_head or not k.startswith("head.")}
    if with_embedding:
        emb = found.need_embedding()
        names["embedding.weight"] = emb.weight
        shapes = {"embedding.weight": (emb.num_embeddings, spec.input_size), **shapes}
    params = {}
    for name, shape in shapes.items():
        if name == "head.bias" and name not in names:
            raise InputError(
                f"{p}: the head {found.need_head().name} has no bias; lstm-diag's head is an "
                "nn.Linear with a bias (or use the upstream-gradient mode, loss.type: upstream)"
            )
        if name not in names:
            raise InputError(f"{p}: the model needs {name}, which {found.lstm.describe()} in the file lacks")
        stored = names[name]
        info = loaded.info[stored]
        if info.shape != shape:
            raise InputError(f"{p}: {stored} has shape {info.shape}, expected {shape} from the config")
        params[name] = _cast(loaded.arrays[stored], p, stored, dtype)
    return params


def apply_what_ifs(params: dict[str, np.ndarray], model, num_layers: int) -> dict[str, np.ndarray]:
    """The what-ifs of docs/what-if.md on loaded weights (a new dict; the input is untouched):
    forget bias b: bias_ih[f] = b, bias_hh[f] = 0 (the effective b_ih[f] + b_hh[f] is b);
    gain g: every LSTM weight matrix (W_ih, W_hh, W_hr) times g; recurrent scale s: W_hh times s."""
    out = dict(params)
    for k in range(num_layers):
        for s in (f"_l{k}", f"_l{k}_reverse"):
            if f"weight_hh{s}" not in out:
                continue
            if model.forget_bias is not None:
                if f"bias_ih{s}" not in out:
                    raise InputError(
                        "model.forget_bias: the loaded LSTM has no biases (bias=False): no forget bias to set"
                    )
                H = out[f"weight_hh{s}"].shape[0] // 4
                for name, value in ((f"bias_ih{s}", model.forget_bias), (f"bias_hh{s}", 0.0)):
                    b = out[name].copy()
                    b[H : 2 * H] = value
                    out[name] = b
            if model.gain != 1.0:
                for w in ("weight_ih", "weight_hh", "weight_hr"):
                    if f"{w}{s}" in out:
                        out[f"{w}{s}"] = out[f"{w}{s}"] * model.gain
            if model.recurrent_scale != 1.0:
                out[f"weight_hh{s}"] = out[f"weight_hh{s}"] * model.recurrent_scale
    return out


def _cast(a: np.ndarray, p: Path, name: str, dtype: str) -> np.ndarray:
    """A writeable copy in the model's dtype; overflow refused, underflow warned (cast_checked)."""
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{p}: {name} has dtype {a.dtype}, expected a float array")
    out = cast_checked(a, dtype, p, name)
    return np.array(out, copy=True) if (out is a or not out.flags.writeable) else out


class CastWarning(InputWarning):
    """Values that became zero when cast to the configured dtype (shown on stderr)."""


def cast_checked(a: np.ndarray, dtype: str, p: Path, name: str) -> np.ndarray:
    """`a` in `dtype`, refusing values that overflow it (finite -> inf) and warning about
    non-zero values that underflow to zero, so that neither is blamed on the model."""
    target = np.dtype(dtype)
    out = np.ascontiguousarray(a, dtype=target)
    if a.size == 0 or not np.issubdtype(a.dtype, np.floating) or a.dtype.itemsize <= target.itemsize:
        return out
    with np.errstate(all="ignore"):
        # the cheap path: a finite result cannot hold an overflow, and as many non-zeros as
        # before mean none was lost (zeros stay zeros); two reductions, no temporary array
        if np.isfinite(out.max()) and np.isfinite(out.min()) and np.count_nonzero(out) == np.count_nonzero(a):
            return out
        overflow = np.isfinite(a) & ~np.isfinite(out)
        if overflow.any():
            big = float(np.max(np.abs(a[overflow])))
            raise InputError(
                f"{p}: {name} holds values up to {big:.3g}, which overflow {dtype} "
                f"(largest {np.finfo(target).max:.3g}) when cast to the configured dtype; "
                "rescale the array or use dtype: float64"
            )
        lost = int(np.count_nonzero((out == 0) & (a != 0)))
    if lost:
        import warnings

        tiny = np.finfo(target).smallest_subnormal
        warnings.warn(
            CastWarning(f"{p}: {name}: {lost} non-zero values (|v| < {tiny:.3g}) become 0 in {dtype}"),
            stacklevel=2,
        )
    return out


def notes(path: str | Path, used: tuple[str, ...] = (), **selection: str | None) -> list[str]:
    """Lines for stderr about a weights file: a content/extension mismatch and what is unused.
    `used`: arrays read by something else (the data arrays, when the weights file is also the
    data file, as `capture` writes it)."""
    loaded, found = find_model(path, **selection)
    out = [loaded.note] if loaded.note else []
    groups = [g for g in found.unused_groups() if g[0] not in used]
    lines = [f"{n} ({why})" if c == 1 else f"{n} ({c} arrays: {why})" for n, c, why in groups]
    if lines:
        shown = "; ".join(lines[:4]) + (f"; and {len(lines) - 4} more" if len(lines) > 4 else "")
        out.append(f"{loaded.path.name}: unused: {shown} (details: lstm-diag inspect {loaded.path.name})")
    return out
