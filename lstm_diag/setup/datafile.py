"""Data files -> the arrays one analysis runs on, checked against the model and the loss.

A data file (.npz) holds the LSTM's input as the model sees it and what the loss needs:

- `x` (B, T, I) floats, or `tokens` (B, T) integer ids that the model's embedding turns
  into x_t = E[token_t] (setup/problem.py does the lookup: the embedding is in the weights);
- `y`: targets (mse: (B, O) / (B, T, O); cross_entropy: class ids (B,) / (B, T), where
  entries equal to loss.ignore_index are left out of the loss as F.cross_entropy does);
- or `dh` (B, T, D R): dL/d(LSTM output) from the user's own model and loss
  (loss.type: upstream, docs/upstream.md), with optionally `expected_loss` (the user's
  loss value, reported as captured) and `output` (the LSTM's output, checked);
- optionally `h0` (L D, B, R) and `c0` (L D, B, H): initial states, as nn.LSTM takes them;
- optionally `logits`: the model's own outputs on this data, which the forward pass must
  reproduce (setup/guard.py), and `expected_loss`: its loss (data.expected_loss wins).

data.layout says whether x, tokens, y (per step) and dh are batch-first (B, T, ...) or
time-major (T, B, ...); h0 and c0 are (L D, B, ·) either way, as in PyTorch. data.batch_size
and data.seq_len, when given, select B samples and the first T steps (larger than the
file: exit 2): the samples of batch data.batch_index, k B .. (k+1) B - 1 (the first B by
default). Nothing is printed here: what a person should know goes into `notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.engine import Spec
from ..errors import ConfigError, InputError
from ..formats.npz import read_npz
from .weights import cast_checked, check_numeric

IGNORED = -1  # the engine's marker of a masked cross_entropy target (loss.ignore_index, remapped)
KNOWN = ("x", "tokens", "y", "logits", "dh", "h0", "c0", "expected_loss", "output")


@dataclass
class DataSet:
    """A data file's arrays, batch-first, selected and checked."""

    path: Path
    x: np.ndarray | None  # (B, T, I) floats; None when the file holds tokens
    y: np.ndarray | None  # targets (cross_entropy: int64 ids, IGNORED where masked); None upstream
    tokens: np.ndarray | None = None  # (B, T) int64
    dh: np.ndarray | None = None  # (B, T, D R) dL/d(LSTM output), upstream mode
    h0: np.ndarray | None = None  # (L D, B, R)
    c0: np.ndarray | None = None  # (L D, B, H)
    logits: np.ndarray | None = None  # the model's own outputs (B, O) / (B, T, O), for setup/guard.py
    expected_loss: float | None = None  # the user's loss, as captured
    output: np.ndarray | None = None  # (B, T, D R) the LSTM's output, as captured
    notes: list[str] = field(default_factory=list)  # for stderr: "warning: ..." / "note: ..."
    info: dict = field(default_factory=dict)  # the JSON "data" section

    @property
    def batch(self) -> int:
        return (self.x if self.x is not None else self.tokens).shape[0]

    @property
    def steps(self) -> int:
        return (self.x if self.x is not None else self.tokens).shape[1]


def _sizes(spec: Spec) -> tuple[int, int, int, int]:
    """(L D, H, R, D R): initial-state rows, cell size, state size, output width."""
    D = getattr(spec, "directions", 1)
    R = getattr(spec, "state_size", spec.hidden_size)
    return spec.num_layers * D, spec.hidden_size, R, D * R


