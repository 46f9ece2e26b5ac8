"""Figures and the HTML report draw the analysis document's own numbers, and write valid files.

The reference for every plotted value is the document of `analyze` (docs/json-schema.md), or for
the heatmaps the engine's cached gate activations averaged over the batch here, in the test.
"""

import copy
import math
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.text import Text

from lstm_diag import analyze
from lstm_diag.cli import main
from lstm_diag.report import plots
from lstm_diag.report.html import render_html
from lstm_diag.report.plots import GATES, VERDICT_COLOR

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"data": {"seq_len": 40, "batch_size": 4}, "model": {"hidden_size": 8}}


@pytest.fixture(scope="module")
def vanishing():
    """Vanishes within a few steps (forget bias -1): a horizon line and a shaded region to check."""
    return analyze(ROOT / "configs" / "vanishing.yaml", ["data.seq_len=50", "data.batch_size=4"])


@pytest.fixture(scope="module")
def stacked_all():
    """Two layers, a loss term at every step: flow measured on the last step's term alone."""
    return analyze(
        {
            "model": {"hidden_size": 8, "num_layers": 2},
            "data": {"seq_len": 30, "batch_size": 4},
            "loss": {"target": "all"},
        }
    )


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


# ------------------------------------------------------------------ grad_flow


def test_grad_flow_draws_the_documents_norms_threshold_and_horizon(vanishing):
    doc = vanishing.to_dict()
    layer, T = doc["layers"][0], 50
    fig = plots.grad_flow(doc, "vanishing.yaml")
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
    decay = line(ax, "fitted decay rate")
    assert plots.fmt(fl["decay_rate"]) in decay.get_label()
    # the fitted line has the documented slope: ln y falls by decay_rate per step back
    x, y = decay.get_xdata(), decay.get_ydata()
    ok = np.isfinite(y)
    slope = np.polyfit(x[ok], np.log(y[ok]), 1)[0]
    np.testing.assert_allclose(slope, fl["decay_rate"], rtol=1e-9)
    # verdict at a glance: coloured panel title and badge
    assert title_color(ax) == VERDICT_COLOR["vanishing"]
    assert "VANISHING" in ax.get_title(loc="left")
    assert any(t.get_text().strip() == "VANISHING" for t in fig.texts)
    assert "vanishing.yaml" in fig.get_suptitle() and "mse" in fig.get_suptitle()


def test_grad_flow_target_all_draws_the_last_term_series_per_layer(stacked_all):
    doc = stacked_all.to_dict()
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


def test_nonfinite_and_zero_steps_are_marked_not_dropped(vanishing):
    doc = copy.deepcopy(vanishing.to_dict())
    c = doc["layers"][0]["grad_c_norm"]
    c[3], c[5], c[9] = math.nan, math.inf, 0.0
    fig = plots.grad_flow(doc)
    ax = fig.axes[0]
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


def test_long_sequences_are_drawn_as_an_envelope_that_keeps_the_spike(vanishing):
    doc = copy.deepcopy(vanishing.to_dict())
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


