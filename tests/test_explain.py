"""`lstm-diag explain`: the numbers it prints are PyTorch's (toy fixture) and the engine's.

References: tests/fixtures_explain/toy.npz (PyTorch autograd on the toy, made by
tests/make_explain_fixture.py), the engine's own caches and gradients as returned by
`analyze`, and finite differences (inside `explain.toy`). Tolerances: 1e-12 relative
for float64 values computed in a different order; 4 significant digits (rel. 5e-4
per number) where the printed text is read back.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run
from rich.console import Console

from lstm_diag.core.engine import GATES
from lstm_diag.features import explain as E
from lstm_diag.features.analysis import analyze
from lstm_diag.report.explain_render import INDENT, equation_grid, markdown, num, render

FIXTURE = Path(__file__).parent / "fixtures_explain" / "toy.npz"
RTOL = 1e-12


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def toy():
    return E.toy()


def by_key(eqs):
    return {e.key: e for e in eqs}


def close(actual, desired, rtol=RTOL, msg=""):
    np.testing.assert_allclose(
        np.asarray(actual, float), np.asarray(desired, float), rtol=rtol, atol=1e-15, err_msg=msg
    )


# ------------------------------------------------------------------ the toy vs PyTorch


def test_toy_weights_and_data_are_the_fixtures(toy, ref):
    for name, v in toy.params.items():
        np.testing.assert_array_equal(v, ref[f"params.{name}"], err_msg=name)
    np.testing.assert_array_equal(toy.x, ref["x"])
    assert toy.y == ref["y"]


def test_toy_forward_equals_pytorch(toy, ref):
    for s in toy.steps:
        t, eq = s.t, by_key(s.forward)
        for j, q in enumerate(GATES):
            close(eq[f"z_{q}"].value, ref["z"][t - 1, j], msg=f"z_{q} at t={t}")
            close(eq[q].value, ref["gates"][t - 1, j], msg=f"{q} at t={t}")
        close(eq["c"].value, ref["c"][t], msg=f"c_{t}")
        close(eq["h"].value, ref["h"][t], msg=f"h_{t}")
        close(dict(eq["c"].operands)["cₜ₋₁"], ref["c"][t - 1])
        close(dict(eq["h"].operands)["tanh cₜ"], ref["tanh_c"][t - 1])


def test_toy_backward_equals_pytorch(toy, ref):
    T = len(toy.steps)
    for s in toy.steps:
        t, eq = s.t, by_key(s.backward)
        close(eq["dh"].value, ref["dh"][t - 1], msg=f"dL/dh_{t}")
        close(eq["dc"].value, ref["dc"][t - 1], msg=f"dL/dc_{t}")
        close(eq["dtanh_c"].value, ref["dtanh_c"][t - 1], msg=f"tanh'(c_{t})")
        for j, q in enumerate(GATES):
            close(eq[f"d{q}"].value, ref["dact"][t - 1, j], msg=f"gate derivative {q} at t={t}")
            close(eq[f"dz_{q}"].value, ref["dz"][t - 1, j], msg=f"dL/dz_{q} at t={t}")
        if t < T:  # W_hhᵀ δz_{t+1} spelled out: the recurrent part of dL/dh_t
            close(eq["dh_rec"].value, ref["dh"][t - 1], msg=f"W_hhᵀ δz_{t + 1}")
        else:
            close(dict(eq["dh"].operands)["∂ℓₜ/∂hₜ"], ref["dl_dh_T"])
    first = by_key(toy.steps[0].previous)
    close(first["dh_prev"].value, ref["dh0"], msg="dL/dh_0")
    close(first["dc_prev"].value, ref["dc0"], msg="dL/dc_0")


def test_toy_head_equals_pytorch(toy, ref):
    eq = by_key(toy.head)
    close(eq["y_hat"].value, ref["y_hat"])
    close(eq["loss"].value, ref["loss"])
    close(eq["dy_hat"].value, ref["dy_hat"])
    close(eq["dl_dh"].value, ref["dl_dh_T"])
    close(eq["dW_head"].value, ref["grad.head.weight"].ravel())
    close(eq["db_head"].value, ref["grad.head.bias"])


def test_toy_step_shares_equal_pytorch_and_add_up_to_the_gradient(toy, ref):
    for s in toy.steps:
        for name, share in s.contributions.sample.items():
            close(share, ref[f"contrib.{name}"][s.t - 1], msg=f"{name} share at t={s.t}")
    for c in toy.checks:
        g = ref[f"grad.{c.name}"][c.index]
        close(c.analytic, g, msg=c.label)
        if c.summed is not None:  # Σ over steps of the printed shares = the gradient
            close(c.summed, g, rtol=1e-13, msg=c.label)
        assert c.rel_error < 1e-8, c  # finite differences agree
    assert toy.passed and len(toy.checks) == 18


def printed_values(text: str) -> dict[str, list[str]]:
    """`label = ... = value` lines of the rendered text: label -> printed values."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        lhs, sep, rhs = line.strip().partition(" = ")
        if not sep:
            continue
        value = re.sub(r"\s+\(\d+\)$", "", rhs.rsplit(" = ", 1)[-1].strip())
        try:
            float(value)
        except ValueError:  # a symbolic line
            continue
        out.setdefault(lhs, []).append(value)
    return out


