"""PyTorch `torch.save` files (the zip format of torch >= 1.6), read without PyTorch and
without executing anything from the file.

A torch.save file is a zip archive `<name>/data.pkl` + `<name>/data/<key>` +
`<name>/byteorder` (+ version records). `data.pkl` is a pickle of the saved object in
which every tensor is a call `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, hooks)` and every storage a persistent id `("storage",
torch.FloatStorage, key, location, numel)` naming the record `data/<key>` that holds
its raw bytes.

Unpickling is the dangerous part: a pickle can call any importable function. Here the
unpickler's `find_class` hands out only inert stand-ins for an explicit allow-list (the
tensor rebuild functions, storage classes and dtypes, `collections.OrderedDict`, and
`torch.Size`/`torch.device`/`_codecs.encode`/numpy scalars as plain values); any other
global is refused with `InputError` naming it, before anything is called. No object the
file describes is ever constructed from a class it names. The idea follows PyTorch's own
`weights_only=True` loader (torch/_weights_only_unpickler.py), written independently.

Resources are bounded before anything is allocated: the pickle's size, each storage's
byte size against its zip record, each tensor's extent (offset + sum((size-1)*stride))
against its storage. Tensor data is read only when an array is looked up.
"""

from __future__ import annotations

import io
import pickle
import re
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .loaded import ArrayInfo, LazyArrays, LoadedFile, flatten

MAX_PICKLE_BYTES = 256 * 2**20  # a state dict's pickle is KBs; a 7B-parameter model's is < 1 MB
MAX_RATIO = 1000  # compressed records (torch never compresses) may expand at most this much
MAX_EXPANDED_BYTES = 256 * 2**20  # a tensor over overlapping strides (expand) may reach this

# storage class -> (numpy type code, torch dtype name); "bf16" is converted to float32
STORAGES = {
    "DoubleStorage": ("f8", "float64"),
    "FloatStorage": ("f4", "float32"),
    "HalfStorage": ("f2", "float16"),
    "BFloat16Storage": ("bf16", "bfloat16"),
    "LongStorage": ("i8", "int64"),
    "IntStorage": ("i4", "int32"),
    "ShortStorage": ("i2", "int16"),
    "CharStorage": ("i1", "int8"),
    "ByteStorage": ("u1", "uint8"),
    "BoolStorage": ("b1", "bool"),
    "UntypedStorage": ("u1", "uint8"),
}
DTYPES = {name: code for code, name in STORAGES.values()}
DTYPES.update(float="f4", double="f8", half="f2", long="i8", int="i4", short="i2")

# A legacy (torch < 1.6, or _use_new_zipfile_serialization=False) file starts with a
# pickle (protocol 2) of this magic number, as a LONG1.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


class _Inert:
    """Base of every stand-in: the pickle's BUILD opcode cannot set state on it."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"refused: the pickle sets state on a {type(self).__name__}")


@dataclass(frozen=True, eq=False)
class _StorageType(_Inert):
    name: str
    code: str


@dataclass(frozen=True, eq=False)
class _Dtype(_Inert):
    name: str
    code: str


@dataclass(frozen=True, eq=False)
class _TypeMarker(_Inert):
    """torch.Tensor / torch.nn.Parameter, only as the type argument of _rebuild_from_type_v2."""

    name: str


@dataclass(frozen=True, eq=False)
class _Storage(_Inert):
    key: str
    code: str
    numel: int
    record: str


@dataclass(frozen=True, eq=False)
class _Tensor(_Inert):
    """A tensor as a view of a storage; read by `_TorchArchive.array`."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    negate: bool = False

    @property
    def dtype_name(self) -> str:
        return STORAGES_BY_CODE[self.storage.code]


STORAGES_BY_CODE = {code: name for code, name in STORAGES.values()}


def _itemsize(code: str) -> int:
    return 2 if code == "bf16" else np.dtype(code).itemsize


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or not all(type(s) is int and s >= 0 for s in v):
        raise pickle.UnpicklingError(f"{what} must be a tuple of non-negative integers, got {v!r:.80}")
    return tuple(v)


