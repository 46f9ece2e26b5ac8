"""`compare`: initialization schemes (and sequence lengths) side by side, over seeds.

Pure: config in, one plain document out (docs/compare.md); no printing, no files.
Progress goes to a callback.

Runs. For every init spec x seed index s x sequence length T there is one run: the
config with `seed = config.seed + s`, `data.seq_len = T`, `model.init` and the spec's
options, built by `problem.build` exactly as `analyze` builds it. `problem.rngs(seed)`
splits that seed into independent init and data streams, so

- the data batch depends on (s, T) only, never on the scheme: every scheme at seed
  index s sees the same batch (and the same architecture);
- a run's weights depend on (s, scheme, options) only, never on other runs, the
  order they run in or the number of worker processes (`--jobs`): results are
  bit-identical whatever J is. Schemes that draw the same tensors in the same order
  share them at a given s (e.g. chrono = pytorch's weights with chrono's biases):
  a paired comparison;
- any run can be reproduced alone: `lstm-diag analyze CONFIG` plus the run's
  `reproduce` overrides (`--set seed=... --set model.init=...`).

Measurements per run (analysis.analyze_problem, as `analyze` reports them), per layer:
the gradient horizon and per-step decay rate of ||dL/dc_t|| (eq. 9), log10 of
||dL/dc_1|| / ||dL/dc_T||, gate saturation per gate, the forget-gate mean (eq. 3) and
the implied time constant tau = 1 / (1 - e^{mean ln f}), and the largest singular value
of each recurrent gate block U_k = W_hh[kH:(k+1)H] (Pascanu et al. 2013: sigma_max
bounds the recurrent Jacobian); the loss at init and the verdicts.

The network's horizon is its bottleneck layer's: the layer with the shortest horizon
(ties: the fastest decay). Schemes are ranked per T on the median bottleneck horizon
over seeds (longest first), ties broken by the median decay rate (slowest first),
then by the order given.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.diagnostics import GATE_NAMES
from ..core.names import param_name
from ..core.schemes import InitSpec
from .findings import Finding, from_dict

if TYPE_CHECKING:
    from ..setup.config import Config

SCHEMA_VERSION = 2  # 2: runs[].findings (docs/compare.md)
VERDICTS = ("healthy", "vanishing", "exploding")
# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class RunPlan:
    """One run: what it is, and the validated config that makes it."""

    index: int  # position in the deterministic run order
    spec: InitSpec
    seed_index: int
    seq_len: int  # requested (a data file's own length wins)
    config: Config

    @property
    def reproduce(self) -> list[str]:
        """`--set` overrides that make `analyze` build this run from the compared config."""
        m = self.config.model
        sets = [f"seed={self.config.seed}", f"model.init={m.init}"]
        if m.forget_bias is not None:
            sets.append(f"model.forget_bias={m.forget_bias:g}")
        for key, default in (("recurrent_scale", 1.0), ("gain", 1.0)):
            if getattr(m, key) != default:
                sets.append(f"model.{key}={getattr(m, key):g}")
        if m.t_max is not None:
            sets.append(f"model.t_max={m.t_max:g}")
        if self.config.data.task != "file":
            sets.append(f"data.seq_len={self.config.data.seq_len}")
        return sets


def run_config(base: Config, spec: InitSpec, seed: int, seq_len: int | None) -> Config:
    """The base config with this run's seed, scheme and options (and sequence length)."""
    from ..errors import ConfigError

    overrides = {"seed": seed, **{f"model.{k}": v for k, v in spec.model_fields().items()}}
    if seq_len is not None:
        overrides["data.seq_len"] = seq_len
    try:
        return base.patched(overrides)
    except ConfigError as e:
        raise ConfigError(f"init {spec.label!r}: {e}") from None


