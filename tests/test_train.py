"""Training under clip settings: optimizers against torch.optim, identical data and init across
settings, determinism, what clipping does on the adding problem, clean stops, metrics files."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import NUMPY_ENGINE, run

from lstm_diag.core.clipping import ClipSetting, parse_clip
from lstm_diag.core.optim import SGD, Adam, make_optimizer
from lstm_diag.errors import ConfigError
from lstm_diag.features.train import _gradient_cause, batch_stream, suggest_max_norm, train, verdict
from lstm_diag.report.train_render import MetricsWriter, metrics_fields
from lstm_diag.setup.config import load_config

OPTIM_FIXTURES = Path(__file__).parent / "fixtures_optim"
MANIFEST = json.loads((OPTIM_FIXTURES / "MANIFEST.json").read_text())

# A small adding problem (Arjovsky et al. variant, T = 50) that trains in a second.
ADDING = {
    "seed": 0,
    "model": {"input_size": 2, "hidden_size": 8, "output_size": 1},
    "data": {"task": "adding", "batch_size": 8, "seq_len": 50},
    "loss": {"type": "mse", "target": "last"},
}


def config(train=None, **sections):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in ADDING.items()}
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    raw["train"] = train or {}
    return load_config(raw)[0]


# ------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("case", sorted(MANIFEST["cases"]))
def test_optimizer_steps_match_torch_optim(case):
    """Every step of SGD / momentum / Adam equals torch.optim's (fixtures, float64) to 1e-12."""
    spec = MANIFEST["cases"][case]
    z = np.load(OPTIM_FIXTURES / f"{case}.npz")
    names = [k.removeprefix("init.") for k in z.files if k.startswith("init.")]
    params = {k: z[f"init.{k}"].copy() for k in names}
    kw = spec["kwargs"]
    if spec["optimizer"] == "SGD":
        opt = SGD(kw["lr"], kw.get("momentum", 0.0), kw.get("weight_decay", 0.0))
    else:
        opt = Adam(
            kw["lr"], tuple(kw.get("betas", (0.9, 0.999))), kw.get("eps", 1e-8), kw.get("weight_decay", 0.0)
        )
    for t in range(spec["steps"]):
        opt.step(params, {k: z[f"grad.{k}"][t] for k in names})
        for k in names:
            np.testing.assert_allclose(
                params[k], z[f"after.{k}"][t], rtol=1e-12, atol=1e-12, err_msg=f"{k} step {t}"
            )


def test_make_optimizer_names():
    assert isinstance(make_optimizer("sgd", 0.1), SGD) and make_optimizer("sgd", 0.1).momentum == 0.0
    assert make_optimizer("momentum", 0.1, momentum=0.8).momentum == 0.8
    assert isinstance(make_optimizer("adam", 1e-3), Adam)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", 0.1)


# ---------------------------------------------------------------------- clip settings


def test_parse_clip_specs():
    s = parse_clip("none, norm:1.0,value:0.1,agc:0.01")
    assert [x.label for x in s] == ["none", "norm:1", "value:0.1", "agc:0.01"]
    assert s[1] == ClipSetting("norm", 1.0) and s[1].slug == "norm-1"
    assert parse_clip(["norm"], {"norm": 5.0, "value": 1.0, "agc": 0.01}) == [ClipSetting("norm", 5.0)]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nrom:1", "unknown clip mode 'nrom' (did you mean 'norm'?)"),
        ("norm:abc", "'norm:abc': the max_norm after ':' must be a positive number, got 'abc'"),
        ("value:-1", "the clip_value after ':' must be a positive number"),
        ("none:3", "'none' takes no threshold"),
        ("none,,norm:1", "empty entry"),
        ("norm:1,norm:1.0", "'norm:1' is listed twice"),
        ("", "no clip settings given"),
    ],
)
def test_parse_clip_errors_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_clip(spec)


