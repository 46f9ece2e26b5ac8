"""`analyze`: config in, plain results out (no printing; renderers live in report/)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import clipping, engine, findings
from .config import Config, load_config
from .diagnostics import (
    Finding,
    flow_summary,
    frob_over_time,
    gate_grad_norms,
    gate_statistics,
    verdict,
)
from .model import Problem, build

SCHEMA_VERSION = 1
TANH_SATURATED = 0.99  # |tanh c| above this: 1 - tanh^2 c < 0.02


def frobenius_over_time(a: np.ndarray) -> np.ndarray:
    """(T, B, H) -> (T,): the Frobenius norm over (batch, hidden) at each step."""
    return frob_over_time(a)


@dataclass
class LayerResult:
    layer: int
    grad_c_norm: np.ndarray  # (T,) ||dL/dc_t||_F over (batch, hidden)
    grad_h_norm: np.ndarray  # (T,) ||dL/dh_t||_F
    extra: dict[str, Any] = field(default_factory=dict)  # diagnostics sections

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "grad_c_norm": self.grad_c_norm.tolist(),
            "grad_h_norm": self.grad_h_norm.tolist(),
            **self.extra,
        }


@dataclass
class ParamResult:
    shape: tuple[int, ...]
    norm: float
    grad_norm: float

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "norm": self.norm, "grad_norm": self.grad_norm}


@dataclass
class AnalysisResult:
    config: Config
    loss: float
    layers: list[LayerResult]
    parameters: dict[str, ParamResult]
    problem: Problem
    fwd: engine.Forward
    bwd: engine.Backward
    findings: list[Finding] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)  # top-level diagnostics

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.config.model_dump(mode="json"),
            "loss": self.loss,
            "layers": [layer.to_dict() for layer in self.layers],
            "parameters": {k: v.to_dict() for k, v in self.parameters.items()},
            **self.sections,
            "findings": [f.to_dict() for f in self.findings],
        }


def last_term_backward(problem: Problem, fwd: engine.Forward) -> engine.Backward:
    """BPTT of the last step's loss term alone (for target "all": where flow is measured)."""
    dy = np.zeros_like(fwd.dy_hat)
    dy[:, -1] = fwd.dy_hat[:, -1]
    return engine.backward(problem.params, problem.spec, dataclasses.replace(fwd, dy_hat=dy), problem.target)


def _preactivation_overflow(problem: Problem, k: int, cache: engine.LayerCache) -> int | None:
    """0-based first step whose pre-activation z_t (eq. 1) is not finite, or None.

    On ±inf the gates saturate to exactly 0 or 1, so c_t and h_t can stay finite while z_t
    overflowed. z is recomputed only when the bound |z| <= ||W_ih||_∞ max|x| + ||W_hh||_∞ + max|b|
    (|h| <= 1) says overflow is possible at all.
    """
    p = problem.params
    W_ih, W_hh = p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"]
    b = p[f"bias_ih_l{k}"] + p[f"bias_hh_l{k}"]
    bound = (
        np.abs(W_ih).sum(axis=1).max() * np.abs(cache.x).max()
        + np.abs(W_hh).sum(axis=1).max()
        + np.abs(b).max()
    )
    if np.isfinite(bound) and bound < np.finfo(W_ih.dtype).max:
        return None
    z = cache.x @ W_ih.T + b + cache.h[:-1] @ W_hh.T  # (T, B, 4H), only for this check
    ok = np.isfinite(z).all(axis=(1, 2))
    return None if ok.all() else int(np.argmin(ok))


def _first_nonfinite_forward(problem: Problem, fwd: engine.Forward) -> dict | None:
    """The first layer and step where z_t, c_t or h_t stopped being finite."""
    for k, cache in enumerate(fwd.layers):
        ok = np.isfinite(cache.c[1:]).all(axis=(1, 2)) & np.isfinite(cache.h[1:]).all(axis=(1, 2))
        t_state = None if ok.all() else int(np.argmin(ok))
        t_z = _preactivation_overflow(problem, k, cache)
        hits = [(t, q) for t, q in ((t_z, "z_t"), (t_state, "c_t/h_t")) if t is not None]
        if hits:
            t, quantity = min(hits)
            before = np.abs(cache.c[1 : t + 1])
            return {
                "layer": k,
                "step": t + 1,
                "quantity": quantity,
                "max_abs_c_before": float(before.max()) if t else 0.0,
            }
    return None


