"""Figures of a compare document (`compare.compare()`, docs/compare.md).

Renderers only: every number drawn is read from the document (medians and quartiles
over seeds are computed in compare.py). Figures use the Agg canvas, never pyplot, and
the style of report/figures/style.py (Okabe & Ito palette). Files (PNG unless --format says):

    compare_flow.png          median ||dL/dc_t|| / ||dL/dc_T|| against t per scheme, IQR bands,
                              one log axis per layer, with the vanishing threshold
    compare_forget.png        small multiples: the forget-gate distribution of each scheme
    compare_lyapunov.png      the Lyapunov spectrum of each scheme (median, IQR over seeds)
    compare_horizon_vs_T.png  with a sequence-length sweep: horizon against T per scheme,
                              with the diagonal horizon = T ("reaches the start")
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
from matplotlib.figure import Figure

from ..describe import model_line
from ..inert import figure as inert
from ..sweep import (
    bottleneck_lyapunov,
    finite,
    has_lyapunov,
    heatmap_layout,
    line_axis,
    panel_cells,
    value_text,
    varying,
)
from .style import (
    DIVERGING_CMAP,
    GREY,
    LINE_STYLES,
    OKABE_ITO,
    SEQUENTIAL_CMAP,
    header,
    new_figure,
    series_style,
    styled,
)

MAX_SERIES = 8  # cells drawn in the per-T figures of a grid sweep: the best at that T


def scheme_style(doc: dict) -> dict[str, tuple[str, str]]:
    """cell label -> (colour, line style), fixed by the order of the cells (without a grid:
    the order the schemes were given)."""
    return series_style(list(dict.fromkeys(a["label"] for a in doc["aggregates"])))


def _subtitle(doc: dict, T: int, flow: bool = False) -> str:
    c = doc["config"]
    m, d, lo = c["model"], c["data"], c["loss"]
    n = len(doc["seed_values"])
    return (
        f"{model_line(m)} · {d['task']} data, "
        f"B={d['batch_size']}, T={T} · {lo['type']} on '{lo['target']}' · median and IQR over {n} seeds "
        "(same batch for every scheme)"
        + (
            "\nflow measured on the last step's loss term, as analyze does for target 'all'"
            if flow and lo["target"] == "all"
            else ""
        )
    )


def _ranked(doc: dict, T: int) -> list[dict]:
    """The cells at T in rank order; with a grid, the best MAX_SERIES of them."""
    aggs = sorted((a for a in doc["aggregates"] if a["seq_len"] == T), key=lambda a: a["rank"])
    return aggs[:MAX_SERIES]


def _best_of(doc: dict, T: int) -> str:
    n = sum(a["seq_len"] == T for a in doc["aggregates"])
    return f" · the best {MAX_SERIES} of {n} cells" if n > MAX_SERIES else ""


def _q(q: dict) -> str:
    def f(v):
        return f"{v:.4g}" if math.isfinite(v) else str(v)

    return f"{f(q['median'])} [{f(q['q1'])}, {f(q['q3'])}]"


def _zoom_window(aggs: list[dict], T: int) -> int | None:
    """Steps before the loss to show in the zoom panel: where the horizons are decided."""
    short = [lay["horizon"]["median"] for a in aggs for lay in a["layers"] if lay["horizon"]["median"] < T]
    if not short:
        return None
    W = int(min(T, max(20, 2.5 * max(short))))
    return W if W < 0.6 * T else None  # the full panel already shows it


def _draw_flow(ax, aggs: list[dict], k: int, T: int, colors: dict, ratio: float, t0: int = 1) -> dict:
    """Median and IQR band of ||dL/dc_t|| / ||dL/dc_T|| over t = t0..T for every scheme."""
    t = np.arange(t0, T + 1)
    floor, top, underflow = math.inf, 1.0, False
    for a in aggs:
        if k >= len(a["layers"]):
            continue
        fl = a["layers"][k]["flow"]
        med, q1, q3 = (_pos(np.asarray(fl[x], np.float64)[t0 - 1 :]) for x in ("median", "q1", "q3"))
        color, ls = colors[a["label"]]
        hz = a["layers"][k]["horizon"]
        ax.fill_between(t, q1, q3, color=color, alpha=0.18, lw=0)
        ax.plot(t, med, color=color, ls=ls, lw=1.8, label=f"{a['rank']}. {a['label']}: horizon {_q(hz)}")
        if np.isfinite(q1).any():
            floor = min(floor, np.nanmin(q1))
        if np.isfinite(q3).any():
            top = max(top, np.nanmax(q3))
        underflow |= bool(np.any(np.asarray(fl["median"], np.float64)[t0 - 1 :] == 0))
    ax.axhline(
        ratio, color=OKABE_ITO["black"], ls="--", lw=1.2, label=f"vanishing threshold: {ratio:g} × ‖dL/dc_T‖"
    )
    ax.set_yscale("log")
    lo = max(min(floor, ratio) / 10.0, 1e-300) if math.isfinite(floor) else ratio / 10.0
    ax.set_ylim(lo, top * 10.0)
    ax.set_xlim(t0, T)
    return {"underflow": underflow}


@styled
def flow_figure(doc: dict, T: int | None = None) -> Figure:
    """Median ||dL/dc_t|| / ||dL/dc_T|| against t, one line per scheme with its IQR band.

    Left: all of t = 1..T. Right (when the horizons are short against T): a zoom on the
    last steps before the loss, where the threshold is crossed.
    """
    T = doc["detail_seq_len"] if T is None else T
    aggs = _ranked(doc, T)
    L = max(len(a["layers"]) for a in aggs)  # a grid may sweep model.num_layers
    colors = scheme_style(doc)
    ratio = doc["vanishing_ratio"]
    W = _zoom_window(aggs, T)
    fig = new_figure(12.0, 1.5 + 4.2 * L)
    if W is None:
        grid = fig.subplots(L, 1, squeeze=False)
    else:
        grid = fig.subplots(L, 2, squeeze=False, gridspec_kw={"width_ratios": [1.7, 1.0]})
    header(
        fig,
        f"Gradient flow by init scheme at T = {T}: ‖dL/dc_t‖ relative to its value at the loss"
        + _best_of(doc, T)
        + "\n"
        + _subtitle(doc, T, flow=True),
    )
    underflow = False
    for k in range(L):
        ax = grid[k, 0]
        underflow |= _draw_flow(ax, aggs, k, T, colors, ratio)["underflow"]
        ax.set_ylabel("‖dL/dc_t‖ / ‖dL/dc_T‖  (log)")
        ax.set_title(("" if L == 1 else f"layer {k}: ") + f"t = 1 … {T}", loc="left", fontsize=9.5)
        ax.legend(loc="lower right", frameon=True, framealpha=0.9, title="rank. scheme: horizon median [IQR]")
        if W is not None:
            zx = grid[k, 1]
            _draw_flow(zx, aggs, k, T, colors, ratio, t0=T - W + 1)
            zx.set_ylim(ratio / 1e3, 10.0)
            zx.set_title(f"zoom: the last {W} steps before the loss", loc="left", fontsize=9.5)
            ax.axvspan(T - W + 1, T, color=GREY, alpha=0.08, lw=0)
    xlabel = "time step t (the loss is at t = T; the gradient flows right to left)"
    if underflow:
        xlabel += "\na line that stops short: ‖dL/dc_t‖ underflowed to exactly 0 before t = 1"
    for ax in grid[-1]:
        ax.set_xlabel(xlabel if ax is grid[-1, 0] else "time step t")
    return fig


def _pos(y: np.ndarray) -> np.ndarray:
    """Values a log axis can show: finite and positive, others NaN (a gap)."""
    y = np.asarray(y, np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(y) & (y > 0), y, np.nan)


@styled
def forget_figure(doc: dict, T: int | None = None) -> Figure:
    """Small multiples: each scheme's forget-gate values f_t pooled over seeds (and time, batch, units)."""
    T = doc["detail_seq_len"] if T is None else T
    aggs = _ranked(doc, T)
    L = max(len(a["layers"]) for a in aggs)  # a grid may sweep model.num_layers
    colors = scheme_style(doc)
    edges = np.asarray(doc["forget_histogram_edges"], np.float64)
    eps = doc["config"]["diagnostics"]["saturation_threshold"]
    n = len(aggs)
    cols = min(4, math.ceil(n / math.ceil(n / 4)))  # 5 -> 3 + 2, 6 -> 3 + 3, 8 -> 4 + 4
    rows = math.ceil(n / cols)
    fig = new_figure(max(2.9 * cols + 0.6, 10.5), 1.3 + 2.5 * rows)  # room for the subtitle
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    header(
        fig,
        f"Forget-gate values f_t at init by scheme, T = {T} (pooled over seeds, steps, batch and units)"
        + _best_of(doc, T)
        + "\n"
        + _subtitle(doc, T)
        + "\nblack line: the median over seeds of the forget mean f̄; τ = 1 / (1 − e^(mean ln f)) steps",
    )
    for ax, a in zip(axes, aggs, strict=False):
        color, _ = colors[a["label"]]
        for k, lay in enumerate(a["layers"]):
            counts = np.asarray(lay["forget_histogram"], np.float64)
            share = counts / max(counts.sum(), 1.0)
            ax.stairs(
                share,
                edges,
                fill=k == 0,
                color=color,
                alpha=0.55 if k == 0 else 1.0,
                ls=LINE_STYLES[k % len(LINE_STYLES)],
                lw=1.2,
                label=f"layer {k}" if L > 1 else None,
            )
        lay0 = a["layers"][0]
        fbar = lay0["forget_mean"]["median"]
        tau = lay0["forget_time_constant"]["median"]
        ax.axvline(fbar, color=OKABE_ITO["black"], lw=1.2)
        ax.axvspan(0, eps, color=GREY, alpha=0.12, lw=0)
        ax.axvspan(1 - eps, 1, color=GREY, alpha=0.12, lw=0)
        where = " (layer 0)" if L > 1 else ""
        ax.set_title(
            f"{a['rank']}. {a['label']}\nf̄ = {fbar:.3g}, τ = {tau:.3g} steps{where}",
            fontsize=9,
            loc="left",
        )
        ax.set_xlim(0, 1)
        if L > 1:
            ax.legend(loc="upper left", fontsize=7.5)
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("share of f_t entries")
        if (
            ax.get_subplotspec().is_last_row()
            or not axes[min(len(axes) - 1, list(axes).index(ax) + cols)].get_visible()
        ):
            ax.set_xlabel(f"f_t (shaded: < {eps:g}, > {1 - eps:g})")
            ax.tick_params(labelbottom=True)  # no panel below shows them
    return fig