def test_bad_clip_in_yaml_names_the_field():
    with pytest.raises(ConfigError, match=r"^train\.clip: unknown clip mode 'clip'"):
        config({"clip": "clip:1"})


# ----------------------------------------------------------- same data, same weights


def test_every_setting_sees_the_same_init_and_batches():
    """Thresholds nobody reaches leave the gradient untouched (coefficient exactly 1.0, no entry
    clipped), so if all settings start from the same weights and see the same batches, their
    histories are bit-identical."""
    r = train(config({"steps": 12, "lr": 0.5, "clip": "none,norm:1e9,value:1e9,agc:1e9", "log_every": 4}))
    ref = r.runs[0]
    assert ref.steps_done == 12
    for other in r.runs[1:]:
        assert not any(other.clipped)
        assert other.loss == ref.loss and other.grad_norm == ref.grad_norm, other.setting.label
        for k in ref.params:
            np.testing.assert_array_equal(other.params[k], ref.params[k])
    assert len({r_.loss[0] for r_ in r.runs}) == 1


def test_first_batch_is_analyzes_batch_and_stream_is_reproducible():
    from lstm_diag.setup.problem import build

    cfg = config()
    a, b = batch_stream(cfg), batch_stream(cfg)
    x0, y0, *_ = next(a)
    np.testing.assert_array_equal(x0, build(cfg).x)
    np.testing.assert_array_equal(y0, build(cfg).y)
    next(b)
    x1a = next(a)[0]
    x1b = next(b)[0]
    np.testing.assert_array_equal(x1a, x1b)
    assert not np.array_equal(x0, x1a)  # a new batch each step


def test_file_dataset_epochs_cover_every_sample_once(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 6, 2))
    y = rng.normal(size=(20, 1))
    x[:, 0, 0] = np.arange(20)  # sample ids
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = config(data={"task": "file", "path": str(tmp_path / "d.npz"), "batch_size": 8, "seq_len": None})
    data = (x, y, None, None)
    stream = batch_stream(cfg, data)
    epoch1 = [next(stream)[0] for _ in range(3)]  # 8 + 8 + 4
    assert [len(b) for b in epoch1] == [8, 8, 4]
    ids = np.concatenate([b[:, 0, 0] for b in epoch1])
    assert sorted(ids) == list(range(20)) and list(ids) != list(range(20))  # all, shuffled
    epoch2 = np.concatenate([next(stream)[0][:, 0, 0] for _ in range(3)])
    assert sorted(epoch2) == list(range(20)) and list(epoch2) != list(ids)  # a new order
    r = train(load_config({**cfg.model_dump(), "train": {"steps": 5, "clip": "none,norm:1e9"}})[0])
    assert r.runs[0].loss == r.runs[1].loss and r.runs[0].steps_done == 5


def test_same_seed_same_numbers_other_seed_other_numbers():
    cfg = {"steps": 6, "clip": "none,norm:0.5", "log_every": 2}
    a, b = train(config(cfg)), train(config(cfg))
    c = train(config(cfg, seed=1))
    assert a.to_dict()["summary"][0]["final_loss"] == b.to_dict()["summary"][0]["final_loss"]
    assert [r.loss for r in a.runs] == [r.loss for r in b.runs]
    assert [r.records[-1]["horizon_l0"] for r in a.runs] == [r.records[-1]["horizon_l0"] for r in b.runs]
    assert a.runs[0].loss != c.runs[0].loss


# -------------------------------------------------------------- what clipping does


