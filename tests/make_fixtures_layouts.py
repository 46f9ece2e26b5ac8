"""Regenerate the PyTorch reference fixtures for nn.LSTM's other layouts (tests/fixtures_layouts/).

Like tests/make_fixtures.py, but for `bidirectional=True`, `proj_size` P > 0 and
`bias=False`, alone and combined. Independent reference: PyTorch autograd. Run with
torch installed (a dev-only dependency):

    .venv/bin/python tests/make_fixtures_layouts.py

Each case is a folder with `config.yaml`, `weights.npz` (the state_dict of a module with
`lstm` = nn.LSTM(batch_first=True, ...) and `head` = nn.Linear(D R, O)), `data.npz`
(x, y) and `reference.npz`:

    loss              scalar, from the fused nn.LSTM
    grad.<name>       dL/dθ for every parameter, from the fused nn.LSTM
    dx                (B, T, I) dL/dx, from the fused nn.LSTM
    dc, dh, gates     (U, T, B, ·) per unit (U = layers x directions, nn.LSTM order:
                      layer 0, layer 0 reverse, layer 1, ...), indexed by POSITION t in the
                      sequence for both directions; from an unrolled copy of the same network
                      with retain_grad on every c_t and h_t. dh is dL/dh_t of the unit's
                      output h_t, i.e. of the projected h_t = W_hr m_t when P > 0.

The unrolled copy's loss and parameter gradients are checked against the fused module's
before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).parent / "fixtures_layouts"

# name: (I, H, layers, O, B, T, loss, target, bidirectional, proj_size, bias, dtype)
CASES = {
    "bi_l2_T40_mse_all": (3, 5, 2, 2, 3, 40, "mse", "all", True, 0, True, "float64"),
    "bi_l2_T30_ce_last": (4, 4, 2, 3, 2, 30, "cross_entropy", "last", True, 0, True, "float64"),
    "proj_l2_T50_ce_last": (4, 6, 2, 3, 3, 50, "cross_entropy", "last", False, 3, True, "float64"),
    "proj_l3_T25_mse_all": (2, 5, 3, 1, 2, 25, "mse", "all", False, 2, True, "float64"),
    "nobias_l2_T30_mse_last": (3, 4, 2, 2, 3, 30, "mse", "last", False, 0, False, "float64"),
    "bi_proj_l2_T35_ce_all": (3, 6, 2, 4, 2, 35, "cross_entropy", "all", True, 4, True, "float64"),
    "bi_proj_nobias_l2_T20_mse_last": (3, 5, 2, 2, 2, 20, "mse", "last", True, 3, False, "float64"),
    "bi_proj_l2_T24_mse_all_float32": (3, 8, 2, 2, 4, 24, "mse", "all", True, 5, True, "float32"),
}


class Net(torch.nn.Module):
    def __init__(self, I, H, L, O, bidirectional, proj_size, bias):
        super().__init__()
        self.lstm = torch.nn.LSTM(
            I, H, num_layers=L, batch_first=True, bidirectional=bidirectional, proj_size=proj_size, bias=bias
        )
        D = 2 if bidirectional else 1
        self.head = torch.nn.Linear(D * (proj_size or H), O)


def unit_pass(lstm, k, suffix, inp, reverse):
    """One direction of one layer, step by step in its processing order; inp: list over positions."""
    W_ih = getattr(lstm, f"weight_ih_l{k}{suffix}")
    W_hh = getattr(lstm, f"weight_hh_l{k}{suffix}")
    W_hr = getattr(lstm, f"weight_hr_l{k}{suffix}", None)
    b = getattr(lstm, f"bias_ih_l{k}{suffix}") + getattr(lstm, f"bias_hh_l{k}{suffix}") if lstm.bias else 0.0
    B = inp[0].shape[0]
    T = len(inp)
    h = inp[0].new_zeros(B, W_hh.shape[1])
    c = inp[0].new_zeros(B, lstm.hidden_size)
    cs, hs, gs = [None] * T, [None] * T, [None] * T  # by position
    for t in reversed(range(T)) if reverse else range(T):
        z = inp[t] @ W_ih.T + h @ W_hh.T + b
        zi, zf, zg, zo = z.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
        c = f * c + i * g
        h = o * torch.tanh(c)
        if W_hr is not None:
            h = h @ W_hr.T
        c.retain_grad()
        h.retain_grad()
        cs[t], hs[t] = c, h
        gs[t] = torch.cat([i, f, g, o], dim=1).detach()
    return cs, hs, gs


def unrolled(net: Net, x: torch.Tensor):
    """Same network, unit by unit and step by step: (output (B, T, D R), per-unit c, h, gates)."""
    lstm = net.lstm
    inp = [x[:, t] for t in range(x.shape[1])]
    units = []
    for k in range(lstm.num_layers):
        outs = []
        for d in range(2 if lstm.bidirectional else 1):
            cs, hs, gs = unit_pass(lstm, k, "_reverse" if d else "", inp, reverse=bool(d))
            units.append((cs, hs, gs))
            outs.append(hs)
        inp = [torch.cat([o[t] for o in outs], dim=1) for t in range(len(inp))]
    return torch.stack(inp, dim=1), units


def loss_fn(y_hat, y, loss, O):
    if loss == "mse":
        return torch.nn.functional.mse_loss(y_hat, y)
    return torch.nn.functional.cross_entropy(y_hat.reshape(-1, O), y.reshape(-1))


def make_case(name, I, H, L, O, B, T, loss, target, bidirectional, proj_size, bias, dtype, seed):
    torch.manual_seed(1000 + seed)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    net = Net(I, H, L, O, bidirectional, proj_size, bias).to(tdt)
    net.eval()  # the analysis is the model in eval mode (no dropout)
    x = torch.randn(B, T, I, dtype=tdt)
    lead = (B,) if target == "last" else (B, T)
    y = torch.randn(*lead, O, dtype=tdt) if loss == "mse" else torch.randint(0, O, lead)

    # Reference 1: the fused nn.LSTM for loss, parameter gradients and dL/dx.
    xf = x.clone().requires_grad_(True)
    out, _ = net.lstm(xf)
    Lf = loss_fn(net.head(out[:, -1] if target == "last" else out), y, loss, O)
    Lf.backward()
    grads = {k: p.grad.detach().clone() for k, p in net.named_parameters()}
    dx = xf.grad.detach().clone()
    net.zero_grad()

    # Reference 2: the unrolled copy for per-step dL/dc_t, dL/dh_t and gates of every unit.
    out_u, units = unrolled(net, x.clone())
    Lu = loss_fn(net.head(out_u[:, -1] if target == "last" else out_u), y, loss, O)
    Lu.backward()
    tol = 1e-12 if dtype == "float64" else 1e-5
    torch.testing.assert_close(Lu, Lf, rtol=tol, atol=tol)
    for k, p in net.named_parameters():  # the two references agree
        torch.testing.assert_close(p.grad, grads[k], rtol=tol, atol=tol)

    def per_unit(i, fn):
        return np.stack([np.stack([fn(u, t) for t in range(T)]) for u in units])

    folder = HERE / name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "weights.npz", **{k: v.detach().numpy() for k, v in net.state_dict().items()})
    np.savez(folder / "data.npz", x=x.numpy(), y=y.numpy())
    ref = {
        "loss": np.array(Lf.item()),
        "dc": per_unit(0, lambda u, t: u[0][t].grad.numpy()),
        "dh": per_unit(1, lambda u, t: u[1][t].grad.numpy()),
        "gates": per_unit(2, lambda u, t: u[2][t].numpy()),
        "dx": dx.numpy(),
    }
    ref.update({f"grad.{k.removeprefix('lstm.')}": v.numpy() for k, v in grads.items()})
    np.savez_compressed(folder / "reference.npz", **ref)
    model = {"input_size": I, "hidden_size": H, "num_layers": L, "output_size": O}
    model.update(
        {"bidirectional": bidirectional, "proj_size": proj_size, "bias": bias, "weights": "weights.npz"}
    )
    config = {
        "seed": seed,
        "dtype": dtype,
        "model": model,
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
