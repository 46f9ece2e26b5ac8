"""Trust in one batch (issue 17, item 4): analyze over N batches equals N separate analyses."""

import json

import numpy as np
import pytest
from conftest import run

from lstm_diag import analyze
from lstm_diag.core.diagnostics import GATE_NAMES
from lstm_diag.errors import ConfigError
from lstm_diag.features.batches import finding_counts, vote
from lstm_diag.features.findings import Finding
from lstm_diag.setup.config import load_config
from lstm_diag.setup.problem import build, make_data, memory_parts, rngs

TASK = ["seed=2", "model.input_size=3", "model.hidden_size=5", "model.num_layers=2", "data.seq_len=25",
        "data.batch_size=3"]


def _q(values):
    q1, med, q3 = np.percentile(np.asarray(values, np.float64), [25, 50, 75])
    return {"median": med, "q1": q1, "q3": q3}


def _separate(overrides, first, n):
    """The numbers of N separate single-batch runs, `--set data.batch_index=k` each."""
    return [analyze(None, [*overrides, f"data.batch_index={k}"]).to_dict() for k in range(first, first + n)]


def _assert_spread_equals_separate_runs(doc, singles):
    b = doc["batches"]
    assert b["count"] == len(singles)
    for j, unit in enumerate(b["layers"]):
        per = [s["layers"][j] for s in singles]
        for key, values in (
            ("horizon", [p["flow"]["horizon"] for p in per]),
            ("decay_rate", [p["flow"]["decay_rate"] for p in per]),
            ("lyapunov_max", [p["dynamics"]["lyapunov"][0] for p in per]),
        ):
            want = _q(values)
            for stat in ("median", "q1", "q3"):
                assert unit[key][stat] == pytest.approx(want[stat], rel=1e-12, abs=1e-15), (j, key, stat)
        for g in GATE_NAMES:
            want = _q([p["gates"][g]["saturated_low"] + p["gates"][g]["saturated_high"] for p in per])
            assert unit["saturation"][g]["median"] == pytest.approx(want["median"], abs=1e-15)
            assert unit["saturation"][g]["q3"] == pytest.approx(want["q3"], abs=1e-15)
        verdicts = [p["verdict"] for p in per]
        assert unit["verdict"]["counts"] == {v: verdicts.count(v) for v in set(verdicts)}
    assert b["loss"]["median"] == pytest.approx(_q([s["loss"] for s in singles])["median"], rel=1e-12)
    # the document's body is the first batch's own analysis
    assert doc["layers"][0]["grad_c_norm"] == singles[0]["layers"][0]["grad_c_norm"]
    assert doc["findings"] == singles[0]["findings"]


def test_task_batches_equal_separate_runs_of_each_batch():
    doc = analyze(None, [*TASK, "data.batches=4"]).to_dict()
    _assert_spread_equals_separate_runs(doc, _separate(TASK, 0, 4))
    assert doc["batches"]["source"] == "task random" and doc["batches"]["first_index"] == 0
    assert doc["config"]["data"]["batches"] == 4  # the run's config, not its first batch's


def test_a_tasks_batch_k_is_the_kth_draw_of_the_seeds_data_stream():
    cfg = load_config(None, [*TASK, "data.batch_index=2"])[0]
    rng = rngs(cfg.seed)[1]
    draws = [make_data(cfg, rng) for _ in range(3)]
    p = build(cfg)
    np.testing.assert_array_equal(p.x, draws[2][0])
    np.testing.assert_array_equal(build(cfg.patched({"data.batch_index": 0})).x, draws[0][0])


@pytest.fixture
def data_file(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "seqs.npz"
    np.savez(path, x=rng.normal(size=(14, 20, 3)), y=rng.integers(0, 4, (14, 20)),
             h0=rng.normal(size=(2, 14, 5)) * 0.1, c0=rng.normal(size=(2, 14, 5)) * 0.1)
    return path


def _file_overrides(path):
    return ["model.input_size=3", "model.hidden_size=5", "model.num_layers=2", "model.output_size=4",
            "loss.type=cross_entropy", "loss.target=all", "data.task=file", f"data.path={path}",
            "data.batch_size=3"]


def test_file_batches_from_an_offset_equal_separate_runs(data_file):
    o = _file_overrides(data_file)
    doc = analyze(None, [*o, "data.batch_index=1", "data.batches=3"]).to_dict()
    _assert_spread_equals_separate_runs(doc, _separate(o, 1, 3))
    b = doc["batches"]
    assert b["first_index"] == 1 and [r["batch_index"] for r in b["runs"]] == [1, 2, 3]
    assert doc["data"]["first_sequence"] == 3  # batch 1 of 3 sequences
    assert (doc["config"]["data"]["batch_index"], doc["config"]["data"]["batches"]) == (1, 3)


def test_a_files_batch_is_its_rows_with_their_initial_states(data_file):
    cfg = load_config(None, [*_file_overrides(data_file), "data.batch_index=2"])[0]
    p = build(cfg)
    with np.load(data_file) as f:
        np.testing.assert_array_equal(p.x, f["x"][6:9])
        np.testing.assert_array_equal(p.y, f["y"][6:9])
        np.testing.assert_array_equal(p.h0, f["h0"][:, 6:9])


def test_a_file_too_short_for_the_batches_is_refused_naming_it(data_file):
    r = run("analyze", *[a for s in _file_overrides(data_file) for a in ("--set", s)], "--batches", "5")
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        f"error: data.batches: 5 batches of 3 sequences from batch 0 need 15 sequences; {data_file} holds 14"
    )
    r = run("analyze", *[a for s in _file_overrides(data_file) for a in ("--set", s)],
            "--set", "data.batch_index=4")
    assert r.exit_code == 2 and str(data_file) in r.stderr and "data.batch_index: batch 4" in r.stderr