def test_norm_clipping_tames_the_spikes_of_a_large_learning_rate():
    """Adding problem, T = 50, H = 8, batch 8, plain SGD with lr = 1.0, 150 steps, seed 0.

    Numbers seen when this test was written (NumPy engine, float64):
      none:   loss 0.63 at step 1, mean of the last 15 steps 40.1; pre-clip norm median
              13.6, max 20.3 (the head overshoots and the loss jumps 60x in 10 steps)
      norm:1: loss 0.63 -> 0.238 (best 0.0585); norm median 0.66, max 2.09; clipped on
              34 of 150 steps (23%)
    The test asserts margins far inside those numbers.
    """
    r = train(config({"steps": 150, "optimizer": "sgd", "lr": 1.0, "clip": "none,norm:1.0"}))
    none, norm = r.summaries
    assert none["diverged"] is None and norm["diverged"] is None
    assert none["grad_norm_max"] > 5 * norm["grad_norm_max"]
    assert none["grad_norm_median"] > 10 * norm["grad_norm_median"]
    assert none["final_loss_mean"] > 10 * none["initial_loss"]  # unclipped: unstable
    assert norm["final_loss_mean"] < 0.5 * norm["initial_loss"]  # clipped: trains
    assert norm["final_loss_mean"] < 0.02 * none["final_loss_mean"]
    assert 5 < norm["clipped_percent"] < 60
    assert none["verdict_kind"] == "unstable" and "loss grew" in none["verdict"]
    assert norm["verdict_kind"] == "frequent"
    assert r.suggestion["max_norm"] is None and "grew" in r.suggestion["caveat"]


def test_a_diverging_run_stops_cleanly_with_a_code_and_the_others_go_on(tmp_path):
    """lr = 3.0: the unclipped run's loss overflows (inf at step 144 when written); the clipped
    run trains all steps. The stop is before the update, so the last weights stay finite."""
    cfg = config({"steps": 150, "lr": 3.0, "clip": "none,norm:1.0", "log_every": 50})
    with MetricsWriter(tmp_path / "m.jsonl", 1) as w:
        r = train(cfg, callback=lambda e: w.write(e.records))
    none, norm = r.runs
    d = none.diverged
    assert d is not None and d["code"] in ("LD401", "LD402", "LD403") and 1 < d["step"] <= 150
    assert none.steps_done == d["step"] - 1
    assert all(np.isfinite(v).all() for v in none.params.values())
    assert norm.diverged is None and norm.steps_done == 150
    assert r.summaries[0]["verdict_kind"] == "diverged"
    assert "diverged at step" in r.summaries[1]["verdict"]
    stopped = [f for f in r.findings if f.code == d["code"] and f.step == d["step"]]
    assert len(stopped) == 1 and stopped[0].setting == "none" and "lower train.lr" in stopped[0].remedy
    assert set(r.to_dict()["findings"][0]) == {"code", "severity", "setting", "step", "message", "remedy"}
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    stop = [x for x in lines if x["status"] == "diverged"]
    assert len(stop) == 1 and stop[0]["step"] == d["step"] and stop[0]["code"] == d["code"]
    assert r.suggestion["max_norm"] is None and "diverged" in r.suggestion["caveat"]


def test_nonfinite_gradient_cause():
    assert _gradient_cause({"a": np.ones(2), "b": np.array([1.0, np.nan])}) == (
        "LD402",
        "non-finite gradient in b",
    )
    assert _gradient_cause({"a": np.array([1e200])})[0] == "LD402"


def test_nonfinite_forward_stops_with_ld401(tmp_path):
    """W_ih = 1e308 and b_ih = b_hh = -1e308: z_t = inf + (-inf) = NaN wherever the input
    sum overflows, so c_t holds NaN: LD401 at step 1, before any update."""
    from lstm_diag.setup.outputs import save_weights
    from lstm_diag.setup.problem import make_params, rngs

    cfg = config()
    p = make_params(cfg, rngs(0)[0])
    p["weight_ih_l0"][:] = 1e308
    p["bias_ih_l0"][:] = -1e308
    p["bias_hh_l0"][:] = -1e308
    save_weights(tmp_path / "w.npz", p)
    r = train(config({"steps": 3}, model={"weights": str(tmp_path / "w.npz")}))
    for one in r.runs:
        assert one.diverged["step"] == 1 and one.diverged["code"] == "LD401" and one.steps_done == 0


