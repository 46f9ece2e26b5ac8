"""`track` and `diff` (issue 17, items 1-2) on checkpoints of a model trained for real in PyTorch.

tests/fixtures_track/ (tests/make_track_fixtures.py): an embedding + 2-layer LSTM + linear
character model saved at steps 10 (plain state dict, step in the name), 60 (checkpoint
dict with "step") and 150 (safetensors, metadata step), one batch of data, and PyTorch's
own loss of each checkpoint on that batch (references.json).
"""

import json
import shutil
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from lstm_diag.errors import InputError
from lstm_diag.setup.checkpoints import find_checkpoints, step_from_name

FIX = Path(__file__).parent / "fixtures_track"
CKPTS = [FIX / "step_010.pt", FIX / "ckpt_b.pt", FIX / "final.safetensors"]
CONFIG = FIX / "track.yaml"
REFS = json.loads((FIX / "references.json").read_text())
# final.safetensors is read with the safetensors extra; without it these tests skip (the .pt
# checkpoints are read without torch, so the others run on a bare install).
needs_safetensors = pytest.mark.skipif(
    find_spec("safetensors") is None, reason="the safetensors extra is not installed"
)


def _json(*args):
    r = run(*args, "--format", "json")
    assert r.exit_code == 0, r.output
    return r.stdout, json.loads(r.stdout)


@pytest.fixture(scope="module")
def tracked():
    """track over the three checkpoints, given in reverse order, with dynamics (λ₁)."""
    return _json("track", *reversed(CKPTS), "--config", CONFIG)


@needs_safetensors
def test_steps_from_metadata_then_name_sorted(tracked):
    _, doc = tracked
    cps = doc["checkpoints"]
    assert [c["step"] for c in cps] == [10, 60, 150]
    assert [c["step_source"] for c in cps] == ["file name", "meta:step", "meta:step"]
    assert [Path(c["path"]).name for c in cps] == [p.name for p in CKPTS]
    assert doc["schema_version"] == 1 and doc["command"] == "track"


@needs_safetensors
def test_track_equals_separate_analyze_runs_and_pytorch(tracked):
    """Per checkpoint: loss, horizons, decay, λ₁, verdict exactly as `analyze --set
    model.weights=CKPT`; the loss as PyTorch's F.cross_entropy on the batch (1e-12)."""
    _, doc = tracked
    for cp in doc["checkpoints"]:
        name = Path(cp["path"]).name
        _, a = _json("analyze", CONFIG, "--set", f"model.weights={cp['path']}")
        assert cp["loss"] == a["loss"]
        np.testing.assert_allclose(cp["loss"], REFS[name]["loss"], rtol=1e-12)
        assert cp["step"] == REFS[name]["step"]
        for u, layer in zip(cp["units"], a["layers"], strict=True):
            assert u["horizon"] == layer["flow"]["horizon"]
            assert u["decay_rate"] == layer["flow"]["decay_rate"]
            assert u["forget_retention"] == layer["flow"]["forget_retention"]
            assert u["lambda1"] == layer["dynamics"]["lyapunov"][0]
            assert u["verdict"] == layer["verdict"]
            assert u["grad_c_norm"] == layer["grad_c_norm"]
            stuck = sum(g["stuck_units"] for g in layer["gates"].values())
            assert u["stuck_units"] == stuck
        assert cp["findings"] == a["findings"]


@needs_safetensors
def test_change_and_regressions_first_to_latest(tracked):
    """Layer 0's horizon 27 -> 23 (below 0.9 x 27): LD501; stuck units grew: LD504."""
    _, doc = tracked
    ch = doc["change"]
    first, last = doc["checkpoints"][0], doc["checkpoints"][-1]
    assert ch["loss"]["change"] == last["loss"] - first["loss"] < 0
    u0 = ch["units"][0]
    assert (u0["horizon"]["a"], u0["horizon"]["b"]) == (
        first["units"][0]["horizon"],
        last["units"][0]["horizon"],
    )
    codes = {(f["code"], f["layer"]) for f in ch["regressions"]}
    assert ("LD501", 0) in codes and ("LD501", 1) not in codes  # layer 1: 14 -> 13, within 10%
    assert ("LD504", 0) in codes
    appeared = {f["code"] for f in ch["findings_appeared"]}
    assert "LD201" in appeared  # saturated gates at step 150, not at step 10
    assert doc["findings"] == ch["regressions"] + ch["findings_appeared"]


@needs_safetensors
def test_fail_on_compares_latest_with_first():
    args = ("track", *CKPTS, "--config", CONFIG, "--no-dynamics")
    assert run(*args, "--fail-on", "LD501").exit_code == 1
    assert run(*args, "--fail-on", "LD502,LD503").exit_code == 0  # verdicts and loss did not get worse
    r = run(*args, "--fail-on", "LD101")  # vanishing at step 10 already: not new
    assert r.exit_code == 0, r.output
    assert run(*args, "--fail-on", "LD2").exit_code == 1  # LD201 appeared


