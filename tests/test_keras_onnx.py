"""Keras and ONNX models read into nn.LSTM names, checked against the libraries that wrote them.

Fixtures (tests/make_keras_onnx_fixtures.py): files saved by Keras 3 and exported by
torch.onnx / written with onnx.helper, the model's own outputs (`logits`, from Keras and
from the onnx reference evaluator) and a float64 PyTorch reference on the same weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from lstm_diag.core import engine
from lstm_diag.errors import InputError
from lstm_diag.setup.guard import model_outputs

HERE = Path(__file__).parent / "fixtures_formats"
KERAS = [
    ("keras_stack", "model.keras"),
    ("keras_stack", "model.weights.h5"),
    ("keras_stack", "legacy.h5"),
    ("keras_bidirectional", "model.keras"),
    ("keras_bidirectional", "legacy.h5"),
    ("keras_softmax", "model.keras"),
    ("keras_softmax", "legacy.h5"),
    ("keras_nobias_timedistributed", "model.keras"),
    ("keras_nobias_timedistributed", "legacy.h5"),
]
ONNX = [
    ("onnx_torch_stack", "model.onnx"),
    ("onnx_torch_bidirectional", "model.onnx"),
    ("onnx_helper_bidirectional", "model.onnx"),
    ("onnx_torch_h_n", "model.onnx"),
    ("onnx_dynamo_stack", "model.onnx"),
]


def convert(case: str, fname: str):
    if fname.endswith(".onnx"):
        pytest.importorskip("onnx", reason="ONNX files need the onnx package (extra 'onnx')")
        from lstm_diag.formats.onnx_file import convert_onnx

        return convert_onnx(HERE / case / fname)
    pytest.importorskip("h5py", reason="Keras files need h5py (extra 'keras')")
    from lstm_diag.formats.keras_file import convert_keras

    return convert_keras(HERE / case / fname)


def load(case: str):
    return dict(np.load(HERE / case / "data.npz")), dict(np.load(HERE / case / "reference.npz"))


@pytest.mark.parametrize("case,fname", KERAS + ONNX)
def test_arrays_equal_the_pytorch_state_dict(case, fname):
    """Every array, bit for bit, under nn.LSTM names (the reference's state dict)."""
    conv = convert(case, fname)
    _, ref = load(case)
    expected = {k[3:]: v for k, v in ref.items() if k.startswith("sd.")}
    assert set(conv.arrays) == set(expected)
    for name, a in conv.arrays.items():
        assert a.shape == expected[name].shape, name
        np.testing.assert_array_equal(a.astype(np.float64), expected[name], err_msg=name)
    assert len(conv.mapping) == len(conv.arrays) and conv.source


def test_keras_softmax_head_is_read_as_the_cross_entropys():
    for fname in ("model.keras", "legacy.h5"):
        conv = convert("keras_softmax", fname)
        assert conv.head_activation == "softmax" and any("softmax" in n for n in conv.notes)
    assert "legacy Keras 2 layout" in convert("keras_softmax", "legacy.h5").source


def test_keras_target_comes_from_return_sequences():
    assert convert("keras_stack", "model.keras").target == "last"
    assert convert("keras_bidirectional", "model.keras").target == "all"
    weights_only = convert("keras_stack", "model.weights.h5")
    assert weights_only.target is None and any("no architecture" in n for n in weights_only.notes)


def test_onnx_target_comes_from_the_graph():
    assert convert("onnx_torch_h_n", "model.onnx").target == "last"  # fc(h_n[-1]): Concat, Gather(-1)
    assert convert("onnx_torch_stack", "model.onnx").target == "last"  # Gather(-1) then Gemm
    assert convert("onnx_torch_bidirectional", "model.onnx").target == "all"  # MatMul + Add per step
    assert convert("onnx_helper_bidirectional", "model.onnx").target == "all"


# ----------------------------------------------------------------------------- engine on the read weights


def engine_run(conv, data, loss, target, dtype=np.float64):
    params = {
        k.removeprefix("lstm."): v.astype(dtype) for k, v in conv.arrays.items() if k != "embedding.weight"
    }
    L = sum(1 for k in params if k.startswith("weight_ih_l") and not k.endswith("_reverse"))
    H = params["weight_hh_l0"].shape[1]
    if "tokens" in data:
        x = conv.arrays["embedding.weight"].astype(dtype)[data["tokens"]]  # (B, T, I)
    else:
        x = data["x"].astype(dtype)
    spec = engine.Spec(x.shape[2], H, L, params["head.weight"].shape[0])
    fwd = engine.forward(params, spec, x, data["y"], loss, target)
    return params, spec, fwd


UNIDIRECTIONAL = [
    ("keras_stack", "model.keras", "cross_entropy", "last"),
    ("keras_stack", "model.weights.h5", "cross_entropy", "last"),
    ("keras_stack", "legacy.h5", "cross_entropy", "last"),
    ("keras_softmax", "model.keras", "cross_entropy", "last"),
    ("keras_softmax", "legacy.h5", "cross_entropy", "last"),
    ("onnx_torch_stack", "model.onnx", "cross_entropy", "last"),
    ("onnx_torch_h_n", "model.onnx", "mse", "last"),
    ("onnx_dynamo_stack", "model.onnx", "cross_entropy", "last"),  # torch.export: Reshape to [T, B, H]
]


@pytest.mark.parametrize("case,fname,loss,target", UNIDIRECTIONAL)
def test_forward_matches_the_library_and_gradients_match_pytorch(case, fname, loss, target):
    conv = convert(case, fname)
    data, ref = load(case)
    params, spec, fwd = engine_run(conv, data, loss, target)
    # the library's own outputs (float32 model): as close as float32 allows
    logits = data["logits"]  # the model's outputs: probabilities after a softmax Dense
    assert fwd.y_hat.shape == logits.shape
    np.testing.assert_allclose(model_outputs(fwd.y_hat, conv.head_activation), logits, rtol=0, atol=1e-5)
    # the float64 PyTorch reference on the same weights
    np.testing.assert_allclose(fwd.y_hat, ref["y_hat"], rtol=0, atol=1e-12)
    assert abs(fwd.loss - float(ref["loss"])) < 1e-12
    bwd = engine.backward(params, spec, fwd, target)
    for k, lg in enumerate(bwd.layers):
        dc = lg.dc  # (T, B, H), as the reference
        scale = np.max(np.abs(ref["dc"][k, 0]))
        np.testing.assert_allclose(dc, ref["dc"][k, 0], rtol=0, atol=1e-10 * scale)
        norms = np.linalg.norm(lg.dc.reshape(lg.dc.shape[0], -1), axis=1)  # ||dL/dc_t|| per step
        ref_norms = np.linalg.norm(ref["dc"][k, 0].reshape(norms.shape[0], -1), axis=1)
        np.testing.assert_allclose(norms, ref_norms, rtol=1e-10)
        np.testing.assert_allclose(fwd.layers[k].gates, ref["gates"][k, 0], rtol=0, atol=1e-12)
    for name, g in bwd.params.items():
        r = ref["grad." + (name if name.startswith("head.") else "lstm." + name)]
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-10 * max(1.0, np.max(np.abs(r))), err_msg=name)
    if "tokens" in data:  # dL/dE: the embedding rows receive dL/dx of the steps that read them
        dE = np.zeros_like(conv.arrays["embedding.weight"], dtype=np.float64)
        np.add.at(dE, data["tokens"], np.swapaxes(bwd.dx, 0, 1))
        r = ref["grad.embedding.weight"]
        np.testing.assert_allclose(dE, r, rtol=0, atol=1e-10 * np.max(np.abs(r)))


