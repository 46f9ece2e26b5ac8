"""Figures of an analysis: where the gradient dies through time, and why.

Renderers only: every number drawn is read from the analysis document
(`AnalysisResult.to_dict()` as `--format json` writes it, docs/json-schema.md; the gate
heatmaps from its `gate_heatmap` data), so a saved document gives the same figures as
the config it came from. Nothing here measures a diagnostic, and drawing never changes
a computed number. Style, figure factory and encoding: style.py.

File names (docs/plots.md; `_reverse` after the layer for a bidirectional model's
backward direction):

    grad_flow.<fmt>            ||dL/dc_t||, ||dL/dh_t|| over t, one panel per layer
    gate_heatmaps_l<k>.<fmt>   batch-mean gate activations, units x time, per gate
    saturation_l<k>.<fmt>      per unit: fraction of time left- vs right-saturated
    forget_gate_l<k>.<fmt>     histogram of f_t with tau = 1 / (1 - f)
    gate_grads_l<k>.<fmt>      ||dL/dz_t|| per gate over t
    dynamics_l<k>.<fmt>        Lyapunov spectrum and one-step Jacobian norms
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import ScaledTranslation, blended_transform_factory

from ...core.diagnostics import GATE_NAMES, GATE_SYMBOL
from ...errors import InputError
from ...numfmt import fmt
from ..describe import init_text, lyapunov_span, model_line
from ..inert import figure
from ..inputs_text import has_head, loss_text, what_if_line
from ..text import layer_label, unit_key
from .style import GATE_COLOR, GREY, NONFINITE_COLOR, OKABE_ITO, VERDICT_COLOR, header, new_figure, styled

GATES = GATE_NAMES  # i, f, g, o: the order of docs and of the engine's cache
SERIES_COLOR = {"c": OKABE_ITO["blue"], "h": OKABE_ITO["sky_blue"], "flow": OKABE_ITO["reddish_purple"]}
MAX_POINTS = 1200  # steps drawn per line; longer series are drawn as a min/max envelope


# ------------------------------------------------------------------------ labels


def source_label(doc: dict) -> str | None:
    """What the titles call the run, from the document's `source`: the config's file name
    (or "built-in default") and any --set; None when the document does not say."""
    src = doc.get("source")
    if not src:
        return None
    name = "built-in default" if src.get("config") is None else Path(src["config"]).name
    extra = " ".join(f"--set {o}" for o in src.get("overrides", ()))
    label = figure(f"{name} {extra}".strip())  # shown as written: no mathtext, no control characters
    return label if len(label) <= 90 else label[:89] + "…"


def describe(doc: dict) -> str:
    """One line: model, data, loss (all from the document)."""
    c = doc["config"]
    m, d = c["model"], c["data"]
    T = len(doc["layers"][0]["grad_c_norm"])
    init = init_text(m, path=False)
    what_if = what_if_line(doc)
    if what_if:
        init += f", {what_if}"
    return (
        f"{model_line(m, has_head(doc))}, init {init} · {d['task']} data, "
        f"B={d['batch_size']}, T={T} · {loss_text(doc, 4)}"
    )


def _header(
    fig: Figure,
    title: str,
    doc: dict,
    verdict: str,
    note: str = "",
    layer: int | None = None,
) -> None:
    """Title (what + which run), a subtitle (model, data, loss) and the verdict as a coloured badge."""
    label = source_label(doc)
    lines = [title, f"config: {label}" if label else None, describe(doc), note or None]
    header(fig, "\n".join(x for x in lines if x))
    fig.text(
        1.0,
        1.0,
        f" {verdict.upper().replace('_', ' ')} "
        if layer is None
        else f" {_name(doc, layer)}: {verdict.upper().replace('_', ' ')} ",
        ha="right",
        va="top",
        fontsize=12,
        fontweight="bold",
        color="white",
        bbox={"boxstyle": "round,pad=0.35", "facecolor": VERDICT_COLOR[verdict], "edgecolor": "none"},
        # 6 pt in from the top-right corner, whatever the figure's size: the box's pad (4.2 pt)
        # stays inside the figure (at 0.995 of the height it was cut off on figures under 12 in)
        transform=fig.transFigure + ScaledTranslation(-6 / 72, -6 / 72, fig.dpi_scale_trans),
    )


def _name(doc: dict, j: int) -> str:
    """Entry j of doc["layers"] by name: "layer 0", or "layer 0 reverse" in a bidirectional model."""
    return layer_label(doc["layers"][j], doc)


def _is_entry(f: dict, doc: dict, j: int) -> bool:
    """Whether finding f is about entry j of doc["layers"]."""
    e = doc["layers"][j]
    return f["layer"] == e["layer"] and f.get("direction") in (None, e.get("direction", "forward"))


def _layer_codes(doc: dict, k: int, prefixes: tuple[str, ...]) -> str:
    codes = sorted(
        {f["code"] for f in doc["findings"] if _is_entry(f, doc, k) and f["code"].startswith(prefixes)}
    )
    return ("findings: " + ", ".join(codes)) if codes else "no findings"


# ------------------------------------------------------------------ long series


def envelope(
    y: np.ndarray, max_points: int = MAX_POINTS, t: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Points to draw for a series over t = 1..T (or over the steps t given): (t, y, points per bucket).

    Up to `max_points` steps are drawn as they are. Longer series are split into
    max_points // 2 buckets of consecutive steps, and each bucket keeps its minimum and
    its maximum, in time order (plus t = 1 and t = T), so a one-step spike survives.
    NaN entries count as missing; a bucket with nothing finite breaks the line.
    Every point drawn is an original (t, y) pair; no value is interpolated.
    """
    y = np.asarray(y, np.float64)
    T = len(y)
    t = np.arange(1, T + 1, dtype=np.float64) if t is None else np.asarray(t, np.float64)
    if T <= max_points:
        return t, y, 1
    n_buckets = max_points // 2
    edges = np.linspace(0, T, n_buckets + 1).round().astype(int)
    keep: list[int] = [0]  # indices into y; -1 breaks the line (a bucket with nothing finite)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        idx = lo + np.nonzero(np.isfinite(y[lo:hi]))[0]
        if idx.size == 0:
            keep.append(-1)
            continue
        keep += sorted({int(idx[np.argmin(y[idx])]), int(idx[np.argmax(y[idx])])})
    keep.append(T - 1)
    keep = [i for j, i in enumerate(keep) if j == 0 or i != keep[j - 1]]  # no repeated point
    x = np.array([t[i] if i >= 0 else np.nan for i in keep])
    v = np.array([y[i] if i >= 0 else np.nan for i in keep])
    return x, v, math.ceil(T / n_buckets)


