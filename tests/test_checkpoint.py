"""Checkpointed BPTT (diagnostics.memory: checkpoint) gives the full path's results."""

from pathlib import Path

import numpy as np
import pytest

from lstm_diag import analyze

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def both(config, *overrides):
    full = analyze(config, ["diagnostics.memory=full", *overrides])
    ckpt = analyze(config, ["diagnostics.memory=checkpoint", *overrides])
    return full, ckpt


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_equals_full_on_the_torch_fixtures(case):
    full, ckpt = both(FIXTURES / case / "config.yaml")
    assert ckpt.fwd is None and ckpt.to_dict()["memory"]["mode"] == "checkpoint"
    assert full.to_dict()["memory"]["mode"] == "full"
    a, b = full.to_dict(), ckpt.to_dict()
    assert a["loss"] == b["loss"]
    rtol = 1e-12 if "float32" not in case else 1e-5
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        # With target "last" the top layer repeats the full path's operations exactly (bitwise);
        # otherwise dL/dh_t from the head, and lower layers' dL/dx from the layer above, come
        # from per-segment GEMMs: equal to round-off.
        for key in ("grad_c_norm", "grad_h_norm", "flow_grad_c_norm"):
            if key in la:
                np.testing.assert_allclose(lb[key], la[key], rtol=rtol, atol=0, err_msg=key)
        if la["layer"] == len(a["layers"]) - 1 and a["config"]["loss"]["target"] == "last":
            assert la["grad_c_norm"] == lb["grad_c_norm"] and la["grad_h_norm"] == lb["grad_h_norm"]
        fit_a, fit_b = la["flow"].pop("decay_fit"), lb["flow"].pop("decay_fit")  # fitted to round-off
        assert [s["steps_back"] for s in fit_a["segments"]] == [s["steps_back"] for s in fit_b["segments"]]
        for sa, sb in zip(fit_a["segments"], fit_b["segments"], strict=True):
            np.testing.assert_allclose(sb["rate"], sa["rate"], rtol=1e-9, atol=1e-12)
        for key, v in la["flow"].items():
            if isinstance(v, float):
                np.testing.assert_allclose(lb["flow"][key], v, rtol=1e-9, err_msg=key)
            else:
                assert lb["flow"][key] == v, key
        assert la["verdict"] == lb["verdict"]
        for g in la["gates"]:
            np.testing.assert_allclose(lb["gates"][g]["mean"], la["gates"][g]["mean"], rtol=1e-12)
            assert lb["gates"][g]["saturation_over_time"] == la["gates"][g]["saturation_over_time"]
    atol = 1e-14 if "float32" not in case else 1e-6  # times the tensor's largest entry: its round-off
    for name, g in full.grads.items():  # summed per segment: equal to round-off
        np.testing.assert_allclose(ckpt.grads[name], g, rtol=rtol, atol=atol * np.abs(g).max(), err_msg=name)
    assert [f.code for f in full.findings] == [f.code for f in ckpt.findings]


def test_auto_picks_checkpointing_over_the_budget_and_says_so():
    r = analyze(None, ["diagnostics.memory_budget_mb=0.1"]).to_dict()
    assert r["memory"]["mode"] == "checkpoint" and "over the 0.1 MB budget" in r["memory"]["reason"]
    assert r["memory"]["segment"] == 10 and r["memory"]["segments"] == 10
    assert analyze(None).to_dict()["memory"]["mode"] == "full"
