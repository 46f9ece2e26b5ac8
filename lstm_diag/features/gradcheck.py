"""Finite-difference check of the engine's gradients (no printing here).

For a subset of entries of every parameter tensor and of the input x, the analytic
gradient a is compared with a fourth-order central difference

    n = (-L(θ+2h) + 8 L(θ+h) - 8 L(θ-h) + L(θ-2h)) / (12 h),   h = 1e-3,

whose error is O(h^4) plus round-off of about eps·|L|/h (~1e-13 in float64 for
|L| ~ 1). The relative error of an entry is

    |a - n| / max(|a|, |n|, floor),   floor = 1e-6 · max(|L|, 1),

so entries too small for finite differences to resolve are judged on an absolute
scale instead of reporting noise as failure. float32 models are checked by
comparing their float32 gradients with differences of a float64 copy (so the
check measures float32 round-off, and the tolerance is widened accordingly).

Which entries (`entry_subset`): per tensor, its largest-|gradient| entry and n - 1
others drawn without replacement from a generator seeded by (seed, tensor name), so a
tensor's subset does not depend on which other tensors the model has; a tensor with
gate blocks (4H rows: W_ih, W_hh, the biases) gets its draws spread evenly over the
i, f, g, o blocks. `entries=None` checks every entry.

Cost: four loss evaluations per entry. A perturbed entry of layer k changes nothing
below it, so the loss is re-evaluated from layer k up (`_LossFrom`): the head's entries
cost almost nothing, the top layer's about 1/L of a forward pass.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..core import engine
from ..core.names import HEAD_BIAS, HEAD_WEIGHT, parse_param_name
from ..setup.problem import Problem

STEP = 1e-3
DEFAULT_TOL = {"float64": 1e-6, "float32": 1e-3}
DEFAULT_ENTRIES = 16  # per tensor; `gradcheck --entries`
EVALS_PER_ENTRY = 4  # loss evaluations of the 4th-order central difference


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


def entry_subset(name: str, grad: np.ndarray, n: int | None, seed: int, blocks: int = 1) -> np.ndarray:
    """Flat indices of the entries of tensor `name` to check: all of them (n None or >= size),
    else the largest-|gradient| entry first, then n - 1 distinct others drawn by a generator
    seeded by (seed, name), spread evenly over `blocks` equal row blocks (the gates)."""
    size = grad.size
    if n is None or size <= n:
        return np.arange(size)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    top = int(np.argmax(np.abs(grad)))
    per_block = size // blocks if size % blocks == 0 else size
    blocks = size // per_block
    counts = np.full(blocks, (n - 1) // blocks)
    counts[: (n - 1) % blocks] += 1  # the first blocks take the remainder
    picked = [np.array([top])]
    for b, k in enumerate(counts):
        start = b * per_block
        has_top = start <= top < start + per_block
        k = min(int(k), per_block - has_top)
        draw = rng.choice(per_block - has_top, k, replace=False) + start
        if has_top:
            draw = draw + (draw >= top)  # skip `top`
        picked.append(draw)
    return np.concatenate(picked)


def gate_blocks(name: str, shape: tuple[int, ...], hidden_size: int) -> int:
    """4 for a tensor whose rows are the stacked gates i, f, g, o (4H rows), else 1."""
    parsed = parse_param_name(name)
    if parsed is None or parsed[0] == "weight_hr" or shape[0] != 4 * hidden_size:
        return 1
    return 4


class _LossFrom:
    """The loss re-evaluated from layer k up, the layers below kept from the unperturbed pass
    (same operations as engine.forward, so the value is bitwise engine.loss_only's)."""

    def __init__(self, params, spec, x, y, loss, target, h0, c0):
        self.params, self.spec, self.y, self.loss, self.target = params, spec, y, loss, target
        self.h0, self.c0 = h0, c0
        dt = params["weight_hh_l0"].dtype
        self.tokens = x if "embedding.weight" in params else None
        # (T, B, I) time-major like the engine's input; None with token ids
        self.x = None if self.tokens is not None else np.ascontiguousarray(np.swapaxes(x, 0, 1).astype(dt))
        self.inputs: list[np.ndarray] = []  # (T, B, ·) the unperturbed input of each layer
        inp = self._embedded()
        for k in range(spec.num_layers):
            self.inputs.append(inp)
            inp = self._layer(k, inp)
        self.top = inp  # (T, B, D R)

    def _embedded(self) -> np.ndarray:
        if self.tokens is None:
            return self.x
        x = engine.embed(self.params["embedding.weight"], self.tokens)  # (B, T, I), eq. (24)
        return np.ascontiguousarray(np.swapaxes(x, 0, 1))  # (T, B, I)

    def _layer(self, k: int, inp: np.ndarray) -> np.ndarray:
        caches = []
        for d in range(self.spec.directions):
            p = engine.unit_params(self.params, k, d)
            j = k * self.spec.directions + d  # nn.LSTM's row of h0, c0
            s0 = (None, None) if self.h0 is None else (self.h0[j], self.c0[j])
            x_d = engine.unit_input(inp, d)
            caches.append(engine.layer_forward(p.W_ih, p.W_hh, p.b, x_d, *s0, W_hr=p.W_hr))
        return engine.layer_output(caches)  # (T, B, D R), eq. (21)

    def __call__(self, start: int) -> float:
        """The loss with layers start.. recomputed (start = num_layers: the head alone;
        start = -1: from the input, for the embedding and x)."""
        L = self.spec.num_layers
        with np.errstate(over="ignore", invalid="ignore"):
            if start < 0:
                inp, start = self._embedded(), 0
            else:
                inp = self.inputs[start] if start < L else self.top
            for k in range(start, L):
                inp = self._layer(k, inp)
            if HEAD_WEIGHT in self.params:
                W, b = self.params[HEAD_WEIGHT], self.params[HEAD_BIAS]
                y_hat = engine.head_forward(W, b, inp, self.target)
            else:
                y_hat = np.swapaxes(inp, 0, 1)
            return engine.loss_and_grad(y_hat, self.y, self.loss)[0]


def _start_layer(name: str, num_layers: int) -> int:
    """The first layer a perturbation of tensor `name` changes (-1: the input, L: the head)."""
    parsed = parse_param_name(name)
    if parsed is not None:
        return parsed[1]
    if name.startswith("head."):
        return num_layers
    return -1  # embedding.weight, x (h0, c0 are handled with -1 too: they feed every layer)


@dataclass
class GradcheckPlan:
    """What a check will do, measured before it starts: the tensors, the entries of each, and
    the time of one loss evaluation (to estimate the whole run)."""

    tensors: dict[str, np.ndarray]  # name -> the float64 array perturbed in place
    analytic: dict[str, np.ndarray]  # name -> dL/d(tensor) from BPTT
    indices: dict[str, np.ndarray]  # name -> flat indices to check
    starts: dict[str, int]  # name -> first layer to recompute
    loss_from: _LossFrom
    loss0: float
    forward_seconds: float  # one full loss evaluation, measured
    entries: int | None  # per tensor as asked (None: all)
    seed: int
    num_layers: int = 1
    cost_weights: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.indices.values())

    def estimated_seconds(self) -> float:
        """4 loss evaluations per entry, each the measured forward pass times the share of
        the layers it recomputes (the head's entries counted as 1/(2L) of a pass)."""
        return (
            EVALS_PER_ENTRY
            * self.forward_seconds
            * sum(len(idx) * self.cost_weights[name] for name, idx in self.indices.items())
        )