def _ordinal(n: int) -> str:
    """2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _positive(y) -> np.ndarray:
    """Values for a log axis: finite positive ones; zeros and non-finite become NaN (marked apart)."""
    y = np.asarray(y, np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(y) & (y > 0), y, np.nan)


def _log_series(
    ax, y, *, label: str, color: str, lw: float = 1.6, ls: str = "-", z: int = 3, t=None
) -> Line2D:
    """A norm over t = 1..T (or over the steps t) on a log axis, min/max-enveloped when long."""
    x, v, _ = envelope(_positive(y), t=t)
    marker = "o" if len(x) <= 3 else None  # a line needs two points: show very short series as dots
    (line,) = ax.plot(x, v, color=color, lw=lw, ls=ls, marker=marker, ms=4, label=label, zorder=z)
    return line


def _runs(steps: np.ndarray) -> list[tuple[int, int]]:
    """Sorted 1-based steps -> (first, last) of each run of consecutive steps."""
    if steps.size == 0:
        return []
    breaks = np.nonzero(np.diff(steps) > 1)[0]
    starts = np.concatenate([[steps[0]], steps[breaks + 1]])
    ends = np.concatenate([steps[breaks], [steps[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _span_text(steps: np.ndarray) -> str:
    runs = _runs(steps)
    parts = [f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:3]]
    return "t = " + ", ".join(parts) + (", …" if len(runs) > 3 else "")


def _mark_special(ax, series: dict[str, np.ndarray]) -> None:
    """Steps a log axis cannot show, marked rather than dropped: non-finite values (× at the top,
    shaded) and exact zeros (▾ at the bottom)."""
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    bad_names, zero_names = [], []
    bad = np.zeros(0, int)
    zero = np.zeros(0, int)
    for name, y in series.items():
        y = np.asarray(y, np.float64)
        b = np.nonzero(~np.isfinite(y))[0] + 1
        with np.errstate(invalid="ignore"):
            z = np.nonzero(y == 0)[0] + 1
        if b.size:
            bad_names.append(name)
            bad = np.union1d(bad, b)
        if z.size:
            zero_names.append(name)
            zero = np.union1d(zero, z)
    if bad.size:
        for a, b in _runs(bad):
            ax.axvspan(a - 0.5, b + 0.5, color=NONFINITE_COLOR, alpha=0.12, lw=0)
        ax.scatter(
            bad,
            np.full(bad.size, 0.97),
            transform=edge,
            marker="x",
            s=22,
            color=NONFINITE_COLOR,
            lw=1.2,
            clip_on=False,
            zorder=5,
            label=f"non-finite (NaN/Inf), {', '.join(bad_names)}:\n{bad.size} steps, {_span_text(bad)}",
        )
    if zero.size:
        ax.scatter(
            zero,
            np.full(zero.size, 0.03),
            transform=edge,
            marker="v",
            s=22,
            color=GREY,
            clip_on=False,
            zorder=5,
            label=f"exactly 0 (off the log axis), {', '.join(zero_names)}: {_span_text(zero)}",
        )


def _set_time_axis(ax, T: int) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, T + 0.5) if T < 50 else ax.set_xlim(1 - 0.01 * T, T + 0.01 * T)
    ax.set_xlabel("time step t (steps; t = 1 is the first input, t = T the last)")


def _downsample_note(T: int) -> str:
    _, _, k = envelope(np.zeros(T))
    if k == 1:
        return ""
    return (
        f"{T} steps drawn as a min/max envelope: each bucket of ≤{k} steps keeps its minimum and maximum, "
        "so spikes stay visible"
    )


# ----------------------------------------------------------------------- figures


def _flow_title(layer: dict, doc: dict, T: int, ratio: float, exploding_ratio: float) -> str:
    """A reverse direction's gradient travels forward in t: from t = 1, where it is measured
    entering, towards t = T; its ratio is ‖dL/dc_T‖ / ‖dL/dc_1‖."""
    fl, v = layer["flow"], layer["verdict"]
    rev = layer.get("direction") == "reverse"
    head = f"{layer_label(layer, doc)}: {v.upper().replace('_', ' ')}"
    ratio_name = "‖dL/dc_T‖ / ‖dL/dc_1‖" if rev else "‖dL/dc_1‖ / ‖dL/dc_T‖"
    if v == "no_flow":
        return f"{head} — read by the head at t = T only, after one step: no flow through time"
    if v == "exploding":
        if fl["first_nonfinite_step"] is not None:
            side = "≥" if rev else "≤"
            return f"{head} — dL/dc_t is non-finite at t {side} {fl['first_nonfinite_step']} (overflow)"
        return (
            f"{head} — {ratio_name} = {fmt(fl['ratio_first_last'])} (> {exploding_ratio:g}): "
            "the gradient grows going back in this direction's time"
        )
    if v == "vanishing":
        where = "where it enters at t = 1" if rev else "at the loss"
        return (
            f"{head} — ‖dL/dc_t‖ falls below {ratio:g}× its value {where} after {fl['horizon']} of {T} steps"
        )
    end = "t = T" if rev else "t = 1"
    return f"{head} — the gradient reaches {end} ({ratio_name} = {fmt(fl['ratio_first_last'])})"


@styled
def grad_flow(doc: dict) -> Figure:
    """||dL/dc_t|| and ||dL/dh_t|| against t (log), one panel per layer, with the flow measurements.

    Drawn per panel: the loss position, the vanishing threshold (vanishing_ratio x the flow
    series at t = T), the horizon, the fitted decay within the horizon window (one or two
    exponentials, each drawn only over the steps it was fitted on, `flow.decay_fit`), and for
    target "all" the last step's loss term the verdict is based on.
    """
    d = doc["config"]["diagnostics"]
    target = doc["config"]["loss"]["target"]
    L = len(doc["layers"])
    T = len(doc["layers"][0]["grad_c_norm"])
    fig = new_figure(12.0, 1.3 + 3.4 * L)
    axes = fig.subplots(L, 1, sharex=True, squeeze=False)[:, 0]
    note = _downsample_note(T)
    _header(fig, "Gradient flow back through time: where does the gradient die?", doc, doc["verdict"], note)
    for ax, layer in zip(axes, doc["layers"], strict=True):
        flow_series = np.asarray(layer.get("flow_grad_c_norm", layer["grad_c_norm"]), np.float64)
        c = np.asarray(layer["grad_c_norm"], np.float64)
        h = np.asarray(layer["grad_h_norm"], np.float64)
        _log_series(ax, c, label="‖dL/dc_t‖  cell state, total (eq. 9)", color=SERIES_COLOR["c"], lw=2.0)
        _log_series(ax, h, label="‖dL/dh_t‖  hidden state, total (eq. 8)", color=SERIES_COLOR["h"], lw=1.3)
        special = {"‖dL/dc_t‖": c, "‖dL/dh_t‖": h}
        rev = layer.get("direction") == "reverse"  # its gradient travels from t = 1 towards T
        if "flow_grad_c_norm" in layer:
            what = "entering this direction at t = 1 alone" if rev else "of the last step's loss term alone"
            _log_series(
                ax,
                flow_series,
                label=f"‖dL/dc_t‖ {what}\n(what the verdict measures)",
                color=SERIES_COLOR["flow"],
                lw=2.0,
                z=4,
            )
            special["flow ‖dL/dc_t‖"] = flow_series
        _mark_special(ax, special)
        ref = flow_series[0] if rev else flow_series[-1]
        lo, hi = _ylim(np.concatenate([c, h, flow_series]), ref * d["vanishing_ratio"])
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        # the loss: every step for target "all", the last step for "last"
        where = "loss terms at every t; the last at t = T" if target == "all" else f"loss at t = T = {T}"
        ax.axvline(T, color=OKABE_ITO["black"], lw=1.4, label=where, zorder=2)
        if layer["verdict"] == "no_flow":
            ax.plot(
                [], [], " ", label="reverse direction read at t = T only:\nno flow through time to measure"
            )
        elif rev:
            _reverse_flow_marks(ax, layer, flow_series, ref, T, d["vanishing_ratio"], lo, hi)
        else:
            _forward_flow_marks(ax, layer, flow_series, ref, T, d["vanishing_ratio"], target, lo, hi)
        ax.set_title(
            _flow_title(layer, doc, T, d["vanishing_ratio"], d["exploding_ratio"]),
            loc="left",
            color=VERDICT_COLOR[layer["verdict"]],
            fontweight="bold",
        )
        ax.set_ylabel("Frobenius norm over\n(batch, units), log scale")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
    _set_time_axis(axes[-1], T)
    return fig


def _forward_flow_marks(
    ax, layer: dict, flow_series, ref: float, T: int, ratio: float, target: str, lo, hi
) -> None:
    """Threshold, fitted decay and horizon, measured back from the loss at t = T."""
    fl = layer["flow"]
    if np.isfinite(ref) and ref > 0:
        thr = ratio * ref
        ax.axhline(
            thr,
            color=GREY,
            ls="--",
            lw=1.1,
            label=f"vanishing threshold {ratio:g} × {'last-term ' * (target == 'all')}"
            f"value at t = T = {fmt(thr)}",
        )
        if fl.get("decay_fit") is not None:
            _draw_fit(ax, fl, T, False)
        else:  # a document from before schema 5: the Theil–Sen rate over all steps
            _draw_decay(ax, fl, ref, T, lo, hi)
    if fl["horizon_reaches_start"]:
        ax.plot([], [], " ", label=f"horizon: reaches t = 1 (all {T} steps)")
        return
    t_h = T - fl["horizon"]
    ax.axvline(
        t_h,
        color=VERDICT_COLOR["vanishing"],
        ls=":",
        lw=2.0,
        zorder=2,
        label=f"horizon: {fl['horizon']} steps back "
        f"({'below threshold' if np.isfinite(flow_series[t_h - 1]) else 'non-finite'} at t = {t_h})",
    )
    if layer["verdict"] == "vanishing":
        ax.axvspan(
            0,
            t_h,
            color=VERDICT_COLOR["vanishing"],
            alpha=0.10,
            lw=0,
            label=f"beyond the horizon (t < {t_h}): below the threshold,\n"
            "these steps barely move the weights",
        )


def _reverse_flow_marks(ax, layer: dict, flow: np.ndarray, ref: float, T: int, ratio: float, lo, hi) -> None:
    """Threshold, fitted decay and horizon of a reverse direction, measured from t = 1 (where the
    gradient enters it) towards t = T (back in its own time)."""
    fl = layer["flow"]
    ax.axvline(
        1, color=OKABE_ITO["black"], lw=1.4, ls="--", zorder=2, label="gradient measured entering at t = 1"
    )
    if not (np.isfinite(ref) and ref > 0):
        return
    thr = ratio * ref
    ax.axhline(
        thr, color=GREY, ls="--", lw=1.1, label=f"vanishing threshold {ratio:g} × value at t = 1 = {fmt(thr)}"
    )
    if fl.get("decay_fit") is not None:
        _draw_fit(ax, fl, T, True)
    else:
        _draw_decay(ax, fl, ref, T, lo, hi, reverse=True)
    if fl["horizon_reaches_start"]:
        ax.plot([], [], " ", label=f"horizon: reaches t = T (all {T} steps)")
        return
    t_h = 1 + fl["horizon"]
    ax.axvline(
        t_h,
        color=VERDICT_COLOR["vanishing"],
        ls=":",
        lw=2.0,
        zorder=2,
        label=f"horizon: {fl['horizon']} steps forward in t (t = {t_h})",
    )
    if layer["verdict"] == "vanishing":
        ax.axvspan(
            t_h,
            T,
            color=VERDICT_COLOR["vanishing"],
            alpha=0.10,
            lw=0,
            label=f"beyond the horizon (t > {t_h}): what enters at t = 1\nno longer reaches these steps",
        )


def _ylim(values: np.ndarray, threshold: float) -> tuple[float, float]:
    """Log-axis limits covering the finite positive values and the threshold, with margins."""
    v = _positive(values)
    pts = v[np.isfinite(v)]
    if np.isfinite(threshold) and threshold > 0:
        pts = np.append(pts, threshold)
    if pts.size == 0:
        return 1e-3, 1.0
    lo, hi = float(pts.min()), float(pts.max())
    span = max(math.log10(hi) - math.log10(lo), 1.0)
    return 10 ** (math.log10(lo) - 0.08 * span), 10 ** (math.log10(hi) + 0.12 * span)


def _draw_decay(ax, fl: dict, ref: float, T: int, lo: float, hi: float, reverse: bool = False) -> None:
    """Documents before schema 5 (no `decay_fit`): the Theil–Sen rate over all steps as a line of
    that slope through the value where the gradient enters (t = T; t = 1 for a reverse unit)."""
    rate = fl["decay_rate"]
    if rate is None or not np.isfinite(rate):
        return
    t = np.linspace(1, T, 200)
    back = (t - 1) if reverse else (T - t)  # steps back from where the gradient enters
    with np.errstate(over="ignore", under="ignore"):
        log10_y = math.log10(ref) - rate * back / math.log(10)  # ln n falls by `rate` per step back
        y = np.where((log10_y > math.log10(lo)) & (log10_y < math.log10(hi)), 10**log10_y, np.nan)
    ax.plot(
        t,
        y,
        color=OKABE_ITO["black"],
        lw=0.9,
        ls="-.",
        alpha=0.7,
        label=f"fitted decay rate {fmt(fl['decay_rate'])}/step (×{fmt(fl['factor_per_step'])} per step back;"
        "\nTheil–Sen slope over all steps)",
    )


FIT_COLORS = (OKABE_ITO["black"], OKABE_ITO["orange"])


def _draw_fit(ax, fl: dict, T: int, reverse: bool) -> None:
    """Each fitted exponential of `flow.decay_fit` over the steps where it was fitted (within the
    horizon window), and the change point; nothing is extrapolated beyond its window."""
    segs = fl["decay_fit"]["segments"]
    for j, seg in enumerate(segs):
        k0, k1 = seg["steps_back"]
        t = [1 + k0, 1 + k1] if reverse else [T - k0, T - k1]
        a, b = t
        which = "" if len(segs) == 1 else ("first, " if j == 0 else "then, ")
        ax.plot(
            t,
            seg["fitted_norm"],
            color=FIT_COLORS[j],
            lw=1.6,
            ls="--",
            zorder=5,
            label=f"fit {which}t = {a}..{b}: {fmt(seg['rate'])}/step (×{fmt(seg['factor_per_step'])})",
        )
    change = fl["decay_fit"]["change_steps_back"]
    if change is not None:
        t_c = 1 + change if reverse else T - change
        ax.plot(
            [t_c], [segs[1]["fitted_norm"][0]], "o", ms=6, mfc="white", mec=OKABE_ITO["orange"], mew=1.5,
            zorder=6, label=f"the decay rate changes at t = {t_c}",
        )  # fmt: skip
    elif not segs:
        ax.plot([], [], " ", label="too few finite steps within the horizon to fit a decay")


@styled
def gate_heatmaps(doc: dict, layer: int = 0) -> Figure:
    """Per gate, the batch-mean activation as a units x time heatmap, and the saturated fraction beneath.

    Drawn from `layers[k].gate_heatmap` (docs/json-schema.md): the batch-mean activations,
    binned in the analysis to at most 64 rows x 600 columns. Colour scales are fixed: 0..1
    for the sigmoid gates, -1..1 for the tanh candidate g.
    """
    L = doc["layers"][layer]
    eps = doc["config"]["diagnostics"]["saturation_threshold"]
    heat = L["gate_heatmap"]
    k_units, k_steps, B = heat["units_per_row"], heat["steps_per_column"], heat["batch"]
    T = len(L["grad_c_norm"])
    H = len(L["gates"]["input"]["unit_saturated_low"])
    notes = []
    fig = new_figure(12.0, 13.0)
    grid = fig.add_gridspec(8, 1, height_ratios=[3.2, 1.0] * 4)
    ax_prev = None
    for k, name in enumerate(GATES):
        img = np.asarray(heat[name], np.float64)  # (rows, columns): binned units x binned steps
        ax = fig.add_subplot(grid[2 * k], sharex=ax_prev)
        strip = fig.add_subplot(grid[2 * k + 1], sharex=ax)
        ax_prev = ax
        rows, cols = img.shape
        vmin, vmax, cmap = (-1.0, 1.0, "PuOr_r") if name == "cell" else (0.0, 1.0, "cividis")
        im = ax.imshow(
            img,
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            extent=(0.5, cols * k_steps + 0.5, -0.5, rows * k_units - 0.5),
        )
        ax.set_ylim(-0.5, H - 0.5)
        ax.grid(False)
        sym = GATE_SYMBOL[name]
        g = L["gates"][name]
        ax.set_title(
            f"{name} gate {sym}_t: batch mean · mean {g['mean']:.3f}, std {g['std']:.3f}, "
            f"saturated low {g['saturated_low']:.1%}, high {g['saturated_high']:.1%}",
            loc="left",
            color=GATE_COLOR[name],
            fontweight="bold",
        )
        ax.set_ylabel("hidden unit")
        ax.tick_params(labelbottom=False)
        cb = fig.colorbar(im, ax=[ax, strip], fraction=0.025, pad=0.01, aspect=12)
        cb.set_label(f"{sym} (tanh)" if name == "cell" else f"{sym} (sigmoid)")
        sat = np.asarray(g["saturation_over_time"], np.float64)
        x, v, _ = envelope(sat)
        strip.fill_between(x, 0, v, color=GATE_COLOR[name], alpha=0.35, lw=0, step=None)
        strip.plot(x, v, color=GATE_COLOR[name], lw=1.0)
        strip.set_ylim(0, 1)
        strip.set_yticks([0, 0.5, 1])
        rule = "|g| > " + f"{1 - 2 * eps:g}" if name == "cell" else f"< {eps:g} or > {1 - eps:g}"
        strip.set_ylabel(f"saturated\n({rule})", fontsize=8)
        if k < 3:
            strip.tick_params(labelbottom=False)
    if k_units > 1:
        notes.append(
            f"{H} units shown in {math.ceil(H / k_units)} rows: "
            f"each row is the mean of {k_units} consecutive units"
        )
    if k_steps > 1:
        notes.append(
            f"{T} steps shown in {math.ceil(T / k_steps)} columns: each column is the mean of {k_steps} steps"
        )
    sat_note = _downsample_note(T)
    if sat_note:
        notes.append("saturation strips: " + sat_note.split(": ", 1)[1])
    name = _name(doc, layer)
    notes.insert(0, f"{name}: gate activations, mean over the batch of {B}; fixed colour scales")
    _header(fig, f"Gate activations over time — {name}", doc, L["verdict"], "\n".join(notes), layer)
    _set_time_axis(strip, T)
    return fig


def _saturation_status(doc: dict, layer: int, name: str, H: int) -> tuple[str, list[str]]:
    """A saturation panel's status line and the findings (LD201/LD202) about that gate."""
    g = doc["layers"][layer]["gates"][name]
    if name == "forget":
        status = f"stuck closed {g['stuck_low']}/{H} · integrators {g['stuck_high']}/{H}"
    else:
        status = f"stuck units {g['stuck_units']}/{H}"
    flagged = [
        f["code"]
        for f in doc["findings"]
        if _is_entry(f, doc, layer)
        and (
            (f["code"] == "LD201" and f["message"].startswith(f"{name} gate"))
            or (f["code"] == "LD202" and (g["stuck_low"] if name == "forget" else g["stuck_units"]))
        )
    ]
    return status, flagged