def load_data(config, spec: Spec, arrays: dict | None = None) -> DataSet:
    """The data file of `config` (data.path), read, selected and checked; see the module docstring.
    arrays: the file's arrays when already read (setup/problem.py reads a file once for many
    batches); not modified."""
    d, lo = config.data, config.loss
    p = Path(d.path)
    arrays = read_npz(p, "data") if arrays is None else dict(arrays)
    # One file may be both: lstm_diag.capture writes the weights next to the data.
    same = config.model.weights is not None and Path(config.model.weights).resolve() == p.resolve()
    unknown = [k for k in arrays if k not in KNOWN and not same]
    if unknown:
        raise InputError(
            f"{p}: unexpected arrays {', '.join(unknown)} (a data file holds {', '.join(KNOWN)})"
        )
    main = _inputs(arrays, p)
    time_major = d.layout == "time_major"
    per_step = [k for k in ("x", "tokens", "dh", "output") if k in arrays]
    y_per_step = lo.type != "upstream" and lo.target == "all"
    per_target = [k for k in ("y", "logits") if k in arrays and y_per_step]
    if time_major:
        for k in per_step + per_target:
            if arrays[k].ndim >= 2:
                arrays[k] = np.swapaxes(arrays[k], 0, 1)
    B, T = arrays[main].shape[:2]
    notes: list[str] = []
    if not time_major and T < B and not _batch_axis_known(arrays, lo, B):
        notes.append(
            f"warning: {p}: {main} {arrays[main].shape} read batch-first as B={B} sequences of T={T} steps; "
            "if its first axis is time (PyTorch's default, batch_first=False), set data.layout: time_major"
        )
    Bs, Ts = _selection(d, B, T, p)
    rows = batch_rows(d.batch_index, Bs, B, p)
    for k in per_step:
        arrays[k] = arrays[k][rows, :Ts]
    ds = DataSet(path=p, x=None, y=None, notes=notes)
    ds.info = {
        "path": str(p),
        "layout": d.layout,
        "inputs": main,
        "file_batch": B,
        "file_steps": T,
        "batch": Bs,
        "steps": Ts,
        "selected": (Bs, Ts) != (B, T),
        "batch_index": d.batch_index,
        "first_sequence": rows.start,  # 0-based index in the file of the batch's first sequence
    }
    if (Bs, Ts) != (B, T):
        which = f"the first {Bs}" if rows.start == 0 else f"sequences {rows.start}-{rows.stop - 1} (0-based)"
        ds.notes.append(
            f"note: {p}: analysing {which} of {B} sequences and the first {Ts} of {T} steps "
            "(data.batch_size, data.batch_index, data.seq_len)"
        )
    _read_inputs(ds, arrays, main, spec, config.dtype)
    _read_states(ds, arrays, spec, rows, config.dtype)
    if lo.type == "upstream":
        _read_upstream(ds, arrays, spec, config.dtype, Bs != B or Ts != T)
    else:
        if "dh" in arrays:
            raise InputError(
                f"{p}: holds dh (an upstream gradient dL/dh from your model): set loss.type: upstream, "
                f"or remove dh to use the head and loss.type {lo.type!r}"
            )
        if "y" not in arrays:
            raise InputError(f"{p}: missing array 'y' (found: {', '.join(arrays) or 'none'})")
        ds.y = _targets(arrays["y"], p, spec, lo, rows, config.dtype, ds.info)
        ds.logits = _logits(arrays.get("logits"), p, lo.target, rows, Ts)
        if "expected_loss" in arrays and (Bs, Ts) != (B, T):
            ds.notes.append(
                f"note: {p}: expected_loss is the loss of all {B} sequences and {T} steps; "
                "not checked on a selection (logits, when in the file, are)"
            )
        elif "expected_loss" in arrays:
            ds.expected_loss = _scalar(arrays["expected_loss"], p, "expected_loss")
    if "output" in arrays and lo.type != "upstream":
        raise InputError(f"{p}: output (the LSTM's output, for the upstream mode) needs loss.type: upstream")
    return ds


def _inputs(arrays: dict, p: Path) -> str:
    if "x" in arrays and "tokens" in arrays:
        raise InputError(f"{p}: holds both x and tokens; keep one (tokens go through the model's embedding)")
    for key in ("x", "tokens"):
        if key in arrays:
            a = arrays[key]
            check_numeric(a, p, key)
            want = 3 if key == "x" else 2
            if a.ndim != want:
                shape = "(B, T, I)" if key == "x" else "(B, T) integer ids"
                hint = ""
                if key == "x" and a.ndim == 2 and np.issubdtype(a.dtype, np.integer):
                    hint = "; integer ids of shape (B, T) go in an array named 'tokens' (for the embedding)"
                raise InputError(f"{p}: {key} has shape {a.shape}, expected {shape}{hint}")
            if 0 in a.shape[:2]:
                raise InputError(f"{p}: {key} has shape {a.shape}, needs at least one sample and one step")
            return key
    raise InputError(f"{p}: missing array 'x' (or 'tokens') (found: {', '.join(arrays) or 'none'})")


