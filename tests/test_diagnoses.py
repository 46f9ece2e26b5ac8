"""Diagnoses that are true of the numbers beside them, for drawn and for loaded (trained) models.

- the decay summary: a curve of two exponentials gives both rates and the step where the
  slope changes; one exponential gives one rate; the fit stays within the horizon window;
- the forget-gate headline and LD103 follow from the per-unit cell-path numbers, which are
  checked against the engine's own forget-gate activations;
- remedies say which situation they are for; a loaded model gets no init remedy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstm_diag.core.diagnostics import decay_segments, flow_summary
from lstm_diag.features.analysis import analyze
from lstm_diag.features.findings import decay_text
from lstm_diag.report.figures.analysis import forget_headline


def two_slopes(T=40, fast=0.45, slow=0.08, change=5, noise=0.0, seed=0):
    """||dL/dc_t|| over t = 1..T: ×e^-fast per step back for `change` steps from t = T, then ×e^-slow."""
    k = np.arange(T, dtype=float)  # steps back
    log_n = -fast * np.minimum(k, change) - slow * np.maximum(k - change, 0)
    log_n += noise * np.random.default_rng(seed).normal(size=T)
    return np.exp(log_n)[::-1]  # index 0 is t = 1


def test_two_exponentials_give_both_rates_and_the_change_point():
    fit = decay_segments(two_slopes(), horizon=39, reaches_start=True)
    first, then = fit["segments"]
    assert fit["change_steps_back"] == 5
    assert first["steps_back"] == [0, 5] and then["steps_back"] == [5, 39]
    assert first["rate"] == pytest.approx(0.45, rel=1e-9) and then["rate"] == pytest.approx(0.08, rel=1e-9)
    assert first["factor_per_step"] == pytest.approx(math.exp(-0.45), rel=1e-9)
    assert then["fitted_norm"][0] == pytest.approx(math.exp(-0.45 * 5), rel=1e-9)
    text = decay_text({"decay_fit": fit}, 40)
    assert text == ("fast 0.45/step (×0.638) over t = 40..35, then slower 0.08/step (×0.923) over t = 35..1")


def test_noisy_two_exponentials_still_give_both():
    fit = decay_segments(two_slopes(noise=0.05, change=8), horizon=39, reaches_start=True)
    assert len(fit["segments"]) == 2 and abs(fit["change_steps_back"] - 8) <= 1
    assert fit["segments"][0]["rate"] == pytest.approx(0.45, rel=0.1)
    assert fit["segments"][1]["rate"] == pytest.approx(0.08, rel=0.1)


def test_one_exponential_gives_one_rate_within_the_horizon_window():
    n = two_slopes(fast=0.3, slow=0.3)
    fit = decay_segments(n, horizon=12, reaches_start=False)
    (seg,) = fit["segments"]
    assert seg["steps_back"] == [0, 12] and fit["change_steps_back"] is None
    assert seg["rate"] == pytest.approx(0.3, rel=1e-9)
    # only the window is fitted: what happens beyond the horizon does not change the rate
    n2 = n.copy()
    n2[: 40 - 13] = 1.0  # flat (or anything) before t = 28, i.e. beyond 12 steps back
    assert decay_segments(n2, 12, False)["segments"][0]["rate"] == pytest.approx(0.3, rel=1e-9)


def test_too_few_points_fit_nothing():
    fit = decay_segments(np.array([1.0, 1e-5]), horizon=1, reaches_start=False)
    assert fit["segments"] == []
    assert "too few" in decay_text({"decay_fit": fit}, 2)


def test_flow_summary_counts_the_units_whose_cell_path_stays_open():
    T, ratio = 50, 1e-3
    mlf = np.log(np.array([0.5, 0.9, 0.99, 0.999, 1.0]))  # per-unit mean ln f
    fl = flow_summary(two_slopes(T), float(mlf[:4].mean()), ratio, "loss", mlf)
    horizons = math.log(ratio) / mlf[:4]  # 9.97, 65.6, 687, 6904 steps
    assert fl.cell_path_open_units == int(np.sum(horizons >= T)) + 1 == 4
    assert fl.cell_path_horizon_max == math.inf  # f = 1 exactly never forgets


# --------------------------------------------------------------- real analyses


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A loaded model whose forget gates are mostly short (b_f = -1) with 4 integrator units
    (b_f = 6): the average retention is short, but 4 units keep their cell path open."""
    tmp = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(3)
    I, H, T = 4, 16, 60
    b = np.zeros(4 * H)
    b[H : 2 * H] = -1.0
    b[H : H + 4] = 6.0
    w = {
        "lstm.weight_ih_l0": rng.normal(0, 0.3, (4 * H, I)),
        "lstm.weight_hh_l0": rng.normal(0, 0.3, (4 * H, H)),
        "lstm.bias_ih_l0": b,
        "lstm.bias_hh_l0": np.zeros(4 * H),
        "head.weight": rng.normal(0, 0.3, (1, H)),
        "head.bias": np.zeros(1),
    }
    np.savez(tmp / "w.npz", **w)
    sets = [
        f"model.weights={tmp / 'w.npz'}",
        f"data.seq_len={T}",
        "data.batch_size=4",
        "diagnostics.dynamics=false",
    ]
    return analyze(None, sets)


