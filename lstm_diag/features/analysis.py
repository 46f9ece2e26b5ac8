"""`analyze`: config in, plain results out (no printing; renderers live in report/)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import backends, clipping, engine
from ..core.diagnostics import GATE_NAMES, flow_summary, gate_heatmap, heatmap_document, verdict
from ..core.engine import DIRECTIONS, time_order
from ..core.names import param_name
from ..setup.allocator import keep_freed_memory
from ..setup.config import Config, load_config
from ..setup.problem import Problem, build, dynamics_bytes, estimated_bytes, problems
from . import findings
from .findings import Finding
from .trace import LayerTrace, Trace, trace_checkpointed, trace_full

SCHEMA_VERSION = 5  # docs/json-schema.md, "Version history"


@dataclass
class LayerResult:
    """One unit: a layer, or one direction of a bidirectional layer. Per-step arrays are
    indexed by position t = 1..T in the sequence for both directions."""

    layer: int
    grad_c_norm: np.ndarray  # (T,) ||dL/dc_t||_F over (batch, hidden)
    grad_h_norm: np.ndarray  # (T,) ||dL/dh_t||_F (h_t the unit's output, projected if proj_size > 0)
    grad_z_norm: dict[str, list[float]]  # gate -> (T,) ||dL/dz_t|| of its pre-activation
    gates: dict[str, dict]  # gate -> statistics (docs/json-schema.md)
    forget_histogram: dict
    cell_state: dict  # max_abs, tanh_saturated
    flow: dict  # diagnostics.flow_summary, as a document
    verdict: str  # healthy | vanishing | exploding | no_flow
    direction: str = "forward"  # engine.DIRECTIONS
    flow_grad_c_norm: list[float] | None = None  # the series the flow was measured on, if not grad_c_norm
    dynamics: dict | None = None  # docs/dynamics.md; None when not computed
    gate_heatmap: dict | None = None  # binned gate activations (arrays); None with checkpointing

    @property
    def label(self) -> str:
        return unit_label(self.layer, self.direction)

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "direction": self.direction,
            "grad_c_norm": self.grad_c_norm.tolist(),
            "grad_h_norm": self.grad_h_norm.tolist(),
            "grad_z_norm": self.grad_z_norm,
            "gates": self.gates,
            "forget_histogram": self.forget_histogram,
            "cell_state": self.cell_state,
            "flow": self.flow,
            "verdict": self.verdict,
            **{
                key: value
                for key, value in (
                    ("flow_grad_c_norm", self.flow_grad_c_norm),
                    ("dynamics", self.dynamics),
                    ("gate_heatmap", self.gate_heatmap and heatmap_document(self.gate_heatmap)),
                )
                if value is not None
            },
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
    fwd: engine.Forward | None  # full caches; None when analysed with checkpointing
    bwd: engine.Backward | None
    grads: dict[str, np.ndarray]  # dL/dθ under PyTorch names
    verdict: str  # the network's: exploding if any unit explodes, else vanishing if any vanishes
    clipping: dict  # clipping.snapshot: what the configured clipping does to this gradient
    numerics: dict  # loss_finite, first_nonfinite_forward, first_nonfinite_backward
    memory: dict  # full or checkpointed BPTT, and why
    dynamics: dict  # the top-level note of the dynamics section (docs/dynamics.md)
    findings: list[Finding] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=lambda: {"config": None, "overrides": []})
    loss_kind: str = "computed"  # "computed" by the engine; "captured" from your model (upstream); "none"
    # data.batches > 1 (features/batches.py): this result is the first batch's, with its caches
    # dropped (fwd, bwd None); `batches` the spread over all, `batch_findings` those of a majority.
    batches: dict | None = None
    batch_findings: list[Finding] | None = None

    @property
    def gate_findings(self) -> list[Finding]:
        """What --fail-on judges: the findings, or over several batches those of a majority."""
        return self.findings if self.batch_findings is None else self.batch_findings

    def to_dict(self) -> dict:
        p = self.problem
        emb = p.params.get("embedding.weight")
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "analyze",
            "source": self.source,
            "config": self.config.model_dump(mode="json"),
            "model": {
                "what_if": p.what_ifs,
                "embedding": None if emb is None else list(emb.shape),
                "head": "head.weight" in p.params,
            },
            "data": None if p.data is None else {**p.data.info, "notes": p.notes},
            "loss": self.loss,
            "loss_kind": self.loss_kind,
            "layers": [layer.to_dict() for layer in self.layers],
            "parameters": {k: v.to_dict() for k, v in self.parameters.items()},
            "verdict": self.verdict,
            "clipping": self.clipping,
            "numerics": self.numerics,
            "memory": self.memory,
            "dynamics": self.dynamics,
            "findings": [f.to_dict() for f in self.findings],
            **({} if self.batches is None else {"batches": self.batches}),
        }


def unit_label(layer: int, direction: str = "forward") -> str:
    """ "layer 0", or "layer 0 reverse" / "layer 0 forward" in a bidirectional model's words."""
    return f"layer {layer}" if direction == "forward" else f"layer {layer} {direction}"