@styled
def lyapunov_figure(doc: dict, T: int | None = None) -> Figure:
    """Median Lyapunov spectrum per scheme (exponent against index, IQR bars over seeds)."""
    T = doc["detail_seq_len"] if T is None else T
    aggs = _ranked(doc, T)
    L = max(len(a["layers"]) for a in aggs)  # a grid may sweep model.num_layers
    colors = scheme_style(doc)
    fig = new_figure(max(10.5, 4.6 * L + 3.2), 5.0)
    axes = fig.subplots(1, L, squeeze=False).ravel()
    header(
        fig,
        f"Lyapunov spectrum of the state (c, h) at init by scheme, T = {T}"
        + _best_of(doc, T)
        + "\n"
        + _subtitle(doc, T)
        + "\nmedian over seeds with IQR bars; λ < 0: contracting (gradients vanish ~e^(λ k)), "
        "λ > 0: chaotic (they grow)",
    )
    n = len(aggs)
    for k, ax in enumerate(axes):
        ax.axhline(0.0, color=OKABE_ITO["black"], lw=1.0)
        for j, a in enumerate(aggs):
            spec = a["layers"][k]["lyapunov"] if k < len(a["layers"]) else []
            if not spec:
                continue
            color, _ = colors[a["label"]]
            idx = np.arange(1, len(spec) + 1) + (j - (n - 1) / 2) * 0.08  # side by side
            med = np.array([q["median"] for q in spec], np.float64)
            lo = med - np.array([q["q1"] for q in spec], np.float64)
            hi = np.array([q["q3"] for q in spec], np.float64) - med
            ax.errorbar(idx, med, yerr=[lo, hi], fmt="o-", color=color, ms=4, lw=1.2, capsize=2,
                        label=f"{a['rank']}. {a['label']}: λ₁ = {med[0]:+.3f}")  # fmt: skip
        ax.set_xlabel("exponent index i (largest first)")
        if k == 0:
            ax.set_ylabel("Lyapunov exponent λ_i (natural log per step)")
        ax.set_title(f"layer {k}" if L > 1 else "", loc="left", fontsize=10)
        ax.legend(loc="lower left", fontsize=8, frameon=True, framealpha=0.9)
    return fig


