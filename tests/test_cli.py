"""The CLI as users run it: stdout holds only the document, exit codes mean something."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run

from lstm_diag import __version__, analyze

FIXTURES = Path(__file__).parent / "fixtures"
SETS = [x for o in TINY for x in ("--set", o)]


def test_analyze_json_is_the_whole_stdout_and_matches_the_api():
    r = run("analyze", "--format", "json", "--set", "data.seq_len=30")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 5 and doc["command"] == "analyze"
    assert len(doc["layers"][0]["grad_c_norm"]) == 30 and len(doc["layers"][0]["grad_h_norm"]) == 30
    assert set(doc["parameters"]) == {
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
        "head.weight",
        "head.bias",
    }
    assert doc["parameters"]["weight_hh_l0"]["shape"] == [128, 32]
    api = analyze({"data": {"seq_len": 30}}).to_dict()
    assert doc["loss"] == api["loss"]
    assert doc["layers"][0]["grad_c_norm"] == api["layers"][0]["grad_c_norm"]
    assert doc["config"]["data"]["seq_len"] == 30


def test_same_config_same_numbers():
    a = json.loads(run("analyze", "--format", "json").stdout)
    b = json.loads(run("analyze", "--format", "json").stdout)
    assert a == b
    c = json.loads(run("analyze", "--format", "json", "--set", "seed=1").stdout)
    assert c["loss"] != a["loss"]


def test_table_output_names_loss_and_norms():
    r = run("analyze", "--set", "data.seq_len=20")
    assert r.exit_code == 0
    for needle in ("mse", "dL/dc_t", "dL/dh_t", "weight_hh_l0", "Frobenius"):
        assert needle in r.stdout


def test_bad_input_exits_2_with_one_line(tmp_path):
    r = run("analyze", "--set", "model.hidden_size=0")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: model.hidden_size: must be a positive integer, got 0"
    assert r.stdout == ""
    r = run("analyze", tmp_path / "missing.yaml")
    assert r.exit_code == 2 and "missing.yaml: no such config file" in r.stderr


def test_save_weights_round_trip(tmp_path):
    out = tmp_path / "w" / "init.npz"
    r = run("analyze", "--format", "json", "--save-weights", out, "--set", "model.num_layers=2")
    assert r.exit_code == 0
    with np.load(out) as z:
        names = sorted(z.files)
    assert "lstm.weight_ih_l1" in names and "head.weight" in names
    again = run("analyze", "--format", "json", "--set", "model.num_layers=2", "--set", f"model.weights={out}")
    assert json.loads(again.stdout)["loss"] == json.loads(r.stdout)["loss"]


def test_a_size_that_disagrees_with_the_weights_names_both_values(tmp_path):
    cfg = FIXTURES / "l1_T1_mse_last" / "config.yaml"
    r = run("analyze", cfg, "--set", "model.hidden_size=5")
    assert r.exit_code == 2
    assert r.stderr == (
        "error: model.hidden_size: the config says 5, but the weights in weights.npz have 4 "
        "(nn.LSTM(3, 4)); remove model.hidden_size or fix it\n"
    )


def test_gradcheck_passes_on_the_default_and_fails_on_a_wrong_gradient(monkeypatch):
    r = run("gradcheck", "--format", "json", "--samples", "6", "--set", "data.seq_len=20")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["passed"] and doc["tolerance"] == 1e-6
    assert {t["name"] for t in doc["tensors"]} >= {"weight_hh_l0", "x"}
    assert max(t["max_rel_error"] for t in doc["tensors"]) < 1e-6

    import lstm_diag.core.engine as engine

    real = engine.backward

    def broken(*a, **k):
        b = real(*a, **k)
        b.params["weight_hh_l0"] = b.params["weight_hh_l0"] * 1.001
        return b

    monkeypatch.setattr(engine, "backward", broken)
    r = run("gradcheck", "--samples", "4", "--set", "data.seq_len=10")
    assert r.exit_code == 1
    assert "FAIL" in r.stdout and "weight_hh_l0" in r.stdout


def test_gradcheck_float32_widens_the_tolerance_with_a_warning():
    r = run("gradcheck", "--samples", "4", "--set", "dtype=float32", "--set", "data.seq_len=10")
    assert r.exit_code == 0, r.output
    assert "tolerance widened to 0.001" in r.stderr


def test_version_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "lstm_diag", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


@pytest.mark.parametrize("cmd", ["analyze", "gradcheck"])
def test_help_teaches_with_an_example(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0 and f"lstm-diag {cmd}" in r.stdout and "--set" in r.stdout


def test_fail_on_gates_exit_codes():
    vanishing = Path(__file__).resolve().parents[1] / "configs" / "vanishing.yaml"
    r = run("analyze", vanishing, "--fail-on", "LD101", "--format", "json")
    assert r.exit_code == 1 and json.loads(r.stdout)["verdict"] == "vanishing"
    assert "LD101" in r.stderr
    assert run("analyze", vanishing, "--fail-on", "LD102").exit_code == 0
    assert run("analyze", vanishing, "--fail-on", "error").exit_code == 1
    bad = run("analyze", "--fail-on", "LD999")
    assert bad.exit_code == 2 and "LD999" in bad.stderr


def test_markdown_report_has_the_sections():
    r = run("analyze", "--format", "markdown", "--set", "data.seq_len=40")
    assert r.exit_code == 0
    for needle in (
        "## lstm-diag analyze",
        "### Layer 0: vanishing",
        "| forget (f) |",
        "### Clipping snapshot",
        "### Findings",
        "**LD101**",
        "*Remedy:*",
    ):
        assert needle in r.stdout


def test_table_fits_80_columns_without_colour():
    exploding = Path(__file__).resolve().parents[1] / "configs" / "exploding.yaml"
    r = run("analyze", exploding, env={"COLUMNS": "80"})
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "\x1b[" not in r.stdout  # no escape codes
    assert "EXPLODING" in r.stdout and "LD102" in r.stdout


def test_codes_lists_every_code():
    from lstm_diag.features.codes import CODES

    r = run("codes", "--format", "json")
    assert [c["code"] for c in json.loads(r.stdout)["codes"]] == list(CODES)
    assert "LD101" in run("codes").stdout
    assert "LD2" not in run("codes", "LD1", "--format", "json").stdout


# ------------------------------------------------------------------- exit codes 2, 3, 130


def _raise(exc):
    def boom(*args, **kwargs):
        raise exc

    return boom


# Where each command's work starts: an exception injected there reaches the command's error
# handling as a bug, an out-of-memory or a Ctrl-C in the middle of the work would.
WORK = {
    "analyze": ("lstm_diag.features.analysis", "analyze_problem", []),
    "compare": ("lstm_diag.features.compare", "execute", ["--init", "pytorch", "--seeds", "1"]),
    "train": ("lstm_diag.features.train", "train", ["--steps", "2", "--clip", "none"]),
}


def _inject(monkeypatch, command, exc):
    module, name, args = WORK[command]
    monkeypatch.setattr(f"{module}.{name}", _raise(exc))
    return [command, *args, *SETS, "--format", "json"]


def _lines(r, command):
    """stderr's lines, every one of them (no blank line from a progress bar stopped early)."""
    return r.stderr.splitlines()