@needs_safetensors
def test_jobs_give_identical_json():
    args = ("track", *CKPTS, "--config", CONFIG, "--no-dynamics", "--format", "json")
    one, two = run(*args, "--jobs", "1"), run(*args, "--jobs", "2")
    assert one.exit_code == two.exit_code == 0, two.output
    assert one.stdout == two.stdout


def test_table_markdown_and_figures(tmp_path, monkeypatch):
    from lstm_diag.report.figures import style

    monkeypatch.setattr(style, "DPI", 30)  # track has no --dpi: the figures are checked as files
    r = run("track", *CKPTS[:2], "--config", CONFIG, "--no-dynamics", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    assert "layer 1" in r.stdout and "2.388" in r.stdout and "LD5xx" in r.stdout
    assert "from the number in the file name" in r.stderr and "from `step` in the checkpoint" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gate_saturation.png",
        "grad_c_overlay.png",
        "trajectory.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in tmp_path.iterdir())
    md = run("track", *CKPTS[:2], "--config", CONFIG, "--no-dynamics", "--format", "markdown").stdout
    assert md.startswith("## lstm-diag track") and "| step | loss |" in md


@needs_safetensors
def test_folder_skips_files_without_an_lstm_and_globs(tmp_path):
    for p in [*CKPTS, FIX / "data.npz"]:
        shutil.copy(p, tmp_path / p.name)
    found = find_checkpoints([str(tmp_path)])
    assert [c.step for c in found.checkpoints] == [10, 60, 150]
    assert any("skipped" in n and "data.npz" in n for n in found.notes)
    assert [c.path.name for c in find_checkpoints([str(tmp_path / "*.pt")]).checkpoints] == [
        "step_010.pt",
        "ckpt_b.pt",
    ]
    with pytest.raises(InputError, match="no file matches"):
        find_checkpoints([str(tmp_path / "*.ckpt")])


@needs_safetensors
def test_order_given_when_a_file_has_no_step(tmp_path):
    a, b = tmp_path / "first.pt", tmp_path / "second.safetensors"
    shutil.copy(CKPTS[0], a)
    shutil.copy(CKPTS[2], b)  # has metadata step 150, but `first.pt` has no step at all
    found = find_checkpoints([str(b), str(a)])
    assert [(c.path.name, c.step, c.source) for c in found.checkpoints] == [
        ("second.safetensors", 0, "order given"),
        ("first.pt", 1, "order given"),
    ]
    assert "position in the order given" in found.notes[0]


def test_npz_scalar_step_and_names():
    assert step_from_name(Path("run3-step00120.pt")) == 120
    assert step_from_name(Path("final.pt")) is None
    assert step_from_name(Path("epoch_7.ckpt.pt")) == 7


def test_npz_step_array(tmp_path):
    from lstm_diag.formats.sniff import read_arrays

    arrays = dict(np.load(FIX.parent / "fixtures_torchfile" / "lm_state_dict.reference.npz"))
    np.savez(tmp_path / "w.npz", step=np.int64(42), **arrays)
    found = find_checkpoints([str(tmp_path / "w.npz")])
    assert (found.checkpoints[0].step, found.checkpoints[0].source) == (42, "meta:step")
    assert "step" in read_arrays(tmp_path / "w.npz").info


@needs_safetensors
def test_diff_documents_equal_diff_checkpoints(tmp_path):
    """diff of two saved analyze documents = diff of the two checkpoints analysed on the config."""
    docs = []
    for k, ck in enumerate((CKPTS[0], CKPTS[2])):
        r = run("analyze", CONFIG, "--set", f"model.weights={ck}", "--no-dynamics", "--format", "json")
        docs.append(tmp_path / f"{k}.json")
        docs[-1].write_text(r.stdout)
    _, from_docs = _json("diff", *docs)
    _, from_ckpts = _json("diff", CKPTS[0], CKPTS[2], "--config", CONFIG, "--no-dynamics")
    assert from_docs["change"] == from_ckpts["change"]
    assert from_docs["command"] == "diff" and from_docs["a"]["kind"] == "analyze document"
    assert from_ckpts["b"]["kind"] == "checkpoint"
    h = from_docs["change"]["units"][0]["horizon"]
    assert h["change"] == h["b"] - h["a"] == -4
    r = run("diff", *docs, "--fail-on", "LD501")
    assert r.exit_code == 1 and "LD501" in r.stderr
    backwards = ("diff", docs[1], docs[0], "--fail-on")
    assert run(*backwards, "LD501,LD504").exit_code == 0  # horizons longer, fewer stuck units
    assert run(*backwards, "LD503").exit_code == 1  # but the loss rose 0.287 -> 2.39
    md = run("diff", *docs, "--format", "markdown").stdout
    assert "| horizon (steps) | 27 | 23 | -4 |" in md


def test_bad_inputs_exit_2(tmp_path):
    r = run("track", tmp_path / "missing.pt", "--config", CONFIG)
    assert r.exit_code == 2 and "missing.pt" in r.stderr
    (tmp_path / "other.json").write_text('{"schema_version": 1, "command": "train"}')
    r = run("diff", tmp_path / "other.json", CKPTS[0])
    assert r.exit_code == 2 and "train document" in r.stderr


@needs_safetensors
def test_pytorch_reference_losses_reproduce():
    """The stored references are PyTorch's loss of each checkpoint (regenerate: make_track_fixtures.py)."""
    torch = pytest.importorskip("torch", reason="PyTorch checks the stored reference losses")
    from safetensors.torch import load_file

    data = np.load(FIX / "data.npz")
    for name, ref in REFS.items():
        sd = load_file(FIX / name) if name.endswith(".safetensors") else torch.load(FIX / name)
        sd = sd.get("model", sd)
        e = torch.nn.functional.embedding(torch.from_numpy(data["tokens"]), sd["embedding.weight"])
        lstm = torch.nn.LSTM(e.shape[-1], sd["lstm.weight_hh_l0"].shape[1], 2, batch_first=True).double()
        lstm.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("lstm.")})
        logits = torch.nn.functional.linear(lstm(e)[0], sd["head.weight"], sd["head.bias"])
        y = torch.from_numpy(data["y"]).reshape(-1)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y)
        np.testing.assert_allclose(float(loss.detach()), ref["loss"], rtol=1e-12)


