"""Figures of gradient flow over training, drawn from checkpoint points (features/trajectory.py).

- trajectory.png       each quantity against the training step: loss, gradient horizon (with
                       the sequence length T), decay rate, λ₁ (when computed), forget
                       retention, τ, mean gate saturation, stuck units; one line per layer.
- grad_c_overlay.png   ||dL/dc_t|| over t of every checkpoint overlaid, one panel per layer,
                       the colour of a curve its training step (colour bar).
- gate_saturation.png  the saturated fraction of each gate's activations against the step,
                       one panel per layer.

`track` draws them from its document, `train --snapshot-every` from each clip setting's
snapshots (files prefixed by the setting). Style of report/figures/style.py; nothing is
computed here beyond layout.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from ...features.trajectory import series, step_text
from ..inert import figure as inert
from .style import GATE_COLOR, GREY, MARKERS, new_figure, series_style, styled

PANELS = (  # (quantity, title, log y)
    ("loss", "loss on the same batch", False),
    ("horizon", "gradient horizon (steps)", False),
    ("decay_rate", "decay rate of ‖dL/dc_t‖ (/step)", False),
    ("lambda1", "λ₁, largest Lyapunov exponent", False),
    ("forget_retention", "forget retention e^(mean ln f)", False),
    ("forget_time_constant", "τ = 1/(1 − f) (steps)", True),
    ("saturation", "saturated gate activations (4-gate mean)", False),
    ("stuck_units", "stuck units (4 gates)", False),
)


def step_label(points: list[dict]) -> str:
    """The x-axis: what the steps are (from the points' step_source)."""
    sources = {p.get("step_source", "meta:step") for p in points}
    if sources == {"order given"}:
        return "checkpoint (order given)"
    if sources == {"meta:epoch"}:
        return "epoch"
    return "training step"


def _values(v: list) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in v], dtype=np.float64)


