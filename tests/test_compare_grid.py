"""`compare --grid`: any config field as a sweep axis (issue 18, items 1 and 2; docs/compare.md).

References: `analyze` (every run, rebuilt alone from its `reproduce` overrides, and the
printed command for the best cell, run as a user would run it), closed forms (the run
count of a cross product, the grid point of each run), and the config's own validation
(every bad field or value exits 2 naming it, before any run starts).
"""

import json
import shlex

import numpy as np
import pytest
from conftest import run

from lstm_diag.core.schemes import parse_init_specs
from lstm_diag.features import compare as C
from lstm_diag.features.analysis import analyze
from lstm_diag.report.jsonout import dumps
from lstm_diag.setup.config import load_config

TINY = ["model.hidden_size=6", "model.input_size=3", "data.batch_size=3", "diagnostics.dynamics=false"]


def sets(items):
    return [x for s in items for x in ("--set", s)]


@pytest.fixture(scope="module")
def grid_doc():
    cfg, _ = load_config(None, TINY)
    grid = {"model.forget_bias": [0, 2], "data.seq_len": [15, 30]}
    return C.compare(cfg, parse_init_specs("pytorch,keras"), seeds=2, grid=grid)


def test_runs_are_the_cross_product_in_order(grid_doc):
    doc = grid_doc
    assert len(doc["runs"]) == 2 * 2 * 2 * 2 and len(doc["aggregates"]) == 8
    assert doc["axes"] == [
        {"field": "model.forget_bias", "values": [0.0, 2.0], "changes_results": True},
        {"field": "data.seq_len", "values": [15, 30], "changes_results": True},
    ]
    assert doc["settings"]["grid"] == {"model.forget_bias": [0.0, 2.0], "data.seq_len": [15, 30]}
    # first axis slowest, then scheme, then seed
    want = [(b, T, s, k) for b in (0.0, 2.0) for T in (15, 30) for s in ("pytorch", "keras") for k in (0, 1)]
    got = [
        (r["point"]["model.forget_bias"], r["point"]["data.seq_len"], r["scheme"], r["seed_index"])
        for r in doc["runs"]
    ]
    assert got == want
    for r in doc["runs"]:  # the run is the base config + its overrides
        assert r["overrides"]["model.forget_bias"] == r["point"]["model.forget_bias"]
        assert r["overrides"]["seed"] == r["seed"] and r["seq_len"] == r["point"]["data.seq_len"]
        assert r["cell"] == r["index"] // 2
    labels = {a["label"] for a in doc["aggregates"] if a["seq_len"] == 30}
    assert labels == {
        "pytorch, forget_bias=0",
        "pytorch, forget_bias=2",
        "keras, forget_bias=0",
        "keras, forget_bias=2",
    }
    for T in ("15", "30"):
        assert sorted(doc["ranking"][T]) == sorted(labels)
    # the forget bias is what keeps the gradient: b_f = 2 outlasts b_f = 0 for both schemes
    by = {(a["label"], a["seq_len"]): a["horizon"]["median"] for a in doc["aggregates"]}
    for s in ("pytorch", "keras"):
        assert by[(f"{s}, forget_bias=2", 30)] > by[(f"{s}, forget_bias=0", 30)]
    assert doc["best"]["label"] == doc["ranking"]["30"][0] and doc["best"]["seq_len"] == 30


def test_every_run_rebuilds_alone_with_analyze_from_its_reproduce(grid_doc):
    for r in grid_doc["runs"][::3]:
        res = analyze(None, TINY + r["reproduce"])
        assert res.loss == r["loss"], r["reproduce"]
        assert res.layers[0].flow["horizon"] == r["horizon"]
        assert res.layers[0].grad_c_norm.tolist() == r["layers"][0]["grad_c_norm"]


def test_reproduce_covers_any_grid_field_and_resets_what_the_base_sets():
    # a diagnostics axis, and a base forget bias that the specs (no forget_bias option) reset
    base = [*TINY, "data.seq_len=20", "model.forget_bias=3"]
    cfg, _ = load_config(None, base)
    grid = [("diagnostics.vanishing_ratio", [0.1, 1e-5]), ("model.recurrent_scale", [0.5, 1.0])]
    runs = C.plan(cfg, parse_init_specs("xavier_uniform"), 1, None, grid)
    assert [dict(r.point) for r in runs] == [
        {"diagnostics.vanishing_ratio": v, "model.recurrent_scale": s}
        for v in (0.1, 1e-5)
        for s in (0.5, 1.0)
    ]
    r = runs[3]
    assert "diagnostics.vanishing_ratio=1e-05" in r.reproduce and "model.forget_bias=null" in r.reproduce
    rebuilt, _ = load_config(None, [*base, *r.reproduce])
    assert rebuilt == r.config
    doc = C.compare(cfg, parse_init_specs("xavier_uniform"), 1, runs=runs)
    res = analyze(None, [*base, *doc["runs"][3]["reproduce"]])
    assert res.layers[0].flow["horizon"] == doc["runs"][3]["horizon"]