def plan(
    base: Config, specs: Sequence[InitSpec], seeds: int, seq_lens: Sequence[int] | None, jobs: int = 1
) -> list[RunPlan]:
    """Every run, ordered by T, then scheme (as given), then seed index. The memory budget
    counts `jobs` analyses in flight at once in this machine's memory."""
    from ..errors import ConfigError

    if base.model.weights is not None:
        raise ConfigError(
            "model.weights: compare draws each run's weights from an init scheme; "
            "remove model.weights (or use `analyze` for a weight file)"
        )
    if base.model.bidirectional:
        raise ConfigError(
            "model.bidirectional: compare does not handle bidirectional models yet; "
            "use `analyze` (per-direction flow and verdicts) for one init at a time"
        )
    if seq_lens and base.data.task == "file":
        raise ConfigError(
            "compare.seq_lens: a data file has its own length; a sweep needs a synthetic data.task"
        )
    lens: list[int | None] = list(seq_lens) if seq_lens else [None]
    _check_budget(base, len(specs) * seeds, lens, jobs)
    runs = []
    for T in lens:
        for spec in specs:
            for s in range(seeds):
                cfg = run_config(base, spec, base.seed + s, T)
                runs.append(RunPlan(len(runs), spec, s, cfg.data.seq_len, cfg))
    return runs


def _check_budget(base: Config, per_length: int, lens: Sequence[int | None], jobs: int = 1) -> None:
    """The whole comparison's memory (every run's plan and result, the analyses running at
    once) against the budget, from sizes alone, before any run is planned."""
    from ..setup.problem import check_memory

    for T in lens:  # the longest length dominates; every length is checked
        cfg = base if T is None else base.patched({"data.seq_len": T})
        check_memory(cfg, "compare", runs=per_length * len(lens), jobs=jobs)


# ------------------------------------------------------------------------- measuring


def sigma_max(W_hh: np.ndarray) -> dict[str, float]:
    """Largest singular value of each recurrent gate block U_k = W_hh[kH:(k+1)H], (H, H)."""
    H = W_hh.shape[1]
    return {
        name: float(np.linalg.norm(W_hh[k * H : (k + 1) * H].astype(np.float64), ord=2))  # σ_max(U_k)
        for k, name in enumerate(GATE_NAMES)
    }


def _log10(x: float) -> float:
    if not math.isfinite(x) or x < 0:
        return math.nan
    return -math.inf if x == 0 else math.log10(x)


def bottleneck(layers: list[dict]) -> int:
    """The layer with the shortest horizon; ties: the fastest decay (nan decay counts as slowest)."""

    def key(k: int):
        d = layers[k]["decay_rate"]
        return (layers[k]["horizon"], -(d if math.isfinite(d) else -math.inf))

    return min(range(len(layers)), key=key)


def measure(result) -> dict:
    """The compare numbers of one analysis (an `analysis.AnalysisResult`)."""
    params = result.problem.params
    layers = []
    for lr in result.layers:
        fl, gates = lr.flow, lr.gates
        series = lr.flow_grad_c_norm or lr.grad_c_norm.tolist()  # the series the flow was measured on
        layers.append(
            {
                "layer": lr.layer,
                "horizon": int(fl["horizon"]),
                "horizon_reaches_start": bool(fl["horizon_reaches_start"]),
                "decay_rate": float(fl["decay_rate"]),
                "ratio_first_last": float(fl["ratio_first_last"]),
                "log10_ratio_first_last": _log10(fl["ratio_first_last"]),
                "saturation": {g: gates[g]["saturated_low"] + gates[g]["saturated_high"] for g in GATE_NAMES},
                "forget_mean": float(gates["forget"]["mean"]),
                "forget_time_constant": float(fl["forget_time_constant"]),
                "sigma_max": sigma_max(params[param_name("weight_hh", lr.layer)]),
                "verdict": lr.verdict,
                "flow_source": fl["source"],
                "grad_c_norm": [float(v) for v in series],
                "forget_histogram": [int(c) for c in lr.forget_histogram["counts"]],
                # top-k Lyapunov exponents of the state (c, h), natural log per step (docs/dynamics.md)
                "lyapunov": [float(v) for v in lr.dynamics["lyapunov"]] if lr.dynamics is not None else [],
            }
        )
    k = bottleneck(layers)
    b = layers[k]
    return {
        "loss": float(result.loss),
        "verdict": result.verdict,
        "bottleneck_layer": k,
        "findings": [f.to_dict() for f in result.findings],  # as analyze reports them (docs/codes.md)
        "horizon": b["horizon"],
        "horizon_reaches_start": b["horizon_reaches_start"],
        "decay_rate": b["decay_rate"],
        "log10_ratio_first_last": b["log10_ratio_first_last"],
        "layers": layers,
    }


