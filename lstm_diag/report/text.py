"""Small text helpers shared by the table and markdown renderers."""

from __future__ import annotations

import math

from rich import box
from rich.table import Table

from ..core.diagnostics import unit_label
from ..numfmt import fmt

__all__ = ["fmt", "sparkline", "table"]

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], width: int = 32) -> str:
    """log10 of positive values as bars, min/max-bucketed to `width` characters.

    Each character covers a run of steps and shows the bucket's log-mean; a
    non-finite value in a bucket shows as `×`, an exact zero as `·`.
    """
    n = len(values)
    if n == 0:
        return ""
    width = min(width, n)
    logs: list[float | None] = []
    for b in range(width):
        lo, hi = b * n // width, max((b + 1) * n // width, b * n // width + 1)
        chunk = values[lo:hi]
        if any(v is None or not math.isfinite(v) for v in chunk):
            logs.append(None)
        elif any(v <= 0 for v in chunk):
            logs.append(-math.inf)
        else:
            logs.append(sum(math.log10(v) for v in chunk) / len(chunk))
    finite = [v for v in logs if v is not None and v != -math.inf]
    if not finite:
        return "×" * width
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(
        "×" if v is None else "·" if v == -math.inf else BARS[min(int((v - lo) / span * 7.999), 7)]
        for v in logs
    )


def layer_label(layer: dict, doc: dict) -> str:
    """An analysis entry's name: "layer 0", or "layer 0 reverse" in a bidirectional model."""
    bidirectional = doc["config"]["model"].get("bidirectional", False)
    return unit_label(layer["layer"], layer.get("direction") if bidirectional else None)


def split(v: dict) -> str:
    """`vanishing in 5 of 6 batches (healthy 1)`."""
    counts = dict(v["counts"])
    top = counts.pop(v["majority"])
    rest = ", ".join(f"{name} {n}" for name, n in counts.items())
    return f"{v['majority']} in {top} of {v['of']} batches" + (f" ({rest})" if rest else "")


def unit_key(layer: dict) -> str:
    """`l0` or `l0_reverse`: an entry's tag in figure names and HTML anchors."""
    return f"l{layer['layer']}" + ("_reverse" if layer.get("direction") == "reverse" else "")


def finding_label(f: dict) -> str:
    return unit_label(f["layer"], f.get("direction"))


def flow_words(layer: dict, T: int) -> dict[str, str]:
    """How to say an entry's flow summary. A reverse direction runs from t = T down to 1, so
    its gradient travels forward in t: its "steps back" go towards T, its start is t = T."""
    fl = layer["flow"]
    rev = layer.get("direction") == "reverse"
    start = f"t={T}" if rev else "t=1"
    return {
        "reach": f"reaches {start}" if fl["horizon_reaches_start"] else f"{fl['horizon']} of {T} steps",
        "ratio": "‖dL/dc_T‖/‖dL/dc_1‖" if rev else "‖dL/dc_1‖/‖dL/dc_T‖",
        "ref": "its value where it enters, t=1" if rev else "its value at the loss",
        "back": "per step forward in t (back in this direction's time)" if rev else "per step back",
        "source": {
            "last_step_loss_term": "measured on the last step's loss term",
            "entry_at_first_step": "measured on the gradient entering this direction at t=1 alone, "
            "as its own recurrence carries it towards t=T",
        }.get(fl["source"], ""),
        "term": {"last_step_loss_term": "last term", "entry_at_first_step": "from t=1"}.get(
            fl["source"], ""
        ),
    }


def table(title: str | None = None, **kwargs) -> Table:
    """The house table style: a rule under the header, compact, fits 80 columns."""
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        **kwargs,
    )
