"""The `batches` section of an analyze document (data.batches > 1) as a table and as markdown:
median [IQR] over batches and verdicts by majority with the split shown."""

from __future__ import annotations

import math

from rich.console import Group
from rich.text import Text

from ..core.diagnostics import GATE_NAMES
from .inert import markdown
from .text import fmt, layer_label, split, table


def spread(q: dict | None, digits: int = 3) -> str:
    """`18 [17, 20]`: median [q1, q3]; `—` when nothing was measured."""
    if q is None or q["n"] == 0 or math.isnan(q["median"]):
        return "—"
    return f"{fmt(q['median'], digits)} [{fmt(q['q1'], digits)}, {fmt(q['q3'], digits)}]"


def percent(q: dict) -> str:
    """A fraction's spread in percent: `2.1 [1, 3.1]`."""
    if q["n"] == 0 or math.isnan(q["median"]):
        return "—"
    med, q1, q3 = (100 * q[k] for k in ("median", "q1", "q3"))
    return f"{med:.2g} [{q1:.2g}, {q3:.2g}]"


def title(doc: dict) -> str:
    b = doc["batches"]
    last = b["first_index"] + b["count"] - 1
    return (
        f"Across {b['count']} batches of {b['batch_size']} sequences ({b['source']}, "
        f"data.batch_index {b['first_index']}–{last}): median [IQR]"
    )


def view(doc: dict) -> Group:
    """Rich: per unit horizon, decay, λ₁ and verdicts; saturation per gate; findings by batches."""
    b = doc["batches"]
    t = table(title(doc))
    for col, just in (("", "left"), ("horizon", "right"), ("decay /step", "right"), ("λ₁ /step", "right")):
        t.add_column(col, justify=just, no_wrap=True)
    for lay in b["layers"]:
        t.add_row(
            layer_label(lay, doc),
            spread(lay["horizon"]),
            spread(lay["decay_rate"]),
            spread(lay["lyapunov_max"]),
        )
    sat = table("Saturated % per gate: median [IQR]")
    sat.add_column("", no_wrap=True)
    for g in GATE_NAMES:
        sat.add_column(g, justify="right", no_wrap=True)
    for lay in b["layers"]:
        sat.add_row(layer_label(lay, doc), *(percent(lay["saturation"][g]) for g in GATE_NAMES))
    lines = Text()
    for lay in b["layers"]:
        lines.append(f"{layer_label(lay, doc)}: {split(lay['verdict'])}\n")
    lines.append(f"loss {spread(b['loss'], 4)}; network: {split(b['verdict'])}\n", style="bold")
    for f in b["findings"]:
        where = "" if f["layer"] is None else f" ({layer_label(f, doc)})"
        lines.append(f"{f['code']}{where} in {f['batches']} of {b['count']} batches\n")
    lines.append(
        f"The panels below are batch {b['first_index']}'s. --fail-on judges findings of more than "
        "half the batches.",
        style="dim",
    )
    return Group(t, sat, lines)


def markdown_lines(doc: dict) -> list[str]:
    b = doc["batches"]
    out = [
        f"### {markdown(title(doc))}",
        "",
        "| unit | horizon | decay /step | λ₁ /step | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for lay in b["layers"]:
        out.append(
            f"| {layer_label(lay, doc)} | {spread(lay['horizon'])} | {spread(lay['decay_rate'])} | "
            f"{spread(lay['lyapunov_max'])} | {split(lay['verdict'])} |"
        )
    out += [
        "",
        "Saturated % per gate, median [IQR]:",
        "",
        "| unit | " + " | ".join(GATE_NAMES) + " |",
        "|---|" + "---:|" * len(GATE_NAMES),
    ]
    for lay in b["layers"]:
        cells = " | ".join(percent(lay["saturation"][g]) for g in GATE_NAMES)
        out.append(f"| {layer_label(lay, doc)} | {cells} |")
    out += ["", f"- loss {spread(b['loss'], 4)}; network: **{split(b['verdict'])}**"]
    for f in b["findings"]:
        where = "" if f["layer"] is None else f" ({layer_label(f, doc)})"
        out.append(f"- {f['code']}{where} in {f['batches']} of {b['count']} batches")
    out += ["", f"The sections below are batch {b['first_index']}'s.", ""]
    return out
