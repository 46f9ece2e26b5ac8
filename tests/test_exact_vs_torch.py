"""The engine against PyTorch autograd (fixtures from tests/make_fixtures.py).

Every case goes through the public path a user takes: config.yaml + weights.npz +
data.npz -> `lstm_diag.analyze`. float64 must agree to rtol 1e-10; the float32
case to the float32 round-off of a 64-step recurrence.
"""

from pathlib import Path

import numpy as np
import pytest

from lstm_diag import analyze

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


RTOL = {"float64": 1e-10, "float32": 2e-4}


def assert_close(actual, desired, case, per_step=False, msg=""):
    """rtol on every entry, plus an atol of 1e-12 times the largest |value| of the
    same tensor (of the same time step when per_step), so that an entry that is a
    near-cancelling sum is judged against the scale it was summed at. Per-step
    scaling keeps early, vanished steps (1e-22) as strictly checked as late ones."""
    rtol = RTOL["float32" if "float32" in case else "float64"]
    actual, desired = np.asarray(actual), np.asarray(desired)
    if per_step:
        scale = np.abs(desired).reshape(desired.shape[0], -1).max(axis=1)
        scale = scale.reshape((-1,) + (1,) * (desired.ndim - 1))
    else:
        scale = np.abs(desired).max()
    bad = np.abs(actual - desired) > rtol * np.abs(desired) + 1e-12 * scale * (rtol / 1e-10)
    assert not bad.any(), (
        f"{msg}: {bad.sum()} of {bad.size} entries differ, e.g. at {np.argwhere(bad)[0].tolist()}: "
        f"{actual[bad][0]!r} vs {desired[bad][0]!r}"
    )


@pytest.fixture(scope="module", params=CASES)
def case(request):
    name = request.param
    result = analyze(FIXTURES / name / "config.yaml")
    with np.load(FIXTURES / name / "reference.npz") as z:
        ref = {k: z[k] for k in z.files}
    return name, result, ref


def test_cases_cover_the_required_shapes():
    assert len(CASES) >= 8
    joined = " ".join(CASES)
    for needle in ("l1_", "l2_", "l3_", "T1_", "T150", "T120", "B1_", "H1_", "mse", "ce", "last", "all"):
        assert needle in joined


def test_loss(case):
    name, result, ref = case
    assert_close(result.loss, ref["loss"], name, msg="loss")


def test_parameter_gradients(case):
    name, result, ref = case
    for pname, g in result.bwd.params.items():
        assert_close(g, ref[f"grad.{pname}"], name, msg=pname)


def test_total_cell_and_hidden_gradients_every_step(case):
    name, result, ref = case
    for k, lg in enumerate(result.bwd.layers):
        assert_close(lg.dc, ref["dc"][k], name, per_step=True, msg=f"dc layer {k}")
        assert_close(lg.dh, ref["dh"][k], name, per_step=True, msg=f"dh layer {k}")


def test_input_gradient(case):
    name, result, ref = case
    assert_close(result.bwd.dx, np.swapaxes(ref["dx"], 0, 1), name, per_step=True, msg="dx")


def test_gate_activations(case):
    name, result, ref = case
    for k, cache in enumerate(result.fwd.layers):
        assert_close(cache.gates, ref["gates"][k], name, per_step=True, msg=f"gates {k}")


def test_json_norms_are_the_frobenius_norms_of_the_reference(case):
    name, result, ref = case
    doc = result.to_dict()
    for k, layer in enumerate(doc["layers"]):
        want_c = np.sqrt((ref["dc"][k] ** 2).sum(axis=(1, 2)))
        want_h = np.sqrt((ref["dh"][k] ** 2).sum(axis=(1, 2)))
        assert_close(layer["grad_c_norm"], want_c, name, per_step=True, msg="grad_c_norm")
        assert_close(layer["grad_h_norm"], want_h, name, per_step=True, msg="grad_h_norm")
    for pname, p in doc["parameters"].items():
        assert_close(p["grad_norm"], np.linalg.norm(ref[f"grad.{pname}"]), name, msg=pname)