def _position(lt: LayerTrace, step: int) -> int:
    """A unit's 0-based processing step as the 1-based position t in the sequence."""
    return lt.T - step if lt.direction else step + 1


def _where(lt: LayerTrace) -> dict:
    return {"layer": lt.layer, "direction": DIRECTIONS[lt.direction]}


def _first_nonfinite_forward(trace: Trace) -> dict | None:
    """The first layer (and direction) and step where z_t, c_t or h_t stopped being finite."""
    for lt in trace.layers:
        hits = [(t, q) for t, q in ((lt.first_nonfinite_z, "z_t"), (lt.first_nonfinite_state, "c_t/h_t"))]
        hits = [(t, q) for t, q in hits if t is not None]
        if hits:
            t, quantity = min(hits)
            return {
                **_where(lt),
                "step": _position(lt, t),
                "quantity": quantity,
                "max_abs_c_before": lt.max_abs_c_before,
            }
    return None


def _first_nonfinite_backward(trace: Trace) -> dict | None:
    """Top layer first; the first non-finite ||dL/dc_t|| met going back from the loss
    (backwards in the unit's own time: towards t = T for a reverse unit)."""
    for lt in reversed(trace.layers):
        bad = ~np.isfinite(lt.grad_c_norm)  # processing order
        if bad.any():
            return {**_where(lt), "step": _position(lt, int(np.nonzero(bad)[0].max()))}
    return None


def _no_flow(lt: LayerTrace, num_layers: int, target: str) -> str | None:
    """Why a reverse unit has no flow through time to measure, or None."""
    if not lt.direction:
        return None
    if lt.layer == num_layers - 1 and target == "last":
        return (
            "the head reads the output at t = T, where the reverse direction has taken one step (it has "
            "seen only x_T): no gradient reaches its other steps, so there is no flow through time to measure"
        )
    if not np.any(lt.flow_grad_c_norm):
        return "no gradient enters this direction at t = 1, so there is no flow through time to measure"
    return None


def _layer(lt: LayerTrace, cfg: Config) -> LayerResult:
    """One unit's results. Per-step arrays in position order; the flow summary is measured in the
    unit's own time, back from where its gradient enters (for a reverse unit: forward in t)."""
    d = cfg.diagnostics
    gates = lt.gates.result(d.stuck_fraction)
    source = (
        "loss"
        if lt.flow_grad_c_norm is None
        else ("last_step_loss_term", "entry_at_first_step")[lt.direction]
    )
    flow_c = lt.grad_c_norm if lt.flow_grad_c_norm is None else lt.flow_grad_c_norm  # processing order
    flow = flow_summary(
        flow_c, lt.gates.forget_log_mean(), d.vanishing_ratio, source, lt.gates.forget_unit_log_mean()
    )
    if lt.direction and flow.first_nonfinite_step is not None:
        flow.first_nonfinite_step = _position(lt, flow.first_nonfinite_step - 1)
    flow_doc = flow.to_dict()
    no_flow = _no_flow(lt, cfg.model.num_layers, cfg.loss.target)
    if no_flow:
        flow_doc["note"] = no_flow
    if lt.direction:
        for g in gates.values():
            g["saturation_over_time"] = g["saturation_over_time"][::-1]
    grad_c, grad_h = time_order(lt.grad_c_norm, lt.direction), time_order(lt.grad_h_norm, lt.direction)
    grad_z = time_order(lt.grad_z_norm, lt.direction).T.tolist()  # (4, T) by t, gates i, f, g, o
    return LayerResult(
        layer=lt.layer,
        grad_c_norm=grad_c,
        grad_h_norm=grad_h,
        grad_z_norm=dict(zip(GATE_NAMES, grad_z, strict=True)),
        gates=gates,
        forget_histogram=lt.gates.forget_histogram(),
        cell_state={"max_abs": lt.max_abs_c, "tanh_saturated": lt.tanh_saturated / max(lt.entries, 1)},
        flow=flow_doc,
        verdict="no_flow" if no_flow else verdict(flow, lt.T, d.exploding_ratio),
        direction=DIRECTIONS[lt.direction],
        flow_grad_c_norm=None if source == "loss" else time_order(flow_c, lt.direction).tolist(),
    )


