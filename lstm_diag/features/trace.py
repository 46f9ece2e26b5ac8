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
  A bidirectional layer's reverse direction needs the whole input before its first
  step, so bidirectional models are checkpointed unit by unit instead: each layer's
  input sequence (T B D R numbers) is kept, each unit's caches are recomputed per
  segment. Memory is then O(T) for those sequences, several times below the full caches.

One `LayerTrace` per unit (direction of a layer), in `engine.Spec.units()` order; a
reverse unit's per-step arrays run in its own processing order (index τ is position T-1-τ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core import engine
from ..core.diagnostics import GateAccumulator, frob_over_time, gate_grad_norms, state_extremes

TANH_SATURATED = 0.99  # |tanh c| above this: 1 - tanh^2 c < 0.02


@dataclass
class LayerTrace:
    T: int
    gates: GateAccumulator
    layer: int = 0
    direction: int = 0  # 0 forward, 1 reverse (engine.DIRECTIONS)
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


def _max_abs(a: np.ndarray):
    """max |a| (NaN if a has a NaN) from a's max and min: no |a| temporary."""
    return np.maximum(a.max(), -a.min())


def _z_overflow(p: engine.UnitParams, x, h_prev) -> int | None:
    """0-based first step whose pre-activation z_t is not finite, or None.

    On ±inf the gates saturate to exactly 0 or 1, so c_t and h_t can stay finite while z_t
    overflowed. z is recomputed only when the bound |z| <= ||W_ih||_∞ max|x| + ||W_hh||_∞
    max|h| + max|b| says overflow is possible at all.
    """
    W_ih, W_hh, b = p.W_ih, p.W_hh, p.b
    h_max = 1.0 if p.W_hr is None else _max_abs(h_prev)  # |h| <= 1 without a projection
    b_max = 0.0 if b is None else np.abs(b).max()
    bound = np.abs(W_ih).sum(axis=1).max() * _max_abs(x) + np.abs(W_hh).sum(axis=1).max() * h_max + b_max
    if np.isfinite(bound) and bound < np.finfo(W_ih.dtype).max:
        return None
    z = x @ W_ih.T + h_prev @ W_hh.T  # (T, B, 4H), only for this check
    if b is not None:
        z += b
    ok = np.isfinite(z).all(axis=(1, 2))
    return None if ok.all() else int(np.argmin(ok))


def _observe_forward(lt: LayerTrace, cache: engine.LayerCache, t0: int, p: engine.UnitParams) -> None:
    """Fold one segment's forward caches (steps t0..) into the layer's running summaries.

    Per-step reductions only (max and min over each contiguous step; NaN propagates through
    them, so a step is finite exactly when its extremes are): no full-size temporaries."""
    lt.gates.add(cache.gates)
    abs_c, h_ok, tanh_sat = state_extremes(cache.c[1:], cache.h[1:], cache.tanh_c, TANH_SATURATED)
    lt.max_abs_c = max(lt.max_abs_c, float(np.max(abs_c)) if abs_c.size else 0.0)
    lt.tanh_saturated += tanh_sat
    lt.entries += cache.tanh_c.size
    if lt.first_nonfinite_state is None and lt.first_nonfinite_z is None:
        ok = np.isfinite(abs_c) & h_ok
        t_state = None if ok.all() else int(np.argmin(ok))
        t_z = _z_overflow(p, cache.x, cache.h[:-1])
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


def _unit_traces(spec: engine.Spec, T: int, eps: float, step_means: bool = False) -> list[LayerTrace]:
    """step_means: keep each step's batch-mean gates (`GateAccumulator.step_mean`, for the heatmap)."""
    return [
        LayerTrace(T, GateAccumulator(spec.hidden_size, eps, keep_step_mean=step_means), k, d)
        for k, d in spec.units()
    ]


# ------------------------------------------------------------------------ full path


