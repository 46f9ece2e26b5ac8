"""Regenerate the torch.optim reference fixtures in tests/fixtures_optim/.

Independent reference: PyTorch's own optimizers, not lstm-diag. PyTorch is a dev-only
dependency; with it installed in the project venv:

    .venv/bin/python tests/make_optim_fixtures.py

Each case is one `<case>.npz` (float64):

    init.<name>        the starting parameters (LSTM-shaped: weight_ih_l0, weight_hh_l0, ...)
    grad.<name>        (K, *shape) the gradient handed to the optimizer at steps 1..K
    after.<name>       (K, *shape) the parameters after each of the K steps

and MANIFEST.json holds each case's optimizer and hyperparameters. The gradients are drawn
with scales from 1e-3 to 1e2 and include exact zeros, so Adam's eps and bias correction
matter. Tests rerun lstm_diag.core.optim on the same gradients and compare every step to 1e-12.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent / "fixtures_optim"

SHAPES = {
    "weight_ih_l0": (12, 2),
    "weight_hh_l0": (12, 3),
    "bias_ih_l0": (12,),
    "bias_hh_l0": (12,),
    "head.weight": (1, 3),
    "head.bias": (1,),
}

# case: (torch optimizer class name, keyword arguments, number of steps)
CASES = {
    "sgd_1step": ("SGD", {"lr": 0.1}, 1),
    "sgd_5steps_wd": ("SGD", {"lr": 0.05, "weight_decay": 0.01}, 5),
    "momentum_1step": ("SGD", {"lr": 0.1, "momentum": 0.9}, 1),
    "momentum_6steps": ("SGD", {"lr": 0.02, "momentum": 0.9}, 6),
    "momentum_4steps_wd": ("SGD", {"lr": 0.3, "momentum": 0.5, "weight_decay": 1e-3}, 4),
    "adam_1step": ("Adam", {"lr": 1e-3}, 1),
    "adam_8steps": ("Adam", {"lr": 1e-2}, 8),
    "adam_5steps_custom": (
        "Adam",
        {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
        5,
    ),
}


def make_case(name, opt_name, kwargs, steps, rng):
    init = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads = {}
    for k, s in SHAPES.items():
        scale = 10.0 ** rng.uniform(-3, 2, size=(steps,) + (1,) * len(s))
        g = rng.normal(size=(steps,) + s) * scale
        g[rng.random(g.shape) < 0.05] = 0.0  # some exact zeros: Adam divides by sqrt(v) + eps
        grads[k] = g
    tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in init.items()}
    opt = getattr(torch.optim, opt_name)(list(tensors.values()), foreach=False, **kwargs)
    after = {k: np.empty((steps,) + s) for k, s in SHAPES.items()}
    for t in range(steps):
        for k, p in tensors.items():
            p.grad = torch.tensor(grads[k][t], dtype=torch.float64)
        opt.step()
        for k, p in tensors.items():
            after[k][t] = p.detach().numpy()
    arrays = {f"init.{k}": v for k, v in init.items()}
    arrays.update({f"grad.{k}": v for k, v in grads.items()})
    arrays.update({f"after.{k}": v for k, v in after.items()})
    np.savez(HERE / f"{name}.npz", **arrays)


def main():
    HERE.mkdir(exist_ok=True)
    rng = np.random.default_rng(20240611)
    manifest = {"torch_version": torch.__version__, "cases": {}}
    for name, (opt_name, kwargs, steps) in CASES.items():
        make_case(name, opt_name, kwargs, steps, rng)
        manifest["cases"][name] = {"optimizer": opt_name, "kwargs": kwargs, "steps": steps}
    (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(CASES)} cases to {HERE}")


if __name__ == "__main__":
    main()
