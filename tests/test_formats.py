"""Weight files as people save them: torch.save zips read without torch, safetensors,
npz; recognised by content. References were written by PyTorch itself
(tests/make_torch_file_fixtures.py); no test here needs torch."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lstm_diag.errors import InputError
from lstm_diag.formats.sniff import read_arrays, sniff

FIX = Path(__file__).parent / "fixtures_torchfile"


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIX / name) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------- torch.save files


@pytest.mark.parametrize(
    "name, prefix",
    [("dtypes.pt", ""), ("lm_state_dict.pt", ""), ("checkpoint.pt", "model."), ("bidir_proj_nobias.pt", "")],
)
def test_torch_file_equals_pytorch(name, prefix):
    loaded = read_arrays(FIX / name)
    assert loaded.format == "torch" and loaded.note is None
    ref = reference(name.replace(".pt", ".reference.npz"))
    for k, want in ref.items():
        got = loaded.arrays[prefix + k]
        assert got.dtype == want.dtype, k  # bfloat16 arrives as float32, like torch's .float()
        assert got.shape == want.shape, k
        np.testing.assert_array_equal(got, want, err_msg=k)
        assert loaded.info[prefix + k].shape == want.shape


def test_dtypes_layouts_and_views():
    loaded = read_arrays(FIX / "dtypes.pt")
    info = {k: v.dtype for k, v in loaded.info.items()}
    assert info["bf16"] == "bfloat16" and info["f16"] == "float16" and info["u8"] == "uint8"
    a = loaded.arrays
    assert a["bf16"].dtype == np.float32 and a["f16"].dtype == np.float16 and a["bool"].dtype == bool
    assert not a["transposed"].flags.c_contiguous  # a view with the saved strides
    assert np.shares_memory(a["shared_a"], a["shared_b"])  # one storage, two views
    assert a["empty"].shape == (0, 3) and a["scalar"].shape == ()
    np.testing.assert_array_equal(a["bf16_extremes"][[0, 5]], [0.0, np.inf])
    assert np.signbit(a["bf16_extremes"][1])  # -0.0 kept exactly
    for k in loaded.arrays:
        assert not a[k].flags.writeable


def test_reading_is_lazy():
    loaded = read_arrays(FIX / "checkpoint.pt")
    assert "0 read" in repr(loaded.arrays)
    loaded.arrays["model.decoder.bias"]
    assert "1 read" in repr(loaded.arrays)


def test_checkpoint_meta_sections_and_skipped():
    loaded = read_arrays(FIX / "checkpoint.pt")
    assert loaded.sections == ("model", "optimizer")
    assert loaded.meta["epoch"] == 7 and loaded.meta["global_step"] == 1234
    assert loaded.meta["best_loss"] == 1.25  # a numpy scalar in the pickle, rebuilt safely
    assert loaded.meta["args.name"] == "charlm"
    assert loaded.meta["optimizer.param_groups.0.amsgrad"] is False
    assert loaded.skipped["optimizer.param_groups.0.params"] == "a list of 11 values"
    assert loaded.info["optimizer.state.0.exp_avg"].shape == loaded.info["model.embed.weight"].shape


# ---------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize(
    "name, culprit", [("malicious_system.pt", "posix.system"), ("malicious_exec.pt", "builtins.exec")]
)
def test_reduce_payload_refused_without_running(name, culprit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=f"refused global '{culprit}'.*nothing was executed") as e:
        read_arrays(FIX / name)
    assert name in str(e.value)
    assert not (tmp_path / "pwned_marker").exists()


def _torch_zip(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None, order=b"little") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", order)
        for k, v in (records or {}).items():
            zf.writestr(f"archive/data/{k}", v)
        zf.writestr("archive/version", b"3\n")
    return path


def _pickle_calling(module: str, name: str, protocol: int) -> bytes:
    """A pickle that calls module.name(); built by hand, nothing importable needed."""
    if protocol >= 4:
        body = (
            pickle.SHORT_BINUNICODE + bytes([len(module)]) + module.encode()
            + pickle.MEMOIZE
            + pickle.SHORT_BINUNICODE + bytes([len(name)]) + name.encode()
            + pickle.MEMOIZE + pickle.STACK_GLOBAL
        )
        return pickle.PROTO + bytes([protocol]) + body + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.STOP
    if protocol == 0:  # INST opcode: module, name and a call in one
        return b"(i" + module.encode() + b"\n" + name.encode() + b"\n."
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."


@pytest.mark.parametrize(
    "module, name",
    [
        ("os", "system"),
        ("subprocess", "Popen"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("__builtin__", "open"),
        ("numpy", "load"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("collections", "namedtuple"),
        ("lstm_diag.formats.torch_file", "read_torch"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_every_other_global_refused(module, name, protocol, tmp_path):
    path = _torch_zip(tmp_path / "evil.pt", _pickle_calling(module, name, protocol))
    shown = "builtins" if module == "__builtin__" else module
    with pytest.raises(InputError, match=f"refused global '{shown}.{name}'"):
        read_arrays(path)


def _handmade(tmp_path, data_pkl, nbytes=16, name="t.pt"):
    return _torch_zip(tmp_path / name, data_pkl, {"0": np.arange(nbytes // 4, dtype="<f4").tobytes()})


def _raw_tensor_pickle(numel, offset, size, stride, key="0", storage="FloatStorage", build=None):
    """Opcode by opcode: {'w': _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())}."""

    def tup(vals):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in vals) + b"t"

    out = b"\x80\x02}(X\x01\x00\x00\x00w"
    out += b"ctorch._utils\n_rebuild_tensor_v2\n("
    out += b"(X\x07\x00\x00\x00storagectorch\n" + storage.encode() + b"\n"
    out += b"X" + struct.pack("<I", len(key)) + key.encode()
    out += b"X\x03\x00\x00\x00cpuJ" + struct.pack("<i", numel)
    out += b"tQ"  # the persistent id tuple, then BINPERSID
    out += b"J" + struct.pack("<i", offset) + tup(size) + tup(stride)
    out += b"\x89ccollections\nOrderedDict\n)Rt"  # requires_grad False, hooks OrderedDict()
    out += b"R"  # call the rebuild function
    if build is not None:
        out += build
    return out + b"u."


def test_handmade_tensor_reads(tmp_path):
    path = _handmade(tmp_path, _raw_tensor_pickle(4, 0, (2, 2), (1, 2)))
    np.testing.assert_array_equal(read_arrays(path).arrays["w"], [[0, 2], [1, 3]])


@pytest.mark.parametrize(
    "numel, offset, size, stride, match",
    [
        (8, 0, (2, 2), (2, 1), "storage 0 declares 8 x 4 bytes = 32, but its record holds 16"),
        (4, 1, (2, 2), (2, 1), "reaches element 4 of storage 0, which has 4"),
        (4, 0, (3, 2), (2, 1), "reaches element 5"),
        (4, 0, (2, 2), (4, 1), "reaches element 5"),
        (4, 0, (100000, 100000), (0, 0), "overlapping strides"),
    ],
)
def test_sizes_checked_before_allocation(tmp_path, numel, offset, size, stride, match):
    path = _handmade(tmp_path, _raw_tensor_pickle(numel, offset, size, stride))
    with pytest.raises(InputError, match=match) as e:
        read_arrays(path)
    assert str(path) in str(e.value)


def test_build_on_a_tensor_refused(tmp_path):
    build = b"}X\x01\x00\x00\x00aK\x01sb"  # BUILD {'a': 1} on the rebuilt tensor
    path = _handmade(tmp_path, _raw_tensor_pickle(4, 0, (2, 2), (2, 1), build=build))
    with pytest.raises(InputError, match="sets state"):
        read_arrays(path)


@pytest.mark.parametrize(
    "storage, dtype",
    [("DoubleStorage", "f8"), ("FloatStorage", "f4"), ("HalfStorage", "f2"), ("LongStorage", "i8")],
)
def test_big_endian_file(tmp_path, storage, dtype):
    values = np.array([1.5, -2.25, 3.0, 1e-3]).astype(dtype)
    for order, code in ((b"big", ">"), (b"little", "<")):
        path = _torch_zip(
            tmp_path / f"{order.decode()}.pt",
            _raw_tensor_pickle(4, 0, (4,), (1,), storage=storage),
            {"0": values.astype(values.dtype.newbyteorder(code)).tobytes()},
            order=order,
        )
        np.testing.assert_array_equal(read_arrays(path).arrays["w"], values)


def test_bfloat16_big_endian(tmp_path):
    f32 = np.array([1.5, -2.25, 3.0, np.inf], dtype=np.float32)
    bf16 = (f32.view(np.uint32) >> 16).astype(">u2").tobytes()
    path = _torch_zip(
        tmp_path / "b.pt",
        _raw_tensor_pickle(4, 0, (2, 2), (2, 1), storage="BFloat16Storage"),
        {"0": bf16},
        b"big",
    )
    np.testing.assert_array_equal(read_arrays(path).arrays["w"], f32.reshape(2, 2))


def test_self_containing_and_exponential_structures_refused(tmp_path):
    cyclic = b"\x80\x02]q\x00h\x00a."  # a list that contains itself
    with pytest.raises(InputError, match="contains itself"):
        read_arrays(_torch_zip(tmp_path / "c.pt", cyclic))
    # 40 levels of {"a": d, "b": d}: 2**40 paths from a 1 KB pickle
    d: dict = {"x": 1}
    for _ in range(40):
        d = {"a": d, "b": d}
    with pytest.raises(InputError, match="more than 200000 entries"):
        read_arrays(_torch_zip(tmp_path / "e.pt", pickle.dumps(d, protocol=2)))
    deep: list = []
    for _ in range(200):
        deep = [deep, 1]
    with pytest.raises(InputError, match="nested more than 64 levels"):
        read_arrays(_torch_zip(tmp_path / "d.pt", pickle.dumps(deep, protocol=2)))


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_file_is_one_clean_line(tmp_path, cut):
    data = (FIX / "lm_state_dict.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InputError) as e:
        loaded = read_arrays(path)
        [loaded.arrays[k] for k in loaded.arrays]
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_legacy_torchscript_and_other_contents_refused(tmp_path):
    with pytest.raises(InputError, match="legacy torch.save file .*re-save"):
        read_arrays(FIX / "legacy.pt")
    with pytest.raises(InputError, match="TorchScript archive .*state_dict"):
        read_arrays(FIX / "torchscript.pt")
    cases = {
        "config.pt": (b"model:\n  hidden_size: 8\n", "a text file"),
        "empty.pt": (b"", "empty"),
        "plain.pkl": (pickle.dumps({"a": 1}), "plain Python pickle"),
        "one.npz": (_npy_bytes(), "single .npy"),
        "noise.bin": (bytes(range(256)) * 4, "not a weights file lstm-diag recognises"),
        "other.zip": (_zip_bytes({"readme.txt": b"hi"}), "neither a torch.save"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=match):
            read_arrays(tmp_path / name)
    with pytest.raises(InputError, match="no such weights file"):
        read_arrays(tmp_path / "missing.pt")
    with pytest.raises(InputError, match="is a folder"):
        read_arrays(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(InputError, match="not a regular file"):
            read_arrays("/dev/zero")


@pytest.mark.parametrize(
    "raised, said",
    [
        (FileNotFoundError(2, "No such file or directory"), "no such {what}"),
        (IsADirectoryError(21, "Is a directory"), "is a folder, expected a {what}"),
        (PermissionError(13, "Permission denied"), "cannot read the {what} (permission denied)"),
        (OSError(5, "Input/output error"), "cannot read the {what} (Input/output error)"),
    ],
)
def test_npz_and_yaml_readers_word_an_unreadable_file_alike(tmp_path, monkeypatch, raised, said):
    """One wording (errors.unreadable) for an OSError on opening a weights .npz or a config:
    the file, what it should be, why; ConfigError for the config. (Run as root, a chmod
    would not stop a read, so open() itself raises here.)"""
    from lstm_diag.errors import ConfigError
    from lstm_diag.formats import npz
    from lstm_diag.setup import bounded_yaml

    def refuse(*args, **kwargs):
        raise raised

    for module, call, what, error in (
        (npz, lambda p: npz.open_npz(p), "weights file", InputError),
        (bounded_yaml, lambda p: bounded_yaml.read_text_capped(p), "config file", ConfigError),
    ):
        path = tmp_path / "f"
        path.write_bytes(b"x")
        monkeypatch.setattr(module, "open", refuse, raising=False)
        with pytest.raises(error) as e:
            call(path)
        assert str(e.value) == f"{path}: " + said.format(what=what)
        monkeypatch.undo()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def test_content_wins_over_extension(tmp_path):
    shutil.copy(FIX / "lm_state_dict.pt", tmp_path / "model.npz")
    loaded = read_arrays(tmp_path / "model.npz")
    assert loaded.format == "torch"
    assert loaded.note == (
        "model.npz is a PyTorch torch.save file, not a NumPy .npz archive as its name says; "
        "reading it as such"
    )
    with open(tmp_path / "w.pt", "wb") as fh:
        np.savez(fh, a=np.ones(2))
    loaded = read_arrays(tmp_path / "w.pt")
    assert loaded.format == "npz" and "w.pt is a NumPy .npz archive" in loaded.note
    assert sniff(FIX / "lm_state_dict.pt") == "torch"


def test_npz_through_the_same_entry_point(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.arange(3.0), b=np.eye(2))
    loaded = read_arrays(tmp_path / "w.npz")
    assert loaded.format == "npz" and loaded.note is None and loaded.info["b"].shape == (2, 2)
    np.testing.assert_array_equal(loaded.arrays["a"], [0, 1, 2])


def test_keras_and_onnx_recognised(tmp_path):
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert sniff(tmp_path / "m.h5") == "keras"
    (tmp_path / "m.onnx").write_bytes(b"\x08\x09\x12\x07pytorch\x1a\x032.1" + bytes(40))
    assert sniff(tmp_path / "m.onnx") == "onnx"


# ---------------------------------------------------------------------------- safetensors


def test_safetensors_equals_pytorch():
    pytest.importorskip("safetensors", reason="the safetensors extra is not installed")
    loaded = read_arrays(FIX / "lm.safetensors")
    assert loaded.format == "safetensors"
    assert loaded.meta == {"step": 1200, "note": "char LM"}
    assert loaded.info["extra_bf16"].dtype == "bfloat16"
    for k, want in reference("lm.safetensors.reference.npz").items():
        got = loaded.arrays[k]
        assert got.dtype == want.dtype and got.shape == want.shape, k
        np.testing.assert_array_equal(got, want, err_msg=k)


def test_safetensors_lying_headers(tmp_path):
    pytest.importorskip("safetensors", reason="the safetensors extra is not installed")
    with pytest.raises(InputError, match=r"lying_header.safetensors: w declares shape \(4, 4\) F32"):
        read_arrays(FIX / "lying_header.safetensors")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**40) + b'{"w": {}}')
    with pytest.raises(InputError, match="header declares 1099511627776 bytes, but the file holds 9"):
        read_arrays(huge)
    head = json.dumps({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}).encode()
    big = tmp_path / "big.safetensors"
    big.write_bytes(struct.pack("<Q", len(head)) + head + bytes(16))
    with pytest.raises(InputError, match="refused"):
        read_arrays(big)


def test_safetensors_missing_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    msg = r"needs the safetensors package: pip install 'lstm-diag\[safetensors\]'"
    with pytest.raises(InputError, match=msg):
        read_arrays(FIX / "lm.safetensors")


def test_unsupported_dtypes_and_whole_modules_are_named(tmp_path):
    path = _torch_zip(tmp_path / "c.pt", _pickle_calling("torch", "ComplexFloatStorage", 2))
    with pytest.raises(InputError, match="holds ComplexFloatStorage tensors, a dtype lstm-diag does not"):
        read_arrays(path)
    path = _torch_zip(tmp_path / "m.pt", _pickle_calling("torch.nn.modules.rnn", "LSTM", 2))
    with pytest.raises(InputError, match=r"'torch.nn.modules.rnn.LSTM'.*save model.state_dict\(\) instead"):
        read_arrays(path)