def test_the_printed_analyze_command_reproduces_the_best_cell(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 6, input_size: 3}\ndata: {batch_size: 3}\n")
    args = [cfg, *sets(["diagnostics.dynamics=false"]), "--init", "pytorch,keras", "--seeds", "3"]
    args += ["--grid", "model.forget_bias=0,2", "--grid", "data.seq_len=12,25"]
    doc = json.loads(run("compare", *args, "--format", "json").stdout)
    md = run("compare", *args, "--format", "markdown")
    assert md.exit_code == 0, md.output
    command = md.stdout.split("```bash\n", 1)[1].split("\n", 1)[0]
    argv = shlex.split(command)
    assert argv[:2] == ["lstm-diag", "analyze"] and argv[2] == str(cfg)
    r = run(*argv[1:], "--format", "json")
    assert r.exit_code in (0, 1), r.output
    got = json.loads(r.stdout)
    best = doc["runs"][doc["best"]["run"]]
    assert best["cell"] == doc["best"]["cell"] and best["horizon"] == doc["best"]["horizon"]
    assert got["loss"] == best["loss"]
    assert got["layers"][0]["flow"]["horizon"] == best["horizon"]
    assert got["layers"][0]["flow"]["decay_rate"] == best["decay_rate"]
    # and the terminal table prints the same command
    table = run("compare", *args)
    assert " ".join(table.stdout.split()).find(" ".join(command.split())) >= 0


BAD_GRIDS = [  # (arguments, the one error line starts with "error: " and this)
    (
        "--grid model.hiden_size=8",
        "--grid: unknown config field 'model.hiden_size' (did you mean 'model.hidden",
    ),
    (
        "--grid model.hidden_size=8,0",
        "grid model.hidden_size=0: model.hidden_size: must be a positive integer",
    ),
    ("--grid model.forget_bias=1,x", "grid model.forget_bias=x: model.forget_bias: must be a valid number"),
    ("--grid data.task=random,nope", "grid data.task=nope: data.task: must be 'random', 'adding', 'copy' or"),
    (
        "--grid model.proj_size=0,6",
        "grid model.proj_size=6: model.proj_size: must be smaller than model.hidden",
    ),
    (
        "--grid data.task=random,adding",
        "grid point data.task=adding with init 'pytorch': model.input_size: must",
    ),
    ("--grid model.forget_bias=1,1.0", "grid model.forget_bias: 1 and 1.0 are the same value"),
    (
        "--init keras:forget_bias=1 --grid model.forget_bias=0,2",
        "grid model.forget_bias: init spec 'keras:forget_bias=1' sets forget_bias too",
    ),
    ("--grid model.bidirectional=false,true", "model.bidirectional: compare does not handle bidirectional"),
    ("--grid seed=1,2", "--grid: seed is no sweep axis: the seeds are the sweep's replicates: use --seeds N"),
    ("--grid engine=numpy,fast", "--grid: engine is no sweep axis: the engine decides how the numbers are"),
    (
        "--grid model.init=pytorch,keras",
        "--grid: model.init is no sweep axis: the init scheme is compare's own",
    ),
    (
        "--grid compare.seeds=1,2",
        "--grid: compare.seeds is no sweep axis: it is a setting of the sweep itself",
    ),
    ("--grid train.plots=a,b", "--grid: train.plots is no sweep axis: it is an output folder"),
    ("--grid train.lr=0.1,1", "--grid: train.lr acts only when compare trains each run: add --train-steps K"),
    ("--grid model=1,2", "--grid: unknown config field 'model'"),
    ("--grid model.forget_bias", "--grid 'model.forget_bias': expected FIELD=V1,V2,..."),
    (
        "--grid data.seq_len=20,30 --seq-lens 20,30",
        "--seq-lens: sweeps data.seq_len, and so does the grid axis",
    ),
    (
        "--grid model.hidden_size=8,16 --seeds 100000000",
        "compare.seeds x compare.init x compare.grid (per-run results): this compare needs about",
    ),
]


@pytest.mark.parametrize("args, expected", BAD_GRIDS)
def test_a_bad_grid_exits_2_naming_it_before_any_run(args, expected, monkeypatch):
    def no_run(*a, **k):
        raise AssertionError("a run started before the grid was validated")

    monkeypatch.setattr(C, "execute", no_run)
    argv = args.split()
    init = [] if "--init" in argv else ["--init", "pytorch"]
    r = run("compare", *sets(TINY), *init, "--seeds", "1", *argv)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {expected}"), lines[0]


def test_yaml_grid_flat_or_nested_and_flags_replace_it(tmp_path):
    base = "model: {hidden_size: 6, input_size: 3}\ndata: {batch_size: 3, seq_len: 12}\n"
    base += "diagnostics: {dynamics: false}\n"
    flat, nested = tmp_path / "flat.yaml", tmp_path / "nested.yaml"
    flat.write_text(base + "compare: {init: pytorch, seeds: 1, grid: {model.forget_bias: [0, 3]}}\n")
    nested.write_text(base + "compare: {init: pytorch, seeds: 1, grid: {model: {forget_bias: '0,3'}}}\n")
    a, b = (run("compare", p, "--format", "json") for p in (flat, nested))
    assert a.exit_code == 0, a.output
    assert a.stdout == b.stdout
    assert json.loads(a.stdout)["settings"]["grid"] == {"model.forget_bias": [0.0, 3.0]}
    r = run("compare", flat, "--format", "json", "--grid", "model.hidden_size=4,8")
    assert json.loads(r.stdout)["settings"]["grid"] == {"model.hidden_size": [4, 8]}


