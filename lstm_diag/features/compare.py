"""`compare`: initialization schemes side by side, over seeds, and sweeps of any config field.

Pure: config in, one plain document out (docs/compare.md); no printing, no files.
Progress goes to a callback.

Runs. The sweep's axes are the grid's fields (`compare.grid`, `--grid`; `--seq-lens` is the
axis data.seq_len), each with its values; a cell is one grid point x one init spec. For
every cell x seed index s there is one run: the config with `seed = config.seed + s`, the
spec's init fields (`model.init` and its options), then the grid point, made by
`Config.patched` (so every cell is validated, by each field's own rules, before any run)
and built by `problem.build` exactly as `analyze` builds it. `problem.rngs(seed)` splits
that seed into independent init and data streams, so

- the data batch depends on (s, grid point) only, never on the scheme: every scheme at
  seed index s sees the same batch (and the same architecture);
- a run's weights depend on (s, scheme, options, grid point) only, never on other runs,
  the order they run in or the number of worker processes (`--jobs`): results are
  bit-identical whatever J is. Schemes that draw the same tensors in the same order
  share them at a given s (e.g. chrono = pytorch's weights with chrono's biases):
  a paired comparison;
- any run can be reproduced alone: `lstm-diag analyze CONFIG` plus the run's
  `reproduce` overrides (`--set seed=... --set model.init=...`, and every field where
  the run's config differs from CONFIG's).

Measurements per run (analysis.analyze_problem, as `analyze` reports them), per layer:
the gradient horizon and per-step decay rate of ||dL/dc_t|| (eq. 9), log10 of
||dL/dc_1|| / ||dL/dc_T||, gate saturation per gate, the forget-gate mean (eq. 3) and
the implied time constant tau = 1 / (1 - e^{mean ln f}), and the largest singular value
of each recurrent gate block U_k = W_hh[kH:(k+1)H] (Pascanu et al. 2013: sigma_max
bounds the recurrent Jacobian); the loss at init and the verdicts.

The network's horizon is its bottleneck layer's: the layer with the shortest horizon
(ties: the fastest decay). Cells are ranked per T on the median bottleneck horizon
over seeds (longest first), ties broken by the median decay rate (slowest first),
then by the order of the cells.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.diagnostics import GATE_NAMES
from ..core.names import param_name
from ..core.schemes import InitSpec
from .batches import quartiles  # median [IQR] over seeds, as over batches
from .findings import Finding, from_dict

if TYPE_CHECKING:
    from ..setup.config import Config

SCHEMA_VERSION = 3  # 2: runs[].findings; 3: grid axes, cells, best (docs/compare.md)
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
    cell: int = 0  # the cell (grid point x init spec) this run is one seed of
    point: tuple[tuple[str, Any], ...] = ()  # the grid point: (field, value) per axis, as validated
    overrides: tuple[tuple[str, Any], ...] = ()  # the compared config + these (Config.patched) = config
    sets: tuple[str, ...] = ()  # further `--set`s analyze needs to build this run (grid fields)

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
        return sets + list(self.sets)


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


# ------------------------------------------------------------------------ the grid


def set_text(value: Any) -> str:
    """A value as `--set` reads it back (YAML): exact floats (shortest repr), true/false, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(set_text(v) for v in value) + "]"
    if isinstance(value, str):
        from ..errors import InputError
        from ..setup.config import yaml_load

        try:
            plain = yaml_load(value) == value
        except InputError:  # text YAML cannot read back is quoted
            plain = False
        return value if plain and "," not in value else json.dumps(value)
    return str(value)


def sweep_axes(
    seq_lens: Sequence[int] | None,
    grid: Sequence[tuple[str, Sequence]] | Mapping | None,
    train_steps: int = 0,
) -> list[tuple[str, list]]:
    """The sweep's axes [(field, values)]: --seq-lens first (data.seq_len; compare has
    always ordered its runs by length first), then the grid's axes in the order given."""
    from ..errors import ConfigError
    from ..setup.config import parse_grid

    if isinstance(grid, Mapping):
        try:
            grid = parse_grid(grid, train_steps)
        except ValueError as e:
            raise ConfigError(f"compare.grid: {e}") from None
    axes = [(f, list(v)) for f, v in (grid or [])]
    if seq_lens:
        if any(f == "data.seq_len" for f, _ in axes):
            raise ConfigError(
                "compare.seq_lens: sweeps data.seq_len, and so does the grid axis data.seq_len; "
                "give the lengths once"
            )
        axes.insert(0, ("data.seq_len", list(seq_lens)))
    return axes