def s_(mode, pct, **kw):
    base = {
        "setting": mode,
        "mode": mode,
        "threshold": 1.0,
        "clipped_percent": pct,
        "diverged": None,
        "grad_norm_median": 14.2,
        "grad_norm_max": 120.0,
        "clip_coef_median": 0.07,
        "cosine_median": 0.83,
        "steps_done": 100,
        "initial_loss": 1.0,
        "final_loss_mean": 0.5,
    }
    return {**base, **kw}


def test_verdict_rules():
    kind, text = verdict(s_("norm", 97.0), None, "sgd")
    assert kind == "cap" and text.startswith("binds on 97% of steps: acts as a learning-rate cap")
    assert "threshold 1 vs median norm 14.2" in text
    assert "cancels" in verdict(s_("norm", 97.0), None, "adam")[1]
    kind, text = verdict(s_("norm", 3.0), None, "sgd")
    assert kind == "spikes" and text.startswith("clips 3% of steps: tames rare spikes (max norm 120")
    assert verdict(s_("norm", 40.0), None, "sgd")[0] == "frequent"
    kind, text = verdict(s_("norm", 0.0, grad_norm_max=0.5), None, "sgd")
    assert kind == "idle" and "never binds" in text
    kind, text = verdict(s_("value", 50.0), None, "sgd")
    assert "bends the direction (median cosine 0.830" in text
    assert "keeps the direction" in verdict(s_("agc", 50.0, cosine_median=0.999), None, "sgd")[1]
    ref = s_("none", 0.0, diverged={"step": 37, "code": "LD403", "cause": "non-finite loss (nan)"})
    assert verdict(ref, None, "sgd")[0] == "diverged"
    assert "without clipping the run diverged at step 37" in verdict(s_("norm", 97.0), ref, "sgd")[1]
    kind, text = verdict(s_("none", 0.0, grad_norm_median=1.0, grad_norm_max=50.0), None, "sgd")
    assert kind == "spiky" and "50x the median" in text


def test_suggested_max_norm_rule():
    """2x the median unclipped norm, inside Pascanu et al.'s 0.5-10x the average."""
    from lstm_diag.features.train import Run

    run = Run(ClipSetting("none"), {}, None, iter(()))
    run.grad_norm = [1.0, 2.0, 3.0, 4.0, 50.0]  # mean 12, median 3
    run.loss = [1.0, 0.9, 0.8, 0.7, 0.6]
    run.clipped, run.cosine, run.clip_coef = [False] * 5, [1.0] * 5, [1.0] * 5
    s = suggest_max_norm(run)
    assert s["max_norm"] == 6.0 and s["median_norm"] == 3.0 and s["mean_norm"] == 12.0
    assert s["pascanu_range"] == [6.0, 120.0] and s["would_clip_percent"] == 20.0
    run.grad_norm = [1.0, 1.0, 1.0, 1.0, 1000.0]  # 2 x median = 2 < 0.5 x mean = 100.4
    assert suggest_max_norm(run)["max_norm"] == 100.0


# -------------------------------------------------------------- interrupts, metrics


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_metrics_complete_after_keyboard_interrupt_in_callback(tmp_path, suffix):
    k = 7
    path = tmp_path / f"m{suffix}"
    cfg = config({"steps": 1000, "clip": "none,norm:1.0", "log_every": 1})
    with MetricsWriter(path, 1) as w:

        def cb(event):
            w.write(event.records)
            if event.step == k:
                raise KeyboardInterrupt

        r = train(cfg, callback=cb)
    assert r.interrupted and r.steps_run == k and [x.steps_done for x in r.runs] == [k, k]
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            assert reader.fieldnames == metrics_fields(1)
            rows = list(reader)
    assert len(rows) == 2 * k
    assert [int(x["step"]) for x in rows] == [s for s in range(1, k + 1) for _ in range(2)]
    assert {x["setting"] for x in rows} == {"none", "norm:1"}
    assert r.to_dict()["summary"][0]["steps_done"] == k


