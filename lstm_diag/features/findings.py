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
    for train (the clip setting; the step, None for the whole run). `remedy_for`: the
    situation the remedy is written for (analyze): "init" (a model drawn from an init
    scheme), "trained" (loaded weights, model.weights) or "any".
    """

    code: str
    severity: str  # "error" | "warning" | "info"
    message: str
    remedy: str
    layer: int | None = None
    setting: str | None = None
    step: int | None = None
    direction: str | None = None  # analyze, bidirectional model: "forward" | "reverse" with `layer`
    remedy_for: str | None = None  # "init" | "trained" | "any"; None for train's findings

    def to_dict(self) -> dict:
        """analyze: code, severity, layer, direction, message, remedy, remedy_for; train: setting
        and step in place of layer and direction."""
        if self.setting is None:
            where = {"layer": self.layer, "direction": self.direction}
        else:
            where = {"setting": self.setting, "step": self.step}
        head = {"code": self.code, "severity": self.severity}
        tail = {} if self.remedy_for is None else {"remedy_for": self.remedy_for}
        return {**head, **where, "message": self.message, "remedy": self.remedy, **tail}


def from_dict(d: dict, **where) -> Finding:
    """A Finding back from its `to_dict` form (a document's `findings` entry); `where` overrides."""
    keys = ("layer", "setting", "step", "direction", "remedy_for")
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


# ------------------------------------------------------------------ remedies by situation

AT_INIT = "At init: "
TRAINED = "Trained model (loaded weights): "
EITHER = "At init or trained: "
WHAT_IF = "(a what-if on these weights: the file is not changed; docs/what-if.md)"


def trained(cfg) -> bool:
    """Whether the analysed model is loaded from a file (model.weights), e.g. a trained one,
    rather than drawn from an init scheme: init remedies do not apply to it."""
    return cfg.model.weights is not None


def _f(code: str, layer: int | None, message: str, remedy: str, severity: str | None = None, **kw) -> Finding:
    return finding(code, message, remedy, severity, layer=layer, **kw)


def _situated(code: str, layer, message: str, cfg, at_init: str, for_trained: str, **kw) -> Finding:
    """A finding whose remedy is the one for the situation: drawn from an init, or loaded weights."""
    if trained(cfg):
        return _f(code, layer, message, TRAINED + for_trained, remedy_for="trained", **kw)
    return _f(code, layer, message, AT_INIT + at_init, remedy_for="init", **kw)


def _any(code: str, layer, message: str, remedy: str, **kw) -> Finding:
    return _f(code, layer, message, EITHER + remedy, remedy_for="any", **kw)


# ------------------------------------------------------------------ decay, in words


def _position(k: int, T: int, reverse: bool) -> int:
    """k steps back from where the gradient enters, as the position t in the sequence."""
    return 1 + k if reverse else T - k


def decay_text(fl: dict, T: int, reverse: bool = False) -> str:
    """The decay of ||dL/dc_t|| within the horizon window, as fitted (`flow.decay_fit`):
    "0.322/step (×0.724) over t = 64..43", or two rates with the step where the slope changes:
    "fast 0.685/step (×0.504) over t = 64..59, then slower 0.285/step (×0.752) over t = 59..46".
    Documents without a fit (schema < 5) give the Theil–Sen rate over all steps."""
    fit = fl.get("decay_fit")
    if not fit:
        return f"{fmt(fl['decay_rate'])}/step (×{fmt(fl['factor_per_step'])}, Theil–Sen over all {T} steps)"
    segs = fit["segments"]
    if not segs:
        return f"too few finite steps within the horizon ({fit['window_steps_back'][1]}) to fit a decay"

    def one(seg: dict) -> str:
        a, b = (_position(k, T, reverse) for k in seg["steps_back"])
        return f"{fmt(seg['rate'])}/step (×{fmt(seg['factor_per_step'])}) over t = {a}..{b}"

    if len(segs) == 1:
        return one(segs[0])
    first, then = ("fast", "slower") if abs(segs[0]["rate"]) > abs(segs[1]["rate"]) else ("slow", "faster")
    return f"{first} {one(segs[0])}, then {then} {one(segs[1])}"


# ------------------------------------------------------------------ rules


def flow_findings(layer: dict, T: int, cfg) -> list[Finding]:
    k, fl = layer["layer"], layer["flow"]
    out = []
    src = {
        "last_step_loss_term": " (from the last step's loss term)",
        "entry_at_first_step": " (from the gradient entering this direction at t=1)",
    }.get(fl["source"], "")
    rev = layer.get("direction") == "reverse"  # its gradient travels forward in t
    if layer["verdict"] == "vanishing":
        out.append(_vanishing(k, fl, T, cfg, src, rev))
    if layer["verdict"] == "exploding":
        out.append(_exploding(k, fl, cfg, src, rev))
    dyn = layer.get("dynamics")
    if dyn and dyn["lyapunov"] and math.isfinite(dyn["lyapunov"][0]) and dyn["lyapunov"][0] > 0:
        out.append(_chaotic(k, dyn, cfg))
    if _forget_gates_erase(fl, T):
        out.append(_short_memory(k, fl, T, cfg))
    return out


def _vanishing(k: int, fl: dict, T: int, cfg, src: str, rev: bool) -> Finding:
    d = cfg.diagnostics
    ratio = "||dL/dc_T|| / ||dL/dc_1||" if rev else "||dL/dc_1|| / ||dL/dc_T||"
    where = "entering" if rev else "at the loss"
    h = max(fl["horizon"], 1)
    message = (
        f"||dL/dc_t|| falls below {d.vanishing_ratio:g} of its value {where} after "
        f"{fl['horizon']} of {T} steps{src}; within them it decays {decay_text(fl, T, rev)}; "
        f"{ratio} = {fmt(fl['ratio_first_last'])}."
    )
    at_init = (
        "keep the cell path open: raise the forget bias (--set model.forget_bias=1, "
        f"f≈0.73, τ≈3.7 steps; or 3, τ≈21) or use chrono init with t_max≈{T} "
        f"(--set model.init=chrono); or truncate BPTT to ~{h} steps, "
        "which is what the gradient reaches now."
    )
    for_trained = (
        f"if the task needs dependencies longer than {h} steps, --set model.forget_bias=3 "
        f"(every forget bias 3, f≈0.95) shows how much further the gradient would reach {WHAT_IF}, "
        f"and the next training run can start from a forget bias of 1-3 or chrono init (t_max≈{T}); "
        f"if it does not, BPTT truncated to ~{h} steps drops only gradient below "
        f"{d.vanishing_ratio:g} of its value {where}."
    )
    return _situated("LD101", k, message, cfg, at_init, for_trained)


def _exploding(k: int, fl: dict, cfg, src: str, rev: bool) -> Finding:
    d = cfg.diagnostics
    back = "per step forward in t (back in this direction's time)" if rev else "per step back"
    ratio = "||dL/dc_T|| / ||dL/dc_1||" if rev else "||dL/dc_1|| / ||dL/dc_T||"
    what = (
        f"gradients overflow at t={fl['first_nonfinite_step']}"
        if fl["first_nonfinite_step"]
        else f"{ratio} = {fmt(fl['ratio_first_last'])} (> {d.exploding_ratio:g})"
    )
    message = (
        f"the gradient grows going back in time{src}: {what}; typical factor {back} "
        f"×{fmt(fl['factor_per_step'])}."
    )
    at_init = (
        "clip the global gradient norm (clipping.mode=norm; start max_norm near the typical "
        "unclipped norm, see the clipping section), shrink the recurrent weights "
        "(model.init=orthogonal, or a smaller model.recurrent_scale), or shorten the sequence."
    )
    for_trained = (
        "clip the global gradient norm in training (clipping.mode=norm; start max_norm near the "
        "typical unclipped norm) and lower the learning rate; --set model.recurrent_scale=0.9 "
        f"(W_hh ×0.9) shows how much contraction would stop the growth {WHAT_IF}."
    )
    return _situated("LD102", k, message, cfg, at_init, for_trained)


def _chaotic(k: int, dyn: dict, cfg) -> Finding:
    lam, sd = dyn["lyapunov"][0], dyn["lyapunov_std"][0]
    g = dyn.get("gradient") or {}
    measured = (
        f"; measured growth of ||dL/dc_t|| {fmt(g['measured_rate'])}/step"
        if g.get("measured_rate") is not None and math.isfinite(g["measured_rate"])
        else ""
    )
    message = (
        f"largest Lyapunov exponent {lam:+.3g} ± {fmt(sd)}/step: chaotic regime, gradients grow "
        f"~e^({lam:.3g} k) over k steps back{measured}."
    )
    at_init = (
        "contract the dynamics: smaller recurrent weights (model.recurrent_scale, orthogonal "
        "init), and clip the gradient norm (clipping.mode=norm) while training."
    )
    for_trained = (
        "clip the gradient norm while training (clipping.mode=norm) and consider a lower learning "
        f"rate; --set model.recurrent_scale=0.9 shows how far W_hh is from contracting {WHAT_IF}."
    )
    return _situated("LD105", k, message, cfg, at_init, for_trained)


def _forget_gates_erase(fl: dict, T: int) -> bool:
    """LD103: the forget gates alone erase the gradient within the sequence: the average
    cell-path horizon is shorter than T and no unit keeps its own cell path open over T
    (a unit whose f stays near 1 carries gradient along the cell path, whatever the mean)."""
    if not (fl["cell_path_horizon"] < T and fl["forget_retention"] > 0):
        return False
    return not fl.get("cell_path_open_units")


def _short_memory(k: int, fl: dict, T: int, cfg) -> Finding:
    d = cfg.diagnostics
    longest = fl.get("cell_path_horizon_max")
    units = (
        f"; no unit keeps it open over the sequence (the longest per-unit horizon is {fmt(longest)} steps)"
        if longest is not None
        else ""
    )
    message = (
        f"forget gates retain e^(mean ln f) = {fmt(fl['forget_retention'])} per step "
        f"(τ = 1/(1-f) ≈ {fmt(fl['forget_time_constant'])} steps): along the cell path the "
        f"product of f falls below {d.vanishing_ratio:g} after "
        f"{fmt(fl['cell_path_horizon'])} steps, fewer than the {T} in the sequence{units}."
    )
    at_init = (
        f"a forget bias b_f gives f≈σ(b_f): b_f=1 → 0.73, b_f=3 → 0.95, b_f=5 → 0.993 "
        f"(--set model.forget_bias=3), or chrono init (model.init=chrono, t_max≈{T})."
    )
    most = longest if longest is not None else fl["cell_path_horizon"]
    for_trained = (
        f"the learned forget gates keep at most {fmt(most)} steps of memory. If the task needs "
        "longer memory, --set model.forget_bias=3 (every forget bias 3, f≈0.95) shows what a "
        f"longer memory would carry {WHAT_IF}; the next training run "
        f"can start from a forget bias of 1-3 or chrono init (t_max≈{T})."
    )
    return _situated("LD103", k, message, cfg, at_init, for_trained)


def gate_findings(layer: dict, cfg) -> list[Finding]:
    k = layer["layer"]
    out = _saturated_gates(layer, cfg)
    stuck = _stuck_units(layer, cfg)
    if stuck:
        out.append(stuck)
    f = layer["gates"]["forget"]
    d = cfg.diagnostics
    if f["stuck_high"]:
        message = (
            f"{f['stuck_high']} forget-gate unit(s) are open (f > {1 - d.saturation_threshold:g}) more than "
            f"{d.stuck_fraction:.0%} of the time: near-perfect integrators."
        )
        at_init = (
            "often what long memory needs; if the task is short-range, a smaller forget bias lets "
            "these units reset."
        )
        for_trained = (
            "learned long memory: these units carry information and gradient across many steps, "
            "usually what long-range structure needs; nothing to fix."
        )
        out.append(_situated("LD203", k, message, cfg, at_init, for_trained))
    cs = layer["cell_state"]
    if cs["tanh_saturated"] > d.saturated_gate_fraction:
        message = (
            f"tanh(c_t) is saturated (|tanh c| > 0.99, |c| > 2.65) for {cs['tanh_saturated']:.0%} "
            f"of entries (max |c_t| = {fmt(cs['max_abs'])}): the path dL/dh_t → dL/dc_t is "
            "nearly closed there."
        )
        at_init = (
            "the cell accumulates without forgetting: lower the input-gate drive or the forget "
            "bias, or normalise the inputs."
        )
        for_trained = (
            "the learned cell states are large, so tanh′(c_t) closes the path. In training, weight "
            "decay or a lower learning rate limit the weight growth behind it; --set "
            "model.forget_bias=0 (every forget bias 0, f≈0.5) shows how much a cell that forgets more "
            f"reopens the path {WHAT_IF}."
        )
        out.append(_situated("LD204", k, message, cfg, at_init, for_trained))
    return out


def _saturated_gates(layer: dict, cfg) -> list[Finding]:
    k, d = layer["layer"], cfg.diagnostics
    eps = d.saturation_threshold
    out = []
    for name, g in layer["gates"].items():
        # an open forget gate is memory, not a fault (LD203 reports it)
        sat = g["saturated_low"] + (g["saturated_high"] if name != "forget" else 0.0)
        if sat <= d.saturated_gate_fraction:
            continue
        side = "closed (< eps)" if g["saturated_low"] >= g["saturated_high"] else "open (> 1 - eps)"
        if name == "cell":
            side = "at ±1"
        message = (
            f"{name} gate: {sat:.0%} of activations saturated, mostly {side} "
            f"(eps = {eps:g}; mean {g['mean']:.3f})."
        )
        at_init = (
            "saturation comes from large pre-activations: scale down the weights feeding this "
            "gate (a smaller init gain, xavier/orthogonal init), normalise the inputs, or "
            "revisit the gate's bias."
        )
        bound = (
            f"1 - g² ≤ {1 - (1 - 2 * eps) ** 2:.2g} (1 unsaturated)"
            if name == "cell"
            else (f"σ′ ≤ {eps * (1 - eps):.2g} (0.25 unsaturated)")
        )
        for_trained = (
            f"a learned gate may saturate on purpose (on or off), but where it does its derivative "
            f"factor is small ({bound}), so the weights feeding it learn slowly. In training, "
            "normalised inputs (or layer norm), weight decay or a lower learning rate keep "
            "pre-activations moderate."
        )
        out.append(_situated("LD201", k, message, cfg, at_init, for_trained))
    return out


def _stuck_units(layer: dict, cfg) -> Finding | None:
    k, d = layer["layer"], cfg.diagnostics
    stuck = []
    for name, g in layer["gates"].items():
        if name == "forget":
            if g["stuck_low"]:
                stuck.append(f"{g['stuck_low']} forget (closed)")
        elif g["stuck_units"]:
            stuck.append(f"{g['stuck_units']} {name}")
    if not stuck:
        return None
    H = len(layer["gates"]["input"]["unit_saturated_low"])
    message = (
        f"units saturated more than {d.stuck_fraction:.0%} of the time: {', '.join(stuck)} "
        f"(of {H} per gate); they pass almost no gradient to their pre-activations."
    )
    at_init = (
        "check the weights of those units (lstm-diag plot shows them in the saturation "
        "scatter); re-initialise them or lower the input scale."
    )
    for_trained = (
        "stuck units barely learn any more: see whether their number grows from checkpoint to "
        "checkpoint (analyze each); normalised inputs, weight decay or a lower learning rate in "
        "training keep units out of saturation."
    )
    return _situated("LD202", k, message, cfg, at_init, for_trained)


def layer_balance_findings(layers: list[dict], cfg) -> list[Finding]:
    if len(layers) < 2:
        return []
    bottom = np.asarray(layers[0]["grad_h_norm"], dtype=float)
    top = np.asarray(layers[-1]["grad_h_norm"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(top > 0, bottom / top, np.nan)
    r = r[np.isfinite(r)]
    ratio = float(np.median(r)) if r.size else math.nan
    if math.isfinite(ratio) and ratio < 1e-2:
        message = (
            f"median over t of ||dL/dh_t|| in layer 0 / layer {len(layers) - 1} = {fmt(ratio)}: "
            "the lower layers get almost no gradient."
        )
        at_init = (
            "fewer layers, residual connections between layers, or an init that keeps "
            "||W_ih|| near 1 per layer (xavier/orthogonal)."
        )
        for_trained = (
            "the next training run can use residual connections between layers or fewer layers; "
            "for this one, see whether the ratio changes from checkpoint to checkpoint (analyze each)."
        )
        return [_situated("LD104", 0, message, cfg, at_init, for_trained)]
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
            _any(
                "LD301",
                None,
                msg,
                "if this happens on most steps, clipping acts as a learning-rate cap rather than a "
                "spike guard: `lstm-diag train --clip` shows how often it binds over training.",
                severity="warning" if severe else None,
            )
        )
    if mode in ("value", "agc") and math.isfinite(clip["cosine"]) and clip["cosine"] < 0.99:
        out.append(
            _any(
                "LD302",
                None,
                f"{mode} clipping turns the gradient by "
                f"{math.degrees(math.acos(min(clip['cosine'], 1))):.1f}° "
                f"(cosine {clip['cosine']:.4f}).",
                "global-norm clipping (clipping.mode=norm) rescales without changing direction.",
            )
        )
    if mode == "none" and "exploding" in verdicts:
        out.append(
            _any(
                "LD303",
                None,
                f"gradients explode (global norm {fmt(clip['total_norm'])}) and no clipping is configured.",
                "try clipping.mode=norm with max_norm=1 as a starting point; this single gradient is "
                "dominated by the explosion, so do not derive the threshold from it: `lstm-diag train "
                "--clip none,norm:1` measures the unclipped norm over many updates and suggests one "
                "(Pascanu et al. 2013: 0.5-10x the average unclipped norm).",
            )
        )
    return out


def numerics_findings(numerics: dict, cfg) -> list[Finding]:
    out = []
    nf = numerics.get("first_nonfinite_forward")
    if nf:
        message = (
            f"{nf['quantity']} became non-finite at layer {nf['layer']}, step t={nf['step']} "
            f"(max |c| before: {fmt(nf['max_abs_c_before'])})"
            + (
                "; the gates saturate to exactly 0 or 1 on ±inf, so everything after is unreliable."
                if nf["quantity"] == "z_t"
                else "."
            )
        )
        at_init = "the init scale or the inputs are too large: scale the weights down, normalise the inputs."
        for_trained = "check the weight file for blown-up (or non-finite) values, and normalise the inputs."
        out.append(_situated("LD401", nf["layer"], message, cfg, at_init, for_trained))
    nb = numerics.get("first_nonfinite_backward")
    if nb:
        out.append(
            _any(
                "LD402",
                nb["layer"],
                f"dL/dc_t became non-finite at layer {nb['layer']}, step t={nb['step']} "
                "(the first one met going back from the loss).",
                "exploding gradients overflowed: clip (clipping.mode=norm) and reduce the recurrent "
                "weights; in float32 try float64 to see the magnitudes.",
            )
        )
    if not numerics.get("loss_finite", True):
        out.append(
            _any(
                "LD403",
                None,
                "the loss is not finite.",
                "look for LD401 above; check targets and data for NaN/Inf.",
            )
        )
    return out