def test_a_file_needs_a_batch_size_to_be_split():
    with pytest.raises(ConfigError, match=r"data.batches: splitting the data file .* data.batch_size"):
        load_config(None, ["data.task=file", "data.path=x.npz", "data.batches=2"])


@pytest.mark.parametrize("cmd", [("gradcheck",), ("explain",), ("train", "--steps", "1")])
def test_commands_of_one_batch_refuse_several(cmd):
    r = run(*cmd, "--set", "data.batches=2", "--set", "data.seq_len=5")
    assert r.exit_code == 2 and r.stderr.strip().startswith("error: data.batches:"), r.stderr


def test_cli_json_markdown_and_table_show_the_spread_and_the_split():
    args = [a for s in TASK for a in ("--set", s)]
    r = run("analyze", *args, "--batches", "3", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 5 and doc["batches"]["count"] == 3
    assert "data.batches=3" in doc["source"]["overrides"]
    assert "note: 3 batches from data.batch_index 0" in r.stderr
    v = doc["batches"]["layers"][0]["verdict"]
    split = f"{v['majority']} in {v['counts'][v['majority']]} of 3 batches"
    md = run("analyze", *args, "--batches", "3", "--format", "markdown").stdout
    table = run("analyze", *args, "--batches", "3").stdout
    for text in (md, table):
        assert split in text and "median [IQR]" in text


def test_fail_on_judges_the_findings_of_a_majority_of_batches():
    def f(code, layer=0):
        return Finding(code, "error", "m", "r", layer=layer)

    runs = [{"batch_index": k, "findings": fs} for k, fs in
            enumerate([[f("LD101"), f("LD201")], [f("LD101")], [f("LD101"), f("LD201", 1)]])]
    table, majority = finding_counts(runs)
    assert [(t["code"], t["layer"], t["batches"]) for t in table] == [
        ("LD101", 0, 3), ("LD201", 0, 1), ("LD201", 1, 1)]
    assert [(x.code, x.layer) for x in majority] == [("LD101", 0)]
    assert vote(["healthy", "vanishing", "vanishing", "healthy"])["majority"] == "vanishing"  # tie: severe


def test_the_memory_plan_counts_every_batchs_summary():
    cfg = load_config(None, ["data.batches=1000"])[0]
    part = "data.batches x data.seq_len x model.num_layers (per-batch results)"
    assert memory_parts(cfg)[part] > 1000 * 100  # one summary per batch
    assert part not in memory_parts(cfg.patched({"data.batches": 1}))
    r = run("analyze", "--set", "data.batches=100000000000")
    assert r.exit_code == 2 and "data.batches x data.seq_len" in r.stderr


def test_the_figures_of_a_saved_document_include_the_spread(tmp_path):
    small = ["model.input_size=2", "model.hidden_size=3", "data.seq_len=8", "data.batch_size=2"]
    r = run("analyze", *[a for s in small for a in ("--set", s)], "--batches", "3", "--format", "json",
            "--no-dynamics")
    saved = tmp_path / "b.json"
    saved.write_text(r.stdout)
    # What `plot b.json` draws (commands/plot.py: figures of analysis_document), encoding only the
    # figure this test is about; the plot command's own output contract is test_plots' business.
    from lstm_diag.commands.plot import analysis_document
    from lstm_diag.report.figures.analysis import figures
    from lstm_diag.report.figures.style import figure_bytes

    figs = dict(figures(analysis_document(str(saved), ())))
    png = figure_bytes(figs["batches_flow"], "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    from lstm_diag.report.html import render_html

    html = render_html(json.loads(saved.read_text()), {"batches_flow": png})
    assert "Across 3 batches" in html and 'id="fig-batches_flow"' in html


def test_fail_on_over_batches_exits_1_when_a_majority_has_the_finding():
    tiny = ["model.input_size=3", "model.hidden_size=4", "data.seq_len=30", "data.batch_size=4"]
    args = [a for s in tiny for a in ("--set", s)]
    r = run("analyze", *args, "--batches", "3", "--format", "json", "--no-dynamics", "--fail-on", "LD101")
    counts = {f["code"]: f["batches"] for f in json.loads(r.stdout)["batches"]["findings"]}
    assert counts["LD101"] == 3 and r.exit_code == 1 and "--fail-on: found LD101" in r.stderr
