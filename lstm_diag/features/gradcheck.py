"""Finite-difference check of the engine's gradients (no printing here).

For a sample of entries of every parameter tensor and of the input x, the analytic
gradient a is compared with a fourth-order central difference

    n = (-L(θ+2h) + 8 L(θ+h) - 8 L(θ-h) + L(θ-2h)) / (12 h),   h = 1e-3,

whose error is O(h^4) plus round-off of about eps·|L|/h (~1e-13 in float64 for
|L| ~ 1). The relative error of an entry is

    |a - n| / max(|a|, |n|, floor),   floor = 1e-6 · max(|L|, 1),

so entries too small for finite differences to resolve are judged on an absolute
scale instead of reporting noise as failure. float32 models are checked by
comparing their float32 gradients with differences of a float64 copy (so the
check measures float32 round-off, and the tolerance is widened accordingly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import engine
from ..setup.problem import Problem

STEP = 1e-3
DEFAULT_TOL = {"float64": 1e-6, "float32": 1e-3}


@dataclass
class TensorCheck:
    name: str
    shape: tuple[int, ...]
    checked: int
    max_rel_error: float
    max_abs_error: float
    worst_index: tuple[int, ...]
    worst_analytic: float
    worst_numeric: float

    def passed(self, tol: float) -> bool:
        return bool(self.max_rel_error <= tol)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "checked": self.checked,
            "max_rel_error": self.max_rel_error,
            "max_abs_error": self.max_abs_error,
            "worst_index": list(self.worst_index),
            "worst_analytic": self.worst_analytic,
            "worst_numeric": self.worst_numeric,
        }


def _sample(rng: np.random.Generator, grad: np.ndarray, n: int) -> np.ndarray:
    """Flat indices: the largest-|gradient| entry, then random distinct others."""
    if grad.size <= n:
        return np.arange(grad.size)
    top = int(np.argmax(np.abs(grad)))
    rest = rng.choice(grad.size - 1, n - 1, replace=False)
    rest = rest + (rest >= top)  # skip `top`
    return np.concatenate([[top], rest])


def central_difference(L, flat: np.ndarray, j: int, step: float = STEP) -> float:
    """The 4th-order central difference of L() in the entry flat[j] (flat is a view into the
    arrays L reads); flat[j] is restored afterwards."""
    orig = flat[j]
    values = []
    for delta in (2 * step, step, -step, -2 * step):
        flat[j] = orig + delta
        values.append(L())
    flat[j] = orig
    return (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)


def check_gradients(
    problem: Problem, samples: int = 16, seed: int = 0, step: float = STEP
) -> list[TensorCheck]:
    """Compare analytic and finite-difference gradients on `samples` entries per tensor."""
    spec, loss, target = problem.spec, problem.loss, problem.target
    _, bwd = engine.run(*problem.engine_args())
    # Differences are taken in float64 whatever the model's dtype.
    params = {k: v.astype(np.float64) for k, v in problem.params.items()}
    tokens = "embedding.weight" in params  # x holds token ids: dL/dE is checked instead of dL/dx
    x = problem.x if tokens else problem.x.astype(np.float64)
    y = problem.y if loss == "cross_entropy" else problem.y.astype(np.float64)
    states = {"h0": problem.h0, "c0": problem.c0}
    states = {k: None if v is None else v.astype(np.float64) for k, v in states.items()}

    def loss_now() -> float:
        return engine.loss_only(params, spec, x, y, loss, target, states["h0"], states["c0"])

    L0 = loss_now()
    floor = 1e-6 * max(abs(L0), 1.0)
    analytic = dict(bwd.params)
    tensors = dict(params)
    if not tokens:
        analytic["x"] = np.swapaxes(bwd.dx, 0, 1)  # (B, T, I)
        tensors["x"] = x
    if states["h0"] is not None:  # dL/dh_0, dL/dc_0 of every layer, (L, B, H)
        analytic["h0"] = np.stack([g.dh0 for g in bwd.layers])
        analytic["c0"] = np.stack([g.dc0 for g in bwd.layers])
        tensors.update(states)
    rng = np.random.default_rng(seed)
    results = []
    for name, arr in tensors.items():
        grad = analytic[name]
        flat = arr.reshape(-1)  # a view: perturbations act on `params` / `x`
        rel, ab, num = [], [], []
        idx = _sample(rng, grad, samples)
        for j in idx:
            n = central_difference(loss_now, flat, j, step)
            a = float(grad.reshape(-1)[j])
            num.append(n)
            ab.append(abs(a - n))
            rel.append(abs(a - n) / max(abs(a), abs(n), floor))
        w = int(np.argmax(rel))
        results.append(
            TensorCheck(
                name=name,
                shape=arr.shape,
                checked=len(idx),
                max_rel_error=float(rel[w]),
                max_abs_error=float(max(ab)),
                worst_index=tuple(int(v) for v in np.unravel_index(idx[w], arr.shape)),
                worst_analytic=float(grad.reshape(-1)[idx[w]]),
                worst_numeric=float(num[w]),
            )
        )
    return results
