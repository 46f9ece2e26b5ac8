"""Gradient flow over training: per-checkpoint quantities, their trajectory, and what changed.

Pure: analyze documents in, plain dicts out (no files, no printing). One checkpoint's
quantities (`point`) are read from its analyze document (`AnalysisResult.to_dict()`, or a
saved `analyze --format json` file), so `track`, `diff` and `train --snapshot-every` show
exactly the numbers `analyze` shows for the same weights and data (docs/track.md):

- loss, the network's verdict and its findings;
- per unit (a layer, or one direction of a bidirectional layer): the gradient horizon and
  decay rate of ||dL/dc_t||, the largest Lyapunov exponent λ₁ (when dynamics are on), the
  forget retention e^{mean ln f} and time constant τ = 1/(1 - f) (eq. 9), the saturated
  fraction of each gate's activations and their mean over the four gates, the stuck units
  of each gate and their total, the verdict, and the ||dL/dc_t|| curve.

`compare_points(a, b)` gives the signed changes from a to b, the findings that appeared
and disappeared, and the regression findings (LD5xx) of the rule documented in
docs/track.md ("--fail-on"); `track` applies it to the first and the latest checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

from .findings import Finding, finding

SCHEMA_VERSION = 1  # of the track document (docs/json-schema.md)
DIFF_SCHEMA_VERSION = 1  # of the diff document

# The quantities compared per unit, in table order, with whether larger is better (None: neither).
QUANTITIES = {
    "horizon": True,
    "decay_rate": False,
    "lambda1": None,
    "forget_retention": True,
    "forget_time_constant": True,
    "saturation": False,
    "stuck_units": False,
}
# The regression rule (docs/track.md, "What counts as worse"): latest against first.
HORIZON_SHRINK = 0.9  # horizon below 0.9 x the first's: LD501
LOSS_RISE = 1.01  # loss above 1.01 x the first's: LD503
STUCK_GROWTH = 1.1  # stuck units above 1.1 x the first's, and at least one more: LD504
_VERDICT_RANK = {"healthy": 0, "vanishing": 1, "exploding": 1}  # no_flow: not judged


def unit_quantities(layer: dict) -> dict:
    """One unit's quantities from an analyze document's `layers[k]`."""
    flow, gates, dyn = layer["flow"], layer["gates"], layer.get("dynamics")
    saturation = {g: s["saturated_low"] + s["saturated_high"] for g, s in gates.items()}
    stuck = {g: int(s["stuck_units"]) for g, s in gates.items()}
    return {
        "layer": layer["layer"],
        "direction": layer.get("direction", "forward"),
        "horizon": flow["horizon"],
        "horizon_reaches_start": flow["horizon_reaches_start"],
        "decay_rate": flow["decay_rate"],
        "lambda1": dyn["lyapunov"][0] if dyn and dyn.get("lyapunov") else None,
        "forget_retention": flow["forget_retention"],
        "forget_time_constant": flow["forget_time_constant"],
        "saturation": sum(saturation.values()) / len(saturation),
        "gate_saturation": saturation,
        "stuck_units": sum(stuck.values()),
        "gate_stuck_units": stuck,
        "verdict": layer["verdict"],
        "grad_c_norm": list(layer["grad_c_norm"]),  # (T,) by position t = 1..T
    }


def point(doc: dict) -> dict:
    """One checkpoint's quantities from its analyze document."""
    return {
        "loss": doc["loss"],
        "loss_kind": doc.get("loss_kind", "computed"),
        "verdict": doc["verdict"],
        "seq_len": len(doc["layers"][0]["grad_c_norm"]),
        "units": [unit_quantities(layer) for layer in doc["layers"]],
        "findings": list(doc["findings"]),
    }


def step_text(step: float) -> str:
    """A step as written: 1200, or 2.5 for a fractional epoch."""
    return str(int(step)) if float(step).is_integer() else f"{step:g}"


def unit_key(u: dict) -> tuple[int, str]:
    return u["layer"], u.get("direction") or "forward"


def unit_name(u: dict) -> str:
    layer, direction = unit_key(u)
    return f"layer {layer}" if direction == "forward" else f"layer {layer} {direction}"


def _finding_key(f: dict) -> tuple:
    return f["code"], f.get("layer"), f.get("direction")


def _change(a: Any, b: Any) -> dict:
    both = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return {"a": a, "b": b, "change": b - a if both else None}


def _pct(a: float, b: float) -> str:
    return f" ({(b - a) / abs(a):+.0%})" if a and math.isfinite(a) and math.isfinite(b) else ""


def _num(v: float) -> str:
    from ..numfmt import fmt

    return fmt(v, 3)


def compare_points(a: dict, b: dict, label_a: str = "a", label_b: str = "b") -> dict:
    """What changed from point a to point b: signed changes per unit, findings that appeared
    and disappeared (matched by code, layer and direction), and the regression findings."""
    units_a = {unit_key(u): u for u in a["units"]}
    units = []
    for ub in b["units"]:
        ua = units_a.get(unit_key(ub))
        if ua is None:
            continue
        row = {"layer": ub["layer"], "direction": ub["direction"]}
        row |= {q: _change(ua[q], ub[q]) for q in QUANTITIES}
        row["verdict"] = {"a": ua["verdict"], "b": ub["verdict"]}
        units.append(row)
    before = {_finding_key(f) for f in a["findings"]}
    after = {_finding_key(f) for f in b["findings"]}
    return {
        "a": label_a,
        "b": label_b,
        "loss": _change(a["loss"], b["loss"]),
        "verdict": {"a": a["verdict"], "b": b["verdict"]},
        "units": units,
        "unmatched_units": sorted(
            {unit_name(u) for u in a["units"] + b["units"]} - {unit_name(u) for u in units}
        ),
        "findings_appeared": [f for f in b["findings"] if _finding_key(f) not in before],
        "findings_disappeared": [f for f in a["findings"] if _finding_key(f) not in after],
        "regressions": [f.to_dict() for f in regressions(a, b, label_a, label_b)],
    }


