"""Every config field changes the result or is rejected, never ignored (issue 15, item 6).

The fields are found by walking the pydantic models, so a new field without a rule here fails
`test_every_field_has_a_rule`. Each rule names a context (the base config the field is tried
in: where it applies) and a new value; the test runs the context with and without the change
and asserts that the result document differs, or that the change is refused as bad input.
Fields whose contract is to change no number (executors) say what they change instead."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from lstm_diag.errors import InputError
from lstm_diag.report.jsonout import dumps
from lstm_diag.setup.config import Config

TINY = {"seed": 3, "engine": "numpy", "model": {"input_size": 3, "hidden_size": 4},
        "data": {"batch_size": 2, "seq_len": 12}}
FIXTURES = Path(__file__).parent / "fixtures_torchfile"

# field: (context, value). Contexts: "analyze" (TINY), "window" (TINY with the window product on),
# "chrono", "identity", "exploding",
# "norm", "value", "agc" (clipping modes), "xfile" (a data file), "ce" (cross_entropy, 3
# classes), "train", "compare".
RULES = {
    "seed": ("analyze", 4), "dtype": ("analyze", "float32"),
    "model.input_size": ("analyze", 5), "model.hidden_size": ("analyze", 6),
    "model.num_layers": ("analyze", 2), "model.output_size": ("analyze", 2),
    "model.bidirectional": ("analyze", True), "model.proj_size": ("analyze", 2),
    "model.bias": ("analyze", False), "model.init": ("analyze", "keras"),
    "model.forget_bias": ("analyze", 2.0), "model.t_max": ("chrono", 5.0),
    "model.gain": ("identity", 0.5), "model.recurrent_scale": ("analyze", 0.5),
    "model.weights": ("analyze", str(FIXTURES / "lm_state_dict.pt")),
    "model.weights_key": ("analyze", "model"), "model.lstm": ("analyze", "rnn"),
    "model.head": ("analyze", "fc"), "model.embedding": ("analyze", "embed"),
    "data.task": ("analyze", "copy"), "data.batch_size": ("analyze", 3), "data.seq_len": ("analyze", 13),
    "data.path": ("analyze", "x.npz"), "data.layout": ("xfile", "time_major"),
    "data.batch_index": ("analyze", 1), "data.batches": ("analyze", 2),
    "data.expected_loss": ("xfile", 123.0), "loss.type": ("analyze", "cross_entropy"),
    "loss.target": ("analyze", "all"), "loss.ignore_index": ("ce", 1),
    "diagnostics.saturation_threshold": ("analyze", 0.3), "diagnostics.vanishing_ratio": ("analyze", 0.5),
    "diagnostics.exploding_ratio": ("exploding", 1e30), "diagnostics.stuck_fraction": ("analyze", 0.1),
    "diagnostics.saturated_gate_fraction": ("analyze", 0.01), "diagnostics.memory": ("analyze", "checkpoint"),
    "diagnostics.memory_budget_mb": ("analyze", 0.001), "diagnostics.dynamics": ("analyze", False),
    "diagnostics.lyapunov_k": ("analyze", 2), "diagnostics.lyapunov_steps": ("analyze", 40),
    "diagnostics.window": ("window", 3),
    "diagnostics.window_k": ("analyze", 1), "diagnostics.dynamics_samples": ("analyze", 1),
    "diagnostics.norm_points": ("analyze", 2), "diagnostics.dynamics_dtype": ("analyze", "model"),
    "clipping.mode": ("analyze", "norm"),
    "clipping.max_norm": ("norm", 0.001), "clipping.clip_value": ("value", 0.001),
    "clipping.clipping": ("agc", 1e-4),
    "train.steps": ("train", 3), "train.optimizer": ("train", "adam"), "train.lr": ("train", 0.5),
    "train.momentum": ("train_momentum", 0.5), "train.betas": ("train_adam", [0.5, 0.9]),
    "train.eps": ("train_adam", 0.5), "train.weight_decay": ("train", 0.1),
    "train.clip": ("train", "norm:0.01"), "train.log_every": ("train", 1),
    "train.snapshot_every": ("train", 1),
    "compare.init": ("compare", "keras"), "compare.seeds": ("compare", 2),
    "compare.seq_lens": ("compare", "6,12"), "compare.train_steps": ("compare", 1),
    "compare.grid": ("compare", {"model.forget_bias": [0, 2]}),
}
# Fields that must not change a number (docs: results are identical whatever their value);
# what they change is checked by their own tests.
EXECUTION = {
    "engine": "which engine computes (numpy or numba kernels): same numbers to 1e-12 (tests/test_fused.py)",
    "compare.jobs": "the number of processes: byte-identical results (tests/test_compare.py)",
    "compare.scheduler": "where runs execute (Dask): byte-identical results (tests/test_executor.py)",
    "compare.cache": "a folder of finished runs: identical output, only missing runs computed "
    "(tests/test_executor.py)",
    "train.metrics": "an output file (tests/test_train.py)", "train.save_weights": "an output file",
    "train.plots": "an output folder", "compare.plots": "an output folder",
}


def fields(model=Config, prefix=""):
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            yield from fields(sub, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_every_field_has_a_rule():
    missing = [f for f in fields() if f not in RULES and f not in EXECUTION]
    assert not missing, f"config fields without a changes-or-rejected rule: {missing}"


def _context(name, tmp_path):
    cfg = copy.deepcopy(TINY)
    if name == "chrono":
        cfg["model"]["init"] = "chrono"
    elif name == "identity":
        cfg["model"]["init"] = "identity"
    elif name == "exploding":  # ||dL/dc_1|| / ||dL/dc_T|| ~ 1e5: exploding at the default ratio
        cfg["seed"] = 0
        cfg["model"] |= {"hidden_size": 16, "init": "orthogonal", "recurrent_scale": 8.0}
        cfg["data"]["seq_len"] = 40
    elif name == "window":  # the window product is off by default (diagnostics.window_k = 0)
        cfg["diagnostics"] = {"window_k": 2}
    elif name in ("norm", "value", "agc"):
        cfg["clipping"] = {"mode": name}
    elif name in ("xfile", "ce"):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 3, (2, 12)) if name == "ce" else rng.normal(size=(2, 1))
        np.savez(tmp_path / "d.npz", x=rng.normal(size=(2, 12, 3)), y=y)
        cfg["data"] = {"task": "file", "path": str(tmp_path / "d.npz")}
        if name == "ce":
            cfg["model"]["output_size"] = 3
            cfg["loss"] = {"type": "cross_entropy", "target": "all"}
    elif name.startswith("train"):
        cfg["train"] = {"steps": 2, "clip": "none", "log_every": 2}
        if name != "train":
            cfg["train"]["optimizer"] = name.split("_")[1]
    elif name == "compare":
        cfg["compare"] = {"init": "pytorch", "seeds": 1}
        cfg["diagnostics"] = {"dynamics": False}
    return cfg


def _result(cfg, context):
    cfg = Config.model_validate(cfg) if not isinstance(cfg, Config) else cfg
    if context.startswith("train"):
        from lstm_diag.features.train import train

        doc = train(cfg).to_dict()
    elif context == "compare":
        from lstm_diag.features.compare import compare

        c = cfg.compare
        doc = compare(cfg, c.init_specs, c.seeds, c.seq_len_list, train_steps=c.train_steps, grid=c.grid_axes)
    else:
        from lstm_diag import analyze

        doc = analyze(cfg).to_dict()
    doc = json.loads(dumps(doc))
    for echo in ("config", "source", "settings"):  # the config as given, echoed back
        doc.pop(echo, None)
    return doc


@pytest.mark.parametrize("field", sorted(RULES))
def test_field_changes_the_result_or_is_rejected(field, tmp_path):
    context, value = RULES[field]
    base = _context(context, tmp_path)
    changed = copy.deepcopy(base)
    section, _, name = field.rpartition(".")
    (changed.setdefault(section, {}) if section else changed)[name] = value
    before = _result(base, context)
    try:
        after = _result(changed, context)
    except (InputError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        assert str(e).strip(), field
        return
    assert after != before, f"{field}={value!r} in context {context!r} changed nothing"
