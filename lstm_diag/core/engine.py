"""Exact LSTM forward pass and backpropagation through time, in NumPy.

The math is docs/equations.md; comments cite its numbers (1)-(16) for the plain
LSTM and (17)-(23) for projection and bidirectional layers. Parameter names, shapes
and gate order (i, f, g, o) are PyTorch's `nn.LSTM`: weight_ih_l{k} (4H, I_k),
weight_hh_l{k} (4H, R), bias_ih_l{k}, bias_hh_l{k} (4H,) unless bias=False,
weight_hr_l{k} (P, H) when proj_size P > 0, and the same with the suffix `_reverse`
for the reverse direction of a bidirectional layer. A linear head `head.weight`
(O, D R), `head.bias` (O) reads the top layer's output. Without a head (the upstream-
gradient mode, docs/upstream.md) the output is the top layer's output itself and the
"loss" is given by its gradient. Initial states are zero unless given (h0 (L D, B, R),
c0 (L D, B, H), as nn.LSTM takes them). With an embedding `embedding.weight` (V, I) in
the parameters, the input is token ids (B, T) and x_t = E[token_t] (eq. 24); its
gradient is the scatter-add of dL/dx_t (eq. 25).

Shapes: T time steps, B batch, I input size, H hidden size (the cell c_t), R the size
of h_t (P with a projection, else H), D directions (1 or 2), O output size. Layer
k > 0 reads D R numbers per step. Inputs and targets are batch-first like
`batch_first=True`; inside, arrays are time-major, so that one time step is one
contiguous (B, ·) block.

A "unit" is one direction of one layer. `Forward.layers` and `Backward.layers` hold
one entry per unit in `nn.LSTM` order (layer 0, layer 0 reverse, layer 1, ...); a
reverse unit's arrays run in its own processing order: index τ is position T-1-τ.

No I/O and no printing here: this module only computes. How fast and where the time goes:
docs/performance.md; the subnormal guard of the backward pass: docs/subnormal-guard.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .names import HEAD_BIAS, HEAD_WEIGHT, param_name, suffix, unit_names

GATES = ("i", "f", "g", "o")

# The fused step kernels (core/fused.py, optional extra `fast`) when core/backends.py has
# selected them; None: the NumPy loops below, the reference and the fallback.
FUSED = None


DIRECTIONS = ("forward", "reverse")


@dataclass(frozen=True)
class Spec:
    """Architecture: what the parameter shapes follow from (nn.LSTM's arguments)."""

    input_size: int
    hidden_size: int
    num_layers: int
    output_size: int
    bidirectional: bool = False
    proj_size: int = 0  # P > 0: h_t = W_hr (o_t ⊙ tanh c_t), eq. (17)
    bias: bool = True  # False: no bias_ih / bias_hh

    @property
    def directions(self) -> int:
        """D: 2 for a bidirectional LSTM, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def state_size(self) -> int:
        """R: the size of one direction's h_t (P with a projection, else H)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @property
    def output_width(self) -> int:
        """D R: what the layer above and the head read per step, eq. (21)."""
        return self.directions * self.state_size

    def units(self) -> list[tuple[int, int]]:
        """(layer, direction) of every unit, in `nn.LSTM` order; direction 1 is reverse."""
        return [(k, d) for k in range(self.num_layers) for d in range(self.directions)]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """PyTorch names and shapes, in `nn.LSTM` order, then the head."""
        H, R, shapes = self.hidden_size, self.state_size, {}
        for k, d in self.units():
            in_k = self.input_size if k == 0 else self.output_width
            kind_shapes = {
                "weight_ih": (4 * H, in_k),
                "weight_hh": (4 * H, R),
                "bias_ih": (4 * H,),
                "bias_hh": (4 * H,),
                "weight_hr": (self.proj_size, H),
            }
            for name in unit_names(k, d, bias=self.bias, proj=self.proj_size > 0):
                shapes[name] = kind_shapes[name.removesuffix(suffix(k, d))]
        shapes[HEAD_WEIGHT] = (self.output_size, self.output_width)
        shapes[HEAD_BIAS] = (self.output_size,)
        return shapes


@dataclass(frozen=True)
class UnitParams:
    """One unit's parameters; b = b_ih + b_hh (None without biases), W_hr None without projection."""

    W_ih: np.ndarray  # (4H, I_k)
    W_hh: np.ndarray  # (4H, R)
    b: np.ndarray | None  # (4H,)
    W_hr: np.ndarray | None  # (P, H)


def unit_params(params: dict[str, np.ndarray], k: int, d: int = 0) -> UnitParams:
    def get(kind):
        return params.get(param_name(kind, k, d))

    b_ih, b_hh = get("bias_ih"), get("bias_hh")
    b = None if b_ih is None else b_ih + b_hh
    return UnitParams(get("weight_ih"), get("weight_hh"), b, get("weight_hr"))


def time_order(a: np.ndarray, d: int) -> np.ndarray:
    """A unit's per-step array in position order: reversed for the reverse direction (a view)."""
    return a[::-1] if d else a


@dataclass
class LayerCache:
    """What one layer's forward pass keeps for backward (time-major)."""

    x: np.ndarray  # (T, B, I_k)  the unit's input, in its processing order
    gates: np.ndarray  # (T, B, 4H)  activations [i | f | g | o], eqs. (2)-(5)
    c: np.ndarray  # (T+1, B, H)  c[0] = c_0, c[t+1] = c_t of eq. (6)
    h: np.ndarray  # (T+1, B, R)  h[0] = h_0, h[t+1] = h_t of eq. (7), projected by eq. (17) if P > 0
    tanh_c: np.ndarray  # (T, B, H)  tanh(c_t)

    def gate(self, name: str) -> np.ndarray:
        """One gate's activations, (T, B, H), a view."""
        T, B, H4 = self.gates.shape
        return self.gates.reshape(T, B, 4, H4 // 4)[:, :, GATES.index(name)]


@dataclass
class Forward:
    layers: list[LayerCache]  # one per unit, Spec.units() order
    out: np.ndarray  # (T, B, D R)  the top layer's output, eq. (21), position order
    y_hat: np.ndarray  # (B, O) for target "last", (B, T, O) for "all"
    loss: float
    dy_hat: np.ndarray  # dL/dy_hat, same shape as y_hat
    tokens: np.ndarray | None = None  # (T, B) ids when the input went through an embedding


@dataclass
class LayerGrads:
    """Total derivatives of the loss for one layer, time-major."""

    dc: np.ndarray  # (T, B, H)  dL/dc_t, eq. (9)
    dh: np.ndarray  # (T, B, R)  dL/dh_t, eq. (8): of the unit's output h_t (projected if P > 0)
    dz: np.ndarray  # (T, B, 4H) dL/dz_t, eqs. (10)-(13)
    dh0: np.ndarray  # (B, R)    dL/dh_0
    dc0: np.ndarray  # (B, H)    dL/dc_0


@dataclass
class Backward:
    params: dict[str, np.ndarray]  # dL/dθ under PyTorch names
    layers: list[LayerGrads]  # one per unit, Spec.units() order (reverse units in processing order)
    dx: np.ndarray  # (T, B, I)  dL/dx_t of the network input, eq. (23)


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
    b: np.ndarray | None,
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    W_hr: np.ndarray | None = None,
) -> LayerCache:
    """One LSTM unit over all steps. x (T, B, I); b = b_ih + b_hh (4H,) or None (bias=False);
    W_hr (P, H) projects h_t, eq. (17). A reverse unit is given its input reversed in time.

    The pre-activations are built negated, a_t = -z_t, so that σ(z) = 1 / (1 + e^-a)
    is three in-place passes over the whole 4H block. Negating a weight is exact and
    round-to-nearest is symmetric, so a_t is bitwise -z_t.
    """
    if FUSED is not None and W_hr is None:
        return FUSED.layer_forward(W_ih, W_hh, b, x, h0, c0)
    T, B, I = x.shape
    H4, R = W_hh.shape
    H = H4 // 4
    dt = W_hh.dtype
    gates = np.empty((T, B, 4 * H), dt)  # holds a_t = -z_t until step t turns it into [i|f|g|o]
    # Input part of eq. (1) for every step at once: one GEMM over (T*B) rows.
    np.matmul(x.reshape(T * B, I), np.negative(W_ih.T), gates.reshape(T * B, 4 * H))  # (T*B, I) @ (I, 4H)
    if b is not None:
        gates -= b  # a = -(W_ih x_t + b_ih + b_hh)
    c = np.empty((T + 1, B, H), dt)
    h = np.empty((T + 1, B, R), dt)
    c[0] = 0.0 if c0 is None else c0
    h[0] = 0.0 if h0 is None else h0
    tanh_c = np.empty((T, B, H), dt)
    neg_W_hh_T = _negated_transpose(W_hh)  # (R, 4H)
    rec = np.empty((B, 4 * H), dt)  # -W_hh h_{t-1}
    z_g = np.empty((B, H), dt)
    ig = np.empty((B, H), dt)
    W_hr_T = None if W_hr is None else np.ascontiguousarray(W_hr.T)  # (H, P)
    m = np.empty((B, H), dt)  # o_t ⊙ tanh(c_t) before the projection
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
            if W_hr_T is None:
                np.multiply(o_[t], tanh_c_[t], h_[t + 1])  # eq. (7)
            else:
                np.multiply(o_[t], tanh_c_[t], m)  # eq. (7): m_t
                np.matmul(m, W_hr_T, h_[t + 1])  # eq. (17): h_t = W_hr m_t, (B, H) @ (H, P)
    return LayerCache(x=x, gates=gates, c=c, h=h, tanh_c=tanh_c)


def head_forward(W: np.ndarray, b: np.ndarray, out: np.ndarray, target: str) -> np.ndarray:
    """Linear head on the top layer's output (T, B, D R): (B, O) or (B, T, O)."""
    if target == "last":
        return out[-1] @ W.T + b  # (B, D R) @ (D R, O)
    return np.swapaxes(out @ W.T + b, 0, 1)  # (T, B, O) -> (B, T, O)


def layer_output(caches: list[LayerCache]) -> np.ndarray:
    """One layer's output in position order, (T, B, D R): h_t, or [h_t ; h̃_t] for a
    bidirectional layer, eq. (21). A view for one direction."""
    if len(caches) == 1:
        return caches[0].h[1:]
    return np.concatenate([caches[0].h[1:], caches[1].h[:0:-1]], axis=2)  # h̃ back in position order


def unit_input(inp: np.ndarray, d: int) -> np.ndarray:
    """A unit's input in its processing order, eq. (20): the reverse unit reads x_T first."""
    return np.ascontiguousarray(inp[::-1]) if d else inp


def loss_and_grad(y_hat: np.ndarray, y: np.ndarray, loss: str) -> tuple[float, np.ndarray]:
    """Loss value and dL/dy_hat.

    mse: mean over all elements of (y_hat - y)^2, as `F.mse_loss`.
    cross_entropy: y_hat holds logits (..., O), y integer class ids (...); mean over
    samples (and steps for target "all"), as `F.cross_entropy`; ids < 0 are masked
    targets (its ignore_index, remapped by setup): left out of the sum and of the count.
    upstream: y holds dL/dy_hat itself (the user's model's gradient); the value returned
    is <y, y_hat>, a linear functional with that gradient, NOT a loss (never reported as one).
    """
    if loss == "upstream":
        g = np.asarray(y, y_hat.dtype)
        return float(np.vdot(g, y_hat)), g
    if loss == "mse":
        r = y_hat - np.asarray(y, y_hat.dtype)  # float32 stays float32 whatever y is
        return float(np.mean(r * r)), (2.0 / r.size) * r
    O = y_hat.shape[-1]
    logits = y_hat.reshape(-1, O)  # (N, O)
    ids = y.reshape(-1)
    rows = np.arange(logits.shape[0])
    kept = ids >= 0  # masked targets (ignore_index) are < 0
    if not kept.all():
        rows, ids = rows[kept], ids[kept]
    N = rows.shape[0]  # the targets counted, as F.cross_entropy's mean
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    log_p = logits - m - np.log(s)  # log softmax, (N, O)
    L = -float(np.mean(log_p[rows, ids])) if N else float("nan")
    d = e / s
    d[rows, ids] -= 1.0
    if N < logits.shape[0]:
        d[~kept] = 0.0
    d /= max(N, 1)
    return L, d.reshape(y_hat.shape)


def embed(E: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """x_t = E[token_t], eq. (24): (B, T) ids -> (B, T, I)."""
    if tokens.size and tokens.max() >= E.shape[0]:
        raise IndexError(f"token id {int(tokens.max())} outside the embedding's {E.shape[0]} rows")
    return E[tokens]


def embedding_grad(E: np.ndarray, tokens: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """dL/dE = Σ_t Σ_b e_{token} (dL/dx_t)^T, eq. (25): the scatter-add of dx (T, B, I) onto the
    rows of the tokens (T, B), as nn.Embedding's backward (rows of unused ids stay zero)."""
    dE = np.zeros_like(E)
    np.add.at(dE, tokens.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    return dE


def forward(
    params: dict[str, np.ndarray],
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    loss: str = "mse",
    target: str = "last",
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> Forward:
    """Forward pass of the stacked LSTM and head, and the loss. x (B, T, I) batch-first, or
    token ids (B, T) with `embedding.weight`; h0 (L D, B, R), c0 (L D, B, H) or None (zero)."""
    dt = params[param_name("weight_hh", 0)].dtype
    tokens = None
    if "embedding.weight" in params:  # x holds token ids (B, T)
        tokens = np.ascontiguousarray(np.swapaxes(x, 0, 1))  # (T, B)
        x = embed(params["embedding.weight"], x)
    inp = np.ascontiguousarray(np.swapaxes(np.asarray(x, dt), 0, 1))  # (T, B, I)
    layers = []
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(spec.num_layers):
            caches = []
            for d in range(spec.directions):
                p = unit_params(params, k, d)
                j = k * spec.directions + d  # nn.LSTM's row of h0, c0
                s0 = (None, None) if h0 is None else (h0[j], c0[j])
                caches.append(layer_forward(p.W_ih, p.W_hh, p.b, unit_input(inp, d), *s0, W_hr=p.W_hr))
            layers += caches
            inp = layer_output(caches)  # (T, B, D R) feeds the layer above, eq. (21)
        if HEAD_WEIGHT in params:
            y_hat = head_forward(params[HEAD_WEIGHT], params[HEAD_BIAS], inp, target)
        else:  # no head: the output is the top layer's output itself, (B, T, D R)
            y_hat = np.swapaxes(inp, 0, 1)
        L, dy_hat = loss_and_grad(y_hat, y, loss)
    return Forward(layers=layers, out=inp, y_hat=y_hat, loss=L, dy_hat=dy_hat, tokens=tokens)


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
# once it would not (docs/subnormal-guard.md).
_GUARD_EVERY = 8  # steps between checks of the state's size while unscaled
_GUARD_BITS = 64  # headroom above the subnormal range, and the largest scaled size, in binades


def layer_backward(
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    cache: LayerCache,
    dh_in: np.ndarray,
    dh_next: np.ndarray | None = None,
    dc_next: np.ndarray | None = None,
    W_hr: np.ndarray | None = None,
) -> LayerGrads:
    """BPTT through one unit, eqs. (8)-(13) (and (18) with a projection W_hr), newest step first.

    dh_in (T, B, R): the direct part of dL/dh_t (from the head and the layer above).
    dh_next (B, R), dc_next (B, H): W_hh^T δz_{T+1} and δc_{T+1} ⊙ f_{T+1} entering from
    after the last step (zero for a whole sequence; set for a segment of one).
    """
    T = cache.gates.shape[0]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        active = dh_in.reshape(T, -1).any(axis=1)  # steps with a direct term (NaN counts)
        lg, exps = _layer_backward(W_hh, cache, dh_in, active, dh_next, dc_next, W_hr)
        _unscale(lg, exps)
    return lg


def _layer_backward(
    W_hh: np.ndarray,
    cache: LayerCache,
    dh_in: np.ndarray,
    active: np.ndarray,
    dh_next: np.ndarray | None,
    dc_next: np.ndarray | None,
    W_hr: np.ndarray | None = None,
) -> tuple[LayerGrads, list[int]]:
    """`layer_backward` before scaling back: dc[t], dh[t], dz[t] come scaled by
    2^exps[t] (dh0, dc0 by 2^exps[0]); `_unscale` finishes. `active` (T,) bool tells
    which steps have dh_in[t] != 0; the other steps of dh_in are not read."""
    if FUSED is not None and W_hr is None:
        return FUSED.layer_backward_scaled(W_hh, cache, dh_in, active, dh_next, dc_next)
    gates = cache.gates
    T, B, H4 = gates.shape
    H = H4 // 4
    R = W_hh.shape[1]
    dt = gates.dtype
    f = gates.reshape(T, B, 4, H)[:, :, 1]  # (T, B, H) view
    dz = np.empty_like(gates)  # (T, B, 4H); holds the local derivatives until step t scales them
    dz4 = dz.reshape(T, B, 4, H)
    dh = np.empty((T, B, R), dt)  # dh[t-1] receives W_hh^T δz_t from step t
    dc = np.empty((T, B, H), dt)
    dh0 = np.empty((B, R), dt)
    dm = np.empty((B, H), dt)  # δm_t = W_hr^T δh_t, eq. (18), with a projection
    dc_carry = np.zeros((B, H), dt) if dc_next is None else np.array(dc_next, dt)  # δc_{t+1} ⊙ f_{t+1}
    dh[T - 1] = 0.0 if dh_next is None else dh_next
    K = max(1, min(T, _CHUNK // (B * H4)))  # steps per chunk
    dh_dc = np.empty((K, B, H), dt)  # ∂h_t/∂c_t = o_t ⊙ (1 - tanh² c_t) of one chunk
    guard = _Guard(dt, (B, R))
    e, exps = 0, [0] * T
    # Per-step views made once, outside the loop (no allocation inside it).
    dh_, dc_, dz_, f_, dh_in_ = list(dh), list(dc), list(dz), list(f), list(dh_in)
    dz_ifg_, dz_o_ = list(dz4[:, :, :3]), list(dz4[:, :, 3])  # (B, 3, H), (B, H)
    dc_b_ = list(dc[:, :, None, :])  # (B, 1, H), broadcast over the i, f, g blocks
    dh_out_ = [dh0] + dh_[:-1]  # where step t's W_hh^T δz_t goes
    dh_dc_ = list(dh_dc)
    active, due = active.tolist(), guard.due(active)
    for t1 in range(T, 0, -K):
        t0 = max(0, t1 - K)
        _local_derivatives(cache, slice(t0, t1), dz, dh_dc[: t1 - t0])
        for t in range(t1 - 1, t0 - 1, -1):
            dh_t, dc_t = dh_[t], dc_[t]
            if e or due[t]:  # subnormal guard; eq. (8): δh_t = ∂ℓ/∂h_t + W_hh^T δz_{t+1}
                e = guard.enter(T - 1 - t, dh_t, dc_carry, dh_in_[t] if active[t] else None)
            if W_hr is None:
                dm_t = dh_t
            else:
                dm_t = np.matmul(dh_t, W_hr, dm)  # eq. (18): δm_t = W_hr^T δh_t, (B, P) @ (P, H)
            np.multiply(dm_t, dh_dc_[t - t0], dc_t)
            dc_t += dc_carry  # eq. (9): δc_t = δh_t ⊙ o_t ⊙ (1 - tanh² c_t) + δc_{t+1} ⊙ f_{t+1}
            dz_ifg_[t] *= dc_b_[t]  # eqs. (10)-(12), (B, 3, H)
            dz_o_[t] *= dm_t  # eq. (13)
            np.matmul(dz_[t], W_hh, dh_out_[t])  # (B, 4H) @ (4H, R): W_hh^T δz_t, into δh_{t-1}
            np.multiply(dc_t, f_[t], dc_carry)  # δc_t ⊙ f_t
            exps[t] = e
    return LayerGrads(dc=dc, dh=dh, dz=dz, dh0=dh0, dc0=dc_carry), exps


def _local_derivatives(cache: LayerCache, s: slice, dz: np.ndarray, q: np.ndarray) -> None:
    """Local derivatives of steps s, vectorized over the chunk (4H block where possible): into
    dz[s] (n, B, 4H) the factors of eqs. (10)-(13), into q (n, B, H) ∂h_t/∂c_t (eq. 9)."""
    T, B, H4 = cache.gates.shape
    g4 = cache.gates.reshape(T, B, 4, H4 // 4)
    i, g, o = g4[s, :, 0], g4[s, :, 2], g4[s, :, 3]  # (n, B, H) views
    tanh_c = cache.tanh_c[s]
    L, A = dz[s], cache.gates[s]  # (n, B, 4H)
    L4 = L.reshape(L.shape[0], B, 4, H4 // 4)
    np.subtract(1.0, A, L)
    L *= A  # σ'(z) = σ(1 - σ) for i, f, o (the g block is replaced next)
    np.multiply(g, g, L4[:, :, 2])
    np.subtract(1.0, L4[:, :, 2], L4[:, :, 2])  # tanh'(z_g) = 1 - g²
    L4[:, :, 0] *= g  # ∂c/∂z_i = g i(1-i)       for eq. (10)
    L4[:, :, 1] *= cache.c[:-1][s]  # ∂c/∂z_f = c_{t-1} f(1-f)  for eq. (11)
    L4[:, :, 2] *= i  # ∂c/∂z_g = i (1-g²)      for eq. (12)
    L4[:, :, 3] *= tanh_c  # ∂h/∂z_o = tanh(c) o(1-o) for eq. (13)
    np.multiply(tanh_c, tanh_c, q)
    np.subtract(1.0, q, q)
    q *= o  # ∂h_t/∂c_t = o (1 - tanh² c)


class _Guard:
    """The subnormal guard of one BPTT loop (see above) and eq. (8)'s direct term at its
    scale; the NumPy step loop and the fused one (core/fused.py) both call `enter`."""

    def __init__(self, dt: np.dtype, shape: tuple[int, int], peak=None):
        """peak(carry, dh_t): the state's size for the check, `_peak` or a compiled pass
        that returns the same value (core/fused_guard.py)."""
        fi = np.finfo(dt)
        self.peak = _peak if peak is None else peak
        self.below = float(np.ldexp(fi.tiny, _GUARD_BITS))
        self.above = float(np.ldexp(1.0, _GUARD_BITS))
        self.top = fi.maxexp - 2  # the largest k of one rescale
        self.scaled_in = np.empty(shape, dt)  # (B, R) the direct term at the current scale
        self.e = 0  # the state is held scaled by 2^e

    @staticmethod
    def due(active: np.ndarray) -> list[bool]:
        """Per step t (T,): whether `enter` has work while the state is unscaled, i.e. a
        size check (every _GUARD_EVERY steps from the end) or a direct term (active[t]).
        While the state is scaled (e > 0) every step is due."""
        T = len(active)
        check = (T - 1 - np.arange(T)) % _GUARD_EVERY == 0
        return (check | np.asarray(active, bool)).tolist()

    def enter(self, done: int, dh_t: np.ndarray, carry: np.ndarray, d: np.ndarray | None) -> int:
        """The state (dh_t, carry) entering a step, after `done` steps: rescaled in place if
        it left the guard's band (checked every _GUARD_EVERY steps, every step while scaled);
        then eq. (8), δh_t = ∂ℓ/∂h_t + W_hh^T δz_{t+1}: the direct term d (B, R), if any,
        added to dh_t at the current scale. Returns the step's exponent e."""
        e = self.e
        if e or done % _GUARD_EVERY == 0:
            m = self.peak(carry, dh_t)
            if 0.0 < m < self.below or (e and m > self.above):
                k = max(-int(np.frexp(m)[1]), -e)  # m 2^k in [0.5, 1), never below the true scale
                e += _rescale(min(k, self.top), dh_t, carry)
        if d is not None:
            if e:  # the direct term must fit at the current scale; lower the scale if not
                m = max(d.max(), -d.min())
                if m > 0.0:
                    k = max(-int(np.frexp(m)[1]), 0) - e
                    if k < 0:
                        e += _rescale(k, dh_t, carry)
                dh_t += scale_pow2(d, e, self.scaled_in) if e else d
            else:
                dh_t += d
        self.e = e
        return e


_MAX, _MIN = np.maximum.reduce, np.minimum.reduce  # what ndarray.max/min call, without their wrapper


def _peak(carry: np.ndarray, dh_t: np.ndarray):
    """The state's size max |x| for the guard's check: NaN if carry holds a NaN; a NaN in
    dh_t alone is passed over (Python's max keeps a NaN that comes first, skips later ones)."""
    return max(_MAX(carry, None), -_MIN(carry, None), _MAX(dh_t, None), -_MIN(dh_t, None))


def _rescale(k: int, *state: np.ndarray) -> int:
    """Multiply the state by 2^k in place (exact, barring over/underflow); returns k."""
    for a in state:
        scale_pow2(a, k, a)
    return k


def scale_pow2(a: np.ndarray, k: int, out: np.ndarray | None = None) -> np.ndarray:
    """a 2^k rounded once to a's dtype: bitwise `np.ldexp(a, k, out)`, by one to three
    multiplications by exact powers of two (ldexp is a scalar library call per element,
    25-50x slower here; docs/subnormal-guard.md).

    A product of two floats is rounded once, so a · 2^k is ldexp's result whenever 2^k is
    a float of the dtype (normal or subnormal): 2^lo <= 2^k <= 2^hi. Beyond that:
    - k > hi: steps of 2^hi, each exact until the value overflows, and then so does a 2^k;
    - k < lo: b = a 2^(k - lo), then b 2^lo. b is exact while normal, and then the second
      product is the one rounding; if b is subnormal, |a 2^k| < 2^(emin + lo), below half
      the smallest subnormal, and both a 2^k and b 2^lo round to a zero of a's sign. k is
      first raised to lo - hi - 3, where every finite a 2^k is such a zero already.
    inf and NaN stay themselves, as with ldexp."""
    if out is None:
        out = np.empty_like(a)
    fi = np.finfo(a.dtype)
    one = a.dtype.type(1)
    lo, hi = int(fi.minexp) - int(fi.nmant), int(fi.maxexp) - 1  # float32: -149, 127
    if k > hi:
        k = min(k, hi - lo + 2)  # 2^lo 2^k overflows from here on
        np.multiply(a, np.ldexp(one, hi), out)
        k -= hi
        while k > hi:
            np.multiply(out, np.ldexp(one, hi), out)
            k -= hi
        return np.multiply(out, np.ldexp(one, k), out)
    if k >= lo:
        return np.multiply(a, np.ldexp(one, k), out)
    k = max(k, lo - hi - 3)
    np.multiply(a, np.ldexp(one, k - lo), out)
    return np.multiply(out, np.ldexp(one, lo), out)


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
                scale_pow2(a, -e, a)
    if exps[0]:
        scale_pow2(lg.dh0, -exps[0], lg.dh0)
        scale_pow2(lg.dc0, -exps[0], lg.dc0)


def _param_grads(
    dz: np.ndarray,
    x: np.ndarray,
    h_prev: np.ndarray,
    W_ih: np.ndarray,
    exps: list[int],
    proj: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, ...]:
    """Eqs. (14)-(16) and dL/dx_t = W_ih^T δz_t as single GEMMs over (T*B) rows; one set
    per run of equal exponent if the subnormal guard scaled dz (still scaled here).
    proj = (δh (T, B, P), m (T, B, H)) adds eq. (19), ∂L/∂W_hr = Σ_t δh_t m_t^T, last."""
    T, B, H4 = dz.shape
    I = x.shape[2]
    R = h_prev.shape[2]
    blocks = _blocks(exps)
    acc = [np.zeros((H4, I), dz.dtype), np.zeros((H4, R), dz.dtype), np.zeros(H4, dz.dtype)]
    if proj is not None:
        acc.append(np.zeros((proj[0].shape[2], proj[1].shape[2]), dz.dtype))
    dx = np.empty((T, B, I), dz.dtype)
    for t0, t1, e in blocks:
        n = (t1 - t0) * B
        dz_b = dz[t0:t1].reshape(n, H4)  # (n, 4H)
        parts = (
            dz_b.T @ x[t0:t1].reshape(n, I),  # (4H, n) @ (n, I)    eq. (14)
            dz_b.T @ h_prev[t0:t1].reshape(n, R),  # (4H, n) @ (n, R)  eq. (15)
            np.ones(n, dz.dtype) @ dz_b,  # (n,) @ (n, 4H)  eq. (16), a multithreaded GEMV
        )
        if proj is not None:
            dh, m = proj
            parts += (dh[t0:t1].reshape(n, -1).T @ m[t0:t1].reshape(n, -1),)  # (P, n) @ (n, H)  eq. (19)
        np.matmul(dz_b, W_ih, dx[t0:t1].reshape(n, I))  # (n, 4H) @ (4H, I): W_ih^T δz_t
        if len(blocks) == 1 and not e:
            return parts + (dx,)
        for a, part in zip(acc, parts, strict=True):
            a += scale_pow2(part, -e, part)
        scale_pow2(dx[t0:t1], -e, dx[t0:t1])
    return (*acc, dx)


@dataclass
class LayerBackward:
    """One layer's BPTT and its parameter gradients (eqs. 8-16)."""

    grads: LayerGrads
    dW_ih: np.ndarray  # (4H, I_k)  eq. (14)
    dW_hh: np.ndarray  # (4H, R)    eq. (15)
    db: np.ndarray  # (4H,)         eq. (16), for bias_ih and bias_hh alike (unused if bias=False)
    dx: np.ndarray  # (T, B, I_k)   dL/dx_t = W_ih^T δz_t, the dh_in of the layer below
    dW_hr: np.ndarray | None = None  # (P, H)  eq. (19), with a projection


def layer_backward_full(
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    cache: LayerCache,
    dh_in: np.ndarray,
    dh_next: np.ndarray | None = None,
    dc_next: np.ndarray | None = None,
    active: np.ndarray | None = None,
    W_hr: np.ndarray | None = None,
) -> LayerBackward:
    """`layer_backward` plus the layer's parameter gradients and dL/dx_t, as `backward` computes
    them (GEMMs on the guard-scaled dz, so vanished gradients stay fast and exact).

    active (T,) bool: steps with a nonzero dh_in (None: found from dh_in).
    """
    T = cache.gates.shape[0]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if active is None:
            active = dh_in.reshape(T, -1).any(axis=1)  # steps with a direct term (NaN counts)
        lg, exps = _layer_backward(W_hh, cache, dh_in, active, dh_next, dc_next, W_hr)
        proj = None
        if W_hr is not None:
            m = cache.gate("o") * cache.tanh_c  # (T, B, H)  m_t = o_t ⊙ tanh(c_t), eq. (7)
            proj = (lg.dh, m)
        *grads, dx = _param_grads(lg.dz, cache.x, cache.h[:-1], W_ih, exps, proj)
        _unscale(lg, exps)
    return LayerBackward(lg, *grads[:3], dx, grads[3] if proj else None)


def backward(params: dict[str, np.ndarray], spec: Spec, fwd: Forward, target: str) -> Backward:
    """Gradients of every parameter and the total dL/dc_t, dL/dh_t of every unit."""
    grads: dict[str, np.ndarray] = {}
    T = fwd.out.shape[0]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if HEAD_WEIGHT in params:
            dh_in, active = head_backward(params[HEAD_WEIGHT], fwd.out, fwd.dy_hat, target, grads)
        else:  # no head: dy_hat is dL/d(top output) itself, (B, T, D R)
            dh_in = np.ascontiguousarray(np.swapaxes(np.asarray(fwd.dy_hat, fwd.out.dtype), 0, 1))
            active = dh_in.reshape(T, -1).any(axis=1)
        unit_grads: list[LayerGrads] = [None] * len(fwd.layers)  # type: ignore[list-item]
        for k in range(spec.num_layers - 1, -1, -1):
            dh_in = _layer_backward_all(params, spec, fwd.layers, k, dh_in, active, grads, unit_grads)
            active = np.ones(T, bool)  # dh_in = dL/dx_t of this layer, for the layer below
    if fwd.tokens is not None:
        grads["embedding.weight"] = embedding_grad(params["embedding.weight"], fwd.tokens, dh_in)  # eq. (25)
    ordered = {name: grads[name] for name in ("embedding.weight", *spec.param_shapes()) if name in grads}
    return Backward(params=ordered, layers=unit_grads, dx=dh_in)


def head_backward(
    W_head: np.ndarray, out: np.ndarray, dy_hat: np.ndarray, target: str, grads: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The head's gradients into `grads`; returns dL/d(top output) (T, B, D R), the direct
    ∂ℓ/∂h_t of the top layer, and which steps (T,) have one."""
    T, B, W = out.shape  # (T, B, D R)
    dt = W_head.dtype  # W_head (O, D R)
    dy = np.asarray(dy_hat, dt)
    if target == "last":
        grads["head.weight"] = dy.T @ out[-1]  # (O, B) @ (B, D R)
        grads["head.bias"] = dy.sum(axis=0)
        dh_in = np.zeros((T, B, W), dt)  # untouched pages cost nothing
        dh_in[-1] = dy @ W_head  # (B, O) @ (O, D R)
        return dh_in, np.arange(T) == T - 1
    dy_t = np.swapaxes(dy, 0, 1).reshape(T * B, -1)  # (T*B, O)
    grads["head.weight"] = dy_t.T @ out.reshape(T * B, W)
    grads["head.bias"] = dy_t.sum(axis=0)
    return (dy_t @ W_head).reshape(T, B, W), dy.any(axis=(0, 2))


def split_directions(d_out: np.ndarray, D: int) -> list[np.ndarray]:
    """dL/d(layer output) (T, B, D R) -> each unit's direct ∂ℓ/∂h in its processing order, eq. (22)."""
    if D == 1:
        return [d_out]
    R = d_out.shape[2] // 2
    return [np.ascontiguousarray(d_out[:, :, :R]), np.ascontiguousarray(d_out[::-1, :, R:])]


def store_unit_grads(grads: dict, spec: Spec, k: int, d: int, lb: LayerBackward, add: bool = False) -> None:
    """A unit's parameter gradients under their PyTorch names (summed into them when add)."""
    named = [("weight_ih", lb.dW_ih), ("weight_hh", lb.dW_hh)]  # eqs. (14), (15)
    if spec.bias:
        named.append(("bias_ih", lb.db))  # eq. (16)
    if lb.dW_hr is not None:
        named.append(("weight_hr", lb.dW_hr))  # eq. (19)
    for kind, g in named:
        name = param_name(kind, k, d)
        grads[name] = grads[name] + g if add and name in grads else g
    if spec.bias:
        grads[param_name("bias_hh", k, d)] = grads[param_name("bias_ih", k, d)].copy()


def _layer_backward_all(params, spec, caches, k, d_out, active, grads, unit_grads) -> np.ndarray:
    """BPTT through every direction of layer k; returns dL/dx_t of the layer's input, eq. (23)."""
    D = spec.directions
    dx = None
    for d, dh_d in enumerate(split_directions(d_out, D)):
        p = unit_params(params, k, d)
        j = k * D + d
        act = active if d == 0 else active[::-1]
        lb = layer_backward_full(p.W_ih, p.W_hh, caches[j], dh_d, active=act, W_hr=p.W_hr)
        unit_grads[j] = lb.grads
        store_unit_grads(grads, spec, k, d, lb)
        dx_d = time_order(lb.dx, d)  # position order
        dx = dx_d if dx is None else dx + dx_d  # eq. (23)
    return dx


def last_step_term(dy_hat: np.ndarray) -> np.ndarray:
    """dL/dy_hat of the last step's loss term alone, for target "all" (B, T, O): the rest zero.
    Backpropagating it shows how far one loss term's gradient travels back."""
    dy = np.zeros_like(dy_hat)
    dy[:, -1] = dy_hat[:, -1]
    return dy


def last_term_backward(params: dict[str, np.ndarray], spec: Spec, fwd: Forward) -> Backward:
    """BPTT of the last step's loss term alone (target "all")."""
    term = last_step_term(fwd.dy_hat)
    only = Forward(layers=fwd.layers, out=fwd.out, y_hat=fwd.y_hat, loss=fwd.loss, dy_hat=term)
    return backward(params, spec, only, "all")


def entry_backward(p: UnitParams, cache: LayerCache, dh_entry: np.ndarray) -> LayerGrads:
    """BPTT through one unit of a gradient dh_entry (B, R) entering at its last step alone
    (for a reverse unit: at position t = 1), eqs. (8)-(13), (18): how far the unit's own
    recurrence carries what enters there."""
    dh = np.zeros(cache.h[1:].shape, cache.h.dtype)  # (T, B, R)
    dh[-1] = dh_entry
    return layer_backward(p.W_ih, p.W_hh, cache, dh, W_hr=p.W_hr)


def run(
    params: dict[str, np.ndarray],
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    loss: str = "mse",
    target: str = "last",
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> tuple[Forward, Backward]:
    """Forward and backward in one call."""
    fwd = forward(params, spec, x, y, loss, target, h0, c0)
    return fwd, backward(params, spec, fwd, target)


def loss_only(
    params: dict[str, np.ndarray],
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    loss: str = "mse",
    target: str = "last",
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> float:
    """The loss alone (what finite differences perturb)."""
    return forward(params, spec, x, y, loss, target, h0, c0).loss
