"""Regenerate the PyTorch reference fixtures in tests/fixtures/.

Independent reference: PyTorch autograd, not lstm-diag. PyTorch is a dev-only
dependency; install it from local disk into the project venv and rerun:

    .venv/bin/pip install torch==2.13.0
    make fixtures            # = .venv/bin/python tests/make_fixtures.py

Each case is a folder with exactly what a user would hand to lstm-diag:
`config.yaml` (task: file), `weights.npz` (PyTorch state_dict names of a module
with submodules `lstm` = nn.LSTM(batch_first=True) and `head` = nn.Linear),
`data.npz` (x, y), plus `reference.npz` with what PyTorch computed:

    loss                    scalar
    grad.<name>             dL/dθ for every parameter, from the fused nn.LSTM
    dc, dh                  (L, T, B, H) total dL/dc_t, dL/dh_t per layer, from an
                            unrolled copy of the same network with retain_grad
    dx                      (B, T, I) dL/dx
    gates                   (L, T, B, 4H) gate activations [i|f|g|o] (unrolled copy)
    clip.max_norm, clip.total_norm, clip.norm.<name>
                            torch.nn.utils.clip_grad_norm_ on those gradients: its return
                            value and the clipped gradients
    clip.clip_value, clip.value.<name>
                            torch.nn.utils.clip_grad_value_
    clip.agc_factor, clip.agc.<name>
                            adaptive gradient clipping written here in torch (Brock et al.
                            2021, unit-wise: rows of weights, whole bias vectors)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).parent / "fixtures"

# name: (I, H, layers, O, B, T, loss, target, weight scale, dtype)
CASES = {
    "l1_T1_mse_last": (3, 4, 1, 2, 3, 1, "mse", "last", 1.0, "float64"),
    "l2_T150_mse_all": (2, 5, 2, 1, 2, 150, "mse", "all", 1.0, "float64"),
    "l3_T120_ce_last": (4, 3, 3, 3, 2, 120, "cross_entropy", "last", 1.5, "float64"),
    "l1_B1_H1_ce_all": (1, 1, 1, 2, 1, 20, "cross_entropy", "all", 2.0, "float64"),
    "l2_B1_H1_T110_mse_last": (2, 1, 2, 1, 1, 110, "mse", "last", 1.0, "float64"),
    "l3_T1_ce_all": (3, 6, 3, 4, 4, 1, "cross_entropy", "all", 1.0, "float64"),
    "l2_T101_ce_all_saturating": (5, 8, 2, 3, 3, 101, "cross_entropy", "all", 3.0, "float64"),
    "l1_T64_mse_last_float32": (4, 16, 1, 1, 8, 64, "mse", "last", 1.0, "float32"),
}


class Net(torch.nn.Module):
    def __init__(self, I, H, L, O):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, H, num_layers=L, batch_first=True)
        self.head = torch.nn.Linear(H, O)


def unrolled(net: Net, x: torch.Tensor, L: int):
    """Same network, step by step, keeping every c_t and h_t for retain_grad."""
    B, T, _ = x.shape
    H = net.lstm.hidden_size
    inp = [x[:, t] for t in range(T)]
    cs, hs, gates = [], [], []
    for k in range(L):
        W_ih = getattr(net.lstm, f"weight_ih_l{k}")
        W_hh = getattr(net.lstm, f"weight_hh_l{k}")
        b = getattr(net.lstm, f"bias_ih_l{k}") + getattr(net.lstm, f"bias_hh_l{k}")
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        ck, hk, gk, out = [], [], [], []
        for t in range(T):
            z = inp[t] @ W_ih.T + h @ W_hh.T + b
            zi, zf, zg, zo = z.chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
            c = f * c + i * g
            h = o * torch.tanh(c)
            c.retain_grad()
            h.retain_grad()
            ck.append(c)
            hk.append(h)
            gk.append(torch.cat([i, f, g, o], dim=1).detach())
            out.append(h)
        inp = out
        cs.append(ck)
        hs.append(hk)
        gates.append(torch.stack(gk))
    return torch.stack(inp, dim=1), cs, hs, torch.stack(gates)


def loss_fn(y_hat, y, loss, O):
    if loss == "mse":
        return torch.nn.functional.mse_loss(y_hat, y)
    return torch.nn.functional.cross_entropy(y_hat.reshape(-1, O), y.reshape(-1))


def clip_references(net: Net, grads: dict) -> dict:
    """Clip copies of the gradients the three ways, with torch's own functions where they exist."""
    out = {}
    names = [k for k, _ in net.named_parameters()]
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).item()
    for mode, arg in (("norm", 0.3 * total), ("value", None), ("agc", 0.05)):
        for k, p in net.named_parameters():
            p.grad = grads[k].clone()
        params = list(net.parameters())
        if mode == "norm":
            out["clip.max_norm"] = np.array(arg)
            out["clip.total_norm"] = np.array(torch.nn.utils.clip_grad_norm_(params, arg).item())
        elif mode == "value":
            v = float(torch.cat([g.abs().flatten() for g in grads.values()]).median())
            out["clip.clip_value"] = np.array(v)
            torch.nn.utils.clip_grad_value_(params, v)
        else:
            out["clip.agc_factor"] = np.array(arg)
            with torch.no_grad():
                for p in params:
                    dims = tuple(range(1, p.ndim)) if p.ndim > 1 else None
                    pn = p.norm(dim=dims, keepdim=True) if dims else p.norm()
                    gn = p.grad.norm(dim=dims, keepdim=True) if dims else p.grad.norm()
                    max_n = arg * pn.clamp(min=1e-3)
                    scale = torch.where(gn >= max_n, max_n / gn.clamp(min=1e-6), torch.ones_like(gn))
                    p.grad.mul_(scale)
        for k, p in zip(names, params, strict=True):
            out[f"clip.{mode}.{k.removeprefix('lstm.')}"] = p.grad.detach().numpy().copy()
    net.zero_grad()
    return out


