"""Capture the LSTM inside any PyTorch model for `lstm-diag analyze` (the upstream-gradient mode).

    from lstm_diag.capture import capture
    capture(model, model.lstm, (inputs, targets), loss_fn, "captured.npz")
    # lstm-diag analyze --set model.weights=captured.npz --set data.task=file \\
    #     --set data.path=captured.npz --set loss.type=upstream

One forward and backward pass of your model on one batch, in float64 on a copy of the
model (`copy.deepcopy(model).double()`; your model is not touched), records what the
LSTM sees and what your loss sends back into it:

- the LSTM's input x (B, T, I) and initial states h0, c0 (if your model passes them),
  by a forward hook on the nn.LSTM;
- dL/d(LSTM output) `dh` (B, T, D R), by a hook on the output tensor: the gradient of
  YOUR loss through YOUR head, whatever they are;
- the LSTM's weights under nn.LSTM's names (`lstm.weight_ih_l0`, ...);
- the LSTM's output `output` (checked by lstm-diag against its own forward pass) and your
  loss value `expected_loss` (reported as "your loss (captured)").

All in one .npz, which is both the weights file and the data file (docs/upstream.md).
The model runs in eval mode (dropout off), as lstm-diag analyses it. PyTorch is needed
here only; lstm-diag itself never imports it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError:  # pragma: no cover - exercised only without PyTorch
    raise ImportError("lstm_diag.capture needs PyTorch: pip install torch") from None

import numpy as np


def capture(model, lstm, batch: tuple[Any, Any], loss_fn, path: str | Path) -> Path:
    """Run `loss_fn(model(inputs), targets)` once in float64 and write what `lstm` saw and got.

    model: your nn.Module; lstm: its nn.LSTM submodule (e.g. `model.encoder.rnn`); batch:
    (inputs, targets) as your training loop passes them (inputs may be token ids, a tensor
    or a tuple of tensors); loss_fn(outputs, targets) -> scalar tensor; path: the .npz to
    write. Returns the path. The LSTM's input is recorded as it arrives at the LSTM
    (after any embedding), batch-first whatever `lstm.batch_first` says.
    """
    if not isinstance(lstm, torch.nn.LSTM):
        raise TypeError(f"lstm must be an nn.LSTM, got {type(lstm).__name__}")
    name = next((n for n, m in model.named_modules() if m is lstm), None)
    if name is None:
        raise ValueError("lstm is not a submodule of model")
    twin = copy.deepcopy(model).double().eval()  # float64, your model untouched
    twin_lstm = twin.get_submodule(name) if name else twin
    inputs, targets = (_double(b) for b in batch)
    seen: dict[str, Any] = {}

    def forward_hook(module, args, output):
        seen["x"] = args[0]
        if len(args) > 1 and args[1] is not None:
            seen["h0"], seen["c0"] = args[1]
        out = output[0]
        out.retain_grad()
        seen["out"] = out

    handle = twin_lstm.register_forward_hook(forward_hook)
    try:
        with torch.enable_grad():
            outputs = twin(*inputs) if isinstance(inputs, tuple) else twin(inputs)
            loss = loss_fn(outputs, targets)
            loss.backward()
    finally:
        handle.remove()
    if "out" not in seen:
        raise ValueError("the LSTM was not called by model(inputs)")
    if seen["out"].grad is None:
        raise ValueError("the loss does not depend on the LSTM's output")
    if isinstance(seen["x"], torch.nn.utils.rnn.PackedSequence):
        raise ValueError("packed sequences are not supported: pass padded tensors (mask with ignore_index)")
    arrays = {f"lstm.{k}": v.detach().numpy() for k, v in twin_lstm.state_dict().items()}
    bf = twin_lstm.batch_first
    arrays["x"] = _batch_first(seen["x"], bf)
    arrays["dh"] = _batch_first(seen["out"].grad, bf)
    arrays["output"] = _batch_first(seen["out"], bf)
    if "h0" in seen:
        arrays["h0"] = seen["h0"].detach().numpy()
        arrays["c0"] = seen["c0"].detach().numpy()
    arrays["expected_loss"] = np.array(loss.item())
    p = Path(path)
    np.savez(p, **arrays)
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")


def _double(v):
    """Floating tensors to float64 (ids stay integer); tuples and lists element-wise."""
    if isinstance(v, torch.Tensor):
        return v.double() if v.is_floating_point() else v
    if isinstance(v, (tuple, list)):
        return type(v)(_double(u) for u in v)
    return v


def _batch_first(t, batch_first: bool) -> np.ndarray:
    a = t.detach().numpy()
    if a.ndim == 2:  # an unbatched sequence (T, ·): one sample
        return a[None]
    return a if batch_first else np.swapaxes(a, 0, 1)