# ----------------------------------------------------------------------------- a misread layout is caught


def permute_gates(conv, order):
    out = dict(conv.arrays)
    for k, v in conv.arrays.items():
        if k.startswith("lstm."):
            H = v.shape[0] // 4
            out[k] = np.concatenate([v[j * H : (j + 1) * H] for j in order])
    conv.arrays = out
    return conv


@pytest.mark.parametrize("case,fname,loss,target", UNIDIRECTIONAL)
def test_a_permuted_gate_order_is_caught_by_the_logits(case, fname, loss, target):
    from lstm_diag.setup.guard import check_outputs

    conv = convert(case, fname)
    data, _ = load(case)
    _, _, fwd = engine_run(conv, data, loss, target)
    check_outputs(fwd.y_hat, data["logits"], Path("data.npz"), loss)  # read right: no complaint
    for order in ([0, 3, 1, 2], [0, 2, 1, 3], [1, 0, 2, 3]):  # ONNX's order unconverted; swaps
        wrong = permute_gates(convert(case, fname), order)
        _, _, fwd = engine_run(wrong, data, loss, target)
        with pytest.raises(InputError, match=r"not read as the model computes it: max \|Δlogit\| = "):
            check_outputs(fwd.y_hat, data["logits"], Path("data.npz"), loss)