def make_case(name, I, H, L, O, B, T, loss, target, scale, dtype, seed):
    torch.manual_seed(seed)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    net = Net(I, H, L, O).to(tdt)
    with torch.no_grad():
        for p in net.lstm.parameters():
            p.mul_(scale)
    x = torch.randn(B, T, I, dtype=tdt)
    lead = (B,) if target == "last" else (B, T)
    y = torch.randn(*lead, O, dtype=tdt) if loss == "mse" else torch.randint(0, O, lead)

    # Reference 1: the fused nn.LSTM for loss, parameter gradients and dL/dx.
    xf = x.clone().requires_grad_(True)
    out, _ = net.lstm(xf)
    y_hat = net.head(out[:, -1] if target == "last" else out)
    Lf = loss_fn(y_hat, y, loss, O)
    Lf.backward()
    grads = {k: p.grad.detach().clone() for k, p in net.named_parameters()}
    dx = xf.grad.detach().clone()
    net.zero_grad()

    # Reference 2: the unrolled copy for per-step dL/dc_t, dL/dh_t and gates.
    xu = x.clone().requires_grad_(True)
    out_u, cs, hs, gates = unrolled(net, xu, L)
    y_hat_u = net.head(out_u[:, -1] if target == "last" else out_u)
    Lu = loss_fn(y_hat_u, y, loss, O)
    Lu.backward()
    tol = 1e-12 if dtype == "float64" else 1e-5
    for k, p in net.named_parameters():  # the two references agree
        torch.testing.assert_close(p.grad, grads[k], rtol=tol, atol=tol)

    clip = clip_references(net, grads)

    folder = HERE / name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "weights.npz", **{k: v.detach().numpy() for k, v in net.state_dict().items()})
    np.savez(folder / "data.npz", x=x.numpy(), y=y.numpy())
    ref = {
        "loss": np.array(Lf.item()),
        "dc": np.stack([np.stack([c.grad.numpy() for c in ck]) for ck in cs]),
        "dh": np.stack([np.stack([h.grad.numpy() for h in hk]) for hk in hs]),
        "dx": dx.numpy(),
        "gates": gates.numpy(),
    }
    ref.update({f"grad.{k.removeprefix('lstm.')}": v.numpy() for k, v in grads.items()})
    ref.update(clip)
    np.savez(folder / "reference.npz", **ref)
    config = {
        "seed": seed,
        "dtype": dtype,
        "model": {
            "input_size": I,
            "hidden_size": H,
            "num_layers": L,
            "output_size": O,
            "weights": "weights.npz",
        },
        "data": {"task": "file", "path": "data.npz"},
        "loss": {"type": loss, "target": target},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return {"name": name, "torch": torch.__version__, "loss": Lf.item()}


def main():
    made = [make_case(name, *spec, seed=n) for n, (name, spec) in enumerate(CASES.items())]
    (HERE / "MANIFEST.json").write_text(json.dumps(made, indent=2) + "\n")
    print(f"wrote {len(made)} fixtures to {HERE} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