def test_a_data_file_axis_resolves_against_the_config_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "d").mkdir()
    for name, T in (("short", 10), ("long", 25)):
        np.savez(tmp_path / "d" / f"{name}.npz", x=rng.normal(size=(3, T, 3)), y=rng.normal(size=(3, 1)))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: {hidden_size: 6, input_size: 3}\ndata: {task: file, path: d/short.npz}\n"
        "diagnostics: {dynamics: false}\n"
        "compare: {init: pytorch, seeds: 1, grid: {data.path: [d/short.npz, d/long.npz]}}\n"
    )
    r = run("compare", cfg, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [ax["values"] for ax in doc["axes"]] == [
        [str(tmp_path / "d" / "short.npz"), str(tmp_path / "d" / "long.npz")]
    ]
    assert doc["seq_lens"] == [10, 25] and sorted(doc["ranking"]) == ["10", "25"]


def test_an_axis_that_changes_nothing_is_named_on_stderr():
    r = run("compare",
        *sets([*TINY, "data.seq_len=12"]),
        "--init",
        "pytorch",
        "--seeds",
        "1",
        "--grid",
        "diagnostics.norm_points=2,64",
    )
    assert r.exit_code == 0, r.output
    assert "warning: the grid axis diagnostics.norm_points changed no measured number" in r.stderr


def test_grid_results_do_not_depend_on_jobs():
    cfg, _ = load_config(None, [*TINY, "data.seq_len=12"])
    specs, grid = parse_init_specs("pytorch,keras"), {"model.recurrent_scale": [0.5, 2]}
    assert dumps(C.compare(cfg, specs, 2, grid=grid, jobs=1)) == dumps(
        C.compare(cfg, specs, 2, grid=grid, jobs=2)
    )


def test_sweep_figures_heatmaps_and_one_axis(tmp_path):
    from lstm_diag.commands.common import write_figures
    from lstm_diag.report.figures.compare import MAX_SERIES, figures
    from lstm_diag.report.sweep import heatmap_layout
    from lstm_diag.setup.document import loads

    cfg, _ = load_config(None, [*TINY[:-1], "diagnostics.lyapunov_k=2", "diagnostics.dynamics_samples=1"])
    specs = parse_init_specs("pytorch,keras")
    three = {"model.forget_bias": [0, 1, 3], "data.seq_len": [10, 20], "model.num_layers": [1, 2]}
    doc = loads(dumps(C.compare(cfg, specs, 1, grid=three)))
    hm = heatmap_layout(doc)  # the two axes with most values: forget bias (3) and T (2, along x)
    assert (hm.x["field"], hm.y["field"]) == ("data.seq_len", "model.forget_bias")
    assert [p.title() for p in hm.panels] == [
        "pytorch, num_layers=1",
        "keras, num_layers=1",
        "pytorch, num_layers=2",
        "keras, num_layers=2",
    ]
    built = dict(figures(doc))
    assert list(built) == [
        "compare_flow", "compare_forget", "compare_lyapunov", "compare_horizon_vs_T",
        "compare_heatmap_horizon", "compare_heatmap_lyapunov",
    ]  # fmt: skip
    # the per-T figures of a grid show the best MAX_SERIES cells of the 2 x 3 x 2 x 2 = 24: one
    # panel per layer (num_layers is swept), the second for the cells that have a layer 1
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in built["compare_flow"].axes]
    assert [len(entries) for entries in legends] == [MAX_SERIES + 1, 5], legends
    # drawn: the heatmaps, which only a grid has (the flow, forget, Lyapunov and horizon figures
    # are drawn from the JSON without a grid in test_compare; drawing is ~0.5 s a figure)
    heatmaps = [(n, built[n]) for n in ("compare_heatmap_horizon", "compare_heatmap_lyapunov")]
    names = [p.name for p in write_figures(heatmaps, tmp_path / "three", "png", 30)]
    assert names == ["compare_heatmap_horizon.png", "compare_heatmap_lyapunov.png"]
    one = loads(dumps(C.compare(cfg, specs, 2, grid={"model.hidden_size": [4, 8]})))
    drawn = dict(figures(one))  # one axis: a horizon-against-the-axis figure, no heatmap
    assert "compare_horizon_vs_hidden_size" in drawn and "compare_heatmap_horizon" not in drawn
    # encoded: the figure this case is about (the flow, forget and Lyapunov figures of a grid are
    # written above for the three-axis grid, and without a grid in test_compare)
    one_axis = [("compare_horizon_vs_hidden_size", drawn["compare_horizon_vs_hidden_size"])]
    names = [p.name for p in write_figures(one_axis, tmp_path / "one", "png", 30)]
    assert names == ["compare_horizon_vs_hidden_size.png"]
