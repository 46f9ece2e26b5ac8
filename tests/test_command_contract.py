"""One contract for every command (issue 14): each JSON document on stdout starts with its
schema_version and command, written paths go to stderr, --fail-on means the same everywhere.
plot and report (--output, paths on stderr): in test_plots.py, with the figures they draw."""

import json
from pathlib import Path

import pytest
from conftest import run

FIXTURES = Path(__file__).parent / "fixtures_torchfile"
TRACK_CFG = Path(__file__).parent / "fixtures_track" / "track.yaml"
TRACK = [TRACK_CFG.parent / "step_010.pt", TRACK_CFG.parent / "ckpt_b.pt"]


def json_commands(tiny_config, tmp_path):
    return {
        "analyze": ["analyze", tiny_config, "--no-dynamics"],
        "gradcheck": ["gradcheck", tiny_config, "--samples", "2"],
        "explain": ["explain", tiny_config],
        "train": ["train", tiny_config, "--steps", "2", "--clip", "none"],
        "compare": ["compare", tiny_config, "--init", "pytorch", "--seeds", "1"],
        "codes": ["codes", "LD1"],
        "inspect": ["inspect", FIXTURES / "lm_state_dict.pt"],
        "convert": ["convert", FIXTURES / "lm_state_dict.pt", "--to", tmp_path / "out.npz"],
        "track": ["track", *TRACK, "--config", TRACK_CFG, "--no-dynamics"],
        "diff": ["diff", *TRACK, "--config", TRACK_CFG, "--no-dynamics"],
    }


@pytest.mark.parametrize(
    "command",
    ["analyze", "gradcheck", "explain", "train", "compare", "codes", "inspect", "convert", "track", "diff"],
)
def test_every_json_document_names_its_command_and_schema(command, tiny_config, tmp_path):
    args = json_commands(tiny_config, tmp_path)[command]
    r = run(*args, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # stdout holds the document alone
    assert list(doc)[:2] == ["schema_version", "command"]
    assert doc["command"] == command and isinstance(doc["schema_version"], int) and doc["schema_version"] >= 1


def test_short_o_is_output_on_every_command():
    """-o is --output wherever a command has it (a FILE or a folder, as the command needs);
    `track -o` was once short for --plots alone."""
    from lstm_diag.cli import main

    with_o = {}
    for name, command in main.commands.items():
        for param in command.params:
            if "-o" in param.opts:
                with_o[name] = param.opts
    assert set(with_o) == {"analyze", "plot", "report", "track"}, with_o
    assert all("--output" in opts for opts in with_o.values()), with_o


def test_train_fail_on_exits_1_after_its_output(tiny_config):
    # a max_norm far below the gradient's norm clips every step: finding LD301 for that setting
    args = ["train", tiny_config, "--steps", "3", "--clip", "norm:1e-6", "--format", "json"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    found = json.loads(r.stdout)["findings"]
    assert [f["code"] for f in found] == ["LD301"] and found[0]["setting"] == "norm:1e-06"
    r = run(*args, "--fail-on", "LD3")
    assert r.exit_code == 1 and json.loads(r.stdout)["findings"] == found, r.output  # output complete
    assert r.stderr.strip().endswith("--fail-on: found LD301")
    r = run(*args, "--fail-on", "LD1,error")
    assert r.exit_code == 0, r.output


def test_compare_fail_on_reads_every_runs_findings(tiny_config):
    args = ["compare", tiny_config, "--init", "pytorch", "--seeds", "2", "--format", "json"]
    args += ["--set", "data.seq_len=60", "--set", "diagnostics.dynamics=false"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    runs = json.loads(r.stdout)["runs"]
    codes = sorted({f["code"] for run_ in runs for f in run_["findings"]})
    assert "LD101" in codes  # PyTorch's init over 60 steps: the gradient vanishes
    r = run(*args, "--fail-on", "LD101")
    assert r.exit_code == 1 and json.loads(r.stdout)["runs"] == runs, r.output
    assert r.stderr.strip().endswith("--fail-on: found LD101")
    r = run(*args, "--fail-on", "LD3")
    assert r.exit_code == 0, r.output
