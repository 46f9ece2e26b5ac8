"""Which format a file is, from its first bytes, and one entry point that reads any of them.

`read_arrays(path)` recognises the content (not the extension), reads with the right
reader and returns a `LoadedFile`; when the extension suggests another format, its
`note` says so in one line ("model.npz is a PyTorch torch.save file; reading it as
such"). Contents that are clearly not weights (text, YAML, an empty file, a plain
pickle) are refused with a line that says what the file is.

Readers for Keras and ONNX files plug in through `READERS`: a module of this package
with a function `read_<kind>(path) -> LoadedFile` (formats/keras_file.py `read_keras`,
formats/onnx_file.py `read_onnx`); until a module exists, those files are named and
refused.
"""

from __future__ import annotations

import importlib
import struct
import zipfile
from pathlib import Path

from ..errors import InputError
from .loaded import LoadedFile
from .torch_file import LEGACY_MAGIC, find_prefix, is_torchscript, legacy_message, torchscript_message

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
SNIFF_BYTES = 64

# What each kind is called in messages.
NAMES = {
    "torch": "PyTorch torch.save file",
    "torchscript": "TorchScript archive",
    "torch-legacy": "legacy (pre-1.6) torch.save file",
    "npz": "NumPy .npz archive",
    "npy": "single NumPy .npy array",
    "safetensors": "safetensors file",
    "keras": "Keras/HDF5 file",
    "onnx": "ONNX model",
    "pickle": "Python pickle",
    "zip": "zip archive",
    "bad-zip": "damaged zip archive",
    "text": "text file",
    "empty": "empty file",
    "unknown": "file of unknown format",
}

# The format an extension suggests.
EXTENSIONS = {
    ".pt": "torch",
    ".pth": "torch",
    ".bin": "torch",
    ".ckpt": "torch",
    ".tar": "torch",
    ".npz": "npz",
    ".npy": "npy",
    ".safetensors": "safetensors",
    ".h5": "keras",
    ".hdf5": "keras",
    ".keras": "keras",
    ".onnx": "onnx",
    ".yaml": "text",
    ".yml": "text",
    ".json": "text",
    ".txt": "text",
}

# kind -> (module in this package, function); a missing module means "not readable yet".
READERS = {
    "torch": ("torch_file", "read_torch"),
    "safetensors": ("safetensors_file", "read_safetensors"),
    "npz": ("sniff", "read_npz_file"),
    "keras": ("keras_file", "read_keras"),
    "onnx": ("onnx_file", "read_onnx"),
}


def sniff(path: str | Path) -> str:
    """The kind of file (a key of NAMES) from its first bytes; reads at most a zip directory."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(p)
    if head.startswith(HDF5_MAGIC):
        return "keras"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(LEGACY_MAGIC):
        return "torch-legacy"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "pickle"
    if _is_safetensors(head):
        return "safetensors"
    if _is_onnx(head):
        return "onnx"
    if _is_text(head):
        return "text"
    return "unknown"


def _zip_kind(p: Path) -> str:
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return "bad-zip"
    if is_torchscript(names):
        return "torchscript"
    if find_prefix(names) is not None:
        return "torch"
    if any(n in ("model.weights.h5", "config.json") for n in names) and "metadata.json" in names:
        return "keras"  # a Keras 3 .keras archive
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def _is_safetensors(head: bytes) -> bool:
    """8-byte little-endian header length, then a JSON object (`{"` or `{}`); the reader
    checks the length against the file."""
    if len(head) < 10 or head[8:9] != b"{" or head[9:10] not in (b'"', b"}", b" ", b"\n"):
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return n >= 2


def _is_onnx(head: bytes) -> bool:
    """A ModelProto starts with field 1 (ir_version, a small varint: tag 0x08) and is
    followed by more fields (producer_name 0x12, graph 0x3a, opset_import 0x42...). A
    heuristic: the ONNX reader validates for real."""
    fields = (0x12, 0x1A, 0x22, 0x2A, 0x3A, 0x42)
    return len(head) >= 4 and head[0] == 0x08 and 1 <= head[1] <= 20 and head[2] in fields


def _is_text(head: bytes) -> bool:
    for cut in range(4):  # the first bytes may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(c.isprintable() or c in "\t\r\n" for c in text)
    return False


def _check_path(p: Path, what: str) -> None:
    if "\x00" in str(p):
        raise InputError(f"{what} path {str(p)!r}: a path cannot contain a NUL character")
    try:
        if p.is_dir():
            raise InputError(f"{p}: is a folder, expected a {what} file")
        if not p.exists():
            raise InputError(f"{p}: no such {what} file")
        if not p.is_file():
            raise InputError(f"{p}: not a regular file (a device or a pipe); expected a {what} file")
    except OSError as e:
        raise InputError(f"{p}: cannot open the {what} file ({e.strerror or e.__class__.__name__})") from None


def refusal(p: Path, kind: str, what: str) -> str:
    """Why a file of this kind holds no weights (or data), as one line."""
    if kind == "torch-legacy":
        return legacy_message(p)
    if kind == "torchscript":
        return torchscript_message(p)
    if kind == "pickle":
        return (
            f"{p}: a plain Python pickle, which is refused (unpickling can run code); "
            "save with torch.save or np.savez"
        )
    if kind == "npy":
        return f"{p}: a single .npy array; a {what} file needs named arrays (np.savez)"
    if kind == "text":
        hint = " (a config? pass it as CONFIG, and the weights as model.weights)" if what == "weights" else ""
        return f"{p}: a text file, not a {what} file{hint}"
    if kind == "empty":
        return f"{p}: the file is empty"
    if kind == "bad-zip":
        return f"{p}: a damaged or truncated zip archive (the container of .pt, .npz, .keras files)"
    if kind == "zip":
        return f"{p}: a zip archive that is neither a torch.save file, an .npz nor a .keras file"
    return (
        f"{p}: not a {what} file lstm-diag recognises (PyTorch .pt/.pth/.bin, .safetensors, .npz, "
        "Keras .keras/.h5, ONNX)"
    )


def read_arrays(path: str | Path, what: str = "weights") -> LoadedFile:
    """Any supported file by its content: arrays (lazy), meta, format, extension note."""
    p = Path(path)
    _check_path(p, what)
    try:
        kind = sniff(p)
    except OSError as e:
        raise InputError(f"{p}: cannot read the {what} file ({e.strerror or e.__class__.__name__})") from None
    if kind not in READERS:
        raise InputError(refusal(p, kind, what))
    module, function = READERS[kind]
    try:
        reader = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    except (ModuleNotFoundError, AttributeError):
        raise InputError(f"{p}: a {NAMES[kind]}, which this version of lstm-diag does not read yet") from None
    loaded = reader(p)
    expected = EXTENSIONS.get(p.suffix.lower())
    if expected is not None and expected != kind:
        loaded.note = (
            f"{p.name} is a {NAMES[kind]}, not a {NAMES[expected]} as its name says; reading it as such"
        )
    return loaded


def describe(path: str | Path) -> str:
    """One phrase for what a file is (for messages): 'PyTorch torch.save file', ..."""
    try:
        return NAMES[sniff(path)]
    except OSError:
        return "unreadable file"


def read_npz_file(path: Path) -> LoadedFile:
    """An .npz as a LoadedFile, lazily (formats/npz.py: headers checked first, pickles refused)."""
    from .npz import open_npz

    return open_npz(path, "weights")
