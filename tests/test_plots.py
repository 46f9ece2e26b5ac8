"""Figures and the HTML report draw the analysis document's own numbers, and write valid files.

The reference for every plotted value is the document of `analyze` (docs/json-schema.md), or for
the heatmaps the engine's cached gate activations averaged over the batch here, in the test.
Figures are built once per module; encoding (the costly part) happens only where bytes are the
point, on a tiny model at low dpi.
"""

import base64
import copy
import json
import math
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run
from matplotlib.text import Text

from lstm_diag import analyze
from lstm_diag.commands.plot import analysis_document
from lstm_diag.core.diagnostics import gate_heatmap
from lstm_diag.report.figures import analysis as plots
from lstm_diag.report.figures import style
from lstm_diag.report.figures.analysis import GATES
from lstm_diag.report.figures.style import VERDICT_COLOR, figure_bytes
from lstm_diag.report.html import render_html
from lstm_diag.report.jsonout import dumps, roundtrip
from lstm_diag.setup.document import loads

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lstm_diag"
NAMES = ["grad_flow", "gate_heatmaps_l0", "saturation_l0", "forget_gate_l0", "gate_grads_l0", "dynamics_l0"]


@pytest.fixture(scope="module")
def vanishing():
    """Vanishes within a few steps (forget bias -1): a horizon line and a shaded region to check."""
    return analyze(ROOT / "configs" / "vanishing.yaml", ["data.seq_len=50", "data.batch_size=4"])


@pytest.fixture(scope="module")
def van_doc(vanishing):
    return roundtrip(vanishing.to_dict())


@pytest.fixture(scope="module")
def van_figs(van_doc):
    return dict(plots.figures(van_doc))


@pytest.fixture(scope="module")
def stacked_all():
    """Two layers, a loss term at every step: flow measured on the last step's term alone."""
    return analyze(
        {
            "model": {"hidden_size": 8, "num_layers": 2},
            "data": {"seq_len": 30, "batch_size": 4},
            "loss": {"target": "all"},
            "diagnostics": {"dynamics": False},
        }
    )


@pytest.fixture(scope="module")
def stacked_doc(stacked_all):
    return roundtrip(stacked_all.to_dict())


def line(ax, prefix):
    hits = [ln for ln in ax.get_lines() if ln.get_label().startswith(prefix)]
    assert len(hits) == 1, [ln.get_label() for ln in ax.get_lines()]
    return hits[0]


