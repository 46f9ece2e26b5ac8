"""`analyze`: config in, plain results out (no printing; renderers live in report/)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import engine
from .config import Config, load_config
from .model import Problem, build

SCHEMA_VERSION = 1


def frobenius_over_time(a: np.ndarray) -> np.ndarray:
    """(T, B, H) -> (T,): the Frobenius norm over (batch, hidden) at each step."""
    return np.sqrt(np.einsum("tbh,tbh->t", a, a))


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
    sections: dict[str, Any] = field(default_factory=dict)  # top-level diagnostics

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.config.model_dump(mode="json"),
            "loss": self.loss,
            "layers": [layer.to_dict() for layer in self.layers],
            "parameters": {k: v.to_dict() for k, v in self.parameters.items()},
            **self.sections,
        }


def analyze_problem(problem: Problem) -> AnalysisResult:
    fwd, bwd = engine.run(problem.params, problem.spec, problem.x, problem.y, problem.loss, problem.target)
    layers = [
        LayerResult(k, frobenius_over_time(g.dc), frobenius_over_time(g.dh)) for k, g in enumerate(bwd.layers)
    ]
    parameters = {
        name: ParamResult(
            shape=p.shape,
            norm=float(np.linalg.norm(p)),
            grad_norm=float(np.linalg.norm(bwd.params[name])),
        )
        for name, p in problem.params.items()
    }
    return AnalysisResult(
        config=problem.config,
        loss=fwd.loss,
        layers=layers,
        parameters=parameters,
        problem=problem,
        fwd=fwd,
        bwd=bwd,
    )


def analyze(
    config: str | Path | Mapping | Config | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> AnalysisResult:
    """Run the forward pass and BPTT for a config and measure gradient flow.

    config: a YAML path, a parsed mapping, a `Config`, or None for the built-in default.
    Returns an `AnalysisResult`; `.to_dict()` is the JSON document of `analyze --format json`.
    """
    cfg = config if isinstance(config, Config) else load_config(config, overrides)[0]
    return analyze_problem(build(cfg))
