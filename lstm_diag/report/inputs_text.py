"""How the model and its inputs were taken, in words: what-ifs on loaded weights, the data
file's selection, tokens, initial states, masked targets, and what the reported loss is.

One source for every renderer (table, markdown, HTML, figures), read from the analysis
document (`AnalysisResult.to_dict()`); nothing is computed here.
"""

from __future__ import annotations

from ..numfmt import fmt


def has_head(doc: dict) -> bool:
    """False in the upstream-gradient mode (the LSTM's output is where your model's gradient enters)."""
    return (doc.get("model") or {}).get("head", True)


def what_if_line(doc: dict) -> str | None:
    """`what-if: forget bias 3 on loaded weights; ...`, or None when the weights are as loaded."""
    items = (doc.get("model") or {}).get("what_if") or []
    return "what-if: " + "; ".join(items) if items else None


def data_details(doc: dict) -> list[str]:
    """Short phrases about a data file: selection, tokens, initial states, masked targets."""
    d = doc.get("data")
    if not d:
        return []
    out = []
    if d.get("selected"):
        out.append(
            f"first {d['batch']} of {d['file_batch']} sequences, first {d['steps']} of "
            f"{d['file_steps']} steps (data.batch_size, data.seq_len)"
        )
    if d.get("layout") == "time_major":
        out.append("read time-major (T, B, ·)")
    emb = (doc.get("model") or {}).get("embedding")
    if emb:
        out.append(f"token ids through the embedding {emb[0]}×{emb[1]}")
    if d.get("initial_state"):
        out.append(f"initial states h0, c0 {d['initial_state'].removeprefix('from the file ')}from the file")
    if d.get("ignored_targets"):
        ii = doc["config"]["loss"].get("ignore_index", -100)
        out.append(f"{d['ignored_targets']} of {d['targets']} targets masked (ignore_index {ii})")
    return out


def loss_text(doc: dict, digits: int = 6) -> str:
    """What the loss line says: the engine's loss, the loss captured from the user's model
    (upstream mode), or that there is none to show (never the <dh, h> functional)."""
    lo = doc["config"]["loss"]
    kind = doc.get("loss_kind", "computed")
    if lo["type"] == "upstream":
        if kind == "captured":
            return (
                f"upstream gradient dL/dh from your model; your loss (captured) = {fmt(doc['loss'], digits)}"
            )
        return "upstream gradient dL/dh from your model; no loss value captured"
    return f"{lo['type']} on target '{lo['target']}' = {fmt(doc['loss'], digits)}"
