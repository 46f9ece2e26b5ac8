"""`track` and `diff`: one analysis per checkpoint, on the same data, then the trajectory.

Each checkpoint is analysed exactly as `analyze CONFIG --set model.weights=CKPT` would:
the config with model.weights replaced (sizes from the file, the config's data, seed and
diagnostics), through `analysis.analyze`. With jobs > 1 the checkpoints are analysed in
worker processes (`executor.run_many`): each analysis is deterministic and every result
goes through the same JSON round trip, so the document is the same whatever the number
of jobs. No printing: progress goes to a callback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..setup.checkpoints import Checkpoint
from ..setup.config import Config, load_config
from . import trajectory


def checkpoint_config(config, overrides, path: Path) -> Config:
    """CONFIG (a path, a mapping, or None) with --set overrides, and model.weights = path.

    The path is written as a quoted YAML scalar (JSON), so any file name is read as text.
    """
    item = f"model.weights={json.dumps(str(path.resolve()))}"
    return load_config(config, (*overrides, item))[0]


def analyse(cfg: Config) -> dict:
    """One checkpoint's quantities (trajectory.point) from `analyze` on cfg."""
    from .analysis import analyze

    return trajectory.point(analyze(cfg).to_dict())


def snapshotter(config: Config) -> Callable[[dict], dict]:
    """For `train --snapshot-every`: a function of the weights (PyTorch names) giving their
    quantities on the batch `analyze CONFIG` analyses, so that a snapshot at step s equals
    `track` of a checkpoint saved at step s with the same config."""
    from dataclasses import replace

    from ..setup.problem import build
    from .analysis import analyze_problem

    problem = build(config)

    def snapshot(params: dict) -> dict:
        return trajectory.point(analyze_problem(replace(problem, params=dict(params))).to_dict())

    return snapshot


def _analyse_payload(payload: dict) -> dict:
    """`analyse` of a payload {"config": the config as JSON}: what a worker runs."""
    return analyse(Config.model_validate_json(json.dumps(payload["config"])))  # JSON mode: lists are tuples


def analyse_all(
    configs: list[Config], jobs: int = 1, on_done: Callable[[dict], None] | None = None
) -> list[dict]:
    """`analyse` of each config, in order; in up to `jobs` worker processes
    (features/executor.run_many: every result through the same JSON round trip)."""
    from .executor import run_many

    payloads = [{"config": cfg.model_dump(mode="json")} for cfg in configs]
    done = None if on_done is None else (lambda k, result, cached: on_done(result))
    return run_many(_analyse_payload, payloads, jobs=jobs, on_done=done)


def track_document(checkpoints: list[Checkpoint], points: list[dict], source: dict, base: Config) -> dict:
    """The body of the track document: checkpoints (sorted by step) with their quantities."""
    labelled = [
        {"path": str(c.path), "step": c.step, "step_source": c.source, **p}
        for c, p in zip(checkpoints, points, strict=True)
    ]
    config = base.model_dump(mode="json")
    config["model"]["weights"] = None  # one per checkpoint (checkpoints[].path)
    return {"source": source, "config": config, **trajectory.trajectory(labelled)}


def diff_document(a: dict, b: dict, label_a: str, label_b: str, sources: list[dict]) -> dict:
    """The body of the diff document: both points and what changed from a to b."""
    change = trajectory.compare_points(a, b, label_a, label_b)
    return {
        "a": {**sources[0], **a},
        "b": {**sources[1], **b},
        "change": change,
        "findings": change["regressions"] + change["findings_appeared"],
    }
