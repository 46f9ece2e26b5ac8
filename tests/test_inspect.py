"""`lstm-diag inspect FILE`: every array, the model found, what is unused and why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from conftest import run

FIX = Path(__file__).parent / "fixtures_torchfile"


def test_json_document_of_a_checkpoint():
    r = run("inspect", FIX / "checkpoint.pt", "--format", "json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1 and doc["command"] == "inspect" and doc["format"] == "torch"
    assert len(doc["arrays"]) == 44 and doc["note"] is None and doc["problem"] is None
    lstm = doc["model"]["lstm"]
    assert lstm["prefix"] == "model.encoder.rnn." and lstm["description"] == "nn.LSTM(5, 6, num_layers=2)"
    assert (lstm["input_size"], lstm["hidden_size"], lstm["num_layers"]) == (5, 6, 2)
    assert (lstm["proj_size"], lstm["bidirectional"], lstm["bias"]) == (0, False, True)
    assert (
        doc["model"]["head"]["weight"] == "model.decoder.weight"
        and doc["model"]["head"]["out_features"] == 11
    )
    assert doc["model"]["embedding"]["num_embeddings"] == 11 and doc["model"]["state_dict"] == "model"
    assert doc["unused"] == [{"names": "optimizer.*", "count": 33, "reason": "optimizer state, ignored"}]
    assert doc["meta"]["epoch"] == 7 and doc["meta"]["global_step"] == 1234
    roles = {a["name"]: a["role"] for a in doc["arrays"]}
    assert roles["model.encoder.rnn.weight_hh_l1"] == "lstm weight_hh_l1"
    assert roles["optimizer.state.3.exp_avg"] == "unused: optimizer state, ignored"
    assert {"name": "model.embed.weight", "shape": [11, 5], "dtype": "float32", "role": "embedding"} in doc[
        "arrays"
    ]


def test_table_and_markdown_say_the_same():
    r = run("inspect", FIX / "checkpoint.pt")
    assert r.exit_code == 0
    for needle in (
        "nn.LSTM(5, 6, num_layers=2) at model.encoder.rnn",
        "model.decoder: nn.Linear(6, 11)",
        "optimizer.* (33 arrays): optimizer state, ignored",
        "epoch=7",
        "44 arrays",
    ):
        assert needle in r.stdout, needle
    r = run("inspect", FIX / "checkpoint.pt", "--format", "markdown")
    assert "| model.encoder.rnn.weight\\_ih\\_l0 | (24, 5) | float32 | lstm weight\\_ih\\_l0 |" in r.stdout


def test_layouts_extension_mismatch_and_problems(tmp_path):
    doc = json.loads(run("inspect", FIX / "bidir_proj_nobias.pt", "--format", "json").stdout)
    lstm = doc["model"]["lstm"]
    assert (lstm["proj_size"], lstm["bidirectional"], lstm["bias"], lstm["output_width"]) == (
        3,
        True,
        False,
        6,
    )
    shutil.copy(FIX / "lm_state_dict.pt", tmp_path / "model.npz")
    doc = json.loads(run("inspect", tmp_path / "model.npz", "--format", "json").stdout)
    assert doc["format"] == "torch" and doc["note"].startswith("model.npz is a PyTorch torch.save file")
    r = run("inspect", FIX / "gru.pt", "--format", "json")
    assert r.exit_code == 0 and "this is a GRU (3 gate blocks)" in json.loads(r.stdout)["problem"]
    r = run("inspect", FIX / "two_state_dicts.pt")
    assert "holds 2 LSTMs" in r.stdout and "--weights-key SECTION" in r.stdout
    doc = json.loads(
        run("inspect", FIX / "two_state_dicts.pt", "--weights-key", "ema", "--format", "json").stdout
    )
    assert doc["model"]["lstm"]["prefix"] == "ema.encoder.rnn."
    doc = json.loads(run("inspect", FIX / "mlp_head.pt", "--format", "json").stdout)
    assert [x["name"] for x in doc["model"]["mlp_head"]] == ["fc1", "fc2"] and doc["model"]["head"] is None


def test_unreadable_files_exit_2(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  hidden_size: 3\n")
    for path, needle in [
        (tmp_path / "c.yaml", "a text file"),
        (FIX / "malicious_system.pt", "refused global 'posix.system'"),
        (tmp_path / "missing.pt", "no such weights file"),
    ]:
        r = run("inspect", path, "--format", "json")
        assert r.exit_code == 2 and r.stdout == "" and needle in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1


def test_names_from_the_file_are_shown_inert(tmp_path):
    hostile = "lstm.\x1b]0;owned\x07<script>|## x_[y](z)"
    arrays = {f"lstm.{k}": np.zeros(s) for k, s in [("weight_ih_l0", (8, 1)), ("weight_hh_l0", (8, 2))]}
    arrays[hostile] = np.zeros(3)
    np.savez(tmp_path / "w.npz", **arrays)
    table = run("inspect", tmp_path / "w.npz").stdout
    assert "\x1b" not in table and "\x07" not in table and "\\x1b]0;owned\\x07" in table
    markdown = run("inspect", tmp_path / "w.npz", "--format", "markdown").stdout
    assert "<script>" not in markdown and "&lt;script&gt;\\|\\#\\# x\\_\\[y\\](z)" in markdown
    doc = json.loads(run("inspect", tmp_path / "w.npz", "--format", "json").stdout)
    assert hostile in {a["name"] for a in doc["arrays"]}  # JSON keeps the exact name, escaped by JSON


def test_a_long_name_is_cut_in_displays_and_whole_in_json(tmp_path):
    long = "lstm.extra_" + "x" * 5000
    arrays = {f"lstm.{k}": np.zeros(s) for k, s in [("weight_ih_l0", (8, 1)), ("weight_hh_l0", (8, 2))]}
    arrays[long] = np.zeros(3)
    np.savez(tmp_path / "w.npz", **arrays)
    for fmt in ("table", "markdown"):
        out = run("inspect", tmp_path / "w.npz", "--format", fmt).stdout
        assert "x" * 5000 not in out and "(5011 characters)" in out, fmt
    doc = json.loads(run("inspect", tmp_path / "w.npz", "--format", "json").stdout)
    assert long in {a["name"] for a in doc["arrays"]}
