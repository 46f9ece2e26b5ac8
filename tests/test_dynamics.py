"""State Jacobians, their spectra and Lyapunov exponents (lstm_diag.core.dynamics).

References, none of them this module's own output:
- one-step Jacobians from `torch.autograd.functional.jacobian` (fixtures made by
  tests/make_dynamics_fixtures.py), to rtol 1e-10;
- closed forms: linear maps with known exponents; the sum of all 2H exponents is
  the mean log|det J_t| along the trajectory;
- the measured growth of dL/dc_t (the engine's BPTT, itself checked against PyTorch
  in test_exact_vs_torch.py) on vanishing, healthy and exploding configs.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from lstm_diag import analyze
from lstm_diag.core import dynamics as dy
from lstm_diag.report.jsonout import dumps
from lstm_diag.setup.outputs import save_weights

FIXTURES = Path(__file__).parent / "fixtures_dynamics"
CASES = sorted(p.name.removesuffix(".reference.npz") for p in FIXTURES.glob("*.reference.npz"))


def assert_close(actual, desired, rtol=1e-10, msg=""):
    """rtol per entry plus an atol of rtol times the largest |entry| (entries that are
    sums of cancelling terms are judged at the scale they were summed at)."""
    desired = np.asarray(desired)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * np.abs(desired).max(), err_msg=msg)


@pytest.fixture(scope="module", params=CASES)
def case(request):
    """(name, [StateJacobians per layer], result, reference) through the public path."""
    name = request.param
    with np.load(FIXTURES / f"{name}.reference.npz") as z:
        ref = {k: z[k] for k in z.files}
    with np.load(FIXTURES / f"{name}.data.npz") as z:
        I = z["x"].shape[2]
    L, _, _, H = ref["c"].shape
    config = {
        "model": {
            "input_size": I,
            "hidden_size": H,
            "num_layers": L,
            "output_size": 1,
            "weights": str(FIXTURES / f"{name}.weights.npz"),
        },
        "data": {"task": "file", "path": str(FIXTURES / f"{name}.data.npz")},
        "loss": {"type": "mse", "target": "last"},
    }
    result = analyze(config)
    jacs = [
        dy.StateJacobians.from_cache(cache, result.problem.params[f"weight_hh_l{k}"])
        for k, cache in enumerate(result.fwd.layers)
    ]
    return name, jacs, result, ref


def test_fixtures_cover_multilayer_saturating_and_h1():
    joined = " ".join(CASES)
    assert len(CASES) >= 4
    for needle in ("l1_", "l2_", "l3_", "H1_", "saturating"):
        assert needle in joined


# ------------------------------------------------------------ against PyTorch


def test_trajectory_is_torchs(case):
    name, _, result, ref = case
    for k, cache in enumerate(result.fwd.layers):
        assert_close(cache.c, ref["c"][k], 1e-12, f"{name} layer {k} c")
        assert_close(cache.h, ref["h"][k], 1e-12, f"{name} layer {k} h")


def test_one_step_jacobian_equals_torch(case):
    """Every layer, step and sample; layers > 0 hold their input x_t fixed."""
    name, jacs, _, ref = case
    for k, jac in enumerate(jacs):
        assert_close(jac.dense(slice(None)), ref["J"][k], 1e-10, f"{name} layer {k} J")
        for t in (0, jac.shape[0] - 1):  # one step at a time gives the same
            assert_close(jac.dense(t), ref["J"][k, t], 1e-10, f"{name} layer {k} J step {t}")


def test_dcdc_equals_torch(case):
    name, jacs, _, ref = case
    for k, jac in enumerate(jacs):
        assert_close(jac.dcdc_dense(slice(None)), ref["dcdc"][k], 1e-10, f"{name} layer {k} dc/dc")
        # t = 1 (index 0): h_0 is given, so only the cell path diag(f_1) is left
        H = jac.shape[2]
        first = ref["dcdc"][k, 0]  # (B, H, H)
        assert_close(np.diagonal(first, axis1=1, axis2=2), jac.f[0], 1e-12, "diag f_1")
        assert not first[:, ~np.eye(H, dtype=bool)].any()


def test_jvp_and_vjp_agree_with_the_dense_jacobian(case):
    name, jacs, _, ref = case
    rng = np.random.default_rng(0)
    for k, jac in enumerate(jacs):
        T, B, H = jac.shape
        J = ref["J"][k]  # (T, B, 2H, 2H)
        u = rng.standard_normal((T, B, 3, 2 * H))
        assert_close(jac.jvp(slice(None), u), np.einsum("tbij,tbpj->tbpi", J, u), 1e-10, "J u")
        assert_close(jac.vjp(slice(None), u), np.einsum("tbji,tbpj->tbpi", J, u), 1e-10, "J^T v")
        t = T // 2
        assert_close(jac.jvp(t, u[t]), np.einsum("bij,bpj->bpi", J[t], u[t]), 1e-10, "J_t u")
        assert_close(jac.vjp(t, u[t]), np.einsum("bji,bpj->bpi", J[t], u[t]), 1e-10, "J_t^T v")
        M = ref["dcdc"][k]
        uc = u[..., :H]
        assert_close(jac.dcdc_jvp(slice(None), uc), np.einsum("tbij,tbpj->tbpi", M, uc), 1e-10, "M u")
        assert_close(jac.dcdc_vjp(slice(None), uc), np.einsum("tbji,tbpj->tbpi", M, uc), 1e-10, "M^T v")


def test_window_products_are_products_of_the_dense_jacobians(case):
    name, jacs, _, ref = case
    jac, J = jacs[-1], ref["J"][-1]
    T, B, H = jac.shape
    start, stop = 1, T
    P = np.broadcast_to(np.eye(2 * H), (B, 2 * H, 2 * H))
    for t in range(start, stop):
        P = J[t] @ P  # (B, 2H, 2H)
    u = np.random.default_rng(1).standard_normal((B, 2, 2 * H))
    assert_close(jac.window_jvp(start, stop, u), np.einsum("bij,bpj->bpi", P, u), 1e-10, "P u")
    assert_close(jac.window_vjp(start, stop, u), np.einsum("bji,bpj->bpi", P, u), 1e-10, "P^T v")
    k = min(3, 2 * H)
    exact = np.linalg.svd(P, compute_uv=False)[:, :k]
    for whole_space in (False, True):  # subspace iteration; one pass over the whole space
        s = dy.window_singular_values(jac, k, stop - start, rtol=1e-12, max_iter=50, whole_space=whole_space)
        assert_close(s, exact, 1e-8, f"window singular values, whole_space={whole_space}")


def test_spectral_norms_equal_the_svd_of_torchs_jacobians(case):
    name, jacs, _, ref = case
    for k, jac in enumerate(jacs):
        H = jac.shape[2]
        exact = np.linalg.svd(ref["J"][k], compute_uv=False)[..., 0]  # (T, B)
        assert_close(dy.spectral_norms(jac, None), exact, 1e-10, "exact")
        # Lanczos is exact once it has had more steps than the dimension 2H
        assert_close(dy.spectral_norms(jac, 4 * H + 2), exact, 1e-8, "lanczos")
        exact_dcdc = np.linalg.svd(ref["dcdc"][k], compute_uv=False)[..., 0]
        assert_close(dy.dcdc_norms(jac, None), exact_dcdc, 1e-10, "dcdc exact")
        assert_close(dy.dcdc_norms(jac, 2 * H + 2), exact_dcdc, 1e-8, "dcdc lanczos")
        # the cell path alone: the c->c block diag(f_t) of J_t
        cec = np.linalg.svd(ref["J"][k][..., :H, :H], compute_uv=False)[..., 0]
        assert_close(dy.cell_path_norms(jac), cec, 1e-12, "cell path")


def test_sum_of_all_exponents_is_the_mean_log_det(case):
    """Σ_i λ_i = (1/n) Σ_t log|det J_t| over the accumulated steps, exactly, per sample."""
    name, jacs, _, ref = case
    for k, jac in enumerate(jacs):
        T, B, H = jac.shape
        warmup = T // 3
        lyap = dy.lyapunov_spectrum(jac, 2 * H, warmup, qr_every=1)
        _, logdet = np.linalg.slogdet(ref["J"][k][warmup:])  # (T - warmup, B)
        np.testing.assert_allclose(lyap.per_sample.sum(axis=1), logdet.mean(axis=0), rtol=1e-9, atol=1e-9)
        assert np.all(np.diff(lyap.mean) <= 0), "largest first"


# ---------------------------------------------------- linear maps, known spectra


def _orthogonal(rng, n):
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def _run_linear(Js, k, warmup, qr_every=1, B=3, seed=0):
    """Benettin on the maps Js (T, n, n), the same for B 'samples'."""
    T, n, _ = Js.shape
    rng = np.random.default_rng(seed)
    Q = np.swapaxes(np.linalg.qr(rng.standard_normal((B, n, k)))[0], -1, -2)  # (B, k, n)
    return dy.benettin(lambda t, U: U @ Js[t].T, Q, T, warmup, qr_every)


EXPONENTS = np.array([0.3, 0.1, -0.2, -0.5, -1.0, -2.0])


def test_constant_normal_map_gives_log_eigenvalues():
    rng = np.random.default_rng(0)
    P = _orthogonal(rng, 6)
    J = P @ np.diag(np.exp(EXPONENTS)) @ P.T
    lyap = _run_linear(np.broadcast_to(J, (300, 6, 6)), 4, warmup=100)
    np.testing.assert_allclose(lyap.per_sample, np.broadcast_to(EXPONENTS[:4], (3, 4)), atol=1e-8)


def test_constant_non_normal_map_gives_log_eigenvalues():
    rng = np.random.default_rng(1)
    S = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    J = S @ np.diag(np.exp(EXPONENTS) * np.array([1, -1, 1, -1, 1, 1])) @ np.linalg.inv(S)
    lyap = _run_linear(np.broadcast_to(J, (400, 6, 6)), 6, warmup=150)
    np.testing.assert_allclose(lyap.mean, EXPONENTS, atol=1e-6)


def test_time_varying_triangular_maps_give_mean_log_diagonal():
    """Products of upper-triangular maps: λ_i = time average of log|U_t[i, i]| (ordered),
    here conjugated by a fixed rotation; finite-T error O(1/T)."""
    rng = np.random.default_rng(2)
    n, T = 5, 2000
    lam = np.array([0.2, 0.0, -0.3, -0.7, -1.5])
    noise = rng.uniform(-0.5, 0.5, (T, n))
    noise -= noise.mean(axis=0)  # so the time averages are exactly lam
    U = np.triu(rng.uniform(-1, 1, (T, n, n)), 1)
    U[:, np.arange(n), np.arange(n)] = np.exp(lam + noise)
    P = _orthogonal(rng, n)
    Js = P @ U @ P.T
    lyap = _run_linear(Js, n, warmup=0)
    np.testing.assert_allclose(lyap.mean, lam, atol=0.01)


def test_adaptive_qr_keeps_a_strongly_contracting_float32_frame_in_range():
    """Every direction shrinks by 1e-3 per step (λ = -6.908 for all): the spread is 0,
    but 16 steps without a QR would shrink the frame by e^-110, below float32's range."""
    rng = np.random.default_rng(5)
    Js = np.broadcast_to(1e-3 * _orthogonal(rng, 6), (120, 6, 6)).astype(np.float32)
    Q = np.swapaxes(np.linalg.qr(rng.standard_normal((2, 6, 3)))[0], -1, -2).astype(np.float32)
    lyap = dy.benettin(lambda t, U: U @ Js[t].T, Q, 120, warmup=20)
    np.testing.assert_allclose(lyap.per_sample, np.log(1e-3), rtol=1e-5)


