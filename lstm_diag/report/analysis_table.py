"""Rich rendering of an analysis document (the dict of `AnalysisResult.to_dict()`)."""

from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .text import fmt, sparkline, table


def header(doc: dict) -> Panel:
    c = doc["config"]
    m, d, lo = c["model"], c["data"], c["loss"]
    init = m["init"] if m["weights"] is None else f"weights {m['weights']}"
    if m.get("forget_bias") is not None:
        init += f", forget_bias={m['forget_bias']}"
    lines = [
        f"[bold]model[/]  LSTM {m['input_size']}→{m['hidden_size']}×{m['num_layers']} layer(s)"
        f"→{m['output_size']}, init {init}, {c['dtype']}",
        f"[bold]data[/]   {d['task']}"
        + (f" {d['path']}" if d["task"] == "file" else "")
        + f", batch {d['batch_size']}, {d['seq_len']} steps, seed {c['seed']}",
        f"[bold]loss[/]   {lo['type']} on target '{lo['target']}' = {fmt(doc['loss'], 6)}",
    ]
    return Panel("\n".join(lines), title="lstm-diag analyze", title_align="left", box=box.ROUNDED)


def gradient_flow_table(doc: dict) -> Table:
    t = table("Gradient flow: ‖dL/dc_t‖, ‖dL/dh_t‖ (Frobenius over batch × hidden)")
    t.add_column("layer", justify="right")
    t.add_column("tensor")
    t.add_column("t=1", justify="right")
    t.add_column(f"t={len(doc['layers'][0]['grad_c_norm'])}", justify="right")
    t.add_column("log-norm over t (1 → T)", no_wrap=True)
    for layer in doc["layers"]:
        for key, label in (("grad_c_norm", "dL/dc_t"), ("grad_h_norm", "dL/dh_t")):
            v = layer[key]
            t.add_row(str(layer["layer"]), label, fmt(v[0]), fmt(v[-1]), sparkline(v, 28))
    return t


def parameter_table(doc: dict) -> Table:
    t = table("Parameters (L2 / Frobenius norms)")
    t.add_column("name")
    t.add_column("shape", justify="right")
    t.add_column("‖θ‖", justify="right")
    t.add_column("‖dL/dθ‖", justify="right")
    for name, p in doc["parameters"].items():
        t.add_row(name, "×".join(map(str, p["shape"])), fmt(p["norm"]), fmt(p["grad_norm"]))
    return t


def render(doc: dict, console: Console) -> None:
    console.print(Group(header(doc), gradient_flow_table(doc), parameter_table(doc), Text("")))