def _cost_weight(start: int, L: int) -> float:
    if start < 0:
        return 1.0
    return (L - start) / L if start < L else 1.0 / (2 * L)


def plan_gradcheck(problem: Problem, entries: int | None = DEFAULT_ENTRIES, seed: int = 0) -> GradcheckPlan:
    """One BPTT pass for the analytic gradients, one timed loss evaluation, and the entries
    of each tensor (`entry_subset`); entries=None: every entry."""
    spec, loss, target = problem.spec, problem.loss, problem.target
    _, bwd = engine.run(*problem.engine_args())
    # Differences are taken in float64 whatever the model's dtype.
    params = {k: v.astype(np.float64) for k, v in problem.params.items()}
    tokens = "embedding.weight" in params  # x holds token ids: dL/dE is checked instead of dL/dx
    x = problem.x if tokens else problem.x.astype(np.float64)
    y = problem.y if loss == "cross_entropy" else problem.y.astype(np.float64)
    states = {"h0": problem.h0, "c0": problem.c0}
    states = {k: None if v is None else v.astype(np.float64) for k, v in states.items()}
    t0 = time.perf_counter()
    loss_from = _LossFrom(params, spec, x, y, loss, target, states["h0"], states["c0"])
    L0 = loss_from(spec.num_layers)
    seconds = time.perf_counter() - t0
    analytic = dict(bwd.params)
    tensors = dict(params)
    if not tokens:
        analytic["x"] = bwd.dx  # (T, B, I), as the array perturbed
        tensors["x"] = loss_from.x  # (T, B, I): perturbed in place, read by the recomputation
    if states["h0"] is not None:  # dL/dh_0, dL/dc_0 of every layer, (L, B, H)
        analytic["h0"] = np.stack([g.dh0 for g in bwd.layers])
        analytic["c0"] = np.stack([g.dc0 for g in bwd.layers])
        tensors.update(states)
    L = spec.num_layers
    starts = {name: _start_layer(name, L) for name in tensors}
    H = spec.hidden_size
    indices = {
        name: entry_subset(name, analytic[name], entries, seed, gate_blocks(name, arr.shape, H))
        for name, arr in tensors.items()
    }
    return GradcheckPlan(
        tensors=tensors,
        analytic=analytic,
        indices=indices,
        starts=starts,
        loss_from=loss_from,
        loss0=L0,
        forward_seconds=seconds,
        entries=entries,
        seed=seed,
        num_layers=L,
        cost_weights={name: _cost_weight(s, L) for name, s in starts.items()},
    )


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