# ----------------------------------------------------------------------------- refused, naming why


@pytest.mark.parametrize(
    "fname,words",
    [
        ("peepholes.onnx", "P (peepholes)"),
        ("clip.onnx", "clip=3.0"),
        ("activations.onnx", "activations="),
        ("input_forget.onnx", "input_forget=1"),
        ("reverse_only.onnx", "direction='reverse'"),
    ],
)
def test_onnx_features_the_engine_cannot_express_are_refused(fname, words):
    with pytest.raises(InputError) as e:
        convert("onnx_refused", fname)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "fname,words",
    [
        ("go_backwards.keras", "go_backwards=True outside a Bidirectional"),
        ("relu.keras", "activation='relu'"),
        ("merge_sum.keras", "merge_mode='sum'"),
        ("mixed_directions.keras", "mix Bidirectional and one-direction layers"),
        ("bidirectional_last.keras", "return_sequences=False"),
    ],
)
def test_keras_models_the_engine_cannot_express_are_refused(fname, words):
    with pytest.raises(InputError) as e:
        convert("keras_refused", fname)
    assert words in str(e.value) and "\n" not in str(e.value)


def _single_lstm(P=None, **attrs):
    onnx = pytest.importorskip("onnx", reason="needs the onnx package (extra 'onnx')")
    from onnx import TensorProto, helper, numpy_helper

    H, I = 2, 3
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
        for n, s in (("W", (1, 4 * H, I)), ("R", (1, 4 * H, H)), ("B", (1, 8 * H)))
    ]
    inputs = ["x", "W", "R", "B", "", "", ""]
    if P is not None:
        inits.append(numpy_helper.from_array(P, "P"))
        inputs.append("P")
    graph = helper.make_graph(
        [helper.make_node("LSTM", inputs, ["Y"], hidden_size=H, **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", H])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), onnx


def test_all_zero_peepholes_are_the_plain_equations(tmp_path):
    from lstm_diag.formats.onnx_file import convert_onnx

    model, onnx = _single_lstm(P=np.zeros((1, 6), np.float32), layout=0)
    onnx.save(model, tmp_path / "m.onnx")
    conv = convert_onnx(tmp_path / "m.onnx")
    assert "head.weight" not in conv.arrays and any("no head" in n for n in conv.notes)
    model, onnx = _single_lstm(P=np.full((1, 6), 1e-30, np.float32))
    onnx.save(model, tmp_path / "p.onnx")
    with pytest.raises(InputError, match="peepholes"):
        convert_onnx(tmp_path / "p.onnx")


def test_missing_libraries_name_the_extra(monkeypatch):
    from lstm_diag.formats.keras_file import convert_keras
    from lstm_diag.formats.onnx_file import convert_onnx

    monkeypatch.setitem(sys.modules, "h5py", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(InputError, match=r"pip install 'lstm-diag\[keras\]'"):
        convert_keras(HERE / "keras_stack" / "model.keras")
    with pytest.raises(InputError, match=r"pip install 'lstm-diag\[onnx\]'"):
        convert_onnx(HERE / "onnx_torch_stack" / "model.onnx")


def test_garbage_is_one_clear_line(tmp_path):
    pytest.importorskip("onnx", reason="needs the onnx package (extra 'onnx')")
    from lstm_diag.formats.onnx_file import convert_onnx

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\x05hello" + b"\xff" * 50)
    with pytest.raises(InputError, match="not a valid ONNX model"):
        convert_onnx(bad)


@pytest.mark.parametrize("case,fname", KERAS + ONNX)
def test_read_by_content_whatever_the_name(case, fname, tmp_path):
    """The format sniffer hands .keras/.h5/.onnx content to these readers, even under another name."""
    from lstm_diag.formats.sniff import read_arrays

    expected = convert(case, fname)
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes((HERE / case / fname).read_bytes())
    for path in (HERE / case / fname, renamed):
        loaded = read_arrays(path)
        assert loaded.format == ("onnx" if fname.endswith(".onnx") else "keras")
        assert loaded.converted is not None and loaded.converted.mapping == expected.mapping
        assert sorted(loaded.arrays) == sorted(expected.arrays)
        assert loaded.converted.source == expected.source
    assert loaded.note is not None and "weights.bin" in loaded.note


# ----------------------------------------------------------------------------- convert -> a real nn.LSTM


def _torch_model(torch, sd: dict, prefix: str = "lstm."):
    """nn.Embedding? -> nn.LSTM(batch_first) -> nn.Linear, shaped from the converted arrays."""
    w = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    L = sum(1 for k in w if k.startswith("weight_ih_l") and not k.endswith("_reverse"))
    bidirectional = "weight_ih_l0_reverse" in w
    I, H = w["weight_ih_l0"].shape[1], w["weight_hh_l0"].shape[1]
    model = torch.nn.Module()
    model.lstm = torch.nn.LSTM(
        I, H, num_layers=L, batch_first=True, bidirectional=bidirectional, bias="bias_ih_l0" in w
    )
    model.head = torch.nn.Linear(*sd["head.weight"].shape[::-1])
    if "embedding.weight" in sd:
        model.embedding = torch.nn.Embedding(*sd["embedding.weight"].shape)
    return model.double()


@pytest.mark.parametrize("case,fname", KERAS + ONNX)
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_convert_loads_into_nn_lstm_and_computes_the_models_outputs(case, fname, suffix, tmp_path):
    torch = pytest.importorskip("torch", reason="the converted file is loaded into a real nn.LSTM")
    if suffix == ".safetensors":
        pytest.importorskip("safetensors", reason="writing .safetensors needs the safetensors package")
    convert(case, fname)  # skips without h5py/onnx
    from lstm_diag.formats.sniff import read_arrays

    out = tmp_path / f"converted{suffix}"
    result = run("convert", HERE / case / fname, "--to", out)
    assert result.exit_code == 0, result.output
    sd = {k: np.asarray(v) for k, v in read_arrays(out).arrays.items()}
    model = _torch_model(torch, sd)
    model.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in sd.items()}, strict=True)
    data, _ = load(case)
    target = convert(case, fname).target or "last"
    with torch.no_grad():
        if "tokens" in data:
            x = model.embedding(torch.tensor(data["tokens"]))
        else:
            x = torch.tensor(data["x"], dtype=torch.float64)
        y, _ = model.lstm(x)
        logits = model.head(y[:, -1] if target == "last" else y).numpy()
    # float64 Keras models: its torch backend computes the Dense to ~1e-7 (see the fixture script)
    tol = 1e-5 if data["logits"].dtype == np.float32 else 1e-6
    outputs = model_outputs(logits, convert(case, fname).head_activation)
    np.testing.assert_allclose(outputs, data["logits"], rtol=0, atol=tol)


def test_convert_refuses_what_it_cannot_write(tmp_path):
    pytest.importorskip("h5py", reason="Keras files need h5py (extra 'keras')")
    src = HERE / "keras_stack" / "model.keras"
    r = run("convert", src, "--to", tmp_path / "x.pt")
    assert r.exit_code == 2 and "must end in .npz or .safetensors" in r.output
    copy = tmp_path / "m.npz"
    copy.write_bytes((HERE / "onnx_torch_stack" / "model.onnx").read_bytes())
    pytest.importorskip("onnx", reason="ONNX files need the onnx package (extra 'onnx')")
    r = run("convert", copy, "--to", copy)
    assert r.exit_code == 2 and "is the input file" in r.output
    assert copy.read_bytes() == (HERE / "onnx_torch_stack" / "model.onnx").read_bytes()


# ----------------------------------------------------------------------------- the guard in every command


def _fixture_copy(tmp_path, permute=False, logits=None):
    """tests/fixtures/l2_T150_mse_all in tmp_path; weights with gates f and o swapped if asked."""
    src = Path(__file__).parent / "fixtures" / "l2_T150_mse_all"
    for name in ("config.yaml", "data.npz"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    weights = dict(np.load(src / "weights.npz"))
    if permute:
        for k, v in weights.items():
            if not k.startswith("head."):
                H = v.shape[0] // 4
                weights[k] = np.concatenate([v[:H], v[3 * H :], v[2 * H : 3 * H], v[H : 2 * H]])
    np.savez(tmp_path / "weights.npz", **weights)
    if logits is not None:
        np.savez(tmp_path / "data.npz", **dict(np.load(src / "data.npz")), logits=logits)
    return tmp_path / "config.yaml", float(np.load(src / "reference.npz")["loss"])


def _analyze(*args):
    return run("analyze", *args, "--format", "json", "--no-dynamics")


def test_expected_loss_passes_when_read_right_and_stops_a_misread_file(tmp_path):
    config, loss = _fixture_copy(tmp_path)
    assert _analyze(str(config), "--set", f"data.expected_loss={loss!r}").exit_code == 0
    config, loss = _fixture_copy(tmp_path, permute=True)
    r = _analyze(str(config), "--set", f"data.expected_loss={loss!r}")
    assert r.exit_code == 2, r.output
    assert "data.expected_loss: the file's layout was not read as the model computes it" in r.output
    r = _analyze(str(config), "--set", "data.expected_loss=nan")
    assert r.exit_code == 2 and "data.expected_loss" in r.output


def test_logits_in_the_data_file_stop_a_misread_file(tmp_path):
    torch = pytest.importorskip("torch", reason="the model's own outputs come from PyTorch")
    src = Path(__file__).parent / "fixtures" / "l2_T150_mse_all"
    w = {k: torch.tensor(v) for k, v in np.load(src / "weights.npz").items()}
    lstm = torch.nn.LSTM(2, 5, num_layers=2, batch_first=True).double()
    lstm.load_state_dict({k.removeprefix("lstm."): v for k, v in w.items() if not k.startswith("head.")})
    with torch.no_grad():
        out, _ = lstm(torch.tensor(np.load(src / "data.npz")["x"]))
        logits = (out @ w["head.weight"].T + w["head.bias"]).numpy()  # (B, T, O)
    config, _ = _fixture_copy(tmp_path, logits=logits)
    r = _analyze(str(config))
    assert r.exit_code == 0, r.output
    config, _ = _fixture_copy(tmp_path, permute=True, logits=logits)
    r = _analyze(str(config))
    assert r.exit_code == 2 and "max |Δlogit| = " in r.output, r.output
    config, _ = _fixture_copy(tmp_path, logits=logits[:, -1])  # outputs for the last step only
    r = _analyze(str(config))
    assert r.exit_code == 2 and "while loss.target is all" in r.output, r.output


# ----------------------------------------------------------------------------- hostile files


def test_hdf5_links_outside_the_file_or_cyclic_are_harmless(tmp_path):
    h5py = pytest.importorskip("h5py", reason="Keras files need h5py (extra 'keras')")
    from lstm_diag.formats.keras_file import convert_keras

    ext = tmp_path / "ext.weights.h5"
    with h5py.File(ext, "w") as f:
        f.create_group("layers")
        f["layers/lstm"] = h5py.ExternalLink("/etc/passwd", "/")  # points outside the file
    with pytest.raises(InputError, match="ExternalLink, which is refused"):
        convert_keras(ext)
    soft = tmp_path / "soft.weights.h5"
    with h5py.File(soft, "w") as f:
        g = f.create_group("layers/lstm")
        g["cell"] = h5py.SoftLink("/layers/lstm")  # a cycle through a soft link
    with pytest.raises(InputError, match="SoftLink, which is refused"):
        convert_keras(soft)
    cyclic = tmp_path / "cyclic.weights.h5"
    with h5py.File(cyclic, "w") as f:
        g = f.create_group("layers/lstm")
        g["cell"] = g  # a hard link to itself: a cycle
    with pytest.raises(InputError):
        convert_keras(cyclic)


def test_keras_archive_bounds_are_checked_before_reading(tmp_path):
    pytest.importorskip("h5py", reason="Keras files need h5py (extra 'keras')")
    import zipfile

    from lstm_diag.formats.keras_file import convert_keras

    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", b"\0" * (50 * 2**20))  # 50 MB of zeros, ~50 KB compressed
    with pytest.raises(InputError, match="expands"):
        convert_keras(bomb)
    text = tmp_path / "notes.keras"
    with zipfile.ZipFile(text, "w") as z:
        z.writestr("config.json", "not json")
        z.writestr("model.weights.h5", b"")
    with pytest.raises(InputError, match="not a valid .keras archive"):
        convert_keras(text)


def test_onnx_declared_sizes_and_external_data_are_refused_before_reading(tmp_path):
    onnx = pytest.importorskip("onnx", reason="needs the onnx package (extra 'onnx')")
    from onnx import TensorProto

    from lstm_diag.formats.onnx_file import convert_onnx

    model, _ = _single_lstm()
    huge = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1, 2**20, 2**12])
    model.graph.initializer[0].CopyFrom(huge)  # declares 16 GiB, holds nothing
    onnx.save(model, tmp_path / "huge.onnx")
    with pytest.raises(InputError, match="GiB"):
        convert_onnx(tmp_path / "huge.onnx")
    model, _ = _single_lstm()
    w = model.graph.initializer[0]
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    entry = w.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    onnx.save(model, tmp_path / "ext.onnx")
    with pytest.raises(InputError, match="external file"):
        convert_onnx(tmp_path / "ext.onnx")


def test_loss_target_follows_the_file_and_a_contradiction_is_refused(tmp_path):
    pytest.importorskip("h5py", reason="Keras files need h5py (extra 'keras')")
    from lstm_diag.errors import ConfigError
    from lstm_diag.setup.config import load_config

    weights = str(HERE / "keras_bidirectional" / "model.keras")  # Dense on every step
    cfg = {"model": {"weights": weights}, "loss": {"type": "mse"}}
    try:
        assert load_config(cfg)[0].loss.target == "all"
    except ConfigError as e:  # until the engine reads bidirectional models
        assert "bidirectional" in str(e)
    weights = str(HERE / "keras_softmax" / "model.keras")  # Dense on the last step
    cfg = {"model": {"weights": weights}, "loss": {"type": "cross_entropy", "target": "all"}}
    with pytest.raises(ConfigError, match=r"loss.target: the config says 'all'.*the last step"):
        load_config(cfg)
    cfg["loss"].pop("target")
    assert load_config(cfg)[0].loss.target == "last"


@pytest.mark.parametrize("case", ["keras_softmax", "onnx_torch_h_n"])
def test_analyze_reads_the_file_as_pytorch_computes_it(case):
    """`lstm-diag analyze config.yaml` with model.weights: model.keras / model.onnx: the loss and
    per-step ||dL/dc_t|| of every layer equal the float64 PyTorch reference."""
    convert(case, "model.keras" if case.startswith("keras") else "model.onnx")  # skips without h5py/onnx
    import json

    r = _analyze(str(HERE / case / "config.yaml"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    _, ref = load(case)
    assert abs(doc["loss"] - float(ref["loss"])) <= 1e-12 * max(1.0, abs(float(ref["loss"])))
    for k, layer in enumerate(doc["layers"]):
        dc = ref["dc"][k, 0]  # (T, B, H)
        np.testing.assert_allclose(
            layer["grad_c_norm"], np.linalg.norm(dc.reshape(dc.shape[0], -1), axis=1), rtol=1e-10
        )


END_TO_END = [
    ("keras_nobias_timedistributed", "model.keras"),
    ("keras_nobias_timedistributed", "legacy.h5"),
    ("keras_bidirectional", "model.keras"),
    ("keras_bidirectional", "legacy.h5"),
    ("onnx_torch_bidirectional", "model.onnx"),
    ("onnx_helper_bidirectional", "model.onnx"),
]


@pytest.mark.parametrize("case,fname", END_TO_END)
def test_files_analysed_exactly(case, fname, tmp_path):
    """Bidirectional and bias-free Keras/ONNX models through the whole analysis: loss, per-step
    dL/dc_t of each layer and direction, gates and every parameter gradient equal PyTorch."""
    convert(case, fname)  # skips without h5py/onnx
    from lstm_diag import analyze

    config = (HERE / case / "config.yaml").read_text().replace("model.keras", fname)
    (tmp_path / "config.yaml").write_text(config)
    for name in (fname, "data.npz"):
        (tmp_path / name).write_bytes((HERE / case / name).read_bytes())
    result = analyze(str(tmp_path / "config.yaml"))  # the layout guard runs on the stored logits
    _, ref = load(case)
    assert abs(result.loss - float(ref["loss"])) <= 1e-12 * max(1.0, float(ref["loss"]))
    L, D = ref["dc"].shape[:2]
    assert len(result.bwd.layers) == L * D
    for k in range(L):
        for d in range(D):
            lg, cache = result.bwd.layers[k * D + d], result.fwd.layers[k * D + d]
            dc = engine.time_order(lg.dc, d)  # the reverse unit's arrays run from t = T down
            scale = np.max(np.abs(ref["dc"][k, d]))
            np.testing.assert_allclose(dc, ref["dc"][k, d], rtol=0, atol=1e-10 * scale)
            gates = engine.time_order(cache.gates, d)
            np.testing.assert_allclose(gates, ref["gates"][k, d], rtol=0, atol=1e-12)
    for name, g in result.grads.items():
        r = ref["grad." + (name if name.startswith("head.") else "lstm." + name)]
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-10 * max(1.0, np.max(np.abs(r))), err_msg=name)


def test_convert_a_pytorch_checkpoint_keeps_the_model_and_leaves_the_optimizer(tmp_path):
    torch = pytest.importorskip("torch", reason="the converted file is loaded into a real nn.LSTM")
    src = Path(__file__).parent / "fixtures_torchfile" / "checkpoint.pt"
    out = tmp_path / "model.npz"
    r = run("convert", src, "--to", out, "--format", "json")
    assert r.exit_code == 0, r.output
    import json

    doc = json.loads(r.stdout)
    assert doc["left_out"] and all(n.startswith("optimizer.") for n in doc["left_out"])
    sd = dict(np.load(out))
    model = _torch_model(torch, sd)
    model.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in sd.items()}, strict=True)
    original = torch.load(src, weights_only=False)["model"]  # our own fixture, written by PyTorch
    for new, info in doc["arrays"].items():
        np.testing.assert_array_equal(sd[new], original[info["from"].removeprefix("model.")].numpy())


def test_a_stacked_layer_must_keep_the_hidden_size_and_read_the_width_below():
    """Both converters check each LSTM of a stack against the one below it (converted.py)."""
    from lstm_diag.formats.converted import check_stacked

    check_stacked("m.keras: LSTM 'b'", 8, 8, "kernel (8, 32)", 8, 8)  # fits
    check_stacked("m.onnx: LSTM 'first'", 8, None, "W (1, 32, 5)", 5, None)  # the first layer
    with pytest.raises(InputError, match=r"m.keras: LSTM 'b' has hidden size 6 and the LSTM below it 8"):
        check_stacked("m.keras: LSTM 'b'", 6, 8, "kernel (8, 24)", 8, 8)
    with pytest.raises(InputError, match=r"W \(1, 32, 5\) does not read the 8 features below it"):
        check_stacked("m.onnx: LSTM 'second'", 8, 8, "W (1, 32, 5)", 5, 8)
