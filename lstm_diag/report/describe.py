"""The one-line descriptions of a model that every output shares (tables, markdown, HTML,
figure subtitles): made here, from the `config.model` section of a document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def model_line(m: Mapping[str, Any], head: bool = True) -> str:
    """`LSTM 8→32, 2 layers, head →1`: input size → hidden size, depth, head outputs (`no head`
    in the upstream-gradient mode); and nn.LSTM's other arguments when set (`bidirectional`,
    `projected to P`, `no biases`)."""
    L = m["num_layers"]
    layout = "".join(
        [
            ", bidirectional" if m.get("bidirectional") else "",
            f", projected to {m['proj_size']}" if m.get("proj_size") else "",
            ", no biases" if m.get("bias") is False else "",
        ]
    )
    out = f"head →{m['output_size']}" if head else "no head"
    return f"LSTM {m['input_size']}→{m['hidden_size']}, {L} layer{'s' * (L != 1)}{layout}, {out}"


def lyapunov_span(dyn: Mapping[str, Any]) -> str:
    """` over the last 256 of 2000 steps` when the Lyapunov sweep (diagnostics.lyapunov_steps)
    covers only the end of the sequence; empty when it covers all of it (or an older document)."""
    sweep = dyn.get("settings", {}).get("sweep")
    if not sweep or sweep[0] <= 1:
        return ""
    first, T = sweep
    return f" over the last {T - first + 1} of {T} steps"


def init_text(m: Mapping[str, Any], path: bool = True) -> str:
    """`chrono (forget_bias=1, recurrent_scale=0.9)`, or `weights PATH` (`weights from file`
    with path=False, for figures where a long path does not fit)."""
    if m.get("weights") is not None:
        return f"weights {m['weights']}" if path else "weights from file"
    extras = [f"forget_bias={m['forget_bias']:g}"] if m.get("forget_bias") is not None else []
    extras += [f"recurrent_scale={m['recurrent_scale']:g}"] if m.get("recurrent_scale", 1.0) != 1.0 else []
    extras += [f"gain={m['gain']:g}"] if m.get("gain", 1.0) != 1.0 else []
    return (m.get("init") or "pytorch") + (f" ({', '.join(extras)})" if extras else "")