@styled
def horizon_figure(doc: dict) -> Figure:
    """Gradient horizon against T per scheme (median, IQR band), with the diagonal horizon = T."""
    lens = np.asarray(doc["seq_lens"], np.float64)
    colors = scheme_style(doc)
    by = {(a["label"], a["seq_len"]): a for a in doc["aggregates"]}
    ranking = doc["ranking"][str(doc["detail_seq_len"])][:MAX_SERIES]
    fig = new_figure(8.5, 5.8)
    ax = fig.subplots()
    c = doc["config"]
    m, d = c["model"], c["data"]
    header(
        fig,
        "Gradient horizon against sequence length, by init scheme\n"
        f"{model_line(m)} · {d['task']} data, "
        f"B={d['batch_size']} · median and IQR over {len(doc['seed_values'])} seeds",
    )
    ax.plot(
        lens,
        lens,
        color=OKABE_ITO["black"],
        ls=(0, (1, 2)),
        lw=1.4,
        zorder=5,
        label="horizon = T: the gradient reaches the start (t = 1)",
    )
    lows = []
    for lab in ranking:
        color, ls = colors[lab]
        q = [by[(lab, int(T))]["horizon"] for T in lens if (lab, int(T)) in by]
        if len(q) != len(lens):
            continue  # a cell not measured at every length (a grid without a data.seq_len axis)
        med = np.array([x["median"] for x in q])
        q1 = np.array([x["q1"] for x in q])
        q3 = np.array([x["q3"] for x in q])
        ax.fill_between(lens, _pos(q1), _pos(q3), color=color, alpha=0.18, lw=0)
        ax.plot(lens, _pos(med), color=color, ls=ls, lw=2.2, marker="o", ms=5, label=lab)
        lows.append(np.nanmin(_pos(q1)) if np.isfinite(_pos(q1)).any() else lens.min())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(lens)
    ax.set_xticklabels([f"{int(T)}" for T in lens])
    lo = max(min(lows + [lens.min()]) / 1.5, 0.5)
    ax.set_ylim(lo, lens.max() * 1.5)
    ticks = [
        v for m in (1, 10, 100, 1000, 10000, 100000) for v in (m, 2 * m, 5 * m) if lo <= v <= lens.max() * 1.5
    ]
    ticks = sorted(set(ticks) | {float(T) for T in lens})  # the lengths themselves: horizon = T
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{v:g}" for v in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel("gradient horizon (steps back from the loss; log)")
    ax.legend(loc="upper left", frameon=True, framealpha=0.9, title=f"ranked at T = {doc['detail_seq_len']}")
    return fig


