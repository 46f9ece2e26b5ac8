"""`inspect` as a terminal table or markdown, from the document of features/inspect.py.

Names come from the file and may hold anything (a hostile pickle can name a tensor
with terminal escapes or markdown): every name is shown inert, control characters
escaped, markdown syntax neutralised (report/inert.py: `plain` for rich Text, which
parses no markup, and `markdown`). Names and paths are cut to inert.MAX_CHARS characters
in displays; the JSON keeps them whole.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .inert import markdown, plain
from .text import table

MAX_ROWS = 400  # arrays listed in the table; the JSON always has all of them


SENTENCE = 4000  # characters of one summary line (made of names, each already cut to MAX_CHARS)


def _shape(shape: list[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def summary(doc: dict) -> list[tuple[str, str]]:
    """What was found, as (label, plain sentence) pairs (shared by the table and markdown)."""
    rows = [("file", f"{plain(doc['file'])} ({doc['format']})")]
    if doc["note"]:
        rows.append(("note", plain(doc["note"], SENTENCE)))
    if doc.get("converted"):
        rows.append(("source layout", plain(doc["converted"]["source"], SENTENCE)))
        rows += [("conversion", plain(n, SENTENCE)) for n in doc["converted"]["notes"]]
    m = doc["model"]
    if m is None:
        rows.append(("model", plain(doc["problem"], SENTENCE)))
        if "model.weights_key" in doc["problem"] or "model.lstm" in doc["problem"]:
            rows.append(("hint", "lstm-diag inspect FILE --weights-key SECTION (or --lstm PREFIX)"))
    else:
        rows += _model_rows(m)
    for u in doc["unused"]:
        count = f" ({u['count']} arrays)" if u["count"] > 1 else ""
        rows.append(("unused", f"{plain(u['names'], SENTENCE)}{count}: {plain(u['reason'], SENTENCE)}"))
    meta = {k: v for k, v in doc["meta"].items() if not (doc.get("converted") and k == "source layout")}
    if meta:
        top = sorted(meta.items(), key=lambda kv: "." in kv[0])  # epoch, step first
        shown = [f"{plain(k)}={plain(v)}" for k, v in top[:8]]
        more = f" (+{len(top) - 8} more: --format json)" if len(top) > 8 else ""
        rows.append(("meta", ", ".join(shown) + more))
    return rows


def _model_rows(m: dict) -> list[tuple[str, str]]:
    lstm = m["lstm"]
    where = f" at {plain(lstm['prefix'].rstrip('.'))}" if lstm["prefix"] else ""
    rows = [("LSTM", f"{plain(lstm['description'])}{where}")]
    if m["state_dict"]:
        rows.append(("state dict", f"the checkpoint's section {plain(m['state_dict'])!r}"))
    if m["head"]:
        rows.append(("head", plain(m["head"]["description"])))
    elif m["mlp_head"]:
        chain = " -> ".join(plain(x["description"]) for x in m["mlp_head"])
        rows.append(("head", f"an MLP ({chain}); use the upstream-gradient mode (loss.type: upstream)"))
    elif m["head_candidates"]:
        names = ", ".join(plain(x["description"]) for x in m["head_candidates"])
        rows.append(("head", f"{len(m['head_candidates'])} candidates ({names}); model.head picks one"))
    else:
        rows.append(("head", "none found (the losses need one; or use loss.type: upstream)"))
    if m["embedding"]:
        rows.append(("embedding", plain(m["embedding"]["description"])))
    elif m["embedding_candidates"]:
        names = ", ".join(plain(x["description"]) for x in m["embedding_candidates"])
        rows.append(
            ("embedding", f"{len(m['embedding_candidates'])} candidates ({names}); model.embedding picks")
        )
    if m["engine"] != "supported":
        rows.append(("engine", plain(m["engine"], SENTENCE)))
    return rows


def render_table(doc: dict) -> Group:
    """A rich renderable: the summary, then every array with its role."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    for label, text in summary(doc):
        head.add_row(label, Text(text))
    t = table(f"\n{len(doc['arrays'])} arrays")
    for col in ("name", "shape", "dtype", "role"):
        t.add_column(col, no_wrap=col != "role")
    for a in doc["arrays"][:MAX_ROWS]:
        t.add_row(Text(plain(a["name"])), _shape(a["shape"]), a["dtype"], Text(plain(a["role"], SENTENCE)))
    parts: list[Any] = [head, t]
    if len(doc["arrays"]) > MAX_ROWS:
        parts.append(Text(f"... and {len(doc['arrays']) - MAX_ROWS} more (all of them: --format json)"))
    if doc.get("converted"):
        parts.append(Text("\n".join(plain(x, SENTENCE) for x in doc["converted"]["mapping"])))
    return Group(*parts)


def render_markdown(doc: dict) -> str:
    out = [f"## lstm-diag inspect: {markdown(doc['file'])}", ""]
    out += [f"- **{label}**: {markdown(text, SENTENCE)}" for label, text in summary(doc)]
    out += ["", "| name | shape | dtype | role |", "| --- | --- | --- | --- |"]
    for a in doc["arrays"]:
        name, role = markdown(a["name"]), markdown(a["role"], SENTENCE)
        out.append(f"| {name} | {_shape(a['shape'])} | {a['dtype']} | {role} |")
    return "\n".join(out) + "\n"
