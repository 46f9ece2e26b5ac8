"""Train a small LSTM under several gradient-clipping settings and record what clipping does.

Every clip setting (`none`, `norm:1.0`, `value:0.1`, `agc:0.01`, ...) trains from the same
initial weights on the same batches: the initial weights come from the config's init
stream, the batches from its data stream (`problem.rngs(seed)`), re-seeded for every setting.
With a synthetic task each step draws a new batch from the task generator; with
`data.task: file` the runs go through the file in epochs of minibatches of
`data.batch_size`, shuffled by the data stream. The runs advance in lock-step (step k of
every setting, then step k + 1), so an interruption leaves them equally far.

At every step each run records the loss, the pre-clip global norm ||g||, the post-clip
norm, the clip coefficient (norm mode: torch's min(1, max_norm / (||g|| + 1e-6)); other
modes: post / pre), whether clipping changed the gradient, and cos(clipped, raw). Every
`log_every` steps (and at the first and last) it also records, per layer, the gradient
horizon and decay rate of ||dL/dc_t|| (diagnostics.flow_summary, as analyze computes
them), the forget-gate mean and the fraction of saturated gate activations.

A non-finite forward pass, loss or gradient stops that run before the update and records
the step and the cause with its finding code (LD401, LD403, LD402); the others go on.

Pure: no printing, no files. Progress goes to a callback; a KeyboardInterrupt (raised by
the callback or arriving during a step) or `should_stop()` returning True ends training
cleanly with what was measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import backends, clipping, engine
from ..core.clipping import ClipSetting
from ..core.diagnostics import flow_summary, frob_over_time, gate_statistics
from ..core.optim import make_optimizer
from ..setup.allocator import keep_freed_memory
from .findings import Finding, finding

if TYPE_CHECKING:
    from ..setup.config import Config

SCHEMA_VERSION = 2  # of the train JSON document (docs/train.md, "Version history")

# Verdict rules (docs/train.md): share of steps on which clipping changed the gradient.
BINDS_MOSTLY = 0.9  # at or above: clipping acts on (almost) every step
BINDS_RARELY = 0.1  # below (and above 0): clipping tames rare spikes
BENDS_COSINE = 0.99  # median cos(clipped, raw) below this on clipped steps: direction bent (LD302)
SPIKY_RATIO = 10.0  # max / median pre-clip norm above this: the unclipped run has spikes
FINAL_SHARE = 0.1  # "final loss (mean)" averages the last 10% of steps
GREW_FACTOR = 2.0  # that mean above this x the first loss: the run is unstable

# The suggested max_norm (docs/train.md): Pascanu et al. 2013 recommend a threshold of
# "half to ten times" the average gradient norm over many updates.
PASCANU_RANGE = (0.5, 10.0)
SUGGEST_FACTOR = 2.0  # our choice inside that range: 2 x the median unclipped norm


# ----------------------------------------------------------------------------- batches


def batch_stream(config: Config, data: tuple | None = None) -> Iterator:
    """Batches (x, y, h0, c0), one per step, from the config's data stream (a fresh, seeded copy).

    Synthetic tasks: a new batch from the task generator each step (the first is the batch
    `analyze` sees for the same config), zero initial states. File data: epochs over
    `data` = (x, y, h0, c0) (x may be token ids, h0/c0 None) in minibatches of
    data.batch_size (16 when not given), each epoch in a new order from the data stream.
    """
    from ..setup.config import DEFAULT_BATCH_SIZE
    from ..setup.problem import make_data, rngs

    rng = rngs(config.seed)[1]
    if data is None:
        while True:
            yield (*make_data(config, rng), None, None)
    x, y, h0, c0 = data
    n, bs = x.shape[0], min(config.data.batch_size or DEFAULT_BATCH_SIZE, x.shape[0])
    while True:
        order = rng.permutation(n)
        for lo in range(0, n, bs):
            idx = order[lo : lo + bs]
            states = (None, None) if h0 is None else (h0[:, idx], c0[:, idx])
            yield (x[idx], y[idx], *states)


# --------------------------------------------------------------------------------- runs


@dataclass
class StepEvent:
    """What the callback sees after each step of all runs."""

    step: int  # 1-based, the step just finished
    total: int  # steps requested
    losses: dict[str, float]  # label -> this step's loss (runs still going)
    records: list[dict]  # metrics records logged at this step (one per run, or none)
    diverged: list[dict]  # runs that stopped at this step: {"setting", "step", "code", "cause"}


@dataclass
class Run:
    """One clip setting's training: its weights, optimizer and history."""

    setting: ClipSetting
    params: dict[str, np.ndarray]
    optimizer: Any
    batches: Iterator
    loss: list[float] = field(default_factory=list)  # per completed step
    grad_norm: list[float] = field(default_factory=list)  # pre-clip ||g||
    clipped_norm: list[float] = field(default_factory=list)  # post-clip
    clip_coef: list[float] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)
    cosine: list[float] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # the logged steps
    snapshots: list[dict] = field(default_factory=list)  # --snapshot-every: trajectory points
    diverged: dict | None = None
    wall_time: float = 0.0

    @property
    def steps_done(self) -> int:
        return len(self.loss)

    @property
    def live(self) -> bool:
        return self.diverged is None


