"""Findings: measured numbers judged against stated thresholds. Pure; codes in codes.py.

`Finding` is the one type for what analyze, train and compare report: a stable code, a
severity, a message that cites the numbers and a concrete remedy. Each rule here reads the
plain per-layer data built by analysis.py; train.py makes its own with `finding`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..numfmt import fmt
from .codes import CODES

SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}


@dataclass
class Finding:
    """One judgement, with a code from codes.py (docs/codes.md).

    Where it applies: `layer` for analyze (None: the whole network); `setting` and `step`
    for train (the clip setting; the step, None for the whole run).
    """

    code: str
    severity: str  # "error" | "warning" | "info"
    message: str
    remedy: str
    layer: int | None = None
    setting: str | None = None
    step: int | None = None
    direction: str | None = None  # analyze, bidirectional model: "forward" | "reverse" with `layer`

    def to_dict(self) -> dict:
        """analyze: code, severity, layer, direction, message, remedy; train: setting and step in
        place of layer and direction."""
        if self.setting is None:
            where = {"layer": self.layer, "direction": self.direction}
        else:
            where = {"setting": self.setting, "step": self.step}
        head = {"code": self.code, "severity": self.severity}
        return {**head, **where, "message": self.message, "remedy": self.remedy}


def from_dict(d: dict, **where) -> Finding:
    """A Finding back from its `to_dict` form (a document's `findings` entry); `where` overrides."""
    keys = ("layer", "setting", "step", "direction")
    place = {k: d.get(k) for k in keys} | where
    return Finding(d["code"], d["severity"], d["message"], d["remedy"], **place)


def finding(code: str, message: str, remedy: str, severity: str | None = None, **where) -> Finding:
    """A Finding with its code's severity unless one is given; `where`: layer, or setting and step."""
    return Finding(code, severity or CODES[code].severity, message, remedy, **where)


def matches(finding: Finding, selectors: list[str]) -> bool:
    """--fail-on: codes (LD101), prefixes (LD1), or severities (warning = warning or worse)."""
    for s in selectors:
        s = s.strip()
        if s.lower() in SEVERITY_RANK:
            if SEVERITY_RANK[finding.severity] >= SEVERITY_RANK[s.lower()]:
                return True
        elif s and finding.code.upper().startswith(s.upper()):
            return True
    return False


def _f(code: str, layer: int | None, message: str, remedy: str, severity: str | None = None) -> Finding:
    return finding(code, message, remedy, severity, layer=layer)


def flow_findings(layer: dict, T: int, cfg) -> list[Finding]:
    k, fl = layer["layer"], layer["flow"]
    d = cfg.diagnostics
    out = []
    src = {
        "last_step_loss_term": " (from the last step's loss term)",
        "entry_at_first_step": " (from the gradient entering this direction at t=1)",
    }.get(fl["source"], "")
    rev = layer.get("direction") == "reverse"  # its gradient travels forward in t
    back = "per step forward in t (back in this direction's time)" if rev else "per step back"
    ratio = "||dL/dc_T|| / ||dL/dc_1||" if rev else "||dL/dc_1|| / ||dL/dc_T||"
    where = "entering" if rev else "at the loss"
    if layer["verdict"] == "vanishing":
        per_step = fl["factor_per_step"]
        out.append(
            _f(
                "LD101",
                k,
                f"||dL/dc_t|| falls below {d.vanishing_ratio:g} of its value {where} after "
                f"{fl['horizon']} of {T} steps{src}; typical factor {back} "
                f"×{fmt(per_step)} (decay rate {fmt(fl['decay_rate'])}/step), "
                f"{ratio} = {fmt(fl['ratio_first_last'])}.",
                "Keep the cell path open: raise the forget bias (--set model.forget_bias=1, "
                f"f≈0.73, τ≈3.7 steps; or 3, τ≈21) or use chrono init with t_max≈{T} "
                f"(--set model.init=chrono); or truncate BPTT to ~{max(fl['horizon'], 1)} steps, "
                "which is what the gradient reaches now.",
            )
        )
    if layer["verdict"] == "exploding":
        growth = fl["ratio_first_last"]
        what = (
            f"gradients overflow at t={fl['first_nonfinite_step']}"
            if fl["first_nonfinite_step"]
            else f"{ratio} = {fmt(growth)} (> {d.exploding_ratio:g})"
        )
        out.append(
            _f(
                "LD102",
                k,
                f"the gradient grows going back in time{src}: {what}; typical factor {back} "
                f"×{fmt(fl['factor_per_step'])}.",
                "Clip the global gradient norm (clipping.mode=norm; start max_norm near the typical "
                "unclipped norm, see the clipping section), shrink the recurrent weights "
                "(model.init=orthogonal, or a smaller model.recurrent_scale), or shorten the sequence.",
            )
        )
    dyn = layer.get("dynamics")
    if dyn and dyn["lyapunov"] and math.isfinite(dyn["lyapunov"][0]) and dyn["lyapunov"][0] > 0:
        lam, sd = dyn["lyapunov"][0], dyn["lyapunov_std"][0]
        g = dyn.get("gradient") or {}
        measured = (
            f"; measured growth of ||dL/dc_t|| {fmt(g['measured_rate'])}/step"
            if g.get("measured_rate") is not None and math.isfinite(g["measured_rate"])
            else ""
        )
        out.append(
            _f(
                "LD105",
                k,
                f"largest Lyapunov exponent {lam:+.3g} ± {fmt(sd)}/step: chaotic regime, gradients grow "
                f"~e^({lam:.3g} k) over k steps back{measured}.",
                "Contract the dynamics: smaller recurrent weights (model.recurrent_scale, orthogonal "
                "init), and clip the gradient norm (clipping.mode=norm) while training.",
            )
        )
    if fl["cell_path_horizon"] < T and fl["forget_retention"] > 0:
        out.append(
            _f(
                "LD103",
                k,
                f"forget gates retain e^(mean ln f) = {fmt(fl['forget_retention'])} per step "
                f"(τ = 1/(1-f) ≈ {fmt(fl['forget_time_constant'])} steps): along the cell path the "
                f"product of f falls below {d.vanishing_ratio:g} after "
                f"{fmt(fl['cell_path_horizon'])} steps, fewer than the {T} in the sequence.",
                f"A forget bias b_f gives f≈σ(b_f): b_f=1 → 0.73, b_f=3 → 0.95, b_f=5 → 0.993 "
                f"(--set model.forget_bias=3), or chrono init (model.init=chrono, t_max≈{T}).",
            )
        )
    return out


def gate_findings(layer: dict, cfg) -> list[Finding]:
    k, d = layer["layer"], cfg.diagnostics
    eps = d.saturation_threshold
    out = []
    for name, g in layer["gates"].items():
        # an open forget gate is memory, not a fault (LD203 reports it)
        sat = g["saturated_low"] + (g["saturated_high"] if name != "forget" else 0.0)
        if sat > d.saturated_gate_fraction:
            side = "closed (< eps)" if g["saturated_low"] >= g["saturated_high"] else "open (> 1 - eps)"
            if name == "cell":
                side = "at ±1"
            out.append(
                _f(
                    "LD201",
                    k,
                    f"{name} gate: {sat:.0%} of activations saturated, mostly {side} "
                    f"(eps = {eps:g}; mean {g['mean']:.3f}).",
                    "Saturation comes from large pre-activations: scale down the weights feeding this "
                    "gate (a smaller init gain, xavier/orthogonal init), normalise the inputs, or "
                    "revisit the gate's bias.",
                )
            )
    stuck = []
    for name, g in layer["gates"].items():
        if name == "forget":
            if g["stuck_low"]:
                stuck.append(f"{g['stuck_low']} forget (closed)")
        elif g["stuck_units"]:
            stuck.append(f"{g['stuck_units']} {name}")
    if stuck:
        H = len(layer["gates"]["input"]["unit_saturated_low"])
        out.append(
            _f(
                "LD202",
                k,
                f"units saturated more than {d.stuck_fraction:.0%} of the time: {', '.join(stuck)} "
                f"(of {H} per gate); they pass almost no gradient to their pre-activations.",
                "Check the weights of those units (lstm-diag plot shows them in the saturation "
                "scatter); re-initialise them or lower the input scale.",
            )
        )
    f = layer["gates"]["forget"]
    if f["stuck_high"]:
        out.append(
            _f(
                "LD203",
                k,
                f"{f['stuck_high']} forget-gate unit(s) are open (f > {1 - eps:g}) more than "
                f"{d.stuck_fraction:.0%} of the time: near-perfect integrators.",
                "Often what long memory needs; if the task is short-range, a smaller forget bias "
                "lets these units reset.",
            )
        )
    cs = layer["cell_state"]
    if cs["tanh_saturated"] > d.saturated_gate_fraction:
        out.append(
            _f(
                "LD204",
                k,
                f"tanh(c_t) is saturated (|tanh c| > 0.99, |c| > 2.65) for {cs['tanh_saturated']:.0%} "
                f"of entries (max |c_t| = {fmt(cs['max_abs'])}): the path dL/dh_t → dL/dc_t is "
                "nearly closed there.",
                "The cell accumulates without forgetting: lower the input-gate drive or the forget "
                "bias, or normalise the inputs.",
            )
        )
    return out


def layer_balance_findings(layers: list[dict]) -> list[Finding]:
    if len(layers) < 2:
        return []
    bottom = np.asarray(layers[0]["grad_h_norm"], dtype=float)
    top = np.asarray(layers[-1]["grad_h_norm"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(top > 0, bottom / top, np.nan)
    r = r[np.isfinite(r)]
    ratio = float(np.median(r)) if r.size else math.nan
    if math.isfinite(ratio) and ratio < 1e-2:
        return [
            _f(
                "LD104",
                0,
                f"median over t of ||dL/dh_t|| in layer 0 / layer {len(layers) - 1} = {fmt(ratio)}: "
                "the lower layers get almost no gradient.",
                "Fewer layers, residual connections between layers, or an init that keeps "
                "||W_ih|| near 1 per layer (xavier/orthogonal).",
            )
        ]
    return []


def clipping_findings(clip: dict, verdicts: list[str]) -> list[Finding]:
    out = []
    mode = clip["mode"]
    if mode != "none" and clip["clipped"]:
        if mode == "norm":
            msg = (
                f"global gradient norm {fmt(clip['total_norm'])} > max_norm {clip['max_norm']:g}: "
                f"every gradient is scaled by {fmt(clip['clip_coef'])}."
            )
        else:
            msg = (
                f"{mode} clipping changes {clip['changed_fraction']:.1%} of gradient entries; "
                f"the norm goes {fmt(clip['total_norm'])} → {fmt(clip['norm_after'])}."
            )
        severe = mode == "norm" and clip["clip_coef"] < 0.1
        out.append(
            _f(
                "LD301",
                None,
                msg,
                "If this happens on most steps, clipping acts as a learning-rate cap rather than a "
                "spike guard: `lstm-diag train --clip` shows how often it binds over training.",
                severity="warning" if severe else None,
            )
        )
    if mode in ("value", "agc") and math.isfinite(clip["cosine"]) and clip["cosine"] < 0.99:
        out.append(
            _f(
                "LD302",
                None,
                f"{mode} clipping turns the gradient by "
                f"{math.degrees(math.acos(min(clip['cosine'], 1))):.1f}° "
                f"(cosine {clip['cosine']:.4f}).",
                "Global-norm clipping (clipping.mode=norm) rescales without changing direction.",
            )
        )
    if mode == "none" and "exploding" in verdicts:
        out.append(
            _f(
                "LD303",
                None,
                f"gradients explode (global norm {fmt(clip['total_norm'])}) and no clipping is configured.",
                "Try clipping.mode=norm with max_norm=1 as a starting point; this single gradient is "
                "dominated by the explosion, so do not derive the threshold from it: `lstm-diag train "
                "--clip none,norm:1` measures the unclipped norm over many updates and suggests one "
                "(Pascanu et al. 2013: 0.5-10x the average unclipped norm).",
            )
        )
    return out


def numerics_findings(numerics: dict) -> list[Finding]:
    out = []
    nf = numerics.get("first_nonfinite_forward")
    if nf:
        out.append(
            _f(
                "LD401",
                nf["layer"],
                f"{nf['quantity']} became non-finite at layer {nf['layer']}, step t={nf['step']} "
                f"(max |c| before: {fmt(nf['max_abs_c_before'])})"
                + (
                    "; the gates saturate to exactly 0 or 1 on ±inf, so everything after is unreliable."
                    if nf["quantity"] == "z_t"
                    else "."
                ),
                "The weights or inputs are too large: check the weight file for blown-up values, "
                "normalise the inputs, or scale the weights down.",
            )
        )
    nb = numerics.get("first_nonfinite_backward")
    if nb:
        out.append(
            _f(
                "LD402",
                nb["layer"],
                f"dL/dc_t became non-finite at layer {nb['layer']}, step t={nb['step']} "
                "(the first one met going back from the loss).",
                "Exploding gradients overflowed: clip (clipping.mode=norm) and reduce the recurrent "
                "weights; in float32 try float64 to see the magnitudes.",
            )
        )
    if not numerics.get("loss_finite", True):
        out.append(
            _f(
                "LD403",
                None,
                "the loss is not finite.",
                "Look for LD401 above; check targets and data for NaN/Inf.",
            )
        )
    return out
