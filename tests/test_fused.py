"""The fused engine (core/fused.py, extra `fast`) against the NumPy engine, the reference.

Float64: every array of the forward pass and BPTT, and every number of the analysis,
agrees to 1e-12 relative (in practice ~1e-15: the backward kernel repeats the NumPy
engine's arithmetic; the forward differs only through its own exp and tanh, <= 1 ulp).
Float32: to 1e-4 of each array's largest entry (the float32 round-off of the recurrence
started from gates that differ by an ulp), the same bound as the PyTorch comparison.
"""

from pathlib import Path

import numpy as np
import pytest

numba = pytest.importorskip("numba", reason="the fast engine needs numba (pip install 'lstm-diag[fast]')")

from lstm_diag import analyze  # noqa: E402
from lstm_diag.core import backends, engine  # noqa: E402
from lstm_diag.core.fused_kernels import elementwise  # noqa: E402
from lstm_diag.setup.config import load_config  # noqa: E402
from lstm_diag.setup.problem import build  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
TOL = {"float64": 1e-12, "float32": 1e-4}


@pytest.fixture(autouse=True)
def numpy_engine_after():
    yield
    backends.select("numpy")


def _run(problem, name):
    backends.select(name, problem.config.dtype, problem.spec)
    return engine.run(problem.params, problem.spec, problem.x, problem.y, problem.loss, problem.target)


def _close(a, b, tol, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.finfo(np.float64).tiny)
    err = np.abs(a - b).max(initial=0.0) / scale
    assert err <= tol, f"{what}: max difference {err:.2e} of the largest entry > {tol:g}"


@pytest.mark.parametrize("case", CASES)
def test_engines_agree_on_every_fixture(case):
    cfg = load_config(FIXTURES / case / "config.yaml")[0]
    problem = build(cfg)
    tol = TOL[cfg.dtype]
    f0, b0 = _run(problem, "numpy")
    f1, b1 = _run(problem, "fast")
    assert (engine.FUSED is not None) == (backends.uncovered(problem.spec) is None)
    _close(f0.loss, f1.loss, tol, "loss")
    for k, (c0, c1) in enumerate(zip(f0.layers, f1.layers, strict=True)):
        for name in ("gates", "c", "h", "tanh_c"):
            _close(getattr(c0, name), getattr(c1, name), tol, f"layer {k} {name}")
            assert getattr(c1, name).dtype == getattr(c0, name).dtype
    for k, (g0, g1) in enumerate(zip(b0.layers, b1.layers, strict=True)):
        for name in ("dc", "dh", "dz", "dh0", "dc0"):
            _close(getattr(g0, name), getattr(g1, name), tol, f"layer {k} {name}")
    for name, g in b0.params.items():
        _close(g, b1.params[name], tol, name)
    _close(b0.dx, b1.dx, tol, "dL/dx")


@pytest.mark.parametrize("case", CASES)
def test_analysis_is_the_same_on_both_engines(case):
    a = analyze(FIXTURES / case / "config.yaml", ["engine=numpy"]).to_dict()
    b = analyze(FIXTURES / case / "config.yaml", ["engine=fast"]).to_dict()
    tol = TOL[a["config"]["dtype"]]
    _close(a["loss"], b["loss"], tol, "loss")
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        for key in ("grad_c_norm", "grad_h_norm"):
            _close(la[key], lb[key], tol, key)
        assert la["verdict"] == lb["verdict"]
    assert [f["code"] for f in a["findings"]] == [f["code"] for f in b["findings"]]


def test_vanishing_gradients_take_the_same_guard_decisions():
    """200 steps with forget bias 0 in float32: dL/dc_t reaches the subnormal range, where
    the subnormal guard rescales; both engines scale at the same steps."""
    cfg = load_config(None, ["dtype=float32", "data.seq_len=400", "model.forget_bias=-3"])[0]
    problem = build(cfg)
    _, b0 = _run(problem, "numpy")
    _, b1 = _run(problem, "fast")
    dc0, dc1 = b0.layers[0].dc, b1.layers[0].dc
    assert np.abs(dc0[0]).max() < 1e-30  # really vanished
    per_step = np.abs(dc0).reshape(len(dc0), -1).max(axis=1)
    diff = np.abs(dc0 - dc1).reshape(len(dc0), -1).max(axis=1)
    assert np.all(diff <= 1e-3 * per_step + 1e-44)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_own_exp_and_tanh_are_within_two_ulp(dtype):
    fi = np.finfo(dtype)
    x = np.linspace(np.log(fi.tiny), np.log(fi.max) * 0.999, 20001).astype(dtype)
    exact = np.exp(x.astype(np.longdouble))
    err = np.abs(elementwise("exp", x) - exact) / exact / fi.eps
    assert err.max() <= 2.0
    x = np.concatenate([np.linspace(-20, 20, 20000), np.geomspace(1e-30, 1e-3, 1001)]).astype(dtype)
    x = x[x != 0]
    exact = np.tanh(x.astype(np.longdouble))
    err = np.abs(elementwise("tanh", x) - exact) / np.abs(exact) / fi.eps
    assert err.max() <= 2.0
    special = np.array([np.inf, -np.inf, np.nan, 0.0, 1e4, -1e4], dtype)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(elementwise("exp", special), np.exp(special))
    np.testing.assert_array_equal(elementwise("tanh", special), np.tanh(special))


