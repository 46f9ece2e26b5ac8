"""A self-contained HTML report of an analysis: one file to attach to an issue or a PR.

Everything shown is read from the analysis document (`AnalysisResult.to_dict()`) and from
figures already drawn by report/figures (PNG bytes, embedded as base64 data: URIs). The page
has inline CSS, no script, and no external resource: it opens offline. All text is
escaped with `html.escape`.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping

from .. import __version__
from ..core.diagnostics import GATE_SYMBOL
from ..features.findings import decay_text
from ..numfmt import fmt
from .describe import init_text, lyapunov_span, model_line
from .figures.style import OKABE_ITO, VERDICT_COLOR
from .inputs_text import data_details, has_head, loss_text, what_if_line
from .text import finding_label, flow_words, layer_label, unit_key

SEVERITY_COLOR = {"error": OKABE_ITO["vermillion"], "warning": "#B07800", "info": OKABE_ITO["blue"]}

CAPTIONS = {
    "grad_flow": (
        "‖dL/dc_t‖ and ‖dL/dh_t‖ against t (log scale), one panel per layer: the loss position, the "
        "vanishing threshold, the horizon (how many steps back the gradient stays above the threshold) "
        "and the fitted decay rate. Non-finite steps are marked with ×."
    ),
    "gate_grads": "‖dL/dz_t‖ per gate (eqs. 10-13) against t: which gate's pre-activation gets the gradient.",
    "batches_flow": (
        "Over the analysed batches (data.batches): median ‖dL/dc_t‖ with the band between its 25th and "
        "75th percentiles, the first batch's curve dashed, and the horizons' median and IQR "
        "(docs/batches.md). The rest of this report is the first batch's analysis."
    ),
    "dynamics": (
        "Left: the Lyapunov spectrum of the state (c_t, h_t), mean over samples ± std, with the measured "
        "growth rate of ‖dL/dc_t‖. Right: spectral norms of the one-step Jacobian over time, of "
        "dc_t/dc_(t-1), and the cell path max f_t (docs/dynamics.md)."
    ),
    "gate_heatmaps": (
        "Gate activations, mean over the batch, as units × time (fixed scales: 0..1, and -1..1 for g); "
        "beneath each, the fraction of (batch, unit) entries saturated at each step."
    ),
    "saturation": (
        "Per unit, the fraction of time each gate is left- vs right-saturated (Karpathy, Johnson & "
        "Fei-Fei 2015). Units beyond the dashed line are saturated most of the time."
    ),
    "forget_gate": (
        "Histogram of forget-gate values f_t, with the time constant τ = 1/(1 − f) on the top axis "
        "and the retention e^(mean ln f) that sets the cell-path horizon."
    ),
}

CSS = """
:root { --fg: #1b1b1b; --muted: #5b5b5b; --line: #d9d9d9; --bg: #ffffff; --soft: #f6f6f4; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px; color: var(--fg); background: var(--bg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 8px; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 2px 10px; border-radius: 6px; color: #fff; font-weight: 700;
         letter-spacing: .03em; }
.big { font-size: 20px; padding: 4px 14px; }
.summary { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; background: var(--soft);
           border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px; margin: 12px 0 8px; }
