"""`lstm-diag compare`: init schemes side by side over seeds (docs/compare.md).

References: closed forms (orthogonal blocks have every singular value 1, identity:gain=a
blocks are a*I; linear-interpolation quartiles of 1..4), the engine itself (one SGD step
recomputed by hand with engine.run), and `analyze` (every run can be rebuilt alone from
its `reproduce` overrides). Invariance under --jobs and run-to-run reproducibility are
checked on the whole JSON document.
"""

import json
import math

import numpy as np
import pytest
from conftest import run

from lstm_diag.core import engine
from lstm_diag.core.schemes import parse_init_specs
from lstm_diag.errors import ConfigError
from lstm_diag.features import compare as C
from lstm_diag.features.analysis import analyze
from lstm_diag.report.jsonout import dumps
from lstm_diag.setup.config import load_config, parse_seq_lens
from lstm_diag.setup.problem import build

SMALL = ["model.hidden_size=16", "data.batch_size=8", "data.seq_len=60"]
LONG = ["model.hidden_size=16", "data.seq_len=200"]  # batch 16


@pytest.fixture(scope="module")
def long_doc():
    cfg, _ = load_config(None, LONG)
    specs = parse_init_specs("pytorch,keras,xavier_uniform:forget_bias=1,chrono")
    return C.compare(cfg, specs, seeds=3)


# ------------------------------------------------------------------------- init specs


def test_spec_labels_and_fields():
    specs = parse_init_specs(
        " pytorch, chrono:t_max=500,xavier_uniform:forget_bias=1.0:recurrent_scale=0.5"
    )
    assert [s.label for s in specs] == [
        "pytorch",
        "chrono:t_max=500",
        "xavier_uniform:forget_bias=1:recurrent_scale=0.5",
    ]
    f = specs[2].model_fields()
    assert f == {
        "init": "xavier_uniform",
        "forget_bias": 1.0,
        "recurrent_scale": 0.5,
        "t_max": None,
        "gain": 1.0,
    }
    assert parse_init_specs(["identity:gain=0.5"])[0].model_fields()["gain"] == 0.5


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pytorch,chrno", "unknown init scheme 'chrno' (did you mean 'chrono'?); one of pytorch"),
        ("chrono:tmax=5", "'chrono:tmax=5': unknown option 'tmax' (did you mean 't_max'?); chrono takes"),
        (
            "keras:t_max=50",
            "'keras:t_max=50': t_max applies to chrono only; keras takes forget_bias, recurrent_scale",
        ),
        ("identity:gain=big", "'identity:gain=big': gain must be a finite number, got 'big'"),
        ("chrono:t_max=2", "t_max must be > 2"),
        ("pytorch:recurrent_scale=0", "recurrent_scale must be positive"),
        ("pytorch:forget_bias=1:forget_bias=2", "forget_bias is given twice"),
        ("keras,keras", "'keras' is listed twice"),
        ("pytorch,,keras", "empty entry"),
        ("forget_bias=1", "options follow a scheme and ':'"),
        ("chrono:500", "expected option=value after ':'"),
    ],
)
def test_spec_errors_name_the_spec_and_what_is_valid(text, expected):
    with pytest.raises(ValueError, match=None) as e:
        parse_init_specs(text)
    assert expected in str(e.value)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--init", "pytorch,chrno"], "error: --init: unknown init scheme 'chrno' (did you mean 'chrono'?)"),
        (["--init", "keras:gain=2"], "error: --init: 'keras:gain=2': gain applies to identity only"),
        (["--seeds", "0"], "error: --seeds: must be a positive integer, got 0"),
        (
            ["--seq-lens", "50,x"],
            "error: --seq-lens: each sequence length must be a positive integer, got 'x'",
        ),
        (
            ["--set", "compare.init=he,hee"],
            "error: compare.init: unknown init scheme 'hee' (did you mean 'he'?)",
        ),
        (["--set", "model.weights=w.npz"], "error: model.weights: compare draws each run's weights"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, expected, tmp_path):
    if "model.weights=w.npz" in args:  # a real weight file, so the config itself is valid
        from lstm_diag.setup.outputs import save_weights

        cfg, _ = load_config(None, [])
        save_weights(tmp_path / "w.npz", build(cfg).params)
        args = ["--set", f"model.weights={tmp_path / 'w.npz'}"]
    r = run("compare", *args)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(expected), lines[0]


