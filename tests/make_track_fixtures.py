"""Regenerate tests/fixtures_track/: checkpoints of a character model trained for real in PyTorch.

    python tests/make_track_fixtures.py      # needs torch and safetensors

A tiny character-level language model (embedding -> 2-layer nn.LSTM -> linear head) is
trained with Adam on a short English text; three checkpoints are saved as users save them:

- `step_010.pt`: a plain state dict, `torch.save(model.state_dict())` (the step is in the name);
- `ckpt_b.pt`: a checkpoint dict `{"model": ..., "optimizer": ..., "step": 60, "epoch": 1}`
  (the step in the dict; the name has no number);
- `final.safetensors`: safetensors with metadata `{"step": "150"}`.

`data.npz` holds one batch (`tokens` (B, T), next-character targets `y` (B, T)) and
`track.yaml` the config that analyses it (cross_entropy at every step). `references.json`
holds, per checkpoint, PyTorch's own loss on that batch (F.cross_entropy, mean over B x T)
and its step, so the tests check lstm-diag's loss against PyTorch without torch installed.
All files are a few KB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).parent / "fixtures_track"
TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat, "
    "and the cat ran to the log. the dog ran to the mat. "
) * 4
B, T = 8, 32  # the analysed batch
SAVE_AT = {10: "step_010.pt", 60: "ckpt_b.pt", 150: "final.safetensors"}


class CharModel(nn.Module):
    def __init__(self, vocab: int, emb: int = 6, hidden: int = 10):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        return self.head(self.lstm(self.embedding(tokens))[0])  # (B, T, V)


def windows(ids: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([ids[s : s + T] for s in starts])
    y = np.stack([ids[s + 1 : s + T + 1] for s in starts])
    return x, y


def main() -> None:
    OUT.mkdir(exist_ok=True)
    chars = sorted(set(TEXT))
    ids = np.array([chars.index(c) for c in TEXT], np.int64)
    V = len(chars)
    torch.manual_seed(0)
    model = CharModel(V).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    rng = np.random.default_rng(0)
    tokens, y = windows(ids, rng.integers(0, len(ids) - T - 1, B))
    np.savez(OUT / "data.npz", tokens=tokens, y=y)
    refs = {}

    def batch_loss() -> float:
        with torch.no_grad():
            logits = model(torch.from_numpy(tokens))
            return float(nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1)))

    for step in range(1, max(SAVE_AT) + 1):
        xb, yb = windows(ids, rng.integers(0, len(ids) - T - 1, 16))
        logits = model(torch.from_numpy(xb))
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(yb).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in SAVE_AT:
            name = SAVE_AT[step]
            sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if name == "step_010.pt":
                torch.save(sd, OUT / name)
            elif name.endswith(".pt"):
                torch.save({"model": sd, "optimizer": opt.state_dict(), "step": step, "epoch": 1}, OUT / name)
            else:
                from safetensors.torch import save_file

                save_file(
                    {k: v.contiguous() for k, v in sd.items()}, OUT / name, metadata={"step": str(step)}
                )
            refs[name] = {"step": step, "loss": batch_loss()}
    (OUT / "references.json").write_text(json.dumps(refs, indent=2) + "\n")
    (OUT / "track.yaml").write_text(
        "# tests/make_track_fixtures.py: the batch every checkpoint is analysed on\n"
        "seed: 0\n"
        "data: {task: file, path: data.npz}\n"
        "loss: {type: cross_entropy, target: all}\n"
        "diagnostics: {dynamics_samples: 2}\n"
    )


if __name__ == "__main__":
    main()