def test_split_frame_steps_give_the_same_exponents_as_rows():
    result = analyze({"model": {"hidden_size": 6}, "data": {"batch_size": 3, "seq_len": 60}})
    jac = dy.StateJacobians.from_cache(result.fwd.layers[0], result.problem.params["weight_hh_l0"])
    Q = np.swapaxes(np.linalg.qr(np.random.default_rng(0).standard_normal((3, 12, 5)))[0], -1, -2)
    rows = dy.benettin(jac.jvp, Q, 60, warmup=15)
    split = dy.benettin(
        lambda t, uh: jac.jvp_parts(t, *uh),
        Q,
        60,
        warmup=15,
        split=lambda U: (U[..., :6].copy(), U[..., 6:].copy()),
        join=lambda uh: np.concatenate(uh, axis=-1),
    )
    np.testing.assert_allclose(split.per_sample, rows.per_sample, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("qr_every", [2, 5, None])
def test_qr_every_does_not_change_the_exponents(qr_every):
    rng = np.random.default_rng(3)
    Js = np.exp(-0.2) * _orthogonal(rng, 6) + 0.3 * rng.standard_normal((200, 6, 6))
    every_step = _run_linear(Js, 4, warmup=20, qr_every=1)
    sparser = _run_linear(Js, 4, warmup=20, qr_every=qr_every)
    np.testing.assert_allclose(sparser.per_sample, every_step.per_sample, rtol=1e-10, atol=1e-12)


# ------------------------------------------- regimes: exponents against gradients


def _dynamics(config):
    result = analyze(config)
    k = 0
    jac = dy.StateJacobians.from_cache(result.fwd.layers[k], result.problem.params[f"weight_hh_l{k}"])
    T = jac.shape[0]
    warmup = T // 4
    lyap = dy.lyapunov_spectrum(jac, 4, warmup)
    rates = dy.gradient_growth_rates(result.bwd.layers[k].dc, warmup, T)
    return lyap, rates, result


VANISHING = {"model": {"forget_bias": -3.0, "recurrent_scale": 0.5}, "data": {"seq_len": 150}}
EXPLODING = {"model": {"forget_bias": 0.0, "recurrent_scale": 16.0}, "data": {"seq_len": 200}}


def test_vanishing_config_has_negative_exponent_matching_gradient_decay():
    lyap, rates, result = _dynamics(VANISHING)
    lam = lyap.mean[0]
    assert lam < -1.5  # f ≈ σ(-3) ≈ 0.05: contraction by ~e^-2 per step
    np.testing.assert_allclose(rates.mean(), lam, rtol=0.03)
    grad = result.layers[0].grad_c_norm
    assert grad[40] < 1e-40 * grad[-1]


def test_healthy_default_exponent_matches_gradient_decay():
    lyap, rates, _ = _dynamics(None)
    lam = lyap.mean[0]
    assert -1.0 < lam < -0.2
    np.testing.assert_allclose(rates.mean(), lam, atol=0.05)


def test_exploding_config_has_positive_exponent_matching_gradient_growth():
    lyap, rates, result = _dynamics(EXPLODING)
    lam = lyap.mean[0]
    assert lam > 0.1 and lam > 5 * lyap.stderr[0]
    assert rates.mean() > 0
    np.testing.assert_allclose(rates.mean(), lam, atol=0.05)
    # per sample, the exponent tracks that sample's gradient growth
    assert np.corrcoef(lyap.per_sample[:, 0], rates)[0, 1] > 0.8
    grad = result.layers[0].grad_c_norm
    assert grad[0] > 1e10 * grad[-1]


def test_mildly_exploding_forget_bias_3_is_positive():
    """forget_bias 3 (f ≈ 0.95) with recurrent_scale 8: λ_1 small but clearly > 0."""
    lyap, rates, _ = _dynamics(
        {"model": {"forget_bias": 3.0, "recurrent_scale": 8.0}, "data": {"seq_len": 200}}
    )
    assert lyap.mean[0] > 4 * lyap.stderr[0] > 0
    assert rates.mean() > 0


def test_exponents_reproduce_across_data_seeds_within_the_reported_spread(tmp_path):
    """The same network on other data draws: λ_1 within 4 standard errors."""
    weights = tmp_path / "w.npz"
    save_weights(weights, analyze(None).problem.params)
    runs = []
    for seed in range(4):
        lyap, _, _ = _dynamics({"seed": seed, "model": {"weights": str(weights)}})
        runs.append((lyap.mean[0], lyap.stderr[0]))
    (lam0, se0), *others = runs
    for lam, se in others:
        assert abs(lam - lam0) < 4 * np.hypot(se, se0)


def test_float32_caches_give_the_float64_exponents():
    l32, _, r32 = _dynamics({"dtype": "float32"})
    l64, _, r64 = _dynamics({"dtype": "float64"})
    np.testing.assert_allclose(l32.mean, l64.mean, atol=1e-5)
    # computed in float32 like the model, to float32 precision
    layers = [(r.fwd.layers[0], r.problem.params["weight_hh_l0"]) for r in (r32, r64)]
    jacs = [dy.StateJacobians.from_cache(cache, W_hh) for cache, W_hh in layers]
    assert jacs[0].dtype == np.float32 and jacs[1].dtype == np.float64
    s32, s64 = (dy.spectral_norms(j.samples(slice(0, 2)), None) for j in jacs)
    assert s32.dtype == np.float32
    np.testing.assert_allclose(s32, s64, rtol=1e-4)
    w32, w64 = (dy.window_singular_values(j.samples(slice(0, 2)), 4, 20) for j in jacs)
    np.testing.assert_allclose(w32, w64, rtol=1e-4)


# ------------------------------------------------------------ helpers, summary


def test_log_slope_is_exact_on_a_line_and_robust_to_outliers():
    t = np.arange(50)
    y = 3.0 * np.exp(-0.4 * t)
    assert dy.log_slope(y) == pytest.approx(-0.4, abs=1e-12)
    y[[3, 17, 30]] *= 1e6  # spikes
    y[45:] = 0.0  # underflow: left out
    assert dy.log_slope(y) == pytest.approx(-0.4, abs=1e-12)
    assert np.isnan(dy.log_slope(np.zeros(5)))


def test_growth_rate_is_per_step_backward_in_time():
    """||dL/dc_{t-k}|| = e^{rate k} ||dL/dc_t||: a gradient that vanishes toward early
    steps has a negative rate, like a negative Lyapunov exponent."""
    T, B, H = 60, 3, 4
    t = np.arange(T)
    rates = np.array([-0.5, -0.1, 0.2])
    grad_c = np.exp(rates[None, :, None] * (T - 1 - t)[:, None, None]) * np.ones((T, B, H))
    np.testing.assert_allclose(dy.gradient_growth_rates(grad_c, 10, T), rates, atol=1e-12)
    assert dy.gradient_growth_rate(np.linalg.norm(grad_c[:, 0], axis=1)) == pytest.approx(-0.5)


def test_layer_dynamics_summary_is_plain_json():
    result = analyze({"model": {"hidden_size": 8}, "data": {"batch_size": 4, "seq_len": 30}})
    d = dy.layer_dynamics(
        result.fwd.layers[0], result.problem.params["weight_hh_l0"], k=20, grad_c=result.bwd.layers[0].dc
    )
    assert json.loads(json.dumps(d)) == d
    T, H = 30, 8
    assert len(d["lyapunov"]) == len(d["lyapunov_std"]) == 16  # k clipped to 2H
    assert d["lyapunov"] == sorted(d["lyapunov"], reverse=True)
    for key in ("spectral_norm", "cell_path_norm", "dcdc_norm"):
        assert len(d[key]) == T and all(np.isfinite(d[key]))
    assert len(d["window_singular_values"]) == 4
    assert d["window_singular_values"] == sorted(d["window_singular_values"], reverse=True)
    s = d["settings"]
    assert (s["k"], s["warmup"], s["steps"], s["state_size"], s["window"]) == (16, 7, 23, 2 * H, 20)
    assert d["gradient"]["predicted_rate"] == d["lyapunov"][0]
    # the cell path alone never exceeds 1 (0 < f < 1); the full one-step Jacobian can
    assert max(d["cell_path_norm"]) < 1


def test_per_step_norms_at_most_norm_points_steps_counted_back_from_the_last():
    result = analyze({"model": {"hidden_size": 8}, "data": {"batch_size": 3, "seq_len": 100}})
    cache, W_hh = result.fwd.layers[0], result.problem.params["weight_hh_l0"]
    d = dy.layer_dynamics(cache, W_hh, norm_samples=1, norm_points=30, lanczos_steps=None)
    assert d["settings"]["norm_stride"] == 4  # ceil(100 / 30)
    assert d["norm_steps"] == list(range(4, 101, 4))  # t = 4, 8, ..., 100 = T
    jac = dy.StateJacobians.from_cache(cache, W_hh).samples(slice(0, 1))
    t = np.array(d["norm_steps"]) - 1
    np.testing.assert_allclose(d["spectral_norm"], dy.spectral_norms(jac, None)[t, 0], rtol=1e-12)
    np.testing.assert_allclose(d["dcdc_norm"], dy.dcdc_norms(jac, None)[t, 0], rtol=1e-12)
    np.testing.assert_allclose(d["cell_path_norm"], jac.f[t, 0].max(axis=-1), rtol=1e-12)
    every = dy.layer_dynamics(cache, W_hh, norm_points=None)
    assert every["norm_steps"] == list(range(1, 101)) and every["settings"]["norm_stride"] == 1


def test_analyze_takes_norm_points_from_the_config():
    doc = analyze(None, ["diagnostics.norm_points=100"]).to_dict()
    dyn = doc["layers"][0]["dynamics"]
    assert dyn["norm_steps"] == list(range(1, 101)) and len(dyn["spectral_norm"]) == 100
    assert dyn["settings"]["norm_samples"] == dyn["settings"]["window_samples"] == 1
    dyn = analyze(None).to_dict()["layers"][0]["dynamics"]  # default 32: every 4th step, ending at T
    assert dyn["norm_steps"] == list(range(4, 101, 4)) and len(dyn["dcdc_norm"]) == 25


def test_bad_arguments_name_the_argument():
    result = analyze({"model": {"hidden_size": 4}, "data": {"batch_size": 2, "seq_len": 10}})
    jac = dy.StateJacobians.from_cache(result.fwd.layers[0], result.problem.params["weight_hh_l0"])
    with pytest.raises(ValueError, match="k: must be in 1..2H = 1..8, got 9"):
        dy.lyapunov_spectrum(jac, 9)
    with pytest.raises(ValueError, match="warmup"):
        dy.lyapunov_spectrum(jac, 2, warmup=10)


def test_layer_dynamics_skips_parts_and_survives_a_nonfinite_forward_pass():
    result = analyze({"model": {"hidden_size": 4}, "data": {"batch_size": 3, "seq_len": 12}})
    cache, W_hh = result.fwd.layers[0], result.problem.params["weight_hh_l0"]
    lean = dy.layer_dynamics(cache, W_hh, norm_samples=0, window_k=0)
    assert lean["spectral_norm"] == lean["dcdc_norm"] == lean["window_singular_values"] == []
    assert len(lean["lyapunov"]) == 8 and np.all(np.isfinite(lean["lyapunov"]))
    cache.gates[5, 1, 2] = np.nan
    broken = dy.layer_dynamics(cache, W_hh, grad_c=result.bwd.layers[0].dc)
    assert np.all(np.isnan(broken["lyapunov"])) and np.all(np.isnan(broken["spectral_norm"]))
    assert broken["gradient"]["same_sign"] is None
    doc = json.loads(dumps({"dynamics": broken}))  # null + a "nonfinite" marker, valid JSON
    assert doc["dynamics"]["lyapunov"][0] is None and "dynamics.lyapunov[0]" in doc["nonfinite"]


def test_long_window_singular_value_gives_the_finite_time_exponent():
    """Over the whole accumulation window, log σ_1(P) / w is each sample's λ_1 up to
    O(1/w). Here σ_1 ≈ e^-560 ≈ 1e-243, so P^T P (≈ 1e-486) exists only rescaled."""
    result = analyze({"model": {"forget_bias": -3.0, "recurrent_scale": 0.5}, "data": {"seq_len": 340}})
    jac = dy.StateJacobians.from_cache(result.fwd.layers[0], result.problem.params["weight_hh_l0"])
    T = jac.shape[0]
    warmup = T // 4
    lyap = dy.lyapunov_spectrum(jac, 2, warmup)
    s = dy.window_singular_values(jac, 2, T - warmup)
    assert np.all((s[:, 0] > 0) & (s[:, 0] < 1e-200))
    np.testing.assert_allclose(np.log(s[:, 0]) / (T - warmup), lyap.per_sample[:, 0], atol=0.02)


def test_jacobians_of_selected_steps_are_those_of_the_whole_trajectory_bit_for_bit():
    result = analyze({"model": {"hidden_size": 6}, "data": {"batch_size": 3, "seq_len": 40}})
    cache, W_hh = result.fwd.layers[0], result.problem.params["weight_hh_l0"]
    whole = dy.StateJacobians.from_cache(cache, W_hh)
    for steps in (slice(25, 40), np.array([0, 3, 17, 39]), slice(0, 10)):
        part = dy.StateJacobians.from_cache(cache, W_hh, steps)
        for name in ("f", "a", "d", "d_prev"):
            np.testing.assert_array_equal(getattr(part, name), getattr(whole, name)[steps], err_msg=name)


def test_lyapunov_steps_sweeps_the_last_steps_and_fits_the_gradient_over_the_same_steps():
    result = analyze({"model": {"hidden_size": 8}, "data": {"batch_size": 4, "seq_len": 90}})
    cache, W_hh, dc = result.fwd.layers[0], result.problem.params["weight_hh_l0"], result.bwd.layers[0].dc
    d = dy.layer_dynamics(cache, W_hh, k=3, grad_c=dc, lyapunov_steps=40)
    s = d["settings"]
    assert (s["lyapunov_steps"], s["sweep"], s["warmup"], s["steps"]) == (40, [51, 90], 10, 30)
    last = dy.StateJacobians.from_cache(cache, W_hh).at_steps(slice(50, 90))
    lyap = dy.lyapunov_spectrum(last, 3, 10)
    np.testing.assert_array_equal(d["lyapunov"], lyap.mean)
    assert d["gradient"]["measured_rate"] == np.mean(dy.gradient_growth_rates(dc, 60, 90))
    # a cap at or above T changes nothing
    full, capped = (dy.layer_dynamics(cache, W_hh, k=3, grad_c=dc, lyapunov_steps=n) for n in (None, 90))
    assert full["lyapunov"] == capped["lyapunov"] and full["gradient"] == capped["gradient"]
    assert capped["settings"]["sweep"] == [1, 90]


def test_analyze_says_when_the_lyapunov_sweep_covers_only_the_last_steps():
    doc = analyze(None, ["data.seq_len=60", "diagnostics.lyapunov_steps=24", "model.hidden_size=8"]).to_dict()
    s = doc["layers"][0]["dynamics"]["settings"]
    assert (s["lyapunov_steps"], s["sweep"], s["warmup"], s["steps"]) == (24, [37, 60], 6, 18)
    from lstm_diag.report.describe import lyapunov_span

    assert lyapunov_span(doc["layers"][0]["dynamics"]) == " over the last 24 of 60 steps"
    assert lyapunov_span({"settings": {"sweep": [1, 60]}}) == lyapunov_span({"settings": {}}) == ""


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_krylov_window_values_match_the_whole_space_pass(dtype):
    """Rayleigh-Ritz on the Krylov blocks (2H = 96 > WHOLE_SPACE * p): lower bounds within the
    stopping tolerance of the exact values (one pass over the whole space)."""
    config = {"model": {"hidden_size": 48, "forget_bias": 3.0}, "data": {"batch_size": 2, "seq_len": 30}}
    result = analyze(config, ["dtype=float32"] if dtype == np.float32 else [])
    jac = dy.StateJacobians.from_cache(result.fwd.layers[0], result.problem.params["weight_hh_l0"])
    exact = dy.window_singular_values(jac, 4, 20, whole_space=True)
    krylov = dy.window_singular_values(jac, 4, 20)
    assert np.all(krylov <= exact * (1 + 1e-5))
    np.testing.assert_allclose(krylov, exact, rtol=1e-4)


# ------------------------------------------- issue 19: what the section computes by default


def test_analyze_computes_a_float64_models_jacobians_in_float32_by_default():
    """diagnostics.dynamics_dtype: float32 (the default) against model (float64 Jacobians):
    λ₁ moves far below its standard error; settings.dtype says which was used."""
    sets = ["data.seq_len=60", "model.hidden_size=8", "diagnostics.window_k=2"]
    f32 = analyze(None, sets).to_dict()["layers"][0]["dynamics"]
    f64 = analyze(None, [*sets, "diagnostics.dynamics_dtype=model"]).to_dict()["layers"][0]["dynamics"]
    assert (f32["settings"]["dtype"], f64["settings"]["dtype"]) == ("float32", "float64")
    assert abs(f32["lyapunov"][0] - f64["lyapunov"][0]) < 1e-5 < f64["lyapunov_stderr"][0]
    np.testing.assert_allclose(f32["lyapunov"], f64["lyapunov"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f32["spectral_norm"], f64["spectral_norm"], rtol=1e-5)
    np.testing.assert_allclose(f32["window_singular_values"], f64["window_singular_values"], rtol=1e-5)
    assert f32["gradient"]["measured_rate"] == f64["gradient"]["measured_rate"]  # read from the float64 BPTT


def test_float32_jacobians_are_refused_where_float32_could_overflow():
    """A float64 cache whose one-step growth bound 4H max|c| max|W_hh| reaches 1e9 stays float64."""
    result = analyze({"model": {"hidden_size": 4}, "data": {"batch_size": 2, "seq_len": 12}})
    cache, W_hh = result.fwd.layers[0], result.problem.params["weight_hh_l0"]
    assert dy.layer_dynamics(cache, W_hh, dtype=np.float32)["settings"]["dtype"] == "float32"
    huge = dy.LayerCache(x=cache.x, gates=cache.gates, c=cache.c * 1e30, h=cache.h, tanh_c=cache.tanh_c)
    d = dy.layer_dynamics(huge, W_hh, dtype=np.float32, window_k=0)
    assert d["settings"]["dtype"] == "float64" and np.isfinite(d["lyapunov"]).all()


def test_huge_recurrent_weights_give_finite_spectral_norms_not_an_internal_error():
    """Growth bound ~1e12: below the old 1e30 guard, float32 Lanczos squared it past 3.4e38 (exit 3,
    LinAlgError). Now float64 (bound 1e9), every norm finite and of the weights' size."""
    sets = ["data.seq_len=4", "data.batch_size=2", "model.hidden_size=3", "model.recurrent_scale=1e12"]
    dyn = analyze(None, sets).to_dict()["layers"][0]["dynamics"]
    assert dyn["settings"]["dtype"] == "float64"
    assert np.isfinite(dyn["spectral_norm"]).all() and max(dyn["spectral_norm"]) > 1e10
    with np.errstate(invalid="ignore", over="ignore"):
        eye = dy.top_singular_value(lambda u: u * np.inf, lambda v: v, np.ones((2, 1, 3)), 4)
    assert np.isnan(eye).all()  # an overflowing operator: NaN, not LinAlgError


def test_window_product_is_off_by_default_and_window_alone_is_refused():
    from lstm_diag.errors import ConfigError
    from lstm_diag.setup.config import load_config

    dyn = analyze(None, ["data.seq_len=30", "model.hidden_size=8"]).to_dict()["layers"][0]["dynamics"]
    assert dyn["window_singular_values"] == [] and dyn["settings"]["window_k"] == 0
    with pytest.raises(ConfigError, match="diagnostics.window: 30 has no effect while diagnostics.window_k"):
        load_config(None, ["diagnostics.window=30"])
    cfg, _ = load_config(None, ["diagnostics.window=30", "diagnostics.window_k=4"])
    assert (cfg.diagnostics.window, cfg.diagnostics.window_k) == (30, 4)


def test_an_overflowed_frame_gives_non_finite_exponents_instead_of_an_error():
    """A step that overflows the frame (here a map with an infinite entry) makes log|diag R|
    NaN: the adaptive QR interval is then 1 step, and the exponents come out non-finite
    (null in JSON) instead of an error from the interval's arithmetic."""
    Js = np.broadcast_to(np.float32(0.5) * np.eye(3, dtype=np.float32), (8, 3, 3)).copy()
    Js[3, 0, 0] = np.inf
    Q = np.eye(3, dtype=np.float32)[None, :2]  # (1, 2, 3)
    with np.errstate(over="ignore", invalid="ignore"):
        lyap = dy.benettin(lambda t, U: U @ Js[t].T, Q, 8, warmup=2)
    assert lyap.per_sample.shape == (1, 2) and not np.isfinite(lyap.per_sample).all()
