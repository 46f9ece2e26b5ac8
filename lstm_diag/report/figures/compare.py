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

import math
from collections.abc import Iterator

import numpy as np
from matplotlib.figure import Figure

from ..describe import model_line
from .style import GREY, LINE_STYLES, OKABE_ITO, new_figure, series_style, styled


def scheme_style(doc: dict) -> dict[str, tuple[str, str]]:
    """scheme label -> (colour, line style), fixed by the order the schemes were given."""
    return series_style(doc["settings"]["init"])


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
    return sorted((a for a in doc["aggregates"] if a["seq_len"] == T), key=lambda a: a["rank"])


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
        fl = a["layers"][k]["flow"]
        med, q1, q3 = (_pos(np.asarray(fl[x], np.float64)[t0 - 1 :]) for x in ("median", "q1", "q3"))
        color, ls = colors[a["scheme"]]
        hz = a["layers"][k]["horizon"]
        ax.fill_between(t, q1, q3, color=color, alpha=0.18, lw=0)
        ax.plot(t, med, color=color, ls=ls, lw=1.8, label=f"{a['rank']}. {a['scheme']}: horizon {_q(hz)}")
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
    L = len(aggs[0]["layers"])
    colors = scheme_style(doc)
    ratio = doc["vanishing_ratio"]
    W = _zoom_window(aggs, T)
    fig = new_figure(12.0, 1.5 + 4.2 * L)
    if W is None:
        grid = fig.subplots(L, 1, squeeze=False)
    else:
        grid = fig.subplots(L, 2, squeeze=False, gridspec_kw={"width_ratios": [1.7, 1.0]})
    fig.suptitle(
        f"Gradient flow by init scheme at T = {T}: ‖dL/dc_t‖ relative to its value at the loss\n"
        + _subtitle(doc, T, flow=True),
        x=0.01,
        ha="left",
        fontsize=9.5,
        linespacing=1.5,
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
    L = len(aggs[0]["layers"])
    colors = scheme_style(doc)
    edges = np.asarray(doc["forget_histogram_edges"], np.float64)
    eps = doc["config"]["diagnostics"]["saturation_threshold"]
    n = len(aggs)
    cols = min(4, math.ceil(n / math.ceil(n / 4)))  # 5 -> 3 + 2, 6 -> 3 + 3, 8 -> 4 + 4
    rows = math.ceil(n / cols)
    fig = new_figure(2.9 * cols + 0.6, 1.3 + 2.5 * rows)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    fig.suptitle(
        f"Forget-gate values f_t at init by scheme, T = {T} (pooled over seeds, steps, batch and units)\n"
        + _subtitle(doc, T)
        + "\nblack line: the median over seeds of the forget mean f̄; τ = 1 / (1 − e^(mean ln f)) steps",
        x=0.01,
        ha="left",
        fontsize=9.5,
        linespacing=1.5,
    )
    for ax, a in zip(axes, aggs, strict=False):
        color, _ = colors[a["scheme"]]
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
            f"{a['rank']}. {a['scheme']}\nf̄ = {fbar:.3g}, τ = {tau:.3g} steps{where}",
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
    L = len(aggs[0]["layers"])
    colors = scheme_style(doc)
    fig = new_figure(max(10.5, 4.6 * L + 3.2), 5.0)
    axes = fig.subplots(1, L, squeeze=False).ravel()
    fig.suptitle(
        f"Lyapunov spectrum of the state (c, h) at init by scheme, T = {T}\n"
        + _subtitle(doc, T)
        + "\nmedian over seeds with IQR bars; λ < 0: contracting (gradients vanish ~e^(λ k)), "
        "λ > 0: chaotic (they grow)",
        x=0.01,
        ha="left",
        fontsize=9.5,
        linespacing=1.5,
    )
    n = len(aggs)
    for k, ax in enumerate(axes):
        ax.axhline(0.0, color=OKABE_ITO["black"], lw=1.0)
        for j, a in enumerate(aggs):
            spec = a["layers"][k]["lyapunov"]
            if not spec:
                continue
            color, _ = colors[a["scheme"]]
            idx = np.arange(1, len(spec) + 1) + (j - (n - 1) / 2) * 0.08  # side by side
            med = np.array([q["median"] for q in spec], np.float64)
            lo = med - np.array([q["q1"] for q in spec], np.float64)
            hi = np.array([q["q3"] for q in spec], np.float64) - med
            ax.errorbar(idx, med, yerr=[lo, hi], fmt="o-", color=color, ms=4, lw=1.2, capsize=2,
                        label=f"{a['rank']}. {a['scheme']}: λ₁ = {med[0]:+.3f}")  # fmt: skip
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
    by = {(a["scheme"], a["seq_len"]): a for a in doc["aggregates"]}
    ranking = doc["ranking"][str(doc["detail_seq_len"])]
    fig = new_figure(8.5, 5.8)
    ax = fig.subplots()
    c = doc["config"]
    m, d = c["model"], c["data"]
    fig.suptitle(
        "Gradient horizon against sequence length, by init scheme\n"
        f"{model_line(m)} · {d['task']} data, "
        f"B={d['batch_size']} · median and IQR over {len(doc['seed_values'])} seeds",
        x=0.01,
        ha="left",
        fontsize=9.5,
        linespacing=1.5,
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
        q = [by[(lab, int(T))]["horizon"] for T in lens]
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


def figures(doc: dict) -> Iterator[tuple[str, Figure]]:
    """(file stem, figure) for every compare figure of this document."""
    yield "compare_flow", flow_figure(doc)
    yield "compare_forget", forget_figure(doc)
    if doc["aggregates"] and doc["aggregates"][0]["layers"][0]["lyapunov"]:
        yield "compare_lyapunov", lyapunov_figure(doc)
    if len(doc["seq_lens"]) > 1:
        yield "compare_horizon_vs_T", horizon_figure(doc)