def _forward_cause(fwd: engine.Forward) -> tuple[str, str] | None:
    """(code, cause) if the forward pass or the loss is not finite."""
    for k, cache in enumerate(fwd.layers):
        if not (np.isfinite(cache.c).all() and np.isfinite(cache.h).all()):
            return "LD401", f"non-finite c_t or h_t in layer {k} (forward overflow)"
    if not math.isfinite(fwd.loss):
        return "LD403", f"non-finite loss ({fwd.loss})"
    return None


def _gradient_cause(grads: dict[str, np.ndarray]) -> tuple[str, str]:
    """(code, cause) for a gradient whose global norm is not finite."""
    bad = [k for k, g in grads.items() if not np.isfinite(g).all()]
    if bad:
        more = " ..." if len(bad) > 3 else ""
        return "LD402", f"non-finite gradient in {', '.join(bad[:3])}{more}"
    return "LD402", "the global gradient norm overflows float64"


def _flow_metrics(config: Config, spec: engine.Spec, params, fwd, bwd) -> dict[str, float]:
    """Per layer k: horizon_lk, decay_rate_lk (of ||dL/dc_t||), forget_mean_lk, saturation_lk;
    for the reverse direction of a bidirectional layer the same with `_lk_reverse`.

    As analyze: with target 'all' the flow is measured on the last step's loss term alone; a
    reverse direction's on the gradient entering it at t = 1 alone.
    """
    d = config.diagnostics
    flow_bwd = bwd
    if config.loss.target == "all":
        flow_bwd = engine.last_term_backward(params, spec, fwd)
    source = "loss" if flow_bwd is bwd else "last_step_loss_term"
    out: dict[str, float] = {}
    for j, (layer, direction) in enumerate(spec.units()):
        cache = fwd.layers[j]
        gates, acc = gate_statistics(cache.gates, d.saturation_threshold, d.stuck_fraction)
        dc = flow_bwd.layers[j].dc
        if direction:  # dh at its last step is what enters it there (t = 1)
            dc = engine.entry_backward(engine.unit_params(params, layer, 1), cache, bwd.layers[j].dh[-1]).dc
        flow = flow_summary(frob_over_time(dc), acc.forget_log_mean(), d.vanishing_ratio, source)
        k = f"{layer}_reverse" if direction else layer
        out[f"horizon_l{k}"] = flow.horizon
        out[f"decay_rate_l{k}"] = flow.decay_rate
        out[f"forget_mean_l{k}"] = gates["forget"]["mean"]
        sat = [gates[g]["saturated_low"] + gates[g]["saturated_high"] for g in gates]
        out[f"saturation_l{k}"] = float(np.mean(sat))  # over the four gates' activations
    return out