def _axis_label(field: str) -> str:
    return "sequence length T (data.seq_len, steps)" if field == "data.seq_len" else field


def _heat_values(doc: dict, cells: list[list[dict | None]], quantity: str) -> np.ndarray:
    """(len y, len x) medians of `quantity` ("horizon" or "lyapunov"); NaN where none."""
    out = np.full((len(cells), len(cells[0])), np.nan)
    for i, row in enumerate(cells):
        for j, a in enumerate(row):
            if a is not None:
                q = a["horizon"] if quantity == "horizon" else bottleneck_lyapunov(a)
                out[i, j] = q["median"] if finite(q["median"]) else np.nan
    return out


def _annotate(ax, a: dict, j: int, i: int, value: float, quantity: str, light: bool, small: bool) -> None:
    """The cell's median (and IQR below it when there is room), in ink that reads on its colour."""
    ink = OKABE_ITO["black"] if light else "white"
    q = a["horizon"] if quantity == "horizon" else bottleneck_lyapunov(a)
    top = f"{value:.3g}" if quantity == "horizon" else f"{value:+.3f}"
    if not math.isfinite(value):
        top = "n/a"
    ax.text(
        j, i + (0 if small else 0.12), top, ha="center", va="center", color=ink, fontsize=9, weight="bold"
    )
    if not small:
        f = "{:.3g}"
        iqr = f"[{f.format(q['q1'])}, {f.format(q['q3'])}]" if finite(q["q1"]) and finite(q["q3"]) else ""
        ax.text(j, i - 0.2, iqr, ha="center", va="center", color=ink, fontsize=7)


