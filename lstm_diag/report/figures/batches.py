"""The spread over batches (analyze with data.batches > 1): ||dL/dc_t|| median with its IQR band,
per unit, and where the horizon falls in each batch. Drawn from the document's `batches` section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ...numfmt import fmt
from ..describe import model_line
from ..inert import figure
from ..inputs_text import has_head
from ..text import layer_label, split
from .style import GREY, OKABE_ITO, VERDICT_COLOR, header, new_figure, styled


def _source(doc: dict) -> str:
    src = doc.get("source") or {}
    name = "built-in default" if src.get("config") is None else Path(src["config"]).name
    extra = " ".join(f"--set {o}" for o in src.get("overrides", ()))
    label = figure(f"{name} {extra}".strip())
    return label if len(label) <= 90 else label[:89] + "…"


def _q(q: dict | None) -> str:
    return "—" if q is None or q["n"] == 0 else f"{fmt(q['median'])} [{fmt(q['q1'])}, {fmt(q['q3'])}]"


@styled
def batches_flow(doc: dict) -> Figure:
    """One panel per unit: the median over batches of the ||dL/dc_t|| series the flow is measured
    on, the band between its 25th and 75th percentiles, the first batch's own curve, and the
    horizons of the batches (median and IQR, as steps back from the loss)."""
    b = doc["batches"]
    units = b["layers"]
    T = len(units[0]["flow_grad_c_norm"]["median"])
    t = np.arange(1, T + 1)
    fig = new_figure(11.0, 1.4 + 3.0 * len(units))
    axes = fig.subplots(len(units), 1, sharex=True, squeeze=False)[:, 0]
    m = doc["config"]["model"]
    header(
        fig,
        f"How much to trust one batch: ‖dL/dc_t‖ over {b['count']} batches of {b['batch_size']} sequences "
        f"({b['source']})\nconfig: {_source(doc)}\n{model_line(m, has_head(doc))} · loss {_q(b['loss'])}",
    )
    for ax, unit, detail in zip(axes, units, doc["layers"], strict=True):
        q = {k: np.asarray(v, np.float64) for k, v in unit["flow_grad_c_norm"].items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = np.isfinite(q["q1"]) & np.isfinite(q["q3"]) & (q["q1"] > 0)
        ax.fill_between(
            t,
            np.where(ok, q["q1"], np.nan),
            np.where(ok, q["q3"], np.nan),
            color=OKABE_ITO["blue"],
            alpha=0.25,
            lw=0,
            label="25th–75th percentile over batches",
        )
        ax.plot(t, q["median"], color=OKABE_ITO["blue"], lw=2.0, label="median over batches")
        first = detail.get("flow_grad_c_norm", detail["grad_c_norm"])
        ax.plot(
            t, first, color=GREY, lw=0.9, ls="--", label=f"batch {b['first_index']} (the report's details)"
        )
        h = unit["horizon"]
        if h["n"]:
            rev = unit["direction"] == "reverse"  # its gradient travels from t = 1 towards T
            at = (lambda k: 1 + k) if rev else (lambda k: T - k)
            ax.axvspan(
                min(at(h["q1"]), at(h["q3"])),
                max(at(h["q1"]), at(h["q3"])),
                color=OKABE_ITO["orange"],
                alpha=0.15,
                lw=0,
                label="horizon: IQR over batches",
            )
            ax.axvline(
                at(h["median"]),
                color=OKABE_ITO["orange"],
                lw=1.5,
                label=f"horizon: median {fmt(h['median'])} steps back",
            )
        ax.set_yscale("log")
        ax.set_title(
            f"{layer_label(unit, doc)}: {split(unit['verdict'])} · horizon {_q(h)} · decay "
            f"{_q(unit['decay_rate'])}/step",
            loc="left",
            color=VERDICT_COLOR[unit["verdict"]["majority"]],
            fontweight="bold",
            fontsize=9.5,
        )
        last_term = "flow_grad_c_norm" in detail and unit["direction"] == "forward"
        what = "of the last step's\nloss term, " if last_term else ""
        ax.set_ylabel(f"‖dL/dc_t‖ {what}(Frobenius,\nbatch × units), log")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0, fontsize=8)
    axes[-1].set_xlim(0.5, T + 0.5)
    axes[-1].set_xlabel("time step t (t = 1 the first input, t = T the last)")
    return fig