@styled
def saturation(doc: dict, layer: int = 0) -> Figure:
    """Karpathy, Johnson & Fei-Fei (2015), Fig. 3: per unit, the fraction of time each gate is
    left-saturated (x) against right-saturated (y); one panel per gate."""
    L = doc["layers"][layer]
    dcfg = doc["config"]["diagnostics"]
    eps, stuck = dcfg["saturation_threshold"], dcfg["stuck_fraction"]
    fig = new_figure(14.0, 4.75)
    axes = fig.subplots(1, 4)
    fig.get_layout_engine().set(wspace=0.06)
    for ax, name in zip(axes, GATES, strict=True):
        g = L["gates"][name]
        x = np.asarray(g["unit_saturated_low"], np.float64)
        y = np.asarray(g["unit_saturated_high"], np.float64)
        H = len(x)
        ax.plot([0, 1], [1, 0], color=GREY, lw=0.8)  # x + y <= 1: a unit cannot be both at once
        ax.plot(
            [0, stuck],
            [stuck, 0],
            color=OKABE_ITO["vermillion"],
            ls="--",
            lw=1.0,
            label=f"saturated > {stuck:g} of the time",
        )
        ax.scatter(
            x,
            y,
            s=28,
            color=GATE_COLOR[name],
            alpha=0.65,
            edgecolor="black",
            linewidth=0.4,
            label=f"{H} units",
            zorder=3,
        )
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        sym = GATE_SYMBOL[name]
        if name == "cell":
            ax.set_xlabel(f"fraction of time left-saturated\n({sym} < {2 * eps - 1:g})")
            ax.set_ylabel(f"fraction of time right-saturated\n({sym} > {1 - 2 * eps:g})")
        else:
            ax.set_xlabel(f"fraction of time left-saturated\n({sym} < {eps:g})")
            ax.set_ylabel(f"fraction of time right-saturated\n({sym} > {1 - eps:g})")
        status, flagged = _saturation_status(doc, layer, name, H)
        ax.set_title(
            f"{name} ({sym})" + (f" · {', '.join(flagged)}" if flagged else "") + f"\n{status}",
            color=OKABE_ITO["vermillion"] if flagged else "black",
            fontweight="bold" if flagged else "normal",
        )
        at_origin = int(np.sum((x == 0) & (y == 0)))
        if at_origin:
            ax.annotate(
                f"{at_origin} of {H} units at (0, 0):\nnever saturated",
                (0, 0),
                xytext=(0.12, 0.12),
                textcoords="data",
                fontsize=8,
                arrowprops={"arrowstyle": "->", "color": GREY, "lw": 0.8},
            )
    axes[0].legend(loc="upper right", frameon=False, fontsize=7.5)
    note = (
        f"each dot is one unit: fraction of its (time × batch) entries saturated, per side · "
        f"{_layer_codes(doc, layer, ('LD2',))}"
    )
    title = f"Gate saturation per unit (Karpathy et al. 2015) — {_name(doc, layer)}"
    _header(fig, title, doc, L["verdict"], note, layer)
    return fig