def test_chrono_on_a_data_file_needs_t_max_and_says_which_spec(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(4, 20, 8)), y=rng.normal(size=(4, 1)))
    cfg, _ = load_config(None, ["data.task=file", f"data.path={tmp_path / 'd.npz'}"])
    with pytest.raises(
        ConfigError, match=r"^init 'chrono': model.t_max: chrono init with a data file needs t_max"
    ):
        C.plan(cfg, parse_init_specs("pytorch,chrono"), 2, None)
    with pytest.raises(ConfigError, match="^compare.seq_lens: a data file has its own length"):
        C.plan(cfg, parse_init_specs("pytorch"), 2, [10, 20])


# ------------------------------------------------------------------ seeds and runs


def test_same_batch_for_every_scheme_at_a_seed_and_each_run_rebuilds_with_analyze(long_doc):
    cfg, _ = load_config(None, LONG)
    runs = C.plan(cfg, parse_init_specs("pytorch,keras,chrono"), 2, None)
    x = {(r.spec.label, r.seed_index): build(r.config).x for r in runs}
    np.testing.assert_array_equal(x[("pytorch", 0)], x[("keras", 0)])
    np.testing.assert_array_equal(x[("pytorch", 0)], x[("chrono", 0)])
    np.testing.assert_array_equal(x[("keras", 1)], x[("chrono", 1)])
    assert not np.array_equal(x[("pytorch", 0)], x[("pytorch", 1)])
    # any run, rebuilt alone by `analyze` from its reproduce overrides, gives the same numbers
    run = next(
        r for r in long_doc["runs"] if r["scheme"] == "xavier_uniform:forget_bias=1" and r["seed_index"] == 1
    )
    assert run["reproduce"] == [
        "seed=1",
        "model.init=xavier_uniform",
        "model.forget_bias=1",
        "data.seq_len=200",
    ]
    res = analyze(None, LONG + run["reproduce"])
    flow = res.layers[0].flow
    assert run["loss"] == res.loss
    assert run["horizon"] == flow["horizon"] and run["decay_rate"] == flow["decay_rate"]
    assert run["layers"][0]["grad_c_norm"] == res.layers[0].grad_c_norm.tolist()


def test_results_do_not_depend_on_jobs_and_repeat_run_to_run():
    cfg, _ = load_config(None, SMALL)
    specs = parse_init_specs("pytorch,keras:forget_bias=2")
    one = dumps(C.compare(cfg, specs, seeds=3, jobs=1))
    two = dumps(C.compare(cfg, specs, seeds=3, jobs=2))
    again = dumps(C.compare(cfg, specs, seeds=3, jobs=1))
    assert one == two
    assert one == again
    doc = json.loads(one)
    assert [r["index"] for r in doc["runs"]] == list(range(6))
    assert [(r["scheme"], r["seed"]) for r in doc["runs"]] == [
        (s, k) for s in ("pytorch", "keras:forget_bias=2") for k in (0, 1, 2)
    ]


# ------------------------------------------------------------ the known result, measured


def test_forget_bias_one_and_chrono_carry_the_gradient_further_than_pytorch(long_doc):
    """T = 200, H = 16, batch 16, random data, 3 seeds (0, 1, 2). Measured on first run:

    scheme                          horizon per seed   median [IQR]     decay/step (median)
    pytorch                         13, 13, 13         13 [13, 13]      0.503
    keras                           28, 31, 29         29 [28.5, 30]    0.204
    xavier_uniform:forget_bias=1    33, 36, 33         33 [33, 34.5]    0.183
    chrono (t_max = T = 200)        200, 200, 200      200 [200, 200]   0.0089 (reaches t = 1)

    The cell path alone predicts it (docs/theory.md §4.2): f ≈ σ(b_f) per step, σ(0) = 0.5 vs
    σ(1) = 0.731, so ln(1e-3) / ln f ≈ 10 vs 22 steps; chrono's f is close to 1.
    """
    agg = {a["scheme"]: a for a in long_doc["aggregates"]}
    per_seed = {s: [r["horizon"] for r in long_doc["runs"] if r["scheme"] == s] for s in agg}
    worst_pytorch = max(per_seed["pytorch"])
    for s in ("keras", "xavier_uniform:forget_bias=1", "chrono"):
        assert min(per_seed[s]) > 1.5 * worst_pytorch, (s, per_seed)
        assert agg[s]["decay_rate"]["median"] < agg["pytorch"]["decay_rate"]["median"]
    assert per_seed["chrono"] == [200, 200, 200]
    assert agg["chrono"]["verdicts"] == {"healthy": 3, "vanishing": 0, "exploding": 0}
    assert agg["pytorch"]["verdicts"]["vanishing"] == 3
    assert long_doc["ranking"]["200"] == ["chrono", "xavier_uniform:forget_bias=1", "keras", "pytorch"]
    assert [agg[s]["rank"] for s in long_doc["ranking"]["200"]] == [1, 2, 3, 4]
    # forget-gate means near σ(b_f): b_f = 1 -> 0.731, b_f ~ 0 (pytorch) -> 0.5
    sig1 = 1 / (1 + math.exp(-1))
    for s in ("keras", "xavier_uniform:forget_bias=1"):
        assert abs(agg[s]["layers"][0]["forget_mean"]["median"] - sig1) < 0.03
    assert abs(agg["pytorch"]["layers"][0]["forget_mean"]["median"] - 0.5) < 0.03