def test_gate_heatmaps_show_batch_means_on_fixed_scales_and_the_saturation_strip(vanishing):
    doc = vanishing.to_dict()
    gates = vanishing.fwd.layers[0].gates
    T, B, H4 = gates.shape
    ref = gates.reshape(T, B, 4, H4 // 4).mean(axis=1)  # (T, 4, H)
    fig = plots.gate_heatmaps(doc, gates, 0, "x.yaml")
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 4
    strips = [ax for ax in fig.axes if ax.get_lines() and not ax.images and "saturated" in ax.get_ylabel()]
    for k, (ax, strip, name) in enumerate(zip(heat, strips, GATES, strict=True)):
        im = ax.images[0]
        np.testing.assert_allclose(im.get_array(), ref[:, k, :].T, rtol=0, atol=1e-15)
        assert im.get_clim() == ((-1.0, 1.0) if name == "cell" else (0.0, 1.0))
        np.testing.assert_array_equal(
            strip.get_lines()[0].get_ydata(), doc["layers"][0]["gates"][name]["saturation_over_time"]
        )
        assert name in ax.get_title(loc="left")


def test_many_units_are_binned_with_a_note():
    result = analyze({"model": {"hidden_size": 100}, "data": {"seq_len": 12, "batch_size": 2}})
    gates = result.fwd.layers[0].gates
    fig = plots.gate_heatmaps(result.to_dict(), gates, 0)
    img = [ax for ax in fig.axes if ax.images][1].images[0].get_array()  # forget gate
    f = gates.reshape(12, 2, 4, 100)[:, :, 1].mean(axis=1).T  # (H, T)
    assert img.shape == (50, 12)
    np.testing.assert_allclose(img[7], (f[14] + f[15]) / 2, atol=1e-15)
    assert "100 units shown in 50 rows: each row is the mean of 2 consecutive units" in fig.get_suptitle()


def test_saturation_scatter_is_each_units_low_vs_high_fraction(vanishing):
    doc = vanishing.to_dict()
    fig = plots.saturation(doc, 0)
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == 4
    for ax, name in zip(panels, GATES, strict=True):
        g = doc["layers"][0]["gates"][name]
        pts = ax.collections[0].get_offsets()
        np.testing.assert_array_equal(pts[:, 0], g["unit_saturated_low"])
        np.testing.assert_array_equal(pts[:, 1], g["unit_saturated_high"])
        assert ax.get_xlim() == ax.get_ylim() == (-0.03, 1.03)


def test_forget_histogram_bars_and_time_constant_axis(vanishing):
    doc = vanishing.to_dict()
    hist = doc["layers"][0]["forget_histogram"]
    fig = plots.forget_gate(doc, 0)
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
    assert ret.get_xdata()[0] == doc["layers"][0]["flow"]["forget_retention"]


def test_gate_grads_lines_are_the_documents_dz_norms(stacked_all):
    doc = stacked_all.to_dict()
    for k in (0, 1):
        fig = plots.gate_grads(doc, k)
        ax = fig.axes[0]
        for name, sym in zip(GATES, "ifgo", strict=True):
            ln = line(ax, f"‖dL/dz^{sym}_t‖")
            np.testing.assert_array_equal(ln.get_ydata(), positive(doc["layers"][k]["grad_z_norm"][name]))
        # dL/dz^f_1 = 0 exactly (c_0 = 0, eq. 11): marked at t = 1, not silently dropped
        assert doc["layers"][k]["grad_z_norm"]["forget"][0] == 0
        zero = [c for c in ax.collections if c.get_label().startswith("exactly 0")]
        assert zero and 1 in zero[0].get_offsets()[:, 0]


def test_plotting_changes_no_number(vanishing):
    before = copy.deepcopy(vanishing.to_dict())
    gates = vanishing.fwd.layers[0].gates.copy()
    for _, fig in plots.figures(vanishing):
        assert fig.axes
    assert vanishing.to_dict() == before
    np.testing.assert_array_equal(vanishing.fwd.layers[0].gates, gates)


# ------------------------------------------------------------------------- files


def test_write_figures_png_names_and_magic(tmp_path, stacked_all):
    out = tmp_path / "a" / "b"  # created if missing
    paths = plots.write_figures(stacked_all, out, "png", dpi=40)
    names = sorted(p.name for p in paths)
    expected = ["grad_flow.png"] + [
        f"{n}_l{k}.png"
        for k in (0, 1)
        for n in ("gate_heatmaps", "saturation", "forget_gate", "gate_grads", "dynamics")
    ]
    assert names == sorted(expected)
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no temp files left behind
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", data[16:24])
        assert w > 200 and h > 150


def test_svg_and_pdf_are_valid(vanishing):
    fig = plots.grad_flow(vanishing.to_dict())
    root = ET.fromstring(plots.figure_bytes(fig, "svg"))
    assert root.tag.endswith("svg")
    pdf = plots.figure_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    for fmt in ("svg", "pdf", "png"):  # no timestamp: the same analysis gives the same bytes
        again = plots.grad_flow(vanishing.to_dict())
        assert plots.figure_bytes(plots.grad_flow(vanishing.to_dict()), fmt) == plots.figure_bytes(again, fmt)
    with pytest.raises(ValueError):
        plots.figure_bytes(fig, "jpg")


def test_works_without_a_display_and_never_touches_pyplot(tmp_path):
    code = (
        "import sys; from lstm_diag import analyze;"
        "from lstm_diag.report.plots import grad_flow, figure_bytes;"
        "r = analyze({'data': {'seq_len': 10, 'batch_size': 2}, 'model': {'hidden_size': 4}});"
        "b = figure_bytes(grad_flow(r.to_dict()), 'png', 30); assert b[:4] == b'\\x89PNG';"
        "assert 'matplotlib.pyplot' not in sys.modules; print('ok')"
    )
    for backend in (None, "Agg", "QtAgg"):  # QtAgg would need a display (and Qt): never used
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
        if backend:
            env["MPLBACKEND"] = backend
        r = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path
        )
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# ---------------------------------------------------------------- CLI and HTML


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "srcset", "data", "action")]


