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
from adversarial.driver import npz_declaring  # zero-filled members: small on disk, huge declared
from conftest import NUMPY_ENGINE, run, start

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


@pytest.mark.parametrize(
    "text, what",
    [("", "the file is empty (or only comments)"), ("# all defaults\n---\n", "the file is empty"),
     ("null\n", "its top level is null")],
)  # fmt: skip
def test_a_config_file_with_no_settings_is_refused_not_read_as_the_default(tmp_path, text, what):
    """`analyze cfg --format json > r.json` that failed leaves r.json empty: plot and report of
    it must not draw the built-in default's figures. Leaving CONFIG out, or `{}`, is the default."""
    p = write(tmp_path, "r.json", text)
    want = f"{p}: no settings: {what}"
    one_error_line(run("analyze", p), want, "; leave CONFIG out for the built-in default, or write {}")
    one_error_line(run("plot", p, "-o", tmp_path / "figs"), want)
    assert not (tmp_path / "figs").exists()
    write(tmp_path, "r.json", "{}\n")
    assert run("analyze", p, "--set", "data.seq_len=3", "--set", "diagnostics.dynamics=false").exit_code == 0


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
        "ids.npz": (  # token ids saved as x: the message says where they go
            dict(x=np.zeros((2, 5), dtype=np.int64), y=np.zeros(2)),
            "x has shape (2, 5), expected (B, T, I); integer ids of shape (B, T) go in an array named",
        ),
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
    assert json.loads(out.read_text())["schema_version"] == 5
    one_error_line(run("analyze", "--format", "json", "-o", out / "x.json"), "is a file, not a folder")


@pytest.mark.parametrize("moment", ["at the rename", "as the file is created", "as its name comes back"])
def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, moment):
    """Ctrl-C at any moment of a write. Landing inside tempfile.mkstemp after the file exists
    (before its name reaches the writer) used to leave `.r.json.XXXX.tmp` behind: 5 of 40
    interrupted write loops did. The temporary's name carries a token of the write, by which
    it is found and removed."""
    import tempfile

    real = tempfile.mkstemp

    def created(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        os.close(fd)
        if moment == "as the file is created":
            raise KeyboardInterrupt
        return _Interrupting(fd, name)

    def renamed(src, dst):
        raise KeyboardInterrupt

    if moment == "at the rename":
        monkeypatch.setattr(os, "replace", renamed)
    else:
        monkeypatch.setattr(tempfile, "mkstemp", created)
    target = tmp_path / "r.json"
    target.write_text('{"good": true}')
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, '{"half": ')
    assert target.read_text() == '{"good": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


class _Interrupting(tuple):
    """(fd, name) that raises KeyboardInterrupt when unpacked: an interrupt in the writer
    itself, between mkstemp's return and the first use of the file."""

    def __new__(cls, fd, name):
        return super().__new__(cls, (fd, name))

    def __iter__(self):
        raise KeyboardInterrupt


def test_killed_writer_never_leaves_a_partial_file(tmp_path):
    """A process rewriting a 20 MB weight file in a loop (~0.1 s a write here) is killed at
    moments spread over one write; whatever is on disk afterwards always loads completely."""
    target = tmp_path / "w.npz"
    save_weights(target, {"weight_ih_l0": np.zeros(10)})
    code = (
        "import numpy as np, sys\n"
        "from lstm_diag.setup.outputs import save_weights\n"
        "big = {f'weight_ih_l{k}': np.random.rand(500, 500) for k in range(10)}\n"
        "save_weights(sys.argv[1], big)\n"
        "print('writing', flush=True)\n"
        "while True: save_weights(sys.argv[1], big)\n"
    )
    for delay in (0.02, 0.05, 0.08):  # after the first complete write: into the loop's writes
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"writing\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with np.load(target) as z:
            assert len(z.files) == 10
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


