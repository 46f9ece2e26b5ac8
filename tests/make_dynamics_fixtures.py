"""Regenerate the PyTorch reference Jacobians in tests/fixtures_dynamics/.

Independent reference: `torch.autograd.functional.jacobian` of one LSTM step, not
lstm-diag. PyTorch is a dev-only dependency (see tests/make_fixtures.py):

    .venv/bin/python tests/make_dynamics_fixtures.py

Each case is three files a user could hand to lstm-diag (task: file):
`<case>.weights.npz` (PyTorch state_dict names of a module with submodules
`lstm` = nn.LSTM(batch_first=True) and `head` = nn.Linear), `<case>.data.npz` (x, y),
and `<case>.reference.npz` with what PyTorch computed, per layer k, step t (1-based
time t+1) and sample b:

    c, h     (L, T+1, B, H)        the trajectory of an unrolled copy of the network
    J        (L, T, B, 2H, 2H)     ∂(c_t, h_t)/∂(c_{t-1}, h_{t-1}) with the layer's input x_t fixed
    dcdc     (L, T, B, H, H)       dc_t/dc_{t-1} through h_{t-1} = o_{t-1} ⊙ tanh c_{t-1} with
                                   o_{t-1} fixed (docs/theory.md §4.2); h_0 is given, so t = 1 has
                                   only the diag(f_1) path
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.autograd.functional import jacobian

HERE = Path(__file__).parent / "fixtures_dynamics"

# name: (I, H, layers, B, T, weight scale, forget-bias shift)
CASES = {
    "l1_H5_T8": (3, 5, 1, 3, 8, 1.0, 0.0),
    "l2_H4_T10_saturating": (2, 4, 2, 2, 10, 3.0, 0.0),
    "l3_H3_T6_forget3": (2, 3, 3, 2, 6, 1.5, 3.0),
    "l1_H1_T5": (2, 1, 1, 2, 5, 2.0, -1.0),
}


class Net(torch.nn.Module):
    def __init__(self, I, H, L):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, H, num_layers=L, batch_first=True)
        self.head = torch.nn.Linear(H, 1)


def step(W_ih, W_hh, b, x, c, h):
    """Eqs. (1)-(7) for one sample: x (I,), c, h (H,) -> c_t, h_t."""
    z = W_ih @ x + W_hh @ h + b
    zi, zf, zg, zo = z.chunk(4)
    i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
    c_new = f * c + i * g
    return c_new, o * torch.tanh(c_new), o


def make_case(name, I, H, L, B, T, scale, shift, seed):
    torch.manual_seed(seed)
    net = Net(I, H, L).double()
    with torch.no_grad():
        for p in net.lstm.parameters():
            p.mul_(scale)
        for k in range(L):
            getattr(net.lstm, f"bias_ih_l{k}")[H : 2 * H] += shift
    x = torch.randn(B, T, I, dtype=torch.float64)
    y = torch.randn(B, 1, dtype=torch.float64)

    cs = np.zeros((L, T + 1, B, H))
    hs = np.zeros((L, T + 1, B, H))
    Js = np.zeros((L, T, B, 2 * H, 2 * H))
    dcdcs = np.zeros((L, T, B, H, H))
    inp = x.detach()  # (B, T, I_k): the layer's input, held fixed
    with torch.no_grad():
        out, _ = net.lstm(x)
    for k in range(L):
        W_ih = getattr(net.lstm, f"weight_ih_l{k}").detach()
        W_hh = getattr(net.lstm, f"weight_hh_l{k}").detach()
        b = (getattr(net.lstm, f"bias_ih_l{k}") + getattr(net.lstm, f"bias_hh_l{k}")).detach()
        layer_step = partial(step, W_ih, W_hh, b)  # (x, c, h) -> (c_t, h_t, o_t)
        layer_out = torch.zeros(B, T, H, dtype=torch.float64)
        for n in range(B):
            c = torch.zeros(H, dtype=torch.float64)
            h = torch.zeros(H, dtype=torch.float64)
            o_prev = None
            for t in range(T):
                x_t = inp[n, t]

                def state_step(s, x_t=x_t, layer_step=layer_step):
                    c_new, h_new, _ = layer_step(x_t, s[:H], s[H:])
                    return torch.cat([c_new, h_new])

                Js[k, t, n] = jacobian(state_step, torch.cat([c, h])).numpy()

                def cell_step(c_prev, x_t=x_t, h=h, o_prev=o_prev, layer_step=layer_step):
                    h_prev = h if o_prev is None else o_prev * torch.tanh(c_prev)
                    return layer_step(x_t, c_prev, h_prev)[0]

                dcdcs[k, t, n] = jacobian(cell_step, c).numpy()
                c, h, o_prev = layer_step(x_t, c, h)
                cs[k, t + 1, n] = c.numpy()
                hs[k, t + 1, n] = h.numpy()
                layer_out[n, t] = h
        # The unrolled trajectory is the fused nn.LSTM's.
        ref_out = out if k == L - 1 else None
        if ref_out is not None:
            torch.testing.assert_close(layer_out, ref_out, rtol=1e-12, atol=1e-12)
        inp = layer_out

    HERE.mkdir(parents=True, exist_ok=True)
    np.savez(HERE / f"{name}.weights.npz", **{k: v.detach().numpy() for k, v in net.state_dict().items()})
    np.savez(HERE / f"{name}.data.npz", x=x.numpy(), y=y.numpy())
    np.savez(HERE / f"{name}.reference.npz", c=cs, h=hs, J=Js, dcdc=dcdcs)
    return {"name": name, "torch": torch.__version__, "I": I, "H": H, "layers": L, "B": B, "T": T}


def main():
    made = [make_case(name, *spec, seed=100 + n) for n, (name, spec) in enumerate(CASES.items())]
    (HERE / "MANIFEST.json").write_text(json.dumps(made, indent=2) + "\n")
    print(f"wrote {len(made)} fixtures to {HERE} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
