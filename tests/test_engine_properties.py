"""Properties of the engine that the PyTorch fixtures do not pin down.

- A tiny case (B = I = H = O = 1, T = 3) checked against eqs. (1)-(16) written out in
  plain Python floats, step by step, independently of the engine's array code.
- float32 stays float32 end to end; inputs are never modified; a second run neither
  changes nor aliases the first one's results.
- The subnormal guard: where float32 gradients vanish below 1e-38, the engine's values
  agree with the float64 run (which has no underflow there) to float32 precision.
- Structure: a sequence cut in two segments (h0/c0 forward, dh_next/dc_next backward)
  gives the same per-step gradients; permuting the batch permutes them; target "all"
  with a loss on the last step only equals target "last".
"""

import math

import numpy as np
import pytest

from lstm_diag.core import engine
from lstm_diag.core.engine import Spec


def make(spec: Spec, B: int, T: int, dtype="float64", seed=0, forget_bias=0.0, scale=1.0):
    """PyTorch's default init U(-1/sqrt(H), 1/sqrt(H)) times `scale`; x ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    bound = scale / math.sqrt(spec.hidden_size)
    params = {k: rng.uniform(-bound, bound, s).astype(dtype) for k, s in spec.param_shapes().items()}
    H = spec.hidden_size
    params["bias_ih_l0"][H : 2 * H] += forget_bias
    x = rng.normal(size=(B, T, spec.input_size)).astype(dtype)
    y = rng.normal(size=(B, spec.output_size)).astype(dtype)
    return params, x, y


def all_arrays(fwd: engine.Forward, bwd: engine.Backward) -> dict[str, np.ndarray]:
    out = {"y_hat": fwd.y_hat, "dy_hat": fwd.dy_hat, "dx": bwd.dx}
    for k, (cache, lg) in enumerate(zip(fwd.layers, bwd.layers, strict=True)):
        for name in ("x", "gates", "c", "h", "tanh_c"):
            out[f"cache{k}.{name}"] = getattr(cache, name)
        for name in ("dc", "dh", "dz", "dh0", "dc0"):
            out[f"grads{k}.{name}"] = getattr(lg, name)
    out.update({f"grad.{k}": v for k, v in bwd.params.items()})
    return out


# ------------------------------------------------------------------ hand-checked case


def sigma(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


def scalar_lstm(p: dict[str, list[float]], xs: list[float], y: float) -> dict:
    """Eqs. (1)-(16) for one sample, one unit, one input, one output; mse on the last step."""
    wi, wh, b = p["W_ih"], p["W_hh"], [p["b_ih"][k] + p["b_hh"][k] for k in range(4)]
    c, h = [0.0], [0.0]
    acts = []
    for x in xs:
        z = [wi[k] * x + wh[k] * h[-1] + b[k] for k in range(4)]  # (1)
        i, f, g, o = sigma(z[0]), sigma(z[1]), math.tanh(z[2]), sigma(z[3])  # (2)-(5)
        c.append(f * c[-1] + i * g)  # (6)
        h.append(o * math.tanh(c[-1]))  # (7)
        acts.append((i, f, g, o))
    y_hat = p["w"] * h[-1] + p["b"]
    L = (y_hat - y) ** 2
    dy = 2.0 * (y_hat - y)
    T = len(xs)
    dc, dh, dz = [0.0] * T, [0.0] * T, [None] * T
    dz_next, dc_next_f = [0.0] * 4, 0.0
    for t in range(T - 1, -1, -1):
        i, f, g, o = acts[t]
        tc = math.tanh(c[t + 1])
        dh[t] = (dy * p["w"] if t == T - 1 else 0.0) + sum(wh[k] * dz_next[k] for k in range(4))  # (8)
        dc[t] = dh[t] * o * (1 - tc * tc) + dc_next_f  # (9)
        dz[t] = [
            dc[t] * g * i * (1 - i),  # (10)
            dc[t] * c[t] * f * (1 - f),  # (11)
            dc[t] * i * (1 - g * g),  # (12)
            dh[t] * tc * o * (1 - o),  # (13)
        ]
        dz_next, dc_next_f = dz[t], dc[t] * f
    grads = {
        "W_ih": [sum(dz[t][k] * xs[t] for t in range(T)) for k in range(4)],  # (14)
        "W_hh": [sum(dz[t][k] * h[t] for t in range(T)) for k in range(4)],  # (15)
        "b": [sum(dz[t][k] for t in range(T)) for k in range(4)],  # (16)
        "w": dy * h[-1],
        "dx": [sum(wi[k] * dz[t][k] for k in range(4)) for t in range(T)],
    }
    return {"L": L, "c": c, "h": h, "dc": dc, "dh": dh, "dz": dz, "grads": grads}


def test_tiny_case_against_equations_written_out_by_hand():
    p = {
        "W_ih": [0.5, -0.3, 0.8, 0.1],
        "W_hh": [-0.7, 0.4, 0.9, -0.2],
        "b_ih": [0.1, 1.0, -0.2, 0.05],
        "b_hh": [-0.05, 0.2, 0.1, 0.0],
        "w": 1.5,
        "b": -0.25,
    }
    xs, y = [0.9, -1.2, 0.4], 0.3
    ref = scalar_lstm(p, xs, y)

    spec = Spec(1, 1, 1, 1)
    params = {
        "weight_ih_l0": np.array(p["W_ih"]).reshape(4, 1),
        "weight_hh_l0": np.array(p["W_hh"]).reshape(4, 1),
        "bias_ih_l0": np.array(p["b_ih"]),
        "bias_hh_l0": np.array(p["b_hh"]),
        "head.weight": np.array([[p["w"]]]),
        "head.bias": np.array([p["b"]]),
    }
    x = np.array(xs).reshape(1, 3, 1)
    fwd, bwd = engine.run(params, spec, x, np.array([[y]]), "mse", "last")
    cache, lg = fwd.layers[0], bwd.layers[0]
    tol = dict(rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(fwd.loss, ref["L"], **tol)
    np.testing.assert_allclose(cache.c.ravel(), ref["c"], **tol)
    np.testing.assert_allclose(cache.h.ravel(), ref["h"], **tol)
    np.testing.assert_allclose(lg.dc.ravel(), ref["dc"], **tol)
    np.testing.assert_allclose(lg.dh.ravel(), ref["dh"], **tol)
    np.testing.assert_allclose(lg.dz.reshape(3, 4), ref["dz"], **tol)
    g = ref["grads"]
    np.testing.assert_allclose(bwd.params["weight_ih_l0"].ravel(), g["W_ih"], **tol)
    np.testing.assert_allclose(bwd.params["weight_hh_l0"].ravel(), g["W_hh"], **tol)
    np.testing.assert_allclose(bwd.params["bias_ih_l0"], g["b"], **tol)
    np.testing.assert_allclose(bwd.params["bias_hh_l0"], g["b"], **tol)
    np.testing.assert_allclose(bwd.params["head.weight"].ravel(), [g["w"]], **tol)
    np.testing.assert_allclose(bwd.dx.ravel(), g["dx"], **tol)


# --------------------------------------------------------------- dtypes and aliasing


@pytest.mark.parametrize("loss,target", [("mse", "last"), ("mse", "all"), ("cross_entropy", "all")])
def test_float32_stays_float32_end_to_end(loss, target):
    spec = Spec(3, 5, 2, 4)
    params, x, _ = make(spec, B=3, T=7, dtype="float32")
    rng = np.random.default_rng(1)
    shape = (3,) if target == "last" else (3, 7)
    if loss == "mse":
        y = rng.normal(size=shape + (4,))  # float64 on purpose: must not upcast
    else:
        y = rng.integers(0, 4, size=shape)
    x64 = x.astype(np.float64)  # so must x
    fwd, bwd = engine.run(params, spec, x64, y, loss, target)
    assert type(fwd.loss) is float
    for name, a in all_arrays(fwd, bwd).items():
        assert a.dtype == np.float32, f"{name} is {a.dtype}"


@pytest.mark.parametrize("H", [1, 6])  # H = 1: W_hh.T is contiguous, a tempting in-place target
def test_inputs_untouched_and_second_run_independent(H):
    spec = Spec(2, H, 2, 3)
    params, x, y = make(spec, B=4, T=9)
    before = {k: v.copy() for k, v in params.items()}
    x0, y0 = x.copy(), y.copy()
    first = engine.run(params, spec, x, y)
    saved = {k: v.copy() for k, v in all_arrays(*first).items()}
    second = engine.run(params, spec, x, y)
    for k, v in before.items():
        np.testing.assert_array_equal(params[k], v, err_msg=k)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    a1, a2 = all_arrays(*first), all_arrays(*second)
    for k, v in saved.items():
        np.testing.assert_array_equal(a1[k], v, err_msg=f"{k} changed by the second run")
        np.testing.assert_array_equal(a2[k], v, err_msg=f"{k} differs between runs")
        if k != "cache0.x":  # the first layer's input may be the caller's x itself
            assert not np.shares_memory(a1[k], a2[k]), k


# ---------------------------------------------------------------- subnormal guard


def test_vanishing_float32_gradients_keep_float32_precision_below_1e38():
    """With PyTorch's init and 400 steps, dL/dc_t falls from 1e-1 to about 1e-106:
    below 1.2e-38 float32 has only subnormals (then zero). Every value must match the
    float64 run to 2e-4 of its step's largest |dL/dc_t|, plus one subnormal spacing.
    Without the guard, subnormal arithmetic loses that (24 values fail here)."""
    spec = Spec(4, 8, 1, 1)
    params, x, y = make(spec, B=3, T=400, seed=3)
    _, ref = engine.run(params, spec, x, y)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    _, got = engine.run(p32, spec, x.astype(np.float32), y.astype(np.float32))
    dc64, dc32 = ref.layers[0].dc, got.layers[0].dc
    assert np.abs(dc64[0]).max() < 1e-50, "the case must underflow float32"
    step_max = np.abs(dc64).max(axis=(1, 2), keepdims=True)  # (T, 1, 1)
    assert (step_max < np.finfo(np.float32).tiny).mean() > 0.3
    err = np.abs(dc32.astype(np.float64) - dc64)
    bad = err > 2e-4 * step_max + 2.0**-149  # 2^-149: spacing of float32 subnormals
    assert not bad.any(), f"{bad.sum()} values, first at {np.argwhere(bad)[0].tolist()}"
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "head.weight"):
        np.testing.assert_allclose(got.params[name], ref.params[name], rtol=1e-4, atol=1e-7, err_msg=name)


def test_guard_takes_a_large_direct_term_after_deep_vanishing():
    """Target "all" with a loss only on the last step and on step 10: going back from
    step 400, dL/dc_t vanishes far below float32's range, then step 10 adds a term of
    order 1. The scaled state must make room for it (no inf, no NaN) and match float64."""
    spec = Spec(4, 8, 1, 1)
    params, x, _ = make(spec, B=3, T=400, seed=3)
    rng = np.random.default_rng(9)
    dy = np.zeros((3, 400, 1))
    dy[:, -1] = rng.normal(size=(3, 1)) * 1e-2
    dy[:, 10] = rng.normal(size=(3, 1)) * 5.0

    def grads(dtype):
        p = {k: v.astype(dtype) for k, v in params.items()}
        fwd = engine.forward(p, spec, x.astype(dtype), np.zeros((3, 400, 1), dtype), "mse", "all")
        fwd.dy_hat = dy.astype(dtype)
        return engine.backward(p, spec, fwd, "all")

    ref, got = grads(np.float64), grads(np.float32)
    dc64, dc32 = ref.layers[0].dc, got.layers[0].dc
    assert np.abs(dc64[200]).max() < 1e-45 < np.abs(dc64[10]).max()
    assert np.isfinite(dc32).all() and np.isfinite(got.dx).all()
    step_max = np.abs(dc64).max(axis=(1, 2), keepdims=True)
    err = np.abs(dc32.astype(np.float64) - dc64)
    assert not (err > 2e-4 * step_max + 2.0**-149).any()
    for name, g in ref.params.items():
        np.testing.assert_allclose(got.params[name], g, rtol=1e-3, atol=1e-6 * np.abs(g).max(), err_msg=name)


def test_guard_takes_a_small_direct_term_with_a_projection():
    """With proj_size, δh_t has P entries, not H: a direct term that arrives while the
    state is scaled (here 1e-30 at step 10, after dL/dc_t vanished to 1e-41) is added at
    the current scale in a (B, P) buffer. Matches float64 like the cases above."""
    rng = np.random.default_rng(9)
    T, B, I, H, P = 400, 3, 4, 8, 3
    s = 1 / np.sqrt(H)
    W_ih, W_hh = rng.uniform(-s, s, (4 * H, I)), rng.uniform(-s, s, (4 * H, P))
    W_hr = rng.uniform(-s, s, (P, H))
    b = rng.uniform(-2 * s, 2 * s, 4 * H)
    x = rng.normal(size=(T, B, I))
    dh_in = np.zeros((T, B, P))
    dh_in[-1] = rng.normal(size=(B, P)) * 1e-2
    dh_in[10] = rng.normal(size=(B, P)) * 1e-30

    def grads(dtype):
        W_ih_, W_hh_, W_hr_, b_, x_, d_ = (a.astype(dtype) for a in (W_ih, W_hh, W_hr, b, x, dh_in))
        cache = engine.layer_forward(W_ih_, W_hh_, b_, x_, W_hr=W_hr_)
        return engine.layer_backward(W_ih_, W_hh_, cache, d_, W_hr=W_hr_)

    ref, got = grads(np.float64), grads(np.float32)
    assert np.abs(ref.dc[200]).max() < 1e-40 and np.abs(ref.dc[10]).max() < 1e-25
    step_max = np.abs(ref.dc).max(axis=(1, 2), keepdims=True)
    err = np.abs(got.dc.astype(np.float64) - ref.dc)
    assert not (err > 2e-4 * step_max + 2.0**-149).any()


def test_segments_in_the_subnormal_range_agree_with_one_sequence():
    """The checkpointed path runs layer_backward per segment, handing dh0/dc0 on as true
    (unscaled, here subnormal) values: the guard rescales them at once, so each segment
    keeps float32 precision relative to its steps' size."""
    rng = np.random.default_rng(10)
    T, B, I, H, cut = 300, 2, 3, 6, 95
    s = 1 / np.sqrt(H)
    W_ih, W_hh = rng.uniform(-s, s, (4 * H, I)), rng.uniform(-s, s, (4 * H, H))
    b = rng.uniform(-2 * s, 2 * s, 4 * H)
    x = rng.normal(size=(T, B, I))
    dh_in = np.zeros((T, B, H))
    dh_in[-1] = rng.normal(size=(B, H))
    ref = engine.layer_backward(W_ih, W_hh, engine.layer_forward(W_ih, W_hh, b, x), dh_in)  # float64
    f32 = [a.astype(np.float32) for a in (W_ih, W_hh, b, x, dh_in)]
    W_ih, W_hh, b, x, dh_in = f32
    first = engine.layer_forward(W_ih, W_hh, b, x[:cut])
    second = engine.layer_forward(W_ih, W_hh, b, x[cut:], first.h[-1], first.c[-1])
    g2 = engine.layer_backward(W_ih, W_hh, second, dh_in[cut:])
    g1 = engine.layer_backward(W_ih, W_hh, first, dh_in[:cut], g2.dh0, g2.dc0)
    assert 0 < np.abs(g2.dc0).max() < np.finfo(np.float32).tiny, "the hand-over must be subnormal"
    dc32 = np.concatenate([g1.dc, g2.dc]).astype(np.float64)
    step_max = np.abs(ref.dc).max(axis=(1, 2), keepdims=True)
    # 2 subnormal spacings: the hand-over itself is rounded once into the subnormal range.
    assert not (np.abs(dc32 - ref.dc) > 2e-4 * step_max + 2 * 2.0**-149).any()