def dynamics_section(problem: Problem, fwd, grads) -> tuple[dict, list[dict]]:
    """`layers[k].dynamics` of every layer and the top-level note (docs/dynamics.md).

    fwd: the engine's forward pass (full caches), None with checkpointed BPTT; grads:
    the backward pass whose dL/dc_t the exponents are compared with (the one the
    flow verdict measures). Returns (note, one dict per layer; empty when skipped).
    """
    d = problem.config.diagnostics
    if not d.dynamics:
        return {"computed": False, "reason": "diagnostics.dynamics is off (--no-dynamics)"}, []
    if fwd is None:
        return {"computed": False, "reason": "needs the full caches; skipped with checkpointed BPTT"}, []
    spec = problem.spec
    if spec.proj_size > 0:
        reason = (
            "not computed for a projected LSTM (model.proj_size > 0): the state Jacobian of "
            "docs/dynamics.md assumes h_t = o_t ⊙ tanh c_t"
        )
        return {"computed": False, "reason": reason}, []
    B, T = problem.x.shape[:2]
    need = dynamics_bytes(problem.config, T, B)
    if need > d.memory_budget_mb * 2**20:
        reason = (
            f"would need ~{need / 2**20:.0f} MB, over diagnostics.memory_budget_mb = {d.memory_budget_mb:g}"
        )
        return {"computed": False, "reason": reason}, []
    from ..core.dynamics import layer_dynamics

    H = spec.hidden_size
    S = slice(0, min(d.dynamics_samples, B))  # the first samples of the batch: cost ∝ samples
    out = []
    for j, (k, direction) in enumerate(spec.units()):
        if direction:
            out.append(None)  # reverse directions: not computed yet (said in the note)
            continue
        c = fwd.layers[j]
        cache = engine.LayerCache(
            x=c.x[:, S], gates=c.gates[:, S], c=c.c[:, S], h=c.h[:, S], tanh_c=c.tanh_c[:, S]
        )
        out.append(
            layer_dynamics(
                cache,
                problem.params[param_name("weight_hh", k)],
                k=min(d.lyapunov_k, 2 * H),
                window=min(d.window, T),
                window_k=min(d.window_k, 2 * H),
                window_samples=1,
                norm_samples=1,
                norm_points=d.norm_points,
                seed=problem.config.seed,
                grad_c=grads.layers[j].dc[:, S],
                lyapunov_steps=d.lyapunov_steps,
                dtype=np.float32 if d.dynamics_dtype == "float32" else None,
            )
        )
    note = {"computed": True, "samples": S.stop}
    if spec.bidirectional:
        note["directions"] = ["forward"]
        note["reason"] = (
            "computed for the forward direction of each layer only; reverse directions are not analysed yet"
        )
    return note, out


def memory_plan(cfg: Config, T: int, B: int) -> dict:
    """full or checkpoint, and why (diagnostics.memory, .memory_budget_mb)."""
    d = cfg.diagnostics
    full = estimated_bytes(cfg, T, B)
    budget = d.memory_budget_mb * 2**20
    if d.memory == "auto":
        mode = "checkpoint" if full > budget else "full"
        reason = (
            f"auto: the full cache would need ~{full / 2**20:.0f} MB, over the "
            f"{d.memory_budget_mb:g} MB budget (diagnostics.memory_budget_mb)"
            if mode == "checkpoint"
            else f"auto: the full cache needs ~{full / 2**20:.0f} MB, "
            f"within the {d.memory_budget_mb:g} MB budget"
        )
    else:
        mode, reason = d.memory, f"diagnostics.memory = {d.memory}"
    return {"mode": mode, "reason": reason, "estimated_full_mb": full / 2**20}


def analyze_problem(problem: Problem) -> AnalysisResult:
    """Engine, diagnostics and findings for one problem. Floating-point trouble (overflow,
    NaN) is measured and reported as LD4xx findings, so NumPy's warnings are silenced here."""
    with np.errstate(all="ignore"):
        return _analyze_problem(problem)