class _Unpickler(pickle.Unpickler):
    """Allow-listed globals only; storages resolved against the zip's records."""

    def __init__(self, data: bytes, archive: _TorchArchive):
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol 2's name for it
        full = f"{module}.{name}"
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in _REBUILD:
            return getattr(self, _REBUILD[name])
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return _rebuild_from_type_v2
        if module in ("torch", "torch.storage") and name in STORAGES:
            return _StorageType(name, STORAGES[name][0])
        if module == "torch" and name in DTYPES:
            return _Dtype(name, DTYPES[name])
        if full in ("torch.Tensor", "torch.nn.parameter.Parameter"):
            return _TypeMarker(full)
        if full == "torch.Size":
            return _size
        if full == "torch.device":
            return _device
        if full == "_codecs.encode":
            return _encode
        if full in ("builtins.set", "builtins.frozenset"):
            return _container(set if name == "set" else frozenset)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _np_scalar
        if full == "numpy.dtype":
            return _np_dtype
        if module == "torch" and name.endswith("Storage"):  # complex, quantized, float8...
            raise InputError(
                f"{self.archive.path}: holds {name} tensors, a dtype lstm-diag does not read "
                "(floating point, integer and bool tensors only)"
            )
        hint = ""
        if module.startswith("torch.nn.") or module == "__main__" or name[:1].isupper():
            hint = "; if this is torch.save(model), save model.state_dict() instead"
        raise InputError(
            f"{self.archive.path}: refused global '{full}' in the pickle: lstm-diag reads only "
            f"tensors, dicts, lists, numbers and strings from a torch file (nothing was executed){hint}"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or type(numel) is not int:
            raise pickle.UnpicklingError(f"malformed storage reference {pid!r:.80}")
        if key in self.storages:
            s = self.storages[key]
            if s.code != stype.code or s.numel != numel:
                raise pickle.UnpicklingError(f"storage {key} is referenced with two different types")
            return s
        s = self.archive.storage(key, stype.code, numel)
        self.storages[key] = s
        return s

    # --- tensor rebuild functions (called by the pickle's REDUCE with the saved args)

    def rebuild_v2(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        return self._tensor(storage, offset, size, stride, metadata)

    def rebuild_v1(self, storage, offset, size, stride):
        return self._tensor(storage, offset, size, stride, None)

    def rebuild_v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        if not isinstance(dtype, _Dtype):
            raise pickle.UnpicklingError("_rebuild_tensor_v3 needs a dtype")
        if dtype.code != storage.code:  # an untyped (byte) storage viewed at another dtype
            storage = self.archive.retyped(storage, dtype.code)
        return self._tensor(storage, offset, size, stride, metadata)

    def rebuild_parameter(self, data, requires_grad=False, hooks=None, state=None):
        if not isinstance(data, _Tensor):
            raise pickle.UnpicklingError("_rebuild_parameter needs a tensor")
        return data

    def _tensor(self, storage, offset, size, stride, metadata) -> _Tensor:
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("a tensor without a storage")
        if type(offset) is not int or offset < 0:
            raise pickle.UnpicklingError(f"bad storage offset {offset!r:.40}")
        size, stride = _ints(size, "size"), _ints(stride, "stride")
        if len(size) != len(stride):
            raise pickle.UnpicklingError(f"size {size} and stride {stride} differ in length")
        negate = False
        if metadata:
            if not isinstance(metadata, dict) or set(metadata) - {"conj", "neg"}:
                raise pickle.UnpicklingError(f"unknown tensor metadata {metadata!r:.80}")
            negate = bool(metadata.get("neg"))
        self.archive.check_extent(storage, offset, size, stride)
        return _Tensor(storage, offset, size, stride, negate)


_REBUILD = {
    "_rebuild_tensor_v2": "rebuild_v2",
    "_rebuild_tensor": "rebuild_v1",
    "_rebuild_tensor_v3": "rebuild_v3",
    "_rebuild_parameter": "rebuild_parameter",
    "_rebuild_parameter_with_state": "rebuild_parameter",
}


def _rebuild_from_type_v2(func, new_type, args, state):
    """Tensors with Python attributes or subclasses: only Tensor and Parameter are admitted."""
    if not isinstance(new_type, _TypeMarker) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("_rebuild_from_type_v2 for a type that is not a tensor")
    if not (isinstance(func, types.MethodType) and isinstance(func.__self__, _Unpickler)):
        raise pickle.UnpicklingError("_rebuild_from_type_v2 with a function that is not a tensor rebuild")
    return func(*args)


def _size(*args):
    return tuple(_ints(args[0] if args else (), "torch.Size"))


def _device(*args):
    return str(args[0]) if args else "cpu"


def _encode(text, encoding="latin1"):
    """_codecs.encode as protocol-2 pickles use it for bytes: str -> bytes, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is admitted only for bytes as latin1 text")
    return text.encode("latin1")


def _container(kind):
    def make(items=()):
        if not isinstance(items, (list, tuple)):
            raise pickle.UnpicklingError(f"{kind.__name__} of a {type(items).__name__}")
        return kind(items)

    return make


@dataclass(frozen=True, eq=False)
class _NpDtype(_Inert):
    code: str


def _np_dtype(code, align=False, copy=True):
    if not isinstance(code, str) or not re.fullmatch(r"[bifu][1248]|b1|\?", code):
        raise pickle.UnpicklingError(f"numpy dtype {code!r:.20} is not a plain number type")
    return _NpDtypeBuild(code)


class _NpDtypeBuild:
    """numpy.dtype as a pickle rebuilds it: the BUILD state carries only the byte order."""

    __slots__ = ("code", "order")

    def __init__(self, code: str):
        self.code, self.order = code, "<"

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")):
            raise pickle.UnpicklingError("malformed numpy dtype state")
        self.order = "<" if state[1] in ("|", "=") else state[1]


def _np_scalar(dtype, data=None):
    """A numpy scalar (np.float64(0.5) in a checkpoint) as a Python number."""
    if not isinstance(dtype, _NpDtypeBuild) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar of an unsupported kind")
    dt = np.dtype(dtype.code).newbyteorder(dtype.order)
    if len(data) != dt.itemsize:
        raise pickle.UnpicklingError("numpy scalar with the wrong number of bytes")
    return np.frombuffer(data, dtype=dt)[0].item()


class _TorchArchive:
    """The zip: its records, sizes checked before anything is read."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, prefix: str):
        self.path, self.zf, self.prefix = path, zf, prefix
        self.file_size = path.stat().st_size
        self._flat: dict[tuple[str, str], np.ndarray] = {}  # storages read, shared by their views
        order = self._small("byteorder")
        if order is None:
            self.order = "<"  # files from before the record existed are little-endian
        elif order.strip() in (b"little", b"big"):
            self.order = "<" if order.strip() == b"little" else ">"
        else:
            raise InputError(f"{path}: unknown byteorder record {order[:20]!r}")

    def member(self, name: str) -> zipfile.ZipInfo:
        try:
            info = self.zf.getinfo(self.prefix + name)
        except KeyError:
            raise InputError(f"{self.path}: the torch file has no record {name!r}") from None
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise InputError(f"{self.path}: record {name} declares two different sizes; refused")
        elif info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise InputError(
                f"{self.path}: record {name} declares {info.file_size} bytes from "
                f"{info.compress_size} compressed (ratio over {MAX_RATIO}:1); refused"
            )
        if info.header_offset + info.compress_size > self.file_size:
            raise InputError(
                f"{self.path}: record {name} declares {info.compress_size} bytes, "
                f"more than the {self.file_size}-byte file holds (truncated?)"
            )
        return info

    def _small(self, name: str) -> bytes | None:
        if self.prefix + name not in self.zf.NameToInfo:
            return None
        info = self.member(name)
        if info.file_size > 64:
            raise InputError(f"{self.path}: record {name} is {info.file_size} bytes, expected a word")
        return self.read(name, info.file_size)

    def read(self, name: str, nbytes: int) -> bytes:
        try:
            with self.zf.open(self.prefix + name) as fh:
                data = fh.read(nbytes)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise InputError(f"{self.path}: record {name} cannot be read ({e})") from None
        if len(data) != nbytes:
            raise InputError(f"{self.path}: record {name} holds {len(data)} bytes, expected {nbytes}")
        return data

    def storage(self, key: str, code: str, numel: int) -> _Storage:
        if numel < 0:
            raise pickle.UnpicklingError(f"storage {key} has {numel} elements")
        record = f"data/{key}"
        nbytes = numel * _itemsize(code)
        info = self.member(record)
        if nbytes > info.file_size:
            raise InputError(
                f"{self.path}: storage {key} declares {numel} x {_itemsize(code)} bytes = {nbytes}, "
                f"but its record holds {info.file_size}; refused"
            )
        return _Storage(key, code, numel, record)

    def retyped(self, s: _Storage, code: str) -> _Storage:
        return _Storage(s.key, code, s.numel * _itemsize(s.code) // _itemsize(code), s.record)

    def check_extent(self, s: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        n = 1
        for d in size:
            n *= d
        if n == 0:
            return
        last = offset + sum((d - 1) * st for d, st in zip(size, stride, strict=True))
        if last >= s.numel:
            raise InputError(
                f"{self.path}: a tensor of size {size}, stride {stride}, offset {offset} reaches "
                f"element {last} of storage {s.key}, which has {s.numel}; refused"
            )
        if n > s.numel and n * _itemsize(s.code) > MAX_EXPANDED_BYTES:
            raise InputError(
                f"{self.path}: a tensor of size {size} repeats storage {s.key} ({s.numel} elements) "
                f"through overlapping strides to {n} elements; refused"
            )

    def _storage_values(self, s: _Storage) -> np.ndarray:
        """A storage's elements, (numel,), read once and shared by every tensor viewing it."""
        if (s.record, s.code) not in self._flat:
            buf = np.frombuffer(self.read(s.record, s.numel * _itemsize(s.code)), dtype=np.uint8)
            if s.code == "bf16":  # bfloat16 is the high 16 bits of a float32: exact
                u16 = buf.view(np.dtype("u2").newbyteorder(self.order))
                flat = (u16.astype(np.uint32) << 16).view(np.float32)
            else:
                dt = np.dtype(s.code)
                flat = buf.view(dt.newbyteorder(self.order) if dt.itemsize > 1 else dt)
            flat.flags.writeable = False
            self._flat[(s.record, s.code)] = flat
        return self._flat[(s.record, s.code)]

    def array(self, t: _Tensor) -> np.ndarray:
        """The tensor's values: a read-only view of its storage (bfloat16 -> float32)."""
        flat = self._storage_values(t.storage)
        if 0 in t.shape:
            out = np.zeros(t.shape, dtype=flat.dtype)
            out.flags.writeable = False
        else:
            out = np.lib.stride_tricks.as_strided(
                flat[t.offset :],
                shape=t.shape,
                strides=[st * flat.itemsize for st in t.stride],
                writeable=False,
            )
        if t.negate:  # a tensor saved with its lazy-negation bit set
            out = -out
            out.flags.writeable = False
        return out


def find_prefix(names: list[str]) -> str | None:
    """The archive folder holding data.pkl (`archive/`), or None if this is no torch.save zip."""
    for n in names:
        m = re.fullmatch(r"([^/]+/)?data\.pkl", n)
        if m:
            return m.group(1) or ""
    return None


def is_torchscript(names: list[str]) -> bool:
    return any(re.fullmatch(r"[^/]+/(constants\.pkl|code/.*)", n) for n in names)


def read_torch(path: str | Path) -> LoadedFile:
    """Every tensor of a torch.save file under its dotted name, lazily; scalars in meta."""
    p = Path(path)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as e:
        if _starts_with(p, LEGACY_MAGIC):
            raise InputError(legacy_message(p)) from None
        raise InputError(f"{p}: not a torch.save zip file ({e.__class__.__name__})") from None
    names = zf.namelist()
    if is_torchscript(names):
        raise InputError(torchscript_message(p))
    prefix = find_prefix(names)
    if prefix is None:
        raise InputError(f"{p}: a zip file without data.pkl: not a torch.save file")
    archive = _TorchArchive(p, zf, prefix)
    info = archive.member("data.pkl")
    if info.file_size > MAX_PICKLE_BYTES:
        raise InputError(f"{p}: data.pkl declares {info.file_size} bytes; refused (limit {MAX_PICKLE_BYTES})")
    unpickler = _Unpickler(archive.read("data.pkl", info.file_size), archive)
    try:
        tree = unpickler.load()
    except InputError:
        raise
    except RecursionError:
        raise InputError(f"{p}: the pickle is nested too deeply; refused") from None
    except MemoryError:
        raise InputError(f"{p}: the pickle needs more memory than this machine has; refused") from None
    except Exception as e:  # UnpicklingError and whatever a malformed pickle raises
        raise InputError(f"{p}: not a valid torch.save pickle ({e.__class__.__name__}: {e})") from None
    flat = flatten(tree, p, lambda v: isinstance(v, _Tensor))
    tensors: dict[str, _Tensor] = flat.leaves
    infos = {k: ArrayInfo(t.shape, t.dtype_name) for k, t in tensors.items()}
    return LoadedFile(
        path=p,
        format="torch",
        arrays=LazyArrays(infos, lambda name: archive.array(tensors[name])),
        info=infos,
        meta=flat.meta,
        sections=flat.sections,
        skipped=flat.skipped,
    )


def _starts_with(p: Path, magic: bytes) -> bool:
    try:
        with open(p, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False


def legacy_message(p: Path) -> str:
    return (
        f"{p}: a legacy torch.save file (PyTorch < 1.6 or _use_new_zipfile_serialization=False), "
        "which lstm-diag does not read; re-save it with a current PyTorch: "
        "torch.save(torch.load(f), 'model.pt')"
    )


def torchscript_message(p: Path) -> str:
    return (
        f"{p}: a TorchScript archive (torch.jit.save), which lstm-diag does not read; "
        "save the weights instead: torch.save(model.state_dict(), 'model.pt')"
    )
