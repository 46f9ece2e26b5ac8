"""How much to trust one batch: the same analysis over several batches (data.batches).

The batches are analysed one at a time with the same weights (setup/problem.py `problems`);
of each, only a summary is kept (horizon, decay rate, λ₁, saturation per gate, verdicts,
findings, the ||dL/dc_t|| curve the flow is measured on), so memory holds one batch's
caches however many batches there are. The first batch's full analysis is the document's
body, unchanged; the spread is its `batches` section (docs/batches.md):

- median [IQR] over batches: the 25th, 50th and 75th percentiles with linear interpolation
  between order statistics (numpy.percentile's default), so the spread of N separate runs
  `analyze --set data.batch_index=k` is the same numbers;
- verdicts by majority: the most frequent, ties going to the more severe (exploding,
  vanishing, no_flow, healthy), with every count shown ("vanishing in 5 of 6 batches");
- findings: each (code, layer, direction) with the number of batches it was found in.
  A finding is the batches' finding (for --fail-on) when found in more than half of them.

No printing and no imports of the analysis itself: `analysis.analyze` hands each result in.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..core.diagnostics import GATE_NAMES
from .findings import Finding

SEVERITY_ORDER = ("exploding", "vanishing", "no_flow", "healthy")  # ties in a vote go to the first


def quartiles(values: Sequence[float]) -> dict:
    """{median, q1, q3, n, nonfinite} of `values`: numpy's percentiles 25, 50, 75 (linear);
    NaN left out and counted in `nonfinite`; with ±inf present the nearest order statistic
    (linear interpolation is undefined between an infinity and a number)."""
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


def vote(verdicts: Sequence[str]) -> dict:
    """{majority, counts, of}: the most frequent verdict (ties: the more severe), all counts."""
    counts = {v: verdicts.count(v) for v in SEVERITY_ORDER if v in verdicts}
    best = max(counts.values())
    majority = next(v for v in SEVERITY_ORDER if counts.get(v) == best)
    return {"majority": majority, "counts": counts, "of": len(verdicts)}


def summary(result, index: int) -> dict:
    """What is kept of one batch's analysis (an analysis.AnalysisResult)."""
    layers = []
    for lr in result.layers:
        dyn = lr.dynamics or {}
        lyap = dyn.get("lyapunov") or []
        gates = lr.gates
        layers.append(
            {
                "layer": lr.layer,
                "direction": lr.direction,
                "horizon": lr.flow["horizon"],
                "decay_rate": lr.flow["decay_rate"],
                "lyapunov_max": float(lyap[0]) if lyap else None,
                "saturation": {g: gates[g]["saturated_low"] + gates[g]["saturated_high"] for g in GATE_NAMES},
                "verdict": lr.verdict,
                # (T,) by position t: the series horizon and decay are measured on
                "flow_grad_c_norm": np.asarray(
                    lr.grad_c_norm if lr.flow_grad_c_norm is None else lr.flow_grad_c_norm, np.float64
                ),
            }
        )
    return {
        "batch_index": index,
        "loss": result.loss,
        "verdict": result.verdict,
        "layers": layers,
        "findings": list(result.findings),
    }


def _curve_quartiles(curves: list[np.ndarray]) -> dict:
    """Per step t, over batches: median, q1, q3 of ||dL/dc_t|| (NaN where no batch is finite)."""
    a = np.asarray(curves, np.float64)  # (batches, T)
    a[~np.isfinite(a)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN step stays NaN
        q1, med, q3 = np.nanpercentile(a, [25, 50, 75], axis=0)  # (T,) each
    return {"median": med.tolist(), "q1": q1.tolist(), "q3": q3.tolist()}


def _layer_spread(j: int, runs: list[dict]) -> dict:
    ls = [r["layers"][j] for r in runs]
    lyap = [x["lyapunov_max"] for x in ls if x["lyapunov_max"] is not None]
    return {
        "layer": ls[0]["layer"],
        "direction": ls[0]["direction"],
        "horizon": quartiles([x["horizon"] for x in ls]),
        "decay_rate": quartiles([x["decay_rate"] for x in ls]),
        "lyapunov_max": quartiles(lyap) if lyap else None,
        "saturation": {g: quartiles([x["saturation"][g] for x in ls]) for g in GATE_NAMES},
        "verdict": vote([x["verdict"] for x in ls]),
        "flow_grad_c_norm": _curve_quartiles([x["flow_grad_c_norm"] for x in ls]),
    }


def _finding_key(f: Finding) -> tuple:
    return (f.code, f.layer, f.direction)


def finding_counts(runs: list[dict]) -> tuple[list[dict], list[Finding]]:
    """Each distinct finding (code, layer, direction) with the batches it was found in, in
    order of first appearance; and the findings of more than half the batches (as first met)."""
    first: dict[tuple, Finding] = {}
    found_in: dict[tuple, list[int]] = {}
    for r in runs:
        for f in r["findings"]:
            key = _finding_key(f)
            first.setdefault(key, f)
            if r["batch_index"] not in found_in.setdefault(key, []):
                found_in[key].append(r["batch_index"])
    table = [
        {
            "code": f.code,
            "severity": f.severity,
            "layer": f.layer,
            "direction": f.direction,
            "batches": len(found_in[key]),
            "batch_indices": found_in[key],
        }
        for key, f in first.items()
    ]
    majority = [f for key, f in first.items() if 2 * len(found_in[key]) > len(runs)]
    return table, majority


def spread(runs: list[dict], source: str, batch_size: int) -> tuple[dict, list[Finding]]:
    """The document's `batches` section from the per-batch summaries, and the majority findings."""
    table, majority = finding_counts(runs)
    section = {
        "count": len(runs),
        "first_index": runs[0]["batch_index"],
        "source": source,
        "batch_size": batch_size,
        "loss": quartiles([math.nan if r["loss"] is None else r["loss"] for r in runs]),
        "verdict": vote([r["verdict"] for r in runs]),
        "layers": [_layer_spread(j, runs) for j in range(len(runs[0]["layers"]))],
        "findings": table,
        "runs": [
            {
                "batch_index": r["batch_index"],
                "loss": r["loss"],
                "verdict": r["verdict"],
                "layers": [{k: v for k, v in x.items() if k != "flow_grad_c_norm"} for x in r["layers"]],
                "findings": [f.code for f in r["findings"]],
            }
            for r in runs
        ],
    }
    return section, majority


def over_batches(problems: Iterable, analyze_problem, on_batch=None):
    """Analyse each problem (one per batch) with `analyze_problem`, keep the first result whole
    (its caches dropped) and a summary of every one; returns the first result with `batches`
    and `batch_findings` set. on_batch(k, result): after each batch (a progress bar's hook)."""
    first, runs = None, []
    for problem in problems:
        result = analyze_problem(problem)
        k = problem.config.data.batch_index
        runs.append(summary(result, k))
        if first is None:
            first = result
            first.fwd = first.bwd = None  # only one batch's caches in memory at a time
        if on_batch is not None:
            on_batch(len(runs), result)
        del result
    # the document's config is the run's: all its batches, from the first
    whole = {"data.batches": len(runs), "data.batch_index": runs[0]["batch_index"]}
    first.config = first.config.patched(whole)
    d = first.config.data
    source = f"file {Path(d.path).name}" if d.task == "file" else f"task {d.task}"
    first.batches, first.batch_findings = spread(runs, source, d.batch_size)
    return first