def _batch_axis_known(arrays: dict, lo, B: int) -> bool:
    """Whether another array fixes which axis is the batch (y of target last, h0/c0)."""
    if "h0" in arrays and arrays["h0"].ndim == 3 and arrays["h0"].shape[1] == B:
        return True
    y = arrays.get("y")
    return lo.type != "upstream" and lo.target == "last" and y is not None and y.ndim >= 1 and y.shape[0] == B


def _selection(d, B: int, T: int, p: Path) -> tuple[int, int]:
    for name, given, size, what in (
        ("batch_size", d.batch_size, B, "sequences"),
        ("seq_len", d.seq_len, T, "steps"),
    ):
        if given is not None and given > size:
            raise ConfigError(f"data.{name}: {given} is more than the {size} {what} in {p}")
    return (d.batch_size or B), (d.seq_len or T)


def batch_rows(index: int, Bs: int, B: int, p: Path) -> slice:
    """The rows of batch `index` of Bs sequences among the file's B (past the end: exit 2)."""
    rows = slice(index * Bs, (index + 1) * Bs)
    if rows.stop > B:
        raise ConfigError(
            f"data.batch_index: batch {index} of {Bs} sequences needs sequences up to {rows.stop - 1} "
            f"(0-based); {p} holds {B} ({B // Bs} whole batches)"
        )
    return rows


def _read_inputs(ds: DataSet, arrays: dict, main: str, spec: Spec, dtype: str) -> None:
    p, a = ds.path, arrays[main]
    if main == "x":
        check_numeric(a, p, "x")
        if a.shape[2] != spec.input_size:
            raise InputError(
                f"{p}: x has shape {a.shape}, expected (B, T, {spec.input_size}) (model.input_size)"
            )
        if not np.all(np.isfinite(a)):
            raise InputError(f"{p}: x holds non-finite values (NaN or Inf)")
        ds.x = cast_checked(a, dtype, p, "x")
        return
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{p}: tokens have dtype {a.dtype}, expected integer ids")
    if a.min() < 0:
        raise InputError(f"{p}: tokens hold negative ids (smallest {int(a.min())})")
    ds.tokens = np.ascontiguousarray(a, dtype=np.int64)


def _read_states(ds: DataSet, arrays: dict, spec: Spec, rows: slice, dtype: str) -> None:
    have = [k for k in ("h0", "c0") if k in arrays]
    if not have:
        return
    if len(have) == 1:
        raise InputError(
            f"{ds.path}: holds {have[0]} without {'c0' if have[0] == 'h0' else 'h0'}; nn.LSTM takes both"
        )
    n_rows, H, R, _ = _sizes(spec)
    for key, width in (("h0", R), ("c0", H)):
        a = arrays[key]
        check_numeric(a, ds.path, key)
        if a.ndim != 3 or a.shape[0] != n_rows or a.shape[2] != width or a.shape[1] < rows.stop:
            want = f"({n_rows}, {ds.info['file_batch']}, {width})"
            raise InputError(
                f"{ds.path}: {key} has shape {a.shape}, expected {want} "
                "(num_layers x directions, batch, size) as nn.LSTM takes it"
            )
        if not np.all(np.isfinite(a)):
            raise InputError(f"{ds.path}: {key} holds non-finite values (NaN or Inf)")
        setattr(ds, key, np.ascontiguousarray(a[:, rows], dtype=dtype))
    ds.info["initial_state"] = "from the file (h0, c0)"