def lying_npz(path, name, declared_shape, actual: np.ndarray):
    """A member whose .npy header declares `declared_shape` but holds `actual`'s bytes."""
    import io
    import zipfile

    head = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": declared_shape}
    np.lib.format.write_array_header_1_0(head, header)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name + ".npy", head.getvalue() + actual.astype("<f8").tobytes())
    return path


def test_npz_members_are_checked_from_their_headers(tmp_path, monkeypatch):
    from lstm_diag.formats import budget
    from lstm_diag.formats.npz import open_npz

    monkeypatch.setattr(budget, "memory_limit", lambda: 50 * 2**20)
    p = npz_declaring(tmp_path / "d.npz", {"x": (100, 100, 1000), "y": (100, 1)})  # x: 80 MB declared
    loaded = open_npz(p, "data")  # the directory and headers only
    assert loaded.info["x"].shape == (100, 100, 1000)
    message = r"d.npz: x declares 80.0 MB \(ratio \d+:1 compressed\); limit 52.4 MB"
    with pytest.raises(InputError, match=message):
        loaded.arrays["x"]
    # a header that claims more than the member holds (or less) is refused unread
    for shape in [(10**6, 10**6), (2, 2), (3,)]:
        q = lying_npz(tmp_path / "l.npz", "x", shape, np.zeros(5))
        with pytest.raises(InputError, match="declares shape"):
            open_npz(q, "data")


def test_only_the_arrays_the_model_needs_are_read(tmp_path, monkeypatch):
    from lstm_diag.formats import npz

    with np.load(CASE / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3, 4)), y=np.zeros(2), extra=np.zeros((300, 300)))
    loaded = npz.open_npz(tmp_path / "d.npz", "data")
    assert set(loaded.info) == {"x", "y", "extra"}  # all headers known, nothing read yet
    x = loaded.arrays["x"]
    assert x.flags.writeable and x.shape == (2, 3, 4)
    assert set(loaded.arrays._cache) == {"x"}  # the others never decompressed
    # a weights file with an unused extra over the memory budget (here a 50 MB budget and a
    # 96 MB extra, which stands for any size: reading it would be refused): never decompressed
    from lstm_diag.formats import budget

    monkeypatch.setattr(budget, "memory_limit", lambda: 50 * 2**20)
    npz_declaring(tmp_path / "big.npz", {"junk": (100, 1000, 120)})  # 96 MB declared, 0.4 MB on disk
    import zipfile

    with zipfile.ZipFile(tmp_path / "big.npz", "a") as zf:
        for k, v in arrays.items():
            import io

            buf = io.BytesIO()
            np.save(buf, v)
            zf.writestr(k + ".npy", buf.getvalue())
    cfg = write(tmp_path, "c.yaml", (CASE / "config.yaml").read_text().replace("weights.npz", "big.npz"))
    cfg.write_text(cfg.read_text().replace("data.npz", str(CASE / "data.npz")))
    r = run("analyze", cfg, "--format", "json", "--no-dynamics")
    assert r.exit_code == 0, r.output  # reading the extra would have been exit 2 (over the budget)
    with pytest.raises(InputError, match="junk declares 96.0 MB"):  # as reading it shows
        npz.open_npz(tmp_path / "big.npz", "weights").arrays["junk"]