def run_gradcheck(
    plan: GradcheckPlan, step: float = STEP, on_entry: Callable[[str], None] | None = None
) -> list[TensorCheck]:
    """Compare analytic and finite-difference gradients on the plan's entries; `on_entry(name)`
    is called after each entry (a progress bar's hook)."""
    floor = 1e-6 * max(abs(plan.loss0), 1.0)
    results = []
    for name, arr in plan.tensors.items():
        grad, idx, start = plan.analytic[name], plan.indices[name], plan.starts[name]
        flat = arr.reshape(-1)  # a view: perturbations act on the arrays the loss reads
        rel, ab, num = [], [], []
        for j in idx:
            n = central_difference(lambda s=start: plan.loss_from(s), flat, j, step)
            a = float(grad.reshape(-1)[j])
            num.append(n)
            ab.append(abs(a - n))
            rel.append(abs(a - n) / max(abs(a), abs(n), floor))
            if on_entry is not None:
                on_entry(name)
        w = int(np.argmax(rel))
        shape = arr.shape if name != "x" else (arr.shape[1], arr.shape[0], *arr.shape[2:])
        worst = np.unravel_index(idx[w], arr.shape)
        if name == "x":  # perturbed time-major (T, B, I), reported batch-first (B, T, I)
            worst = (worst[1], worst[0], *worst[2:])
        results.append(
            TensorCheck(
                name=name,
                shape=tuple(shape),
                checked=len(idx),
                max_rel_error=float(rel[w]),
                max_abs_error=float(max(ab)),
                worst_index=tuple(int(v) for v in worst),
                worst_analytic=float(grad.reshape(-1)[idx[w]]),
                worst_numeric=float(num[w]),
            )
        )
    return results


def check_gradients(
    problem: Problem, samples: int | None = DEFAULT_ENTRIES, seed: int = 0, step: float = STEP
) -> list[TensorCheck]:
    """Compare analytic and finite-difference gradients on `samples` entries per tensor
    (None: every entry)."""
    return run_gradcheck(plan_gradcheck(problem, samples, seed), step)