def test_auto_picks_fast_and_numpy_is_the_reference():
    assert backends.select("auto", "float64").used == "fast"
    assert backends.select("numpy").used == "numpy" and engine.FUSED is None


def test_uncovered_layout_falls_back_with_a_note():
    class Projected:
        proj_size = 4

    sel = backends.select("fast", "float64", Projected())
    assert sel.used == "numpy" and "proj_size" in sel.note and engine.FUSED is None


def test_own_log_is_within_two_ulp():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 1, 20000), np.exp(rng.uniform(-745, 709, 20000)), [1.0, 0.5, 2.0]])
    exact = np.log(x.astype(np.longdouble))
    err = np.abs(elementwise("log", x) - exact) / np.spacing(np.abs(exact).astype(np.float64) + 1e-300)
    assert err.max() <= 2.0
    special = np.array([0.0, np.inf, np.nan, 5e-324])
    with np.errstate(divide="ignore"):
        np.testing.assert_array_equal(elementwise("log", special), np.log(special))


def _with(fused, fn):
    """fn() with the diagnostic passes compiled (fused) or in NumPy."""
    from lstm_diag.core import diagnostics, fused_kernels

    diagnostics.FUSED = fused_kernels if fused else None
    try:
        return fn()
    finally:
        diagnostics.FUSED = None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk", [1 << 15, 100])
def test_compiled_diagnostic_passes_equal_the_numpy_passes(dtype, chunk, monkeypatch):
    """Counts, saturation per step and unit, and the forget histogram exactly (values at and
    next to every bin edge; a NaN left out); mean, std, mean ln f and norms to 1e-14."""
    from lstm_diag.core import diagnostics

    monkeypatch.setattr(diagnostics, "STREAM_CHUNK", chunk)
    rng = np.random.default_rng(1)
    T, B, H = 37, 5, 70
    z = rng.normal(scale=3, size=(T, B, 4 * H))
    g = 1 / (1 + np.exp(-z))
    g[:, :, 2 * H : 3 * H] = np.tanh(z[:, :, 2 * H : 3 * H])
    edges = np.linspace(0, 1, 51)
    f = g[:, :, H : 2 * H].reshape(-1)
    picks = np.concatenate([edges, np.nextafter(edges, 2), np.nextafter(edges, -1)]).clip(0, 1)
    f[: picks.size] = picks
    g = g.astype(dtype)
    for nan in (False, True):
        if nan:
            g[3, 1, H + 5] = np.nan

        def stats():
            acc = diagnostics.GateAccumulator(H, 0.1)
            acc.add(g[:20])
            acc.add(g[20:])
            return acc.result(), acc.forget_histogram(), acc.forget_log_mean()

        (r0, h0, l0), (r1, h1, l1) = _with(False, stats), _with(True, stats)
        assert h0 == h1
        np.testing.assert_allclose(l1, l0, rtol=1e-14)
        for name, d in r0.items():
            for key, v in d.items():
                tol = {"mean": 1e-14, "std": 1e-14, "unit_log_mean": 1e-13}.get(key, 0)
                np.testing.assert_allclose(r1[name][key], v, rtol=tol, atol=0, err_msg=f"{name} {key}")
    dz = rng.normal(size=(9, 4, 4 * 6)).astype(dtype)
    for fn in (lambda: diagnostics.gate_grad_norms(dz), lambda: diagnostics.frob_over_time(dz[:, :, :6])):
        np.testing.assert_allclose(_with(True, fn), _with(False, fn), rtol=1e-14)
    c = rng.normal(size=(8, 3, 5)).astype(dtype)
    c[2, 1, 1] = np.nan
    h = np.tanh(c)
    h[5, 0, 0] = np.inf
    tc = np.tanh(3 * c)
    tc[0, 0, :] = np.asarray(0.99, dtype)  # at the level, in the array's dtype: not above it

    def extremes():
        return diagnostics.state_extremes(c, h, tc, 0.99)

    (a0, ok0, n0), (a1, ok1, n1) = _with(False, extremes), _with(True, extremes)
    np.testing.assert_array_equal(a1, a0)
    np.testing.assert_array_equal(ok1, ok0)
    assert n1 == n0