def test_npz_members_that_are_not_arrays(tmp_path):
    import zipfile

    for name, content, needle in [
        ("notes.txt", b"hello", "zip archive"),
        ("x.npy", b"hello", "'x.npy' is not a valid .npy array"),
        ("x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': 'O'", "not a valid .npy array"),
    ]:
        p = tmp_path / "w.npz"
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr(name, content)
        one_error_line(run("analyze", "--set", f"model.weights={p}"), "w.npz", needle)
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8', 'fortran_order': False, 'shape': (")
        zf.writestr("notes.txt", b"hello")
    with pytest.raises(InputError, match=r"'x.npy' is not a valid .npy array"):
        load_data(tmp_path / "d.npz", Spec(3, 4, 1, 2), "mse", "last", "float64")
    import io
    import warnings

    with zipfile.ZipFile(tmp_path / "dup.npz", "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name: that is the point
        for v in (np.zeros(2), np.ones(2)):
            buf = io.BytesIO()
            np.save(buf, v)
            zf.writestr("x.npy", buf.getvalue())
    one_error_line(run("analyze", "--set", f"model.weights={tmp_path / 'dup.npz'}"), "stored twice")


@pytest.mark.parametrize("content", [b"model:\n  hidden_size: 4\n", b"", bytes(1000), b"\x01\x02garbage"])
def test_text_zero_and_garbage_weights_say_what_they_are(tmp_path, content):
    p = tmp_path / "w.npz"
    p.write_bytes(content)
    line = one_error_line(run("analyze", "--set", f"model.weights={p}"), "w.npz")
    assert "pickle" not in line
    one_error_line(run("analyze", "--set", "model.weights=/dev/zero"), "/dev/zero")


TINY_SETS = ["data.batch_size=2", "data.seq_len=4", "model.hidden_size=3"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["model.hidden_size=40000"], "model.input_size x model.hidden_size"),
        (["model.input_size=100000000"], "model.input_size (data)"),
        (["data.batch_size=100000", "data.seq_len=100000"], "data.batch_size x data.seq_len"),
        (["diagnostics.memory=full", "data.seq_len=10000000"], "data.seq_len"),
        # a tiny model stacked 10^12 or 10^6 deep: priced without listing its layers (the
        # check itself used to enumerate every layer's parameter names and ran out of memory),
        # and the Python objects per layer counted (~110 KB a layer, beyond its arrays)
        (["model.num_layers=1000000000000"], "model.num_layers (caches)"),
        (TINY_SETS + ["model.num_layers=1000000"], "model.num_layers x data.seq_len (per-layer results)"),
        (TINY_SETS + ["data.seq_len=10000000"], "model.num_layers x data.seq_len (per-layer results)"),
    ],
)
def test_memory_budget_before_allocation(overrides, field):
    args = [a for o in overrides for a in ("--set", o)]
    line = one_error_line(run("analyze", *args), field, "limit")
    assert "needs about" in line


def test_parameter_count_in_closed_form_matches_every_shape():
    from lstm_diag.setup.config import load_config
    from lstm_diag.setup.problem import parameter_count, spec_of

    projection = ["model.proj_size=2", "model.hidden_size=5"]
    variants = ([], ["model.bidirectional=true"], projection, ["model.bias=false"])
    for sets in variants:
        for layers in (1, 2, 3, 7):
            cfg, _ = load_config(None, [*sets, f"model.num_layers={layers}"])
            shapes = spec_of(cfg).param_shapes().values()
            assert parameter_count(cfg) == sum(int(np.prod(s)) for s in shapes), (sets, layers)


def test_compare_and_train_totals_are_budgeted():
    one_error_line(run("compare", "--seeds", "100000000"), "compare.seeds", "per-run results")
    one_error_line(run("train", "--set", "model.hidden_size=30000", "--steps", "1"), "train.clip")