def _log_y(ax, values: np.ndarray) -> None:
    """A log y axis labelled in plain text (figures never parse mathtext): the decades, and
    2 and 5 times them too when the values span less than two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ...numfmt import fmt

    ax.set_yscale("log")
    label = FuncFormatter(lambda v, _: fmt(float(v), 2))
    ax.yaxis.set_major_formatter(label)
    v = values[np.isfinite(values) & (values > 0)]
    if v.size > 0 and v.max() < 100 * v.min():
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(label)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4 if n > 4 else n)
    return math.ceil(n / cols), cols


@styled
def quantities_figure(points: list[dict], title: str) -> Figure:
    """Each quantity against the step, a line per unit; the sequence length T on the horizon
    panel (a horizon below it is the vanishing verdict)."""
    from matplotlib.ticker import MaxNLocator

    steps = _values([p["step"] for p in points])
    per_unit = series(points)
    has_l1 = any(v is not None for s in per_unit.values() for v in s["lambda1"])
    panels = [p for p in PANELS if p[0] != "lambda1" or has_l1]
    rows, cols = _grid(len(panels))
    fig = new_figure(3.1 * cols, 2.5 * rows + 0.5)
    styles = series_style(list(per_unit))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (q, label, log) in zip(axes, panels, strict=False):
        if q == "loss":
            ax.plot(steps, _values([p["loss"] for p in points]), color="black", marker="o", ms=3.5, lw=1.3)
        for k, (unit, s) in enumerate(per_unit.items() if q != "loss" else ()):
            color, ls = styles[unit]
            ax.plot(
                steps,
                _values(s[q]),
                color=color,
                ls=ls,
                lw=1.3,
                marker=MARKERS[k % len(MARKERS)],
                ms=3.5,
                label=unit,
            )
        if q == "horizon":
            T = max(p["seq_len"] for p in points)
            ax.axhline(T, color=GREY, ls=":", lw=1)
            ax.annotate(
                f"T = {T}: reaches t = 1",
                (0.02, T),
                xycoords=("axes fraction", "data"),
                va="bottom",
                fontsize=7.5,
                color=GREY,
            )
            ax.set_ylim(bottom=0, top=T * 1.12)
        if q == "stuck_units":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        vals = np.concatenate([_values(s[q]) for s in per_unit.values()]) if q != "loss" else np.array([])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if log and vals.size and vals.max() > 10 * vals.min():
            _log_y(ax, vals)
        ax.set_title(label, fontsize=9)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols :]:
        ax.set_xlabel(step_label(points))
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8)
    fig.suptitle(inert(title))
    return fig


@styled
def overlay_figure(points: list[dict], title: str) -> Figure:
    """||dL/dc_t|| over t of every checkpoint, colour = step, one panel per unit."""
    import matplotlib as mpl

    units = [u for u in points[0]["units"]]
    n = len(units)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = new_figure(5.2 * cols + 0.8, 3.4 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    steps = _values([p["step"] for p in points])
    lo, hi = float(np.nanmin(steps)), float(np.nanmax(steps))
    norm = mpl.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    cmap = mpl.colormaps["viridis"]
    for j, ax in enumerate(axes[:n]):
        curves = []
        for p in points:
            y = _values(p["units"][j]["grad_c_norm"]) if j < len(p["units"]) else np.array([])
            curves.append(np.where(y > 0, y, np.nan))
            ax.plot(np.arange(1, len(y) + 1), curves[-1], color=cmap(norm(p["step"])), lw=1.2)
        _log_y(ax, np.concatenate(curves))
        u = units[j]
        name = f"layer {u['layer']}" + ("" if u["direction"] == "forward" else f" {u['direction']}")
        ax.set_title(f"{name}: ‖dL/dc_t‖", fontsize=9.5)
        ax.set_xlabel("t (position in the sequence)")
    for ax in axes[n:]:
        ax.set_visible(False)
    bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[:n]), shrink=0.9)
    bar.set_label(step_label(points))
    fig.suptitle(inert(title))
    return fig


@styled
def saturation_figure(points: list[dict], title: str) -> Figure:
    """Saturated fraction of each gate's activations against the step, one panel per unit."""
    steps = _values([p["step"] for p in points])
    per_unit = series(points)
    n = len(per_unit)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = new_figure(4.6 * cols, 3.0 * rows + 0.7)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax, (unit, s) in zip(axes, per_unit.items(), strict=False):
        for k, (gate, color) in enumerate(GATE_COLOR.items()):
            ax.plot(
                steps,
                _values(s[f"saturation_{gate}"]),
                color=color,
                marker=MARKERS[k],
                ms=3.5,
                lw=1.3,
                label=gate,
            )
        ax.set_title(unit, fontsize=9.5)
        ax.set_xlabel(step_label(points))
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("fraction saturated")
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle(inert(title))
    return fig


def trajectory_figures(points: list[dict], title: str, prefix: str = "") -> list[tuple[str, Figure]]:
    """The three figures of `points` (sorted by step), as (file stem, figure)."""
    return [
        (f"{prefix}trajectory", quantities_figure(points, title)),
        (f"{prefix}grad_c_overlay", overlay_figure(points, title)),
        (f"{prefix}gate_saturation", saturation_figure(points, title)),
    ]


def track_figures(doc: dict) -> list[tuple[str, Figure]]:
    """The figures of a track document."""
    cps = doc["checkpoints"]
    first, last = step_text(cps[0]["step"]), step_text(cps[-1]["step"])
    c = doc["config"]["data"]
    data = c["task"] + (f" {c['path'].rsplit('/', 1)[-1]}" if c.get("path") else "")
    title = f"{len(cps)} checkpoints, {step_label(cps)} {first} → {last}; same data ({data})"
    return trajectory_figures(cps, title)


def snapshot_figures(doc: dict) -> list[tuple[str, Figure]]:
    """The figures of `train --snapshot-every`, one set per clip setting that has two
    snapshots or more: files `snapshots_<setting>_<figure>` (the setting's `:` as `-`)."""
    out = []
    for entry in doc.get("snapshots", []):
        points = entry["points"]
        if len(points) < 2:
            continue
        slug = entry["setting"].replace(":", "-")
        title = f"train, clip {entry['setting']}: snapshots at steps {step_text(points[0]['step'])} → " + (
            f"{step_text(points[-1]['step'])} on the analysis batch"
        )
        out += trajectory_figures(points, title, prefix=f"snapshots_{slug}_")
    return out