def test_lyapunov_columns_order_the_schemes_like_the_horizon(long_doc):
    """Seen when written (median λ1 per step): chrono -0.0084, forget_bias=1 -0.185, keras -0.206,
    pytorch -0.507; e^λ1 matches the measured decay per step of each scheme to a few percent."""
    agg = {a["scheme"]: a["layers"][0] for a in long_doc["aggregates"]}
    lam = {s: a["lyapunov_max"]["median"] for s, a in agg.items()}
    assert lam["chrono"] > lam["xavier_uniform:forget_bias=1"] > lam["pytorch"]
    assert lam["keras"] > lam["pytorch"] and all(v < 0 for v in lam.values())
    for s, a in agg.items():
        assert abs(-a["lyapunov_max"]["median"] - a["decay_rate"]["median"]) < 0.05, s
        assert len(a["lyapunov"]) == 8 and a["lyapunov"][0]["median"] == a["lyapunov_max"]["median"]


def test_sigma_max_of_recurrent_blocks_matches_closed_forms():
    cfg, _ = load_config(None, ["model.hidden_size=12", "data.seq_len=20", "data.batch_size=4"])
    doc = C.compare(
        cfg, parse_init_specs("orthogonal,identity:gain=0.5,pytorch:recurrent_scale=2"), seeds=2
    )
    for r in doc["runs"]:
        sig = r["layers"][0]["sigma_max"]
        if r["scheme"] == "orthogonal":  # each H x H block orthogonal: every singular value is 1
            np.testing.assert_allclose(list(sig.values()), 1.0, rtol=1e-12)
        elif r["scheme"] == "identity:gain=0.5":  # blocks 0.5 I
            np.testing.assert_allclose(list(sig.values()), 0.5, rtol=1e-15)
        else:  # σ_max(2 U) = 2 σ_max(U), against the unscaled pytorch weights of the same seed
            base = build(
                load_config(None, ["model.hidden_size=12", "data.seq_len=20", f"seed={r['seed']}"])[0]
            )
            W = base.params["weight_hh_l0"]
            want = [2 * np.linalg.svd(W[k * 12 : (k + 1) * 12], compute_uv=False)[0] for k in range(4)]
            np.testing.assert_allclose(list(sig.values()), want, rtol=1e-12)


def test_quartiles_are_linear_interpolation_and_survive_infinities():
    q = C.quartiles([4, 1, 3, 2])
    assert (q["median"], q["q1"], q["q3"], q["n"]) == (2.5, 1.75, 3.25, 4)
    q = C.quartiles([-math.inf, -200.0, -210.0, math.nan])
    assert q["median"] == -210.0 and q["n"] == 3 and q["nonfinite"] == 2
    assert q["q1"] == -math.inf


# --------------------------------------------------------------- sweep and training