@pytest.mark.parametrize("suffix", [".csv"])  # one real signal; both formats in-process above
def test_metrics_complete_after_sigint_to_the_cli(tmp_path, suffix):
    """A real process, interrupted by SIGINT while training: exit 130, the summary covers the
    steps run, and the metrics file has exactly one complete line per step and setting."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        json.dumps({**ADDING, "train": {"steps": 100000, "clip": "none,norm:1.0", "log_every": 1}})
    )
    metrics = tmp_path / f"m{suffix}"
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lstm_diag", "train", str(cfg), "--metrics", str(metrics), "--format", "json"]
        + list(NUMPY_ENGINE),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.time() + 60
    def partial_lines():  # the metrics stream to a temporary file beside the target until the end
        found = list(tmp_path.glob(f".m{suffix}.*.partial"))
        return found[0].read_text().count("\n") if found else 0

    while time.time() < deadline and partial_lines() < 10:
        assert not metrics.exists()  # the target appears only complete
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    doc = json.loads(out)
    k = doc["steps_run"]
    assert doc["interrupted"] and 5 <= k < 100000
    text = metrics.read_text()
    assert text.endswith("\n")
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
        assert text.splitlines()[0].split(",") == metrics_fields(1)
    assert len(rows) == 2 * k and int(rows[-1]["step"]) == k
    assert all(s["steps_done"] == k for s in doc["summary"])
    assert b"interrupted" in err
    assert not list(tmp_path.glob(".*"))  # no temporary file left


# ------------------------------------------------------------------------------ CLI


def test_cli_flags_override_yaml_and_write_weights_and_plots(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({**ADDING, "train": {"steps": 50, "lr": 0.01, "clip": "none"}}))
    r = run(
        "train", cfg, "--steps", 4, "--lr", 0.5, "--clip", "none,norm:1", "--log-every", 2,
        "--save-weights", tmp_path / "w.npz", "--plots", tmp_path / "figs", "--format", "json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (
        doc["steps_run"] == 4
        and doc["config"]["train"]["lr"] == 0.5
        and doc["settings"] == ["none", "norm:1"]
    )
    assert [x["step"] for x in doc["runs"][0]["logged"]] == [1, 2, 4]
    from lstm_diag.setup.problem import spec_of
    from lstm_diag.setup.weights import load_weights

    w = load_weights(tmp_path / "w.norm-1.npz", spec_of(load_config(cfg)[0]), "float64")
    assert w["weight_hh_l0"].shape == (32, 8) and (tmp_path / "w.none.npz").exists()
    for name in ("loss", "grad_norm", "horizon"):
        assert (tmp_path / "figs" / f"{name}.png").stat().st_size > 10_000


def test_cli_table_output_and_bad_input():
    sets = ["data.task=adding", "model.input_size=2", "model.hidden_size=4", "data.seq_len=20"]
    r = run("train", *[a for s in sets for a in ("--set", s)], "--steps", 3)
    assert r.exit_code == 0, r.output
    for needle in (
        "What clipping did",
        "none",
        "norm:1",
        "value:0.1",
        "agc:0.01",
        "Suggested max_norm",
        "Pascanu",
    ):
        assert needle in r.stdout
    bad = run("train", "--clip", "norm:x")
    assert bad.exit_code == 2 and "error: --clip: 'norm:x': the max_norm" in bad.output, bad.output
    bad = run("train", "--lr", "-1", "--steps", 1)
    assert bad.exit_code == 2 and "error: --lr: must be greater than 0" in bad.output, bad.output
    bad = run("train", "--set", "train.lr=-1", "--steps", 1)
    assert bad.exit_code == 2 and "error: train.lr: must be" in bad.output, bad.output
    bad = run("train", "--steps", 1, "--metrics", "out.txt")
    assert bad.exit_code == 2 and ".jsonl" in bad.output
