"""Any readable model -> arrays under load_state_dict-ready PyTorch names (for `convert`).

Keras and ONNX files arrive already converted (formats/keras_file.py, onnx_file.py) under
`lstm.`, `head.` and `embedding.`; PyTorch-named files (torch.save, safetensors, npz)
keep their layout: their nn.LSTM, linear head and embedding are found as `inspect` finds
them (setup/discover.py) and renamed. The result loads with `module.load_state_dict(..., strict=True)` into a
module whose nn.LSTM is `<prefix>` (`lstm.` by default), with an nn.Linear `head` and an
nn.Embedding `embedding` when the model has them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..formats.loaded import LoadedFile
from .discover import discover


@dataclass
class StateDict:
    arrays: dict[str, np.ndarray]  # output name -> array (C-contiguous)
    origin: dict[str, str]  # output name -> where it came from in the input file
    left_out: list[str] = field(default_factory=list)  # input arrays not written


def state_dict(loaded: LoadedFile, prefix: str = "lstm.", lstm_only: bool = False) -> StateDict:
    """The model's arrays renamed: the LSTM under `prefix`, then `head.`, `embedding.`."""
    if prefix and not prefix.endswith("."):
        prefix += "."
    names = list(loaded.arrays)
    renamed: dict[str, str] = {}  # input name -> output name
    if loaded.converted is not None:
        for name in names:
            if name.startswith("lstm."):
                renamed[name] = prefix + name[len("lstm.") :]
            elif not lstm_only:
                renamed[name] = name
        where = {line.split(" ", 1)[0]: line.split(" <- ", 1)[-1] for line in loaded.converted.mapping}
    else:  # PyTorch names already: find the model (setup/discover.py) and re-prefix it
        found = discover(loaded.shapes(), sections=loaded.sections, source=str(loaded.path))
        for engine_name, name in found.lstm.names.items():
            renamed[name] = prefix + engine_name
        if not lstm_only and found.head is not None:
            renamed[found.head.weight] = "head.weight"
            if found.head.bias is not None:
                renamed[found.head.bias] = "head.bias"
        if not lstm_only and found.embedding is not None:
            renamed[found.embedding.weight] = "embedding.weight"
        where = {}
    arrays = {new: np.ascontiguousarray(loaded.arrays[old]) for old, new in renamed.items()}
    origin = {new: where.get(old, old) for old, new in renamed.items()}
    return StateDict(arrays, origin, [n for n in names if n not in renamed])


def write_state_dict(target, sd: StateDict, loaded: LoadedFile):
    """Write atomically as .npz or .safetensors (by extension); never over the input file."""
    import io
    from pathlib import Path

    from ..errors import OutputError
    from .outputs import atomic_write_bytes

    p = Path(target)
    suffix = p.suffix.lower()
    if suffix not in (".npz", ".safetensors"):
        raise OutputError(f"{p}: the output must end in .npz or .safetensors")
    try:
        same = p.exists() and p.resolve() == Path(loaded.path).resolve()
    except OSError:
        same = False
    if same:
        raise OutputError(f"{p}: is the input file; write the converted model elsewhere")
    if not sd.arrays:
        raise InputError(f"{loaded.path}: nothing to write")
    if suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **sd.arrays)
        return atomic_write_bytes(p, buf.getvalue())
    try:
        from safetensors.numpy import save
    except ImportError:
        raise InputError(
            f"{p}: writing .safetensors needs the safetensors package: pip install 'lstm-diag[safetensors]'"
        ) from None
    meta = {"converted_from": Path(loaded.path).name, "source_format": loaded.format}
    return atomic_write_bytes(p, save(sd.arrays, metadata=meta))