def printed(draw, width=200) -> str:
    """The plain text draw(console) prints on a terminal `width` columns wide."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    draw(console)
    return console.export_text()


def render_text(obj, width=200) -> str:
    return printed(lambda console: render(obj, console), width)


def backward_text(ex, width=200) -> str:
    """The backward section of a step as `render` prints it (the full step costs ~0.1 s)."""
    return printed(lambda console: console.print(equation_grid(ex.step.backward, width - INDENT)), width)


def test_toy_printed_numbers_equal_pytorch(toy, ref):
    printed = printed_values(render_text(toy))
    sub, sup = E.sub, E.GATE_SUP
    expect = {
        "δh₀": ref["dh0"],
        "δc₀": ref["dc0"],
        "ŷ": ref["y_hat"],
        "L": ref["loss"],
        "∂L/∂ŷ": ref["dy_hat"],
    }
    expect["∂ℓ₃/∂h₃"] = ref["dl_dh_T"]
    expect["∂L/∂W_head"] = ref["grad.head.weight"][0, 0]
    expect["∂L/∂b_head"] = ref["grad.head.bias"][0]
    for t in (1, 2, 3):
        T = sub(t)
        expect |= {f"c{T}": ref["c"][t], f"h{T}": ref["h"][t], f"δh{T}": ref["dh"][t - 1]}
        expect |= {f"δc{T}": ref["dc"][t - 1], f"tanh′(c{T})": ref["dtanh_c"][t - 1]}
        for j, q in enumerate(GATES):
            expect[f"z{sup[q]}{T}"] = ref["z"][t - 1, j]
            expect[f"{q}{T}"] = ref["gates"][t - 1, j]
            expect[f"δz{sup[q]}{T}"] = ref["dz"][t - 1, j]
            fn = "tanh′" if q == "g" else "σ′"
            expect[f"{fn}(z{sup[q]}{T})"] = ref["dact"][t - 1, j]
    for label, v in expect.items():
        assert label in printed, f"{label} not printed"
        assert printed[label] == [num(v)] * len(printed[label]), (label, printed[label], num(v))


def test_toy_json_equals_pytorch(ref):
    r = run("explain", "--toy", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["mode"] == "toy" and doc["gradcheck"]["passed"]
    for s in doc["steps"]:
        t = s["step"]
        fwd = {e["key"]: e for e in s["forward"]}
        bwd = {e["key"]: e for e in s["backward"]}
        close(fwd["c"]["value"], [ref["c"][t]])
        close(bwd["dc"]["value"], [ref["dc"][t - 1]])
        close([bwd[f"dz_{q}"]["value"][0] for q in GATES], ref["dz"][t - 1])
        close(
            np.ravel(s["contributions"]["sample"]["weight_hh_l0"]), ref["contrib.weight_hh_l0"][t - 1].ravel()
        )
    close(doc["loss"], ref["loss"])


def test_toy_markdown_is_latex():
    md = markdown(E.toy())
    assert md.count("$$") % 2 == 0 and md.count(r"\begin{aligned}") == md.count(r"\end{aligned}") >= 8
    assert r"c_{2} &= " in md and r"\delta z^{f}_{3} &= " in md and "\\text{(9)}" in md
    assert "ₜ" not in md and "⊙" not in md and "δ" not in md  # LaTeX, not the terminal's Unicode


# ------------------------------------------------------------- any config vs the engine

CONFIGS = {
    "ce_all_2layers": [
        "--set", "seed=3", "--set", "model.input_size=3", "--set", "model.hidden_size=4",
        "--set", "model.num_layers=2", "--set", "model.output_size=3", "--set", "data.batch_size=3",
        "--set", "data.seq_len=6", "--set", "loss.type=cross_entropy", "--set", "loss.target=all",
    ],
    "mse_last_H1_2layers": [
        "--set", "seed=5", "--set", "model.input_size=2", "--set", "model.hidden_size=1",
        "--set", "model.num_layers=2", "--set", "data.batch_size=2", "--set", "data.seq_len=5",
        "--set", "model.init=xavier_uniform",
    ],
}  # fmt: skip


def overrides(name):
    return [a for a in CONFIGS[name] if a != "--set"]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request):
    from lstm_diag.setup.config import load_config
    from lstm_diag.setup.problem import build

    cfg = load_config(None, overrides(request.param))[0]
    result = analyze(cfg)
    problem = build(cfg)
    H = problem.spec.hidden_size
    units = [3, 0, 2] if H > 2 else [0]
    views = {
        (k, t): E.explain(result, E.select(problem, t, k, 1, units))
        for k in range(problem.spec.num_layers)
        for t in range(1, problem.x.shape[1] + 1)
    }
    return request.param, cfg, result, views


def evaluate(template: str, operands, absolute=False):
    """The substituted expression as printed, evaluated in float64 (each `a = b` part)."""
    vals = [np.abs(v) if absolute else v for _, v in operands]
    expr = re.sub(r"\{(\d+)\}", lambda m: f"v[{m.group(1)}]", template)
    expr = expr.replace("·", "*").replace("²", "**2").replace("σ", "sig").replace("tanh", "np.tanh")
    env = {"v": vals, "np": np, "sig": lambda a: 1.0 / (1.0 + np.exp(-a))}
    return [eval(part, env) for part in expr.split(" = ")]  # our own templates, not user input


def check_recombines(eq, where):
    parts = zip(evaluate(eq.subst.text, eq.operands), evaluate(eq.subst.text, eq.operands, True), strict=True)
    for part, mag in parts:
        np.testing.assert_allclose(part, eq.value, rtol=1e-10, atol=1e-12 * np.max(np.abs(mag)) + 1e-300,
                                   err_msg=f"{where}: {eq.key} {eq.subst.text}")  # fmt: skip


def test_every_substituted_expression_equals_the_value_shown(case):
    """The factors printed (unrounded) multiply/add to the engine's value: δz = δc·g·σ'(z) etc."""
    name, _, _, views = case
    n = 0
    for (k, t), ex in views.items():
        for eq in ex.step.forward + ex.step.backward + ex.step.previous:
            if eq.value is not None:
                check_recombines(eq, f"{name} layer {k} t={t}")
                n += 1
    assert n > 100


def test_gradients_shown_are_the_engines(case):
    name, _, result, views = case
    for (k, t), ex in views.items():
        u, b = ex.view.units, ex.view.sample
        g = result.bwd.layers[k]
        eq = by_key(ex.step.backward)
        np.testing.assert_array_equal(eq["dh"].value, g.dh[t - 1, b, u])
        np.testing.assert_array_equal(eq["dc"].value, g.dc[t - 1, b, u])
        H = result.problem.spec.hidden_size
        for j, q in enumerate(GATES):
            np.testing.assert_array_equal(eq[f"dz_{q}"].value, g.dz[t - 1, b, [j * H + x for x in u]])


def test_dc_prev_printed_at_step_t_is_analyzes_dc_t_minus_1(case):
    name, cfg, _, views = case
    fresh = analyze(cfg)  # an independent `analyze` run
    for (k, t), ex in views.items():
        u, b = ex.view.units, ex.view.sample
        g = fresh.bwd.layers[k]
        prev = by_key(ex.step.previous)
        want_c = g.dc[t - 2, b, u] if t > 1 else g.dc0[b, u]
        want_h = g.dh[t - 2, b, u] if t > 1 else g.dh0[b, u]
        np.testing.assert_array_equal(prev["dc_prev"].value, want_c, err_msg=f"{name} layer {k} t={t}")
        np.testing.assert_array_equal(prev["dh_prev"].value, want_h, err_msg=f"{name} layer {k} t={t}")


def test_step_shares_add_up_to_the_reported_gradient(case):
    name, _, result, views = case
    L, T = result.problem.spec.num_layers, result.problem.x.shape[1]
    for k in range(L):
        c1 = views[(k, 1)].step.contributions
        for pname, total in c1.total.items():
            summed = sum(views[(k, t)].step.contributions.batch[pname] for t in range(1, T + 1))
            scale = np.abs(result.bwd.params[pname]).max()
            np.testing.assert_allclose(
                summed, total, rtol=1e-10, atol=1e-13 * scale, err_msg=f"{name} {pname}"
            )
            rows = np.array(c1.rows)
            grad = result.bwd.params[pname]
            want = (
                grad[rows]
                if grad.ndim == 1
                else grad[np.ix_(rows, c1.x_cols if "_ih_" in pname else c1.h_cols)]
            )
            np.testing.assert_array_equal(total, want)


def test_printed_factors_multiply_to_the_printed_dz(case):
    """Read back from the terminal text: a · b · c = v holds to the 4 digits printed. The δz
    lines are the backward section's (eqs. 8-13): that section is printed for every step and
    layer, and the whole step once, whose δz lines are the section's."""
    _, _, _, views = case
    checked = 0
    last = max(views)
    def dz_lines(text):
        return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("δz")]

    assert dz_lines(render_text(views[last])) == dz_lines(backward_text(views[last]))
    for ex in views.values():
        for line in backward_text(ex).splitlines():
            line = line.rstrip()
            m = re.match(r"\s*δz\S+ = (.+) = (\S+)$", line)
            if not m:
                continue
            factors = [float(f.strip("() ")) for f in m.group(1).split("·")]
            value = float(m.group(2))
            np.testing.assert_allclose(np.prod(factors), value, rtol=2e-3, atol=1e-300, err_msg=line)
            checked += 1
    assert checked >= 4 * len(views)