def test_open_units_match_the_engines_forget_gates(mixed):
    f = mixed.fwd.layers[0].gate("f")  # (T, B, H) the engine's forget activations
    per_unit = np.log(f).mean(axis=(0, 1))  # (H,)
    T = f.shape[0]
    want = int(np.sum(math.log(1e-3) / per_unit >= T))
    fl = mixed.layers[0].flow
    assert want == 4 and fl["cell_path_open_units"] == want
    assert fl["cell_path_horizon"] < T  # the average unit alone would say "erased"


def test_headline_and_ld103_follow_the_per_unit_numbers(mixed):
    doc = mixed.to_dict()
    layer, T = doc["layers"][0], len(doc["layers"][0]["grad_c_norm"])
    text, _ = forget_headline(layer, T)
    assert text.startswith("4 of 16 units keep their cell path open over all T = 60 steps")
    assert "do not erase" in text
    assert not [f for f in doc["findings"] if f["code"] == "LD103"]


def test_vanishing_config_headline_says_erased():
    doc = analyze("configs/vanishing.yaml", ["diagnostics.dynamics=false"]).to_dict()
    layer = doc["layers"][0]
    text, _ = forget_headline(layer, 200)
    assert layer["flow"]["cell_path_open_units"] == 0
    assert "no unit keeps its cell path open" in text and "alone erase the gradient" in text
    ld103 = [f for f in doc["findings"] if f["code"] == "LD103"]
    assert ld103 and f"{layer['flow']['cell_path_horizon_max']:.3g}" in ld103[0]["message"]
    ld101 = next(f for f in doc["findings"] if f["code"] == "LD101")
    assert decay_text(layer["flow"], 200) in ld101["message"]
    assert ld101["remedy_for"] == "init" and ld101["remedy"].startswith("At init: ")


def test_a_loaded_model_gets_no_init_remedy(mixed):
    doc = mixed.to_dict()
    assert doc["findings"]
    for f in doc["findings"]:
        assert f["remedy_for"] in ("trained", "any"), f
        assert f["remedy"].startswith(("Trained model (loaded weights): ", "At init or trained: ")), f
        for init_only in ("init gain", "model.init=", "re-initialise", "orthogonal init"):
            assert init_only not in f["remedy"], f


def test_drawn_models_get_init_remedies():
    doc = analyze(None, ["data.seq_len=60", "model.forget_bias=-2", "diagnostics.dynamics=false"]).to_dict()
    codes = {f["code"]: f for f in doc["findings"]}
    assert "LD101" in codes
    for f in doc["findings"]:
        assert f["remedy_for"] in ("init", "any") and f["remedy"].startswith(
            ("At init: ", "At init or trained: ")
        )


def _every_corner(n, horizon, reaches_start):
    """decay_segments' choice of corner by trying every corner with the solver (the reference
    for the suffix-sum shortlist, which must pick the same one)."""
    from lstm_diag.core import diagnostics as d

    with np.errstate(divide="ignore"):
        y = np.log(np.asarray(n, np.float64)[::-1])
    K = len(y) - 1 if reaches_start else min(horizon, len(y) - 1)
    k = np.arange(K + 1, dtype=np.float64)
    keep = np.isfinite(y[: K + 1])
    k, y = k[keep], y[: K + 1][keep]
    best = None
    for b in k[d.FIT_MIN_POINTS - 1 : len(k) - d.FIT_MIN_POINTS + 1]:
        fit = d._hinge_sse(k, y, float(b))
        if best is None or fit[3] < best[4]:
            best = (float(b), *fit)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_corner_shortlist_picks_the_corner_every_corner_would(seed):
    """Noise from 1e-9 to 1 on two exponentials (and zeros, spikes): the shortlist
    (`_corner_candidates`) holds the corner the solver finds best among all of them."""
    from lstm_diag.core import diagnostics as d

    rng = np.random.default_rng(seed)
    for noise in (1e-9, 1e-4, 0.02, 0.3, 1.0):
        n = two_slopes(T=int(rng.integers(8, 300)), change=int(rng.integers(2, 7)), noise=noise, seed=seed)
        n[rng.integers(0, len(n), 2)] *= 1e3
        n[rng.integers(0, len(n))] = 0.0  # ln 0: left out of the fit
        with np.errstate(divide="ignore"):
            y = np.log(n[::-1])
        k = np.arange(len(y), dtype=np.float64)[np.isfinite(y)]
        y = y[np.isfinite(y)]
        _, _, sse1, r = d._line_sse(k, y)
        ref = _every_corner(n, len(n) - 1, True)
        shortlist = k[d._corner_candidates(k, y, r, sse1)]
        assert ref[0] in shortlist and len(shortlist) <= 3, (noise, ref[0], shortlist)
        fit = decay_segments(n, len(n) - 1, True)
        if fit["change_steps_back"] is not None:
            assert fit["change_steps_back"] == int(ref[0])
