"""Small text helpers shared by the table and markdown renderers."""

from __future__ import annotations

import math

from rich import box
from rich.table import Table

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
