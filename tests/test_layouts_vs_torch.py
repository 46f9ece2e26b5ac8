"""bidirectional, proj_size and bias=False against PyTorch autograd (tests/make_fixtures_layouts.py).

Every case goes through the public path: config.yaml + weights.npz + data.npz -> `analyze`,
with full caches and with checkpointed BPTT. The references index per-step arrays by position
t in the sequence for both directions; the engine keeps a reverse unit's arrays in its own
processing order, so they are compared through `engine.time_order`.
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_step
from test_exact_vs_torch import assert_close

from lstm_diag import analyze
from lstm_diag.core import engine
from lstm_diag.setup.config import load_config
from lstm_diag.setup.problem import spec_of

FIXTURES = Path(__file__).parent / "fixtures_layouts"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def reference(name):
    with np.load(FIXTURES / name / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module", params=CASES)
def case(request):
    name = request.param
    result = analyze(FIXTURES / name / "config.yaml", ["diagnostics.memory=full"])
    return name, result, reference(name)


def test_cases_cover_every_layout():
    joined = " ".join(CASES)
    for needle in ("bi_l2", "proj_l", "nobias", "bi_proj", "float32", "mse", "ce", "last", "all"):
        assert needle in joined


def test_parameter_names_and_order_are_nn_lstm_state_dict(case):
    name, result, _ = case
    with np.load(FIXTURES / name / "weights.npz") as z:
        saved = [k.removeprefix("lstm.") for k in z.files]
    assert list(result.problem.spec.param_shapes()) == saved


def test_loss_and_parameter_gradients(case):
    name, result, ref = case
    assert_close(result.loss, ref["loss"], name, msg="loss")
    assert set(result.bwd.params) == {k.removeprefix("grad.") for k in ref if k.startswith("grad.")}
    for pname, g in result.bwd.params.items():
        assert_close(g, ref[f"grad.{pname}"], name, msg=pname)


def test_cell_and_hidden_gradients_every_step_every_direction(case):
    name, result, ref = case
    units = result.problem.spec.units()
    assert len(result.bwd.layers) == len(units) == ref["dc"].shape[0]
    for j, (k, d) in enumerate(units):
        lg, cache = result.bwd.layers[j], result.fwd.layers[j]
        where = f"layer {k} {engine.DIRECTIONS[d]}"
        assert_close(engine.time_order(lg.dc, d), ref["dc"][j], name, per_step=True, msg=f"dc {where}")
        assert_close(engine.time_order(lg.dh, d), ref["dh"][j], name, per_step=True, msg=f"dh {where}")
        assert_close(
            engine.time_order(cache.gates, d), ref["gates"][j], name, per_step=True, msg=f"gates {where}"
        )


def test_input_gradient(case):
    name, result, ref = case
    assert_close(result.bwd.dx, np.swapaxes(ref["dx"], 0, 1), name, per_step=True, msg="dx")


def test_json_has_one_entry_per_direction_with_norms_by_position(case):
    name, result, ref = case
    doc = result.to_dict()
    assert doc["schema_version"] == 5
    spec = result.problem.spec
    assert [(e["layer"], e["direction"]) for e in doc["layers"]] == [
        (k, engine.DIRECTIONS[d]) for k, d in spec.units()
    ]
    for j, entry in enumerate(doc["layers"]):
        want_c = np.sqrt((ref["dc"][j] ** 2).sum(axis=(1, 2)))
        want_h = np.sqrt((ref["dh"][j] ** 2).sum(axis=(1, 2)))
        assert_close(entry["grad_c_norm"], want_c, name, per_step=True, msg="grad_c_norm")
        assert_close(entry["grad_h_norm"], want_h, name, per_step=True, msg="grad_h_norm")


def test_checkpointed_bptt_matches_the_reference(case):
    name, _, ref = case
    ckpt = analyze(FIXTURES / name / "config.yaml", ["diagnostics.memory=checkpoint"])
    doc = ckpt.to_dict()
    assert doc["memory"]["mode"] == "checkpoint"
    assert_close(ckpt.loss, ref["loss"], name, msg="loss")
    for pname, g in ckpt.grads.items():
        assert_close(g, ref[f"grad.{pname}"], name, msg=pname)
    for j, entry in enumerate(doc["layers"]):
        want_c = np.sqrt((ref["dc"][j] ** 2).sum(axis=(1, 2)))
        assert_close(entry["grad_c_norm"], want_c, name, per_step=True, msg=f"grad_c_norm unit {j}")


def test_checkpointed_flow_and_verdicts_equal_the_full_path(case):
    name, full, _ = case
    a = full.to_dict()
    b = analyze(FIXTURES / name / "config.yaml", ["diagnostics.memory=checkpoint"]).to_dict()
    rtol = 1e-5 if "float32" in name else 1e-9
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        assert la["verdict"] == lb["verdict"] and la["direction"] == lb["direction"]
        if "flow_grad_c_norm" in la:
            np.testing.assert_allclose(lb["flow_grad_c_norm"], la["flow_grad_c_norm"], rtol=rtol, atol=0)
        assert la["flow"]["horizon"] == lb["flow"]["horizon"]


def test_reverse_flow_is_what_enters_at_t1_carried_towards_T():
    """A reverse direction's recurrence carries gradient from t = 1 towards T. Its flow is the
    gradient entering it at t = 1 alone; for the top layer under target "all" that is exactly
    the first step's loss term backpropagated (checked here with the engine's full backward)."""
    r = analyze(FIXTURES / "bi_l2_T40_mse_all" / "config.yaml")
    doc = r.to_dict()
    spec, fwd = r.problem.spec, r.fwd
    assert [e["flow"]["source"] for e in doc["layers"]] == [
        "last_step_loss_term",
        "entry_at_first_step",
        "last_step_loss_term",
        "entry_at_first_step",
    ]
    first = np.zeros_like(fwd.dy_hat)
    first[:, 0] = fwd.dy_hat[:, 0]
    only_first = engine.Forward(fwd.layers, fwd.out, fwd.y_hat, fwd.loss, first)
    dc = engine.time_order(engine.backward(r.problem.params, spec, only_first, "all").layers[3].dc, 1)
    want = np.sqrt((dc**2).sum(axis=(1, 2)))
    np.testing.assert_allclose(doc["layers"][3]["flow_grad_c_norm"], want, rtol=1e-13)
    assert want[0] > 0 and want[-1] > 0  # enters at t = 1, reaches t = T


def test_top_reverse_direction_with_target_last_says_there_is_no_flow():
    r = analyze(FIXTURES / "bi_l2_T30_ce_last" / "config.yaml").to_dict()
    top_rev = r["layers"][3]
    assert top_rev["direction"] == "reverse" and top_rev["verdict"] == "no_flow"
    assert "only x_T" in top_rev["flow"]["note"]
    norms = np.asarray(top_rev["grad_c_norm"])
    assert norms[-1] > 0 and not norms[:-1].any()  # the loss reaches it at t = T only
    assert not any(
        f["code"] in ("LD101", "LD102") and f.get("direction") == "reverse" and f["layer"] == 1
        for f in r["findings"]
    )


def test_spec_sizes():
    spec = spec_of(load_config(FIXTURES / "bi_proj_l2_T35_ce_all" / "config.yaml")[0])
    assert (spec.directions, spec.state_size, spec.output_width) == (2, 4, 8)
    shapes = spec.param_shapes()
    assert shapes["weight_ih_l1_reverse"] == (24, 8) and shapes["weight_hr_l0"] == (4, 6)
    assert shapes["weight_hh_l0"] == (24, 4) and shapes["head.weight"] == (4, 8)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_a_saved_bidirectional_projected_pytorch_model_end_to_end(tmp_path):
    """A model trained in PyTorch (dropout between layers, so eval mode matters), saved with
    torch.save(state_dict): a YAML naming the two files and the loss is enough; the sizes and
    the layout are inferred; loss and per-step ||dL/dc_t|| of every direction match PyTorch."""
    torch = pytest.importorskip("torch", reason="the reference model is built and trained in PyTorch")
    from make_fixtures_layouts import unrolled

    torch.manual_seed(7)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(5, 12, 2, batch_first=True, bidirectional=True, proj_size=4, dropout=0.3)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    model = Model()
    x, y = torch.randn(4, 30, 5), torch.randint(0, 3, (4, 30))
    for _ in range(20):
        gradient_step(model, torch.nn.functional.cross_entropy(model(x).reshape(-1, 3), y.reshape(-1)), 0.1)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())
    (tmp_path / "cfg.yaml").write_text(
        "model: {weights: model.pt}\ndata: {task: file, path: data.npz}\n"
        "loss: {type: cross_entropy, target: all}\n"
    )
    model = model.double().eval()
    out, units = unrolled(type("Net", (), {"lstm": model.rnn})(), x.double())
    loss = torch.nn.functional.cross_entropy(model.fc(out).reshape(-1, 3), y.reshape(-1))
    loss.backward()

    r = analyze(tmp_path / "cfg.yaml")
    spec = r.problem.spec
    assert (spec.bidirectional, spec.proj_size, spec.hidden_size, spec.num_layers) == (True, 4, 12, 2)
    with torch.no_grad():
        eval_loss = torch.nn.functional.cross_entropy(model(x.double()).reshape(-1, 3), y.reshape(-1)).item()
    np.testing.assert_allclose(r.loss, eval_loss, rtol=1e-12)
    for j, entry in enumerate(r.to_dict()["layers"]):
        dc = np.stack([c.grad.numpy() for c in units[j][0]])  # (T, B, H) by position
        want = np.sqrt((dc**2).sum(axis=(1, 2)))
        np.testing.assert_allclose(entry["grad_c_norm"], want, rtol=1e-10, err_msg=f"unit {j}")


def test_gradcheck_on_every_layout():
    """Finite differences agree with the engine on bidirectional + projection + no biases."""
    from lstm_diag.features.gradcheck import check_gradients
    from lstm_diag.setup.problem import build

    cfg = load_config(
        None,
        [
            "model.bidirectional=true",
            "model.proj_size=3",
            "model.bias=false",
            "model.hidden_size=5",
            "model.num_layers=2",
            "data.seq_len=12",
            "data.batch_size=3",
            "loss.target=all",
        ],
    )[0]
    checks = check_gradients(build(cfg), samples=6)
    names = {c.name for c in checks}
    assert {"weight_hr_l1_reverse", "weight_hh_l0_reverse", "x"} <= names and not any(
        "bias_ih" in n for n in names
    )
    assert all(c.passed(1e-6) for c in checks), [(c.name, c.max_rel_error) for c in checks]
