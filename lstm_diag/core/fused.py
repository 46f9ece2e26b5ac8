"""The fused engine: `engine.layer_forward` and BPTT with each step's element-wise work in
one numba kernel (core/fused_kernels.py); the GEMMs stay in BLAS through NumPy.

Same interface and results as the NumPy engine it stands in for (the reference and the
fallback): the backward kernel repeats the NumPy engine's arithmetic operation for
operation (bitwise equal given the same gates), the forward differs only through the
kernels' own exp and tanh (about 1 ulp). Importing this module imports numba; nothing
else in the package does, so it is imported only once the fused engine is selected
(core/backends.py). Pure computation: no I/O, no printing.
"""

from __future__ import annotations

import numpy as np

from .engine import LayerCache, LayerGrads, _Guard, _negated_transpose
from .fused_guard import PEAK
from .fused_kernels import KERNELS, gate_pass, state_pass, sum_squares


def layer_forward(
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b: np.ndarray | None,
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> LayerCache:
    """`engine.layer_forward` with one kernel call per step (no projection). x (T, B, I);
    b (4H,) or None (bias=False)."""
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = W_hh.dtype
    forward_step = KERNELS[dt][0]
    gates = np.empty((T, B, 4 * H), dt)  # a_t = -z_t until step t's kernel writes [i|f|g|o]
    np.matmul(x.reshape(T * B, I), np.negative(W_ih.T), gates.reshape(T * B, 4 * H))  # (T*B, I) @ (I, 4H)
    if b is not None:
        gates -= b  # a = -(W_ih x_t + b_ih + b_hh), eq. (1) negated
    c = np.empty((T + 1, B, H), dt)
    h = np.empty((T + 1, B, H), dt)
    c[0] = 0.0 if c0 is None else c0
    h[0] = 0.0 if h0 is None else h0
    tanh_c = np.empty((T, B, H), dt)
    neg_W_hh_T = _negated_transpose(W_hh)  # (H, 4H)
    rec = np.empty((B, 4 * H), dt)  # -W_hh h_{t-1}
    h_ = list(h)
    for t in range(T):
        np.matmul(h_[t], neg_W_hh_T, rec)  # (B, H) @ (H, 4H)
        forward_step(gates, rec, c, h, tanh_c, t)  # eqs. (1)-(7)
    return LayerCache(x=x, gates=gates, c=c, h=h, tanh_c=tanh_c)


def layer_backward_scaled(
    W_hh: np.ndarray,
    cache: LayerCache,
    dh_in: np.ndarray,
    active: np.ndarray,
    dh_next: np.ndarray | None,
    dc_next: np.ndarray | None,
) -> tuple[LayerGrads, list[int]]:
    """`engine._layer_backward` (subnormal guard included, same decisions) with one kernel
    call per step: results still scaled by 2^exps[t]; the engine's `_unscale` finishes."""
    gates = cache.gates
    T, B, H4 = gates.shape
    H = H4 // 4
    dt = gates.dtype
    backward_step = KERNELS[dt][1]
    dz = np.empty_like(gates)  # (T, B, 4H)
    dh = np.empty((T, B, H), dt)  # dh[t-1] receives W_hh^T δz_t from step t
    dc = np.empty((T, B, H), dt)
    dh0 = np.empty((B, H), dt)
    carry = np.zeros((B, H), dt) if dc_next is None else np.array(dc_next, dt)  # δc_{t+1} ⊙ f_{t+1}
    dh[T - 1] = 0.0 if dh_next is None else dh_next
    guard = _Guard(dt, (B, H), PEAK[dt])  # the subnormal guard, as engine._layer_backward
    e, exps = 0, [0] * T
    dh_, dz_, dh_in_ = list(dh), list(dz), list(dh_in)
    dh_out_ = [dh0] + dh_[:-1]  # where step t's W_hh^T δz_t goes
    active, due = active.tolist(), guard.due(active)
    c = cache.c  # c[t] = c_{t-1} of step t
    tanh_c = cache.tanh_c
    for t in range(T - 1, -1, -1):
        if e or due[t]:  # subnormal guard; eq. (8): δh_t = ∂ℓ/∂h_t + W_hh^T δz_{t+1}
            e = guard.enter(T - 1 - t, dh_[t], carry, dh_in_[t] if active[t] else None)
        backward_step(gates, c, tanh_c, dh, carry, dc, dz, t)  # eqs. (9)-(13)
        np.matmul(dz_[t], W_hh, dh_out_[t])  # (B, 4H) @ (4H, H): W_hh^T δz_t, into δh_{t-1}
        exps[t] = e
    return LayerGrads(dc=dc, dh=dh, dz=dz, dh0=dh0, dc0=carry), exps


def warm_up(dtype: np.dtype) -> None:
    """Compile (or load from the cache) both kernels for one dtype, on a tiny problem."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    T, B, I, H = 2, 1, 1, 1
    W_ih, W_hh = rng.normal(size=(4 * H, I)).astype(dt), rng.normal(size=(4 * H, H)).astype(dt)
    cache = layer_forward(W_ih, W_hh, np.zeros(4 * H, dt), rng.normal(size=(T, B, I)).astype(dt))
    grads, _ = layer_backward_scaled(W_hh, cache, np.ones((T, B, H), dt), np.ones(T, bool), None, None)
    diagnostics_warm_up(cache, grads)


def diagnostics_warm_up(cache: LayerCache, grads: LayerGrads) -> None:
    """Compile (or load) the diagnostic passes for the cache's dtype."""
    T, B, H4 = cache.gates.shape
    H = H4 // 4
    dt = cache.gates.dtype
    lo, hi = np.zeros(H4, dt), np.ones(H4, dt)
    state, counts = np.zeros(10), np.zeros(H4, np.int64)
    steps, hist = np.empty((T, 4), np.int64), np.zeros(50, np.int64)
    a = cache.gates.reshape(T * B, H4)
    e64, log_u = dt != np.float32, np.zeros(H)
    gate_pass(a, B, lo, hi, 1, e64, state, counts, counts.copy(), steps, hist, log_u, a.copy())
    sum_squares(grads.dc.reshape(T * B, H), np.empty(T * B))
    c = cache.c[1:].reshape(T, B * H)
    state_pass(c, c, cache.tanh_c.reshape(T, B * H), dt.type(0.99), np.empty(T), np.empty(T, bool))
