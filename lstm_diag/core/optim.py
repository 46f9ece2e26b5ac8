"""Optimizers in NumPy with `torch.optim` semantics: SGD, SGD with momentum, Adam.

Each optimizer updates a dict of parameters in place from a dict of gradients with the
same names. The update rules follow PyTorch's documented algorithms (torch.optim.SGD with
dampening 0 and nesterov off; torch.optim.Adam with amsgrad off, L2 weight decay added to
the gradient, not decoupled), so one step from the same weights and gradients agrees
with PyTorch to rounding (tests/fixtures_optim, made by tests/make_optim_fixtures.py).

SGD (momentum mu, weight decay wd), per parameter p with gradient g:
    d = g + wd * p
    b = d                      at the first step (PyTorch clones d into the buffer)
    b = mu * b + d             afterwards
    p = p - lr * b             (b = d when mu = 0: plain SGD)

Adam (Kingma & Ba 2015, Algorithm 1, with PyTorch's eps placement), step t = 1, 2, ...:
    d = g + wd * p
    m = beta1 * m + (1 - beta1) * d
    v = beta2 * v + (1 - beta2) * d^2
    p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

No I/O and no printing here.
"""

from __future__ import annotations

import math

import numpy as np

OPTIMIZERS = ("sgd", "momentum", "adam")


class SGD:
    """Stochastic gradient descent, optionally with (heavy-ball) momentum, as torch.optim.SGD."""

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.buffers: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        for name, p in params.items():
            d = grads[name] + wd * p if wd else grads[name]
            if mu:
                b = self.buffers.get(name)
                if b is None:
                    b = self.buffers[name] = np.array(d, copy=True)  # first step: b = d
                else:
                    b *= mu
                    b += d  # b = mu * b + d
                d = b
            p -= lr * d

    def state(self) -> dict[str, np.ndarray]:
        return {f"momentum_buffer.{k}": v for k, v in self.buffers.items()}


class Adam:
    """Adam with bias correction (Kingma & Ba 2015), as torch.optim.Adam (amsgrad off)."""

    def __init__(
        self,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2, t, wd = self.beta1, self.beta2, self.t, self.weight_decay
        step_size = self.lr / (1.0 - b1**t)  # lr / (1 - beta1^t)
        sqrt_bc2 = math.sqrt(1.0 - b2**t)  # sqrt(1 - beta2^t)
        for name, p in params.items():
            d = grads[name] + wd * p if wd else grads[name]
            if name not in self.m:
                self.m[name] = np.zeros_like(p)
                self.v[name] = np.zeros_like(p)
            m, v = self.m[name], self.v[name]
            m *= b1
            m += (1.0 - b1) * d  # first moment
            v *= b2
            v += (1.0 - b2) * (d * d)  # second moment
            denom = np.sqrt(v) / sqrt_bc2 + self.eps  # sqrt(v_hat) + eps
            p -= step_size * (m / denom)

    def state(self) -> dict[str, np.ndarray]:
        out = {f"exp_avg.{k}": v for k, v in self.m.items()}
        out.update({f"exp_avg_sq.{k}": v for k, v in self.v.items()})
        return out


def make_optimizer(
    name: str,
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> SGD | Adam:
    """`sgd`, `momentum` (SGD with momentum `momentum`) or `adam`."""
    if name == "sgd":
        return SGD(lr, 0.0, weight_decay)
    if name == "momentum":
        return SGD(lr, momentum, weight_decay)
    if name == "adam":
        return Adam(lr, betas, eps, weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; one of {', '.join(OPTIMIZERS)}")