def test_train_snapshots_equal_track_of_saved_weights(tiny_config, tmp_path, figures_not_drawn):
    """train --snapshot-every (issue 17, item 3): the snapshot at the last step equals `track` of
    the weights saved then; step 0 equals `analyze` of the config; records in the metrics stream."""
    args = ["train", tiny_config, "--steps", "3", "--clip", "none", "--snapshot-every", "2"]
    args += [
        "--save-weights",
        tmp_path / "w.npz",
        "--metrics",
        tmp_path / "m.jsonl",
        "--plots",
        tmp_path / "f",
    ]
    _, doc = _json(*args, "--set", "diagnostics.dynamics=false")
    assert doc["schema_version"] == 2
    (snaps,) = doc["snapshots"]
    points = snaps["points"]
    assert snaps["setting"] == "none" and [p["step"] for p in points] == [0, 2, 3]
    _, tracked = _json("track", tmp_path / "w.none.npz", "--config", tiny_config, "--no-dynamics")
    for key in ("loss", "verdict", "units", "findings"):
        assert points[-1][key] == tracked["checkpoints"][0][key], key
    _, analysed = _json("analyze", tiny_config, "--no-dynamics")
    assert points[0]["loss"] == analysed["loss"]
    assert points[0]["units"][0]["horizon"] == analysed["layers"][0]["flow"]["horizon"]
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    snap_lines = [rec for rec in lines if rec.get("record") == "snapshot"]
    assert [rec["step"] for rec in snap_lines] == [0, 2, 3]
    assert snap_lines[-1]["horizon_l0"] == points[-1]["units"][0]["horizon"]
    assert snap_lines[-1]["loss"] == points[-1]["loss"]
    assert (tmp_path / "f" / "snapshots_none_trajectory.png").is_file()
    assert (tmp_path / "f" / "snapshots_none_grad_c_overlay.png").is_file()


def test_train_snapshot_csv_has_a_record_column(tiny_config, tmp_path):
    import csv

    args = ["train", tiny_config, "--steps", "2", "--clip", "none", "--snapshot-every", "1"]
    r = run(*args, "--metrics", tmp_path / "m.csv", "--set", "diagnostics.dynamics=false")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [(row["record"], row["step"]) for row in rows] == [
        ("snapshot", "0"),
        ("", "1"),
        ("snapshot", "1"),
        ("", "2"),
        ("snapshot", "2"),
    ]
    assert rows[0]["stuck_units_l0"] != "" and rows[1]["grad_norm"] != "" and rows[0]["grad_norm"] == ""


@needs_safetensors
def test_step_from_a_0d_tensor_and_lightning_keys(tmp_path):
    """Lightning saves `global_step` and `epoch`; some loops save the step as a 0-d tensor."""
    torch = pytest.importorskip("torch", reason="writes torch.save checkpoints")
    from safetensors.torch import load_file

    sd = load_file(FIX / "final.safetensors")
    torch.save({"model": sd, "step": torch.tensor(7)}, tmp_path / "a.pt")
    torch.save({"state_dict": sd, "global_step": 900, "epoch": 3}, tmp_path / "epoch=3-step=900.ckpt")
    found = find_checkpoints([str(tmp_path / "a.pt"), str(tmp_path / "epoch=3-step=900.ckpt")])
    assert [(c.step, c.source) for c in found.checkpoints] == [(7, "meta:step"), (900, "meta:global_step")]
    assert "different metadata" in found.notes[0]