def test_train_on_a_data_file_budgets_each_settings_optimizer_state(tmp_path, monkeypatch):
    """train keeps, per clip setting, parameters, gradients and optimizer state (Adam: 2
    more): 4 settings of a 2.2 MB model need ~37 MB, over a 20 MB limit, although one
    analysis (2 copies, 4.4 MB, plus 8 MB of caches) fits; and it holds the whole file
    but caches one minibatch: a file whose whole-batch analysis would not fit still trains."""
    from lstm_diag.formats import budget

    monkeypatch.setattr(budget, "memory_limit", lambda: 20 * 2**20)
    rng = np.random.default_rng(0)
    small = tmp_path / "small.npz"
    np.savez(small, x=rng.normal(size=(20, 10, 8)), y=rng.normal(size=(20, 1)))
    model = ["--set", "model.input_size=8", "--set", "model.hidden_size=256", "--set", "data.task=file"]
    assert run("analyze", *model, "--set", f"data.path={small}", "--no-dynamics").exit_code == 0
    args = ["train", *model, "--set", f"data.path={small}", "--steps", "1", "--optimizer", "adam"]
    one_error_line(run(*args), "train.clip settings x train.optimizer", "limit 21.0 MB")
    assert run(*args, "--clip", "none").exit_code == 0  # one setting: ~11 MB
    many = tmp_path / "many.npz"  # 2000 sequences: a whole-batch analysis needs ~80 MB of caches
    np.savez(many, x=rng.normal(size=(2000, 10, 2)), y=rng.normal(size=(2000, 1)))
    tiny = ["--set", "model.input_size=2", "--set", "model.hidden_size=32", "--set", "data.task=file"]
    one_error_line(run("analyze", *tiny, "--set", f"data.path={many}", "--no-dynamics"), "many.npz")
    r = run("train", *tiny, "--set", f"data.path={many}", "--steps", "2", "--clip", "none")
    assert r.exit_code == 0, r.output


def test_data_file_budget_uses_the_header_shape(tmp_path, monkeypatch):
    from lstm_diag.formats import budget

    monkeypatch.setattr(budget, "memory_limit", lambda: 20 * 2**20)
    p = npz_declaring(tmp_path / "d.npz", {"x": (2000, 100, 8), "y": (2000, 1)})  # x 12.8 MB declared
    line = one_error_line(run("analyze", "--set", "data.task=file", "--set", f"data.path={p}"), "d.npz")
    assert "limit 21.0 MB" in line


@pytest.mark.parametrize("where", ["data", "weights"])
def test_cast_overflow_is_refused_and_underflow_warned(tmp_path, where):
    with np.load(CASE / "weights.npz") as z:
        w = {k: z[k] for k in z.files}
    with np.load(CASE / "data.npz") as z:
        d = {k: z[k] for k in z.files}
    target = d if where == "data" else w
    name = "x" if where == "data" else "lstm.weight_hh_l0"
    target[name] = target[name].astype(np.float64).copy()
    target[name].flat[0] = 1e300
    np.savez(tmp_path / "w.npz", **w)
    np.savez(tmp_path / "d.npz", **d)
    base = ["--set", f"model.weights={tmp_path / 'w.npz'}", "--set", f"data.path={tmp_path / 'd.npz'}",
            "--set", "dtype=float32"]  # fmt: skip
    cfg = CASE / "config.yaml"
    line = one_error_line(run("analyze", cfg, *base), name, "overflow float32")
    assert "LD" not in line
    target[name].flat[0] = 1e-300
    np.savez(tmp_path / "w.npz", **w)
    np.savez(tmp_path / "d.npz", **d)
    r = run("analyze", cfg, *base, "--format", "json")
    assert r.exit_code in (0, 1), r.output
    assert f"warning: {tmp_path}" in r.stderr and "become 0 in float32" in r.stderr


# ----------------------------------------------------------- outputs never destroy anything

ERRNOS = ["ENOSPC", "EFBIG", "EROFS", "EACCES", "EDQUOT", "EIO", "EPERM"]


@pytest.mark.parametrize("name", ERRNOS)
@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_every_output_error_is_exit_2_with_the_old_file_intact(tmp_path, monkeypatch, name, stage):
    import errno as errno_mod

    from lstm_diag.errors import OutputError

    target = tmp_path / "r.json"
    target.write_text("old")
    code = getattr(errno_mod, name)

    def boom(*a, **k):
        raise OSError(code, os.strerror(code))

    if stage == "write":
        real = os.fdopen

        class Failing:
            def __init__(self, fd, *a, **k):
                self.f = real(fd, *a, **k)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            write = boom

        monkeypatch.setattr(os, "fdopen", Failing)
    elif stage == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:
        monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError, match=str(target)):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left