@styled
def heatmap_figure(doc: dict, quantity: str = "horizon") -> Figure:
    """Median horizon (or λ₁) over the two axes of a sweep with most values; one panel per
    init spec and value of the remaining axes (report/sweep.py). One colour scale for all.
    Horizon: cividis on a log scale, cells where the gradient reaches t = 1 outlined.
    λ₁: diverging around 0 (below: the state dynamics contract, gradients fade)."""
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.patches import Rectangle

    hm = heatmap_layout(doc)
    mats = [panel_cells(doc, hm, p) for p in hm.panels]
    vals = [_heat_values(doc, m, quantity) for m in mats]
    allv = np.concatenate([v.ravel() for v in vals])
    allv = allv[np.isfinite(allv)]
    if quantity == "horizon":
        lo = max(float(allv.min()) if allv.size else 1.0, 0.5)
        hi = max(float(allv.max()) if allv.size else 1.0, lo * 1.01)
        norm, cmap = LogNorm(lo, hi), SEQUENTIAL_CMAP
    else:
        v = float(np.abs(allv).max()) if allv.size else 1.0
        norm, cmap = Normalize(-max(v, 1e-12), max(v, 1e-12)), DIVERGING_CMAP
    nx, ny, n = len(hm.x["values"]), len(hm.y["values"]), len(hm.panels)
    k = len(doc["settings"]["init"])  # one column per init spec, one row per value of the other axes
    cols = k if 2 <= k <= 4 and nx <= 6 else min(n, 4 if nx <= 4 else 3 if nx <= 6 else 2)
    rows = math.ceil(n / cols)
    small = nx * ny > 48 or nx > 8
    w, h = 1.4 + (0.95 if not small else 0.6) * nx, 0.9 + (0.62 if not small else 0.4) * ny
    fig = new_figure(max(7.5, w * cols + 1.4), 1.6 + h * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    what = "Gradient horizon" if quantity == "horizon" else "Largest Lyapunov exponent λ₁ (bottleneck layer)"
    c = doc["config"]
    header(
        fig,
        f"{what} over {hm.y['field']} × {hm.x['field']}"
        + (": where the gradient dies\n" if quantity == "horizon" else ": how fast the state forgets\n")
        + f"base config: {model_line(c['model'])} · {c['data']['task']} data, B={c['data']['batch_size']} · "
        f"median over {len(doc['seed_values'])} seeds per cell, IQR below"
        + ("\noutlined: the gradient reaches t = 1 (median horizon = T)" if quantity == "horizon" else ""),
    )
    im = None
    for ax, panel, cells, v in zip(axes, hm.panels, mats, vals, strict=False):
        im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, norm=norm, aspect="auto", origin="lower")
        ax.grid(False)
        for i in range(ny):
            for j in range(nx):
                a = cells[i][j]
                if a is None:
                    continue
                light = bool(np.isfinite(v[i, j])) and norm(v[i, j]) > (
                    0.55 if quantity == "horizon" else 0.7
                )
                if quantity == "lyapunov":
                    light = bool(np.isfinite(v[i, j])) and abs(norm(v[i, j]) - 0.5) < 0.3
                _annotate(ax, a, j, i, v[i, j], quantity, light, small)
                if quantity == "horizon" and a["horizon"]["median"] >= a["seq_len"]:
                    ax.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False,
                                           ec=OKABE_ITO["black"], lw=2.2))  # fmt: skip
        ax.set_xticks(range(nx), [inert(value_text(x)) for x in hm.x["values"]])
        ax.set_yticks(range(ny), [inert(value_text(y)) for y in hm.y["values"]])
        ax.set_xlabel(inert(_axis_label(hm.x["field"])))
        ax.set_ylabel(inert(_axis_label(hm.y["field"])))
        ax.set_title(inert(panel.title()), loc="left", fontsize=9.5)
    for ax in axes[n:]:
        ax.set_visible(False)
    label = (
        "median horizon (steps; log scale)" if quantity == "horizon" else "median λ₁ per step (< 0: fading)"
    )
    cb = fig.colorbar(im, ax=list(axes[:n]), fraction=0.04, pad=0.02, aspect=25)
    cb.set_label(label)
    _plain_ticks(cb, norm, quantity)
    return fig