def trace_full(
    params, spec: engine.Spec, fwd: engine.Forward, bwd: engine.Backward, eps: float, flow_bwd=None
) -> Trace:
    """Summaries from full caches (flow_bwd: the last-term backward for target "all").
    A reverse unit's flow is that of the gradient entering it at t = 1 alone (`_entry_flow`)."""
    layers = _unit_traces(spec, fwd.out.shape[0], eps, step_means=True)
    for j, lt in enumerate(layers):
        p = engine.unit_params(params, lt.layer, lt.direction)
        _observe_forward(lt, fwd.layers[j], 0, p)
        _observe_backward(lt, bwd.layers[j], 0)
        if lt.direction:  # dh at its last step is what enters there: nothing comes after it
            lt.flow_grad_c_norm = frob_over_time(
                engine.entry_backward(p, fwd.layers[j], bwd.layers[j].dh[-1]).dc
            )
        elif flow_bwd is not None:
            lt.flow_grad_c_norm = frob_over_time(flow_bwd.layers[j].dc)
    return Trace(fwd.loss, bwd.params, layers, {"mode": "full"})


# ------------------------------------------------------------------ checkpointed path


def segment_length(T: int) -> int:
    return max(1, math.isqrt(T - 1) + 1) if T > 1 else 1


def _forward_segment(params, spec, x_seg, states_k):
    """All layers over one segment from the given per-layer (h, c) start states."""
    caches, inp = [], x_seg
    for k in range(spec.num_layers):
        p = engine.unit_params(params, k)
        h0, c0 = states_k[k]
        cache = engine.layer_forward(p.W_ih, p.W_hh, p.b, inp, h0=h0, c0=c0, W_hr=p.W_hr)
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
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> Trace:
    """Forward + BPTT in O(sqrt(T)) memory; x (B, T, I) batch-first, or token ids (B, T) with
    `embedding.weight` in params; h0, c0 (L D, B, ·) initial states or None (zero)."""
    dt = params["weight_hh_l0"].dtype
    tokens = None
    if "embedding.weight" in params:  # x_t = E[token_t], eq. (24)
        tokens = np.swapaxes(x, 0, 1)  # (T, B)
        x = engine.embed(params["embedding.weight"], x)
    X = np.ascontiguousarray(np.swapaxes(np.asarray(x, dt), 0, 1))  # (T, B, I)
    T, B, _ = X.shape
    H, R, L = spec.hidden_size, spec.state_size, spec.num_layers
    S = segment or segment_length(T)
    if spec.directions > 1 or tokens is not None or h0 is not None or "head.weight" not in params:
        return _trace_units_checkpointed(params, spec, X, y, loss, target, eps, S, (h0, c0), tokens)
    starts = list(range(0, T, S))
    W_head, b_head = params["head.weight"], params["head.bias"]
    layers = _unit_traces(spec, T, eps)

    # Forward sweep: keep the start states of every segment and the head's output.
    states = []  # states[s][k] = (h, c) entering segment s at layer k
    state = [(np.zeros((B, R), dt), np.zeros((B, H), dt))] * L
    y_parts = []
    with np.errstate(all="ignore"):
        for t0 in starts:
            states.append(state)
            caches = _forward_segment(params, spec, X[t0 : t0 + S], state)
            for k, cache in enumerate(caches):
                _observe_forward(layers[k], cache, t0, engine.unit_params(params, k))
            state = [(cache.h[-1].copy(), cache.c[-1].copy()) for cache in caches]
            if target == "all":
                y_parts.append(np.swapaxes(caches[-1].h[1:] @ W_head.T + b_head, 0, 1))  # (B, T_s, O)
        h_T = state[-1][0]
        y_hat = h_T @ W_head.T + b_head if target == "last" else np.concatenate(y_parts, axis=1)
        L_val, dy = engine.loss_and_grad(y_hat, y, loss)

    grads = _backward_sweep(params, spec, X, starts, S, states, dy, target, layers, observe=True)
    if target == "last":
        grads["head.weight"], grads["head.bias"] = dy.T @ h_T, dy.sum(axis=0)  # (O, B) @ (B, R)
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


def _dh_top(dy, W_head, target, t0, t1, T, B, R, dt):
    """Direct dL/dh_t of the top layer over steps t0..t1 (time-major)."""
    if target == "last":
        d = np.zeros((t1 - t0, B, R), dt)
        if t1 == T:
            d[-1] = dy @ W_head  # (B, O) @ (O, R)
        return d
    return np.swapaxes(dy[:, t0:t1] @ W_head, 0, 1)  # (T_s, B, R)