def _step(run: Run, config: Config, spec: engine.Spec, step: int, log: bool, t0: float) -> dict | None:
    """One training step of one run. Returns the metrics record if this step is logged."""
    start = time.perf_counter()
    x, y, h0, c0 = next(run.batches)
    fwd = engine.forward(run.params, spec, x, y, config.loss.type, config.loss.target, h0, c0)
    cause = _forward_cause(fwd)
    if cause is None:
        bwd = engine.backward(run.params, spec, fwd, config.loss.target)
        raw = bwd.params
        pre = clipping.global_norm(raw)
        if not math.isfinite(pre):
            cause = _gradient_cause(raw)
    if cause is not None:
        code, text = cause
        run.diverged = {"setting": run.setting.label, "step": step, "code": code, "cause": text}
        run.wall_time += time.perf_counter() - start
        return {
            "step": step,
            "setting": run.setting.label,
            "status": "diverged",
            "code": code,
            "loss": fwd.loss,
            "time": time.perf_counter() - t0,
        }
    if run.setting.mode == "none":
        g, post, coef, hit, cos = raw, pre, 1.0, False, 1.0
    else:
        g, info = run.setting.clip(raw, run.params)
        post = clipping.global_norm(g)
        coef = info["clip_coef"] if run.setting.mode == "norm" else post / pre if pre > 0 else 1.0
        hit = info["changed_fraction"] > 0
        cos = clipping.cosine(g, raw) if hit else 1.0
    record = None
    run.loss.append(fwd.loss)
    run.grad_norm.append(pre)
    run.clipped_norm.append(post)
    run.clip_coef.append(coef)
    run.clipped.append(bool(hit))
    run.cosine.append(cos)
    if log:
        record = {
            "step": step,
            "setting": run.setting.label,
            "status": "ok",
            "code": None,
            "loss": fwd.loss,
            "grad_norm": pre,
            "clipped_norm": post,
            "clip_coef": coef,
            "clipped": bool(hit),
            "clipped_fraction": sum(run.clipped) / len(run.clipped),
            "cosine": cos,
            **_flow_metrics(config, spec, run.params, fwd, bwd),
            "time": time.perf_counter() - t0,
        }
        run.records.append(record)
    run.optimizer.step(run.params, g)  # in place
    run.wall_time += time.perf_counter() - start
    return record


def _snapshots(runs: list[Run], snap, step: int, every: int | None, last: bool = False) -> list[dict]:
    """--snapshot-every: after step 0 (the initial weights), every `every`-th step and the last,
    each live run's trajectory point (features/trajectory.py) on the analysis batch; returns
    their metrics records."""
    if snap is None or not (step % every == 0 or last):
        return []
    from .trajectory import snapshot_record

    out = []
    for run in runs:
        if run.live:
            run.snapshots.append({"step": step, "step_source": "train", **snap(run.params)})
            out.append(snapshot_record(run.setting.label, run.snapshots[-1]))
    return out


# ------------------------------------------------------------------------------ results


@dataclass
class TrainResult:
    config: Config
    settings: list[ClipSetting]
    runs: list[Run]
    steps: int  # requested
    steps_run: int  # lock-step steps started (the last may be partial if interrupted)
    interrupted: bool
    summaries: list[dict] = field(default_factory=list)
    suggestion: dict | None = None
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self, history: bool = True) -> dict:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "command": "train",
            "config": self.config.model_dump(mode="json"),
            "model": {"what_if": self.config.model.what_ifs()},
            "steps": self.steps,
            "steps_run": self.steps_run,
            "interrupted": self.interrupted,
            "settings": [s.label for s in self.settings],
            "summary": self.summaries,
            "suggested_max_norm": self.suggestion,
            "findings": [f.to_dict() for f in self.findings],
        }
        if history:
            if self.config.train.snapshot_every:
                doc["snapshots"] = [{"setting": r.setting.label, "points": r.snapshots} for r in self.runs]
            doc["runs"] = [
                {
                    "setting": r.setting.label,
                    "history": {
                        "loss": r.loss,
                        "grad_norm": r.grad_norm,
                        "clipped_norm": r.clipped_norm,
                        "clip_coef": r.clip_coef,
                        "clipped": r.clipped,
                        "cosine": r.cosine,
                    },
                    "logged": r.records,
                }
                for r in self.runs
            ]
        return doc


def _initial(config: Config) -> tuple[dict, tuple | None]:
    """The initial parameters, and a data file's whole (x, y, h0, c0) (None for a task)."""
    from ..errors import ConfigError
    from ..setup.problem import build, check_train_memory, make_params, rngs

    if config.loss.type == "upstream":
        raise ConfigError(
            "loss.type: upstream has no loss to train on (dh is one gradient of your model); "
            "train needs mse or cross_entropy with a head"
        )
    d = config.data
    if d.batches > 1 or d.batch_index > 0:
        field = "data.batches" if d.batches > 1 else "data.batch_index"
        raise ConfigError(
            f"{field}: picks the batches analyze reads; train draws its own batches from the data "
            "stream (a task's from its first batch, a file's minibatches over all its sequences)"
        )
    check_train_memory(config)  # a data file's sizes from its header, before it is read
    if config.data.task != "file":
        return make_params(config, rngs(config.seed)[0]), None
    # every sequence of the file (data.batch_size: the minibatch)
    problem = build(config.patched({"data.batch_size": None}), budget=False)
    # with the embedding when the file holds token ids: trained too
    return problem.params, (problem.x, problem.y, problem.h0, problem.c0)