def forget_headline(L: dict, T: int) -> tuple[str, str]:
    """The forget-gate figure's headline and its colour, from the numbers the figure shows.

    The retention e^(mean ln f) is a geometric mean over all entries: a few small f pull it
    down while other units keep f near 1, and those units carry gradient along the cell path
    whatever the mean. So the headline says the forget gates alone erase the gradient only
    when no unit's own product of f stays above the threshold over the T steps
    (`flow.cell_path_open_units` = 0); otherwise it counts the units that keep it open.
    """
    fl = L["flow"]
    H = len(L["gates"]["forget"]["unit_saturated_low"])
    open_units, longest = fl.get("cell_path_open_units"), fl.get("cell_path_horizon_max")
    if open_units is None:  # a document from before schema 5: the average unit only
        if fl["cell_path_horizon"] < T:
            text = f"average cell-path horizon {fmt(fl['cell_path_horizon'])} < T = {T} steps"
            return text, OKABE_ITO["vermillion"]
        return f"cell-path horizon {fmt(fl['cell_path_horizon'])} ≥ T = {T} steps", OKABE_ITO["bluish_green"]
    if open_units == 0:
        shorter = L["verdict"] == "vanishing" and not fl["horizon_reaches_start"] and fl["horizon"] < longest
        tail = f" (the {fl['horizon']}-step gradient horizon is shorter still)" if shorter else ""
        return (
            f"no unit keeps its cell path open over T = {T} steps (longest per-unit horizon "
            f"{fmt(longest)}):\nthe forget gates alone erase the gradient within {fmt(longest)} steps{tail}",
            OKABE_ITO["vermillion"],
        )
    short = L["verdict"] == "vanishing" and not fl["horizon_reaches_start"]
    tail = f" within the {fl['horizon']}-step gradient horizon" if short else ""
    return (
        f"{open_units} of {H} units keep their cell path open over all T = {T} steps:\n"
        f"the forget gates alone do not erase the gradient{tail}",
        OKABE_ITO["orange"] if short else OKABE_ITO["bluish_green"],
    )