def positive(values):
    v = np.asarray(values, np.float64)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def title_color(ax):
    """Colour of the panel's (left-aligned) title."""
    text = ax.get_title(loc="left")
    hits = [t for t in ax.findobj(Text) if t.get_text() == text]
    return hits[0].get_color()


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def same(a, b, path="doc"):
    """Documents equal value for value, type for type, NaN included (== alone takes 1 == 1.0)."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


# ------------------------------------------------------------------ grad_flow


def test_grad_flow_draws_the_documents_norms_threshold_and_horizon(van_doc, van_figs):
    layer, T = van_doc["layers"][0], 50
    fig = van_figs["grad_flow"]
    ax = fig.axes[0]
    t = np.arange(1, T + 1)
    c = line(ax, "‖dL/dc_t‖  cell")
    h = line(ax, "‖dL/dh_t‖")
    np.testing.assert_array_equal(c.get_xdata(), t)
    np.testing.assert_array_equal(c.get_ydata(), positive(layer["grad_c_norm"]))
    np.testing.assert_array_equal(h.get_ydata(), positive(layer["grad_h_norm"]))
    assert ax.get_yscale() == "log"
    fl = layer["flow"]
    assert layer["verdict"] == "vanishing" and not fl["horizon_reaches_start"]
    thr = line(ax, "vanishing threshold")
    np.testing.assert_allclose(thr.get_ydata(), 1e-3 * layer["grad_c_norm"][-1], rtol=1e-12)
    hz = line(ax, "horizon:")
    np.testing.assert_array_equal(hz.get_xdata(), T - fl["horizon"])
    assert f"{fl['horizon']} steps back" in hz.get_label()
    assert line(ax, "loss at t = T").get_xdata()[0] == T
    # each fitted exponential (flow.decay_fit) is drawn only over its steps, with its slope
    segs = fl["decay_fit"]["segments"]
    assert segs
    for seg in segs:
        k0, k1 = seg["steps_back"]
        fit = next(ln for ln in ax.get_lines() if f"t = {T - k0}..{T - k1}:" in ln.get_label())
        assert plots.fmt(seg["rate"]) in fit.get_label()
        x, y = fit.get_xdata(), fit.get_ydata()
        assert list(x) == [T - k0, T - k1] and T - k1 >= T - fl["horizon"]  # within the horizon
        np.testing.assert_allclose(np.log(y[0] / y[1]) / (k1 - k0), seg["rate"], rtol=1e-9)
    # verdict at a glance: coloured panel title and badge
    assert title_color(ax) == VERDICT_COLOR["vanishing"]
    assert "VANISHING" in ax.get_title(loc="left")
    assert any(t.get_text().strip() == "VANISHING" for t in fig.texts)
    # the run named from the document's source: config file and --set
    title = fig.get_suptitle()
    assert "config: vanishing.yaml --set data.seq_len=50 --set data.batch_size=4" in title and "mse" in title


def test_grad_flow_target_all_draws_the_last_term_series_per_layer(stacked_doc):
    doc = stacked_doc
    fig = plots.grad_flow(doc)
    axes = [ax for ax in fig.axes if ax.get_lines()]
    assert len(axes) == 2
    for ax, layer in zip(axes, doc["layers"], strict=True):
        assert layer["flow"]["source"] == "last_step_loss_term"
        flow = line(ax, "‖dL/dc_t‖ of the last step's loss term")
        np.testing.assert_array_equal(flow.get_ydata(), positive(layer["flow_grad_c_norm"]))
        np.testing.assert_array_equal(line(ax, "‖dL/dc_t‖  cell").get_ydata(), positive(layer["grad_c_norm"]))
        thr = line(ax, "vanishing threshold")
        np.testing.assert_allclose(thr.get_ydata(), 1e-3 * layer["flow_grad_c_norm"][-1], rtol=1e-12)
        assert title_color(ax) == VERDICT_COLOR[layer["verdict"]]
        assert f"layer {layer['layer']}" in ax.get_title(loc="left")
    assert "config: (in-memory config)" in fig.get_suptitle()


def test_nonfinite_and_zero_steps_are_marked_not_dropped(van_doc):
    doc = copy.deepcopy(van_doc)
    c = doc["layers"][0]["grad_c_norm"]
    c[3], c[5], c[9] = math.nan, math.inf, 0.0
    ax = plots.grad_flow(doc).axes[0]
    y = line(ax, "‖dL/dc_t‖  cell").get_ydata()
    assert np.isnan(y[[3, 5, 9]]).all()
    marks = {coll.get_label(): coll.get_offsets()[:, 0] for coll in ax.collections if coll.get_label()}
    bad = [v for k, v in marks.items() if k.startswith("non-finite")]
    zero = [v for k, v in marks.items() if k.startswith("exactly 0")]
    np.testing.assert_array_equal(bad[0], [4, 6])  # 1-based t
    np.testing.assert_array_equal(zero[0], [10])
    assert any("non-finite" in t and "t = 4, 6" in t for t in legend_texts(ax))


def test_envelope_keeps_a_one_step_spike_and_only_original_points():
    rng = np.random.default_rng(0)
    T = 5000
    y = np.exp(rng.normal(size=T))
    y[3332] = 1e6  # t = 3333
    y[1200] = 1e-9
    x, v, k = plots.envelope(y)
    assert len(x) <= plots.MAX_POINTS + 2 and k > 1
    assert v.max() == 1e6 and x[np.argmax(v)] == 3333
    assert v.min() == 1e-9 and x[np.argmin(v)] == 1201
    np.testing.assert_array_equal(v, y[x.astype(int) - 1])  # every drawn point is a real (t, y)
    assert x[0] == 1 and x[-1] == T
    assert np.all(np.diff(x) > 0)
    # decimation (every k-th step) would have missed it
    assert y[::k].max() < 1e6


def test_long_sequences_are_drawn_as_an_envelope_that_keeps_the_spike(van_doc):
    doc = copy.deepcopy(van_doc)
    T = 3000
    rng = np.random.default_rng(1)
    for layer in doc["layers"]:
        c = np.exp(rng.normal(size=T))
        c[1777] = 1e8
        layer["grad_c_norm"] = c.tolist()
        layer["grad_h_norm"] = np.exp(rng.normal(size=T)).tolist()
    fig = plots.grad_flow(doc)
    ln = line(fig.axes[0], "‖dL/dc_t‖  cell")
    assert len(ln.get_xdata()) <= plots.MAX_POINTS + 2
    assert ln.get_ydata().max() == 1e8 and ln.get_xdata()[np.argmax(ln.get_ydata())] == 1778
    assert "min/max envelope" in fig.get_suptitle()


# -------------------------------------------------------------- per-layer figures


def test_gate_heatmaps_show_batch_means_on_fixed_scales_and_the_saturation_strip(vanishing, van_figs):
    gates = vanishing.fwd.layers[0].gates
    T, B, H4 = gates.shape
    ref = gates.reshape(T, B, 4, H4 // 4).mean(axis=1)  # (T, 4, H)
    fig = van_figs["gate_heatmaps_l0"]
    heat = [ax for ax in fig.axes if ax.images]
    doc_gates = vanishing.to_dict()["layers"][0]["gates"]
    assert len(heat) == 4
    strips = [ax for ax in fig.axes if ax.get_lines() and not ax.images and "saturated" in ax.get_ylabel()]
    for k, (ax, strip, name) in enumerate(zip(heat, strips, GATES, strict=True)):
        im = ax.images[0]
        np.testing.assert_allclose(im.get_array(), ref[:, k, :].T, rtol=0, atol=5e-5 + 1e-15)  # 4 decimals
        assert im.get_clim() == ((-1.0, 1.0) if name == "cell" else (0.0, 1.0))
        np.testing.assert_array_equal(
            strip.get_lines()[0].get_ydata(), doc_gates[name]["saturation_over_time"]
        )
        assert name in ax.get_title(loc="left")
    assert f"mean over the batch of {B}" in fig.get_suptitle()


def test_heatmap_data_is_binned_over_many_units_and_long_sequences():
    rng = np.random.default_rng(2)
    T, B, H = 1300, 2, 100
    gates = rng.random((T, B, 4 * H))
    heat = gate_heatmap(gates)
    assert heat["units_per_row"] == 2 and heat["steps_per_column"] == 3 and heat["batch"] == B
    f = gates.reshape(T, B, 4, H)[:, :, 1].mean(axis=1).T  # (H, T): forget gate, batch mean
    img = np.asarray(heat["forget"])
    assert img.shape == (50, 434)  # ceil(100 / 2) rows, ceil(1300 / 3) columns
    assert img[7, 5] == round(f[14:16, 15:18].mean(), 4)
    assert img[0, -1] == round(f[0:2, 1299:].mean(), 4)  # a shorter last bin


def test_many_units_are_binned_with_a_note():
    small = {"data": {"seq_len": 12, "batch_size": 2}, "diagnostics": {"dynamics": False}}
    result = analyze({"model": {"hidden_size": 100}, **small})
    gates = result.fwd.layers[0].gates
    fig = plots.gate_heatmaps(roundtrip(result.to_dict()), 0)
    img = [ax for ax in fig.axes if ax.images][1].images[0].get_array()  # forget gate
    f = gates.reshape(12, 2, 4, 100)[:, :, 1].mean(axis=1).T  # (H, T)
    assert img.shape == (50, 12)
    np.testing.assert_allclose(img[7], (f[14] + f[15]) / 2, atol=5e-5 + 1e-15)
    assert "100 units shown in 50 rows: each row is the mean of 2 consecutive units" in fig.get_suptitle()


def test_saturation_scatter_is_each_units_low_vs_high_fraction(van_doc, van_figs):
    panels = [ax for ax in van_figs["saturation_l0"].axes if ax.collections]
    assert len(panels) == 4
    for ax, name in zip(panels, GATES, strict=True):
        g = van_doc["layers"][0]["gates"][name]
        pts = ax.collections[0].get_offsets()
        np.testing.assert_array_equal(pts[:, 0], g["unit_saturated_low"])
        np.testing.assert_array_equal(pts[:, 1], g["unit_saturated_high"])
        assert ax.get_xlim() == ax.get_ylim() == (-0.03, 1.03)


def test_forget_histogram_bars_and_time_constant_axis(van_doc, van_figs):
    hist = van_doc["layers"][0]["forget_histogram"]
    fig = van_figs["forget_gate_l0"]
    ax = fig.axes[0]
    bars = ax.patches[-len(hist["counts"]) :]
    np.testing.assert_array_equal([b.get_height() for b in bars], hist["counts"])
    np.testing.assert_allclose([b.get_x() for b in bars], hist["edges"][:-1], atol=1e-15)
    np.testing.assert_allclose([b.get_width() for b in bars], np.diff(hist["edges"]), atol=1e-15)
    top = fig.axes[1]
    labels = [t.get_text() for t in top.get_xticklabels()]
    taus = np.array([float(s) for s in labels])
    np.testing.assert_allclose(top.get_xticks(), 1 - 1 / taus)  # tau = 1 / (1 - f)
    assert "τ = 1 / (1 − f)" in top.get_xlabel()
    ret = line(ax, "retention")
    assert ret.get_xdata()[0] == van_doc["layers"][0]["flow"]["forget_retention"]


def test_gate_grads_lines_are_the_documents_dz_norms(stacked_doc):
    doc = stacked_doc
    for k in (0, 1):
        ax = plots.gate_grads(doc, k).axes[0]
        for name, sym in zip(GATES, "ifgo", strict=True):
            ln = line(ax, f"‖dL/dz^{sym}_t‖")
            np.testing.assert_array_equal(ln.get_ydata(), positive(doc["layers"][k]["grad_z_norm"][name]))
        # dL/dz^f_1 = 0 exactly (c_0 = 0, eq. 11): marked at t = 1, not silently dropped
        assert doc["layers"][k]["grad_z_norm"]["forget"][0] == 0
        zero = [c for c in ax.collections if c.get_label().startswith("exactly 0")]
        assert zero and 1 in zero[0].get_offsets()[:, 0]


def test_dynamics_figure_plots_the_reported_exponents(van_doc, van_figs):
    left, right = van_figs["dynamics_l0"].axes[:2]
    dyn = van_doc["layers"][0]["dynamics"]
    np.testing.assert_array_equal(left.collections[-1].get_offsets()[:, 1], dyn["lyapunov"])
    lines = {ln.get_label(): ln for ln in right.get_lines()}
    spectral = next(v for k, v in lines.items() if k.startswith("‖∂s_t"))
    np.testing.assert_array_equal(spectral.get_ydata(), dyn["spectral_norm"])
    np.testing.assert_array_equal(spectral.get_xdata(), dyn["norm_steps"])


def test_figure_set_and_drawing_changes_no_number(vanishing, van_doc, van_figs, stacked_all):
    assert list(van_figs) == NAMES
    same(van_doc, roundtrip(vanishing.to_dict()))  # drawing left the document as it was
    # checkpointed BPTT keeps no gate cache: no heatmap data, no heatmap figure, the rest drawn
    ckpt = analyze(ROOT / "configs" / "vanishing.yaml", ["data.seq_len=20", "diagnostics.memory=checkpoint"])
    doc = roundtrip(ckpt.to_dict())
    assert "gate_heatmap" not in doc["layers"][0]
    names = [name for name, _ in plots.figures(doc)]
    assert names == ["grad_flow", "saturation_l0", "forget_gate_l0", "gate_grads_l0"]


# ------------------------------------------------- the saved document and its figures


def test_json_round_trip_is_exact_for_float32_and_nonfinite_values(tmp_path):
    """Floats survive JSON bit for bit (float32 models too) and NaN/Inf come back from `nonfinite`."""
    for extra in (["dtype=float32"], ["model.recurrent_scale=1e300", "diagnostics.dynamics=false"]):
        sets = [x for o in (*TINY, *extra) for x in ("--set", o)]
        r = run("analyze", "--format", "json", *sets)
        assert r.exit_code == 0, r.output
        path = tmp_path / "r.json"
        path.write_text(r.stdout)
        from_json = analysis_document(str(path), ())
        from_config = analysis_document(None, (*TINY, *extra))
        same(from_json, from_config)
        raw = analyze(None, (*TINY, *extra)).to_dict()
        np.testing.assert_array_equal(from_json["layers"][0]["grad_c_norm"], raw["layers"][0]["grad_c_norm"])
    assert json.loads(r.stdout)["nonfinite"]  # the second run overflowed: inf written as null
    assert any(math.isinf(v) for v in from_json["layers"][0]["grad_c_norm"])
    doc = {"a": [1.0, math.nan, -math.inf], "head.weight": {"x": math.inf}}
    same(loads(dumps(doc)), doc)


def test_figures_from_the_saved_json_are_byte_identical(tiny_config, tmp_path, monkeypatch):
    """Compute here, draw anywhere: analyze --plots (from the config) and report of the saved
    JSON give the same PNG bytes, plot of the config and of the JSON the same SVG bytes; the
    report of the JSON equals the report of the config. And the output contract of plot and
    report (issue 14): --output, a FILE output given as a folder, written paths on stderr alone."""
    monkeypatch.setattr(style, "DPI", 30)  # analyze --plots draws at the default dpi: keep it cheap
    config_route = tmp_path / "from-config"
    r = run("analyze", tiny_config, "--format", "json", "--plots", config_route)
    assert r.exit_code == 0, r.output
    saved = tmp_path / "result.json"
    saved.write_text(r.stdout)  # stdout is still the JSON document alone
    written = [ln.split(" to ", 1)[1] for ln in r.stderr.splitlines() if ln.startswith("figure written")]
    assert [Path(p).name for p in written] == [f"{n}.png" for n in NAMES]

    r = run("report", saved, "--output", f"{tmp_path}/rep/", "--dpi", 30)  # a folder: the default name
    html = tmp_path / "rep" / "lstm-diag-report.html"
    assert r.exit_code == 0 and r.stdout == "" and r.stderr.strip() == f"report written to {html}", r.output
    text = html.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    embedded = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', text)
    assert [name for name, _ in embedded] == ["grad_flow", "gate_grads_l0", *NAMES[1:4], "dynamics_l0"]
    for name, data in embedded:
        assert base64.b64decode(data) == (config_route / f"{name}.png").read_bytes(), name
    from_config = analysis_document(str(tiny_config), ())
    images = {name: base64.b64decode(data) for name, data in embedded}
    assert render_html(from_config, images, plots.source_label(from_config)) == text

    for p in config_route.iterdir():
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 200

    # SVG: the config's figure is the same bytes as the JSON's (one is enough for the format;
    # every kind was compared as PNG above)
    r = run("plot", tiny_config, "--output", tmp_path / "svg", "--format", "svg", "--only", "forget_gate_l0")
    assert r.exit_code == 0, r.output
    [(_, fig)] = plots.figures(analysis_document(str(saved), ()), ["forget_gate_l0"])
    svg = figure_bytes(fig, "svg")
    assert (tmp_path / "svg" / "forget_gate_l0.svg").read_bytes() == svg
    assert ET.fromstring(svg).tag.endswith("svg")
    assert b"Date" not in svg and b"Matplotlib v" not in svg  # no date or version in the metadata


def test_plot_only_writes_in_the_documented_order_and_names_the_files_on_stderr(
    tmp_path, tiny_config, figures_not_drawn
):
    only = ("--only", "forget_gate_l0,grad_flow")
    r = run("plot", tiny_config, "--output", tmp_path, "--format", "svg", *only)
    assert r.exit_code == 0 and r.stdout == "", r.output  # written paths go to stderr
    listed = [Path(p.split(" to ", 1)[1]) for p in r.stderr.splitlines()]
    assert [p.name for p in listed] == ["grad_flow.svg", "forget_gate_l0.svg"]  # in the documented order
    assert sorted(tmp_path.iterdir()) == sorted(listed)


def test_plot_only_refuses_a_figure_the_model_does_not_have(tmp_path, tiny_config, stacked_doc):
    """plot --only: a name of no figure kind is refused before anything is computed; a figure
    this model lacks after the analysis, before anything is drawn; one line, exit 2. Every
    name figure_makers gives passes the early check."""
    names = [name for name, _ in plots.figure_makers(stacked_doc)]
    assert "gate_grads_l1" in names and all(plots.FIGURE_NAME.fullmatch(n) for n in names), names
    r = run("plot", tiny_config, "-o", tmp_path / "a", "--only", "grad_flow,gate_grad_l0")
    assert r.exit_code == 2 and "'gate_grad_l0' is not a figure name" in r.stderr, r.output
    saved = tmp_path / "r.json"
    saved.write_text(run("analyze", tiny_config, "--format", "json").stdout)
    only = ("--only", "grad_flow", "--only", "dynamics_l1,saturation_l0_reverse")
    r = run("plot", saved, "-o", tmp_path / "b", *only)
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines() == [
        "error: --only: no figure 'dynamics_l1', 'saturation_l0_reverse' for this model; its figures: "
        + ", ".join(NAMES)
    ]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_plot_and_report_refuse_what_they_cannot_draw(tmp_path, tiny_config):
    printed = run("analyze", tiny_config, "--format", "json").stdout
    doc = json.loads(printed)
    documents = {
        "compare.json": ({**doc, "command": "compare"}, "a compare document; plot and report draw"),
        "old.json": ({**doc, "schema_version": 1, "command": None}, "schema_version 1, which lacks the"),
        "new.json": ({**doc, "schema_version": 99}, "schema_version 99; this lstm-diag draws"),
        "cut.json": ({k: v for k, v in doc.items() if k != "layers"}, "missing layers"),
    }
    cases = {  # name: (the file's text, the message)
        name: (json.dumps({k: v for k, v in content.items() if v is not None}), message)
        for name, (content, message) in documents.items()
    }
    # a document as analyze prints it, cut off (a run that stopped): not read as a YAML config
    cut_off = "an lstm-diag document that is not complete JSON (it breaks off"
    cases["stopped.json"] = ("\n".join(printed.splitlines()[:60]), f"{cut_off} at line 60")
    cases["header.json"] = ('{\n  "schema_version', cut_off)
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        for cmd in ("plot", "report"):
            r = run(cmd, path, "-o", tmp_path / "out")
            assert r.exit_code == 2 and message in r.stderr, (name, r.output)
            assert len(r.stderr.splitlines()) == 1
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc))
    r = run("plot", good, "--set", "data.seq_len=5", "-o", tmp_path / "out")
    assert r.exit_code == 2 and "--set applies to configs only" in r.stderr


def test_encodings_carry_no_date_or_version(van_figs):
    fig = van_figs["forget_gate_l0"]
    pdf = figure_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert b"CreationDate" not in pdf and b"Matplotlib" not in pdf
    with pytest.raises(ValueError):
        figure_bytes(fig, "jpg")


def test_no_pyplot_anywhere_and_no_display_needed(tmp_path):
    """A fresh process is the point: which modules get imported, under a GUI backend, no display."""
    imports = re.compile(r"^\s*(import matplotlib\.pyplot|from matplotlib import .*pyplot)", re.M)
    sources = [p for p in PACKAGE.rglob("*.py") if imports.search(p.read_text(encoding="utf-8"))]
    assert sources == []
    code = (
        "import sys; from lstm_diag import analyze;"
        "from lstm_diag.report.figures.analysis import grad_flow;"
        "from lstm_diag.report.figures.style import figure_bytes;"
        "r = analyze({'data': {'seq_len': 10, 'batch_size': 2}, 'model': {'hidden_size': 4},"
        " 'engine': 'numpy', 'diagnostics': {'dynamics': False}});"
        "b = figure_bytes(grad_flow(r.to_dict()), 'png', 30); assert b[:4] == b'\\x89PNG';"
        "assert 'matplotlib.pyplot' not in sys.modules; print('ok')"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "QtAgg"  # would need a display (and Qt): never used
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# ---------------------------------------------------------------------------- HTML


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "srcset", "data", "action")]


def test_report_page_is_self_contained_with_every_finding(van_doc):
    assert van_doc["findings"]
    images = {"grad_flow": b"\x89PNG fake", "saturation_l0": b"\x89PNG fake"}
    text = render_html(van_doc, images, plots.source_label(van_doc))
    for f in van_doc["findings"]:
        assert f">{f['code']}<" in text
    refs = Refs()
    refs.feed(text)
    assert "script" not in refs.tags and "link" not in refs.tags and "iframe" not in refs.tags
    for tag, attr, value in refs.refs:
        assert value.startswith(("data:image/png;base64,", "#")), (tag, attr, value[:40])
    assert len([v for tag, a, v in refs.refs if tag == "img"]) == 2
    assert "http://" not in text and "https://" not in text
    assert "VANISHING" in text and "vanishing.yaml" in text


def test_html_escapes_all_text(van_doc):
    doc = copy.deepcopy(van_doc)
    doc["findings"][0]["message"] = "<script>alert(1)</script> & more"
    text = render_html(doc, {}, label='<img src="https://x">')
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text
    assert '<img src="https://x">' not in text


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_heatmap_bins_add_as_numpy_reduceat(dtype):
    """The bins' sums (strided adds, not reduceat's gather) are np.add.reduceat's bit for bit:
    first entry plus the rest in order, a partial last bin, k > 8 (reduceat itself)."""
    from lstm_diag.core.diagnostics import _bin_mean

    rng = np.random.default_rng(5)
    for n, max_bins in ((10, 4), (1300, 600), (3001, 600), (700, 64), (6000, 600)):
        a = rng.random((n, 3)).astype(dtype)
        got, k = _bin_mean(a, 0, max_bins)
        starts = np.arange(0, n, k)
        counts = np.diff(np.append(starts, n)).astype(np.float64)
        np.testing.assert_array_equal(got, np.add.reduceat(a, starts, axis=0) / counts[:, None])
        got_t, _ = _bin_mean(np.ascontiguousarray(a.T), 1, max_bins)
        np.testing.assert_array_equal(got_t, got.T)
