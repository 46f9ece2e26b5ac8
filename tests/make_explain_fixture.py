"""Regenerate tests/fixtures_explain/toy.npz: the `explain --toy` LSTM computed by PyTorch.

Independent reference: PyTorch autograd on a hand-unrolled scalar LSTM, not
lstm-diag. The toy's weights and data are written out again here (not imported),
so the test also catches a change to the toy. PyTorch is a dev-only dependency:

    .venv/bin/pip install torch==2.13.0
    .venv/bin/python tests/make_explain_fixture.py

Every per-step quantity is stored time-major with a leading axis of T (step t at
index t-1); c and h have T+1 entries (index 0 = c_0, h_0). Gates are [i, f, g, o].

    params.<name>          the weights, PyTorch names (gate rows i, f, g, o)
    x (T,), y ()           inputs and the target of the last step
    z (T, 4)               pre-activations, eq. (1)
    gates (T, 4)           activations, eqs. (2)-(5)
    c, h (T+1,)            eqs. (6), (7); tanh_c (T,)
    y_hat, loss, dy_hat    head output, mse loss, dL/dŷ (autograd)
    dh, dc (T,)            total dL/dh_t, dL/dc_t (autograd, retain_grad)
    dz (T, 4)              dL/dz_t (autograd)
    dh0, dc0 ()            dL/dh_0, dL/dc_0 (autograd: h_0, c_0 are leaves)
    dact (T, 4)            each gate's derivative d act/dz (autograd on the activation alone)
    dtanh_c (T,)           d tanh(c)/dc at c_t (autograd)
    dl_dh_T ()             the head's part of dL/dh_T (autograd through the head alone)
    contrib.<name> (T, …)  step t's share of dL/dθ: dz_t x_t, dz_t h_{t-1}, dz_t
    grad.<name>            dL/dθ (autograd)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent / "fixtures_explain" / "toy.npz"

# The toy of `lstm-diag explain --toy` (lstm_diag/features/explain/toy.py TOY_*), written out again.
PARAMS = {
    "weight_ih_l0": [[0.5], [0.6], [0.9], [0.4]],
    "weight_hh_l0": [[-0.4], [0.5], [0.8], [0.3]],
    "bias_ih_l0": [0.1, 1.0, 0.0, -0.1],
    "bias_hh_l0": [0.0, 0.0, 0.0, 0.0],
    "head.weight": [[1.5]],
    "head.bias": [0.2],
}
X = [1.0, -0.5, 0.8]
Y = 0.5


def derivative(fn, at: torch.Tensor) -> torch.Tensor:
    """d fn(a)/da at `at`, elementwise, by autograd on a fresh leaf."""
    a = at.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(a).sum(), a)
    return g


def main() -> None:
    dt = torch.float64
    P = {k: torch.tensor(v, dtype=dt, requires_grad=True) for k, v in PARAMS.items()}
    x = torch.tensor(X, dtype=dt)
    y = torch.tensor(Y, dtype=dt)
    T = len(X)
    acts = (torch.sigmoid, torch.sigmoid, torch.tanh, torch.sigmoid)

    h0 = torch.zeros(1, dtype=dt, requires_grad=True)
    c0 = torch.zeros(1, dtype=dt, requires_grad=True)
    h, c = h0, c0
    zs, gates, cs, hs = [], [], [c0], [h0]
    for t in range(T):
        # eq. (1): (4, 1) @ (1,) + (4,) + (4, 1) @ (1,) + (4,)
        z = P["weight_ih_l0"] @ x[t : t + 1] + P["bias_ih_l0"] + P["weight_hh_l0"] @ h + P["bias_hh_l0"]
        z.retain_grad()
        i, f, g, o = (act(z[j]) for j, act in enumerate(acts))
        c = f * c + i * g
        h = o * torch.tanh(c)
        c.retain_grad()
        h.retain_grad()
        zs.append(z)
        gates.append(torch.stack([i, f, g, o]).reshape(4))
        cs.append(c)
        hs.append(h)
    y_hat = P["head.weight"] @ h + P["head.bias"]  # (1,)
    y_hat.retain_grad()
    loss = torch.nn.functional.mse_loss(y_hat, y.reshape(1))
    loss.backward()

    # The head's part of dL/dh_T alone: the loss as a function of h_T through the head only.
    hT = h.detach().clone().requires_grad_(True)
    (dl_dh_T,) = torch.autograd.grad(
        torch.nn.functional.mse_loss(P["head.weight"].detach() @ hT + P["head.bias"].detach(), y[None]), hT
    )

    z = torch.stack([zz.detach() for zz in zs])  # (T, 4)
    dz = torch.stack([zz.grad for zz in zs])  # (T, 4)
    ga = torch.stack([gg.detach() for gg in gates])  # (T, 4)
    c_all = torch.cat([cc.detach() for cc in cs])  # (T+1,)
    h_all = torch.cat([hh.detach() for hh in hs])  # (T+1,)
    dact = torch.stack([torch.stack([derivative(acts[j], z[t, j]) for j in range(4)]) for t in range(T)])
    dtanh_c = torch.stack([derivative(torch.tanh, c_all[t + 1]) for t in range(T)])

    contrib = {
        "weight_ih_l0": dz[:, :, None] * x[:, None, None],  # (T, 4, 1): eq. (14) per step
        "weight_hh_l0": dz[:, :, None] * h_all[:-1, None, None],  # (T, 4, 1): eq. (15)
        "bias_ih_l0": dz.clone(),  # (T, 4): eq. (16)
    }
    grads = {k: p.grad.detach() for k, p in P.items()}
    for name, share in contrib.items():  # the shares add up to autograd's gradient
        torch.testing.assert_close(share.sum(0), grads[name], rtol=1e-14, atol=1e-16)

    out = {
        "x": x.numpy(),
        "y": np.array(Y),
        "z": z.numpy(),
        "gates": ga.numpy(),
        "c": c_all.numpy(),
        "h": h_all.numpy(),
        "tanh_c": torch.tanh(c_all[1:]).numpy(),
        "y_hat": y_hat.detach().numpy().reshape(()),
        "loss": loss.detach().numpy().reshape(()),
        "dy_hat": y_hat.grad.numpy().reshape(()),
        "dh": torch.cat([hh.grad for hh in hs[1:]]).numpy(),
        "dc": torch.cat([cc.grad for cc in cs[1:]]).numpy(),
        "dz": dz.numpy(),
        "dh0": h0.grad.numpy().reshape(()),
        "dc0": c0.grad.numpy().reshape(()),
        "dact": dact.numpy(),
        "dtanh_c": dtanh_c.numpy(),
        "dl_dh_T": dl_dh_T.numpy().reshape(()),
    }
    out.update({f"params.{k}": np.array(v, dtype=np.float64) for k, v in PARAMS.items()})
    out.update({f"contrib.{k}": v.numpy() for k, v in contrib.items()})
    out.update({f"grad.{k}": v.numpy() for k, v in grads.items()})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(OUT, **out)
    print(f"wrote {OUT} with torch {torch.__version__}: loss {loss.item():.12g}")


if __name__ == "__main__":
    main()