@styled
def forget_gate(doc: dict, layer: int = 0) -> Figure:
    """Histogram of forget-gate values f_t with the time constant tau = 1 / (1 - f) on a top axis."""
    L = doc["layers"][layer]
    fl = L["flow"]
    eps = doc["config"]["diagnostics"]["saturation_threshold"]
    T = len(L["grad_c_norm"])
    edges = np.asarray(L["forget_histogram"]["edges"], np.float64)
    counts = np.asarray(L["forget_histogram"]["counts"], np.float64)
    fig = new_figure(11.0, 5.2)
    ax = fig.add_subplot()
    ax.axvspan(0, eps, color=GREY, alpha=0.12, lw=0)
    ax.axvspan(1 - eps, 1, color=GREY, alpha=0.12, lw=0)
    ax.bar(
        edges[:-1],
        counts,
        width=np.diff(edges),
        align="edge",
        color=GATE_COLOR["forget"],
        edgecolor="white",
        linewidth=0.4,
        label="f_t entries (time × batch × unit)",
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"forget gate value f_t (sigmoid; shaded: saturated, < {eps:g} closed, > {1 - eps:g} open)")
    ax.set_ylabel("count of f_t entries")
    ret = fl["forget_retention"]
    ax.axvline(
        ret,
        color=OKABE_ITO["black"],
        lw=1.6,
        label=f"retention e^(mean ln f) = {fmt(ret)}, geometric mean over all entries: "
        f"τ ≈ {fmt(fl['forget_time_constant'])} steps,\naverage cell-path horizon "
        f"{fmt(fl['cell_path_horizon'])} steps",
    )
    if fl.get("cell_path_open_units") is not None:
        H = len(L["gates"]["forget"]["unit_saturated_low"])
        ax.plot(
            [], [], " ",
            label=f"per unit: {fl['cell_path_open_units']} of {H} keep Π f above "
            f"{doc['config']['diagnostics']['vanishing_ratio']:g} over T = {T} steps; "
            f"longest horizon {fmt(fl['cell_path_horizon_max'])} steps",
        )  # fmt: skip
    if T > 1:
        f_T = 1 - 1 / T
        ax.axvline(
            f_T,
            color=OKABE_ITO["vermillion"],
            ls="--",
            lw=1.3,
            label=f"τ = T = {T} steps (f = {f_T:.4g}): memory as long as the sequence",
        )
    ax.legend(loc="best", frameon=True, framealpha=0.9)
    # the time constant on a top axis: tau = 1 / (1 - f), in steps
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    taus = (1, 1.25, 1.5, 2, 3, 5, 10, 20, 100)  # ticks at f = 1 - 1/tau, spaced to stay legible
    top.set_xticks([1 - 1 / t for t in taus])
    top.set_xticklabels([f"{t:g}" for t in taus], fontsize=8)
    top.set_xlabel("forget time constant τ = 1 / (1 − f)  (steps)")
    top.grid(False)
    top.spines["top"].set_visible(True)
    verdict_txt, color = forget_headline(L, T)
    ax.set_title(f"{_name(doc, layer)}: {verdict_txt}", loc="left", fontweight="bold", color=color, pad=34)
    codes = _layer_codes(doc, layer, ("LD103", "LD2"))
    _header(
        fig,
        f"Forget gate and memory time constant — {_name(doc, layer)}",
        doc,
        L["verdict"],
        codes,
        layer,
    )
    return fig


