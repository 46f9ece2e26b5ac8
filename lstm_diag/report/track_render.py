"""Tables and markdown of the track and diff documents (features/trajectory.py).

Everything shown is read from the document. The rows are built once as text
(`track_rows`, `diff_rows`) and laid out by the rich and the markdown renderer alike.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ..features.trajectory import step_text
from .inert import markdown, terminal
from .text import fmt, table

TRACK_COLUMNS = ("step", "loss", "horizon", "decay", "λ₁", "f ret.", "τ", "sat.", "stuck", "verdict")
SOURCE_WORDS = {"file name": "number in the file name", "order given": "order given"}
DIFF_QUANTITIES = (  # (key, label, digits)
    ("horizon", "horizon (steps)", 3),
    ("decay_rate", "decay rate /step", 3),
    ("lambda1", "λ₁ (largest Lyapunov)", 3),
    ("forget_retention", "forget retention", 3),
    ("forget_time_constant", "τ = 1/(1−f) (steps)", 3),
    ("saturation", "saturation (4-gate mean)", 3),
    ("stuck_units", "stuck units", 3),
)


def _unit_name(u: dict) -> str:
    return f"layer {u['layer']}" + (
        "" if u.get("direction", "forward") == "forward" else f" {u['direction']}"
    )


def _horizon(u: dict, T: int) -> str:
    return f"{u['horizon']}" + ("+" if u["horizon_reaches_start"] else "") + f"/{T}"


def track_rows(doc: dict) -> dict[str, list[list[str]]]:
    """unit name -> one row per checkpoint (TRACK_COLUMNS), from the document."""
    out: dict[str, list[list[str]]] = {}
    for p in doc["checkpoints"]:
        for u in p["units"]:
            out.setdefault(_unit_name(u), []).append(
                [
                    step_text(p["step"]),
                    fmt(p["loss"], 4),
                    _horizon(u, p["seq_len"]),
                    fmt(u["decay_rate"], 2),
                    fmt(u["lambda1"], 2),
                    fmt(u["forget_retention"], 2),
                    fmt(u["forget_time_constant"], 2),
                    f"{u['saturation']:.1%}",
                    str(u["stuck_units"]),
                    u["verdict"],
                ]
            )
    return out


def source_words(source: str) -> str:
    """A point's step_source in words: "`step` in the checkpoint", "number in the file name"."""
    return (
        f"`{source[5:]}` in the checkpoint"
        if source.startswith("meta:")
        else SOURCE_WORDS.get(source, source)
    )


def _signed(v) -> str:
    if v is None:
        return "—"
    return "0" if v == 0 else ("+" if v > 0 else "") + fmt(v)


def diff_rows(change: dict) -> dict[str, list[list[str]]]:
    """unit name (and "network") -> rows [quantity, A, B, change], from a `change` section."""
    loss = change["loss"]
    out = {
        "network": [
            ["loss", fmt(loss["a"], 4), fmt(loss["b"], 4), _signed(loss["change"])],
            ["verdict", change["verdict"]["a"], change["verdict"]["b"], _arrow(change["verdict"])],
        ]
    }
    for u in change["units"]:
        rows = [
            [label, fmt(u[k]["a"], d), fmt(u[k]["b"], d), _signed(u[k]["change"])]
            for k, label, d in DIFF_QUANTITIES
        ]
        rows.append(["verdict", u["verdict"]["a"], u["verdict"]["b"], _arrow(u["verdict"])])
        out[_unit_name(u)] = rows
    return out


def _arrow(v: dict) -> str:
    return "same" if v["a"] == v["b"] else f"{v['a']} → {v['b']}"


def _finding_line(f: dict) -> str:
    where = ""
    if f.get("layer") is not None:
        where = f" (layer {f['layer']}{' ' + f['direction'] if f.get('direction') else ''})"
    return f"{f['code']} {f['severity']}{where}: {f['message']}"


def _finding_sections(change: dict) -> list[tuple[str, list[dict]]]:
    return [
        (f"Worse from {change['a']} to {change['b']} (LD5xx, the --fail-on rule)", change["regressions"]),
        (f"Findings that appeared at {change['b']}", change["findings_appeared"]),
        (f"Findings gone at {change['b']}", change["findings_disappeared"]),
    ]


# ------------------------------------------------------------------------------- rich


def _print_findings(change: dict, console: Console) -> None:
    for title, found in _finding_sections(change):
        console.print(Text(title, style="bold"))
        if not found:
            console.print("  none")
        for f in found:
            console.print(f"  {terminal(_finding_line(f))}")


def render_track(doc: dict, console: Console) -> None:
    cps = doc["checkpoints"]
    console.print(Text(f"lstm-diag track: {len(cps)} checkpoints on the same data", style="bold"))
    for p in cps:
        console.print(
            f"  step {step_text(p['step'])} ({source_words(p['step_source'])}): {terminal(p['path'])}"
        )
    for name, rows in track_rows(doc).items():
        t = table(name)
        for k, col in enumerate(TRACK_COLUMNS):
            t.add_column(col, justify="left" if k == len(TRACK_COLUMNS) - 1 else "right", no_wrap=True)
        for row in rows:
            t.add_row(*row)
        console.print(t)
    console.print(
        "horizon: steps back from the loss before ‖dL/dc_t‖ < vanishing_ratio × its value there (+: reaches "
        "t=1); decay per step; f ret.: forget retention; sat.: saturated gate activations, 4-gate mean; "
        "stuck: units over the four gates (docs/track.md)"
    )
    _print_findings(doc["change"], console)


def render_diff(doc: dict, console: Console) -> None:
    change = doc["change"]
    console.print(Text("lstm-diag diff: B − A", style="bold"))
    for side in ("a", "b"):
        console.print(f"  {side.upper()}: {terminal(doc[side]['label'])}")
    for name, rows in diff_rows(change).items():
        t = table(name)
        for col in ("", "A", "B", "B − A"):
            t.add_column(col, justify="left" if not col else "right", no_wrap=True)
        for row in rows:
            t.add_row(*row)
        console.print(t)
    if change["unmatched_units"]:
        console.print(f"not compared (in one only): {', '.join(change['unmatched_units'])}")
    _print_findings(change, console)


# --------------------------------------------------------------------------- markdown


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(markdown(c) for c in row) + " |" for row in rows] + [""]


def _md_findings(change: dict) -> list[str]:
    out = []
    for title, found in _finding_sections(change):
        out += [f"### {markdown(title)}", ""]
        out += [f"- {markdown(_finding_line(f))}" for f in found] or ["None."]
        out.append("")
    return out


def track_markdown(doc: dict) -> str:
    out = ["## lstm-diag track", ""]
    out += [
        f"- step {step_text(p['step'])} ({source_words(p['step_source'])}): {markdown(p['path'])}"
        for p in doc["checkpoints"]
    ]
    out.append("")
    for name, rows in track_rows(doc).items():
        out += [f"### {name}", ""] + _md_table(list(TRACK_COLUMNS), rows)
    return "\n".join(out + _md_findings(doc["change"])) + "\n"


def diff_markdown(doc: dict) -> str:
    change = doc["change"]
    out = [
        "## lstm-diag diff",
        "",
        f"- A: {markdown(doc['a']['label'])}",
        f"- B: {markdown(doc['b']['label'])}",
        "",
    ]
    for name, rows in diff_rows(change).items():
        out += [f"### {name}", ""] + _md_table(["", "A", "B", "B − A"], rows)
    return "\n".join(out + _md_findings(change)) + "\n"
