"""The model found in a weights file: LSTM by suffix, sizes inferred, head and embedding,
checkpoint sections, messages that say what was found; wired into model.weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from lstm_diag.errors import ConfigError, InputError
from lstm_diag.formats.sniff import read_arrays
from lstm_diag.setup.config import load_config
from lstm_diag.setup.discover import discover
from lstm_diag.setup.weights import find_model, load_weights, unsupported_layout

FIX = Path(__file__).parent / "fixtures_torchfile"
FIXTURES = Path(__file__).parent / "fixtures"


def lstm_shapes(prefix="lstm.", I=3, H=4, layers=1, P=0, bidir=False, bias=True, cell=False):
    """Shapes of nn.LSTM(I, H, layers, proj_size=P, bidirectional, bias).state_dict()."""
    D, R, out = (2 if bidir else 1), (P or H), {}
    for k in range(layers):
        for sfx in ["", "_reverse"][:D]:
            tag = "" if cell else f"_l{k}{sfx}"
            out[f"{prefix}weight_ih{tag}"] = (4 * H, I if k == 0 else D * R)
            out[f"{prefix}weight_hh{tag}"] = (4 * H, R)
            if bias:
                out[f"{prefix}bias_ih{tag}"] = (4 * H,)
                out[f"{prefix}bias_hh{tag}"] = (4 * H,)
            if P:
                out[f"{prefix}weight_hr{tag}"] = (P, H)
    return out


@pytest.mark.parametrize("prefix", ["", "lstm.", "rnn.", "model.encoder.rnn.", "module.lstm."])
@pytest.mark.parametrize(
    "I, H, layers, P, bidir, bias",
    [
        (3, 4, 1, 0, False, True),
        (5, 6, 3, 0, False, True),
        (2, 7, 2, 3, True, False),
        (4, 5, 2, 0, True, True),
    ],
)
def test_sizes_inferred_whatever_the_prefix(prefix, I, H, layers, P, bidir, bias):
    shapes = lstm_shapes(prefix, I, H, layers, P, bidir, bias)
    D = 2 if bidir else 1
    shapes.update({"fc.weight": (9, D * (P or H)), "fc.bias": (9,), "emb.weight": (50, I)})
    m = discover(shapes)
    lstm = m.lstm
    assert (lstm.prefix, lstm.input_size, lstm.hidden_size, lstm.num_layers) == (prefix, I, H, layers)
    assert (lstm.proj_size, lstm.bidirectional, lstm.bias) == (P, bidir, bias)
    assert m.head.weight == "fc.weight" and m.head.out_features == 9
    assert m.embedding.weight == "emb.weight" and m.unused == {}
    assert set(lstm.names.values()) == set(lstm_shapes(prefix, I, H, layers, P, bidir, bias))
    assert lstm.names["weight_hh_l0"] == prefix + "weight_hh_l0"


def test_the_fixture_models_as_pytorch_built_them():
    m = discover(read_arrays(FIX / "bidir_proj_nobias.pt").shapes())
    assert m.lstm.describe() == "nn.LSTM(4, 6, num_layers=2, proj_size=3, bidirectional=True, bias=False)"
    assert m.head.describe() == "head: nn.Linear(6, 7)"
    loaded = read_arrays(FIX / "lm_state_dict.pt")
    m = discover(loaded.shapes())
    assert m.lstm.describe() == "nn.LSTM(5, 6, num_layers=2)" and m.lstm.prefix == "encoder.rnn."
    assert (m.head.weight, m.head.bias, m.embedding.weight) == (
        "decoder.weight",
        "decoder.bias",
        "embed.weight",
    )


def test_lstm_cell_names():
    m = discover({**lstm_shapes("cell.", 3, 4, cell=True), "out.weight": (2, 4), "out.bias": (2,)})
    assert m.lstm.cell and m.lstm.num_layers == 1 and m.lstm.names["weight_ih_l0"] == "cell.weight_ih"


def test_checkpoint_dict_state_dict_found_and_optimizer_ignored():
    loaded = read_arrays(FIX / "checkpoint.pt")
    m = discover(loaded.shapes(), sections=loaded.sections)
    assert m.scope == "model" and m.lstm.prefix == "model.encoder.rnn."
    assert m.head.weight == "model.decoder.weight"  # not optimizer.state.N.exp_avg of the same shape
    assert m.unused_groups() == [("optimizer.*", 33, "optimizer state, ignored")]


def test_two_state_dicts_need_a_choice():
    loaded = read_arrays(FIX / "two_state_dicts.pt")
    with pytest.raises(
        ConfigError, match=r"holds 2 LSTMs \(model.encoder.rnn, ema.encoder.rnn\).*weights_key"
    ):
        discover(loaded.shapes(), sections=loaded.sections)
    m = discover(loaded.shapes(), sections=loaded.sections, weights_key="ema")
    assert m.lstm.prefix == "ema.encoder.rnn." and m.head.weight == "ema.decoder.weight"
    assert m.unused_groups() == [("model.*", 11, "outside the state dict 'ema', ignored")]
    m = discover(loaded.shapes(), sections=loaded.sections, lstm="model.encoder.rnn")
    assert m.scope == "model"
    with pytest.raises(
        ConfigError, match="model.weights_key: .* has no section 'emma'; sections: model, ema"
    ):
        discover(loaded.shapes(), sections=loaded.sections, weights_key="emma")


def test_several_heads_listed_and_picked_by_name():
    shapes = {**lstm_shapes(), "a.weight": (2, 4), "a.bias": (2,), "b.weight": (5, 4), "b.bias": (5,)}
    m = discover(shapes)
    assert m.head is None and [c.weight for c in m.head_candidates] == ["a.weight", "b.weight"]
    with pytest.raises(
        ConfigError, match=r"model.head: 2 possible heads \(a: nn.Linear\(4, 2\), b: nn.Linear\(4, 5\)\)"
    ):
        m.need_head()
    assert discover(shapes, head="b").head.out_features == 5
    assert discover(shapes, head="b.weight").head.out_features == 5
    with pytest.raises(ConfigError, match="model.head: 'c' matches 0 linear layers"):
        discover(shapes, head="c")


def test_mlp_head_points_to_upstream_mode():
    m = discover(read_arrays(FIX / "mlp_head.pt").shapes())
    assert m.head is None and [x.name for x in m.mlp] == ["fc1", "fc2"]
    with pytest.raises(InputError, match=r"MLP head \(fc1 \(8, 4\) -> fc2 \(2, 8\)\).*loss.type: upstream"):
        m.need_head()


@pytest.mark.parametrize(
    "file, message",
    [
        ("gru.pt", r"gru.pt: rnn.weight_hh_l0 \(15, 5\): this is a GRU \(3 gate blocks\), not an LSTM"),
    ],
)
def test_other_recurrent_layers_named(file, message):
    with pytest.raises(InputError, match=message):
        discover(read_arrays(FIX / file).shapes(), source=file)


def test_messages_that_say_what_was_found():
    rnn = {"rnn.weight_ih_l0": (4, 3), "rnn.weight_hh_l0": (4, 4)}
    with pytest.raises(InputError, match=r"a vanilla RNN \(1 gate block\), not an LSTM"):
        discover(rnn)
    with pytest.raises(
        InputError, match=r"no nn.LSTM found: no array named \*weight_ih_l0 \(found: kernel, "
    ):
        discover({"kernel": (3, 16), "recurrent_kernel": (4, 16)})
    shapes = lstm_shapes(layers=2)
    del shapes["lstm.bias_hh_l1"]
    with pytest.raises(
        InputError,
        match=r"missing lstm.bias_hh_l1 \(nn.LSTM\(3, 4, num_layers=2\) has it\); "
        r"closest present: lstm.bias_ih_l1, lstm.bias_hh_l0",
    ):
        discover(shapes)
    shapes = lstm_shapes(layers=2)
    shapes["lstm.weight_ih_l1"] = (16, 5)
    with pytest.raises(InputError, match=r"lstm.weight_ih_l1 has shape \(16, 5\), expected \(16, 4\)"):
        discover(shapes)
    shapes = {**lstm_shapes(), "lstm.weight_ih_l2": (16, 4)}
    with pytest.raises(InputError, match="unexpected lstm.weight_ih_l2 for nn.LSTM"):
        discover(shapes)


def test_unused_arrays_have_reasons():
    shapes = {
        **lstm_shapes(),
        "head.weight": (2, 4),
        "head.bias": (2,),
        "bn.running_mean": (4,),
        "lstm.extra": (3,),
    }
    m = discover(shapes)
    assert m.unused == {
        "bn.running_mean": "not the LSTM, its head or an embedding",
        "lstm.extra": "beside the LSTM's parameters, not one of them",
    }


def test_one_place_says_what_the_engine_cannot_run():
    m = discover(read_arrays(FIX / "bidir_proj_nobias.pt").shapes())
    problem = unsupported_layout(m)
    from lstm_diag.core.engine import Spec

    fields = Spec.__dataclass_fields__
    if {"bidirectional", "proj_size", "bias"} <= set(fields):
        assert problem is None  # the engine runs every nn.LSTM layout
    else:
        assert "bidirectional=True" in problem or "bidirectional" in fields


# ---------------------------------------------------------------------------- model.weights


def test_sizes_come_from_the_weights(tmp_path):
    cfg, _ = load_config(None, [f"model.weights={FIX / 'lm_state_dict.pt'}"])
    m = cfg.model
    assert (m.input_size, m.hidden_size, m.num_layers, m.output_size) == (5, 6, 2, 11)
    with pytest.raises(
        ConfigError,
        match=r"model.num_layers: the config says 3, but the weights in "
        r"lm_state_dict.pt have 2 \(nn.LSTM\(5, 6, num_layers=2\)\)",
    ):
        load_config(None, [f"model.weights={FIX / 'lm_state_dict.pt'}", "model.num_layers=3"])
    cfg, _ = load_config(None, [f"model.weights={FIX / 'lm_state_dict.pt'}", "model.hidden_size=6"])
    assert cfg.model.hidden_size == 6
    with pytest.raises(
        ConfigError, match="model.head: picks arrays in a weights file; set model.weights too"
    ):
        load_config(None, ["model.head=fc"])


def test_only_the_needed_arrays_are_read():
    loaded, found = find_model(FIX / "checkpoint.pt")
    from lstm_diag.core.engine import Spec

    params = load_weights(FIX / "checkpoint.pt", Spec(5, 6, 2, 11), "float64")
    assert params["head.weight"].dtype == np.float64 and params["head.weight"].flags.writeable
    assert sorted(params) == sorted(Spec(5, 6, 2, 11).param_shapes())


def test_analyze_on_the_pt_equals_analyze_on_the_same_weights_as_npz(tmp_path):
    loaded = read_arrays(FIX / "lm_state_dict.pt")
    npz = {f"lstm.{k.removeprefix('encoder.rnn.')}": v for k, v in loaded.arrays.items() if "rnn" in k}
    npz.update({"head.weight": loaded.arrays["decoder.weight"], "head.bias": loaded.arrays["decoder.bias"]})
    np.savez(tmp_path / "w.npz", **npz)
    common = [
        "--format",
        "json",
        "--no-dynamics",
        "--set",
        "data.seq_len=30",
        "--set",
        "loss.type=cross_entropy",
    ]
    a = run("analyze", *common, "--set", f"model.weights={FIX / 'lm_state_dict.pt'}")
    b = run("analyze", *common, "--set", f"model.weights={tmp_path / 'w.npz'}")
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["loss"] == jb["loss"] and ja["layers"] == jb["layers"]
    assert "unused" not in a.stderr  # everything in the state dict is the model


def test_unused_and_mismatch_notes_on_stderr(tmp_path):
    import shutil

    shutil.copy(FIX / "checkpoint.pt", tmp_path / "model.npz")
    r = run("analyze", "--format", "json", "--no-dynamics", "--set", "data.seq_len=5",
            "--set", f"model.weights={tmp_path / 'model.npz'}")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "note: model.npz is a PyTorch torch.save file" in r.stderr
    assert "optimizer.* (33 arrays: optimizer state, ignored)" in r.stderr
    json.loads(r.stdout)  # stdout stays one JSON document


def test_gru_and_unsupported_layouts_exit_2():
    r = run("analyze", "--set", f"model.weights={FIX / 'gru.pt'}")
    assert r.exit_code == 2 and "this is a GRU (3 gate blocks), not an LSTM" in r.stderr
    assert r.stderr.count("\n") == 1


def test_existing_fixture_weights_still_load():
    cfg, _ = load_config(FIXTURES / "l2_T150_mse_all" / "config.yaml")
    assert cfg.model.num_layers == 2


def _readme_blocks(marker: str) -> dict[str, str]:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    part = text.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
    blocks = part.split("```")[1::2]
    return {b.split("\n", 1)[0]: b.split("\n", 1)[1] for b in blocks}


def test_readme_route_state_dict_and_yaml_as_written(tmp_path, monkeypatch):
    """The README's first route, run exactly as written, against PyTorch when installed."""
    blocks = _readme_blocks("readme-route-1")
    (tmp_path / "my.yaml").write_text(blocks["yaml"])
    (tmp_path / "model.pt").write_bytes((FIX / "lm_state_dict.pt").read_bytes())
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 7, 5)), rng.integers(0, 11, (3, 7))
    np.savez(tmp_path / "data.npz", x=x, y=y)
    monkeypatch.chdir(tmp_path)
    commands = [line.split("#")[0].split() for line in blocks["sh"].splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [["lstm-diag", "inspect"], ["lstm-diag", "analyze"]]
    r = run(*commands[0][1:])
    assert r.exit_code == 0 and "nn.LSTM(5, 6, num_layers=2) at encoder.rnn" in r.stdout
    r = run(*commands[1][1:], "--format", "json")
    assert r.exit_code == 0, r.stderr
    loss = json.loads(r.stdout)["loss"]
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
    sd = torch.load(tmp_path / "model.pt", weights_only=True)
    lstm = torch.nn.LSTM(5, 6, num_layers=2, batch_first=True).double()
    lstm.load_state_dict({k.removeprefix("encoder.rnn."): v.double() for k, v in sd.items() if "rnn" in k})
    head = torch.nn.Linear(6, 11).double()
    head.load_state_dict({"weight": sd["decoder.weight"].double(), "bias": sd["decoder.bias"].double()})
    with torch.no_grad():
        logits = head(lstm(torch.from_numpy(x))[0])
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), torch.from_numpy(y).reshape(-1))
    assert loss == pytest.approx(ref.item(), rel=1e-12)