def test_seq_len_sweep_reports_horizon_against_T():
    cfg, _ = load_config(None, ["model.hidden_size=8", "data.batch_size=4"])
    doc = C.compare(cfg, parse_init_specs("pytorch,chrono"), seeds=2, seq_lens=parse_seq_lens("60,30"))
    assert doc["seq_lens"] == [30, 60] and doc["detail_seq_len"] == 60
    assert sorted(doc["ranking"]) == ["30", "60"]
    by = {(a["scheme"], a["seq_len"]): a for a in doc["aggregates"]}
    for T in (30, 60):  # chrono's t_max follows T: the gradient reaches t = 1 at each length
        assert by[("chrono", T)]["horizon"]["median"] == T
        assert by[("pytorch", T)]["horizon"]["median"] < 25
    assert {r["seq_len"] for r in doc["runs"]} == {30, 60} and len(doc["runs"]) == 8


def test_train_steps_one_sgd_step_matches_the_engine():
    over = [
        "model.hidden_size=8",
        "data.batch_size=4",
        "data.seq_len=25",
        "train.optimizer=sgd",
        "train.lr=0.5",
    ]
    cfg, _ = load_config(None, over)
    doc = C.compare(cfg, parse_init_specs("keras"), seeds=1, train_steps=1)
    after = doc["runs"][0]["after_training"]
    assert after["steps_done"] == 1 and after["diverged"] is None
    # by hand: the first training batch is the init batch; one step theta - lr * dL/dtheta
    p = build(load_config(None, [*over, "model.init=keras"])[0])
    _, bwd = engine.run(p.params, p.spec, p.x, p.y, p.loss, p.target)
    stepped = {k: v - 0.5 * bwd.params[k] for k, v in p.params.items()}
    want = engine.loss_only(stepped, p.spec, p.x, p.y, p.loss, p.target)
    np.testing.assert_allclose(after["loss"], want, rtol=1e-12)
    assert doc["aggregates"][0]["after_training"]["loss"]["median"] == after["loss"]


# ------------------------------------------------------------------- CLI and output


def test_yaml_section_and_flags_override_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: {hidden_size: 8}\ndata: {seq_len: 20, batch_size: 4}\n"
        "compare: {init: [pytorch, 'chrono:t_max=50'], seeds: 2}\n"
    )
    r = run("compare", cfg, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["settings"]["init"] == ["pytorch", "chrono:t_max=50"] and doc["seed_values"] == [0, 1]
    assert "jobs" not in doc["settings"] and "compare" not in doc["config"]
    r = run("compare", cfg, "--format", "json", "--seeds", "1", "--init", "keras")
    doc = json.loads(r.stdout)
    assert doc["settings"]["init"] == ["keras"] and doc["seed_values"] == [0]


def test_table_fits_80_columns_and_markdown_and_figures(tmp_path):
    from rich.console import Console

    from lstm_diag.commands.common import write_figures
    from lstm_diag.report.compare_render import render, render_markdown
    from lstm_diag.report.figures.compare import figures
    from lstm_diag.setup.document import loads

    cfg, _ = load_config(None, ["model.hidden_size=8", "data.batch_size=4", "model.num_layers=2"])
    specs = parse_init_specs("pytorch,xavier_uniform:forget_bias=1:recurrent_scale=0.5,chrono")
    doc = C.compare(cfg, specs, seeds=2, seq_lens=[20, 40], train_steps=2)
    con = Console(width=80, record=True, no_color=True)
    render(doc, con)
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing truncated
    for title in (
        "Gradient flow at T = 40",
        "Horizon per layer",
        "Horizon against T",
        "After 2 training steps",
        "State dynamics at init, layer 1",
    ):
        assert title in text
    assert "chrono" in text.split("State dynamics at init, layer 0")[1]  # names not folded apart
    md = render_markdown(doc)
    assert "| 1 | `chrono` |" in md
    paths = write_figures(figures(loads(dumps(doc))), tmp_path, "png", 30)  # from the JSON, as a user would
    assert sorted(p.name for p in paths) == [
        "compare_flow.png",
        "compare_forget.png",
        "compare_horizon_vs_T.png",
        "compare_lyapunov.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_registered_in_the_cli_json_is_the_whole_stdout():
    args = ["compare", "--set", "model.hidden_size=8", "--set", "data.seq_len=20", "--seeds", "2"]
    r = run(*args, "--init", "pytorch,keras", "--jobs", "2", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [a["scheme"] for a in doc["aggregates"]] == ["pytorch", "keras"]
    assert r.stderr.startswith("compare: 4 runs (2 schemes × 2 seeds)")