@pytest.mark.parametrize("name", ERRNOS)
def test_streamed_output_errors_leave_the_old_file(tmp_path, monkeypatch, name):
    import errno as errno_mod

    from lstm_diag.errors import OutputError
    from lstm_diag.setup.outputs import StreamingOutput

    target = tmp_path / "m.jsonl"
    target.write_text("old\n")
    out = StreamingOutput(target)
    out.write("line 1\n")
    code = getattr(errno_mod, name)

    def boom(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(out.fh, "flush", boom)
    with pytest.raises(OutputError, match=str(target)):
        out.write("line 2\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]


def test_dev_full_and_dev_stdout_are_written_directly_never_replaced(tmp_path):
    for dev in ("/dev/full",):
        if not os.path.exists(dev):
            pytest.skip("no /dev/full")
        r = run("analyze", "--format", "json", "-o", dev, "--set", "data.seq_len=3")
        one_error_line(r, dev, "no space left")
        assert not Path(dev).is_file()
    out = subprocess.run(
        [sys.executable, "-m", "lstm_diag", "analyze", "--format", "json", "-o", "/dev/stdout",
         "--set", "data.seq_len=3", "--no-dynamics", "--set", "engine=numpy"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert Path("/dev/stdout").is_symlink() or not Path("/dev/stdout").is_file()


def test_fifo_output_is_written_in_place(tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_text(fifo, '{"a": 1}')
    reader.join(10)
    assert got == [b'{"a": 1}'] and fifo.is_fifo()


def test_a_folder_as_file_output_gets_the_default_name_inside(tmp_path, tiny_config):
    """`-o out/` (trailing slash; created if missing) or an existing folder: the command's
    default name inside it, never a file called `out`."""
    tiny = ["--set", "model.input_size=3", "--set", "model.hidden_size=4", "--set", "data.seq_len=6"]
    r = run("analyze", *tiny, "--no-dynamics", "--format", "json", "-o", f"{tmp_path}/new/",
            "--save-weights", f"{tmp_path}/w/")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "new" / "lstm-diag-analyze.json").read_text())["command"] == "analyze"
    assert sorted(np.load(tmp_path / "w" / "weights.npz"))[0].startswith("head.")
    r = run("analyze", *tiny, "--no-dynamics", "--format", "markdown", "-o", tmp_path / "new")  # exists
    assert r.exit_code == 0 and (tmp_path / "new" / "lstm-diag-analyze.md").read_text().startswith("#")
    cfg = tmp_path / "cfg" / "c.yaml"
    cfg.parent.mkdir()
    cfg.write_text(tiny_config.read_text() + "train: {metrics: runs/, save_weights: final/}\n")
    r = run("train", cfg, "--steps", "2", "--clip", "none")
    assert r.exit_code == 0, r.output
    assert (cfg.parent / "runs" / "metrics.jsonl").read_text().count("\n") == 2  # relative to the config
    assert [p.name for p in (cfg.parent / "final").iterdir()] == ["weights.none.npz"]
    r = run("convert", tmp_path / "w" / "weights.npz", "--to", f"{tmp_path}/conv/")
    assert r.exit_code == 0 and (tmp_path / "conv" / "weights.npz").is_file(), r.output
    weights = tmp_path / "w" / "weights.npz"
    one_error_line(run("convert", weights, "--to", tmp_path / "w"), "is the input file")  # w/weights.npz
    # report -o out/: tests/test_command_contract.py (a report costs seconds of figures)
    # a path that cannot be written is exit 2 before any work (here: before the weights are read)
    (tmp_path / "afile").write_text("a file")
    nope = ["--set", f"model.weights={tmp_path / 'nope.npz'}"]
    for cmd in (["analyze", "-o"], ["analyze", "--save-weights"], ["report", "-o"], ["train", "--metrics"],
                ["train", "--save-weights"]):  # fmt: skip
        one_error_line(run(*cmd, tmp_path / "afile" / "x.json", *nope), "afile is a file, not a folder")
    bad_to = tmp_path / "afile" / "x.npz"
    one_error_line(run("convert", tmp_path / "nope.pt", "--to", bad_to), "afile is a file")


def test_symlinks_are_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "m.jsonl"
    link.symlink_to(victim)
    r = run("train", "--steps", "2", "--clip", "none", "--metrics", link, "--set", "data.seq_len=5")
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "keep me" and not link.is_symlink()
    assert link.read_text().count("\n") == 2


def test_bad_input_never_touches_the_previous_metrics_file(tmp_path):
    keep = tmp_path / "keep.jsonl"
    keep.write_text('{"step": 1}\n')
    for bad in (["--set", f"model.weights={tmp_path / 'nope.npz'}"], ["--set", "model.hidden_size=40000"]):
        one_error_line(run("train", "--steps", "2", "--metrics", keep, *bad))
        assert keep.read_text() == '{"step": 1}\n'
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jsonl"]


# ---------------------------------------------------------------- signals, real processes


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(d.name))
    return out


@pytest.mark.parametrize(
    "signals, code",
    [([signal.SIGINT], 130), ([signal.SIGINT, signal.SIGINT], 130), ([signal.SIGTERM], 143)],
)
def test_compare_jobs_stops_on_signals_with_no_worker_left(tmp_path, signals, code):
    proc = start(tmp_path, "compare", "--jobs", "2", "--seeds", "50", "--init", "pytorch", *NUMPY_ENGINE,
                  "--set", "data.seq_len=400", "--set", "diagnostics.dynamics=false")  # fmt: skip
    deadline = time.time() + 30
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        workers = [p for p in _children(proc.pid) if p != proc.pid]
        time.sleep(0.05)
    assert len(workers) >= 2, "workers never started"
    time.sleep(0.3)
    t0 = time.time()
    for s in signals:
        os.killpg(proc.pid, s)  # as a terminal delivers Ctrl-C: to the whole process group
        time.sleep(0.1)
    out, err = proc.communicate(timeout=20)
    assert time.time() - t0 < 5, "took too long to stop"
    assert proc.returncode == code, err.decode()
    said = "interrupted" if code == 130 else "terminated (SIGTERM)"
    lines = err.decode().splitlines()
    # Exactly that one line: no traceback from a worker, and none from CPython 3.11's exit hook
    # for process pools (run_parallel joins the stopped pool's management thread first).
    assert out == b"" and lines == [said], err.decode()
    from lstm_diag.features.shutdown import alive

    time.sleep(0.1)
    assert alive(workers) == [] or all(
        Path(f"/proc/{w}/stat").read_text().rpartition(")")[2].split()[0] == "Z" for w in alive(workers)
    )
    assert list(tmp_path.iterdir()) == []  # no temporary files


def test_sigterm_during_train_keeps_the_partial_metrics_and_names_them(tmp_path):
    (tmp_path / "m.jsonl").write_text("previous\n")
    proc = start(tmp_path, "train", "--steps", "100000", "--clip", "none", "--log-every", "1",
                  "--metrics", "m.jsonl", "--set", "data.seq_len=20", *NUMPY_ENGINE)  # fmt: skip
    deadline = time.time() + 30
    while time.time() < deadline and not any(
        p.read_text().count("\n") >= 3 for p in tmp_path.glob(".m.jsonl.*.partial")
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err.decode()
    assert (tmp_path / "m.jsonl").read_text() == "previous\n"
    (partial,) = tmp_path.glob(".m.jsonl.*.partial")
    assert partial.name in err.decode()
    lines = partial.read_text().splitlines()
    assert len(lines) >= 3 and all(json.loads(line)["step"] for line in lines)