def regressions(a: dict, b: dict, label_a: str = "a", label_b: str = "b") -> list[Finding]:
    """LD5xx: where b is worse than a by the stated rule (HORIZON_SHRINK, verdict rank,
    LOSS_RISE, STUCK_GROWTH; docs/track.md)."""
    span = f"from {label_a} to {label_b}"
    out = []
    la, lb = a["loss"], b["loss"]
    if a["loss_kind"] != "none" and la is not None and lb is not None and lb > LOSS_RISE * la:
        out.append(
            finding(
                "LD503",
                f"the loss rose {span}: {_num(la)} -> {_num(lb)}{_pct(la, lb)} on the same data.",
                "Look at the learning rate and the clipping of the run between these checkpoints "
                "(lstm-diag train --clip none,norm:1.0 compares clip settings on your config).",
            )
        )
    units_a = {unit_key(u): u for u in a["units"]}
    for ub in b["units"]:
        ua = units_a.get(unit_key(ub))
        if ua is not None:
            out += _unit_regressions(ua, ub, span)
    return out


def _unit_regressions(ua: dict, ub: dict, span: str) -> list[Finding]:
    where = {"layer": ub["layer"], "direction": None if ub["direction"] == "forward" else ub["direction"]}
    out = []
    ra, rb = _VERDICT_RANK.get(ua["verdict"]), _VERDICT_RANK.get(ub["verdict"])
    if ra is not None and rb is not None and rb > ra:
        out.append(
            finding(
                "LD502",
                f"the verdict went from {ua['verdict']} to {ub['verdict']} {span}.",
                "Compare the two analyses side by side: lstm-diag diff A B (forget retention, "
                "saturation and λ₁ say which path closed).",
                **where,
            )
        )
    ha, hb = ua["horizon"], ub["horizon"]
    if hb < HORIZON_SHRINK * ha:
        out.append(
            finding(
                "LD501",
                f"the gradient horizon shrank {span}: {ha} -> {hb} steps{_pct(ha, hb)}; "
                f"forget retention {_num(ua['forget_retention'])} -> {_num(ub['forget_retention'])}.",
                "Training is closing the cell path: see which gates saturate (lstm-diag diff A B); "
                "a larger forget bias or chrono init at the start keeps it open longer.",
                **where,
            )
        )
    sa, sb = ua["stuck_units"], ub["stuck_units"]
    if sb > STUCK_GROWTH * sa and sb >= sa + 1:
        gates = ", ".join(
            f"{g} {ua['gate_stuck_units'][g]} -> {n}"
            for g, n in ub["gate_stuck_units"].items()
            if n != ua["gate_stuck_units"].get(g)
        )
        out.append(
            finding(
                "LD504",
                f"stuck units (saturated on almost every entry) grew {span}: {sa} -> {sb} ({gates}).",
                "Stuck units pass no gradient through their gate: a smaller learning rate or weight "
                "decay keeps pre-activations from growing; lstm-diag analyze names the gates (LD202).",
                **where,
            )
        )
    return out


def trajectory(points: list[dict]) -> dict:
    """The track document's body from checkpoint points sorted by step; each point carries
    `path`, `step` and `step_source` besides its quantities."""
    first, last = points[0], points[-1]
    la, lb = (f"step {step_text(p['step'])}" for p in (first, last))
    change = compare_points(first, last, la, lb)
    return {
        "checkpoints": points,
        "change": change,
        "findings": change["regressions"] + change["findings_appeared"],
    }


def series(points: list[dict]) -> dict:
    """Per unit, each quantity as a list over the points (for figures): {unit name: {q: [...]}}."""
    out: dict[str, dict[str, list]] = {}
    for p in points:
        for u in p["units"]:
            s = out.setdefault(unit_name(u), {})
            for q in (*QUANTITIES, "verdict"):
                s.setdefault(q, []).append(u[q])
            for g, v in u["gate_saturation"].items():
                s.setdefault(f"saturation_{g}", []).append(v)
    return out


def snapshot_record(setting: str, p: dict) -> dict:
    """A `train --snapshot-every` point as one metrics record (docs/train.md, "Snapshots"):
    `record: "snapshot"`, the step, setting, loss and verdict, and per unit k each quantity
    as `<quantity>_l<k>` (`_l<k>_reverse` for a reverse direction)."""
    rec = {"record": "snapshot", "step": p["step"], "setting": setting}
    rec |= {"loss": p["loss"], "verdict": p["verdict"]}
    for u in p["units"]:
        k = f"{u['layer']}" + ("_reverse" if u["direction"] == "reverse" else "")
        rec |= {f"{q}_l{k}": u[q] for q in QUANTITIES}
        rec[f"verdict_l{k}"] = u["verdict"]
    return rec


SNAPSHOT_LAYER_FIELDS = (*QUANTITIES, "verdict")
