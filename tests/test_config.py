"""Config loading: defaults, overrides, path resolution, one-line errors."""

from pathlib import Path

import pytest
import yaml

from lstm_diag.errors import ConfigError
from lstm_diag.setup.config import Config, load_config
from lstm_diag.setup.outputs import save_weights
from lstm_diag.setup.problem import build

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_default_is_the_fields_defaults_and_configs_default_yaml_writes_them_out():
    cfg, origin = load_config(None)
    assert origin is None and cfg == Config()
    shipped, _ = load_config(ROOT / "configs" / "default.yaml")
    assert shipped == Config()
    raw = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert set(raw) >= {"seed", "dtype", "model", "data", "loss", "diagnostics", "clipping"}
    assert (cfg.model.input_size, cfg.model.hidden_size, cfg.model.num_layers) == (8, 32, 1)
    assert (cfg.data.task, cfg.data.batch_size, cfg.data.seq_len) == ("random", 16, 100)
    assert (cfg.loss.type, cfg.loss.target, cfg.dtype, cfg.seed) == ("mse", "last", "float64", 0)


def test_every_section_is_optional(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {hidden_size: 7}\n")
    cfg, _ = load_config(p)
    assert cfg.model.hidden_size == 7 and cfg.data.seq_len == 100


def test_set_overrides_parse_yaml_values():
    cfg, _ = load_config(None, ["model.hidden_size=64", "dtype=float32", "model.forget_bias=1e0", "seed=3"])
    assert cfg.model.hidden_size == 64 and cfg.dtype == "float32"
    assert cfg.model.forget_bias == 1.0 and cfg.seed == 3


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    sub = tmp_path / "cfgs"
    sub.mkdir()
    p = sub / "c.yaml"
    p.write_text("model: {weights: w.npz}\ndata: {task: file, path: ../d/data.npz}\n")
    params = build(load_config(None)[0]).params  # real weight files: their sizes are read
    save_weights(sub / "w.npz", params)
    save_weights(tmp_path / "other.npz", params)
    monkeypatch.chdir(tmp_path)
    cfg, _ = load_config(p)
    assert cfg.model.weights == str(sub / "w.npz")
    assert cfg.data.path == str(tmp_path / "d" / "data.npz")
    # --set paths are the user's own: relative to the working directory
    cfg, _ = load_config(p, ["model.weights=other.npz"])
    assert cfg.model.weights == str(tmp_path / "other.npz")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.hidden_size=0"], "model.hidden_size: must be a positive integer, got 0"),
        (["model.hiden_size=3"], "model.hiden_size: unknown key (did you mean 'hidden_size'?)"),
        (["dtype=float16"], "dtype: must be 'float32' or 'float64', got 'float16'"),
        (["model.init=xavier"], "model.init: unknown scheme 'xavier' (did you mean"),
        (["data.task=adding"], "model.input_size: must be 2 (the adding task feeds (value, marker)), got 8"),
        (["loss.type=cross_entropy"], "model.output_size: cross_entropy needs at least 2 classes, got 1"),
        (["data.task=file"], "data.path: task 'file' needs the path"),
        (["modelhidden"], "--set 'modelhidden': expected KEY=VALUE"),
    ],
)
def test_errors_are_one_line_naming_the_field(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  hidden_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        load_config(p)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("/nonexistent/c.yaml")


def test_patched_applies_dotted_overrides_and_revalidates():
    cfg, _ = load_config(None)
    p = cfg.patched({"train.steps": 5, "seed": 3, "model.init": "chrono", "model.t_max": 50.0})
    assert (p.train.steps, p.seed, p.model.init, p.model.t_max) == (5, 3, "chrono", 50.0)
    assert cfg.train.steps == 200 and cfg.seed == 0  # the original is untouched
    assert cfg.patched({}) is cfg
    # the parsed values follow the patch
    q = cfg.patched({"train.clip": "none,norm", "clipping.max_norm": 2.5})
    assert [s.label for s in q.clip_settings] == ["none", "norm:2.5"]
    assert [s.label for s in cfg.patched({"compare.init": "keras"}).compare.init_specs] == ["keras"]
    # the field's own message, as in a file
    with pytest.raises(ConfigError, match=r"^train\.steps: must be a positive integer, got 0$"):
        cfg.patched({"train.steps": 0})
    with pytest.raises(ConfigError, match=r"^model\.hiden_size: unknown key \(did you mean 'hidden_size'"):
        cfg.patched({"model.hiden_size": 3})
    with pytest.raises(ConfigError, match=r"^seed\.x: seed is not a section"):
        cfg.patched({"seed.x": 1})
    with pytest.raises(ConfigError, match=r"^train\.clip: 'norm:2.5' is listed twice"):
        cfg.patched({"train.clip": "norm,norm:2.5", "clipping.max_norm": 2.5})


def test_a_tilde_path_of_an_unknown_user_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^model\.weights: cannot expand '~0': no such user"):
        load_config(None, ["model.weights=~0"])


@pytest.mark.parametrize("text", ["..: 1", "model: {a.b: 1}", "diagnostics:\n  x.: 2"])
def test_unknown_keys_holding_dots_are_one_config_error(tmp_path, text):
    """Found by tests/test_properties.py (YAML text '..:'): the message used to split the
    joined path at dots and crash with a KeyError on such keys."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(p)
