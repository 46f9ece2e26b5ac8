"""The README's "Analyse your own PyTorch model" routes, run exactly as written.

A real model (nn.Embedding -> 2-layer nn.LSTM(batch_first=True, dropout) -> nn.Linear) is
trained briefly and saved with torch.save(state_dict); the README's YAML, shell and Python
blocks are extracted and run. Checked against the model itself in float64: per-step
||dL/dc_t|| of every layer against an unrolled nn.LSTMCell loop with retain_grad (1e-10
relative), the loss against the model in eval mode (cross_entropy, mean over all B x T
targets), and, for `capture` with a custom loss, every LSTM parameter gradient (1e-10).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_step, run

from lstm_diag import analyze

# Bound by the `trained` fixture, not at import: collecting this file would otherwise import
# torch (~4 s of CPU) in every test worker, including those that run no PyTorch test.
torch = None

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
SECTION = README.split("### Analyse your own PyTorch model", 1)[1].split("\n### ", 1)[0]
V, I, H, O, B, T = 84, 32, 128, 84, 6, 40


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", SECTION, flags=re.S)


def yaml_block(name: str) -> str:
    return next(b for b in blocks("yaml") if b.startswith(f"# {name}"))


def char_lm():
    """The README's model: nn.Embedding -> 2-layer nn.LSTM(batch_first, dropout) -> nn.Linear."""

    class CharLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(V, I)
            self.lstm = torch.nn.LSTM(I, H, num_layers=2, batch_first=True, dropout=0.2)
            self.fc = torch.nn.Linear(H, O)

        def forward(self, ids):
            out, _ = self.lstm(self.embed(ids))
            return self.fc(out)

    return CharLM()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The README's model, trained for a few gradient steps on a deterministic toy text, saved as
    users save it; one batch of token ids and targets (some padded with -100)."""
    global torch
    torch = pytest.importorskip("torch", reason="the README's PyTorch routes need PyTorch")
    d = tmp_path_factory.mktemp("routes")
    torch.manual_seed(0)
    model = char_lm()
    text = torch.tensor([(7 * i * i + 3 * i) % V for i in range(4000)])
    for _ in range(30):
        starts = torch.randint(0, len(text) - T - 1, (16,))
        ids = torch.stack([text[s : s + T] for s in starts])
        tgt = torch.stack([text[s + 1 : s + T + 1] for s in starts])
        gradient_step(model, torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), tgt.flatten()), 0.5)
    torch.save(model.state_dict(), d / "model.pt")
    tokens = torch.stack([text[s : s + T] for s in range(100, 100 + B * 50, 50)])
    targets = torch.stack([text[s + 1 : s + T + 1] for s in range(100, 100 + B * 50, 50)])
    targets[0, :5] = -100  # padding
    model.eval()
    with torch.no_grad():
        x = model.embed(tokens)
    np.savez(d / "inputs.npz", x=x.numpy(), y=targets.numpy())
    np.savez(d / "tokens.npz", tokens=tokens.numpy(), y=targets.numpy())
    return d, model, tokens, targets


def reference(model, tokens, targets, loss_fn=None):
    """Per-step ||dL/dc_t|| of each layer from an unrolled float64 LSTMCell loop, the loss,
    and the LSTM's parameter gradients (eval mode: no dropout)."""
    m = char_lm().double()
    m.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    m.eval()
    cells = []
    for k in range(2):
        cell = torch.nn.LSTMCell(I if k == 0 else H, H).double()
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(cell, n, getattr(m.lstm, f"{n}_l{k}"))  # shared: gradients land in m.lstm
        cells.append(cell)
    inp = m.embed(tokens)
    cs = []
    for cell in cells:
        h = c = torch.zeros(B, H, dtype=torch.float64)
        outs, layer_c = [], []
        for t in range(T):
            h, c = cell(inp[:, t], (h, c))
            c.retain_grad()
            outs.append(h)
            layer_c.append(c)
        inp = torch.stack(outs, 1)
        cs.append(layer_c)
    logits = m.fc(inp)
    loss = (
        loss_fn(logits, targets)
        if loss_fn
        else torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    )
    loss.backward()
    norms = [np.array([c.grad.norm().item() for c in layer]) for layer in cs]
    grads = {n: p.grad.numpy() for n, p in m.lstm.named_parameters()}
    return norms, loss.item(), grads


def test_route_a_state_dict_and_yaml(trained):
    d, model, tokens, targets = trained
    (d / "route-a.yaml").write_text(yaml_block("route-a.yaml"))
    r = analyze(d / "route-a.yaml")
    norms, loss, _ = reference(model, tokens, targets)
    # x was saved in float32 (the embedding's output): the loss agrees to float32's precision
    assert r.loss == pytest.approx(loss, rel=1e-5)
    assert r.to_dict()["config"]["model"]["hidden_size"] == H  # inferred from model.pt


def test_route_b_tokens_and_embedding_match_pytorch(trained):
    d, model, tokens, targets = trained
    (d / "route-b.yaml").write_text(yaml_block("route-b.yaml"))
    command = next(b for b in blocks("bash") if "route-b.yaml" in b)
    args = shlex.split(command.replace("\\\n", " "))[1:]
    out = run(*[d / a if a.endswith(".yaml") else a for a in args])
    assert out.exit_code == 0, out.output
    r = analyze(d / "route-b.yaml")
    norms, loss, grads = reference(model, tokens, targets)
    assert r.loss == pytest.approx(loss, rel=1e-12)
    with torch.no_grad():  # the model as the user runs it (float32, eval mode)
        m32 = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten()).item()
    assert r.loss == pytest.approx(m32, rel=1e-5)
    for k in range(2):
        np.testing.assert_allclose(r.layers[k].grad_c_norm, norms[k], rtol=1e-10, atol=0)
    for name, g in grads.items():
        np.testing.assert_allclose(r.grads[name], g, rtol=1e-9, atol=1e-13 * np.abs(g).max(), err_msg=name)
    doc = r.to_dict()
    assert doc["data"]["ignored_targets"] == 5 and doc["model"]["embedding"] == [V, I]


def test_route_c_capture_with_a_custom_loss(trained, monkeypatch):
    d, model, tokens, targets = trained
    monkeypatch.chdir(d)
    code = next(b for b in blocks("python") if "capture(" in b)
    namespace = {"model": model, "tokens": tokens, "targets": targets}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    command = next(b for b in blocks("bash") if "upstream" in b)
    out = run(*shlex.split(command.replace("\\\n", " "))[1:])
    assert out.exit_code == 0, out.output
    assert "your loss (captured)" in out.stdout
    r = analyze(None, [a for a in shlex.split(command.replace("\\\n", " "))[2:] if a != "--set"])
    _, loss, grads = reference(model, tokens, targets, namespace["my_loss"])
    assert r.loss == pytest.approx(loss, rel=1e-12) and r.loss_kind == "captured"
    for name, g in grads.items():  # the LSTM inside the model, under the user's loss
        np.testing.assert_allclose(r.grads[name], g, rtol=1e-10, atol=1e-13 * np.abs(g).max(), err_msg=name)