@pytest.mark.parametrize("command", list(WORK))
def test_an_internal_error_exits_3_with_one_line_and_the_traceback_with_debug(monkeypatch, command):
    args = _inject(monkeypatch, command, RuntimeError("injected bug"))
    r = run(*args)
    assert r.exit_code == 3 and r.stdout == ""
    assert _lines(r, command) == [
        "internal error: RuntimeError: injected bug (rerun with --debug for the traceback)"
    ]
    r = run(*args, "--debug")
    assert r.exit_code == 3 and r.stdout == ""
    assert "\n".join(_lines(r, command)).startswith("Traceback (most recent call last):")
    assert "in boom" in r.stderr  # the injected frame
    assert r.stderr.rstrip().endswith("RuntimeError: injected bug")


@pytest.mark.parametrize("command", list(WORK))
def test_out_of_memory_exits_2_with_one_line(monkeypatch, command):
    r = run(*_inject(monkeypatch, command, MemoryError()))
    assert r.exit_code == 2 and r.stdout == ""
    assert _lines(r, command) == [
        "error: out of memory: reduce data.batch_size, data.seq_len or model.hidden_size"
    ]


@pytest.mark.parametrize("command", list(WORK))
def test_ctrl_c_exits_130_with_one_line(monkeypatch, command):
    """In-process: the KeyboardInterrupt path of every command; a real SIGINT to a real process
    (workers included) is in test_bad_input.py and test_train.py."""
    r = run(*_inject(monkeypatch, command, KeyboardInterrupt()))
    assert r.exit_code == 130 and r.stdout == "" and r.stderr == "interrupted\n"

