"""Figures of a training comparison, drawn from the document of `TrainResult.to_dict()`.

- loss.png        batch loss per step for every clip setting (log scale; a running geometric
                  mean over the raw curve), divergence marked with an x.
- grad_norm.png   one panel per setting, each on its own log scale: the pre-clip global norm
                  per step, the steps on which clipping changed the gradient marked, the
                  post-clip norm, and the threshold for norm clipping (value and AGC thresholds
                  are per entry / per unit and have no line on this scale).
- horizon.png     the gradient horizon of ||dL/dc_t|| (steps back from the loss) at the
                  logged steps, one panel per layer.

Figures in the style of report/figures/style.py (Agg canvas, Okabe-Ito palette); the
commands encode and write them. Nothing is computed here beyond running means for display.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from matplotlib.figure import Figure

from ...numfmt import fmt
from .style import GREY, MARKERS, OKABE_ITO, SERIES, new_figure, styled

_OTHERS = [c for c in SERIES if c != OKABE_ITO["black"]]


def _colors(summary: list[dict]) -> dict[str, str]:
    """Black for 'none' (the reference), the series colours in order for the others."""
    others = iter(_OTHERS * 4)
    return {s["setting"]: OKABE_ITO["black"] if s["mode"] == "none" else next(others) for s in summary}


def _running_log_mean(y: np.ndarray, width: int) -> np.ndarray:
    """Geometric running mean (the mean of log y over a trailing window): the smooth line a
    log axis calls for, and it cannot overflow when a diverging run reaches 1e300."""
    if width <= 1 or len(y) < width:
        return y
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.log(np.where(np.isfinite(y) & (y > 0), y, np.nan))
    ly = np.where(np.isfinite(ly), ly, np.nanmax(ly) if np.isfinite(ly).any() else 0.0)
    c = np.cumsum(np.insert(ly, 0, 0.0))
    out = np.empty_like(ly)
    out[width - 1 :] = (c[width:] - c[:-width]) / width
    out[: width - 1] = c[1:width] / np.arange(1, width)  # shorter windows at the start
    return np.exp(out)


def _log_limits(series: list[np.ndarray], tame: list[np.ndarray]) -> tuple[float, float]:
    """y-limits for a log axis: all finite positive values, but the top at most 1e3 x the
    largest value of the runs in `tame` (those that did not blow up), so that a diverging
    run (loss 1e300) does not squash the others into a line."""
    pos = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in series] or [np.array([1.0])])
    if pos.size == 0:
        return 0.1, 10.0
    lo, hi = pos.min() / 2, pos.max() * 2
    calm = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in tame] or [np.array([])])
    if calm.size:
        hi = min(hi, calm.max() * 1e3)
    return lo, hi


def _values(v: list) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in v], dtype=np.float64)


def _title(doc: dict) -> str:
    c = doc["config"]
    t, d = c["train"], c["data"]
    return f"{d['task']}, T={d['seq_len']}, batch {d['batch_size']}; {t['optimizer']} lr {t['lr']:g}"


@styled
def loss_figure(doc: dict) -> Figure:
    """Batch loss per step for every clip setting, log scale, divergence marked."""
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    colors = _colors(doc["summary"])
    losses = [_values(run["history"]["loss"]) for run in doc["runs"]]
    tame = [
        y
        for y, s in zip(losses, doc["summary"], strict=True)
        if s["verdict_kind"] not in ("diverged", "unstable")
    ]
    lo, hi = _log_limits(losses, tame)
    for run, s, y in zip(doc["runs"], doc["summary"], losses, strict=True):
        steps = np.arange(1, len(y) + 1)
        col = colors[run["setting"]]
        width = max(1, len(y) // 40)
        if len(y):
            ax.plot(steps, y, color=col, alpha=0.25, linewidth=0.8)
            label = run["setting"] + (f" (running geometric mean of {width})" if width > 1 else "")
            ax.plot(steps, _running_log_mean(y, width), color=col, linewidth=1.8, label=label)
        if s["diverged"]:
            d = s["diverged"]
            finite = y[np.isfinite(y)]
            at = min(finite[-1] if finite.size else 1.0, hi / 1.5)
            ax.plot([d["step"]], [at], marker="x", markersize=10, mew=2.5, color=col, linestyle="none")
            ax.annotate(
                f"{run['setting']} diverged\nat step {d['step']} ({d['code']})",
                (d["step"], at),
                textcoords="offset points",
                xytext=(-6, -6),
                ha="right",
                va="top",
                fontsize=8,
                color=col,
            )
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xlabel("step")
    ax.set_ylabel(f"batch loss ({doc['config']['loss']['type']})")
    ax.set_title(f"Loss per clip setting — {_title(doc)}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig


@styled
def norm_figure(doc: dict) -> Figure:
    """Per setting: the pre-clip global gradient norm per step, clipped steps, the threshold."""
    runs, summary = doc["runs"], doc["summary"]
    n = len(runs)
    fig = new_figure(8, 1.2 + 2.0 * n)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)
    colors = _colors(summary)
    for ax, run, s in zip(axes[:, 0], runs, summary, strict=True):
        h = run["history"]
        pre, post = _values(h["grad_norm"]), _values(h["clipped_norm"])
        hit = np.asarray(h["clipped"], bool)
        steps = np.arange(1, len(pre) + 1)
        col = colors[run["setting"]]
        ax.plot(steps, pre, color=col, linewidth=1.0, label="pre-clip ‖g‖")
        if s["mode"] != "none":
            ax.plot(steps, post, color=GREY, linewidth=0.8, alpha=0.7, linestyle="--", label="post-clip ‖g‖")
        if hit.any():
            ax.plot(
                steps[hit], pre[hit], linestyle="none", marker="o", markersize=2.5,
                color=OKABE_ITO["reddish_purple"], label=f"clipped ({hit.sum()} of {len(hit)} steps)",
            )  # fmt: skip
        if s["mode"] == "norm":
            ax.axhline(
                s["threshold"],
                color=OKABE_ITO["blue"],
                linewidth=1.2,
                linestyle=":",
                label=f"max_norm {s['threshold']:g}",
            )
        if s["diverged"]:
            ax.axvline(s["diverged"]["step"], color=OKABE_ITO["vermillion"], linewidth=1.0)
            d = s["diverged"]
            ax.text(
                d["step"], 0.05, f"diverged at step {d['step']} ({d['code']}) ",
                color=OKABE_ITO["vermillion"], transform=ax.get_xaxis_transform(), fontsize=8, va="bottom",
                ha="right",
            )  # fmt: skip
        note = {"value": "; threshold is per entry", "agc": "; threshold is per unit, × ‖W_i‖"}.get(
            s["mode"], ""
        )
        stats = f"median {fmt(s['grad_norm_median'])}, max {fmt(s['grad_norm_max'])}"
        ax.set_title(f"{run['setting']}  ({stats}{note})", fontsize=9, loc="left")
        extra = [np.array([s["threshold"]])] if s["mode"] == "norm" else []
        ax.set_yscale("log")
        ax.set_ylim(*_log_limits([pre, post, *extra], []))
        ax.set_ylabel("‖g‖₂")
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"Pre-clip gradient norm — {_title(doc)}", fontsize=10)
    return fig


@styled
def horizon_figure(doc: dict) -> Figure:
    """The gradient horizon at the logged steps, one panel per layer."""
    L = doc["config"]["model"]["num_layers"]
    T = doc["config"]["data"]["seq_len"]
    fig = new_figure(8, 1.5 + 2.5 * L)
    axes = fig.subplots(L, 1, sharex=True, squeeze=False)
    colors = _colors(doc["summary"])
    for k in range(L):
        ax = axes[k, 0]
        for j, run in enumerate(doc["runs"]):
            recs = [r for r in run["logged"] if r["status"] == "ok"]
            x = [r["step"] for r in recs]
            y = [r[f"horizon_l{k}"] for r in recs]
            ax.plot(
                x,
                y,
                color=colors[run["setting"]],
                marker=MARKERS[j % len(MARKERS)],  # distinct shapes: equal horizons overlap
                markersize=4,
                linewidth=1.2,
                alpha=0.85,
                label=run["setting"],
            )
        if T is not None:  # None: the length comes from a data file (not in the config)
            ax.axhline(T, color=GREY, linestyle=":", linewidth=1.0)
            ax.text(
                0.01,
                T,
                " reaches t = 1",
                transform=ax.get_yaxis_transform(),
                fontsize=8,
                va="bottom",
                color=GREY,
            )
            ax.set_ylim(0, T * 1.1)
        ax.set_ylabel("horizon (steps back)")
        ax.set_title(f"layer {k}", fontsize=9, loc="left")
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("step")
    ratio = doc["config"]["diagnostics"]["vanishing_ratio"]
    fig.suptitle(
        f"Gradient horizon: steps back before ‖dL/dc_t‖ < {ratio:g} × its value at the loss — {_title(doc)}",
        fontsize=9,
    )
    return fig


def figures(doc: dict) -> Iterator[tuple[str, Figure]]:
    """(file stem, figure): loss, grad_norm and horizon."""
    yield "loss", loss_figure(doc)
    yield "grad_norm", norm_figure(doc)
    yield "horizon", horizon_figure(doc)