def _first_nonfinite_backward(bwd: engine.Backward) -> dict | None:
    for k in range(len(bwd.layers) - 1, -1, -1):
        ok = np.isfinite(bwd.layers[k].dc).all(axis=(1, 2))
        if not ok.all():
            return {"layer": k, "step": int(np.nonzero(~ok)[0].max()) + 1}
    return None


def _layer(k: int, problem: Problem, fwd, bwd, flow_bwd) -> LayerResult:
    d = problem.config.diagnostics
    cache, grads = fwd.layers[k], bwd.layers[k]
    gates, acc = gate_statistics(cache.gates, d.saturation_threshold, d.stuck_fraction)
    grad_c = frob_over_time(grads.dc)
    source = "loss" if flow_bwd is bwd else "last_step_loss_term"
    flow_c = grad_c if flow_bwd is bwd else frob_over_time(flow_bwd.layers[k].dc)
    flow = flow_summary(flow_c, acc.forget_log_mean(), d.vanishing_ratio, source)
    T = len(grad_c)
    with np.errstate(invalid="ignore"):
        tanh_sat = float(np.mean(np.abs(cache.tanh_c) > TANH_SATURATED))
        max_c = float(np.max(np.abs(cache.c[1:])))
    extra = {
        "grad_z_norm": gate_grad_norms(grads.dz),
        "gates": gates,
        "forget_histogram": acc.forget_histogram(),
        "cell_state": {"max_abs": max_c, "tanh_saturated": tanh_sat},
        "flow": flow.to_dict(),
        "verdict": verdict(flow, T, d.exploding_ratio),
    }
    if source != "loss":
        extra["flow_grad_c_norm"] = flow_c.tolist()
    return LayerResult(k, grad_c, frob_over_time(grads.dh), extra)


def analyze_problem(problem: Problem) -> AnalysisResult:
    """Engine, diagnostics and findings for one problem. Floating-point trouble (overflow,
    NaN) is measured and reported as LD4xx findings, so NumPy's warnings are silenced here."""
    with np.errstate(all="ignore"):
        return _analyze_problem(problem)


def _analyze_problem(problem: Problem) -> AnalysisResult:
    cfg = problem.config
    fwd, bwd = engine.run(problem.params, problem.spec, problem.x, problem.y, problem.loss, problem.target)
    flow_bwd = bwd if problem.target == "last" else last_term_backward(problem, fwd)
    layers = [_layer(k, problem, fwd, bwd, flow_bwd) for k in range(problem.spec.num_layers)]
    parameters = {
        name: ParamResult(
            shape=p.shape,
            norm=clipping.global_norm({name: p}),
            grad_norm=clipping.global_norm({name: bwd.params[name]}),
        )
        for name, p in problem.params.items()
    }
    c = cfg.clipping
    clip = clipping.snapshot(bwd.params, problem.params, c.mode, c.max_norm, c.clip_value, c.clipping)
    numerics = {
        "loss_finite": bool(np.isfinite(fwd.loss)),
        "first_nonfinite_forward": _first_nonfinite_forward(problem, fwd),
        "first_nonfinite_backward": _first_nonfinite_backward(bwd),
    }
    docs = [layer.to_dict() for layer in layers]
    T = problem.x.shape[1]
    found: list[Finding] = findings.numerics_findings(numerics)
    for doc in docs:
        found += findings.flow_findings(doc, T, cfg)
        found += findings.gate_findings(doc, cfg)
    found += findings.layer_balance_findings(docs)
    verdicts = [doc["verdict"] for doc in docs]
    found += findings.clipping_findings(clip, verdicts)
    return AnalysisResult(
        config=problem.config,
        loss=fwd.loss,
        layers=layers,
        parameters=parameters,
        problem=problem,
        fwd=fwd,
        bwd=bwd,
        findings=found,
        sections={
            "verdict": _overall(verdicts),
            "clipping": clip,
            "numerics": numerics,
        },
    )


def _overall(verdicts: list[str]) -> str:
    for v in ("exploding", "vanishing"):
        if v in verdicts:
            return v
    return "healthy"


def analyze(
    config: str | Path | Mapping | Config | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> AnalysisResult:
    """Run the forward pass and BPTT for a config, measure gradient flow and diagnose it.

    config: a YAML path, a parsed mapping, a `Config`, or None for the built-in default.
    Returns an `AnalysisResult`; `.to_dict()` is the JSON document of `analyze --format json`.
    """
    cfg = config if isinstance(config, Config) else load_config(config, overrides)[0]
    return analyze_problem(build(cfg))