def test_fast_engine_selects_the_compiled_diagnostic_passes():
    from lstm_diag.core import diagnostics

    backends.select("fast", "float32")
    assert diagnostics.FUSED is not None
    backends.select("numpy")
    assert diagnostics.FUSED is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("H", [1, 6])
def test_compiled_gate_pass_per_unit_log_sums_and_step_means(dtype, H, monkeypatch):
    """Per-unit sums of ln f (the kernels' own log, <= 2 ulp, against the C library's in
    the NumPy pass) to 1e-13 relative, and each step's batch mean (the heatmap's input)
    bitwise equal to the NumPy pass's, over segments and split chunks."""
    from lstm_diag.core import diagnostics

    monkeypatch.setattr(diagnostics, "STREAM_CHUNK", 40)
    rng = np.random.default_rng(4)
    T, B = 23, 7
    g = rng.uniform(0.001, 1, size=(T, B, 4 * H)).astype(dtype)

    def run():
        acc = diagnostics.GateAccumulator(H, 0.1, keep_step_mean=True)
        acc.add(g[:9])
        first = acc.step_mean.copy()
        acc.add(g[9:])
        return acc.log_f_unit.copy(), first, acc.step_mean

    (u0, s0, e0), (u1, s1, e1) = _with(False, run), _with(True, run)
    np.testing.assert_allclose(u1, u0, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(s1, s0)
    np.testing.assert_array_equal(e1, e0)
    assert s1.dtype == dtype and s1.shape == (9, 4 * H)
    np.testing.assert_array_equal(s0, g[:9].mean(axis=1))


@pytest.mark.parametrize("forget_bias", [0.0, 2.0, 12.0])
def test_mean_log_forget_agrees_on_both_engines_in_float64(forget_bias):
    """The stated tolerance (docs/fused-diagnostics.md): mean ln f overall and per unit,
    float64, fast against NumPy engine, within 1e-13 relative; f near 1 (bias 12: ln f ~ -6e-6)
    included, where a log of poor relative accuracy near 1 would show."""
    sets = [
        f"model.forget_bias={forget_bias}",
        "data.seq_len=300",
        "model.hidden_size=24",
        "diagnostics.dynamics=false",
    ]
    a = analyze(None, [*sets, "engine=numpy"]).to_dict()
    b = analyze(None, [*sets, "engine=fast"]).to_dict()
    la, lb = a["layers"][0], b["layers"][0]
    np.testing.assert_allclose(
        lb["gates"]["forget"]["unit_log_mean"], la["gates"]["forget"]["unit_log_mean"], rtol=1e-13, atol=0
    )
    np.testing.assert_allclose(
        lb["flow"]["forget_log_mean"], la["flow"]["forget_log_mean"], rtol=1e-13, atol=0
    )


@pytest.mark.parametrize("rows", [1, 2, 7, 64])
def test_float32_log_pairs_keep_every_entry(rows, monkeypatch):
    """float32 gates: ln(f_r f_{r+1}) for two rows at once (the product is exact in float64),
    in the compiled and the NumPy pass: per-unit and total sums of ln f as a float64 log per
    entry's, and as each other's, to 1e-13 relative with subnormal,
    tiny, near-1 and exactly 1 entries, an odd row left over in each chunk (`rows` per
    chunk), a zero (-inf) and a NaN in their own units."""
    from lstm_diag.core import diagnostics

    H = 6
    monkeypatch.setattr(diagnostics, "STREAM_CHUNK", rows * 4 * H)
    rng = np.random.default_rng(7)
    T, B = 11, 3
    g = rng.uniform(0.01, 1, size=(T, B, 4 * H)).astype(np.float32)
    f = g[:, :, H : 2 * H]
    f[:, :, 0] = 1e-45  # subnormal float32: products ~1e-90, normal in float64
    f[:, :, 1] = np.float32(1) - rng.integers(1, 4, size=(T, B)).astype(np.float32) * np.float32(2**-24)
    f[::2, :, 2] = 1.0
    f[4, 1, 3] = 0.0
    f[5, 2, 4] = np.nan

    def run():
        acc = diagnostics.GateAccumulator(H, 0.1)
        acc.add(g)
        return acc.log_f_unit.copy(), acc.log_f_sum

    with np.errstate(divide="ignore", invalid="ignore"):
        (u0, t0), (u1, t1) = _with(False, run), _with(True, run)
    assert u0[3] == u1[3] == -np.inf and np.isnan(u0[4]) and np.isnan(u1[4]) and np.isnan(t1)
    keep = [0, 1, 2, 5]
    np.testing.assert_allclose(u1[keep], u0[keep], rtol=1e-13, atol=0)
    assert np.isnan(t0)
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = np.log(f.astype(np.float64)).sum(axis=(0, 1))  # a log per entry, in float64
    np.testing.assert_allclose(u0[keep], exact[keep], rtol=1e-13, atol=0)
