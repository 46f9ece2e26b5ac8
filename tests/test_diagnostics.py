"""Diagnostics against independent references and the configs built to vanish, explode, be healthy."""

from pathlib import Path

import numpy as np
import pytest

from lstm_diag import analyze
from lstm_diag.core.clipping import clip, snapshot
from lstm_diag.core.diagnostics import GateAccumulator, theil_sen_slope
from lstm_diag.features.analysis import analyze_problem
from lstm_diag.features.findings import matches
from lstm_diag.setup.config import load_config
from lstm_diag.setup.problem import build

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
GATES = ("input", "forget", "cell", "output")


def reference(case):
    with np.load(FIXTURES / case / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", CASES)
def test_gate_statistics_match_torch_gates(case):
    """Means exactly; saturation fractions to within one element (the threshold comparison of a
    value within round-off of 0.1 may go either way)."""
    result = analyze(FIXTURES / case / "config.yaml")
    ref = reference(case)
    eps = 0.1
    for k, layer in enumerate(result.to_dict()["layers"]):
        T, B, H4 = ref["gates"][k].shape
        a = ref["gates"][k].reshape(T, B, 4, H4 // 4).astype(np.float64)
        n = T * B * (H4 // 4)
        for j, name in enumerate(GATES):
            v = a[:, :, j]
            if name == "cell":
                v = (v + 1) / 2
            got = layer["gates"][name]
            rtol = 1e-12 if "float32" not in case else 1e-6
            np.testing.assert_allclose(got["mean"], a[:, :, j].mean(), rtol=rtol, atol=1e-15)
            np.testing.assert_allclose(got["std"], a[:, :, j].std(), rtol=1e-9 if rtol < 1e-9 else 1e-5)
            assert abs(got["saturated_low"] - np.mean(v < eps)) <= 1 / n
            assert abs(got["saturated_high"] - np.mean(v > 1 - eps)) <= 1 / n
            per_step = ((v < eps) | (v > 1 - eps)).mean(axis=(1, 2))
            assert np.all(np.abs(np.array(got["saturation_over_time"]) - per_step) <= 1 / (B * H4 // 4))


def test_gate_statistics_are_the_same_accumulated_in_segments():
    r = analyze({"data": {"seq_len": 60}, "model": {"forget_bias": 2.5}})
    gates = r.fwd.layers[0].gates
    whole = GateAccumulator(32, 0.1)
    whole.add(gates)
    parts = GateAccumulator(32, 0.1)
    for s in (slice(0, 7), slice(7, 33), slice(33, 60)):
        parts.add(gates[s])
    a, b = whole.result(), parts.result()
    for g in GATES:
        np.testing.assert_allclose(b[g]["mean"], a[g]["mean"], rtol=1e-13)
        np.testing.assert_allclose(b[g]["std"], a[g]["std"], rtol=1e-10)
        assert b[g]["saturation_over_time"] == a[g]["saturation_over_time"]
        assert b[g]["unit_saturated_high"] == a[g]["unit_saturated_high"]
    np.testing.assert_allclose(parts.forget_log_mean(), whole.forget_log_mean(), rtol=1e-13)


@pytest.mark.parametrize("case", CASES)
def test_clipping_matches_torch(case):
    """Our clipping applied to PyTorch's gradients equals torch's clipping of the same gradients."""
    result = analyze(FIXTURES / case / "config.yaml")
    ref = reference(case)
    params = result.problem.params
    grads = {name: ref[f"grad.{name}"] for name in params}
    rtol = 1e-12 if "float32" not in case else 1e-6
    snap = snapshot(grads, params, "norm", max_norm=float(ref["clip.max_norm"]))
    np.testing.assert_allclose(snap["total_norm"], ref["clip.total_norm"], rtol=rtol)
    assert snap["clipped"] and snap["clip_coef"] < 1
    np.testing.assert_allclose(
        snap["clip_coef"], ref["clip.max_norm"] / (ref["clip.total_norm"] + 1e-6), rtol=rtol
    )
    for mode, kw in (
        ("norm", {"max_norm": float(ref["clip.max_norm"])}),
        ("value", {"clip_value": float(ref["clip.clip_value"])}),
        ("agc", {"clipping": float(ref["clip.agc_factor"])}),
    ):
        clipped, _ = clip(grads, params, mode, **kw)
        for name, g in clipped.items():
            np.testing.assert_allclose(
                g, ref[f"clip.{mode}.{name}"], rtol=rtol, atol=1e-300, err_msg=f"{mode} {name}"
            )


def test_clipping_snapshot_fields():
    snap = analyze({"clipping": {"mode": "value", "clip_value": 0.001}}).to_dict()["clipping"]
    assert snap["mode"] == "value" and snap["clipped"]
    assert 0 < snap["changed_fraction"] < 1 and snap["cosine"] < 1
    assert snap["norm_after"] < snap["total_norm"]
    for p in snap["parameters"].values():
        assert p["norm_after"] <= p["norm_before"] + 1e-15
    none = analyze(None).to_dict()["clipping"]
    assert none["clip_coef"] == 1.0 and not none["clipped"] and none["norm_after"] == none["total_norm"]


def test_theil_sen_is_robust_to_a_spike():
    y = 0.5 * np.arange(50.0)
    y[10] = 1e6
    assert theil_sen_slope(y) == pytest.approx(0.5)


def test_theil_sen_is_bitwise_the_median_of_pairwise_slopes():
    """The definition, np.median over i < j of (y_j - y_i) / (t_j - t_i) on the finite points,
    bit for bit: odd and even numbers of pairs, ties, non-finite entries, one point, thinning."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4, 5, 9, 50, 101, 400, 401, 1000):
        for kind in range(4):
            y = np.cumsum(rng.normal(size=n)) if kind != 1 else np.round(rng.normal(size=n), 1)
            if kind == 2 and n > 2:
                y[rng.integers(0, n, size=max(1, n // 7))] = rng.choice([np.nan, np.inf, -np.inf])
            if kind == 3:
                y = y.astype(np.float32)[::-1]
            t = np.arange(n, dtype=np.float64)
            keep = np.isfinite(y)
            t, v = t[keep], np.asarray(y, np.float64)[keep]
            if len(v) > 400:
                idx = np.unique(np.linspace(0, len(v) - 1, 400).round().astype(int))
                t, v = t[idx], v[idx]
            i, j = np.triu_indices(len(v), k=1)
            want = float(np.median((v[j] - v[i]) / (t[j] - t[i]))) if len(v) > 1 else float("nan")
            got = theil_sen_slope(y)
            assert got == want or (got != got and want != want), (n, kind)


# --- verdicts on the three configs built for them (numbers seen when written, float64, seed 0):
#   vanishing.yaml  decay 0.916/step, horizon 7 of 200, forget retention 0.266
#   exploding.yaml  ||dL/dc_1|| / ||dL/dc_T|| = 4.2e25, growth x1.34 per step back
#   healthy.yaml    decay 0.0013/step, horizon reaches t=1 of 100, retention 0.951


def test_vanishing_config():
    doc = analyze(ROOT / "configs" / "vanishing.yaml").to_dict()
    fl = doc["layers"][0]["flow"]
    assert doc["layers"][0]["verdict"] == "vanishing" and doc["verdict"] == "vanishing"
    assert 0.8 < fl["decay_rate"] < 1.0 and fl["horizon"] < 10 and not fl["horizon_reaches_start"]
    codes = {f["code"] for f in doc["findings"]}
    assert {"LD101", "LD103"} <= codes and "LD102" not in codes


def test_exploding_config():
    doc = analyze(ROOT / "configs" / "exploding.yaml").to_dict()
    fl = doc["layers"][0]["flow"]
    assert doc["layers"][0]["verdict"] == "exploding"
    assert fl["ratio_first_last"] > 1e20 and fl["decay_rate"] < -0.2
    codes = {f["code"] for f in doc["findings"]}
    assert {"LD102", "LD303"} <= codes and "LD101" not in codes


def test_healthy_config():
    doc = analyze(ROOT / "configs" / "healthy.yaml").to_dict()
    fl = doc["layers"][0]["flow"]
    assert doc["layers"][0]["verdict"] == "healthy" and fl["horizon_reaches_start"]
    assert abs(fl["decay_rate"]) < 0.01 and 0.94 < fl["forget_retention"] < 0.96
    assert not any(f["severity"] in ("error", "warning") for f in doc["findings"])


def test_target_all_measures_flow_on_the_last_step_loss_term():
    doc = analyze({"loss": {"target": "all"}, "data": {"seq_len": 80}}).to_dict()
    layer = doc["layers"][0]
    assert layer["flow"]["source"] == "last_step_loss_term"
    flow = np.array(layer["flow_grad_c_norm"])
    full = np.array(layer["grad_c_norm"])
    assert flow[-1] == pytest.approx(full[-1], rel=1e-12)  # at t = T only the last term acts
    assert flow[0] < 1e-10 * full[0]  # earlier terms keep the full gradient alive


# --- every finding code, each from a situation built for it


def problem_with(mapping, edit):
    problem = build(load_config(mapping)[0])
    edit(problem.params)
    return analyze_problem(problem)


def codes_of(result):
    return {f.code for f in result.findings}


def test_ld104_lower_layers_starved():
    def shrink(p):
        p["weight_ih_l1"] *= 1e-3

    r = problem_with({"model": {"num_layers": 2}, "data": {"seq_len": 30}}, shrink)
    assert "LD104" in codes_of(r)


def test_ld201_ld202_stuck_and_saturated_units():
    def stick(p):
        H = 32
        p["bias_ih_l0"][:H] = 12.0  # every input gate open
        p["bias_ih_l0"][3 * H : 3 * H + 5] = -12.0  # five output units shut

    r = problem_with({"data": {"seq_len": 30}}, stick)
    codes = codes_of(r)
    assert {"LD201", "LD202"} <= codes
    gates = r.to_dict()["layers"][0]["gates"]
    assert gates["input"]["stuck_high"] == 32 and gates["output"]["stuck_low"] == 5


def test_ld203_ld204_integrators_and_cell_saturation():
    codes = codes_of(analyze({"model": {"forget_bias": 5}, "data": {"seq_len": 200}}))
    assert {"LD203", "LD204"} <= codes


def test_ld301_ld302_clipping():
    assert "LD301" in codes_of(analyze({"clipping": {"mode": "norm", "max_norm": 0.01}}))
    codes = codes_of(analyze({"clipping": {"mode": "value", "clip_value": 0.001}}))
    assert {"LD301", "LD302"} <= codes


def test_ld4xx_non_finite_numbers_are_findings_not_crashes():
    def blow_up(p):  # a weight file with infinities: +inf - inf = NaN in z_t
        p["weight_ih_l0"][:] *= np.inf

    r = problem_with({"data": {"seq_len": 20}}, blow_up)
    codes = codes_of(r)
    assert {"LD401", "LD403"} <= codes
    nf = r.to_dict()["numerics"]["first_nonfinite_forward"]
    assert nf["layer"] == 0 and 1 <= nf["step"] <= 20


def test_ld402_non_finite_gradient():
    def blow_up_head(p):
        p["head.weight"][:] = 1e308
        p["head.bias"][:] = 1e308

    r = problem_with({"data": {"seq_len": 10}}, blow_up_head)
    assert "LD402" in codes_of(r)


def test_every_code_has_a_test_above():
    from lstm_diag.features.codes import CODES

    source = Path(__file__).read_text()
    for code in CODES:
        assert code.lower() in source.lower(), code


def test_fail_on_selectors():
    from lstm_diag.features.findings import Finding

    f = Finding("LD203", "info", "m", "r", layer=0)
    w = Finding("LD103", "warning", "m", "r", layer=0)
    assert matches(f, ["LD203"]) and matches(f, ["LD2"]) and not matches(f, ["warning"])
    assert matches(w, ["warning"]) and not matches(w, ["error"]) and matches(w, ["info"])


def test_ld105_chaotic_dynamics_and_the_dynamics_section():
    """On the first 4 samples (diagnostics.dynamics_samples), numbers seen when written:
    exploding.yaml λ1 = +0.191/step against a measured growth of ||dL/dc_t|| of +0.205/step;
    vanishing.yaml λ1 = -0.929 against -0.922 (decay rate of the batch norm 0.916)."""
    exploding = analyze(ROOT / "configs" / "exploding.yaml").to_dict()
    dyn = exploding["layers"][0]["dynamics"]
    assert dyn["lyapunov"] == sorted(dyn["lyapunov"], reverse=True) and len(dyn["lyapunov"]) == 8
    assert 0.15 < dyn["lyapunov"][0] < 0.3
    assert abs(dyn["gradient"]["measured_rate"] - dyn["lyapunov"][0]) < 0.05
    assert "LD105" in {f["code"] for f in exploding["findings"]}
    vanishing = analyze(ROOT / "configs" / "vanishing.yaml").to_dict()
    vd = vanishing["layers"][0]["dynamics"]
    assert (
        vd["lyapunov"][0] < -0.8
        and abs(vd["lyapunov"][0] + vanishing["layers"][0]["flow"]["decay_rate"]) < 0.05
    )
    assert "LD105" not in {f["code"] for f in vanishing["findings"]}


def test_dynamics_can_be_skipped_and_is_skipped_when_checkpointing():
    off = analyze(None, ["diagnostics.dynamics=false", "data.seq_len=20"]).to_dict()
    assert not off["dynamics"]["computed"] and "dynamics" not in off["layers"][0]
    ck = analyze(None, ["diagnostics.memory=checkpoint", "data.seq_len=20"]).to_dict()
    assert not ck["dynamics"]["computed"] and "checkpoint" in ck["dynamics"]["reason"]


def test_dynamics_is_skipped_when_it_would_exceed_the_memory_budget():
    doc = analyze(None, ["diagnostics.memory=full", "diagnostics.memory_budget_mb=0.5"]).to_dict()
    assert doc["memory"]["mode"] == "full"
    assert not doc["dynamics"]["computed"] and "memory_budget_mb" in doc["dynamics"]["reason"]


def _gates(T, B, H, dtype, seed=0):
    """Activations as the engine makes them (sigmoid i, f, o; tanh g), with forget values on
    and next to histogram edges."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(T, B, 4 * H)) * 2
    z[:, :, H : 2 * H] += 2.0
    a = 1 / (1 + np.exp(-z))
    a[:, :, 2 * H : 3 * H] = np.tanh(z[:, :, 2 * H : 3 * H])
    edges = np.linspace(0, 1, 51)
    f = a[:, :, H : 2 * H].reshape(-1)
    picks = np.concatenate([edges, np.nextafter(edges, 2), np.nextafter(edges, -1)]).clip(0, 1)
    f[: min(f.size, picks.size)] = picks[: f.size]
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk", [1 << 15, 100])  # one chunk per step; chunks that split steps
def test_streaming_gate_statistics_equal_a_float64_reference(dtype, chunk, monkeypatch):
    """Counts and histogram exactly; mean, std, mean ln f to 1e-13 of a float64 two-pass
    reference (in float32 too: deviations are taken in float64)."""
    from lstm_diag.core import diagnostics

    monkeypatch.setattr(diagnostics, "STREAM_CHUNK", chunk)
    T, B, H = 37, 5, 7
    g = _gates(T, B, H, dtype)
    acc = GateAccumulator(H, 0.1)
    acc.add(g[:20])
    acc.add(g[20:])
    r = acc.result()
    a = g.astype(np.float64).reshape(T, B, 4, H)
    lo = np.array([0.1, 0.1, -0.8, 0.1])[None, None, :, None].astype(dtype)
    hi = np.array([0.9, 0.9, 0.8, 0.9])[None, None, :, None].astype(dtype)
    low, high = g.reshape(T, B, 4, H) < lo, g.reshape(T, B, 4, H) > hi
    for j, name in enumerate(GATES):
        v = a[:, :, j]
        np.testing.assert_allclose(r[name]["mean"], v.mean(), rtol=1e-13)
        np.testing.assert_allclose(r[name]["std"], v.std(), rtol=1e-13)
        assert r[name]["saturation_over_time"] == ((low | high)[:, :, j].sum(axis=(1, 2)) / (B * H)).tolist()
        assert r[name]["unit_saturated_low"] == (low[:, :, j].sum(axis=(0, 1)) / (T * B)).tolist()
        assert r[name]["unit_saturated_high"] == (high[:, :, j].sum(axis=(0, 1)) / (T * B)).tolist()
    f = g.reshape(T, B, 4, H)[:, :, 1]
    assert acc.forget_histogram()["counts"] == np.histogram(f, np.linspace(0, 1, 51))[0].tolist()
    np.testing.assert_allclose(acc.forget_log_mean(), np.log(a[:, :, 1]).mean(), rtol=1e-13)


def test_forget_histogram_leaves_nan_out_like_numpy():
    g = _gates(6, 3, 4, np.float32)
    g[2, 1, 5] = np.nan  # a forget-gate entry
    acc = GateAccumulator(4, 0.1)
    acc.add(g)
    f = g.reshape(6, 3, 4, 4)[:, :, 1]
    assert acc.forget_histogram()["counts"] == np.histogram(f, np.linspace(0, 1, 51))[0].tolist()
    assert np.isnan(acc.forget_log_mean())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streaming_gradient_norms_equal_float64_einsum(dtype, monkeypatch):
    from lstm_diag.core import diagnostics

    monkeypatch.setattr(diagnostics, "STREAM_CHUNK", 64)
    dz = np.random.default_rng(3).normal(size=(9, 4, 4 * 6)).astype(dtype)
    d = dz.astype(np.float64)
    ref_z = np.sqrt(np.einsum("tbgh,tbgh->tg", d.reshape(9, 4, 4, 6), d.reshape(9, 4, 4, 6)))
    np.testing.assert_allclose(diagnostics.gate_grad_norms(dz), ref_z, rtol=1e-14)
    ref_c = np.sqrt(np.einsum("tbh,tbh->t", d[:, :, :6], d[:, :, :6]))
    np.testing.assert_allclose(diagnostics.frob_over_time(dz[:, :, :6]), ref_c, rtol=1e-14)
    assert diagnostics.count_abs_above(dz, 1.0) == int(np.count_nonzero(np.abs(dz) > 1.0))


def _point(loss, horizon, verdict, stuck):
    gates = dict.fromkeys(("input", "forget", "cell", "output"), 0)
    return {
        "loss": loss,
        "loss_kind": "computed",
        "verdict": verdict,
        "findings": [],
        "units": [
            {
                "layer": 0, "direction": "forward", "horizon": horizon, "verdict": verdict,
                "stuck_units": stuck, "gate_stuck_units": gates | {"cell": stuck},
                "forget_retention": 0.5,
            }
        ],
    }


def test_regressions_ld5xx_rule():
    """docs/track.md: LD501 horizon < 0.9 x the earlier; LD502 healthy -> vanishing/exploding;
    LD503 loss > 1.01 x; LD504 stuck units > 1.1 x and at least one more."""
    from lstm_diag.features.trajectory import regressions

    def codes(a, b):
        return sorted(f.code for f in regressions(_point(*a), _point(*b)))

    assert codes((1.0, 20, "healthy", 10), (1.0, 18, "healthy", 11)) == []  # at the thresholds
    worse = codes((1.0, 20, "healthy", 10), (1.0101, 17, "vanishing", 12))
    assert worse == ["LD501", "LD502", "LD503", "LD504"]
    assert codes((1.0, 20, "vanishing", 0), (1.0, 20, "exploding", 1)) == ["LD504"]  # both failing
    assert codes((1.0, 20, "no_flow", 0), (1.0, 20, "vanishing", 0)) == []
    f = regressions(_point(1.0, 30, "healthy", 0), _point(1.0, 20, "healthy", 0), "step 1", "step 9")[0]
    assert f.layer == 0 and "30 -> 20 steps (-33%)" in f.message and "from step 1 to step 9" in f.message
