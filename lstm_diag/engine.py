"""Exact LSTM forward pass and backpropagation through time, in NumPy.

The math is docs/equations.md; comments cite its numbers (1)-(16), which follow
theory.md §1.1 and §4.1. Parameter names, shapes and gate order (i, f, g, o) are
PyTorch's `nn.LSTM` (weight_ih_l{k} (4H, I), weight_hh_l{k} (4H, H), bias_ih_l{k},
bias_hh_l{k}); a linear head `head.weight` (O, H), `head.bias` (O) reads the top
layer's h. Initial states are zero.

Shapes: T time steps, B batch, I input size, H hidden size, O output size. Inputs
and targets are batch-first like `batch_first=True`; inside, arrays are
time-major, so that one time step is one contiguous (B, ·) block.

No I/O and no printing here: this module only computes.
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


def layer_forward(
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> LayerCache:
    """One LSTM layer over all steps. x (T, B, I); b = b_ih + b_hh (4H,)."""
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = W_hh.dtype
    # Input part of eq. (1) for every step at once: one GEMM over (T*B) rows.
    z = (x.reshape(T * B, I) @ W_ih.T).reshape(T, B, 4 * H)  # (T, B, 4H)
    z += b
    c = np.empty((T + 1, B, H), dt)
    h = np.empty((T + 1, B, H), dt)
    c[0] = 0.0 if c0 is None else c0
    h[0] = 0.0 if h0 is None else h0
    tanh_c = np.empty((T, B, H), dt)
    W_hh_T = np.ascontiguousarray(W_hh.T)  # (H, 4H)
    rec = np.empty((B, 4 * H), dt)  # W_hh h_{t-1}
    g_buf = np.empty((B, H), dt)
    ig = np.empty((B, H), dt)
    for t in range(T):
        z_t = z[t]  # (B, 4H)
        np.matmul(h[t], W_hh_T, out=rec)  # (B, H) @ (H, 4H)
        z_t += rec  # eq. (1)
        np.tanh(z_t[:, 2 * H : 3 * H], out=g_buf)  # eq. (4)
        sigmoid_(z_t)  # eqs. (2), (3), (5) (the g block is overwritten next)
        z_t[:, 2 * H : 3 * H] = g_buf
        i, f, g, o = z_t[:, :H], z_t[:, H : 2 * H], g_buf, z_t[:, 3 * H :]
        np.multiply(f, c[t], out=c[t + 1])
        np.multiply(i, g, out=ig)
        c[t + 1] += ig  # eq. (6)
        np.tanh(c[t + 1], out=tanh_c[t])
        np.multiply(o, tanh_c[t], out=h[t + 1])  # eq. (7)
    return LayerCache(x=x, gates=z, c=c, h=h, tanh_c=tanh_c)


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
        r = y_hat - y
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
    gates = cache.gates
    T, B, H4 = gates.shape
    H = H4 // 4
    g4 = gates.reshape(T, B, 4, H)
    i, f, g, o = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]  # (T, B, H) each
    tanh_c = cache.tanh_c
    c_prev = cache.c[:-1]  # (T, B, H)  c_{t-1}
    # Local derivatives for every step at once; multiplied in place into dz below.
    dz = np.empty_like(gates)  # (T, B, 4H)
    dz4 = dz.reshape(T, B, 4, H)
    np.multiply(g, i * (1.0 - i), out=dz4[:, :, 0])  # ∂c/∂z_i       for eq. (10)
    np.multiply(c_prev, f * (1.0 - f), out=dz4[:, :, 1])  # ∂c/∂z_f  for eq. (11)
    np.multiply(i, 1.0 - g * g, out=dz4[:, :, 2])  # ∂c/∂z_g         for eq. (12)
    np.multiply(tanh_c, o * (1.0 - o), out=dz4[:, :, 3])  # ∂h/∂z_o  for eq. (13)
    dh_dc = o * (1.0 - tanh_c * tanh_c)  # (T, B, H)  ∂h_t/∂c_t

    dh = np.array(dh_in, dtype=gates.dtype, copy=True)  # (T, B, H) becomes eq. (8)
    dc = np.empty_like(dh)  # (T, B, H)
    dh_rec = np.zeros((B, H), gates.dtype) if dh_next is None else dh_next.copy()
    dc_carry = np.zeros((B, H), gates.dtype) if dc_next is None else dc_next.copy()
    for t in range(T - 1, -1, -1):
        dh_t, dc_t, dz_t = dh[t], dc[t], dz4[t]
        dh_t += dh_rec  # eq. (8): δh_t = ∂ℓ/∂h_t + W_hh^T δz_{t+1}
        np.multiply(dh_t, dh_dc[t], out=dc_t)
        dc_t += dc_carry  # eq. (9): δc_t = δh_t ⊙ o_t ⊙ (1 - tanh² c_t) + δc_{t+1} ⊙ f_{t+1}
        dz_t[:, :3] *= dc_t[:, None, :]  # eqs. (10)-(12), (B, 3, H)
        dz_t[:, 3] *= dh_t  # eq. (13)
        np.matmul(dz[t], W_hh, out=dh_rec)  # (B, 4H) @ (4H, H): W_hh^T δz_t
        np.multiply(dc_t, f[t], out=dc_carry)  # δc_t ⊙ f_t
    return LayerGrads(dc=dc, dh=dh, dz=dz, dh0=dh_rec, dc0=dc_carry)


def backward(params: dict[str, np.ndarray], spec: Spec, fwd: Forward, target: str) -> Backward:
    """Gradients of every parameter and the total dL/dc_t, dL/dh_t of every layer."""
    top = fwd.layers[-1]
    T, B, H = top.tanh_c.shape
    W_head = params["head.weight"]  # (O, H)
    grads: dict[str, np.ndarray] = {}
    dy = fwd.dy_hat
    with np.errstate(over="ignore", invalid="ignore"):
        dh_in = np.zeros((T, B, H), W_head.dtype)
        if target == "last":
            grads["head.weight"] = dy.T @ top.h[-1]  # (O, B) @ (B, H)
            grads["head.bias"] = dy.sum(axis=0)
            dh_in[-1] = dy @ W_head  # (B, O) @ (O, H)
        else:
            dy_t = np.swapaxes(dy, 0, 1).reshape(T * B, -1)  # (T*B, O)
            grads["head.weight"] = dy_t.T @ top.h[1:].reshape(T * B, H)
            grads["head.bias"] = dy_t.sum(axis=0)
            dh_in = (dy_t @ W_head).reshape(T, B, H)
        layer_grads: list[LayerGrads] = [None] * spec.num_layers  # type: ignore[list-item]
        for k in range(spec.num_layers - 1, -1, -1):
            W_ih, W_hh = params[f"weight_ih_l{k}"], params[f"weight_hh_l{k}"]
            cache = fwd.layers[k]
            lg = layer_backward(W_ih, W_hh, cache, dh_in)
            layer_grads[k] = lg
            I_k = cache.x.shape[2]
            dz = lg.dz.reshape(T * B, 4 * H)  # (T*B, 4H)
            grads[f"weight_ih_l{k}"] = dz.T @ cache.x.reshape(T * B, I_k)  # eq. (14)
            grads[f"weight_hh_l{k}"] = dz.T @ cache.h[:-1].reshape(T * B, H)  # eq. (15)
            db = dz.sum(axis=0)  # eq. (16)
            grads[f"bias_ih_l{k}"] = db
            grads[f"bias_hh_l{k}"] = db.copy()
            dh_in = (dz @ W_ih).reshape(T, B, I_k)  # dL/dx_t = W_ih^T δz_t, to the layer below
    ordered = {name: grads[name] for name in spec.param_shapes()}
    return Backward(params=ordered, layers=layer_grads, dx=dh_in)


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