def test_guard_is_exact_while_gradients_stay_normal(monkeypatch):
    """Scaling by powers of two is exact: with the guard made to act early (from
    gradients below 2^-20 instead of just above the subnormal range), per-step
    results are bitwise those of the unguarded recursion."""
    spec = Spec(3, 6, 2, 2)
    params, x, y = make(spec, B=5, T=120, seed=4)
    monkeypatch.setattr(engine, "_GUARD_BITS", -10_000)  # never acts
    fwd, plain = engine.run(params, spec, x, y)
    monkeypatch.setattr(engine, "_GUARD_BITS", 1002)  # acts below 2^-20
    _, guarded = engine.run(params, spec, x, y)
    assert np.abs(plain.layers[0].dc[0]).max() < 2.0**-40, "the guard must have had work to do"
    for k in range(2):
        for name in ("dc", "dh", "dz", "dh0", "dc0"):
            np.testing.assert_array_equal(getattr(guarded.layers[k], name), getattr(plain.layers[k], name))
    for name, g in plain.params.items():  # summed per block: equal up to reassociation
        np.testing.assert_allclose(guarded.params[name], g, rtol=1e-13, atol=1e-300, err_msg=name)


# ---------------------------------------------------------------------- structure


def test_two_segments_equal_one_sequence():
    """h0/c0 into layer_forward and dh_next/dc_next into layer_backward continue a sequence."""
    rng = np.random.default_rng(5)
    T, B, I, H, cut = 30, 4, 3, 5, 12
    W_ih, W_hh = rng.normal(0, 0.5, (4 * H, I)), rng.normal(0, 0.5, (4 * H, H))
    b = rng.normal(0, 0.5, 4 * H)
    x, dh_in = rng.normal(size=(T, B, I)), rng.normal(size=(T, B, H))
    dh_in[::3] = 0.0  # steps without a direct term
    whole = engine.layer_forward(W_ih, W_hh, b, x)
    first = engine.layer_forward(W_ih, W_hh, b, x[:cut])
    second = engine.layer_forward(W_ih, W_hh, b, x[cut:], first.h[-1], first.c[-1])
    for name in ("gates", "tanh_c"):
        joined = np.concatenate([getattr(first, name), getattr(second, name)])
        np.testing.assert_array_equal(joined, getattr(whole, name))
    np.testing.assert_array_equal(np.concatenate([first.h, second.h[1:]]), whole.h)

    g_whole = engine.layer_backward(W_ih, W_hh, whole, dh_in)
    g_second = engine.layer_backward(W_ih, W_hh, second, dh_in[cut:])
    g_first = engine.layer_backward(W_ih, W_hh, first, dh_in[:cut], g_second.dh0, g_second.dc0)
    for name in ("dc", "dh", "dz"):
        joined = np.concatenate([getattr(g_first, name), getattr(g_second, name)])
        np.testing.assert_allclose(joined, getattr(g_whole, name), rtol=1e-13, atol=1e-15, err_msg=name)
    np.testing.assert_allclose(g_first.dh0, g_whole.dh0, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g_first.dc0, g_whole.dc0, rtol=1e-13, atol=1e-15)