def dotted(raw: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dump as {dotted field: value}."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict):
            out |= dotted(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out


def _cell_config(base: Config, spec: InitSpec, point: dict[str, Any], named: bool) -> Config:
    """The cell's config at the base seed: the base, the spec's init fields, then the grid
    point. A bad value is a ConfigError naming the grid value (or the point, for a
    combination); `named`: the grid has axes of its own (else errors name the spec only)."""
    from ..errors import ConfigError

    given = dict(spec.options)
    for field in point:
        key = field.removeprefix("model.")
        if field.startswith("model.") and key in given:
            raise ConfigError(
                f"grid {field}: init spec {spec.label!r} sets {key} too; give it in one place "
                "(the --init option or the grid axis)"
            )
    overrides = {f"model.{k}": v for k, v in spec.model_fields().items()} | point
    try:
        return base.patched(overrides)
    except ConfigError as e:
        msg = str(e)
        if not named:
            raise ConfigError(f"init {spec.label!r}: {msg}") from None
        for field, value in point.items():
            if msg.startswith(f"{field}:"):
                raise ConfigError(f"grid {field}={set_text(value)}: {msg}") from None
        where = ", ".join(f"{f}={set_text(v)}" for f, v in point.items())
        raise ConfigError(f"grid point {where} with init {spec.label!r}: {msg}") from None


def _check_cell(cfg: Config, sweeps_T: bool, from_seq_lens: bool) -> None:
    """What compare cannot do with a cell's config (a ConfigError naming the field)."""
    from ..errors import ConfigError

    if cfg.model.bidirectional:
        raise ConfigError(
            "model.bidirectional: compare does not handle bidirectional models yet; "
            "use `analyze` (per-direction flow and verdicts) for one init at a time"
        )
    if sweeps_T and cfg.data.task == "file":
        what = "compare.seq_lens" if from_seq_lens else "grid data.seq_len"
        raise ConfigError(f"{what}: a data file has its own length; a sweep needs a synthetic data.task")


def _distinct(axes: list[tuple[str, list]], cells: list[tuple[tuple, Config]]) -> None:
    """Two values of an axis that validate to the same value (1 and 1.0 for a float field)
    would make two identical cells: refused."""
    from ..errors import ConfigError

    for k, (field, values) in enumerate(axes):
        seen: dict[str, Any] = {}
        for j, raw in enumerate(values):
            cfg = next(c for idx, c in cells if idx[k] == j)
            key = json.dumps(dotted(cfg.model_dump(mode="json"))[field], sort_keys=True)
            if key in seen:
                raise ConfigError(
                    f"grid {field}: {json.dumps(seen[key])} and {json.dumps(raw)} are the same value"
                )
            seen[key] = raw


def plan(
    base: Config,
    specs: Sequence[InitSpec],
    seeds: int,
    seq_lens: Sequence[int] | None,
    grid: Sequence[tuple[str, Sequence]] | Mapping | None = None,
    train_steps: int = 0,
    jobs: int = 1,
) -> list[RunPlan]:
    """Every run, ordered by grid point (first axis slowest; --seq-lens first), then scheme
    (as given), then seed index. Every cell's config is validated here, before any run. The
    memory budget counts `jobs` analyses in flight at once in this machine's memory."""
    from ..errors import ConfigError

    if base.model.weights is not None:
        raise ConfigError(
            "model.weights: compare draws each run's weights from an init scheme; "
            "remove model.weights (or use `analyze` for a weight file)"
        )
    axes = sweep_axes(seq_lens, grid, train_steps)
    fields = [f for f, _ in axes]
    cells = []  # ((value index per axis), config at the base seed), in run order
    for idx in itertools.product(*(range(len(v)) for _, v in axes)):
        point = {f: axes[k][1][i] for k, (f, i) in enumerate(zip(fields, idx, strict=True))}
        for spec in specs:
            cfg = _cell_config(base, spec, point, len(axes) > (1 if seq_lens else 0))
            _check_cell(cfg, "data.seq_len" in point, bool(seq_lens))
            cells.append((idx, cfg))
    _distinct(axes, cells)
    _check_budget([c for _, c in cells], seeds, jobs)
    base_flat = dotted(base.model_dump(mode="json"))
    runs: list[RunPlan] = []
    for j, (_, cfg) in enumerate(cells):
        spec = specs[j % len(specs)]
        flat = dotted(cfg.model_dump(mode="json"))
        point = tuple((f, flat[f]) for f in fields)  # as validated: 1 -> 1.0 for a float field
        over = {f"model.{k}": v for k, v in spec.model_fields().items()} | dict(point)
        for s in range(seeds):
            run_cfg = cfg.patched({"seed": base.seed + s})
            r = RunPlan(len(runs), spec, s, run_cfg.data.seq_len, run_cfg, j, point,
                        tuple({"seed": base.seed + s, **over}.items()))  # fmt: skip
            have = {x.split("=", 1)[0] for x in r.reproduce}
            sets = tuple(f"{k}={set_text(v)}" for k, v in flat.items() if k not in have and v != base_flat[k])
            runs.append(dataclasses.replace(r, sets=sets))
    return runs


def _check_budget(cells: Sequence[Config], seeds: int, jobs: int = 1) -> None:
    """The whole sweep's memory against the budget, from sizes alone, before any run: every
    run's plan and result kept until the end (summed over the cells), plus the analyses
    running at once (the largest cell's, `jobs` of them)."""
    from ..errors import ConfigError
    from ..formats import budget
    from ..setup.problem import memory_parts

    results, peak, peak_parts = 0, -1, {}
    for cfg in cells:
        m, dc = cfg.model, cfg.data
        if None in (dc.batch_size, dc.seq_len, m.input_size, m.hidden_size, m.output_size):
            continue  # sizes a file decides: checked again from its headers before it is read
        parts = memory_parts(cfg, "compare", runs=seeds, jobs=jobs)
        key = next(k for k in parts if "per-run results" in k)
        results += parts.pop(key)
        if sum(parts.values()) > peak:
            peak, peak_parts = sum(parts.values()), parts
    if peak < 0:
        return
    parts = peak_parts | {"compare.seeds x compare.init x compare.grid (per-run results)": results}
    need, limit = sum(parts.values()), budget.memory_limit()
    if need > limit:
        top = max(parts, key=parts.__getitem__)
        raise ConfigError(
            f"{top}: this compare needs about {budget.human(need)} "
            f"({budget.human(parts[top])} for this part); limit {budget.human(limit)}; make it smaller"
        )


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
    """A run's result with what it is in the sweep (index, cell and grid point, scheme, seed,
    the analyze command)."""
    out = {"index": run.index, "cell": run.cell, "point": dict(run.point), "scheme": run.spec.label}
    out |= {"seed_index": run.seed_index}
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
    return [aggs[i].get("label", aggs[i]["scheme"]) for i in order]


def _forget_edges() -> list[float]:
    from ..core.diagnostics import GateAccumulator

    return GateAccumulator(1).f_hist_edges.tolist()  # the bins every run's forget histogram uses


RANKING_RULE = (
    "per sequence length, over the cells (grid point x init scheme): median bottleneck horizon over "
    "seeds, longest first; ties by the median decay rate, slowest first; then the order of the cells. "
    "The bottleneck layer of a run is its layer with the shortest horizon (ties: the fastest decay)."
)


def cell_labels(runs: Sequence[RunPlan]) -> dict[int, str]:
    """cell -> its label: the init spec, then each grid value but the sequence length's
    (cells are ranked per length), e.g. 'chrono, forget_bias=1, hidden_size=64'. A field
    is named by its last part unless two axes share it."""
    fields = [f for f, _ in runs[0].point if f != "data.seq_len"] if runs else []
    last = [f.rsplit(".", 1)[-1] for f in fields]
    short = {f: (n if last.count(n) == 1 else f) for f, n in zip(fields, last, strict=True)}
    out: dict[int, str] = {}
    for r in runs:
        if r.cell not in out:
            parts = [f"{short[f]}={set_text(v)}" for f, v in r.point if f in short]
            out[r.cell] = ", ".join([r.spec.label, *parts])
    return out


def axes_of(runs: Sequence[RunPlan]) -> list[dict]:
    """The sweep's axes as the document gives them: field and validated values, in order."""
    axes: list[dict] = []
    for k, (field, _) in enumerate(runs[0].point if runs else ()):
        seen: dict[str, Any] = {}
        for r in runs:
            seen.setdefault(json.dumps(r.point[k][1], sort_keys=True), r.point[k][1])
        axes.append({"field": field, "values": list(seen.values())})
    return axes


_NOT_MEASURED = ("index", "cell", "point", "reproduce", "overrides", "seq_len", "seed", "seed_index")


def inert_axes(axes: list[dict], results: list[dict]) -> list[str]:
    """Axes (of two or more values) whose values changed no measured number of any run:
    holding the other axes, the scheme and the seed fixed, every run measured the same."""
    measured = [
        json.dumps({k: v for k, v in r.items() if k not in _NOT_MEASURED}, sort_keys=True) for r in results
    ]
    out = []
    for ax in axes:
        f = ax["field"]
        if len(ax["values"]) < 2:
            continue
        groups: dict[str, set[str]] = {}
        for r, what in zip(results, measured, strict=True):
            others = {k: v for k, v in r["point"].items() if k != f}
            groups.setdefault(json.dumps([r["scheme"], r["seed_index"], others]), set()).add(what)
        if all(len(g) == 1 for g in groups.values()):
            out.append(f)
    return out


def best_cell(aggregates: list[dict], results: list[dict], T: int) -> dict:
    """The first-ranked cell at length T, and its run whose horizon is nearest the cell's
    median (ties: the lowest seed): the one `analyze` run that shows the cell in detail."""
    a = min((a for a in aggregates if a["seq_len"] == T), key=lambda a: a["rank"])
    med = a["horizon"]["median"]

    def distance(r: dict) -> tuple:
        d = abs(r["horizon"] - med) if math.isfinite(med) else 0.0
        return (d, r["seed_index"])

    r = min((r for r in results if r["cell"] == a["cell"]), key=distance)
    return {
        "cell": a["cell"],
        "label": a["label"],
        "seq_len": T,
        "run": r["index"],
        "seed": r["seed"],
        "horizon": r["horizon"],
        "reproduce": r["reproduce"],
    }


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
    grid: Sequence[tuple[str, Sequence]] | Mapping | None = None,
) -> dict:
    """Measure every cell (grid point x spec) x seed and summarize; see the module docstring.

    grid: the sweep's axes, [(field, values)] or {field: values} (compare.grid).
    Returns the JSON document of `compare --format json` (docs/compare.md). Where the runs
    execute (`jobs`, `scheduler`) and the `cache` change nothing in it.
    """
    runs = plan(config, specs, seeds, seq_lens, grid, train_steps, jobs=jobs) if runs is None else runs
    measured = run_all(runs, jobs, train_steps, on_done, on_start, scheduler, cache)
    results = [r | {"overrides": dict(p.overrides)} for p, r in zip(runs, measured, strict=True)]
    labels = cell_labels(runs)
    cells: dict[int, list[dict]] = {}
    for r in results:
        cells.setdefault(r["cell"], []).append(r)
    aggregates = []
    for j, rs in cells.items():
        agg = aggregate(rs[0]["scheme"], rs[0]["seq_len"], rs)
        aggregates.append({"cell": j, "label": labels[j], "point": rs[0]["point"], **agg})
    lens = sorted({a["seq_len"] for a in aggregates})
    ranking = {str(T): rank([a for a in aggregates if a["seq_len"] == T]) for T in lens}
    axes = axes_of(runs)
    inert = inert_axes(axes, results)
    for ax in axes:
        ax["changes_results"] = ax["field"] not in inert
    n_len = 1 if seq_lens else 0
    settings = config.compare.model_dump(mode="json")
    settings.update(
        {
            "init": [s.label for s in specs],
            "seeds": seeds,
            "seq_lens": list(seq_lens) if seq_lens else None,
            "grid": {a["field"]: a["values"] for a in axes[n_len:]} or None,
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
        "axes": axes,
        "seed_values": [config.seed + s for s in range(seeds)],
        "seq_lens": lens,
        "detail_seq_len": lens[-1],
        "vanishing_ratio": config.diagnostics.vanishing_ratio,
        "forget_histogram_edges": _forget_edges(),
        "ranking_rule": RANKING_RULE,
        "ranking": ranking,
        "best": best_cell(aggregates, results, lens[-1]),
        "aggregates": aggregates,
        "runs": results,
    }
