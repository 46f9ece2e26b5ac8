"""Exact LSTM forward pass and backpropagation through time, in NumPy.

The math is docs/equations.md; comments cite its numbers (1)-(16), which follow
theory.md §1.1 and §4.1. Parameter names, shapes and gate order (i, f, g, o) are
PyTorch's `nn.LSTM` (weight_ih_l{k} (4H, I), weight_hh_l{k} (4H, H), bias_ih_l{k},
bias_hh_l{k}); a linear head `head.weight` (O, H), `head.bias` (O) reads the top
layer's h. Initial states are zero.

Shapes: T time steps, B batch, I input size, H hidden size, O output size. Inputs
and targets are batch-first like `batch_first=True`; inside, arrays are
time-major, so that one time step is one contiguous (B, ·) block.

No I/O and no printing here: this module only computes. How fast, where the time goes,
and the subnormal guard of the backward pass: docs/performance.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GATES = ("i", "f", "g", "o")
LOSSES = ("mse", "cross_entropy")
TARGETS = ("last", "all")


@dataclass(frozen=True)
class Spec:
    """Architecture: what the parameter shapes follow from."""

    input_size: int
    hidden_size: int
    num_layers: int
    output_size: int

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """PyTorch names and shapes, in `nn.LSTM` order, then the head."""
        H, shapes = self.hidden_size, {}
        for k in range(self.num_layers):
            in_k = self.input_size if k == 0 else H
            shapes[f"weight_ih_l{k}"] = (4 * H, in_k)
            shapes[f"weight_hh_l{k}"] = (4 * H, H)
            shapes[f"bias_ih_l{k}"] = (4 * H,)
            shapes[f"bias_hh_l{k}"] = (4 * H,)
        shapes["head.weight"] = (self.output_size, H)
        shapes["head.bias"] = (self.output_size,)
        return shapes


@dataclass
class LayerCache:
    """What one layer's forward pass keeps for backward (time-major)."""

    x: np.ndarray  # (T, B, I_k)  the layer's input
    gates: np.ndarray  # (T, B, 4H)  activations [i | f | g | o], eqs. (2)-(5)
    c: np.ndarray  # (T+1, B, H)  c[0] = c_0, c[t+1] = c_t of eq. (6)
    h: np.ndarray  # (T+1, B, H)  h[0] = h_0, h[t+1] = h_t of eq. (7)
    tanh_c: np.ndarray  # (T, B, H)  tanh(c_t)

    def gate(self, name: str) -> np.ndarray:
        """One gate's activations, (T, B, H), a view."""
        T, B, H4 = self.gates.shape
        return self.gates.reshape(T, B, 4, H4 // 4)[:, :, GATES.index(name)]


@dataclass
class Forward:
    layers: list[LayerCache]
    y_hat: np.ndarray  # (B, O) for target "last", (B, T, O) for "all"
    loss: float
    dy_hat: np.ndarray  # dL/dy_hat, same shape as y_hat


@dataclass
class LayerGrads:
    """Total derivatives of the loss for one layer, time-major."""

    dc: np.ndarray  # (T, B, H)  dL/dc_t, eq. (9)
    dh: np.ndarray  # (T, B, H)  dL/dh_t, eq. (8)
    dz: np.ndarray  # (T, B, 4H) dL/dz_t, eqs. (10)-(13)
    dh0: np.ndarray  # (B, H)    dL/dh_0
    dc0: np.ndarray  # (B, H)    dL/dc_0


@dataclass
class Backward:
    params: dict[str, np.ndarray]  # dL/dθ under PyTorch names
    layers: list[LayerGrads]
    dx: np.ndarray  # (T, B, I)  dL/dx_t of the network input


def sigmoid_(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e^-a), in place; e^-a may overflow to inf, giving exactly 0."""
    np.negative(a, out=a)
    np.exp(a, out=a)
    a += 1.0
    np.reciprocal(a, out=a)
    return a


# ---------------------------------------------------------------------------- forward


def _negated_transpose(W: np.ndarray, tile: int = 64) -> np.ndarray:
    """-W^T as a new C-contiguous array, copied in tiles: a plain transposed copy of a
    (2048, 512) matrix walks memory with a 2-4 KB stride and takes 4x longer."""
    R, C = W.shape
    out = np.empty((C, R), W.dtype)
    for r in range(0, C, tile):
        for c in range(0, R, tile):
            np.negative(W[c : c + tile, r : r + tile].T, out[r : r + tile, c : c + tile])
    return out


def layer_forward(
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> LayerCache:
    """One LSTM layer over all steps. x (T, B, I); b = b_ih + b_hh (4H,).

    The pre-activations are built negated, a_t = -z_t, so that σ(z) = 1 / (1 + e^-a)
    is three in-place passes over the whole 4H block. Negating a weight is exact and
    round-to-nearest is symmetric, so a_t is bitwise -z_t.
    """
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = W_hh.dtype
    gates = np.empty((T, B, 4 * H), dt)  # holds a_t = -z_t until step t turns it into [i|f|g|o]
    # Input part of eq. (1) for every step at once: one GEMM over (T*B) rows.
    np.matmul(x.reshape(T * B, I), np.negative(W_ih.T), gates.reshape(T * B, 4 * H))  # (T*B, I) @ (I, 4H)
    gates -= b  # a = -(W_ih x_t + b_ih + b_hh)
    c = np.empty((T + 1, B, H), dt)
    h = np.empty((T + 1, B, H), dt)
    c[0] = 0.0 if c0 is None else c0
    h[0] = 0.0 if h0 is None else h0
    tanh_c = np.empty((T, B, H), dt)
    neg_W_hh_T = _negated_transpose(W_hh)  # (H, 4H)
    rec = np.empty((B, 4 * H), dt)  # -W_hh h_{t-1}
    z_g = np.empty((B, H), dt)
    ig = np.empty((B, H), dt)
    # Per-step views made once, outside the loop (no allocation inside it).
    a_, c_, h_, tanh_c_ = list(gates), list(c), list(h), list(tanh_c)
    i_, f_, g_, o_ = (list(gates[:, :, k * H : (k + 1) * H]) for k in range(4))  # (B, H) each
    with np.errstate(over="ignore"):  # e^-a = inf gives σ = 0 exactly
        for t in range(T):
            a = a_[t]  # (B, 4H)
            np.matmul(h_[t], neg_W_hh_T, rec)  # (B, H) @ (H, 4H)
            a += rec  # eq. (1), negated: a = -z_t
            np.negative(g_[t], z_g)  # z_t^g (the g block still holds -z_t^g)
            np.exp(a, a)
            a += 1.0
            np.reciprocal(a, a)  # eqs. (2), (3), (5) on the whole block (g is overwritten next)
            np.tanh(z_g, g_[t])  # eq. (4)
            np.multiply(f_[t], c_[t], c_[t + 1])
            np.multiply(i_[t], g_[t], ig)
            c_[t + 1] += ig  # eq. (6)
            np.tanh(c_[t + 1], tanh_c_[t])
            np.multiply(o_[t], tanh_c_[t], h_[t + 1])  # eq. (7)
    return LayerCache(x=x, gates=gates, c=c, h=h, tanh_c=tanh_c)


def head_forward(W: np.ndarray, b: np.ndarray, h_top: np.ndarray, target: str) -> np.ndarray:
    """Linear head on the top layer's h (T+1, B, H): (B, O) or (B, T, O)."""
    if target == "last":
        return h_top[-1] @ W.T + b  # (B, H) @ (H, O)
    return np.swapaxes(h_top[1:] @ W.T + b, 0, 1)  # (T, B, O) -> (B, T, O)


def loss_and_grad(y_hat: np.ndarray, y: np.ndarray, loss: str) -> tuple[float, np.ndarray]:
    """Loss value and dL/dy_hat.

    mse: mean over all elements of (y_hat - y)^2, as `F.mse_loss`.
    cross_entropy: y_hat holds logits (..., O), y integer class ids (...); mean over
    samples (and steps for target "all"), as `F.cross_entropy`.
    """
    if loss == "mse":
        r = y_hat - np.asarray(y, y_hat.dtype)  # float32 stays float32 whatever y is
        return float(np.mean(r * r)), (2.0 / r.size) * r
    O = y_hat.shape[-1]
    logits = y_hat.reshape(-1, O)  # (N, O)
    ids = y.reshape(-1)
    N = logits.shape[0]
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    log_p = logits - m - np.log(s)  # log softmax, (N, O)
    L = -float(np.mean(log_p[np.arange(N), ids]))
    d = e / s
    d[np.arange(N), ids] -= 1.0
    d /= N
    return L, d.reshape(y_hat.shape)


def forward(
    params: dict[str, np.ndarray],
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    loss: str = "mse",
    target: str = "last",
) -> Forward:
    """Forward pass of the stacked LSTM and head, and the loss. x (B, T, I) batch-first."""
    dt = params["weight_hh_l0"].dtype
    inp = np.ascontiguousarray(np.swapaxes(np.asarray(x, dt), 0, 1))  # (T, B, I)
    layers = []
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(spec.num_layers):
            b = params[f"bias_ih_l{k}"] + params[f"bias_hh_l{k}"]
            cache = layer_forward(params[f"weight_ih_l{k}"], params[f"weight_hh_l{k}"], b, inp)
            layers.append(cache)
            inp = cache.h[1:]  # (T, B, H) feeds the layer above
        y_hat = head_forward(params["head.weight"], params["head.bias"], layers[-1].h, target)
        L, dy_hat = loss_and_grad(y_hat, y, loss)
    return Forward(layers=layers, y_hat=y_hat, loss=L, dy_hat=dy_hat)


# --------------------------------------------------------------------------- backward


# Local derivatives are computed for a chunk of steps at a time, just before the steps
# are used: about this many elements of (steps, B, 4H), so that a chunk stays in cache.
_CHUNK = 1 << 15

# Subnormal guard. When gradients vanish, BPTT walks down into subnormal numbers, whose
# arithmetic is 10-60x slower on x86 (GEMMs most). So the state carried into each step
# (W_hh^T δz_{t+1} and δc_{t+1} ⊙ f_{t+1}) is kept scaled by 2^e, e >= 0: e is raised when
# the state's largest entry falls below 2^_GUARD_BITS times the smallest normal number
# (checked every _GUARD_EVERY steps, and every step while e > 0), lowered when it grows
# past 2^_GUARD_BITS or when a step's direct term dL/dh_t would not fit; what a step
# stores is scaled back by 2^-e at the end. Scaling by a power of two is exact: results
# are bitwise those of the unscaled recursion while it stays normal, and more accurate
# once it would not.
_GUARD_EVERY = 8  # steps between checks of the state's size while unscaled
_GUARD_BITS = 64  # headroom above the subnormal range, and the largest scaled size, in binades


def layer_backward(
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    cache: LayerCache,
    dh_in: np.ndarray,
    dh_next: np.ndarray | None = None,
    dc_next: np.ndarray | None = None,
) -> LayerGrads:
    """BPTT through one layer, eqs. (8)-(13), newest step first.

    dh_in (T, B, H): the direct part of dL/dh_t (from the head and the layer above).
    dh_next, dc_next (B, H): W_hh^T δz_{T+1} and δc_{T+1} ⊙ f_{T+1} entering from
    after the last step (zero for a whole sequence; set for a segment of one).
    """
    T = cache.gates.shape[0]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        active = dh_in.reshape(T, -1).any(axis=1)  # steps with a direct term (NaN counts)
        lg, exps = _layer_backward(W_hh, cache, dh_in, active, dh_next, dc_next)
        _unscale(lg, exps)
    return lg


def _layer_backward(
    W_hh: np.ndarray,
    cache: LayerCache,
    dh_in: np.ndarray,
    active: np.ndarray,
    dh_next: np.ndarray | None,
    dc_next: np.ndarray | None,
) -> tuple[LayerGrads, list[int]]:
    """`layer_backward` before scaling back: dc[t], dh[t], dz[t] come scaled by
    2^exps[t] (dh0, dc0 by 2^exps[0]); `_unscale` finishes. `active` (T,) bool tells
    which steps have dh_in[t] != 0; the other steps of dh_in are not read."""
    gates = cache.gates
    T, B, H4 = gates.shape
    H = H4 // 4
    dt = gates.dtype
    g4 = gates.reshape(T, B, 4, H)
    i, f, g, o = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]  # (T, B, H) views
    c_prev = cache.c[:-1]  # (T, B, H)  c_{t-1}
    tanh_c = cache.tanh_c
    dz = np.empty_like(gates)  # (T, B, 4H); holds the local derivatives until step t scales them
    dz4 = dz.reshape(T, B, 4, H)
    dh = np.empty((T, B, H), dt)  # dh[t-1] receives W_hh^T δz_t from step t
    dc = np.empty((T, B, H), dt)
    dh0 = np.empty((B, H), dt)
    dc_carry = np.zeros((B, H), dt) if dc_next is None else np.array(dc_next, dt)  # δc_{t+1} ⊙ f_{t+1}
    dh[T - 1] = 0.0 if dh_next is None else dh_next
    K = max(1, min(T, _CHUNK // (B * H4)))  # steps per chunk
    dh_dc = np.empty((K, B, H), dt)  # ∂h_t/∂c_t = o_t ⊙ (1 - tanh² c_t) of one chunk
    scaled_in = np.empty((B, H), dt)
    fi = np.finfo(dt)
    guard_below = float(np.ldexp(fi.tiny, _GUARD_BITS))
    guard_above = float(np.ldexp(1.0, _GUARD_BITS))
    e, exps = 0, [0] * T
    # Per-step views made once, outside the loop (no allocation inside it).
    dh_, dc_, dz_, f_, dh_in_ = list(dh), list(dc), list(dz), list(f), list(dh_in)
    dz_ifg_, dz_o_ = list(dz4[:, :, :3]), list(dz4[:, :, 3])  # (B, 3, H), (B, H)
    dc_b_ = list(dc[:, :, None, :])  # (B, 1, H), broadcast over the i, f, g blocks
    dh_out_ = [dh0] + dh_[:-1]  # where step t's W_hh^T δz_t goes
    dh_dc_ = list(dh_dc)
    active = active.tolist()
    for t1 in range(T, 0, -K):
        t0 = max(0, t1 - K)
        # Local derivatives of steps t0..t1-1, vectorized over the chunk (4H block where possible).
        L, L4, A = dz[t0:t1], dz4[t0:t1], gates[t0:t1]  # (n, B, 4H)
        np.subtract(1.0, A, L)
        L *= A  # σ'(z) = σ(1 - σ) for i, f, o (the g block is replaced next)
        np.multiply(g[t0:t1], g[t0:t1], L4[:, :, 2])
        np.subtract(1.0, L4[:, :, 2], L4[:, :, 2])  # tanh'(z_g) = 1 - g²
        L4[:, :, 0] *= g[t0:t1]  # ∂c/∂z_i = g i(1-i)       for eq. (10)
        L4[:, :, 1] *= c_prev[t0:t1]  # ∂c/∂z_f = c_{t-1} f(1-f)  for eq. (11)
        L4[:, :, 2] *= i[t0:t1]  # ∂c/∂z_g = i (1-g²)      for eq. (12)
        L4[:, :, 3] *= tanh_c[t0:t1]  # ∂h/∂z_o = tanh(c) o(1-o) for eq. (13)
        q = dh_dc[: t1 - t0]
        np.multiply(tanh_c[t0:t1], tanh_c[t0:t1], q)
        np.subtract(1.0, q, q)
        q *= o[t0:t1]  # ∂h_t/∂c_t = o (1 - tanh² c)
        for t in range(t1 - 1, t0 - 1, -1):
            dh_t, dc_t = dh_[t], dc_[t]
            if e or (T - 1 - t) % _GUARD_EVERY == 0:  # subnormal guard, on the state entering step t
                m = max(dc_carry.max(), -dc_carry.min(), dh_t.max(), -dh_t.min())
                if 0.0 < m < guard_below or (e and m > guard_above):
                    k = max(-int(np.frexp(m)[1]), -e)  # m 2^k in [0.5, 1), never below the true scale
                    e += _rescale(min(k, fi.maxexp - 2), dh_t, dc_carry)
            if active[t]:  # eq. (8): δh_t = ∂ℓ/∂h_t + W_hh^T δz_{t+1}
                if e:  # the direct term must fit at the current scale; lower the scale if not
                    d = dh_in_[t]
                    m = max(d.max(), -d.min())
                    if m > 0.0:
                        k = max(-int(np.frexp(m)[1]), 0) - e
                        if k < 0:
                            e += _rescale(k, dh_t, dc_carry)
                    dh_t += np.ldexp(d, e, scaled_in) if e else d
                else:
                    dh_t += dh_in_[t]
            np.multiply(dh_t, dh_dc_[t - t0], dc_t)
            dc_t += dc_carry  # eq. (9): δc_t = δh_t ⊙ o_t ⊙ (1 - tanh² c_t) + δc_{t+1} ⊙ f_{t+1}
            dz_ifg_[t] *= dc_b_[t]  # eqs. (10)-(12), (B, 3, H)
            dz_o_[t] *= dh_t  # eq. (13)
            np.matmul(dz_[t], W_hh, dh_out_[t])  # (B, 4H) @ (4H, H): W_hh^T δz_t, into δh_{t-1}
            np.multiply(dc_t, f_[t], dc_carry)  # δc_t ⊙ f_t
            exps[t] = e
    return LayerGrads(dc=dc, dh=dh, dz=dz, dh0=dh0, dc0=dc_carry), exps


def _rescale(k: int, *state: np.ndarray) -> int:
    """Multiply the state by 2^k in place (exact, barring over/underflow); returns k."""
    for a in state:
        np.ldexp(a, k, a)
    return k


def _blocks(exps: list[int]) -> list[tuple[int, int, int]]:
    """Runs of equal exponent: (t0, t1, e) for steps t0..t1-1."""
    out, t0 = [], 0
    for t in range(1, len(exps) + 1):
        if t == len(exps) or exps[t] != exps[t0]:
            out.append((t0, t, exps[t0]))
            t0 = t
    return out


def _unscale(lg: LayerGrads, exps: list[int]) -> None:
    """Scale back, in place, what `_layer_backward` stored at exponent e != 0."""
    for t0, t1, e in _blocks(exps):
        if e:
            for a in (lg.dc[t0:t1], lg.dh[t0:t1], lg.dz[t0:t1]):
                np.ldexp(a, -e, a)
    if exps[0]:
        np.ldexp(lg.dh0, -exps[0], lg.dh0)
        np.ldexp(lg.dc0, -exps[0], lg.dc0)


def _param_grads(
    dz: np.ndarray, x: np.ndarray, h_prev: np.ndarray, W_ih: np.ndarray, exps: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eqs. (14)-(16) and dL/dx_t = W_ih^T δz_t as single GEMMs over (T*B) rows; one set
    per run of equal exponent if the subnormal guard scaled dz (still scaled here)."""
    T, B, H4 = dz.shape
    I = x.shape[2]
    H = h_prev.shape[2]
    blocks = _blocks(exps)
    dW_ih = np.zeros((H4, I), dz.dtype)
    dW_hh = np.zeros((H4, H), dz.dtype)
    db = np.zeros(H4, dz.dtype)
    dx = np.empty((T, B, I), dz.dtype)
    for t0, t1, e in blocks:
        n = (t1 - t0) * B
        dz_b = dz[t0:t1].reshape(n, H4)  # (n, 4H)
        parts = (
            dz_b.T @ x[t0:t1].reshape(n, I),  # (4H, n) @ (n, I)    eq. (14)
            dz_b.T @ h_prev[t0:t1].reshape(n, H),  # (4H, n) @ (n, H)  eq. (15)
            np.ones(n, dz.dtype) @ dz_b,  # (n,) @ (n, 4H)  eq. (16), a multithreaded GEMV
        )
        np.matmul(dz_b, W_ih, dx[t0:t1].reshape(n, I))  # (n, 4H) @ (4H, I): W_ih^T δz_t
        if len(blocks) == 1 and not e:
            return parts + (dx,)
        for acc, part in zip((dW_ih, dW_hh, db), parts, strict=True):
            acc += np.ldexp(part, -e, part)
        np.ldexp(dx[t0:t1], -e, dx[t0:t1])
    return dW_ih, dW_hh, db, dx


@dataclass
class LayerBackward:
    """One layer's BPTT and its parameter gradients (eqs. 8-16)."""

    grads: LayerGrads
    dW_ih: np.ndarray  # (4H, I_k)  eq. (14)
    dW_hh: np.ndarray  # (4H, H)    eq. (15)
    db: np.ndarray  # (4H,)         eq. (16), for bias_ih and bias_hh alike
    dx: np.ndarray  # (T, B, I_k)   dL/dx_t = W_ih^T δz_t, the dh_in of the layer below


def layer_backward_full(
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    cache: LayerCache,
    dh_in: np.ndarray,
    dh_next: np.ndarray | None = None,
    dc_next: np.ndarray | None = None,
    active: np.ndarray | None = None,
) -> LayerBackward:
    """`layer_backward` plus the layer's parameter gradients and dL/dx_t, as `backward` computes
    them (GEMMs on the guard-scaled dz, so vanished gradients stay fast and exact).

    active (T,) bool: steps with a nonzero dh_in (None: found from dh_in).
    """
    T = cache.gates.shape[0]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if active is None:
            active = dh_in.reshape(T, -1).any(axis=1)  # steps with a direct term (NaN counts)
        lg, exps = _layer_backward(W_hh, cache, dh_in, active, dh_next, dc_next)
        dW_ih, dW_hh, db, dx = _param_grads(lg.dz, cache.x, cache.h[:-1], W_ih, exps)
        _unscale(lg, exps)
    return LayerBackward(lg, dW_ih, dW_hh, db, dx)


def backward(params: dict[str, np.ndarray], spec: Spec, fwd: Forward, target: str) -> Backward:
    """Gradients of every parameter and the total dL/dc_t, dL/dh_t of every layer."""
    top = fwd.layers[-1]
    T, B, H = top.tanh_c.shape
    W_head = params["head.weight"]  # (O, H)
    dt = W_head.dtype
    grads: dict[str, np.ndarray] = {}
    dy = np.asarray(fwd.dy_hat, dt)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if target == "last":
            grads["head.weight"] = dy.T @ top.h[-1]  # (O, B) @ (B, H)
            grads["head.bias"] = dy.sum(axis=0)
            dh_in = np.zeros((T, B, H), dt)  # untouched pages cost nothing
            dh_in[-1] = dy @ W_head  # (B, O) @ (O, H)
            active = np.arange(T) == T - 1
        else:
            dy_t = np.swapaxes(dy, 0, 1).reshape(T * B, -1)  # (T*B, O)
            grads["head.weight"] = dy_t.T @ top.h[1:].reshape(T * B, H)
            grads["head.bias"] = dy_t.sum(axis=0)
            dh_in = (dy_t @ W_head).reshape(T, B, H)
            active = dy.any(axis=(0, 2))  # (T,)
        layer_grads: list[LayerGrads] = [None] * spec.num_layers  # type: ignore[list-item]
        for k in range(spec.num_layers - 1, -1, -1):
            W_ih, W_hh = params[f"weight_ih_l{k}"], params[f"weight_hh_l{k}"]
            lb = layer_backward_full(W_ih, W_hh, fwd.layers[k], dh_in, active=active)
            layer_grads[k], dh_in = lb.grads, lb.dx
            grads[f"weight_ih_l{k}"] = lb.dW_ih  # eq. (14)
            grads[f"weight_hh_l{k}"] = lb.dW_hh  # eq. (15)
            grads[f"bias_ih_l{k}"] = lb.db  # eq. (16)
            grads[f"bias_hh_l{k}"] = lb.db.copy()
            active = np.ones(T, bool)  # dh_in = dL/dx_t of this layer, for the layer below
    ordered = {name: grads[name] for name in spec.param_shapes()}
    return Backward(params=ordered, layers=layer_grads, dx=dh_in)


def last_step_term(dy_hat: np.ndarray) -> np.ndarray:
    """dL/dy_hat of the last step's loss term alone, for target "all" (B, T, O): the rest zero.
    Backpropagating it shows how far one loss term's gradient travels back."""
    dy = np.zeros_like(dy_hat)
    dy[:, -1] = dy_hat[:, -1]
    return dy


def last_term_backward(params: dict[str, np.ndarray], spec: Spec, fwd: Forward) -> Backward:
    """BPTT of the last step's loss term alone (target "all")."""
    only_last = Forward(layers=fwd.layers, y_hat=fwd.y_hat, loss=fwd.loss, dy_hat=last_step_term(fwd.dy_hat))
    return backward(params, spec, only_last, "all")


def run(
    params: dict[str, np.ndarray],
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    loss: str = "mse",
    target: str = "last",
) -> tuple[Forward, Backward]:
    """Forward and backward in one call."""
    fwd = forward(params, spec, x, y, loss, target)
    return fwd, backward(params, spec, fwd, target)


def loss_only(
    params: dict[str, np.ndarray],
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    loss: str = "mse",
    target: str = "last",
) -> float:
    """The loss alone (what finite differences perturb)."""
    return forward(params, spec, x, y, loss, target).loss
