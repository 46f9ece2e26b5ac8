"""Per-step summaries of one forward + BPTT pass, from full caches or in bounded memory.

`analyze` needs, per layer, only summaries over time: ||dL/dc_t||, ||dL/dh_t||, ||dL/dz_t||
per gate, running gate statistics, cell-state extremes, where numbers stopped being
finite; and the parameter gradients. Two ways to get them, with the same results:

- `trace_full`: from the engine's full caches (memory ~ 20 T B H numbers per layer).
- `trace_checkpointed`: gradient checkpointing. The forward pass keeps only the states
  (h, c) of every layer at the start of each segment of S ~ sqrt(T) steps; backward
  walks the segments from the last, recomputes each segment's caches from its stored
  states, and runs BPTT through it with the carries dL/dh, dL/dc ⊙ f entering from the
  segment after (engine.layer_backward's dh_next, dc_next). Memory ~ sqrt(T) instead of
  T; about one extra forward pass of time. dL/dc_t, dL/dh_t are bitwise the same as the
  full path; parameter gradients are summed per segment, so they agree to round-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core import engine
from ..core.diagnostics import GateAccumulator, count_abs_above, frob_over_time, gate_grad_norms

TANH_SATURATED = 0.99  # |tanh c| above this: 1 - tanh^2 c < 0.02


@dataclass
class LayerTrace:
    T: int
    gates: GateAccumulator
    grad_c_norm: np.ndarray = None  # (T,)
    grad_h_norm: np.ndarray = None  # (T,)
    grad_z_norm: np.ndarray = None  # (T, 4) in gate order i, f, g, o
    flow_grad_c_norm: np.ndarray | None = None  # (T,) last step's loss term alone (target "all")
    max_abs_c: float = 0.0
    tanh_saturated: int = 0  # count of |tanh c_t| > 0.99
    entries: int = 0
    first_nonfinite_state: int | None = None  # 0-based step where c_t or h_t is not finite
    first_nonfinite_z: int | None = None  # 0-based step where z_t (eq. 1) is not finite
    max_abs_c_before: float = 0.0  # max |c| before the first non-finite step

    def __post_init__(self):
        T = self.T
        self.grad_c_norm = np.zeros(T)
        self.grad_h_norm = np.zeros(T)
        self.grad_z_norm = np.zeros((T, 4))


@dataclass
class Trace:
    loss: float
    grads: dict[str, np.ndarray]
    layers: list[LayerTrace]
    memory: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- pieces


def _z_overflow(W_ih, W_hh, b, x, h_prev) -> int | None:
    """0-based first step whose pre-activation z_t is not finite, or None.

    On ±inf the gates saturate to exactly 0 or 1, so c_t and h_t can stay finite while z_t
    overflowed. z is recomputed only when the bound |z| <= ||W_ih||_∞ max|x| + ||W_hh||_∞
    + max|b| (|h| <= 1) says overflow is possible at all.
    """
    bound = (
        np.abs(W_ih).sum(axis=1).max() * np.abs(x).max() + np.abs(W_hh).sum(axis=1).max() + np.abs(b).max()
    )
    if np.isfinite(bound) and bound < np.finfo(W_ih.dtype).max:
        return None
    z = x @ W_ih.T + b + h_prev @ W_hh.T  # (T, B, 4H), only for this check
    ok = np.isfinite(z).all(axis=(1, 2))
    return None if ok.all() else int(np.argmin(ok))


def _observe_forward(lt: LayerTrace, cache: engine.LayerCache, t0: int, W_ih, W_hh, b) -> None:
    """Fold one segment's forward caches (steps t0..) into the layer's running summaries.

    Per-step reductions only (max and min over each contiguous step; NaN propagates through
    them, so a step is finite exactly when its extremes are): no full-size temporaries."""
    lt.gates.add(cache.gates)
    T_s = cache.tanh_c.shape[0]
    c = cache.c[1:].reshape(T_s, -1)  # (T_s, B*H)
    h = cache.h[1:].reshape(T_s, -1)
    abs_c = np.maximum(c.max(axis=1), -c.min(axis=1)) if c.size else np.zeros(T_s)  # (T_s,) max |c_t|
    lt.max_abs_c = max(lt.max_abs_c, float(np.max(abs_c)) if abs_c.size else 0.0)
    lt.tanh_saturated += count_abs_above(cache.tanh_c, TANH_SATURATED)
    lt.entries += cache.tanh_c.size
    if lt.first_nonfinite_state is None and lt.first_nonfinite_z is None:
        ok = np.isfinite(abs_c)
        if h.size:
            ok &= np.isfinite(h.max(axis=1)) & np.isfinite(h.min(axis=1))
        t_state = None if ok.all() else int(np.argmin(ok))
        t_z = _z_overflow(W_ih, W_hh, b, cache.x, cache.h[:-1])
        first = min(t for t in (t_state, t_z, len(ok)) if t is not None)
        if first < len(ok):
            lt.first_nonfinite_state = None if t_state is None else t0 + t_state
            lt.first_nonfinite_z = None if t_z is None else t0 + t_z
            lt.max_abs_c_before = max(lt.max_abs_c_before, float(np.max(abs_c[:first])) if first else 0.0)
        else:
            lt.max_abs_c_before = lt.max_abs_c


def _observe_backward(lt: LayerTrace, lg: engine.LayerGrads, t0: int) -> None:
    t1 = t0 + lg.dc.shape[0]
    lt.grad_c_norm[t0:t1] = frob_over_time(lg.dc)
    lt.grad_h_norm[t0:t1] = frob_over_time(lg.dh)
    lt.grad_z_norm[t0:t1] = gate_grad_norms(lg.dz)


def _layer_params(params, k):
    b = params[f"bias_ih_l{k}"] + params[f"bias_hh_l{k}"]
    return params[f"weight_ih_l{k}"], params[f"weight_hh_l{k}"], b


# ------------------------------------------------------------------------ full path


def trace_full(
    params, spec: engine.Spec, fwd: engine.Forward, bwd: engine.Backward, eps: float, flow_bwd=None
) -> Trace:
    """Summaries from full caches (flow_bwd: the last-term backward for target "all")."""
    layers = []
    for k, cache in enumerate(fwd.layers):
        lt = LayerTrace(cache.tanh_c.shape[0], GateAccumulator(spec.hidden_size, eps))
        _observe_forward(lt, cache, 0, *_layer_params(params, k))
        _observe_backward(lt, bwd.layers[k], 0)
        if flow_bwd is not None:
            lt.flow_grad_c_norm = frob_over_time(flow_bwd.layers[k].dc)
        layers.append(lt)
    return Trace(fwd.loss, bwd.params, layers, {"mode": "full"})


# ------------------------------------------------------------------ checkpointed path


def segment_length(T: int) -> int:
    return max(1, math.isqrt(T - 1) + 1) if T > 1 else 1


def _forward_segment(params, spec, x_seg, states_k):
    """All layers over one segment from the given per-layer (h, c) start states."""
    caches, inp = [], x_seg
    for k in range(spec.num_layers):
        W_ih, W_hh, b = _layer_params(params, k)
        h0, c0 = states_k[k]
        cache = engine.layer_forward(W_ih, W_hh, b, inp, h0=h0, c0=c0)
        caches.append(cache)
        inp = cache.h[1:]
    return caches


def trace_checkpointed(
    params,
    spec: engine.Spec,
    x: np.ndarray,
    y: np.ndarray,
    loss: str,
    target: str,
    eps: float,
    segment: int | None = None,
) -> Trace:
    """Forward + BPTT in O(sqrt(T)) memory; x (B, T, I) batch-first."""
    dt = params["weight_hh_l0"].dtype
    X = np.ascontiguousarray(np.swapaxes(np.asarray(x, dt), 0, 1))  # (T, B, I)
    T, B, _ = X.shape
    H, L = spec.hidden_size, spec.num_layers
    S = segment or segment_length(T)
    starts = list(range(0, T, S))
    W_head, b_head = params["head.weight"], params["head.bias"]
    layers = [LayerTrace(T, GateAccumulator(H, eps)) for _ in range(L)]
    zeros = np.zeros((B, H), dt)

    # Forward sweep: keep the start states of every segment and the head's output.
    states = []  # states[s][k] = (h, c) entering segment s at layer k
    state = [(zeros, zeros)] * L
    y_parts = []
    with np.errstate(all="ignore"):
        for t0 in starts:
            states.append(state)
            caches = _forward_segment(params, spec, X[t0 : t0 + S], state)
            for k, cache in enumerate(caches):
                _observe_forward(layers[k], cache, t0, *_layer_params(params, k))
            state = [(cache.h[-1].copy(), cache.c[-1].copy()) for cache in caches]
            if target == "all":
                y_parts.append(np.swapaxes(caches[-1].h[1:] @ W_head.T + b_head, 0, 1))  # (B, T_s, O)
        h_T = state[-1][0]
        y_hat = h_T @ W_head.T + b_head if target == "last" else np.concatenate(y_parts, axis=1)
        L_val, dy = engine.loss_and_grad(y_hat, y, loss)

    grads = _backward_sweep(params, spec, X, starts, S, states, dy, target, layers, observe=True)
    if target == "last":
        grads["head.weight"], grads["head.bias"] = dy.T @ h_T, dy.sum(axis=0)  # (O, B) @ (B, H)
    else:
        grads["head.bias"] = dy.sum(axis=(0, 1))
    if target == "all":  # flow is measured on the last step's loss term alone
        dy_last = engine.last_step_term(dy)
        flows = [np.zeros(T) for _ in range(L)]
        _backward_sweep(params, spec, X, starts, S, states, dy_last, target, layers, flows=flows)
        for lt, fl in zip(layers, flows, strict=True):
            lt.flow_grad_c_norm = fl
    ordered = {name: grads[name] for name in spec.param_shapes()}
    memory = {"mode": "checkpoint", "segment": S, "segments": len(starts)}
    return Trace(L_val, ordered, layers, memory)


def _dh_top(dy, W_head, target, t0, t1, T, B, H, dt):
    """Direct dL/dh_t of the top layer over steps t0..t1 (time-major)."""
    if target == "last":
        d = np.zeros((t1 - t0, B, H), dt)
        if t1 == T:
            d[-1] = dy @ W_head  # (B, O) @ (O, H)
        return d
    return np.swapaxes(dy[:, t0:t1] @ W_head, 0, 1)  # (T_s, B, H)


def _backward_sweep(params, spec, X, starts, S, states, dy, target, layers, observe=False, flows=None):
    T, B, _ = X.shape
    H, L = spec.hidden_size, spec.num_layers
    dt = X.dtype
    W_head = params["head.weight"]
    carry = [(None, None)] * L  # (W_hh^T δz, δc ⊙ f) entering each layer's segment from the next
    grads = {}
    with np.errstate(all="ignore"):
        for s in range(len(starts) - 1, -1, -1):
            t0 = starts[s]
            t1 = min(t0 + S, T)
            caches = _forward_segment(params, spec, X[t0:t1], states[s])
            dh_in = _dh_top(dy, W_head, target, t0, t1, T, B, H, dt)
            if observe and target == "all":  # the head reads every h_t of the top layer
                h_top = caches[-1].h[1:].reshape(-1, H)  # (T_s*B, H)
                dy_s = np.swapaxes(dy[:, t0:t1], 0, 1).reshape(-1, dy.shape[-1])  # (T_s*B, O)
                g = dy_s.T @ h_top
                grads["head.weight"] = g if "head.weight" not in grads else grads["head.weight"] + g
            new_carry = list(carry)
            for k in range(L - 1, -1, -1):
                W_ih, W_hh, _ = _layer_params(params, k)
                lb = engine.layer_backward_full(W_ih, W_hh, caches[k], dh_in, *carry[k])
                lg = lb.grads
                new_carry[k] = (lg.dh0, lg.dc0)
                if observe:
                    _observe_backward(layers[k], lg, t0)
                    for name, g in (
                        (f"weight_ih_l{k}", lb.dW_ih),  # eq. (14)
                        (f"weight_hh_l{k}", lb.dW_hh),  # eq. (15)
                        (f"bias_ih_l{k}", lb.db),  # eq. (16)
                    ):
                        grads[name] = g if name not in grads else grads[name] + g
                if flows is not None:
                    flows[k][t0:t1] = frob_over_time(lg.dc)
                dh_in = lb.dx  # dL/dx_t to the layer below
            carry = new_carry
    for k in range(L):
        if f"bias_ih_l{k}" in grads:
            grads[f"bias_hh_l{k}"] = grads[f"bias_ih_l{k}"].copy()
    return grads
