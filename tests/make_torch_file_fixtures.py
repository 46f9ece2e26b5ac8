"""Regenerate tests/fixtures_torchfile/: weight files saved by real PyTorch (and safetensors).

    python tests/make_torch_file_fixtures.py      # needs torch (and safetensors)

Each `X.pt` is written by `torch.save` exactly as users write them; `X.reference.npz`
holds the same tensors as NumPy arrays converted by PyTorch itself (bfloat16 via
`.float()`), so that the tests check the torch-free reader against PyTorch without
needing PyTorch. All files are a few KB.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).parent / "fixtures_torchfile"


class CharLM(nn.Module):
    """Embedding -> 2-layer LSTM (inside an encoder) -> linear decoder, like the
    word-language-model example: names that are not lstm./head."""

    def __init__(self, vocab=11, emb=5, hidden=6):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.encoder = nn.Module()
        self.encoder.rnn = nn.LSTM(emb, hidden, num_layers=2, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)


class Evil:
    """A __reduce__ payload: unpickling it with pickle.load would create `pwned_marker`
    in the working directory."""

    def __reduce__(self):
        import os

        return (os.system, ("touch pwned_marker",))


class EvilExec:
    def __reduce__(self):
        return (exec, ("open('pwned_marker', 'w').write('pwned')",))


def as_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()


def save(name: str, obj, refs: dict[str, torch.Tensor] | None = None) -> None:
    torch.save(obj, OUT / name)
    if refs is not None:
        np.savez(OUT / name.replace(".pt", ".reference.npz"), **{k: as_numpy(v) for k, v in refs.items()})


def lm() -> CharLM:
    torch.manual_seed(0)
    model = CharLM()
    model.eval()
    return model


def dtypes() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(12, generator=g, dtype=torch.float64)
    big = torch.randn(10, generator=g)
    return {
        "f32": torch.randn(2, 3, generator=g),
        "f64": torch.randn(3, generator=g, dtype=torch.float64),
        "f16": torch.randn(2, 4, generator=g).half(),
        "bf16": torch.randn(3, 2, generator=g).bfloat16(),
        "bf16_extremes": torch.tensor([0.0, -0.0, 1e-40, 3e38, -1.5, float("inf")]).bfloat16(),
        "i64": torch.arange(-3, 3),
        "i32": torch.arange(4, dtype=torch.int32),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": torch.randn(3, 4, generator=g).t(),  # non-contiguous
        "offset": big[3:7],  # storage_offset 3 into a 10-element storage
        "strided": big[::3],  # stride 3
        "shared_a": base[:6].view(2, 3),  # two tensors, one storage
        "shared_b": base[4:].view(4, 2).t(),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def safetensors_files(sd: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in sd.items()}
    tensors["extra_bf16"] = torch.linspace(-2, 2, 6).bfloat16()
    save_file(tensors, OUT / "lm.safetensors", metadata={"step": "1200", "note": "char LM"})
    np.savez(OUT / "lm.safetensors.reference.npz", **{k: as_numpy(v) for k, v in tensors.items()})
    # A header that lies: it says 4x4 float32 (64 bytes) where the data holds 16 bytes.
    head = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    data = np.arange(4, dtype="<f4").tobytes()
    (OUT / "lying_header.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + data)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    model = lm()
    sd = model.state_dict()
    save("lm_state_dict.pt", sd, dict(sd))

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model.decoder(model.encoder.rnn(model.embed(torch.tensor([[1, 2, 3]])))[0]).sum()
    loss.backward()
    opt.step()
    ckpt = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 7,
        "global_step": 1234,
        "best_loss": np.float64(1.25),  # numpy scalars are common in checkpoints
        "args": {"lr": 1e-3, "name": "charlm", "layers": [2, 2]},
    }
    save("checkpoint.pt", ckpt, dict(model.state_dict()))
    save("two_state_dicts.pt", {"model": model.state_dict(), "ema": model.state_dict(), "step": 3})

    save("dtypes.pt", dtypes(), dtypes())

    small = nn.LSTM(2, 3).state_dict()
    save("malicious_system.pt", {"model": small, "payload": Evil()})
    save("malicious_exec.pt", {"model": small, "payload": EvilExec()})

    torch.manual_seed(2)
    gru = nn.GRU(4, 5, num_layers=2)
    save("gru.pt", {f"rnn.{k}": v for k, v in gru.state_dict().items()})
    lstm = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, bias=False)
    head = nn.Linear(2 * 3, 7)
    sd_bi = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
    sd_bi.update({f"head.{k}": v for k, v in head.state_dict().items()})
    save("bidir_proj_nobias.pt", sd_bi, sd_bi)
    mlp = {f"lstm.{k}": v for k, v in nn.LSTM(3, 4).state_dict().items()}
    mlp.update({f"fc1.{k}": v for k, v in nn.Linear(4, 8).state_dict().items()})
    mlp.update({f"fc2.{k}": v for k, v in nn.Linear(8, 2).state_dict().items()})
    save("mlp_head.pt", mlp)

    torch.save(small, OUT / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), OUT / "torchscript.pt")

    safetensors_files(sd)
    for f in sorted(OUT.iterdir()):
        print(f"{f.stat().st_size:7d}  {f.name}")


if __name__ == "__main__":
    main()