def _backward_sweep(params, spec, X, starts, S, states, dy, target, layers, observe=False, flows=None):
    T, B, _ = X.shape
    R, L = spec.state_size, spec.num_layers
    dt = X.dtype
    W_head = params["head.weight"]
    carry = [(None, None)] * L  # (W_hh^T δz, δc ⊙ f) entering each layer's segment from the next
    grads = {}
    with np.errstate(all="ignore"):
        for s in range(len(starts) - 1, -1, -1):
            t0 = starts[s]
            t1 = min(t0 + S, T)
            caches = _forward_segment(params, spec, X[t0:t1], states[s])
            dh_in = _dh_top(dy, W_head, target, t0, t1, T, B, R, dt)
            if observe and target == "all":  # the head reads every h_t of the top layer
                h_top = caches[-1].h[1:].reshape(-1, R)  # (T_s*B, R)
                dy_s = np.swapaxes(dy[:, t0:t1], 0, 1).reshape(-1, dy.shape[-1])  # (T_s*B, O)
                g = dy_s.T @ h_top
                grads["head.weight"] = g if "head.weight" not in grads else grads["head.weight"] + g
            new_carry = list(carry)
            for k in range(L - 1, -1, -1):
                p = engine.unit_params(params, k)
                lb = engine.layer_backward_full(p.W_ih, p.W_hh, caches[k], dh_in, *carry[k], W_hr=p.W_hr)
                lg = lb.grads
                new_carry[k] = (lg.dh0, lg.dc0)
                if observe:
                    _observe_backward(layers[k], lg, t0)
                    engine.store_unit_grads(grads, spec, k, 0, lb, add=True)  # eqs. (14)-(16), (19)
                if flows is not None:
                    flows[k][t0:t1] = frob_over_time(lg.dc)
                dh_in = lb.dx  # dL/dx_t to the layer below
            carry = new_carry
    return grads


# ------------------------------------------------- checkpointed, unit by unit (bidirectional)


def _trace_units_checkpointed(
    params, spec, X, y, loss, target, eps, S, s0=(None, None), tokens=None
) -> Trace:
    """Checkpointed trace of any layout, one unit at a time: each layer's input sequence is
    kept; each unit keeps its (h, c) at segment starts and recomputes a segment's caches
    in backward. X (T, B, I) time-major; s0 = (h0, c0) initial states (L D, B, ·) or None;
    tokens (T, B) when X came from the embedding (its gradient is reported); without a head
    (upstream mode) y is dL/d(top output) (B, T, D R)."""
    T = X.shape[0]
    starts = list(range(0, T, S))
    layers = _unit_traces(spec, T, eps)
    inputs, states, inp = [], {}, X  # inputs[k]: layer k's input, position order
    with np.errstate(all="ignore"):
        for k in range(spec.num_layers):
            inputs.append(inp)
            outs = []
            for d in range(spec.directions):
                j = k * spec.directions + d
                p = engine.unit_params(params, k, d)
                init = (None, None) if s0[0] is None else (s0[0][j], s0[1][j])
                states[j], h = _unit_forward(p, engine.unit_input(inp, d), starts, S, layers[j], *init)
                outs.append(engine.time_order(h, d))
            inp = np.concatenate(outs, axis=2) if len(outs) > 1 else outs[0]  # eq. (21)
        head = "head.weight" in params
        y_hat = engine.head_forward(params["head.weight"], params["head.bias"], inp, target) if head else None
        L_val, dy = engine.loss_and_grad(np.swapaxes(inp, 0, 1) if y_hat is None else y_hat, y, loss)
        grads: dict[str, np.ndarray] = {}

        def d_top(dy_hat, into):  # dL/d(top output) (T, B, D R)
            if head:
                return engine.head_backward(params["head.weight"], inp, dy_hat, target, into)[0]
            return np.ascontiguousarray(np.swapaxes(dy_hat, 0, 1))  # no head: dy is it (upstream)

        dx = _units_backward(params, spec, inputs, states, starts, S, d_top(dy, grads), layers, grads)
        if tokens is not None:
            grads["embedding.weight"] = engine.embedding_grad(
                params["embedding.weight"], tokens, dx
            )  # eq. (25)
        if target == "all":  # flow is measured on the last step's loss term alone (forward units)
            d_last = d_top(engine.last_step_term(dy), {})
            flows = [np.zeros(T) for _ in layers]
            _units_backward(params, spec, inputs, states, starts, S, d_last, layers, None, flows)
            for lt, fl in zip(layers, flows, strict=True):
                if not lt.direction:
                    lt.flow_grad_c_norm = fl
    ordered = {name: grads[name] for name in ("embedding.weight", *spec.param_shapes()) if name in grads}
    memory = {"mode": "checkpoint", "segment": S, "segments": len(starts), "scheme": "per unit"}
    return Trace(L_val, ordered, layers, memory)