def test_permuting_the_batch_permutes_the_gradients():
    spec = Spec(3, 7, 2, 2)
    params, x, y = make(spec, B=6, T=25, seed=6)
    perm = np.array([3, 0, 5, 1, 4, 2])
    _, a = engine.run(params, spec, x, y)
    _, b = engine.run(params, spec, x[perm], y[perm])
    for k in range(2):
        np.testing.assert_allclose(b.layers[k].dc, a.layers[k].dc[:, perm], rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(b.layers[k].dz, a.layers[k].dz[:, perm], rtol=1e-12, atol=1e-300)
    for name, g in a.params.items():
        np.testing.assert_allclose(b.params[name], g, rtol=1e-10, atol=1e-15, err_msg=name)


def test_target_all_with_last_step_loss_only_equals_target_last():
    spec = Spec(2, 4, 2, 3)
    params, x, _ = make(spec, B=3, T=15, seed=7)
    fwd_all = engine.forward(params, spec, x, np.zeros((3, 15, 3)), "mse", "all")
    d_last = np.random.default_rng(8).normal(size=(3, 3))
    dy = np.zeros_like(fwd_all.dy_hat)
    dy[:, -1] = d_last
    fwd_all.dy_hat = dy
    fwd_last = engine.forward(params, spec, x, np.zeros((3, 3)), "mse", "last")
    fwd_last.dy_hat = d_last
    g_all = engine.backward(params, spec, fwd_all, "all")
    g_last = engine.backward(params, spec, fwd_last, "last")
    for k in range(2):
        for name in ("dc", "dh", "dz"):
            np.testing.assert_array_equal(getattr(g_all.layers[k], name), getattr(g_last.layers[k], name))
    np.testing.assert_array_equal(g_all.dx, g_last.dx)


def test_selecting_an_engine_keeps_freed_memory_unless_told_not_to():
    """The allocator thresholds are set once per process before analyze or train runs the
    engine (glibc only), and LSTM_DIAG_MALLOC=default leaves them alone."""
    import os
    import platform
    import subprocess
    import sys
    from pathlib import Path

    code = "from lstm_diag.setup import allocator as a; print(a.keep_freed_memory(), a.keep_freed_memory())"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("LSTM_DIAG_MALLOC", None)
    out = [
        subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True).stdout
        for e in (env, {**env, "LSTM_DIAG_MALLOC": "default"})
    ]
    assert out[1].split() == ["False", "False"]
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out[0].split() == [str(glibc)] * 2