.summary dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; }
.summary dt { color: var(--muted); }
.summary dd { margin: 0; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.l, th.l { text-align: left; }
td.num { font-variant-numeric: tabular-nums; }
.findings td { text-align: left; }
.findings .code { font-weight: 700; white-space: nowrap; }
.remedy { color: var(--muted); }
figure { margin: 12px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px;
      overflow-x: auto; font-size: 12.5px; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
@media print { body { padding: 0; } figure { break-inside: avoid; } }
"""


def e(x) -> str:
    """Escape any value for HTML text or attribute."""
    return html.escape(str(x), quote=True)


def _badge(verdict: str, big: bool = False) -> str:
    cls = "badge big" if big else "badge"
    return f'<span class="{cls}" style="background:{VERDICT_COLOR[verdict]}">{e(verdict.upper())}</span>'


def _table(header: list[str], rows: list[list[str]], left: int = 1, cls: str = "") -> str:
    """rows hold already-escaped HTML cells; the first `left` columns are left-aligned."""

    def cell(tag, i, v):
        return f'<{tag} class="{"l" if i < left else "num"}">{v}</{tag}>'

    head = "".join(cell("th", i, e(h)) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(name: str, images: Mapping[str, bytes]) -> str:
    if name not in images:
        return ""
    data = base64.b64encode(images[name]).decode("ascii")
    caption = CAPTIONS[re.sub(r"_l\d+$", "", name)]
    return (
        f'<figure id="fig-{e(name)}"><img alt="{e(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>{e(name)}.png</b> — {e(caption)}</figcaption></figure>"
    )


def _config_lines(doc: dict) -> list[tuple[str, str]]:
    c = doc["config"]
    m, d = c["model"], c["data"]
    T = len(doc["layers"][0]["grad_c_norm"])
    data = d["task"] + (f" {d['path']}" if d["task"] == "file" and d.get("path") else "")
    what_if = what_if_line(doc)
    details = "; ".join(data_details(doc))
    return [
        ("model", f"{model_line(m, has_head(doc))}; init {init_text(m)}; {c['dtype']}"),
        *([("what-if", what_if.removeprefix("what-if: "))] if what_if else []),
        (
            "data",
            f"{data}; batch {d['batch_size']}, {T} steps; seed {c['seed']}"
            + (f"; {details}" * bool(details)),
        ),
        ("loss", loss_text(doc)),
    ]


def _summary(doc: dict, label: str | None) -> str:
    counts = {s: sum(f["severity"] == s for f in doc["findings"]) for s in ("error", "warning", "info")}
    found = ", ".join(f"{n} {s}{'s' * (n != 1)}" for s, n in counts.items() if n) or "none"
    items = [("config", label or "—"), *_config_lines(doc), ("findings", found)]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items)
    return (
        f'<div class="summary"><div><div class="muted">verdict</div>{_badge(doc["verdict"], True)}</div>'
        f"<dl>{dl}</dl></div>"
    )


def _layers_table(doc: dict) -> str:
    ratio = doc["config"]["diagnostics"]["vanishing_ratio"]
    rows = []
    for layer in doc["layers"]:
        fl = layer["flow"]
        T = len(layer["grad_c_norm"])
        w = flow_words(layer, T)
        reach = f"{w['reach']} ({T})" if fl["horizon_reaches_start"] else f"{fl['horizon']} of {T}"
        name = layer_label(layer, doc).removeprefix("layer ")
        rows.append(
            [
                f'<a href="#layer-{e(unit_key(layer))}">{e(name)}</a>',
                _badge(layer["verdict"]),
                e(f"{fmt(fl['decay_rate'])} (×{fmt(fl['factor_per_step'])})"),
                e(reach),
                e(fmt(fl["ratio_first_last"])),
                e(fmt(fl["forget_retention"])),
                e(fmt(fl["forget_time_constant"])),
                e(fmt(fl["cell_path_horizon"])),
                e(
                    {
                        "last_step_loss_term": "last step's loss term",
                        "entry_at_first_step": "gradient entering at t = 1",
                    }.get(fl["source"], "loss")
                ),
            ]
        )
    header = [
        "layer",
        "verdict",
        "decay rate /step (factor)",
        f"horizon (steps until < {ratio:g}×)",
        "‖dL/dc_first‖ / ‖dL/dc_last‖ (the direction's own time)",
        "forget retention",
        "τ (steps)",
        "cell-path horizon",
        "measured on",
    ]
    return _table(header, rows, left=2)


def _findings(doc: dict) -> str:
    if not doc["findings"]:
        none = f'<span class="badge" style="background:{VERDICT_COLOR["healthy"]}">NONE</span>'
        return f"<p>{none} No findings.</p>"
    rows = []
    for f in doc["findings"]:
        sev = f'<span style="color:{SEVERITY_COLOR[f["severity"]]};font-weight:600">{e(f["severity"])}</span>'
        where = "—" if f["layer"] is None else e(finding_label(f).removeprefix("layer "))
        body = f"{e(f['message'])}<div class='remedy'>→ {e(f['remedy'])}</div>"
        rows.append([f'<span class="code" id="{e(f["code"])}">{e(f["code"])}</span>', sev, where, body])
    note = "<p class='muted'>Each code is explained by <code>lstm-diag codes</code> and in docs/codes.md.</p>"
    return _table(["code", "severity", "layer", "message and remedy"], rows, left=4, cls="findings") + note


def _layer_section(layer: dict, doc: dict, images: Mapping[str, bytes]) -> str:
    key = unit_key(layer)
    T = len(layer["grad_c_norm"])
    eps = doc["config"]["diagnostics"]["saturation_threshold"]
    fl = layer["flow"]
    norms = [("‖dL/dc_t‖ (eq. 9)", layer["grad_c_norm"]), ("‖dL/dh_t‖ (eq. 8)", layer["grad_h_norm"])]
    if "flow_grad_c_norm" in layer:
        norms.append(
            (
                f"‖dL/dc_t‖, {flow_words(layer, T)['source'].removeprefix('measured on ')}",
                layer["flow_grad_c_norm"],
            )
        )
    norms += [(f"‖dL/dz^{GATE_SYMBOL[g]}‖ ({g})", v) for g, v in layer["grad_z_norm"].items()]
    flow_rows = [[e(name), e(fmt(v[0])), e(fmt(v[-1]))] for name, v in norms]
    H = len(layer["gates"]["input"]["unit_saturated_low"])
    gate_rows = [
        [
            e(f"{name} ({GATE_SYMBOL[name]})"),
            e(f"{g['mean']:.3f}"),
            e(f"{g['std']:.3f}"),
            e(f"{g['saturated_low']:.1%}"),
            e(f"{g['saturated_high']:.1%}"),
            e(f"{g['stuck_units']}/{H}"),
        ]
        for name, g in layer["gates"].items()
    ]
    cs = layer["cell_state"]
    tanh_sat = f"{cs['tanh_saturated']:.1%}"
    w = flow_words(layer, T)
    src = f" {w['source'][0].upper()}{w['source'][1:]} (target: all)." if w["source"] else ""
    label = layer_label(layer, doc)
    flow_p = (
        f"<p>No flow: {e(fl['note'])}.</p>"
        if "note" in fl
        else f"<p>Decay within the horizon: <b>{e(decay_text(fl, T, layer.get('direction') == 'reverse'))}"
        f"</b>; over all {T} steps {e(fmt(fl['decay_rate']))}/step (×{e(fmt(fl['factor_per_step']))} "
        f"{e(w['back'])}, Theil–Sen); horizon <b>{e(w['reach'])}</b>; "
        f"{e(w['ratio'])} = {e(fmt(fl['ratio_first_last']))}; "
        f"forget retention {e(fmt(fl['forget_retention']))}/step (τ ≈ {e(fmt(fl['forget_time_constant']))} "
        f"steps, cell-path horizon {e(fmt(fl['cell_path_horizon']))} steps).{e(src)}</p>"
    )
    parts = [
        f'<h2 id="layer-{e(key)}">{e(label[0].upper() + label[1:])} {_badge(layer["verdict"])}</h2>',
        flow_p,
        "<h3>Gradient norms (Frobenius over batch and units)</h3>",
        _table(["norm", "t = 1", f"t = {T}"], flow_rows),
        f"<h3>Gates (saturated: &lt; {e(f'{eps:g}')} or &gt; {e(f'{1 - eps:g}')}; "
        f"for g, |g| &gt; {e(f'{1 - 2 * eps:g}')})</h3>",
        _table(["gate", "mean", "std", "saturated low", "saturated high", "stuck units"], gate_rows),
        f"<p>Cell state: max |c_t| = {e(fmt(cs['max_abs']))}; |tanh c_t| &gt; 0.99 for "
        f"{e(tanh_sat)} of entries.</p>",
    ]
    dyn = layer.get("dynamics")
    if dyn and dyn["lyapunov"]:
        g = dyn.get("gradient") or {}
        measured = g.get("measured_rate")
        spectrum = ", ".join(f"{v:+.3f}" for v in dyn["lyapunov"])
        parts.append(
            f"<p>State dynamics: Lyapunov exponents (natural log per step, largest first) {e(spectrum)}; "
            f"λ₁ ± {e(fmt(dyn['lyapunov_std'][0]))} over samples{e(lyapunov_span(dyn))}"
            + (f"; measured growth of ‖dL/dc_t‖ {e(f'{measured:+.3f}')}/step" if measured is not None else "")
            + ". λ₁ &lt; 0: the dynamics contract and gradients vanish; λ₁ &gt; 0: chaotic, they grow.</p>"
        )
    parts += [
        _figure(f"{name}_{key}", images)
        for name in ("gate_grads", "gate_heatmaps", "saturation", "forget_gate", "dynamics")
    ]
    return "\n".join(parts)


def _parameters(doc: dict) -> str:
    rows = [
        [e(name), e("×".join(map(str, p["shape"]))), e(fmt(p["norm"])), e(fmt(p["grad_norm"]))]
        for name, p in doc["parameters"].items()
    ]
    return _table(["name", "shape", "‖θ‖", "‖dL/dθ‖"], rows)


def _clipping(doc: dict) -> str:
    c = doc["clipping"]
    param = {"norm": "max_norm", "value": "clip_value", "agc": "clipping"}.get(c["mode"])
    setting = f"{c['mode']}, {param} = {c[param]:g}" if param else "none (the raw gradient is shown)"
    cos = f"{c['cosine']:.4f}" if c.get("cosine") is not None else "—"
    top = _table(
        ["global L2 norm", "coefficient", "norm after", "entries changed", "cos(clipped, raw)"],
        [
            [
                e(fmt(c["total_norm"])),
                e(fmt(c["clip_coef"])),
                e(fmt(c["norm_after"])),
                e(f"{c['changed_fraction']:.1%}"),
                e(cos),
            ]
        ],
        left=0,
    )
    per = _table(
        ["parameter", "‖grad‖ before", "after"],
        [
            [e(n), e(fmt(p["norm_before"])), e(fmt(p["norm_after"]))]
            for n, p in c.get("parameters", {}).items()
        ],
    )
    return f"<p>Setting: <b>{e(setting)}</b>.</p>{top}{per}"


def _numerics(doc: dict) -> str:
    n = doc.get("numerics", {})
    fwd, bwd = n.get("first_nonfinite_forward"), n.get("first_nonfinite_backward")
    items = [
        ("loss finite", "yes" if n.get("loss_finite") else "no"),
        (
            "first non-finite c_t or h_t (forward)",
            f"layer {fwd['layer']}, t = {fwd['step']} (max |c| before: {fmt(fwd.get('max_abs_c_before'))})"
            if fwd
            else "none",
        ),
        (
            "first non-finite dL/dc_t (backward)",
            f"layer {bwd['layer']}, t = {bwd['step']}" if bwd else "none",
        ),
    ]
    return _table(["check", "result"], [[e(k), e(v)] for k, v in items], left=2)


def render_html(doc: dict, images: Mapping[str, bytes] | None = None, label: str | None = None) -> str:
    """The report page. images: figure name (e.g. "grad_flow", "saturation_l0") -> PNG bytes."""
    images = images or {}
    title = f"lstm-diag report — {label}" if label else "lstm-diag report"
    body = [
        f"<h1>{e(title)}</h1>",
        "<p class='muted'>Gradient flow through time in an LSTM: exact forward pass and BPTT, "
        "gate saturation, vanishing/exploding verdicts.</p>",
        _summary(doc, label),
        "<h2>Layers</h2>",
        _layers_table(doc),
        "<h2>Findings</h2>",
        _findings(doc),
        "<h2>Gradient flow</h2>",
        _figure("grad_flow", images),
    ]
    if doc.get("batches"):  # data.batches > 1: the spread over batches
        body += [f"<h2>Across {e(doc['batches']['count'])} batches</h2>", _figure("batches_flow", images)]
    body += [_layer_section(layer, doc, images) for layer in doc["layers"]]
    body += [
        "<h2>Parameters</h2>",
        _parameters(doc),
        "<h2>Clipping snapshot</h2>",
        _clipping(doc),
        "<h2>Numerics</h2>",
        _numerics(doc),
        "<h2>Config</h2>",
        "<details><summary>The resolved config (every field, defaults filled in)</summary>"
        f"<pre>{e(json.dumps(doc['config'], indent=2))}</pre></details>",
        f"<footer>Made by lstm-diag {e(__version__)} "
        f"(document schema_version {e(doc.get('schema_version'))}). "
        "Self-contained: figures are embedded, nothing is loaded from the network.</footer>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(p for p in body if p)
        + "\n</main></body></html>\n"
    )