def _unit_forward(p: engine.UnitParams, x, starts, S, lt: LayerTrace, h0=None, c0=None):
    """One unit over its input x (T, B, I_k) in processing order, segment by segment, from
    (h0, c0) (None: zero): ([(h, c) entering each segment], h (T, B, R) its output)."""
    T, B, _ = x.shape
    R, H = p.W_hh.shape[1], p.W_hh.shape[0] // 4
    h0 = np.zeros((B, R), x.dtype) if h0 is None else h0
    c0 = np.zeros((B, H), x.dtype) if c0 is None else c0
    states, out = [], np.empty((T, B, R), x.dtype)
    for t0 in starts:
        states.append((h0, c0))
        cache = engine.layer_forward(p.W_ih, p.W_hh, p.b, x[t0 : t0 + S], h0=h0, c0=c0, W_hr=p.W_hr)
        _observe_forward(lt, cache, t0, p)
        out[t0 : t0 + S] = cache.h[1:]
        h0, c0 = cache.h[-1].copy(), cache.c[-1].copy()
    return states, out


def _units_backward(params, spec, inputs, states, starts, S, d_out, layers, grads, flows=None):
    """BPTT through every unit, top layer first; d_out (T, B, D R): dL/d(top output).
    grads None: only the flows (per-step ||dL/dc_t|| per unit) are recorded. Returns dL/dx
    of the network's input (T, B, I), position order."""
    D = spec.directions
    for k in range(spec.num_layers - 1, -1, -1):
        dx = None
        for d, dh_d in enumerate(engine.split_directions(d_out, D)):
            j = k * D + d
            p = engine.unit_params(params, k, d)
            x = engine.unit_input(inputs[k], d)
            dx_d = _unit_backward(p, x, states[j], starts, S, dh_d, spec, (k, d), layers[j], grads, flows, j)
            if d and grads is not None:  # a reverse unit's flow: what enters at t = 1 alone
                entry = np.zeros_like(dh_d)
                entry[-1] = dh_d[-1]
                fl = [np.zeros(len(entry))]
                _unit_backward(p, x, states[j], starts, S, entry, spec, (k, d), layers[j], None, fl, 0)
                layers[j].flow_grad_c_norm = fl[0]
            dx_d = engine.time_order(dx_d, d)
            dx = dx_d if dx is None else dx + dx_d  # eq. (23)
        d_out = dx
    return d_out


def _unit_backward(p, x, states, starts, S, dh_in, spec, kd, lt, grads, flows, j):
    """One unit's BPTT, segments from the last, with the carries between them; returns
    dL/dx (T, B, I_k) in the unit's processing order."""
    T = x.shape[0]
    dx = np.empty_like(x)
    carry = (None, None)  # (W_hh^T δz, δc ⊙ f) entering the segment from the next
    for s in range(len(starts) - 1, -1, -1):
        t0 = starts[s]
        t1 = min(t0 + S, T)
        h0, c0 = states[s]
        cache = engine.layer_forward(p.W_ih, p.W_hh, p.b, x[t0:t1], h0=h0, c0=c0, W_hr=p.W_hr)
        lb = engine.layer_backward_full(p.W_ih, p.W_hh, cache, dh_in[t0:t1], *carry, W_hr=p.W_hr)
        carry = (lb.grads.dh0, lb.grads.dc0)
        if grads is not None:
            _observe_backward(lt, lb.grads, t0)
            engine.store_unit_grads(grads, spec, *kd, lb, add=True)  # eqs. (14)-(16), (19)
        if flows is not None:
            flows[j][t0:t1] = frob_over_time(lb.grads.dc)
        dx[t0:t1] = lb.dx
    return dx
