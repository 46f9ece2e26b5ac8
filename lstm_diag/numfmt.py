"""Numbers as people read them; shared by findings messages and renderers."""

from __future__ import annotations

import math


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


def duration(seconds: float) -> str:
    """A time people can read: 0.4 s, 12 s, 3 min 05 s, 1 h 02 min."""
    s = max(float(seconds), 0.0)
    if s < 10:
        return f"{s:.2g} s" if s < 1 else f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"
