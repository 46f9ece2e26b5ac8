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