def _read_upstream(ds: DataSet, arrays: dict, spec: Spec, dtype: str, selected: bool) -> None:
    p = ds.path
    if "dh" not in arrays:
        raise InputError(
            f"{p}: loss.type upstream needs dh (B, T, H_out), dL/d(LSTM output) from your model "
            "(lstm_diag.capture writes it)"
        )
    *_, W = _sizes(spec)
    B, T = ds.batch, ds.steps
    for key in ("dh", "output"):
        if key not in arrays:
            continue
        a = arrays[key]
        check_numeric(a, p, key)
        if a.shape != (B, T, W):
            raise InputError(
                f"{p}: {key} has shape {a.shape}, expected ({B}, {T}, {W}) like the LSTM's output"
            )
        if not np.all(np.isfinite(a)):
            raise InputError(f"{p}: {key} holds non-finite values (NaN or Inf)")
        setattr(ds, key, np.ascontiguousarray(a, dtype=dtype))
    if "y" in arrays:
        ds.notes.append(f"note: {p}: y is not used in the upstream mode (dh carries the loss's gradient)")
    if "expected_loss" in arrays:
        ds.expected_loss = _scalar(arrays["expected_loss"], p, "expected_loss")
        if selected:
            ds.notes.append(
                f"note: {p}: the captured loss is of the whole file's batch; the analysis runs on a selection"
            )
    ds.info["upstream"] = True


def _logits(a: np.ndarray | None, p: Path, target: str, rows: slice, T: int) -> np.ndarray | None:
    if a is None:
        return None
    if a.dtype.kind != "f" or not np.all(np.isfinite(a)):
        raise InputError(f"{p}: logits must be finite floats (the model's outputs), got dtype {a.dtype}")
    return a[rows] if target == "last" or a.ndim < 3 else a[rows, :T]


def _scalar(a: np.ndarray, p: Path, name: str) -> float:
    if a.size != 1 or a.dtype.kind not in "fiu":
        raise InputError(f"{p}: {name} must be one number, got shape {a.shape} dtype {a.dtype}")
    return float(a.reshape(()))


def _targets(y: np.ndarray, p: Path, spec: Spec, lo, rows: slice, dtype: str, info: dict) -> np.ndarray:
    """y checked against the file's sizes (as stored, batch-first), then selected."""
    check_numeric(y, p, "y")
    lead = (info["file_batch"],) if lo.target == "last" else (info["file_batch"], info["file_steps"])
    if lo.type == "mse":
        want = lead + (spec.output_size,)
        if spec.output_size == 1 and y.shape == lead:
            y = y[..., None]  # one output: (B,) or (B, T) reads as (B, 1) or (B, T, 1)
        if y.shape != want:
            raise InputError(f"{p}: y has shape {y.shape}, expected {want} for mse with target {lo.target}")
        y = y[rows] if lo.target == "last" else y[rows, : info["steps"]]
        if not np.all(np.isfinite(y)):
            raise InputError(f"{p}: y holds non-finite values (NaN or Inf)")
        return cast_checked(y, dtype, p, "y")
    if y.shape != lead:
        raise InputError(
            f"{p}: y has shape {y.shape}, expected {lead} class ids for cross_entropy with target {lo.target}"
        )
    y = y[rows] if lo.target == "last" else y[rows, : info["steps"]]
    if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise InputError(f"{p}: y must hold integer class ids for cross_entropy")
    y = y.astype(np.int64)
    ignored = y == lo.ignore_index
    kept = y[~ignored]
    if kept.size == 0:
        raise InputError(
            f"{p}: every target equals loss.ignore_index ({lo.ignore_index}): no loss to analyse"
        )
    if kept.min() < 0 or kept.max() >= spec.output_size:
        raise InputError(
            f"{p}: y has class ids in [{int(kept.min())}, {int(kept.max())}], expected "
            f"0..{spec.output_size - 1} (model.output_size) or loss.ignore_index ({lo.ignore_index})"
        )
    info["targets"] = int(y.size)
    info["ignored_targets"] = int(ignored.sum())
    return np.where(ignored, IGNORED, y)