def test_a_head_without_bias_is_named(tmp_path):
    arrays = {k: np.zeros(s) for k, s in lstm_shapes().items()}
    arrays["fc.weight"] = np.zeros((2, 4))
    np.savez(tmp_path / "w.npz", **arrays)
    r = run("analyze", "--set", f"model.weights={tmp_path / 'w.npz'}", "--set", "model.head=fc")
    assert r.exit_code == 2 and "the head fc has no bias" in r.stderr, r.stderr
    r = run("analyze", "--set", f"model.weights={tmp_path / 'w.npz'}")
    assert r.exit_code == 2 and "no linear head reading the LSTM's 4 outputs" in r.stderr, r.stderr


def test_weights_key_reaches_the_analysis():
    base = ["analyze", "--format", "json", "--no-dynamics", "--set", "data.seq_len=5"]
    r = run(*base, "--set", f"model.weights={FIX / 'two_state_dicts.pt'}")
    assert r.exit_code == 2 and "holds 2 LSTMs" in r.stderr
    r = run(*base, "--set", f"model.weights={FIX / 'two_state_dicts.pt'}", "--set", "model.weights_key=ema")
    assert r.exit_code == 0, r.stderr
    assert "model.* (11 arrays: outside the state dict 'ema', ignored)" in r.stderr
    same = run(*base, "--set", f"model.weights={FIX / 'checkpoint.pt'}")  # the same weights
    assert json.loads(r.stdout)["loss"] == json.loads(same.stdout)["loss"]