def run_findings(doc: dict) -> list[Finding]:
    """Every run's analyze findings, each placed by its run: setting "<scheme> seed <s> T=<T>"."""
    return [
        from_dict(f, setting=f"{r['scheme']} seed {r['seed']} T={r['seq_len']}")
        for r in doc["runs"]
        for f in r["findings"]
    ]


def _train_config(cfg: Config, steps: int) -> Config:
    """The run's config set up for features.train: one clip setting (the clipping: section's mode)."""
    train = {"steps": steps, "clip": cfg.clipping.mode, "log_every": steps}
    train |= {"metrics": None, "plots": None, "save_weights": None}
    return cfg.patched({f"train.{k}": v for k, v in train.items()})


def measure_after_training(problem, steps: int) -> dict:
    """Train K steps with lstm_diag.features.train (the train: section's optimizer; the clipping: section's
    mode), then measure loss and horizon again on the batch the init measurement used."""
    from ..setup.problem import Problem
    from .analysis import analyze_problem
    from .train import train

    result = train(_train_config(problem.config, steps))
    if result.interrupted:  # train() stops cleanly on Ctrl-C; compare stops altogether
        raise KeyboardInterrupt
    run = result.runs[0]
    trained = Problem(problem.config, problem.spec, run.params, problem.x, problem.y)
    after = measure(analyze_problem(trained))
    summary = result.summaries[0]
    return {
        "steps": steps,
        "steps_done": run.steps_done,
        "diverged": run.diverged,
        "train_loss_final_mean": summary["final_loss_mean"],  # mean over the last 10% of training steps
        "loss": after["loss"],  # on the init measurement's batch
        "horizon": after["horizon"],
        "horizon_reaches_start": after["horizon_reaches_start"],
        "decay_rate": after["decay_rate"],
        "log10_ratio_first_last": after["log10_ratio_first_last"],
        "verdict": after["verdict"],
        "bottleneck_layer": after["bottleneck_layer"],
    }


def payload(run: RunPlan, train_steps: int = 0) -> dict:
    """What a worker needs for one run, as plain JSON data: the run's full config (without
    the compare: section, which only says how to sweep), what to measure, and the input
    files by path and SHA-256. Labels stay here: a run's cache entry does not depend on
    its place in the sweep."""
    from .executor import fingerprint_inputs

    config = run.config.model_dump(mode="json")
    config.pop("compare", None)
    inputs = fingerprint_inputs(
        {"data.path": run.config.data.path, "model.weights": run.config.model.weights}
    )
    return {"config": config, "train_steps": train_steps, "inputs": inputs}


def execute(job: dict) -> dict:
    """One run, start to end, from its payload: build, analyze, measure (and train).

    Module-level so worker processes (local or Dask) can import it; it depends on the
    payload alone and returns plain data.
    """
    import json

    from ..setup.config import Config
    from ..setup.problem import build
    from .analysis import analyze_problem
    from .executor import verify_inputs

    verify_inputs(job["inputs"])
    config = Config.model_validate_json(json.dumps(job["config"]))  # JSON mode: lists are tuples
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        problem = build(config)
        out = {"seq_len": int(problem.x.shape[1]), **measure(analyze_problem(problem))}
        steps = job["train_steps"]
        out["after_training"] = measure_after_training(problem, steps) if steps else None
    return out


def labelled(run: RunPlan, result: dict) -> dict:
    """A run's result with what it is in the sweep (index, scheme, seed, the analyze command)."""
    out = {"index": run.index, "scheme": run.spec.label, "seed_index": run.seed_index}
    out |= {"seed": run.config.seed, "seq_len": result["seq_len"], "reproduce": run.reproduce}
    return out | result


def run_all(
    runs: Sequence[RunPlan],
    jobs: int = 1,
    train_steps: int = 0,
    on_done: Callable[[dict, bool], None] | None = None,
    on_start: Callable[[], None] | None = None,
    scheduler: str | None = None,
    cache: str | None = None,
) -> list[dict]:
    """Execute every run through `executor.run_many`: in this process (jobs = 1), in `jobs`
    worker processes, or on a Dask scheduler (`scheduler`), reusing the runs found in `cache`.

    Results come back in run order whatever finishes first; `on_done(run, cached)` sees
    each as it finishes; `on_start` is called once the workers exist (start a progress
    display there, so no display thread is running while worker processes are forked).
    """
    from .executor import run_many

    results: list[dict | None] = [None] * len(runs)

    def done(k: int, result: dict, cached: bool) -> None:
        results[k] = labelled(runs[k], result)
        if on_done is not None:
            on_done(results[k], cached)

    jobs_ = [payload(r, train_steps) for r in runs]
    run_many(execute, jobs_, jobs=jobs, scheduler=scheduler, cache=cache, on_done=done, on_start=on_start)
    return results  # type: ignore[return-value]