def test_report_is_self_contained_with_every_finding_and_figure(tmp_path):
    out = tmp_path / "sub" / "r.html"
    r = CliRunner().invoke(
        main,
        [
            "report",
            str(ROOT / "configs" / "exploding.yaml"),
            "-o",
            str(out),
            "--dpi",
            "40",
            "--set",
            "data.seq_len=40",
            "--set",
            "clipping.mode=value",
        ],
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    text = out.read_text(encoding="utf-8")
    doc = analyze(ROOT / "configs" / "exploding.yaml", ["data.seq_len=40", "clipping.mode=value"]).to_dict()
    assert doc["findings"]
    for f in doc["findings"]:
        assert f">{f['code']}<" in text
    refs = Refs()
    refs.feed(text)
    assert "script" not in refs.tags and "link" not in refs.tags and "iframe" not in refs.tags
    for tag, attr, value in refs.refs:
        assert value.startswith(("data:image/png;base64,", "#")), (tag, attr, value[:40])
    imgs = [v for tag, a, v in refs.refs if tag == "img"]
    assert len(imgs) == 6  # grad_flow + 5 per layer (gate_grads, heatmaps, saturation, forget, dynamics)
    assert "http://" not in text and "https://" not in text
    assert "EXPLODING" in text and "exploding.yaml" in text


def test_html_escapes_all_text(vanishing):
    doc = copy.deepcopy(vanishing.to_dict())
    doc["findings"][0]["message"] = "<script>alert(1)</script> & more"
    text = render_html(doc, {}, label='<img src="https://x">')
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text
    assert '<img src="https://x">' not in text


def test_plot_command_prints_paths_and_analyze_plots_writes_the_same_files(tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        main, ["plot", "-o", str(tmp_path / "p"), "--format", "svg", "--set", "data.seq_len=20"]
    )
    assert r.exit_code == 0, r.output
    listed = [Path(p) for p in r.stdout.splitlines()]
    assert [p.name for p in listed] == [
        "grad_flow.svg",
        "gate_heatmaps_l0.svg",
        "saturation_l0.svg",
        "forget_gate_l0.svg",
        "gate_grads_l0.svg",
        "dynamics_l0.svg",
    ]
    assert all(p.is_file() for p in listed)
    r = runner.invoke(
        main, ["analyze", "--format", "json", "--set", "data.seq_len=20", "--plots", str(tmp_path / "q")]
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.lstrip().startswith("{")  # stdout is still the JSON document alone
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == sorted(
        p.with_suffix(".png").name for p in listed
    )
    bad = runner.invoke(main, ["plot", "-o", str(tmp_path), "--format", "jpg"])
    assert bad.exit_code == 2


def test_dynamics_figure_plots_the_reported_exponents():
    from lstm_diag import analyze
    from lstm_diag.report.plots import dynamics

    doc = analyze(None, ["data.seq_len=40"]).to_dict()
    fig = dynamics(doc, 0)
    left, right = fig.axes[:2]
    offsets = left.collections[-1].get_offsets()
    np.testing.assert_allclose(offsets[:, 1], doc["layers"][0]["dynamics"]["lyapunov"])
    lines = {line.get_label(): line for line in right.get_lines()}
    spectral = next(v for k, v in lines.items() if k.startswith("‖∂s_t"))
    np.testing.assert_allclose(spectral.get_ydata(), doc["layers"][0]["dynamics"]["spectral_norm"])
