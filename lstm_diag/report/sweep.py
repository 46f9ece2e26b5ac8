"""The shape of a compare sweep, for its renderers (tables, markdown, figures).

Reads the document only (`features/compare.py` computed every number). A sweep has
axes (`doc["axes"]`: the grid's fields and `--seq-lens`) and init specs; a cell is one
grid point x one spec, aggregated over seeds. Two views are laid out here:

- a heatmap: the two axes with the most values (ties: the first given) span the map;
  the sequence length, when it is one of them, runs along x (else the later-given axis
  does). Every other combination - each init spec x each value of the remaining axes -
  gets its own panel ("small multiples"), so no cell is averaged away;
- a line plot against one numeric axis, when exactly one axis has several values.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass


def varying(doc: dict) -> list[dict]:
    """The axes with two or more values, in the order given."""
    return [ax for ax in doc["axes"] if len(ax["values"]) > 1]


def short_names(fields: list[str]) -> dict[str, str]:
    """field -> its last part ('forget_bias'), or the whole path when two fields share it."""
    last = [f.rsplit(".", 1)[-1] for f in fields]
    return {f: (n if last.count(n) == 1 else f) for f, n in zip(fields, last, strict=True)}


def value_text(v) -> str:
    """A grid value as people read it: 1 (not 1.0), 0.001, true, null, [0.9, 0.99]."""
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    return str(v)


def grid_values(a: dict) -> list[str]:
    """A cell's grid values but the sequence length's: ['forget_bias=1', 'hidden_size=64']."""
    fields = [f for f in a["point"] if f != "data.seq_len"]
    short = short_names(fields)
    return [f"{short[f]}={value_text(a['point'][f])}" for f in fields]


def _key(v) -> str:
    return json.dumps(v, sort_keys=True)


@dataclass(frozen=True)
class Panel:
    """One heatmap: an init spec and the values of the axes that are not on the map."""

    scheme: str
    fixed: tuple[tuple[str, object], ...]  # (field, value) of the remaining axes

    def title(self) -> str:
        short = short_names([f for f, _ in self.fixed])
        return ", ".join([self.scheme, *(f"{short[f]}={value_text(v)}" for f, v in self.fixed)])


@dataclass(frozen=True)
class Heatmap:
    x: dict  # the axis along x: {"field", "values"}
    y: dict  # along y
    panels: list[Panel]


def heatmap_layout(doc: dict) -> Heatmap | None:
    """The heatmap view of a sweep with two or more varying axes (see the module docstring)."""
    axes = varying(doc)
    if len(axes) < 2:
        return None
    order = sorted(range(len(axes)), key=lambda i: (-len(axes[i]["values"]), i))
    a, b = sorted(order[:2])  # the two on the map, in the order given
    seq = [i for i in (a, b) if axes[i]["field"] == "data.seq_len"]
    xi = seq[0] if seq else b
    yi = b if xi == a else a
    rest = [axes[i] for i in range(len(axes)) if i not in (a, b)]
    panels = [
        Panel(scheme, tuple((ax["field"], v) for ax, v in zip(rest, values, strict=True)))
        for values in itertools.product(*(ax["values"] for ax in rest))
        for scheme in doc["settings"]["init"]
    ]
    return Heatmap(axes[xi], axes[yi], panels)


def panel_cells(doc: dict, hm: Heatmap, panel: Panel) -> list[list[dict | None]]:
    """The cells of one panel as a matrix [y index][x index] (None where none was run)."""
    fixed = {f: _key(v) for f, v in panel.fixed}
    xs = {_key(v): j for j, v in enumerate(hm.x["values"])}
    ys = {_key(v): i for i, v in enumerate(hm.y["values"])}
    out: list[list[dict | None]] = [[None] * len(xs) for _ in ys]
    for a in doc["aggregates"]:
        p = a["point"]
        if a["scheme"] != panel.scheme or any(_key(p[f]) != k for f, k in fixed.items()):
            continue
        out[ys[_key(p[hm.y["field"]])]][xs[_key(p[hm.x["field"]])]] = a
    return out


def line_axis(doc: dict) -> dict | None:
    """The one varying axis, when there is exactly one and its values are numbers."""
    axes = varying(doc)
    if len(axes) != 1:
        return None
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in axes[0]["values"])
    return axes[0] if numeric else None


def bottleneck_lyapunov(a: dict) -> dict:
    """λ₁ (median [IQR] over seeds) of the cell's bottleneck layer (the layer that was the
    bottleneck in most seeds; ties: the first)."""
    counts = a["bottleneck_layers"]
    k = max(range(len(counts)), key=lambda j: (counts[j], -j))
    return a["layers"][k]["lyapunov_max"]


def has_lyapunov(doc: dict) -> bool:
    return bool(doc["aggregates"]) and all(lay["lyapunov"] for a in doc["aggregates"] for lay in a["layers"])


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
