"""Rich rendering of an analysis document (the dict of `AnalysisResult.to_dict()`).

Everything shown is read from the document; nothing is computed here beyond layout.
Fits 80 columns; without colour (NO_COLOR, not a TTY) the verdicts still read as words.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..core.diagnostics import GATE_SYMBOL
from ..features.findings import decay_text
from .describe import init_text, lyapunov_span, model_line
from .inert import plain
from .inputs_text import data_details, has_head, loss_text, what_if_line
from .text import finding_label, flow_words, fmt, layer_label, sparkline, table

VERDICT_STYLE = {
    "healthy": "bold green",
    "vanishing": "bold yellow",
    "exploding": "bold red",
    "no_flow": "bold",
}
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _sat_style(frac: float) -> str:
    return "red" if frac > 0.5 else "yellow" if frac > 0.2 else ""


def describe_config(doc: dict) -> list[str]:
    c = doc["config"]
    m, d = c["model"], c["data"]
    data = d["task"] + (f" {plain(d['path'])}" if d["task"] == "file" else "")
    lines = [
        f"model  {model_line(m, has_head(doc))}; init {plain(init_text(m))}; {c['dtype']}",
    ]
    what_if = what_if_line(doc)
    if what_if:
        lines.append(f"what-if {what_if.removeprefix('what-if: ')}")
    lines += [
        f"data   {data}; batch {d['batch_size']}, {d['seq_len']} steps; seed {c['seed']}",
        *(f"       {x}" for x in data_details(doc)),
        f"loss   {loss_text(doc)}",
    ]
    mem = doc.get("memory", {})
    if mem.get("mode") == "checkpoint":
        lines.append(
            f"memory checkpointed BPTT, {mem['segments']} segments of {mem['segment']} steps "
            f"({mem['reason']})"
        )
    return lines


def header(doc: dict) -> Panel:
    lines = [Text(line) for line in describe_config(doc)]
    v = doc["verdict"]
    verdict = Text("verdict ", style="bold")
    verdict.append(v.upper(), style=VERDICT_STYLE[v])
    n = len(doc["findings"])
    verdict.append(f"  ({n} finding{'s' * (n != 1)})")
    return Panel(Group(*lines, verdict), title="lstm-diag analyze", title_align="left", box=box.ROUNDED)


def flow_table(layer: dict, T: int) -> Table:
    t = table(None)
    t.add_column("Frobenius norm", no_wrap=True)
    t.add_column("t=1", justify="right")
    t.add_column(f"t={T}", justify="right")
    t.add_column("log scale, t = 1 → T", no_wrap=True)
    rows = [("‖dL/dc_t‖", layer["grad_c_norm"]), ("‖dL/dh_t‖", layer["grad_h_norm"])]
    if "flow_grad_c_norm" in layer:
        rows.append((f"‖dL/dc_t‖ {flow_words(layer, T)['term']}", layer["flow_grad_c_norm"]))
    rows += [(f"‖dL/dz^{GATE_SYMBOL[g]}‖ ({g})", v) for g, v in layer["grad_z_norm"].items()]
    for label, v in rows:
        t.add_row(label, fmt(v[0]), fmt(v[-1]), sparkline(v, 30))
    return t


def flow_line(layer: dict, T: int, ratio: float) -> Text:
    fl = layer["flow"]
    w = flow_words(layer, T)
    src = f"  ({w['source']})" if w["source"] else ""
    txt = Text()
    if "note" in fl:  # no flow through time to measure
        txt.append("no flow ", style="bold")
        txt.append(fl["note"])
        return txt
    txt.append("horizon ", style="bold")
    txt.append(f"{w['reach']} (until < {ratio:g}× {w['ref']})")
    txt.append("\ndecay ", style="bold")
    txt.append(decay_text(fl, T, layer.get("direction") == "reverse"))
    txt.append(f"; over all {T} steps {fmt(fl['decay_rate'])}/step (Theil–Sen)", style="dim")
    txt.append(f"\n{w['ratio']} ", style="bold")
    txt.append(fmt(fl["ratio_first_last"]))
    txt.append("   forget retention ", style="bold")
    txt.append(f"{fmt(fl['forget_retention'])}/step (τ≈{fmt(fl['forget_time_constant'])})")
    txt.append(src)
    return txt


def dynamics_line(layer: dict) -> Text | None:
    dyn = layer.get("dynamics")
    if not dyn or not dyn["lyapunov"]:
        return None
    lam, sd = dyn["lyapunov"][0], dyn["lyapunov_std"][0]
    txt = Text()
    txt.append("Lyapunov λ₁ ", style="bold")
    txt.append(f"{lam:+.3f} ± {fmt(sd)}/step", style="red" if lam > 0 else "")
    txt.append(lyapunov_span(dyn))
    g = dyn.get("gradient") or {}
    if g.get("measured_rate") is not None:
        txt.append(f" (gradient measured {g['measured_rate']:+.3f}/step)")
    norms = [v for v in dyn["spectral_norm"] if v is not None]
    if norms:
        txt.append("\nmedian ‖∂s_t/∂s_t-1‖₂ ", style="bold")
        txt.append(fmt(sorted(norms)[len(norms) // 2]))
    if dyn["window_singular_values"]:
        w = dyn["settings"]["window"]
        txt.append(f"   top σ of the last {w}-step product ", style="bold")
        txt.append(fmt(dyn["window_singular_values"][0]))
    return txt


def gate_table(layer: dict, eps: float) -> Table:
    t = table(f"Gates: activations over (time, batch, unit); saturated = < {eps:g} or > {1 - eps:g}")
    for col in ("gate", "mean", "std", "sat. low", "sat. high", "stuck", "saturation over t"):
        t.add_column(col, justify="left" if col in ("gate", "saturation over t") else "right", no_wrap=True)
    H = len(layer["gates"]["input"]["unit_saturated_low"])
    for name, g in layer["gates"].items():
        label = f"{name} ({GATE_SYMBOL[name]})"
        sat_t = g["saturation_over_time"]
        t.add_row(
            label,
            f"{g['mean']:.3f}",
            f"{g['std']:.3f}",
            Text(f"{g['saturated_low']:.1%}", style=_sat_style(g["saturated_low"])),
            Text(f"{g['saturated_high']:.1%}", style=_sat_style(g["saturated_high"])),
            f"{g['stuck_units']}/{H}",
            _bar_line(sat_t, 18),
        )
    return t


def _bar_line(values: list[float], width: int) -> str:
    """Fractions in [0, 1] as bars on a fixed scale (not rescaled like sparkline)."""
    n = len(values)
    width = min(width, n)
    bars = " ▁▂▃▄▅▆▇█"
    out = []
    for b in range(width):
        chunk = values[b * n // width : max((b + 1) * n // width, b * n // width + 1)]
        v = max(chunk)
        out.append(bars[min(int(v * 8 + 0.999), 8)])
    return "".join(out)


def layer_panel(layer: dict, doc: dict) -> Panel:
    T = doc["config"]["data"]["seq_len"]
    d = doc["config"]["diagnostics"]
    v = layer["verdict"]
    title = Text(f"{layer_label(layer, doc)}: ")
    title.append(v.upper(), style=VERDICT_STYLE[v])
    parts = [flow_table(layer, T), flow_line(layer, T, d["vanishing_ratio"])]
    dyn = dynamics_line(layer)
    if dyn is not None:
        parts.append(dyn)
    parts += [Text(""), gate_table(layer, d["saturation_threshold"])]
    body = Group(*parts)
    return Panel(body, title=title, title_align="left", box=box.ROUNDED)


def parameter_table(doc: dict) -> Table:
    t = table("Parameters (L2 norms)")
    t.add_column("name", no_wrap=True)
    t.add_column("shape", justify="right")
    t.add_column("‖θ‖", justify="right")
    t.add_column("‖dL/dθ‖", justify="right")
    for name, p in doc["parameters"].items():
        t.add_row(name, "×".join(map(str, p["shape"])), fmt(p["norm"]), fmt(p["grad_norm"]))
    return t


def clipping_table(clip: dict) -> Table:
    mode = clip["mode"]
    param = {"norm": "max_norm", "value": "clip_value", "agc": "clipping"}.get(mode)
    setting = f"{mode}, {param}={clip[param]:g}" if param else "none (showing the raw gradient)"
    t = table(f"Clipping snapshot: {setting}")
    t.add_column("global L2 norm", justify="right")
    t.add_column("coef", justify="right")
    t.add_column("after", justify="right")
    t.add_column("entries changed", justify="right")
    t.add_column("cos(clipped, raw)", justify="right")
    t.add_row(
        fmt(clip["total_norm"]),
        fmt(clip["clip_coef"]),
        fmt(clip["norm_after"]),
        f"{clip['changed_fraction']:.1%}",
        f"{clip['cosine']:.4f}" if clip["cosine"] is not None else "—",
    )
    return t


def findings_view(findings: list[dict]) -> Group:
    if not findings:
        return Group(Text("Findings: none", style="bold green"))
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for f in findings:
        code = Text(f"{f['code']}\n", style="bold")
        code.append(f["severity"], style=SEVERITY_STYLE[f["severity"]])
        body = Text(f"{finding_label(f)}: " if f["layer"] is not None else "")
        body.append(f["message"])
        body.append(f"\n→ {f['remedy']}", style="dim")
        if grid.row_count:
            grid.add_row("", "")
        grid.add_row(code, body)
    note = Text("Each code is explained by `lstm-diag codes` and in docs/codes.md.", style="dim")
    return Group(Text("Findings", style="bold"), grid, note)


def render(doc: dict, console: Console) -> None:
    parts = [header(doc)]
    if doc.get("batches"):  # data.batches > 1: the spread first, then batch 0's details
        from .batches_render import view

        parts.append(view(doc))
    parts += [layer_panel(layer, doc) for layer in doc["layers"]]
    parts += [parameter_table(doc), clipping_table(doc["clipping"]), findings_view(doc["findings"])]
    console.print(Group(*parts))
