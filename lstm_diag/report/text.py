"""Small text helpers shared by the table and markdown renderers."""

from __future__ import annotations

import math

from rich import box
from rich.table import Table

BARS = "▁▂▃▄▅▆▇█"


def fmt(v: float | None, digits: int = 3) -> str:
    """A number people can read: 0.0123, 1.23e-07, nan, inf."""
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-3 <= a < 1e4:
        return f"{v:.{digits}g}"
    return f"{v:.{max(digits - 1, 1)}e}"


def sparkline(values: list[float | None], width: int = 32) -> str:
    """log10 of positive values as bars, min/max-bucketed to `width` characters.

    Each character covers a run of steps and shows the bucket's log-mean; a
    non-finite or zero value in a bucket shows as `×`.
    """
    n = len(values)
    if n == 0:
        return ""
    width = min(width, n)
    logs: list[float | None] = []
    for b in range(width):
        lo, hi = b * n // width, max((b + 1) * n // width, b * n // width + 1)
        chunk = values[lo:hi]
        if any(v is None or not math.isfinite(v) or v <= 0 for v in chunk):
            logs.append(None)
        else:
            logs.append(sum(math.log10(v) for v in chunk) / len(chunk))
    finite = [v for v in logs if v is not None]
    if not finite:
        return "×" * width
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join("×" if v is None else BARS[min(int((v - lo) / span * 7.999), 7)] for v in logs)


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
