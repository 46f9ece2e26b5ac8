"""gradcheck that respects the user's time (issue 17, item 6): which entries, how long, progress."""

import json

import numpy as np
import pytest
from conftest import run

from lstm_diag.core import engine
from lstm_diag.features.gradcheck import _LossFrom, entry_subset, plan_gradcheck, run_gradcheck
from lstm_diag.setup.config import load_config
from lstm_diag.setup.problem import build

TWO_LAYERS = ("model.input_size=3", "model.hidden_size=4", "model.num_layers=2", "data.seq_len=9",
              "data.batch_size=2", "seed=5")


def _problem(*extra):
    return build(load_config(None, [*TWO_LAYERS, *extra])[0])


def test_the_subset_is_seeded_reproducible_and_covers_each_tensor_and_gate():
    plan = plan_gradcheck(_problem(), entries=5, seed=7)
    again = plan_gradcheck(_problem(), entries=5, seed=7)
    other = plan_gradcheck(_problem(), entries=5, seed=8)
    assert set(plan.indices) == set(plan.tensors)  # every tensor, x included
    for name, idx in plan.indices.items():
        np.testing.assert_array_equal(idx, again.indices[name])
        size = plan.tensors[name].size
        assert len(idx) == min(5, size) and len(set(idx.tolist())) == len(idx), name
        assert idx[0] == np.argmax(np.abs(plan.analytic[name])) or size <= 5, name  # the largest first
        if name.startswith(("weight_ih", "weight_hh", "bias")):  # 4H rows: i, f, g, o each drawn
            H4 = plan.tensors[name].shape[0]
            blocks = {int(np.unravel_index(j, plan.tensors[name].shape)[0]) // (H4 // 4) for j in idx[1:]}
            assert blocks == {0, 1, 2, 3}, name
    assert any(not np.array_equal(plan.indices[n], other.indices[n]) for n in plan.indices)


def test_a_tensors_subset_does_not_depend_on_the_other_tensors():
    g = np.random.default_rng(0).normal(size=(16, 3))
    a = entry_subset("weight_ih_l1", g, 6, seed=2, blocks=4)
    np.testing.assert_array_equal(a, entry_subset("weight_ih_l1", g.copy(), 6, seed=2, blocks=4))
    assert not np.array_equal(a, entry_subset("weight_hh_l1", g, 6, seed=2, blocks=4))
    np.testing.assert_array_equal(entry_subset("x", g, None, seed=2), np.arange(g.size))


@pytest.mark.parametrize("start", [-1, 0, 1, 2])
def test_the_loss_from_a_layer_up_is_the_full_forward_pass(start):
    """Re-evaluating from layer k up (the speed-up) gives engine.loss_only's value exactly,
    whichever tensor is perturbed."""
    p = _problem("model.output_size=2", "loss.type=cross_entropy", "loss.target=all")
    params = {k: v.copy() for k, v in p.params.items()}
    lf = _LossFrom(params, p.spec, p.x, p.y, p.loss, p.target, None, None)
    name = {-1: "x", 0: "weight_hh_l0", 1: "bias_ih_l1", 2: "head.weight"}[start]
    arr = lf.x if name == "x" else params[name]
    arr.reshape(-1)[3] += 1e-3
    x = np.swapaxes(lf.x, 0, 1)  # the perturbed input, batch-first
    assert lf(start) == engine.loss_only(params, p.spec, x, p.y, p.loss, p.target)


def test_entries_all_checks_every_entry_of_a_tiny_model():
    p = _problem("model.num_layers=1", "data.seq_len=5")
    checks = run_gradcheck(plan_gradcheck(p, entries=None))
    sizes = {name: int(np.prod(a.shape)) for name, a in p.params.items()} | {"x": p.x.size}
    assert {c.name: c.checked for c in checks} == sizes
    assert all(c.passed(1e-6) for c in checks), [(c.name, c.max_rel_error) for c in checks]


def test_the_estimate_is_on_stderr_before_the_result_and_not_on_stdout():
    r = run("gradcheck", *[a for s in TWO_LAYERS for a in ("--set", s)], "--entries", "3", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # stdout is the document alone
    assert doc["schema_version"] == 2 and doc["entries"] == {"per_tensor": 3, "seed": 5}
    assert all(t["checked"] == min(3, int(np.prod(t["shape"]))) for t in doc["tensors"])
    line = r.stderr.splitlines()[0]
    assert line.startswith("gradcheck: ") and "x 4 loss evaluations" in line and "about" in line
    total = sum(t["checked"] for t in doc["tensors"])
    assert f"{total} entries (up to 3 per tensor, {len(doc['tensors'])} tensors)" in line


def test_entries_all_and_bad_values_on_the_command_line():
    r = run("gradcheck", "--set", "model.input_size=2", "--set", "model.hidden_size=2",
            "--set", "data.seq_len=3", "--set", "data.batch_size=1", "--entries", "all", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["entries"]["per_tensor"] == "all"
    assert all(t["checked"] == int(np.prod(t["shape"])) for t in doc["tensors"])
    assert "every entry" in r.stderr
    for bad in ("0", "some"):
        r = run("gradcheck", "--entries", bad)
        assert r.exit_code == 2 and "positive integer or 'all'" in r.stderr


def test_a_wrong_gradient_still_exits_1_with_a_subset(monkeypatch):
    real = engine.backward

    def broken(*a, **k):
        b = real(*a, **k)
        b.params["bias_hh_l1"] = b.params["bias_hh_l1"] * 1.001
        return b

    monkeypatch.setattr(engine, "backward", broken)
    r = run("gradcheck", *[a for s in TWO_LAYERS for a in ("--set", s)], "--entries", "2")
    assert r.exit_code == 1 and "bias_hh_l1" in r.stdout and "FAIL" in r.stdout