def _plain_ticks(cb, norm, quantity: str) -> None:
    """Colour-bar ticks as plain numbers (no mathtext): 1-2-5 steps on the log scale."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    if quantity == "horizon":
        ticks = [v for e in range(0, 7) for v in (10**e, 2 * 10**e, 5 * 10**e) if norm.vmin <= v <= norm.vmax]
        ticks = ticks or [norm.vmin, norm.vmax]
        cb.ax.yaxis.set_major_locator(FixedLocator(ticks))
        cb.ax.yaxis.set_minor_locator(NullLocator())
        cb.ax.yaxis.set_minor_formatter(NullFormatter())
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


@styled
def axis_figure(doc: dict) -> Figure:
    """The horizon (and λ₁, when measured) against the one numeric axis of a sweep, per init
    spec: median line, IQR band over seeds."""
    axd = line_axis(doc)
    field = axd["field"]
    xs = np.asarray(axd["values"], np.float64)
    order = np.argsort(xs, kind="stable")
    lyap = has_lyapunov(doc)
    fig = new_figure(8.5 if not lyap else 12.5, 5.4)
    panels = fig.subplots(1, 2 if lyap else 1, squeeze=False).ravel()
    colors = series_style(doc["settings"]["init"])
    c = doc["config"]
    header(
        fig,
        f"Gradient horizon{' and λ₁' if lyap else ''} against {field}, by init scheme\n"
        f"base config: {model_line(c['model'])} · {c['data']['task']} data, B={c['data']['batch_size']}, "
        f"T={doc['detail_seq_len']} · median and IQR over {len(doc['seed_values'])} seeds",
    )
    key = {json.dumps(v): k for k, v in enumerate(axd["values"])}
    for scheme in doc["settings"]["init"]:
        cells = {key[json.dumps(a["point"][field])]: a for a in doc["aggregates"] if a["scheme"] == scheme}
        color, ls = colors[scheme]
        for p, get in zip(panels, (lambda a: a["horizon"], bottleneck_lyapunov), strict=False):
            q = [get(cells[k]) for k in order]
            med, q1, q3 = (np.array([x[m] for x in q], np.float64) for m in ("median", "q1", "q3"))
            p.fill_between(xs[order], q1, q3, color=color, alpha=0.18, lw=0)
            p.plot(xs[order], med, color=color, ls=ls, lw=2.0, marker="o", ms=5, label=inert(scheme))
    log_x = bool((xs > 0).all() and xs.max() / xs.min() >= 20)
    for p in panels:
        if log_x:
            p.set_xscale("log")
        p.set_xticks(xs[order], [inert(value_text(v)) for v in np.asarray(axd["values"], object)[order]])
        p.minorticks_off()
        p.set_xlabel(inert(field) + (" (log)" if log_x else ""))
    panels[0].set_ylabel("gradient horizon (steps back from the loss)")
    panels[0].axhline(doc["detail_seq_len"], color=GREY, ls=":", lw=1.2, label=f"T = {doc['detail_seq_len']}")
    panels[0].legend(loc="best", frameon=True, framealpha=0.9)
    if lyap:
        panels[1].axhline(0.0, color=OKABE_ITO["black"], lw=1.0)
        panels[1].set_ylabel("λ₁ of the bottleneck layer (natural log per step)")
    return fig


def figures(doc: dict) -> Iterator[tuple[str, Figure]]:
    """(file stem, figure) for every compare figure of this document."""
    yield "compare_flow", flow_figure(doc)
    yield "compare_forget", forget_figure(doc)
    if doc["aggregates"] and doc["aggregates"][0]["layers"][0]["lyapunov"]:
        yield "compare_lyapunov", lyapunov_figure(doc)
    if any(ax["field"] == "data.seq_len" for ax in varying(doc)):
        yield "compare_horizon_vs_T", horizon_figure(doc)
    one = line_axis(doc)
    if one is not None and one["field"] != "data.seq_len":
        yield f"compare_horizon_vs_{one['field'].rsplit('.', 1)[-1]}", axis_figure(doc)
    if heatmap_layout(doc) is not None:
        yield "compare_heatmap_horizon", heatmap_figure(doc, "horizon")
        if has_lyapunov(doc):
            yield "compare_heatmap_lyapunov", heatmap_figure(doc, "lyapunov")