def test_bidirectional_projected_biasless_pt_against_pytorch(tmp_path):
    """A .pt of nn.LSTM(4, 6, 2, bidirectional, proj_size=3, bias=False) + Linear(6, 7), read
    without torch, sizes inferred; the loss equals PyTorch's on the same data."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 7))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    sets = [
        f"model.weights={FIX / 'bidir_proj_nobias.pt'}",
        "data.task=file",
        f"data.path={tmp_path / 'd.npz'}",
    ]
    r = run(
        "analyze", "--format", "json", "--no-dynamics", *(f"--set={s}" for s in sets), "--set=loss.target=all"
    )
    assert r.exit_code == 0, r.stderr
    loss = json.loads(r.stdout)["loss"]
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
    sd = torch.load(FIX / "bidir_proj_nobias.pt", weights_only=True)
    lstm = torch.nn.LSTM(4, 6, 2, batch_first=True, bidirectional=True, proj_size=3, bias=False).double()
    lstm.load_state_dict({k[5:]: v.double() for k, v in sd.items() if k.startswith("lstm.")})
    head = torch.nn.Linear(6, 7).double()
    head.load_state_dict({k[5:]: v.double() for k, v in sd.items() if k.startswith("head.")})
    with torch.no_grad():
        ref = torch.nn.functional.mse_loss(head(lstm(torch.from_numpy(x))[0]), torch.from_numpy(y))
    assert loss == pytest.approx(ref.item(), rel=1e-12)