# ----------------------------------------------------------------------- aggregating


def quartiles(values: Sequence[float]) -> dict:
    """Median and interquartile range over seeds: {median, q1, q3, n, nonfinite}.

    NaN values are left out (counted in `nonfinite`). ±inf (e.g. log10 of a ratio that
    underflowed to 0) are kept; then the nearest order statistic is used instead of
    linear interpolation, which is undefined between an infinity and a number.
    """
    v = np.asarray(values, np.float64)
    nan = np.isnan(v)
    v = v[~nan]
    out = {"median": math.nan, "q1": math.nan, "q3": math.nan, "n": int(v.size), "nonfinite": int(nan.sum())}
    if v.size:
        method = "linear" if np.isfinite(v).all() else "nearest"
        q1, med, q3 = np.percentile(v, [25, 50, 75], method=method)
        out.update(median=float(med), q1=float(q1), q3=float(q3))
        out["nonfinite"] += int((~np.isfinite(v)).sum())
    return out


def series_quartiles(series: list[list[float]]) -> dict:
    """Per step t: median, q1, q3 over runs of ||dL/dc_t|| / ||dL/dc_T|| (NaN where not finite)."""
    a = np.asarray(series, np.float64)  # (runs, T)
    with np.errstate(all="ignore"):
        rel = a / a[:, -1:]  # relative to the value at the loss, t = T
    rel[~np.isfinite(rel)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN step stays NaN
        q1, med, q3 = np.nanpercentile(rel, [25, 50, 75], axis=0)  # (T,) each
    return {"median": med.tolist(), "q1": q1.tolist(), "q3": q3.tolist()}


def _counts(verdicts: list[str]) -> dict[str, int]:
    return {v: sum(x == v for x in verdicts) for v in VERDICTS}


def _layer_aggregate(k: int, runs: list[dict]) -> dict:
    ls = [r["layers"][k] for r in runs]
    return {
        "layer": k,
        "horizon": quartiles([x["horizon"] for x in ls]),
        "reaches_start": sum(x["horizon_reaches_start"] for x in ls),
        "decay_rate": quartiles([x["decay_rate"] for x in ls]),
        "log10_ratio_first_last": quartiles([x["log10_ratio_first_last"] for x in ls]),
        "saturation": {g: quartiles([x["saturation"][g] for x in ls]) for g in GATE_NAMES},
        "forget_mean": quartiles([x["forget_mean"] for x in ls]),
        "forget_time_constant": quartiles([x["forget_time_constant"] for x in ls]),
        "sigma_max": {g: quartiles([x["sigma_max"][g] for x in ls]) for g in GATE_NAMES},
        "verdicts": _counts([x["verdict"] for x in ls]),
        "flow": series_quartiles([x["grad_c_norm"] for x in ls]),
        "forget_histogram": np.sum([x["forget_histogram"] for x in ls], axis=0).tolist(),  # pooled over seeds
        "lyapunov_max": quartiles([x["lyapunov"][0] for x in ls if x["lyapunov"]]),
        "lyapunov": _spectrum_quartiles([x["lyapunov"] for x in ls]),
    }


def _spectrum_quartiles(spectra: list[list[float]]) -> list[dict]:
    """Median [IQR] over seeds of each Lyapunov exponent, index by index (largest first)."""
    n = min((len(s) for s in spectra), default=0)
    return [quartiles([s[i] for s in spectra]) for i in range(n)]


def _after_aggregate(runs: list[dict]) -> dict | None:
    after = [r["after_training"] for r in runs]
    if any(a is None for a in after):
        return None
    return {
        "steps": after[0]["steps"],
        "loss": quartiles([a["loss"] for a in after]),
        "train_loss_final_mean": quartiles([a["train_loss_final_mean"] for a in after]),
        "horizon": quartiles([a["horizon"] for a in after]),
        "decay_rate": quartiles([a["decay_rate"] for a in after]),
        "diverged": sum(a["diverged"] is not None for a in after),
        "verdicts": _counts([a["verdict"] for a in after]),
    }


def aggregate(label: str, T: int, runs: list[dict]) -> dict:
    """Median [IQR] over the seeds of one scheme at one sequence length."""
    L = len(runs[0]["layers"])
    return {
        "scheme": label,
        "seq_len": T,
        "rank": None,  # filled by `rank`
        "runs": len(runs),
        "horizon": quartiles([r["horizon"] for r in runs]),
        "reaches_start": sum(r["horizon_reaches_start"] for r in runs),
        "decay_rate": quartiles([r["decay_rate"] for r in runs]),
        "log10_ratio_first_last": quartiles([r["log10_ratio_first_last"] for r in runs]),
        "bottleneck_layers": [sum(r["bottleneck_layer"] == k for r in runs) for k in range(L)],
        "loss": quartiles([r["loss"] for r in runs]),
        "verdicts": _counts([r["verdict"] for r in runs]),
        "layers": [_layer_aggregate(k, runs) for k in range(L)],
        "after_training": _after_aggregate(runs),
    }


def rank(aggs: list[dict]) -> list[str]:
    """Longest median horizon first; ties: slowest median decay; then the order given. Sets `rank`."""

    def key(i: int):
        a = aggs[i]
        d = a["decay_rate"]["median"]
        return (-a["horizon"]["median"], d if math.isfinite(d) else math.inf, i)

    order = sorted(range(len(aggs)), key=key)
    for r, i in enumerate(order, start=1):
        aggs[i]["rank"] = r
    return [aggs[i]["scheme"] for i in order]


def _forget_edges() -> list[float]:
    from ..core.diagnostics import GateAccumulator

    return GateAccumulator(1).f_hist_edges.tolist()  # the bins every run's forget histogram uses


RANKING_RULE = (
    "per sequence length: median bottleneck horizon over seeds, longest first; ties by the median "
    "decay rate, slowest first; then the order given. The bottleneck layer of a run is its layer "
    "with the shortest horizon (ties: the fastest decay)."
)


def compare(
    config: Config,
    specs: Sequence[InitSpec],
    seeds: int,
    seq_lens: Sequence[int] | None = None,
    jobs: int = 1,
    train_steps: int = 0,
    on_done: Callable[[dict, bool], None] | None = None,
    on_start: Callable[[], None] | None = None,
    runs: list[RunPlan] | None = None,
    scheduler: str | None = None,
    cache: str | None = None,
) -> dict:
    """Measure every spec x seed (x sequence length) and summarize; see the module docstring.

    Returns the JSON document of `compare --format json` (docs/compare.md). Where the runs
    execute (`jobs`, `scheduler`) and the `cache` change nothing in it.
    """
    runs = plan(config, specs, seeds, seq_lens, jobs=jobs) if runs is None else runs
    results = run_all(runs, jobs, train_steps, on_done, on_start, scheduler, cache)
    lens = sorted({r["seq_len"] for r in results})
    labels = [s.label for s in specs]
    aggregates, ranking = [], {}
    for T in lens:
        aggs = [
            aggregate(lab, T, [r for r in results if r["scheme"] == lab and r["seq_len"] == T])
            for lab in labels
        ]
        ranking[str(T)] = rank(aggs)
        aggregates += aggs
    settings = config.compare.model_dump(mode="json")
    settings.update(
        {
            "init": labels,
            "seeds": seeds,
            "seq_lens": list(seq_lens) if seq_lens else None,
            "train_steps": train_steps,
        }
    )
    for key in ("jobs", "scheduler", "cache"):  # where and whether runs execute: never a number
        settings.pop(key, None)
    settings.pop("plots", None)
    doc_config = config.model_dump(mode="json")
    doc_config.pop("compare", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "command": "compare",
        "config": doc_config,
        "settings": settings,
        "seed_values": [config.seed + s for s in range(seeds)],
        "seq_lens": lens,
        "detail_seq_len": lens[-1],
        "vanishing_ratio": config.diagnostics.vanishing_ratio,
        "forget_histogram_edges": _forget_edges(),
        "ranking_rule": RANKING_RULE,
        "ranking": ranking,
        "aggregates": aggregates,
        "runs": results,
    }