def _analyze_problem(problem: Problem) -> AnalysisResult:
    cfg = problem.config
    keep_freed_memory()
    backends.select(cfg.engine, cfg.dtype, problem.spec)
    eps = cfg.diagnostics.saturation_threshold
    B, T = problem.x.shape[:2]
    plan = memory_plan(cfg, T, B)
    fwd = bwd = flow_bwd = None
    if plan["mode"] == "full":
        fwd, bwd = engine.run(*problem.engine_args())
        flow_bwd = (
            engine.last_term_backward(problem.params, problem.spec, fwd) if problem.target == "all" else None
        )
        trace = trace_full(problem.params, problem.spec, fwd, bwd, eps, flow_bwd)
    else:
        p = problem
        trace = trace_checkpointed(p.params, p.spec, p.x, p.y, p.loss, p.target, eps, h0=p.h0, c0=p.c0)
    plan.update(trace.memory)
    layers = [_layer(lt, cfg) for lt in trace.layers]
    dyn_note, dyn = dynamics_section(problem, fwd, bwd if flow_bwd is None else flow_bwd)
    for layer, layer_dyn in zip(layers, dyn, strict=False):
        if layer_dyn is not None:
            layer.dynamics = layer_dyn
    grads = trace.grads
    c = cfg.clipping
    clip = clipping.snapshot(grads, problem.params, c.mode, c.max_norm, c.clip_value, c.clipping)
    parameters = {
        name: ParamResult(
            shape=p.shape,
            norm=clipping.global_norm({name: p}),
            grad_norm=clip["parameters"][name]["norm_before"],  # global_norm({name: grads[name]})
        )
        for name, p in problem.params.items()
    }
    numerics = {
        "loss_finite": bool(np.isfinite(trace.loss)),
        "first_nonfinite_forward": _first_nonfinite_forward(trace),
        "first_nonfinite_backward": _first_nonfinite_backward(trace),
    }
    docs = [layer.to_dict() for layer in layers]
    if fwd is not None:  # the heatmaps need every step's gates: not kept with checkpointing
        for layer, lt in zip(layers, trace.layers, strict=True):
            mean = time_order(lt.gates.step_mean, lt.direction)  # (T, 4H) by t
            layer.gate_heatmap = gate_heatmap(None, step_mean=mean, batch=B)
    found: list[Finding] = findings.numerics_findings(numerics, cfg)
    for doc in docs:
        unit = findings.flow_findings(doc, T, cfg) + findings.gate_findings(doc, cfg)
        if problem.spec.bidirectional:
            for f in unit:
                f.direction = doc["direction"]
        found += unit
    # Bottom against top layer, forward directions (a top reverse direction under target
    # "last" is read at one step only, and is no measure of what reaches the top).
    found += findings.layer_balance_findings([doc for doc in docs if doc["direction"] == "forward"], cfg)
    verdicts = [doc["verdict"] for doc in docs]
    found += findings.clipping_findings(clip, verdicts)
    loss, loss_kind = _reported_loss(problem, trace.loss)
    return AnalysisResult(
        config=problem.config,
        loss=loss,
        loss_kind=loss_kind,
        layers=layers,
        parameters=parameters,
        problem=problem,
        fwd=fwd,
        bwd=bwd,
        grads=grads,
        verdict=_overall(verdicts),
        clipping=clip,
        numerics=numerics,
        memory=plan,
        dynamics=dyn_note,
        findings=found,
    )


def _reported_loss(problem: Problem, value: float) -> tuple[float | None, str]:
    """The loss to report and what it is. The upstream mode computes no loss (the engine's
    <dh, h> is a linear functional with the right gradient, not a loss): it reports the loss
    captured from your model (data.expected_loss, else `expected_loss` in the file), if any."""
    if problem.loss != "upstream":
        return value, "computed"
    captured = problem.config.data.expected_loss
    if captured is None and problem.data is not None:
        captured = problem.data.expected_loss
    return (captured, "captured") if captured is not None else (None, "none")


def _overall(verdicts: list[str]) -> str:
    for v in ("exploding", "vanishing"):
        if v in verdicts:
            return v
    return "healthy"


def run_source(config: str | Path | Mapping | Config | None, overrides=()) -> dict:
    """The document's `source`: the config file as given (None: the built-in default) and the
    --set overrides, which the figure titles name."""
    if config is not None and not isinstance(config, (str, Path)):
        config = "(in-memory config)"
    return {"config": None if config is None else str(config), "overrides": list(overrides)}


def analyze(
    config: str | Path | Mapping | Config | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    source: dict | None = None,
    on_batch=None,
) -> AnalysisResult:
    """Run the forward pass and BPTT for a config, measure gradient flow and diagnose it.

    config: a YAML path, a parsed mapping, a `Config`, or None for the built-in default.
    source: the document's `source` (`run_source`) when `config` is already loaded; by
    default made from `config` and `overrides`. Returns an `AnalysisResult`; `.to_dict()`
    is the JSON document of `analyze --format json`. With data.batches > 1, the first
    batch's result with the spread over all batches (features/batches.py; on_batch(k, result)
    is called after batch k of them).
    """
    cfg = config if isinstance(config, Config) else load_config(config, overrides)[0]
    if cfg.data.batches > 1:
        from .batches import over_batches

        result = over_batches(problems(cfg), analyze_problem, on_batch)
    else:
        result = analyze_problem(build(cfg))
    result.source = run_source(config, overrides) if source is None else source
    return result
