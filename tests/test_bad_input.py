"""Bad input gets one clear line and exit 2; outputs are written atomically; loading is safe."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from lstm_diag.core.engine import Spec
from lstm_diag.errors import InputError
from lstm_diag.formats.npz import read_npz
from lstm_diag.setup.config import load_config
from lstm_diag.setup.datafile import load_data as _load_data
from lstm_diag.setup.outputs import atomic_write_text, save_weights


def load_data(path, spec, loss, target, dtype):
    """(x, y) of a data file read for a model `spec` with this loss and target."""
    m = dict(input_size=spec.input_size, hidden_size=spec.hidden_size, num_layers=spec.num_layers)
    m["output_size"] = spec.output_size
    data = {"task": "file", "path": str(path)}
    cfg = load_config({"dtype": dtype, "model": m, "data": data, "loss": {"type": loss, "target": target}})[0]
    ds = _load_data(cfg, spec)
    return ds.x, ds.y


FIXTURES = Path(__file__).parent / "fixtures"
CASE = FIXTURES / "l1_T1_mse_last"


def one_error_line(r, *needles):
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_syntax_error(tmp_path):
    p = write(tmp_path, "c.yaml", "model:\n  hidden_size: 4\n   input_size: 3\n")
    one_error_line(run("analyze", p), "c.yaml:3:", "invalid YAML")


def test_unknown_key_did_you_mean(tmp_path):
    p = write(tmp_path, "c.yaml", "data:\n  seqlen: 10\n")
    one_error_line(run("analyze", p), "data.seqlen: unknown key (did you mean 'seq_len'?)")


def test_yaml_never_executes_code(tmp_path):
    p = write(tmp_path, "c.yaml", "seed: !!python/object/apply:os.system ['touch pwned']\n")
    one_error_line(run("analyze", p), "c.yaml")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_missing_weight_file_and_missing_arrays(tmp_path):
    one_error_line(
        run("analyze", "--set", f"model.weights={tmp_path / 'w.npz'}"), "w.npz: no such weights file"
    )
    with np.load(CASE / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays.pop("lstm.bias_hh_l0")
    arrays["lstm.extra"] = np.zeros(3)
    np.savez(tmp_path / "w.npz", **arrays)
    cfg = write(tmp_path, "c.yaml", (CASE / "config.yaml").read_text().replace("weights.npz", "w.npz"))
    cfg.write_text(cfg.read_text().replace("data.npz", str(CASE / "data.npz")))
    one_error_line(run("analyze", cfg), "w.npz: missing lstm.bias_hh_l0 (nn.LSTM(3, 4) has it)")


def test_pickled_weights_are_refused(tmp_path):
    p = tmp_path / "w.npz"
    p.write_bytes(pickle.dumps({"weight_ih_l0": [1, 2]}))
    one_error_line(run("analyze", "--set", f"model.weights={p}"), "w.npz")
    np.savez(tmp_path / "o.npz", weight_ih_l0=np.array([object()], dtype=object))
    with pytest.raises(InputError, match="refused"):
        read_npz(tmp_path / "o.npz", "weights")


def test_single_npy_and_garbage_are_refused(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3))
    one_error_line(run("analyze", "--set", f"model.weights={tmp_path / 'w.npy'}"), "a single .npy array")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04garbage")
    one_error_line(run("analyze", "--set", f"model.weights={tmp_path / 'g.npz'}"), "damaged or truncated zip")


def test_data_file_problems(tmp_path):
    spec = Spec(3, 4, 1, 2)
    cases = {
        "shape.npz": (
            dict(x=np.zeros((2, 5, 4)), y=np.zeros((2, 2))),
            "x has shape (2, 5, 4), expected (B, T, 3)",
        ),
        "nan.npz": (dict(x=np.full((2, 5, 3), np.nan), y=np.zeros((2, 2))), "x holds non-finite values"),
        "y.npz": (dict(x=np.zeros((2, 5, 3)), y=np.zeros((2, 3))), "y has shape (2, 3), expected (2, 2)"),
        "noy.npz": (dict(x=np.zeros((2, 5, 3))), "missing array 'y'"),
        "str.npz": (dict(x=np.array([["a"]]), y=np.zeros(2)), "x has dtype <U1"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(InputError, match=None) as e:
            load_data(tmp_path / name, spec, "mse", "last", "float64")
        assert message in str(e.value), (name, str(e.value))
    np.savez(tmp_path / "ids.npz", x=np.zeros((2, 5, 3)), y=np.array([0, 2]))
    with pytest.raises(InputError, match=r"class ids in \[0, 2\], expected 0..1"):
        load_data(tmp_path / "ids.npz", spec, "cross_entropy", "last", "float64")


def test_data_file_class_ids_via_cli(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 5, 8)), y=np.array([0, 7]))
    r = run("analyze", "--set", "data.task=file", "--set", f"data.path={tmp_path / 'd.npz'}",
            "--set", "loss.type=cross_entropy", "--set", "model.output_size=3")  # fmt: skip
    one_error_line(r, "d.npz: y has class ids in [0, 7], expected 0..2 (model.output_size)")


def test_debug_shows_the_traceback():
    r = run("analyze", "--set", "model.hidden_size=0", "--debug")
    assert r.exit_code == 2 and "Traceback" in r.stderr


def test_output_in_a_missing_folder_is_created_and_a_file_as_folder_refused(tmp_path):
    out = tmp_path / "a" / "b" / "r.json"
    assert run("analyze", "--format", "json", "-o", out, "--set", "data.seq_len=5").exit_code == 0
    assert json.loads(out.read_text())["schema_version"] == 3
    one_error_line(run("analyze", "--format", "json", "-o", out / "x.json"), "is a file, not a folder")


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text('{"good": true}')

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, '{"half": ')
    assert target.read_text() == '{"good": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_killed_writer_never_leaves_a_partial_file(tmp_path):
    """A process rewriting a 20 MB weight file in a loop is killed at random moments; whatever
    is on disk afterwards always loads completely."""
    target = tmp_path / "w.npz"
    save_weights(target, {"weight_ih_l0": np.zeros(10)})
    code = (
        "import numpy as np, sys\n"
        "from lstm_diag.setup.outputs import save_weights\n"
        "big = {f'weight_ih_l{k}': np.random.rand(500, 500) for k in range(10)}\n"
        "while True: save_weights(sys.argv[1], big)\n"
    )
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with np.load(target) as z:
            for k in z.files:
                assert np.all(np.isfinite(z[k]))


def test_single_output_targets_may_omit_the_last_axis(tmp_path):
    spec = Spec(3, 4, 1, 1)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 5, 3)), y=np.ones(2))
    x, y = load_data(tmp_path / "d.npz", spec, "mse", "last", "float64")
    assert y.shape == (2, 1)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 5, 3)), y=np.ones((2, 5)))
    assert load_data(tmp_path / "d.npz", spec, "mse", "all", "float64")[1].shape == (2, 5, 1)


# ------------------------------------------------------------------ issue 20: hostile input
# Each class of hostile input, not only the instances that were reported: bounded before
# allocation, nothing clobbered, nothing reinterpreted, one exit-code contract.


def laughs(levels: int, width: int = 9) -> str:
    lines = ['l0: &l0 ["lol"]']
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [" + ",".join([f"*l{k - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nmodel:\n  init: *l{levels - 1}\n"


@pytest.mark.parametrize(
    "text, needle",
    [
        (laughs(9), "expands to more than"),  # billion laughs: 9^8 values from 700 bytes
        (laughs(3, 200), "expands to more than"),  # wide instead of deep
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nest"),  # 5,000 levels: no RecursionError
        ("a:\n" + "".join("  " * k + f"k{k}:\n" for k in range(1, 80)), "nested more than"),
        ("compare:\n  init: [" + "a," * 60_000 + "a]\n", "more than 10000 values"),
        ("x: &a 1\n" + "".join(f"y{k}: *a\n" for k in range(1500)), "more than 1000 aliases"),
        ("data:\n  seq_len: 5\n  seq_len: 7\n", "duplicate key 'seq_len' on lines 2 and 3"),
        ("model: {}\ndata: {}\nmodel: {hidden_size: 3}\n", "duplicate key 'model' on lines 1 and 3"),
        ("seed: 1\n1: 2\nseed: 3\n", "duplicate key 'seed' on lines 1 and 3"),
        ("seed: !!python/name:os.system\n", "invalid YAML"),
        ("a: !!binary AAAA\n\x00", "NUL"),
    ],
)
def test_yaml_is_bounded_and_strict(tmp_path, text, needle):
    p = write(tmp_path, "c.yaml", text)
    t0 = time.perf_counter()
    one_error_line(run("analyze", p), "c.yaml", needle)
    assert time.perf_counter() - t0 < 5


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    p = write(tmp_path, "c.yaml", "base: &b {hidden_size: 3, input_size: 2}\n")
    from lstm_diag.setup.bounded_yaml import load_yaml

    doc = load_yaml("base: &b {hidden_size: 3, input_size: 2}\nmodel:\n  <<: *b\n  hidden_size: 5\n", str(p))
    assert doc["model"] == {"hidden_size": 5, "input_size": 2}


def test_config_text_is_read_with_a_cap(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:  # sparse: 5 GB claimed, nothing read
        fh.truncate(5 * 2**30)
    one_error_line(run("analyze", big), "big.yaml", "over the 4.0 MB limit; refused unread")
    one_error_line(run("analyze", "/dev/zero"), "/dev/zero", "limit")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    one_error_line(run("analyze", tmp_path / "bin.yaml"), "bin.yaml")


@pytest.mark.parametrize(
    "value, kind",
    [
        ("x" * 100_000, "str of 100000 characters"),
        ("[" + ",".join(["1"] * 5000) + "]", "list of 5000 items"),
        ("{" + ",".join(f"k{i}: 1" for i in range(3000)) + "}", "dict of 3000 items"),
    ],
)
def test_every_message_shows_a_short_preview(value, kind):
    for key in ("model.init", "model.hidden_size", "data.task", "compare.seq_lens"):
        line = one_error_line(run("analyze", "--set", f"{key}={value}"), key)
        assert len(line) < 400, (key, len(line))
        assert kind in line or "must be" in line, line


def test_long_values_in_a_file_show_a_preview(tmp_path):
    p = write(tmp_path, "c.yaml", "model:\n  init: " + "a" * 3_000_000 + "\n")
    line = one_error_line(run("analyze", p), "model.init", "str of 3000000 characters")
    assert len(line) < 400


@pytest.mark.parametrize("item", [".=3", "=3", "a..b=1", "model.=1", "3", " .x=1", "a b=1"])
def test_set_keys_must_be_field_names(item):
    one_error_line(run("analyze", "--set", item), "--set", "dotted field name")


def test_set_values_are_bounded_too():
    one_error_line(run("analyze", "--set", "model.init=" + laughs(9)), "--set model.init", "refused")


@pytest.mark.parametrize("args", [["gradcheck", "--tol"], ["train", "--lr"]])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_float_flags_reject_nan_and_inf(args, bad):
    r = run(*args, bad)
    assert r.exit_code == 2 and "finite" in r.output, r.output
