"""Initialization schemes (docs/theory.md §2-§3) and synthetic tasks (§7), by their definitions."""

import math

import numpy as np
import pytest

from lstm_diag.core.engine import Spec
from lstm_diag.core.schemes import SCHEMES, InitOptions, init_params
from lstm_diag.core.tasks import adding_task, copy_task

SPEC = Spec(input_size=6, hidden_size=40, num_layers=2, output_size=3)
H = SPEC.hidden_size


def draw(name, **kw):
    opts = InitOptions(t_max=kw.pop("t_max", 100.0), gain=kw.pop("gain", 1.0))
    return init_params(name, SPEC, np.random.default_rng(0), "float64", opts, **kw)


def blocks(W):
    return [W[k * H : (k + 1) * H] for k in range(4)]


def test_registry_has_the_required_schemes():
    required = {
        "pytorch",
        "xavier_uniform",
        "xavier_normal",
        "orthogonal",
        "keras",
        "he",
        "identity",
        "chrono",
    }
    assert required <= set(SCHEMES)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_every_scheme_gives_every_parameter_with_its_shape(name):
    params = draw(name)
    assert {k: v.shape for k, v in params.items()} == SPEC.param_shapes()
    assert all(v.dtype == np.float64 and np.all(np.isfinite(v)) for v in params.values())


def test_pytorch_default_is_uniform_on_one_over_sqrt_h():
    p = draw("pytorch")
    k = 1 / math.sqrt(H)
    allv = np.concatenate([v.ravel() for n, v in p.items() if not n.startswith("head")])
    assert np.abs(allv).max() <= k
    assert abs(allv.var() - k * k / 3) < 0.05 * k * k / 3  # Var U(-k, k) = k^2/3
    assert np.abs(p["head.weight"]).max() <= 1 / math.sqrt(H)


def test_xavier_uniform_bound_uses_the_whole_stacked_matrix():
    p = draw("xavier_uniform")
    a = math.sqrt(6 / (SPEC.input_size + 4 * H))
    assert np.abs(p["weight_ih_l0"]).max() <= a and np.abs(p["weight_ih_l0"]).max() > 0.9 * a
    assert np.abs(p["weight_hh_l0"]).max() <= math.sqrt(6 / (H + 4 * H))
    assert not p["bias_ih_l0"].any() and not p["bias_hh_l0"].any()


def test_xavier_normal_and_he_standard_deviations():
    p = draw("xavier_normal")
    assert abs(p["weight_hh_l1"].std() / math.sqrt(2 / (5 * H)) - 1) < 0.05
    p = draw("he")
    assert abs(p["weight_hh_l1"].std() / math.sqrt(2 / H) - 1) < 0.05
    assert abs(p["weight_ih_l0"].std() / math.sqrt(2 / SPEC.input_size) - 1) < 0.1


def test_orthogonal_makes_each_gate_block_orthogonal():
    for W in blocks(draw("orthogonal")["weight_hh_l0"]):
        np.testing.assert_allclose(W.T @ W, np.eye(H), atol=1e-12)


def test_keras_orthonormal_columns_and_unit_forget_bias():
    p = draw("keras")
    W = p["weight_hh_l1"]  # (4H, H): Keras's (H, 4H) with orthonormal rows, transposed
    np.testing.assert_allclose(W.T @ W, np.eye(H), atol=1e-12)
    b = p["bias_ih_l0"] + p["bias_hh_l0"]
    assert np.all(b[H : 2 * H] == 1) and not b[:H].any() and not b[2 * H :].any()


def test_identity_blocks_scaled_by_gain():
    for W in blocks(draw("identity", gain=0.5)["weight_hh_l0"]):
        np.testing.assert_array_equal(W, 0.5 * np.eye(H))


def test_chrono_biases():
    p = draw("chrono", t_max=50.0)
    b = p["bias_ih_l0"] + p["bias_hh_l0"]
    b_i, b_f = b[:H], b[H : 2 * H]
    assert np.all(b_f >= 0) and np.all(b_f <= math.log(49))
    np.testing.assert_array_equal(b_i, -b_f)
    assert not b[2 * H :].any()
    tau = 1 + np.exp(b_f)  # docs/theory.md §3: tau = 1 + e^{b_f} in [2, T_max]
    assert tau.min() >= 2 and tau.max() <= 50


def test_forget_bias_override_sets_the_effective_bias_and_recurrent_scale():
    p = draw("pytorch", forget_bias=3.0, recurrent_scale=2.0)
    q = draw("pytorch")
    for k in range(2):
        np.testing.assert_array_equal((p[f"bias_ih_l{k}"] + p[f"bias_hh_l{k}"])[H : 2 * H], 3.0)
        np.testing.assert_array_equal(p[f"weight_hh_l{k}"], 2 * q[f"weight_hh_l{k}"])


def test_adding_task_matches_the_arjovsky_definition():
    x, y = adding_task(np.random.default_rng(1), 64, 50)
    assert x.shape == (64, 50, 2) and y.shape == (64, 1)
    m = x[..., 1]
    assert np.all(m.sum(axis=1) == 2)
    assert np.all(m[:, :25].sum(axis=1) == 1) and np.all(m[:, 25:].sum(axis=1) == 1)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * m).sum(axis=1))
    assert x[..., 0].min() >= 0 and x[..., 0].max() <= 1


def test_copy_task_matches_the_arjovsky_definition():
    T = 30
    x, y = copy_task(np.random.default_rng(2), 5, T + 20)
    ids = x.argmax(-1)
    assert x.shape == (5, T + 20, 10) and y.shape == (5, T + 20)
    assert np.all(ids[:, :10] < 8)
    assert (
        np.all(ids[:, 10 : 10 + T - 1] == 8) and np.all(ids[:, T + 9] == 9) and np.all(ids[:, T + 10 :] == 8)
    )
    assert np.all(y[:, : T + 10] == 8)
    np.testing.assert_array_equal(y[:, T + 10 :], ids[:, :10])