# ------------------------------------------------------------------------------ CLI


def test_cli_defaults_show_the_last_step_and_two_units():
    sets = ["--set", "data.seq_len=7", "--set", "data.batch_size=2", "--set", "model.hidden_size=5"]
    r = run("explain", *sets)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "step t = 7" in out and "units 0, 1" in out
    assert "c₇[0] = " in out and "c₇[1] = " in out and "c₇[2]" not in out
    assert "δc₆[1] = " in out  # sent back to t-1
    for ref_ in ("(1)", "(6)", "(7)", "(8)", "(9)", "(10)", "(13)", "(14)", "(16)"):
        assert ref_ in out


def test_cli_json_is_the_whole_stdout():
    args = ("--set", "data.seq_len=4", "--set", "model.hidden_size=3", "--step", "2", "--units", "2")
    r = run("explain", *args, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["mode"] == "step" and doc["view"] == {"step": 2, "layer": 0, "sample": 0, "units": [2]}
    result = analyze(None, [a for a in args[:4] if a != "--set"])
    dc = {e["key"]: e for e in doc["backward"]}["dc"]["value"]
    assert dc == [result.bwd.layers[0].dc[1, 0, 2]]


def test_cli_markdown():
    r = run("explain", "--set", "data.seq_len=3", "--set", "model.hidden_size=2", "--format", "markdown")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("# lstm-diag explain") and r"\begin{aligned}" in r.stdout
    assert r"\delta c_{2}[0] &= " in r.stdout  # sent back to t-1 = 2


SMALL = ("--set", "data.seq_len=6", "--set", "data.batch_size=3", "--set", "model.hidden_size=4",
         "--set", "model.num_layers=2")  # fmt: skip


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--step", "0"), "--step: must be in 1..6"),
        (("--step", "7"), "--step: must be in 1..6"),
        (("--step", "last"), "--step: expected an integer in 1..6"),
        (("--layer", "2"), "--layer: must be in 0..1"),
        (("--layer", "-1"), "--layer: must be in 0..1"),
        (("--sample", "3"), "--sample: must be in 0..2"),
        (("--units", "0,4"), "--units: must be in 0..3"),
        (("--units", "1,x"), "--units: expected an integer in 0..3"),
        (("--units", ","), "--units: expected unit indices in 0..3"),
    ],
)
def test_bad_selection_exits_2_with_one_line(args, needle):
    r = run("explain", *SMALL, *args)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_toy_takes_no_config_options():
    r = run("explain", "--toy", "--step", "2")
    assert r.exit_code == 2
    want = "error: --toy: runs the built-in scalar LSTM and takes no --step"
    assert r.stderr.strip().splitlines() == [want]


def test_toy_table_fits_80_columns():
    text = render_text(E.toy(), width=80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "every entry agrees" in text


def test_registered_in_the_main_cli():
    r = run("explain", "--toy", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["gradcheck"]["passed"] is True


def test_explain_keeps_the_full_caches_whatever_the_memory_setting():
    r = run("explain", "--set", "diagnostics.memory=checkpoint", "--format", "json")
    assert r.exit_code == 0, r.output
