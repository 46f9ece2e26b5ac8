"""Inputs as the model sees them (issue 15): token ids through an embedding, initial states,
time-major files, masked targets, the upstream-gradient mode, selections from a data file,
what-ifs on loaded weights. Numbers against PyTorch autograd in float64 (torch-only tests
skip without it) and against the engine's own definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, run

from lstm_diag import analyze
from lstm_diag.core import engine
from lstm_diag.setup.config import load_config
from lstm_diag.setup.problem import build


def lstm_state_dict(rng, I, H, L, O, V=None, head="head"):
    sd = {}
    for k in range(L):
        n_in = I if k == 0 else H
        sd[f"lstm.weight_ih_l{k}"] = rng.normal(0, 0.4, (4 * H, n_in))
        sd[f"lstm.weight_hh_l{k}"] = rng.normal(0, 0.4, (4 * H, H))
        sd[f"lstm.bias_ih_l{k}"] = rng.normal(0, 0.3, 4 * H)
        sd[f"lstm.bias_hh_l{k}"] = rng.normal(0, 0.3, 4 * H)
    if O:
        sd[f"{head}.weight"] = rng.normal(0, 0.4, (O, H))
        sd[f"{head}.bias"] = rng.normal(0, 0.1, O)
    if V:
        sd["embed.weight"] = rng.normal(0, 1.0, (V, I))
    return sd


def file_config(tmp_path, weights, data, **loss):
    cfg = {
        "model": {"weights": str(weights)},
        "data": {"task": "file", "path": str(data)},
        "loss": {"type": "cross_entropy", "target": "all", **loss},
        "diagnostics": {"dynamics": False},
    }
    return cfg


def sizes(I, H, L, O):
    return {"input_size": I, "hidden_size": H, "num_layers": L, "output_size": O}


# ------------------------------------------------------------ engine against definitions


def test_cross_entropy_masks_ignored_targets_like_pytorch_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4))
    y = rng.integers(0, 4, (3, 5))
    y_masked = y.copy()
    y_masked[0, :2] = -1  # what setup makes of ignore_index
    L, d = engine.loss_and_grad(logits, y_masked, "cross_entropy")
    keep = y_masked >= 0
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, y[..., None], -1)[..., 0][keep].mean()  # mean over kept targets
    assert L == pytest.approx(want, rel=1e-15)
    assert np.all(d[~keep] == 0) and np.allclose(d[keep].sum(-1), 0)
    # no mask: bitwise the unmasked formula
    L0, _ = engine.loss_and_grad(logits, y, "cross_entropy")
    assert L0 == -float(np.mean(np.take_along_axis(logp, y[..., None], -1)))


def test_upstream_functional_is_not_reported_as_a_loss(tmp_path):
    rng = np.random.default_rng(1)
    sd = lstm_state_dict(rng, 3, 5, 1, 0)
    np.savez(tmp_path / "w.npz", **sd)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(2, 7, 3)), dh=rng.normal(size=(2, 7, 5)))
    cfg = {
        "model": {**sizes(3, 5, 1, 1), "weights": str(tmp_path / "w.npz")},
        "data": {"task": "file", "path": str(tmp_path / "d.npz")},
        "loss": {"type": "upstream"},
    }
    r = analyze(cfg)
    doc = r.to_dict()
    assert doc["loss"] is None and doc["loss_kind"] == "none" and doc["model"]["head"] is False
    np.savez(
        tmp_path / "d.npz", x=rng.normal(size=(2, 7, 3)), dh=rng.normal(size=(2, 7, 5)), expected_loss=2.5
    )
    out = run("analyze", "--format", "markdown", *sum((["--set", f"{k}={v}"] for k, v in flat(cfg)), []))
    assert out.exit_code == 0, out.output
    assert "your loss (captured) = 2.5" in out.stdout


def flat(cfg, prefix=""):
    for k, v in cfg.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


# ------------------------------------------------------------------ against PyTorch


def torch_model(sd, I, H, L, O, V=None, dropout=0.0):
    torch = pytest.importorskip("torch", reason="PyTorch reference (pip install torch)")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            if V:
                self.embed = nn.Embedding(V, I)
            self.lstm = nn.LSTM(I, H, num_layers=L, batch_first=True, dropout=dropout)
            self.head = nn.Linear(H, O)

    net = Net().double()
    net.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    return net.eval()


def unrolled(net, x, h0=None, c0=None):
    """Per-step cell states of every layer from an LSTMCell loop (retain_grad on each c_t)."""
    import torch

    L = net.lstm.num_layers
    B, T, _ = x.shape
    H = net.lstm.hidden_size
    cells = []
    for k in range(L):
        cell = torch.nn.LSTMCell(x.shape[2] if k == 0 else H, H).double()
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).data = getattr(net.lstm, f"{n}_l{k}").data
        cells.append(cell)
    inp = x
    cs = []
    for k in range(L):
        h = torch.zeros(B, H, dtype=torch.float64) if h0 is None else h0[k]
        c = torch.zeros(B, H, dtype=torch.float64) if c0 is None else c0[k]
        outs, layer_c = [], []
        for t in range(T):
            h, c = cells[k](inp[:, t], (h, c))
            c.retain_grad()
            outs.append(h)
            layer_c.append(c)
        inp = torch.stack(outs, 1)
        cs.append(layer_c)
    return inp, cs, cells


def test_tokens_ignore_index_and_initial_states_against_pytorch(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch reference (pip install torch)")
    import torch.nn.functional as F

    I, H, L, O, V, B, T = 4, 6, 2, 5, 11, 3, 9
    rng = np.random.default_rng(2)
    sd = lstm_state_dict(rng, I, H, L, O, V)
    net = torch_model(sd, I, H, L, O, V, dropout=0.3)
    tokens = rng.integers(0, V, (B, T))
    y = rng.integers(0, O, (B, T))
    y[1, :4] = -100  # padding
    h0, c0 = rng.normal(0, 0.5, (L, B, H)), rng.normal(0, 0.5, (L, B, H))
    np.savez(tmp_path / "w.npz", **{k.replace("embed.", "embedding."): v for k, v in sd.items()})
    np.savez(tmp_path / "d.npz", tokens=tokens, y=y, h0=h0, c0=c0)

    ht0, ct0 = (torch.tensor(a, requires_grad=True) for a in (h0, c0))
    x = net.embed(torch.tensor(tokens))
    out, cs, cells = unrolled(net, x, ht0, ct0)
    loss = F.cross_entropy(net.head(out).reshape(-1, O), torch.tensor(y).reshape(-1))
    loss.backward()

    cfg = file_config(tmp_path, tmp_path / "w.npz", tmp_path / "d.npz")
    cfg["model"].update(sizes(I, H, L, O))
    r = analyze(cfg)
    assert r.loss == pytest.approx(loss.item(), rel=1e-13)
    for k in range(L):
        want = np.array([c.grad.norm().item() for c in cs[k]])
        np.testing.assert_allclose(r.layers[k].grad_c_norm, want, rtol=1e-10)
    np.testing.assert_allclose(
        r.grads["embedding.weight"], net.embed.weight.grad.numpy(), rtol=1e-10, atol=1e-15
    )
    for k in range(L):
        for n in ("weight_ih", "weight_hh", "bias_ih"):
            want = getattr(cells[k], n).grad.numpy()
            np.testing.assert_allclose(
                r.grads[f"{n}_l{k}"], want, rtol=1e-10, atol=1e-15, err_msg=f"{n}_l{k}"
            )
    np.testing.assert_allclose(
        np.stack([g.dh0 for g in r.bwd.layers]), ht0.grad.numpy(), rtol=1e-10, atol=1e-15
    )
    np.testing.assert_allclose(
        np.stack([g.dc0 for g in r.bwd.layers]), ct0.grad.numpy(), rtol=1e-10, atol=1e-15
    )
    doc = r.to_dict()
    assert doc["data"]["ignored_targets"] == 4 and doc["data"]["targets"] == B * T
    assert doc["parameters"]["embedding.weight"]["shape"] == [V, I]
    # checkpointed BPTT gives the same numbers with tokens and initial states
    ck = analyze(cfg, ["diagnostics.memory=checkpoint"])
    assert ck.loss == r.loss
    np.testing.assert_allclose(
        ck.grads["embedding.weight"], r.grads["embedding.weight"], rtol=1e-12, atol=1e-16
    )
    np.testing.assert_allclose(ck.layers[0].grad_c_norm, r.layers[0].grad_c_norm, rtol=1e-12)


def test_upstream_mode_reproduces_any_head_and_loss(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch reference (pip install torch)")
    I, H, L, B, T = 3, 5, 2, 4, 8
    rng = np.random.default_rng(3)
    sd = lstm_state_dict(rng, I, H, L, 0)
    lstm = torch.nn.LSTM(I, H, num_layers=L, batch_first=True).double()
    lstm.load_state_dict({k.removeprefix("lstm."): torch.tensor(v) for k, v in sd.items()})
    mlp = torch.nn.Sequential(torch.nn.Linear(H, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    x = torch.tensor(rng.normal(size=(B, T, I)))
    out, _ = lstm(x)
    out.retain_grad()
    loss = (mlp(out) ** 4).mean() + out[:, -1].abs().sum()  # any head, any loss
    loss.backward()
    np.savez(tmp_path / "w.npz", **sd)
    np.savez(
        tmp_path / "d.npz",
        x=x.numpy(),
        dh=out.grad.numpy(),
        expected_loss=loss.item(),
        output=out.detach().numpy(),
    )
    cfg = {
        "model": {**sizes(I, H, L, 1), "weights": str(tmp_path / "w.npz")},
        "data": {"task": "file", "path": str(tmp_path / "d.npz")},
        "loss": {"type": "upstream"},
    }
    r = analyze(cfg)
    for name, p in lstm.named_parameters():
        np.testing.assert_allclose(r.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)
    assert r.to_dict()["loss"] == loss.item() and r.loss_kind == "captured"
    ck = analyze(cfg, ["diagnostics.memory=checkpoint"])
    for name, p in lstm.named_parameters():
        np.testing.assert_allclose(ck.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)
    # a different LSTM output than the file says the model computed: refused
    np.savez(tmp_path / "d.npz", x=x.numpy() + 0.1, dh=out.grad.numpy(), output=out.detach().numpy())
    with pytest.raises(Exception, match="not read as the model computes it"):
        analyze(cfg)


# --------------------------------------------------------------- reading a data file


def test_time_major_file_warns_and_reads_with_layout(tmp_path):
    rng = np.random.default_rng(4)
    sd = lstm_state_dict(rng, 3, 4, 1, 2)
    np.savez(tmp_path / "w.npz", **sd)
    x = rng.normal(size=(30, 5, 3))  # (T, B, I): PyTorch's default layout
    y = rng.integers(0, 2, (30, 5))
    np.savez(tmp_path / "d.npz", x=x, y=y)

    def args(path, *more):
        sets = [f"model.weights={tmp_path / 'w.npz'}", "model.input_size=3", "model.hidden_size=4"]
        sets += ["model.output_size=2", "data.task=file", f"data.path={path}", "loss.type=cross_entropy"]
        sets += ["loss.target=all", *more]
        return ["analyze", "--format", "json", "--no-dynamics", *sum((["--set", s] for s in sets), [])]

    r = run(*args(tmp_path / "d.npz"))
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and "read batch-first as B=30 sequences of T=5 steps" in r.stderr
    assert "data.layout: time_major" in r.stderr
    tm = run(*args(tmp_path / "d.npz", "data.layout=time_major"))
    assert tm.exit_code == 0 and "warning" not in tm.stderr
    doc = json.loads(tm.stdout)
    assert (doc["config"]["data"]["batch_size"], doc["config"]["data"]["seq_len"]) == (5, 30)
    bf = tmp_path / "bf.npz"
    np.savez(bf, x=np.swapaxes(x, 0, 1), y=y.T)
    same = run(*args(bf))
    assert "warning" not in same.stderr and json.loads(same.stdout)["loss"] == doc["loss"]


def test_selection_from_a_data_file_is_said_or_refused(tmp_path):
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(6, 20, 8)), y=rng.normal(size=(6, 1)))
    base = ["analyze", "--no-dynamics", "--set", "data.task=file", "--set", f"data.path={tmp_path / 'd.npz'}"]
    whole = run(*base, "--format", "json")
    assert whole.exit_code == 0, whole.output
    assert json.loads(whole.stdout)["data"]["selected"] is False
    sel = run(*base, "--format", "json", "--set", "data.seq_len=12", "--set", "data.batch_size=4")
    doc = json.loads(sel.stdout)
    assert doc["data"]["selected"] and len(doc["layers"][0]["grad_c_norm"]) == 12
    assert (doc["config"]["data"]["batch_size"], doc["config"]["data"]["seq_len"]) == (4, 12)
    assert doc["loss"] != json.loads(whole.stdout)["loss"]
    table = run(*base, "--set", "data.seq_len=12")
    assert "first 6 of 6 sequences, first 12 of 20 steps" in table.stdout.replace("\n│        ", " ")
    too_long = run(*base, "--set", "data.seq_len=21")
    assert too_long.exit_code == 2 and "data.seq_len: 21 is more than the 20 steps" in too_long.stderr


@pytest.mark.parametrize("fmt", ["table", "json", "markdown", "html", "png"])
def test_what_ifs_on_loaded_weights_named_in_every_format(tmp_path, fmt, figures_not_drawn):
    w = tmp_path / "w.npz"
    tiny = [a for s in TINY for a in ("--set", s)]  # the what-if names do not depend on the size
    run("analyze", *tiny, "--save-weights", w, "--format", "json", "--no-dynamics")  # the weights alone
    sets = [
        *tiny,
        "--set",
        f"model.weights={w}",
        "--set",
        "model.forget_bias=3",
        "--set",
        "model.recurrent_scale=0.5",
    ]
    phrase = "forget bias 3 on loaded weights"
    if fmt == "html":
        out = tmp_path / "r.html"
        r = run("report", *sets, "-o", out, "--dpi", 30, "--set", "diagnostics.dynamics=false")
        assert r.exit_code == 0, r.output
        text = out.read_text()
        assert phrase in text and "recurrent scale 0.5 on loaded weights" in text
    elif fmt == "png":
        from lstm_diag.report.figures.analysis import describe

        doc = analyze(None, [s for s in sets if s != "--set"]).to_dict()
        assert phrase in describe(doc)
    else:
        r = run("analyze", *sets, "--format", fmt, "--no-dynamics")
        assert r.exit_code == 0, r.output
        text = r.stdout.replace("\n│ ", " ").replace("│", "")
        assert phrase in " ".join(text.split())
        if fmt == "json":
            assert json.loads(r.stdout)["model"]["what_if"][0] == phrase


def test_what_ifs_change_the_loaded_weights_as_defined(tmp_path):
    w = tmp_path / "w.npz"
    run("analyze", "--save-weights", w, "--format", "json")
    plain = build(load_config(None, [f"model.weights={w}"])[0])
    p = build(
        load_config(
            None, [f"model.weights={w}", "model.forget_bias=3", "model.gain=2", "model.recurrent_scale=0.5"]
        )[0]
    )
    H = 32
    b = p.params["bias_ih_l0"] + p.params["bias_hh_l0"]
    assert np.all(b[H : 2 * H] == 3.0)
    np.testing.assert_array_equal(b[:H], (plain.params["bias_ih_l0"] + plain.params["bias_hh_l0"])[:H])
    np.testing.assert_array_equal(p.params["weight_hh_l0"], plain.params["weight_hh_l0"] * 2 * 0.5)
    np.testing.assert_array_equal(p.params["weight_ih_l0"], plain.params["weight_ih_l0"] * 2)
    np.testing.assert_array_equal(p.params["head.weight"], plain.params["head.weight"])
    r = run("analyze", "--set", f"model.weights={w}", "--set", "model.init=orthogonal")
    assert r.exit_code == 2 and "model.init: 'orthogonal' would replace the loaded weights" in r.stderr