@styled
def gate_grads(doc: dict, layer: int = 0) -> Figure:
    """||dL/dz_t|| per gate (eqs. 10-13) against t, log axis: which gate carries the gradient."""
    L = doc["layers"][layer]
    T = len(L["grad_c_norm"])
    target = doc["config"]["loss"]["target"]
    fig = new_figure(12.0, 5.0)
    ax = fig.add_subplot()
    eq = {"input": 10, "forget": 11, "cell": 12, "output": 13}
    series = {}
    for name in GATES:
        y = np.asarray(L["grad_z_norm"][name], np.float64)
        sym = GATE_SYMBOL[name]
        _log_series(ax, y, label=f"‖dL/dz^{sym}_t‖  {name} (eq. {eq[name]})", color=GATE_COLOR[name], lw=1.5)
        series[f"dL/dz^{sym}"] = y
    _mark_special(ax, series)
    lo, hi = _ylim(np.concatenate(list(series.values())), math.nan)
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    where = "loss terms at every t; the last at t = T" if target == "all" else f"loss at t = T = {T}"
    ax.axvline(T, color=OKABE_ITO["black"], lw=1.4, label=where, zorder=2)
    ax.set_ylabel("Frobenius norm over (batch, units), log scale")
    ax.set_title(
        f"{_name(doc, layer)}: {L['verdict'].upper()} — gradient reaching each gate's pre-activation",
        loc="left",
        color=VERDICT_COLOR[L["verdict"]],
        fontweight="bold",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
    _set_time_axis(ax, T)
    title = f"Gradient per gate over time — {_name(doc, layer)}"
    _header(fig, title, doc, L["verdict"], _downsample_note(T), layer)
    return fig


@styled
def dynamics(doc: dict, layer: int = 0) -> Figure:
    """Lyapunov spectrum (exponent against index, ± spread over samples) and the spectral norm
    of the one-step state Jacobian over time, beside the cell path (max f_t) and dc_t/dc_{t-1}."""
    L = doc["layers"][layer]
    dyn = L["dynamics"]
    T = len(L["grad_c_norm"])
    fig = new_figure(12.0, 5.2)
    left, right = fig.subplots(1, 2, width_ratios=(1, 1.6))
    lam = np.asarray(dyn["lyapunov"], np.float64)
    sd = np.asarray(dyn["lyapunov_std"], np.float64)
    idx = np.arange(1, len(lam) + 1)
    colors = [OKABE_ITO["vermillion"] if v > 0 else OKABE_ITO["blue"] for v in lam]
    left.axhline(0.0, color=OKABE_ITO["black"], lw=1.0)
    left.errorbar(idx, lam, yerr=sd, fmt="none", ecolor=GREY, elinewidth=1.2, capsize=3, zorder=2)
    label = f"λ_i, mean over samples (± std){lyapunov_span(dyn)}"
    left.scatter(idx, lam, c=colors, s=36, zorder=3, label=label)
    g = dyn.get("gradient") or {}
    if g.get("measured_rate") is not None and math.isfinite(g["measured_rate"]):
        left.axhline(
            g["measured_rate"],
            color=OKABE_ITO["bluish_green"],
            ls="--",
            lw=1.3,
            label=f"measured growth of ‖dL/dc_t‖ per step back: {g['measured_rate']:+.3f}",
        )
    left.set_xlabel("exponent index i (largest first)")
    left.set_ylabel("Lyapunov exponent λ_i (natural log per step)")
    left.set_xticks(idx)
    sign = (
        "positive: chaotic, gradients grow"
        if lam.size and lam[0] > 0
        else "negative: contracting, gradients vanish"
    )
    left.set_title(
        f"λ₁ = {lam[0]:+.3f}/step ({sign})" if lam.size else "no exponents",
        loc="left",
        fontweight="bold",
        color=OKABE_ITO["vermillion"] if lam.size and lam[0] > 0 else OKABE_ITO["blue"],
        fontsize=10,
    )
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False, fontsize=8)
    steps = dyn["norm_steps"]  # t = 1..T of each value
    for key, name, color in (
        ("spectral_norm", "‖∂s_t/∂s_t-1‖₂, state (c, h), 2H × 2H", OKABE_ITO["blue"]),
        ("dcdc_norm", "‖dc_t/dc_t-1‖₂, all paths", OKABE_ITO["orange"]),
        ("cell_path_norm", "max f_t: the cell path alone (eq. 9)", GATE_COLOR["forget"]),
    ):
        y = np.asarray([np.nan if v is None else v for v in dyn[key]], np.float64)
        if y.size:
            _log_series(right, y, label=name, color=color, lw=1.4, t=steps)
    right.axhline(1.0, color=OKABE_ITO["black"], lw=1.0, ls=":", label="norm 1: neither grows nor shrinks")
    right.set_yscale("log")
    S = dyn["settings"]["norm_samples"]
    right.set_ylabel("spectral norm, " + ("sample 1 of the batch" if S == 1 else f"median over {S} samples"))
    stride = dyn["settings"]["norm_stride"]
    every = f", every {_ordinal(stride)} step counted back from t = {T}" if stride > 1 else ""
    right.set_title(f"one-step Jacobians over time{every}", loc="left", fontweight="bold", fontsize=10)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False, fontsize=8)
    _set_time_axis(right, T)
    codes = _layer_codes(doc, layer, ("LD105", "LD101", "LD102"))
    title = f"State dynamics: Jacobians and Lyapunov spectrum — {_name(doc, layer)}"
    _header(fig, title, doc, L["verdict"], codes, layer)
    return fig


