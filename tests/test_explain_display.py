"""`explain` shows no rounded identity that reads as false, and labels token inputs (--vocab).

Saturated gates: the printed factors of σ′ = y(1 - y) and tanh′ = 1 - y², read back from
the terminal and markdown text, give the printed value to its 4 digits (they cannot if y
is printed as 1). Token data: the header names the step's token from a vocabulary given
as a list or as {token: id}; every bad vocabulary exits 2 with one line naming the file.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import run

from lstm_diag.report.explain_render import fill, num, num_tex

NUMBER = r"\(?(-?[0-9.]+(?:e[-+]\d+)?)\)?"


def test_values_near_one_show_their_distance_from_one():
    y = 0.9999946282  # σ(12.13)
    assert num(y) == "0.999994628"  # 4 digits would print "1"
    assert fill("{0} · (1 - {0})", [y]) == "0.999994628 · (1 - 0.999994628)"
    assert fill("1 - {0}²", [-0.99999731]) == "1 - (-0.999997310)²"
    assert num(0.98766) == "0.9877" and num(0.98766, complement=True) == "0.98766"
    assert num(1.0) == "1" and num(0.5, True) == "0.5" and num(5.372e-06, True) == "5.372e-06"
    assert num_tex(y, True) == "0.999994628"


@pytest.fixture(scope="module")
def saturated(tmp_path_factory):
    """CLI arguments for a model with large weights: gates saturate to within 1e-5 of 0 and 1."""
    tmp = tmp_path_factory.mktemp("saturated")
    rng = np.random.default_rng(1)
    I, H = 8, 6
    w = {
        "lstm.weight_ih_l0": rng.normal(0, 2.5, (4 * H, I)),
        "lstm.weight_hh_l0": rng.normal(0, 2.5, (4 * H, H)),
        "lstm.bias_ih_l0": rng.normal(0, 1, 4 * H),
        "lstm.bias_hh_l0": np.zeros(4 * H),
        "head.weight": rng.normal(0, 0.5, (1, H)),
        "head.bias": np.zeros(1),
    }
    np.savez(tmp / "w.npz", **w)
    return ("--set", f"model.weights={tmp / 'w.npz'}", "--set", "data.seq_len=6", "--set",
            "data.batch_size=2", "--units", "0,1,2,3,4,5")  # fmt: skip


def _check_derivative_lines(lines, pattern_sig, pattern_tanh) -> tuple[int, float]:
    """Every σ′/tanh′ line: the printed factors give the printed value to 4 digits.
    Returns (lines checked, largest printed y below 1)."""
    checked, top = 0, 0.0
    for line in lines:
        m = re.search(pattern_sig, line)
        if m:
            y, y2, v = (float(m.group(k)) for k in (1, 2, 3))
            assert y == y2, line
            np.testing.assert_allclose(y * (1 - y), v, rtol=1e-3, err_msg=line)
        else:
            m = re.search(pattern_tanh, line)
            if not m:
                continue
            y, v = float(m.group(1)), float(m.group(2))
            np.testing.assert_allclose(1 - y * y, v, rtol=1e-3, err_msg=line)
        checked += 1
        if abs(y) < 1:
            top = max(top, abs(y))
    return checked, top


def test_saturated_derivatives_read_true_in_the_terminal(saturated):
    r = run("explain", *saturated)
    assert r.exit_code == 0, r.output
    assert "1 · (1 - 1)" not in r.stdout
    sig = rf"σ′\(z\S+\) = {NUMBER} · \(1 - {NUMBER}\) = {NUMBER}\s*$"
    tanh = rf"tanh′\((?:z\S+|c\S+)\) = 1 - {NUMBER}² = {NUMBER}\s*$"
    checked, top = _check_derivative_lines(r.stdout.splitlines(), sig, tanh)
    assert checked >= 6 * 5  # 6 units x (3 σ′ + 2 tanh′), at step t
    assert top > 0.99999  # some gate really is saturated: the test means something


def test_saturated_derivatives_read_true_in_markdown(saturated):
    r = run("explain", *saturated, "--format", "markdown")
    assert r.exit_code == 0, r.output
    lines = [
        re.sub(r"(\d) \\times 10\^\{(-?\d+)\}", r"\1e\2", line)  # 7.3 \times 10^{-4} -> 7.3e-4
        for line in r.stdout.splitlines()
        if r"\sigma'" in line or r"\tanh'" in line
    ]
    sig = rf"\\sigma'\(z.*&= {NUMBER} \\cdot \(1 - {NUMBER}\) = \\mathbf\{{{NUMBER}\}}"
    tanh = rf"\\tanh'\(.*&= 1 - {NUMBER}\^2 = \\mathbf\{{{NUMBER}\}}"
    checked, top = _check_derivative_lines(lines, sig, tanh)
    assert checked >= 6 * 5 and top > 0.99999


def test_gate_values_never_round_to_exactly_one(saturated):
    r = run("explain", *saturated, "--format", "json")
    doc = json.loads(r.stdout)
    gates = {e["key"]: e["value"] for e in doc["forward"] if e["key"] in ("i", "f", "o")}
    near = [v for vs in gates.values() for v in vs if 0.99995 < v < 1]
    assert near, "the config must saturate some gate"
    text = run("explain", *saturated).stdout
    for v in near:
        assert num(v) in text and num(v) != "1"


# ------------------------------------------------------------------------- --vocab


CHARS = list("ab cdefgh\n")  # 10 tokens, id k = CHARS[k]


@pytest.fixture
def token_model(tmp_path):
    rng = np.random.default_rng(0)
    V, I, H, O = len(CHARS), 3, 4, len(CHARS)
    w = {
        "embedding.weight": rng.normal(0, 1, (V, I)),
        "lstm.weight_ih_l0": rng.normal(0, 0.5, (4 * H, I)),
        "lstm.weight_hh_l0": rng.normal(0, 0.5, (4 * H, H)),
        "lstm.bias_ih_l0": rng.normal(0, 0.1, 4 * H),
        "lstm.bias_hh_l0": rng.normal(0, 0.1, 4 * H),
        "head.weight": rng.normal(0, 0.5, (O, H)),
        "head.bias": np.zeros(O),
    }
    tokens = np.array([[0, 1, 2, 3, 4, 9, 5], [6, 7, 8, 0, 1, 2, 3]])  # "ab cd\ne", "fgh abc"
    np.savez(tmp_path / "w.npz", **w)
    np.savez(tmp_path / "d.npz", tokens=tokens, y=np.roll(tokens, -1, axis=1))
    cfg = tmp_path / "m.yaml"
    cfg.write_text(
        "model: {weights: w.npz}\ndata: {task: file, path: d.npz}\nloss: {type: cross_entropy, target: all}\n"
    )
    return tmp_path, cfg


def test_token_inputs_are_labelled_with_a_list_vocabulary(token_model):
    tmp, cfg = token_model
    (tmp / "v.json").write_text(json.dumps(CHARS))
    r = run("explain", cfg, "--vocab", tmp / "v.json", "--step", "6")
    assert r.exit_code == 0, r.output
    assert "x₆ = E[9] (eq. 24): token '\\n' (id 9) of v.json" in r.stdout
    assert "ab cd[\\n]e" in r.stdout  # the sample's characters, step 6 in brackets
    doc = json.loads(run("explain", cfg, "--vocab", tmp / "v.json", "--step", "6", "--format", "json").stdout)
    assert doc["schema_version"] == 2
    inp = doc["inputs"]
    assert inp["id"] == 9 and inp["token"] == "\n" and inp["context_tokens"] == list("ab cd\ne")


def test_a_dict_vocabulary_labels_the_same(token_model):
    tmp, cfg = token_model
    (tmp / "v.json").write_text(json.dumps({c: k for k, c in enumerate(CHARS)}))
    r = run("explain", cfg, "--vocab", tmp / "v.json", "--step", "3", "--sample", "1", "--format", "markdown")
    assert r.exit_code == 0, r.output
    assert "token 'h' (id 8)" in r.stdout


def test_token_ids_are_shown_without_a_vocabulary(token_model):
    _, cfg = token_model
    r = run("explain", cfg, "--step", "2")
    assert r.exit_code == 0, r.output
    assert "x₂ = E[1] (eq. 24): token id 1 (no --vocab: ids)" in r.stdout


@pytest.mark.parametrize(
    "content, needle",
    [
        ("not json", "not JSON"),
        ("[]", "an empty list"),
        ('["a", 3]', "entry 1 is 3, not a string"),
        ('{"a": 0, "b": 0}', "both have id 0"),
        ('{"a": -1}', "ids are integers ≥ 0"),
        ('{"a": "0"}', "ids are integers ≥ 0"),
        ('"abc"', "a JSON str"),
        (json.dumps(CHARS[:9]), "9 tokens (ids 0..8), but the data"),  # the data holds id 9
        (json.dumps({c: k for k, c in enumerate(CHARS) if k != 5}), "no token for id 5"),
    ],
)
def test_bad_vocabularies_exit_2_naming_the_file(token_model, content, needle):
    tmp, cfg = token_model
    (tmp / "v.json").write_text(content)
    r = run("explain", cfg, "--vocab", tmp / "v.json")
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "v.json" in lines[0], r.stderr
    assert r.stdout == ""


def test_a_vocabulary_for_float_inputs_is_refused(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps(CHARS))
    r = run("explain", "--vocab", tmp_path / "v.json")
    assert r.exit_code == 2 and "--vocab: the data holds float inputs" in r.stderr


def test_a_missing_vocabulary_file_exits_2(tmp_path):
    r = run("explain", "--vocab", tmp_path / "nope.json")
    assert r.exit_code == 2 and "nope.json" in r.stderr.strip().splitlines()[0]


def test_toy_takes_no_vocab(tmp_path):
    r = run("explain", "--toy", "--vocab", tmp_path / "v.json")
    assert r.exit_code == 2 and "takes no --vocab" in r.stderr


def test_unprintable_tokens_are_escaped(token_model):
    tmp, cfg = token_model
    words = ["\x1b[31mred", *CHARS[1:]]
    (tmp / "v.json").write_text(json.dumps(words))
    r = run("explain", cfg, "--vocab", tmp / "v.json", "--step", "1")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and "\\x1b[31mred" in r.stdout
