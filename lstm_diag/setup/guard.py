"""The guard against a misread layout: the engine's forward pass against the model's real outputs.

A weight file read with the wrong layout (gate blocks in another order, a kernel not
transposed) still gives arrays of the right shapes, and an analysis of them looks
plausible. When the data file holds what the model itself computed on the same inputs
(`logits`, saved by `lstm_diag.capture` or by the user from Keras/ONNX/PyTorch), the
engine's outputs must agree with it to the precision of the coarser of the two dtypes;
otherwise the run stops (exit 2) before any diagnosis is made of a model that is not the
user's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError


def verify(problem) -> None:
    """Stop (InputError, exit 2) when the model's real outputs or loss are given and the
    forward pass on the loaded weights does not reproduce them. No-op otherwise.

    What is checked: `logits` in the data file against the head's outputs; the model's loss
    (data.expected_loss, else `expected_loss` in the file) against the engine's loss; in the
    upstream mode (no head, no loss) `output` in the file against the LSTM's output, while
    the captured loss is only reported (the engine computes no loss to compare it with)."""
    data = problem.data
    if data is None:
        return
    upstream = problem.loss == "upstream"
    expected = problem.config.data.expected_loss
    if expected is None:
        expected = data.expected_loss
    outputs = data.output if upstream else data.logits
    if outputs is None and (expected is None or upstream):
        return
    from ..core.engine import forward

    p = problem
    fwd = forward(p.params, p.spec, p.x, p.y, p.loss, p.target, p.h0, p.c0)
    if outputs is not None:
        check_outputs(fwd.y_hat, outputs, Path(str(data.path)), "mse" if upstream else problem.loss)
    if expected is not None and not upstream:
        check_loss(fwd.loss, expected, problem.params["weight_hh_l0"].dtype)


def check_loss(loss: float, expected: float, dtype: np.dtype) -> float:
    """data.expected_loss against the forward pass, relative tolerance 1e-5 (a float32 model's
    own rounding stays well below it; give the loss to 6 significant digits), or the
    analysis dtype's tolerance when that is coarser (float32: 1.4e-3). A loss is a weaker
    check than logits: one number can hide a misread that changes it by less."""
    tol = max(1e-5, tolerance(dtype)) * max(1.0, abs(expected))
    delta = abs(loss - expected)
    if not delta <= tol:
        raise InputError(
            f"data.expected_loss: the file's layout was not read as the model computes it: the forward "
            f"pass gives loss {loss:.8g}, the model {expected:.8g} (|Δ| = {delta:.3g}, tolerance {tol:.2g})"
        )
    return delta


def tolerance(*dtypes: np.dtype) -> float:
    """Relative tolerance of the comparison. float64 on both sides: 1e-6 (frameworks are not
    always float64 throughout: Keras' torch backend computes a float64 Dense to ~1e-7).
    Otherwise four times the square root of the coarser dtype's epsilon, 1.4e-3 for float32:
    far above rounding over long sequences, below what a misread changes (a swapped gate
    pair moved the logits of this project's fixtures by 1e-2 to 7e-1)."""
    eps = max(np.finfo(d).eps if np.dtype(d).kind == "f" else 0.0 for d in dtypes)
    if eps <= np.finfo(np.float64).eps:
        return 1e-6
    return 4.0 * float(np.sqrt(eps))


def model_outputs(y_hat: np.ndarray, activation: str | None) -> np.ndarray:
    """What the model outputs given the head's logits: softmax / log-softmax when its last layer has one."""
    if activation in ("softmax", "logsoftmax"):
        z = y_hat - y_hat.max(axis=-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return np.exp(log_p) if activation == "softmax" else log_p
    return y_hat


def check_outputs(y_hat: np.ndarray, logits: np.ndarray, path: Path, loss: str = "mse") -> float:
    """Raise InputError when the forward pass does not reproduce the model's own outputs;
    returns max |Δ| otherwise. y_hat (B, O) or (B, T, O) from the engine (the head's
    logits), `logits` from the file: the model's outputs, which for a cross-entropy model
    may also be its softmax or log-softmax (Keras `Dense(activation="softmax")`)."""
    logits = np.asarray(logits)
    y64 = np.asarray(y_hat, np.float64)
    if logits.shape != y64.shape:
        if logits.ndim == 3 and y64.ndim == 2:
            why = "the model's outputs are per step (B, T, O) while loss.target is last"
        elif logits.ndim == 2 and y64.ndim == 3:
            why = "the model's outputs are for the last step (B, O) while loss.target is all"
        else:
            why = "they do not match"
        raise InputError(f"{path}: logits have shape {logits.shape}, the model computes {y64.shape}: {why}")
    if logits.dtype.kind != "f":
        raise InputError(f"{path}: logits have dtype {logits.dtype}, expected floats (the model's outputs)")
    scale = max(1.0, float(np.max(np.abs(logits)))) if logits.size else 1.0
    tol = tolerance(logits.dtype, np.asarray(y_hat).dtype) * scale
    kinds = (None, "softmax", "logsoftmax") if loss == "cross_entropy" else (None,)
    deltas = [float(np.max(np.abs(model_outputs(y64, k) - logits))) if y64.size else 0.0 for k in kinds]
    delta = min(deltas)
    if not delta <= tol:
        raise InputError(
            f"{path}: the file's layout was not read as the model computes it: "
            f"max |Δlogit| = {deltas[0]:.3g} (tolerance {tol:.2g}) between the forward pass and the "
            "logits stored with the data (computed on a GPU with TF32/float16? recompute them in float32)"
        )
    return delta