# ------------------------------------------------------------------------- files


# The file stems figure_makers can give: these once per document, and per layer k
# <kind>_l<k> (<kind>_l<k>_reverse for a backward direction).
DOCUMENT_FIGURES = ("grad_flow", "batches_flow")
LAYER_FIGURES = ("gate_heatmaps", "saturation", "forget_gate", "gate_grads", "dynamics")
FIGURE_NAME = re.compile(rf"{'|'.join(DOCUMENT_FIGURES)}|({'|'.join(LAYER_FIGURES)})_l\d+(_reverse)?")
FIGURE_NAMES_TEXT = (
    f"{', '.join(DOCUMENT_FIGURES)}, and per layer k {', '.join(f'{k}_l<k>' for k in LAYER_FIGURES)} "
    "(_reverse appended for a backward direction)"
)


def figure_makers(doc: dict) -> list[tuple[str, Callable[[], Figure]]]:
    """(file stem, function that builds the Figure) for every figure of an analysis document,
    in the documented order: the names without building anything (`plot --only`)."""
    makers: list[tuple[str, Callable[[], Figure]]] = [("grad_flow", partial(grad_flow, doc))]
    for k, layer in enumerate(doc["layers"]):  # one per layer, or per direction of a layer
        key = unit_key(layer)  # l0, or l0_reverse
        if "gate_heatmap" in layer:  # absent with checkpointed BPTT (no full gate cache)
            makers.append((f"gate_heatmaps_{key}", partial(gate_heatmaps, doc, k)))
        makers.append((f"saturation_{key}", partial(saturation, doc, k)))
        makers.append((f"forget_gate_{key}", partial(forget_gate, doc, k)))
        makers.append((f"gate_grads_{key}", partial(gate_grads, doc, k)))
        if "dynamics" in layer:
            makers.append((f"dynamics_{key}", partial(dynamics, doc, k)))
    if doc.get("batches"):  # data.batches > 1: the spread over batches
        from .batches import batches_flow

        makers.append(("batches_flow", partial(batches_flow, doc)))
    return makers


def figures(doc: dict, only: Sequence[str] = ()) -> Iterator[tuple[str, Figure]]:
    """(file stem, Figure) for every figure of an analysis document, in the documented order;
    with `only`, just those (names of `figure_makers`; an unknown name is an InputError that
    lists the document's figures, raised before any figure is built).

    doc: `analyze --format json` as read back by `jsonout.loads` (or the same round trip of
    `AnalysisResult.to_dict()`): the figures need nothing else.
    """
    makers = figure_makers(doc)
    if only:
        names = [name for name, _ in makers]
        unknown = [name for name in only if name not in names]
        if unknown:
            raise InputError(
                f"--only: no figure {', '.join(map(repr, unknown))} for this model; "
                f"its figures: {', '.join(names)}"
            )
        makers = [(name, make) for name, make in makers if name in only]
    for name, make in makers:
        yield name, make()
