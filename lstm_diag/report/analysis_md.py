"""Markdown rendering of an analysis document, for pasting into an issue or a notebook."""

from __future__ import annotations

from ..features.findings import decay_text
from .analysis_table import GATE_SYMBOL, describe_config
from .describe import lyapunov_span
from .inert import markdown
from .text import finding_label, flow_words, fmt, layer_label, sparkline


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _flow_text(layer: dict, T: int, ratio: float) -> str:
    fl = layer["flow"]
    w = flow_words(layer, T)
    src = f" {w['source'][0].upper()}{w['source'][1:]}." if w["source"] else ""
    if "note" in fl:
        return f"No flow: {fl['note']}."
    return (
        f"Decay within the horizon: {decay_text(fl, T, layer.get('direction') == 'reverse')}; "
        f"over all {T} steps {fmt(fl['decay_rate'])}/step (×{fmt(fl['factor_per_step'])} {w['back']}, "
        "Theil–Sen); "
        f"horizon {w['reach']} (until < {ratio:g}× {w['ref']}); "
        f"{w['ratio']} = {fmt(fl['ratio_first_last'])}; forget retention "
        f"{fmt(fl['forget_retention'])}/step (τ≈{fmt(fl['forget_time_constant'])}).{src}"
    )


def render_markdown(doc: dict) -> str:
    out = ["## lstm-diag analyze", ""]
    for line in describe_config(doc):  # continuation lines (indented) are details of the line above
        key, _, rest = line.strip().partition(" ")
        inert = markdown(line.strip() if line.startswith(" ") else rest.strip())
        out.append(f"  - {inert}" if line.startswith(" ") else f"- {key}: {inert}")
    out += [f"- **verdict: {doc['verdict']}** ({len(doc['findings'])} findings)", ""]
    if doc.get("batches"):  # data.batches > 1: the spread first, then batch 0's details
        from .batches_render import markdown_lines

        out += markdown_lines(doc)
    for layer in doc["layers"]:
        out += _layer_markdown(layer, doc)
    out += _clipping_markdown(doc["clipping"]) + _findings_markdown(doc["findings"])
    return "\n".join(out) + "\n"


def _layer_markdown(layer: dict, doc: dict) -> list[str]:
    """One unit: its norms through time, the flow, the Lyapunov exponents, the gates."""
    T = doc["config"]["data"]["seq_len"]
    d = doc["config"]["diagnostics"]
    eps = d["saturation_threshold"]
    label = layer_label(layer, doc)
    out = [f"### {label[0].upper()}{label[1:]}: {layer['verdict']}", ""]
    out += [
        _row("Frobenius norm", "t=1", f"t={T}", "log scale, t = 1 → T"),
        _row("---", "---:", "---:", "---"),
    ]
    rows = [("‖dL/dc_t‖", layer["grad_c_norm"]), ("‖dL/dh_t‖", layer["grad_h_norm"])]
    if "flow_grad_c_norm" in layer:
        rows.append((f"‖dL/dc_t‖ ({flow_words(layer, T)['term']})", layer["flow_grad_c_norm"]))
    rows += [(f"‖dL/dz^{GATE_SYMBOL[g]}‖ ({g})", v) for g, v in layer["grad_z_norm"].items()]
    out += [_row(label, fmt(v[0]), fmt(v[-1]), f"`{sparkline(v, 30)}`") for label, v in rows]
    out += ["", _flow_text(layer, T, d["vanishing_ratio"]), ""]
    dyn = layer.get("dynamics")
    if dyn and dyn["lyapunov"]:
        g = dyn.get("gradient") or {}
        rate = g.get("measured_rate")
        measured = f" (gradient measured {rate:+.3f}/step)" if rate is not None else ""
        out += [
            f"Lyapunov exponents (natural log per step, largest first): "
            f"{', '.join(f'{v:+.3f}' for v in dyn['lyapunov'])}; λ₁ ± {fmt(dyn['lyapunov_std'][0])}"
            f"{lyapunov_span(dyn)}{measured}.",
            "",
        ]
    out += [
        f"Gates (saturated = < {eps:g} or > {1 - eps:g}):",
        "",
        _row("gate", "mean", "std", "sat. low", "sat. high", "stuck units"),
        _row("---", "---:", "---:", "---:", "---:", "---:"),
    ]
    H = len(layer["gates"]["input"]["unit_saturated_low"])
    for name, g in layer["gates"].items():
        out.append(
            _row(
                f"{name} ({GATE_SYMBOL[name]})",
                f"{g['mean']:.3f}",
                f"{g['std']:.3f}",
                f"{g['saturated_low']:.1%}",
                f"{g['saturated_high']:.1%}",
                f"{g['stuck_units']}/{H}",
            )
        )
    return out + [""]


def _clipping_markdown(c: dict) -> list[str]:
    return [
        f"### Clipping snapshot ({c['mode']})",
        "",
        _row("global L2 norm", "coef", "after", "entries changed", "cos(clipped, raw)"),
        _row("---:", "---:", "---:", "---:", "---:"),
        _row(
            fmt(c["total_norm"]),
            fmt(c["clip_coef"]),
            fmt(c["norm_after"]),
            f"{c['changed_fraction']:.1%}",
            f"{c['cosine']:.4f}" if c["cosine"] is not None else "—",
        ),
        "",
    ]


def _findings_markdown(found: list[dict]) -> list[str]:
    out = ["### Findings", ""]
    if not found:
        out.append("None.")
    for f in found:
        where = f" ({finding_label(f)})" if f["layer"] is not None else ""
        out.append(f"- **{f['code']}** {f['severity']}{where}: {f['message']}  ")
        out.append(f"  *Remedy:* {f['remedy']}")
    return out + [""]