def train(
    config: Config,
    callback: Callable[[StepEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> TrainResult:
    """Train one run per clip setting of `config.train.clip`; see the module docstring."""
    from ..setup.problem import spec_of

    tc = config.train
    settings = config.clip_settings
    spec = spec_of(config)
    initial, data = _initial(config)
    keep_freed_memory()
    backends.select(config.engine, config.dtype, spec)
    runs = [
        Run(
            setting=s,
            params={k: v.copy() for k, v in initial.items()},
            optimizer=make_optimizer(tc.optimizer, tc.lr, tc.momentum, tc.betas, tc.eps, tc.weight_decay),
            batches=batch_stream(config, data),
        )
        for s in settings
    ]
    snap = None
    if tc.snapshot_every:
        from .track import snapshotter

        snap = snapshotter(config)  # checks the analysis batch before anything is written
    if on_ready is not None:
        on_ready()
    t0 = time.perf_counter()
    step, interrupted = 0, False
    pending: list[dict] = _snapshots(runs, snap, 0, tc.snapshot_every)
    try:
        for step in range(1, tc.steps + 1):
            log = step == 1 or step % tc.log_every == 0 or step == tc.steps
            for run in runs:
                if run.live:
                    rec = _step(run, config, spec, step, log, t0)
                    if rec is not None:
                        pending.append(rec)
            pending += _snapshots(runs, snap, step, tc.snapshot_every, last=step == tc.steps)
            event = StepEvent(
                step=step,
                total=tc.steps,
                losses={r.setting.label: r.loss[-1] for r in runs if r.live and r.loss},
                records=pending,
                diverged=[r.diverged for r in runs if r.diverged and r.diverged["step"] == step],
            )
            pending = []
            if callback is not None:
                callback(event)
            if not any(r.live for r in runs) or (should_stop is not None and should_stop()):
                interrupted = step < tc.steps and any(r.live for r in runs)
                break
    except KeyboardInterrupt:
        interrupted = True
        if pending and callback is not None:  # records of a step cut short: deliver them once
            try:
                callback(StepEvent(step, tc.steps, {}, pending, []))
            except KeyboardInterrupt:
                pass
    result = TrainResult(
        config=config,
        settings=settings,
        runs=runs,
        steps=tc.steps,
        steps_run=step,
        interrupted=interrupted,
    )
    summarize(result)
    return result


# ------------------------------------------------------------------------------ summary


def _finite(a: list[float]) -> np.ndarray:
    v = np.asarray(a, np.float64)
    return v[np.isfinite(v)]


def run_summary(run: Run) -> dict:
    """The numbers of one run's summary line (verdicts are added by `summarize`)."""
    n = run.steps_done
    loss, norms = _finite(run.loss), _finite(run.grad_norm)
    tail = max(1, math.ceil(FINAL_SHARE * n)) if n else 0
    clipped = np.asarray(run.clipped, bool)
    cos = np.asarray(run.cosine, np.float64)[clipped] if n else np.array([])
    coef = np.asarray(run.clip_coef, np.float64)[clipped] if n else np.array([])
    nan = float("nan")
    return {
        "setting": run.setting.label,
        "mode": run.setting.mode,
        "threshold": run.setting.threshold,
        "steps_done": n,
        "initial_loss": run.loss[0] if n else nan,
        "final_loss": run.loss[-1] if n else nan,
        "final_loss_mean": float(np.mean(run.loss[-tail:])) if n else nan,
        "best_loss": float(loss.min()) if loss.size else nan,
        "best_step": int(np.nanargmin(run.loss)) + 1 if loss.size else None,
        "clipped_steps": int(clipped.sum()),
        "clipped_percent": 100.0 * float(clipped.mean()) if n else 0.0,
        "grad_norm_median": float(np.median(norms)) if norms.size else nan,
        "grad_norm_mean": float(np.mean(norms)) if norms.size else nan,
        "grad_norm_max": float(norms.max()) if norms.size else nan,
        "clip_coef_median": float(np.median(coef)) if coef.size else None,
        "cosine_median": float(np.median(cos)) if cos.size else None,
        "cosine_min": float(cos.min()) if cos.size else None,
        "diverged": run.diverged,
        "wall_time": run.wall_time,
    }


def suggest_max_norm(run: Run) -> dict | None:
    """Pascanu et al. (2013): a threshold of 0.5-10x the average norm; we suggest 2x the median.

    From the finite pre-clip norms of the unclipped run. The point suggestion (2 x the
    median, robust to the spikes clipping should catch, clamped into Pascanu's range and
    rounded to two significant digits) is lstm-diag's choice, stated as such. If that run diverged or
    its loss grew, its norms measure the instability, not training: a caveat says so.
    """
    v = _finite(run.grad_norm)
    if v.size == 0:
        return None
    mean, median = float(v.mean()), float(np.median(v))
    lo, hi = PASCANU_RANGE[0] * mean, PASCANU_RANGE[1] * mean
    value = float(f"{min(max(SUGGEST_FACTOR * median, lo), hi):.2g}")
    caveat = None
    s = run_summary(run)
    if run.diverged:
        caveat = f"the unclipped run diverged at step {run.diverged['step']}"
    elif s["final_loss_mean"] > GREW_FACTOR * s["initial_loss"]:
        caveat = f"the unclipped run's loss grew from {_g(s['initial_loss'])} to {_g(s['final_loss_mean'])}"
    if caveat:
        caveat += ": its norms measure the instability, not training; rerun with a lower lr for a suggestion"
    return {
        "max_norm": None if caveat else value,
        "from_setting": run.setting.label,
        "steps": int(v.size),
        "mean_norm": mean,
        "median_norm": median,
        "pascanu_range": [lo, hi],
        "would_clip_percent": None if caveat else 100.0 * float(np.mean(v > value)),
        "rule": (
            "Pascanu et al. 2013 suggest a threshold of 0.5-10x the average gradient norm over many "
            f"updates; lstm-diag's rule (its own choice in that range): {SUGGEST_FACTOR:g}x the median "
            f"unclipped norm, so that clipping binds only where the norm is {SUGGEST_FACTOR:g}x its "
            "typical size (moved into Pascanu's range if outside; 2 significant digits)"
        ),
        "caveat": caveat,
    }


def _g(v: float | None) -> str:
    from ..numfmt import fmt

    return fmt(v)


def verdict(s: dict, reference: dict | None, optimizer: str) -> tuple[str, str]:
    """(kind, sentence) on what clipping did in one run; `reference` is the unclipped run."""
    mode, p = s["mode"], s["clipped_percent"] / 100.0
    div = s["diverged"]
    if mode == "none":
        if div:
            return "diverged", f"no clipping: diverged at step {div['step']} ({div['code']}: {div['cause']})"
        med, mx = s["grad_norm_median"], s["grad_norm_max"]
        spiky = med > 0 and mx / med > SPIKY_RATIO
        shape = f"spiky: max {_g(mx)} = {_g(mx / med)}x the median" if spiky else f"max {_g(mx)}"
        text = f"no clipping: median norm {_g(med)}, {shape}"
        if s["final_loss_mean"] > GREW_FACTOR * s["initial_loss"]:
            text += f"; loss grew from {_g(s['initial_loss'])} to {_g(s['final_loss_mean'])}: unstable"
            return "unstable", text
        return ("spiky" if spiky else "steady"), text
    thr = s["threshold"]
    parts = []
    if div:
        kind = "diverged"
        parts.append(f"diverged at step {div['step']} ({div['code']}: {div['cause']}) despite clipping")
    elif p == 0:
        kind = "idle"
        if mode == "norm":
            parts.append(f"never binds: max norm {_g(s['grad_norm_max'])} < threshold {_g(thr)}; no effect")
        elif mode == "value":
            parts.append(f"never binds: no gradient entry beyond ±{_g(thr)}; no effect")
        else:
            parts.append(f"never binds: no unit's gradient reached {_g(thr)} x its weight norm; no effect")
    elif p >= BINDS_MOSTLY:
        kind = "cap"
        pct = f"binds on {100 * p:.0f}% of steps"
        if mode == "norm":
            text = (
                f"{pct}: acts as a learning-rate cap; threshold {_g(thr)} vs median norm "
                f"{_g(s['grad_norm_median'])}"
            )
            if optimizer == "adam":
                text += " (Adam divides by sqrt(v): a uniform rescale largely cancels)"
            else:
                text += f" (step scaled by a median {_g(s['clip_coef_median'])})"
            parts.append(text)
        else:
            parts.append(f"{pct}: reshapes every update")
    elif p >= BINDS_RARELY:
        kind = "frequent"
        parts.append(
            f"binds on {100 * p:.0f}% of steps: shapes many updates; threshold {_g(thr)} "
            f"vs median norm {_g(s['grad_norm_median'])}"
            if mode == "norm"
            else f"binds on {100 * p:.0f}% of steps: shapes many updates"
        )
    else:
        kind = "spikes"
        pct = f"{100 * p:.1f}" if p < 0.01 else f"{100 * p:.0f}"
        parts.append(
            f"clips {pct}% of steps: tames rare spikes (max norm {_g(s['grad_norm_max'])} "
            f"vs threshold {_g(thr)})"
            if mode == "norm"
            else f"clips {pct}% of steps: tames rare spikes"
        )
    if mode in ("value", "agc") and s["cosine_median"] is not None:
        c = s["cosine_median"]
        bent = "bends the direction" if c < BENDS_COSINE else "keeps the direction"
        parts.append(f"{bent} (median cosine {c:.3f} on clipped steps)")
    if not div and s["final_loss_mean"] > GREW_FACTOR * s["initial_loss"]:
        parts.append(f"but the loss grew from {_g(s['initial_loss'])} to {_g(s['final_loss_mean'])}")
    if reference is not None and not div:
        rdiv = reference["diverged"]
        if rdiv:
            parts.append(f"without clipping the run diverged at step {rdiv['step']}; this one did not")
        elif s["steps_done"] and reference["steps_done"]:
            mine, theirs = _g(s["final_loss_mean"]), _g(reference["final_loss_mean"])
            parts.append(f"loss (last 10%) {mine} vs {theirs} unclipped")
    return kind, "; ".join(parts)


# What to do about each finding of a training run (codes in codes.py, docs/codes.md).
REMEDIES = {
    "LD401": "The weights grew until the forward pass overflowed: lower train.lr, or clip "
    "(--clip norm:MAX_NORM, see the suggested max_norm).",
    "LD402": "The gradient overflowed: clip it (--clip norm:MAX_NORM, see the suggested max_norm) "
    "or lower train.lr; in float32 try float64 to see the magnitudes.",
    "LD403": "The loss overflowed: lower train.lr or clip; check the data for NaN/Inf.",
    "LD301": "If it binds on most steps, clipping acts as a learning-rate cap rather than a spike "
    "guard: compare the suggested max_norm with the threshold.",
    "LD302": "Global-norm clipping (--clip norm:MAX_NORM) rescales without changing the direction.",
}


def _finding(code: str, setting: str, step: int | None, message: str) -> Finding:
    return finding(code, message, REMEDIES[code], setting=setting, step=step)


def summarize(result: TrainResult) -> None:
    """Fill in summaries, verdicts, findings and the suggested max_norm."""
    summaries = [run_summary(r) for r in result.runs]
    ref = next((s for s in summaries if s["mode"] == "none"), None)
    optimizer = result.config.train.optimizer
    findings = []
    for s in summaries:
        name, cos = s["setting"], s["cosine_median"]
        s["verdict_kind"], s["verdict"] = verdict(s, ref, optimizer)
        if s["diverged"]:
            d = s["diverged"]
            findings.append(
                _finding(d["code"], name, d["step"], f"{name}: stopped at step {d['step']}: {d['cause']}")
            )
        if s["clipped_steps"]:
            n, of = s["clipped_steps"], s["steps_done"]
            findings.append(
                _finding("LD301", name, None, f"{name}: clipping changed the gradient on {n} of {of} steps")
            )
        if s["mode"] in ("value", "agc") and cos is not None and cos < BENDS_COSINE:
            text = f"{name}: median cosine(clipped, raw) {cos:.3f} on clipped steps (< {BENDS_COSINE})"
            findings.append(_finding("LD302", name, None, text))
    result.summaries = summaries
    result.findings = findings
    none_run = next((r for r in result.runs if r.setting.mode == "none"), None)
    result.suggestion = suggest_max_norm(none_run) if none_run else None
