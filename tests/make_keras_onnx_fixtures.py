"""Regenerate the Keras and ONNX fixtures in tests/fixtures_formats/.

The model files are written by the real libraries: Keras 3 (torch backend) saves the
`.keras` and `.weights.h5` files, `torch.onnx.export` (the TorchScript exporter,
`dynamo=False`, which needs no onnxscript; also the dynamo exporter when onnxscript is
installed) and `onnx.helper` write the `.onnx` files.
The model's own outputs (`logits` in data.npz) come from the library that owns the
format: Keras' `model(x)` for Keras files, the `onnx` package's reference evaluator
(`onnx.reference.ReferenceEvaluator`, not onnxruntime) for ONNX files.

The reference (`reference.npz`) is PyTorch autograd in float64 on the same weights,
written in nn.LSTM names; it is independent of lstm-diag:

    loss                 scalar, F.cross_entropy / F.mse_loss (mean)
    y_hat                the float64 model output
    grad.<name>          dL/dθ for every parameter, from the fused nn.LSTM
    dc                   (L, D, T, B, H) total dL/dc_t per layer and direction, from an
                         unrolled copy (nn.LSTMCell per direction, retain_grad)
    gates                (L, D, T, B, 4H) gate activations [i|f|g|o] of the unrolled copy
    sd.<name>            the weights in nn.LSTM names and layout (what a reader must return)

Run (needs torch, keras, h5py, onnx):

    KERAS_BACKEND=torch python tests/make_keras_onnx_fixtures.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

HERE = Path(__file__).parent / "fixtures_formats"
TORCH_TO_ONNX = [0, 3, 1, 2]  # blocks i, f, g, o (PyTorch) -> i, o, f, c (ONNX)


# ----------------------------------------------------------------------------- reference


def reference(sd: dict, data: dict, loss: str, target: str) -> dict:
    """PyTorch float64: fused nn.LSTM for loss and dL/dθ, unrolled LSTMCells for dL/dc_t, gates."""
    sd = {k: torch.tensor(np.asarray(v, np.float64)) for k, v in sd.items()}
    L = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in sd if k.startswith("lstm.weight_ih"))
    D = 2 if "lstm.weight_ih_l0_reverse" in sd else 1
    H = sd["lstm.weight_hh_l0"].shape[1]
    emb = sd.get("embedding.weight")
    y = torch.tensor(data["y"])

    def inputs():
        if emb is None:
            return torch.tensor(np.asarray(data["x"], np.float64)), None
        E = emb.clone().requires_grad_(True)
        return E[torch.tensor(data["tokens"])], E

    def head_and_loss(out, W, b):
        y_hat = (out[:, -1] if target == "last" else out) @ W.T + b
        if loss == "mse":
            return y_hat, torch.nn.functional.mse_loss(y_hat, y.double())
        return y_hat, torch.nn.functional.cross_entropy(y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1))

    # fused
    x, E = inputs()
    bias = "lstm.bias_ih_l0" in sd
    lstm = torch.nn.LSTM(x.shape[2], H, num_layers=L, batch_first=True, bidirectional=D == 2, bias=bias)
    lstm = lstm.double()
    lstm.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("lstm.")}, strict=True)
    W = sd["head.weight"].clone().requires_grad_(True)
    b = sd["head.bias"].clone().requires_grad_(True)
    out, _ = lstm(x)
    y_hat, Lval = head_and_loss(out, W, b)
    Lval.backward()
    ref = {"loss": np.array(Lval.item()), "y_hat": y_hat.detach().numpy()}
    for k, p in lstm.named_parameters():
        ref[f"grad.lstm.{k}"] = p.grad.numpy()
    ref["grad.head.weight"], ref["grad.head.bias"] = W.grad.numpy(), b.grad.numpy()
    if E is not None:
        ref["grad.embedding.weight"] = E.grad.numpy()

    # unrolled
    x, _ = inputs()
    x = x.detach()
    B, T = x.shape[:2]
    inp = [x[:, t] for t in range(T)]
    gates, cs = [], []
    for k in range(L):
        outs = []
        for d, sfx in enumerate(["", "_reverse"][:D]):
            cell = torch.nn.LSTMCell(inp[0].shape[1], H, bias=bias).double()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[: 4 if bias else 2]:
                getattr(cell, name).data.copy_(sd[f"lstm.{name}_l{k}{sfx}"])
            b_ih = cell.bias_ih if bias else 0.0
            b_hh = cell.bias_hh if bias else 0.0
            h = torch.zeros(B, H, dtype=torch.float64)
            c = torch.zeros(B, H, dtype=torch.float64)
            hs, cl, gl = [None] * T, [None] * T, [None] * T
            for t in range(T) if d == 0 else range(T - 1, -1, -1):
                with torch.no_grad():
                    z = inp[t] @ cell.weight_ih.T + b_ih + h @ cell.weight_hh.T + b_hh
                    gi, gf, gg, go = z.chunk(4, 1)
                    gl[t] = torch.cat([gi.sigmoid(), gf.sigmoid(), gg.tanh(), go.sigmoid()], 1)
                h, c = cell(inp[t], (h, c))
                c.retain_grad()
                hs[t], cl[t] = h, c
            outs.append(hs)
            cs.append(cl)
            gates.append(torch.stack(gl).numpy())
        inp = [torch.cat([o[t] for o in outs], 1) for t in range(T)]
    out = torch.stack(inp, 1)
    y_u, L_u = head_and_loss(out, sd["head.weight"], sd["head.bias"])
    L_u.backward()
    assert abs(L_u.item() - ref["loss"]) < 1e-12, (L_u.item(), ref["loss"])
    ref["dc"] = np.stack([np.stack([c.grad.numpy() for c in cl]) for cl in cs]).reshape(L, D, T, B, H)
    ref["gates"] = np.stack(gates).reshape(L, D, T, B, 4 * H)
    for k, v in sd.items():
        ref[f"sd.{k}"] = v.numpy()
    return ref


def write_case(name: str, files: dict, data: dict, ref: dict | None, config: dict | None) -> None:
    folder = HERE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for fname, writer in files.items():
        writer(folder / fname)
    if data is not None:
        np.savez(folder / "data.npz", **data)
    if ref is not None:
        np.savez(folder / "reference.npz", **ref)
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def check_logits(name: str, own: np.ndarray, y_hat64: np.ndarray) -> float:
    """The library's output against the reference. Keras' torch backend computes a float64
    Dense only to ~1e-7 (measured: 2.7e-7 on a (2, 8) @ (8, 2) product), hence 1e-6."""
    err = float(np.max(np.abs(own.astype(np.float64) - y_hat64)))
    tol = 1e-4 if own.dtype == np.float32 else 1e-6
    assert err < tol, (name, err)
    print(f"{name}: library output vs float64 PyTorch reference on the read weights: max |diff| = {err:.2e}")
    return err


# ----------------------------------------------------------------------------- Keras


def keras_to_torch(kernel, recurrent, bias, suffix):
    """Keras LSTM (kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H), gates i, f, c, o)."""
    return {
        f"lstm.weight_ih{suffix}": kernel.T,
        f"lstm.weight_hh{suffix}": recurrent.T,
        f"lstm.bias_ih{suffix}": bias,
        f"lstm.bias_hh{suffix}": np.zeros_like(bias),
    }


def randomize(model, rng, scale=0.6):
    model.set_weights([rng.normal(0, scale, w.shape).astype(w.dtype) for w in model.get_weights()])


def keras_cases(rng):
    import keras

    # Embedding -> LSTM(return_sequences) -> LSTM -> Dense, float32 as most saved models are.
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    V, I, H, O, B, T = 11, 3, 4, 3, 3, 6
    tok = keras.Input((T,), dtype="int32", name="tokens")
    z = keras.layers.Embedding(V, I, name="embed")(tok)
    z = keras.layers.LSTM(H, return_sequences=True, name="encoder")(z)
    z = keras.layers.LSTM(H, name="top")(z)
    model = keras.Model(tok, keras.layers.Dense(O, name="classifier")(z))
    randomize(model, rng)
    tokens = rng.integers(0, V, (B, T)).astype(np.int64)
    logits = np.asarray(model(tokens.astype(np.int32)).detach().cpu().numpy())
    y = rng.integers(0, O, B)
    w = {v.path: np.asarray(v.numpy()) for v in model.weights}
    sd = {"embedding.weight": w["embed/embeddings"]}
    for k, layer in enumerate(["encoder", "top"]):
        sd.update(
            keras_to_torch(
                *(w[f"{layer}/lstm_cell/{n}"] for n in ("kernel", "recurrent_kernel", "bias")), f"_l{k}"
            )
        )
    sd["head.weight"], sd["head.bias"] = w["classifier/kernel"].T, w["classifier/bias"]
    data = {"tokens": tokens, "y": y, "logits": logits}
    ref = reference(sd, data, "cross_entropy", "last")
    check_logits("keras_stack", logits, ref["y_hat"])
    config = {
        "model": {"weights": "model.keras"},
        "data": {"task": "file", "path": "data.npz"},
        "loss": {"type": "cross_entropy", "target": "last"},
    }
    write_case(
        "keras_stack",
        {"model.keras": model.save, "model.weights.h5": model.save_weights, "legacy.h5": model.save},
        data,
        ref,
        config,
    )

    # Bidirectional stack with a per-step Dense head, float64.
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    I, H, O, B, T = 3, 4, 2, 2, 5
    inp = keras.Input((T, I), name="x")
    z = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True), name="bi1")(inp)
    z = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True), name="bi2")(z)
    model = keras.Model(inp, keras.layers.Dense(O, name="out")(z))
    randomize(model, rng)
    x = rng.normal(0, 1, (B, T, I))
    y = rng.normal(0, 1, (B, T, O))
    logits = np.asarray(model(x).detach().cpu().numpy())
    w = {v.path: np.asarray(v.numpy()) for v in model.weights}
    sd = {}
    for k, layer in enumerate(["bi1", "bi2"]):
        for d, sfx in (("forward", ""), ("backward", "_reverse")):
            names = [k2 for k2 in w if k2.startswith(f"{layer}/{d}_")]
            kern, rec, bias = (
                w[next(n for n in names if n.endswith("/" + v))]
                for v in ("kernel", "recurrent_kernel", "bias")
            )
            sd.update(keras_to_torch(kern, rec, bias, f"_l{k}{sfx}"))
    sd["head.weight"], sd["head.bias"] = w["out/kernel"].T, w["out/bias"]
    data = {"x": x, "y": y, "logits": logits}
    ref = reference(sd, data, "mse", "all")
    check_logits("keras_bidirectional", logits, ref["y_hat"])
    config = {
        "model": {"weights": "model.keras"},
        "data": {"task": "file", "path": "data.npz"},
        "loss": {"type": "mse", "target": "all"},
    }
    write_case("keras_bidirectional", {"model.keras": model.save, "legacy.h5": model.save}, data, ref, config)

    # One LSTM and a softmax Dense (the usual Keras classifier): the model outputs probabilities.
    I, H, O, B, T = 2, 3, 4, 3, 7
    model = keras.Sequential(
        [keras.Input((T, I)), keras.layers.LSTM(H, name="rnn"), keras.layers.Dense(O, activation="softmax")]
    )
    randomize(model, rng, 1.0)
    x = rng.normal(0, 1, (B, T, I))
    probs = np.asarray(model(x).detach().cpu().numpy())
    w = {v.path.split("/", 1)[1]: np.asarray(v.numpy()) for v in model.weights}
    sd = keras_to_torch(*(w[f"rnn/lstm_cell/{n}"] for n in ("kernel", "recurrent_kernel", "bias")), "_l0")
    dense = next(k.split("/")[0] for k in w if k.startswith("dense"))
    sd["head.weight"], sd["head.bias"] = w[f"{dense}/kernel"].T, w[f"{dense}/bias"]
    data = {"x": x, "y": rng.integers(0, O, B), "logits": probs}
    ref = reference(sd, data, "cross_entropy", "last")
    err = np.max(np.abs(probs - torch.softmax(torch.tensor(ref["y_hat"]), -1).numpy()))
    print(f"keras_softmax: Keras probabilities vs softmax of the float64 reference: {err:.2e}")
    assert err < 1e-5
    config = {
        "model": {"weights": "model.keras"},
        "data": {"task": "file", "path": "data.npz"},
        "loss": {"type": "cross_entropy", "target": "last"},
    }
    write_case("keras_softmax", {"model.keras": model.save, "legacy.h5": model.save}, data, ref, config)

    # LSTMs without biases and a TimeDistributed(Dense) head on every step (float64).
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    I, H, O, B, T = 3, 4, 2, 2, 6
    model = keras.Sequential(
        [
            keras.Input((T, I)),
            keras.layers.LSTM(H, use_bias=False, return_sequences=True, name="l1"),
            keras.layers.LSTM(H, use_bias=False, return_sequences=True, name="l2"),
            keras.layers.TimeDistributed(keras.layers.Dense(O), name="td"),
        ]
    )
    randomize(model, rng)
    x = rng.normal(0, 1, (B, T, I))
    logits = np.asarray(model(x).detach().cpu().numpy())
    w = {v.path.split("/", 1)[1]: np.asarray(v.numpy()) for v in model.weights}
    sd = {}
    for k, layer in enumerate(["l1", "l2"]):
        sd[f"lstm.weight_ih_l{k}"] = w[f"{layer}/lstm_cell/kernel"].T
        sd[f"lstm.weight_hh_l{k}"] = w[f"{layer}/lstm_cell/recurrent_kernel"].T
    dense = [k for k in w if k.startswith("td/")]
    sd["head.weight"] = w[next(k for k in dense if k.endswith("kernel"))].T
    sd["head.bias"] = w[next(k for k in dense if k.endswith("bias"))]
    data = {"x": x, "y": rng.normal(0, 1, (B, T, O)), "logits": logits}
    ref = reference(sd, data, "mse", "all")
    check_logits("keras_nobias_timedistributed", logits, ref["y_hat"])
    config = {
        "model": {"weights": "model.keras"},
        "data": {"task": "file", "path": "data.npz"},
        "loss": {"type": "mse", "target": "all"},
    }
    write_case(
        "keras_nobias_timedistributed",
        {"model.keras": model.save, "legacy.h5": model.save},
        data,
        ref,
        config,
    )

    # Models the engine cannot express: each must be refused, naming what it is.
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    refused = {
        "go_backwards": keras.Sequential(
            [keras.Input((5, 3)), keras.layers.LSTM(4, go_backwards=True), keras.layers.Dense(2)]
        ),
        "relu": keras.Sequential(
            [keras.Input((5, 3)), keras.layers.LSTM(4, activation="relu"), keras.layers.Dense(2)]
        ),
        "bidirectional_last": keras.Sequential(
            [keras.Input((5, 3)), keras.layers.Bidirectional(keras.layers.LSTM(4)), keras.layers.Dense(2)]
        ),
        "mixed_directions": keras.Sequential(
            [
                keras.Input((5, 3)),
                keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
                keras.layers.LSTM(4),
                keras.layers.Dense(2),
            ]
        ),
        "merge_sum": keras.Sequential(
            [
                keras.Input((5, 3)),
                keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), merge_mode="sum"),
                keras.layers.Dense(2),
            ]
        ),
    }
    write_case("keras_refused", {f"{n}.keras": m.save for n, m in refused.items()}, None, None, None)


# ----------------------------------------------------------------------------- ONNX


def onnx_logits(path: Path, feeds: dict) -> np.ndarray:
    return np.asarray(ReferenceEvaluator(str(path)).run(None, feeds)[0])


class TorchNet(torch.nn.Module):
    def __init__(self, V, I, H, L, O, bidirectional, target):
        super().__init__()
        self.embedding = torch.nn.Embedding(V, I) if V else None
        self.lstm = torch.nn.LSTM(I, H, num_layers=L, batch_first=True, bidirectional=bidirectional)
        self.head = torch.nn.Linear(H * (2 if bidirectional else 1), O)
        self.target = target

    def forward(self, inp):
        out, (h, _) = self.lstm(self.embedding(inp) if self.embedding is not None else inp)
        if self.target == "h_n":
            return self.head(h[-1])  # the top layer's final state: out[:, -1] for one direction
        return self.head(out[:, -1] if self.target == "last" else out)


def torch_onnx_case(name, rng, V, I, H, L, O, B, T, bidirectional, loss, target, dynamo=False):
    torch.manual_seed(int(rng.integers(1 << 30)))
    net = TorchNet(V, I, H, L, O, bidirectional, target).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.8, 0.8)
    if V:
        inp = rng.integers(0, V, (B, T)).astype(np.int64)
        data = {"tokens": inp}
    else:
        inp = rng.normal(0, 1, (B, T, I)).astype(np.float32)
        data = {"x": inp}
    lead = (B,) if target != "all" else (B, T)
    data["y"] = rng.integers(0, O, lead) if loss == "cross_entropy" else rng.normal(0, 1, lead + (O,))

    def export(path):
        torch.onnx.export(
            net,
            (torch.tensor(inp),),
            str(path),
            dynamo=dynamo,
            input_names=["input"],
            output_names=["logits"],
        )
        data["logits"] = onnx_logits(path, {"input": inp})

    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    folder = HERE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    export(folder / "model.onnx")
    target = "last" if target == "h_n" else target
    ref = reference(sd, data, loss, target)
    check_logits(name, data["logits"], ref["y_hat"])
    np.savez(folder / "data.npz", **data)
    np.savez(folder / "reference.npz", **ref)
    config = {
        "model": {"weights": "model.onnx"},
        "data": {"task": "file", "path": "data.npz"},
        "loss": {"type": loss, "target": target},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def onnx_blocks(a: np.ndarray) -> np.ndarray:
    """PyTorch gate blocks (i, f, g, o) along axis 0 -> ONNX (i, o, f, c)."""
    H = a.shape[0] // 4
    return np.concatenate([a[j * H : (j + 1) * H] for j in TORCH_TO_ONNX])


def lstm_initializers(sd: dict, D: int, k: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sfx = ["", "_reverse"][:D]
    W = np.stack([onnx_blocks(sd[f"lstm.weight_ih_l{k}{s}"]) for s in sfx])  # (D, 4H, I)
    R = np.stack([onnx_blocks(sd[f"lstm.weight_hh_l{k}{s}"]) for s in sfx])  # (D, 4H, H)
    Bv = np.stack(
        [
            np.concatenate(
                [onnx_blocks(sd[f"lstm.bias_ih_l{k}{s}"]), onnx_blocks(sd[f"lstm.bias_hh_l{k}{s}"])]
            )
            for s in sfx
        ]
    )  # (D, 8H)
    return W, R, Bv


def random_sd(rng, I, H, D, O, dtype):
    sd = {}
    for s in ["", "_reverse"][:D]:
        sd[f"lstm.weight_ih_l0{s}"] = rng.uniform(-0.8, 0.8, (4 * H, I))
        sd[f"lstm.weight_hh_l0{s}"] = rng.uniform(-0.8, 0.8, (4 * H, H))
        sd[f"lstm.bias_ih_l0{s}"] = rng.uniform(-0.8, 0.8, 4 * H)
        sd[f"lstm.bias_hh_l0{s}"] = rng.uniform(-0.8, 0.8, 4 * H)
    sd["head.weight"] = rng.uniform(-0.8, 0.8, (O, D * H))
    sd["head.bias"] = rng.uniform(-0.8, 0.8, O)
    return {k: v.astype(dtype) for k, v in sd.items()}


def helper_bidirectional(rng):
    """A bidirectional LSTM written with onnx.helper: layout=1 (batch-first), W behind an
    Identity, B as a Constant node, the head MatMul + Add on every step of Y."""
    I, H, O, B, T = 3, 4, 2, 2, 5
    sd = random_sd(rng, I, H, 2, O, np.float64)
    W, R, Bv = lstm_initializers(sd, 2)
    f64 = TensorProto.DOUBLE
    nodes = [
        helper.make_node("Identity", ["W_raw"], ["W"]),
        helper.make_node("Constant", [], ["B"], value=numpy_helper.from_array(Bv, "B_value")),
        helper.make_node(
            "LSTM", ["x", "W", "R", "B"], ["Y", "", ""], hidden_size=H, direction="bidirectional", layout=1
        ),
        helper.make_node("Reshape", ["Y", "shape"], ["Y2"]),  # (B, T, 2, H) -> (B, T, 2H)
        helper.make_node("MatMul", ["Y2", "Wout"], ["mm"]),
        helper.make_node("Add", ["mm", "bout"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bilstm",
        [helper.make_tensor_value_info("x", f64, ["batch", "time", I])],
        [helper.make_tensor_value_info("logits", f64, ["batch", "time", O])],
        initializer=[
            numpy_helper.from_array(W, "W_raw"),
            numpy_helper.from_array(R, "R"),
            numpy_helper.from_array(np.array([0, 0, 2 * H], np.int64), "shape"),
            numpy_helper.from_array(sd["head.weight"].T.copy(), "Wout"),
            numpy_helper.from_array(sd["head.bias"], "bout"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    x = rng.normal(0, 1, (B, T, I))
    data = {"x": x, "y": rng.normal(0, 1, (B, T, O))}
    folder = HERE / "onnx_helper_bidirectional"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    data["logits"] = onnx_logits(folder / "model.onnx", {"x": x})
    ref = reference(sd, data, "mse", "all")
    check_logits("onnx_helper_bidirectional", data["logits"], ref["y_hat"])
    np.savez(folder / "data.npz", **data)
    np.savez(folder / "reference.npz", **ref)
    config = {
        "model": {"weights": "model.onnx"},
        "data": {"task": "file", "path": "data.npz"},
        "loss": {"type": "mse", "target": "all"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def helper_refused(rng):
    """Single-LSTM models with a feature the engine cannot express."""
    I, H = 3, 4
    sd = random_sd(rng, I, H, 1, 2, np.float32)
    W, R, Bv = lstm_initializers(sd, 1)
    folder = HERE / "onnx_refused"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cases = {
        "peepholes": ({}, rng.uniform(-0.5, 0.5, (1, 3 * H)).astype(np.float32)),
        "clip": ({"clip": 3.0}, None),
        "activations": ({"activations": ["Sigmoid", "Tanh", "Relu"]}, None),
        "input_forget": ({"input_forget": 1}, None),
        "reverse_only": ({"direction": "reverse"}, None),
    }
    for name, (attrs, P) in cases.items():
        inputs = ["x", "W", "R", "B", "", "", ""] + (["P"] if P is not None else [])
        inits = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (Bv, "B"))]
        if P is not None:
            inits.append(numpy_helper.from_array(P, "P"))
        graph = helper.make_graph(
            [helper.make_node("LSTM", inputs, ["Y"], hidden_size=H, **attrs)],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["time", "batch", I])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["time", None, "batch", H])],
            initializer=inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        onnx.checker.check_model(model)
        onnx.save(model, folder / f"{name}.onnx")


def main():
    rng = np.random.default_rng(16)
    HERE.mkdir(exist_ok=True)
    keras_cases(rng)
    torch_onnx_case(
        "onnx_torch_stack",
        rng,
        V=11,
        I=3,
        H=4,
        L=2,
        O=3,
        B=3,
        T=6,
        bidirectional=False,
        loss="cross_entropy",
        target="last",
    )
    torch_onnx_case(
        "onnx_torch_bidirectional",
        rng,
        V=0,
        I=3,
        H=4,
        L=2,
        O=2,
        B=2,
        T=5,
        bidirectional=True,
        loss="mse",
        target="all",
    )
    helper_bidirectional(rng)
    helper_refused(rng)
    torch_onnx_case(
        "onnx_torch_h_n",
        rng,
        V=0,
        I=3,
        H=4,
        L=2,
        O=2,
        B=3,
        T=6,
        bidirectional=False,
        loss="mse",
        target="h_n",
    )
    try:  # the dynamo exporter (torch.export) needs onnxscript: pip install onnxscript
        import onnxscript  # noqa: F401

        torch_onnx_case(
            "onnx_dynamo_stack",
            rng,
            V=11,
            I=3,
            H=4,
            L=2,
            O=3,
            B=3,
            T=6,
            bidirectional=False,
            loss="cross_entropy",
            target="last",
            dynamo=True,
        )
    except ImportError:
        print("onnx_dynamo_stack: not regenerated (onnxscript is not installed)")
    manifest = sorted(str(p.relative_to(HERE)) for p in HERE.rglob("*") if p.is_file())
    (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
