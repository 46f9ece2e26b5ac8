"""Keras models: `.keras` archives (Keras 3), `.weights.h5` files and legacy `.h5` files.

Layouts, as the Keras 3 source writes them (keras/src/saving/saving_lib.py,
keras/src/layers/rnn/lstm.py; docs/formats.md):
- `.keras`: a zip of `config.json` (the architecture), `metadata.json` and
  `model.weights.h5`. `.weights.h5` is that HDF5 file alone.
- In the HDF5 file every layer is a group `layers/<auto name>` (`lstm`, `lstm_1`,
  `bidirectional`, `dense`, ... numbered per class in the model's layer order), with its
  variables as datasets `vars/0`, `vars/1`, ... in creation order and the user's layer name
  in the attribute `vars.attrs["name"]`. An LSTM keeps them in its cell: `cell/vars/0..2` =
  kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H); a Bidirectional wrapper in
  `forward_layer/cell/vars` and `backward_layer/cell/vars`. Weightless layers are empty
  groups.
- Legacy `.h5` (Keras 2, `model.save("m.h5")`): `model_weights/` (or the root) lists the
  layers in order in `attrs["layer_names"]`, each group lists its variables by name in
  `attrs["weight_names"]` (`.../lstm_cell/kernel:0`), and `attrs["model_config"]` holds the
  architecture.

Keras' LSTM computes z = x kernel + h recurrent_kernel + bias, gates in the order i, f, c, o,
which is PyTorch's i, f, g, o: the conversion is W_ih = kernel^T, W_hh = recurrent_kernel^T,
b_ih = bias, b_hh = 0 (exact; only the sum of the two biases enters eq. (1)).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.names import EMBEDDING_WEIGHT, HEAD_BIAS, HEAD_WEIGHT
from ..errors import InputError
from .converted import Converted, check_size, check_stacked, float_array, lstm_name, need

MAX_CONFIG_BYTES = 16 * 2**20
MAX_H5_BYTES = 8 * 2**30
MAX_RATIO = 1000  # compressed zip members may expand at most this much

# Group names Keras 3 gives layers (snake_case of the class, numbered per class).
KINDS = {
    "input_layer": "InputLayer",
    "embedding": "Embedding",
    "lstm": "LSTM",
    "bidirectional": "Bidirectional",
    "dense": "Dense",
    "time_distributed": "TimeDistributed",
    "dropout": "Dropout",
    "spatial_dropout1d": "SpatialDropout1D",
    "gaussian_noise": "GaussianNoise",
    "gaussian_dropout": "GaussianDropout",
    "gru": "GRU",
    "simple_rnn": "SimpleRNN",
}
# Layers that are the identity at inference time (the analysis is the model in eval mode).
IDENTITY_AT_INFERENCE = {
    "InputLayer",
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
}
RECURRENT = {"LSTM", "Bidirectional"}
LAYER_ROLES = {  # variables of a Keras 3 layer, in creation order
    "LSTM": ("kernel", "recurrent_kernel", "bias"),
    "Dense": ("kernel", "bias"),
    "Embedding": ("embeddings",),
}


@dataclass
class KLayer:
    """One layer as found in the file: where, what, its config, its variables by role."""

    name: str  # the user's layer name
    kind: str  # the Keras class: "LSTM", "Dense", ...
    group: str  # HDF5 path of the layer
    config: dict[str, Any] = field(default_factory=dict)  # {} when the file has no architecture
    vars: dict[str, Any] = field(default_factory=dict)  # role ("kernel", "forward.bias") -> h5py.Dataset


def read_keras(path: str | Path):
    """A Keras file as a LoadedFile of PyTorch-named arrays (see formats/loaded.py)."""
    from .loaded import from_converted

    return from_converted(Path(path), "keras", convert_keras(path))


def convert_keras(path: str | Path) -> Converted:
    p = Path(path)
    h5py = need("h5py", "keras", p)
    raw, config, what = _open(p, h5py)
    try:
        with h5py.File(raw, "r") as h5:
            layers, source = _layers(h5, config, p)
            conv = _assemble(layers, p, config is not None)
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5 file ({e})") from None
    conv.source = f"{what}, {source}"
    return conv


# ----------------------------------------------------------------------------- opening


def _open(p: Path, h5py) -> tuple[Any, dict | None, str]:
    """(HDF5 file or buffer, architecture config or None, one phrase on the container)."""
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                config = json.loads(_member(zf, "config.json", MAX_CONFIG_BYTES, p))
                weights = _member(zf, "model.weights.h5", MAX_H5_BYTES, p)
        except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{p}: not a valid .keras archive ({e.__class__.__name__}: {e})") from None
        return io.BytesIO(weights), config, "Keras 3 .keras archive (config.json + model.weights.h5)"
    try:
        with h5py.File(p, "r") as h5:
            config = _legacy_config(h5, p)
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5 file ({e})") from None
    return str(p), config, "Keras HDF5 weights file"


def _member(zf: zipfile.ZipFile, name: str, limit: int, p: Path) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise InputError(
            f"{p}: a .keras archive must hold {name} (found: {', '.join(zf.namelist())})"
        ) from None
    if info.file_size > limit:
        raise InputError(
            f"{p}: {name} declares {info.file_size / 2**20:.0f} MB; limit {limit / 2**20:.0f} MB"
        )
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
        raise InputError(f"{p}: {name} expands {info.file_size // info.compress_size}:1; refused")
    return zf.read(name)


def _legacy_config(h5, p: Path) -> dict | None:
    text = h5.attrs.get("model_config")
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if len(text) > MAX_CONFIG_BYTES:
        raise InputError(f"{p}: model_config is {len(text)} characters; limit {MAX_CONFIG_BYTES}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: model_config is not valid JSON ({e})") from None


def _child(group, name: str, p: Path):
    """group[name] following only links inside the file (external and soft links refused)."""
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise InputError(f"{p}: {group.name}/{name} is a {type(link).__name__}, which is refused")
    return group[name]


# ----------------------------------------------------------------------------- layers


def _layers(h5, config: dict | None, p: Path) -> tuple[list[KLayer], str]:
    """The layers in the model's order, each with its variables by role."""
    if _child(h5, "layers", p) is not None:
        found = _layers_v3(h5["layers"], p)
        source = "Keras 3 layout (layers/<name>/vars/<n>, an LSTM's in cell/vars)"
    else:
        root = _child(h5, "model_weights", p) or h5
        if "layer_names" not in root.attrs:
            raise InputError(f"{p}: an HDF5 file without Keras layers (no layers/ group, no layer_names)")
        found = _layers_legacy(root, p)
        source = "legacy Keras 2 layout (layer_names, weight_names)"
    layer_cfgs = _config_layers(config, p) if config is not None else None
    if layer_cfgs is None:
        return _order_without_config(found, p, legacy=source.startswith("legacy")), source
    by_name = {k.name: k for k in found}
    ordered = []
    for cfg in layer_cfgs:
        name = cfg.get("config", {}).get("name", "")
        layer = by_name.pop(name, None) or KLayer(name, cfg.get("class_name", "?"), "(no weights)")
        layer.kind, layer.config = cfg.get("class_name", layer.kind), cfg.get("config", {})
        ordered.append(layer)
    leftover = [k.name for k in by_name.values() if k.vars]
    if leftover:
        raise InputError(f"{p}: weights of layers {', '.join(leftover)} are not in the model's config")
    return ordered, source


def _layers_v3(layers, p: Path) -> list[KLayer]:
    out = []
    for gname in layers:
        g = _child(layers, gname, p)
        own = _child(g, "vars", p)
        name = own.attrs.get("name", gname) if own is not None else gname
        name = name.decode() if isinstance(name, bytes) else str(name)
        kind = KINDS.get(re.sub(r"_\d+$", "", gname), gname)
        layer = KLayer(name, kind, g.name)
        if _child(g, "forward_layer", p) is not None:
            layer.kind = "Bidirectional"
            for d in ("forward", "backward"):
                cell = _child(_child(g, f"{d}_layer", p), "cell", p)
                layer.vars.update({f"{d}.{r}": v for r, v in _positional(cell, "LSTM", p).items()})
        elif _child(g, "cell", p) is not None:
            layer.vars = _positional(g["cell"], "LSTM", p)
        elif _child(g, "layer", p) is not None:  # TimeDistributed(Dense): the Dense's variables
            layer.vars = _positional(g["layer"], "Dense", p)
        elif own is not None:
            layer.vars = _positional(g, layer.kind, p)
        out.append(layer)
    return out


def _positional(g, kind: str, p: Path) -> dict[str, Any]:
    """vars/0, vars/1, ... named by the role the layer creates them in (LAYER_ROLES)."""
    vars_ = _child(g, "vars", p)
    if vars_ is None:
        return {}
    keys = sorted((k for k in vars_ if k.isdigit()), key=int)
    roles = LAYER_ROLES.get(kind)
    if roles is None or len(keys) > len(roles):
        return {f"var{k}": _child(vars_, k, p) for k in keys}
    return {roles[i]: _child(vars_, k, p) for i, k in enumerate(keys)}


def _layers_legacy(root, p: Path) -> list[KLayer]:
    out = []
    for raw in root.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        g = _child(root, name, p)
        layer = KLayer(name, KINDS.get(re.sub(r"_\d+$", "", name), name), g.name)
        for wraw in g.attrs.get("weight_names", []):
            wname = wraw.decode() if isinstance(wraw, bytes) else str(wraw)
            role = wname.rsplit("/", 1)[-1].split(":")[0]
            if "/forward_" in f"/{wname}" or "/backward_" in f"/{wname}":
                layer.kind = "Bidirectional"
                role = ("forward." if "/forward_" in f"/{wname}" else "backward.") + role
            ds = g
            for part in wname.split("/"):
                ds = _child(ds, part, p)
                if ds is None:
                    raise InputError(f"{p}: {g.name} lists weight {wname}, which is not in the file")
            layer.vars[role] = ds
        out.append(layer)
    return out


def _config_layers(config: dict, p: Path) -> list[dict] | None:
    """The architecture's layers in order, when it is one chain; None if the file has none."""
    body = config.get("config") if isinstance(config, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        return None
    layers = body["layers"]
    if config.get("class_name") == "Sequential":
        return layers
    previous = None
    for cfg in layers:  # a Functional model: each layer must read the one before it
        sources = _sources(cfg.get("inbound_nodes") or [])
        if cfg.get("class_name") != "InputLayer" and sources != [previous]:
            name = cfg.get("config", {}).get("name", "?")
            raise InputError(
                f"{p}: layer {name!r} reads {', '.join(sources) or 'nothing'}; lstm-diag reads models that "
                "are one chain of layers (Embedding -> LSTM ... -> Dense)"
            )
        previous = cfg.get("config", {}).get("name")
    return layers


def _wraps_dense(layer: KLayer) -> bool:
    """TimeDistributed(Dense) is a Dense on every step; other wrapped layers are not read."""
    wrapped = layer.config.get("layer", {}).get("class_name")
    return wrapped == "Dense" if wrapped else set(layer.vars) <= {"kernel", "bias"} and "kernel" in layer.vars


def _sources(nodes: list) -> list[str]:
    """Names of the layers a Functional layer reads: Keras 3 writes `keras_history`
    entries, Keras 2 nested lists [[[name, node, tensor, kwargs], ...]]."""
    text = json.dumps(nodes)
    if "keras_history" in text:
        return re.findall(r'"keras_history": \["([^"]+)"', text)
    return [
        e[0]
        for node in nodes
        if isinstance(node, list)
        for e in node
        if isinstance(e, list) and e and isinstance(e[0], str)
    ]


def _order_without_config(found: list[KLayer], p: Path, legacy: bool) -> list[KLayer]:
    """Keras 3 numbers groups per class in layer order (lstm, lstm_1, ...): sort by it."""
    if legacy:
        return found  # layer_names is the model's order
    rank = {"InputLayer": 0, "Embedding": 1, "LSTM": 2, "Bidirectional": 2, "Dense": 3}
    kinds = {k.kind for k in found if k.kind in RECURRENT}
    if len(kinds) > 1:
        raise InputError(
            f"{p}: LSTM and Bidirectional layers together, and no config to order them: "
            "use the .keras file (it carries the architecture)"
        )

    def key(k: KLayer):
        m = re.search(r"_(\d+)$", k.group)
        return rank.get(k.kind, 9), int(m.group(1)) if m else 0

    return sorted(found, key=key)


# ----------------------------------------------------------------------------- assembly


def _assemble(layers: list[KLayer], p: Path, has_config: bool) -> Converted:
    conv = Converted()
    stack: list[KLayer] = []
    embedding = dense = None
    for layer in layers:
        if layer.kind in IDENTITY_AT_INFERENCE:
            if layer.kind != "InputLayer":
                conv.notes.append(f"{layer.name} ({layer.kind}): the identity at inference, skipped")
            continue
        what = f"layer {layer.name!r} ({layer.kind})"
        if dense is not None:
            raise InputError(f"{p}: {what} follows the Dense head; {_CHAIN}")
        if layer.kind == "Embedding" and not stack and embedding is None:
            embedding = layer
        elif layer.kind in RECURRENT:
            stack.append(layer)
        elif layer.kind == "Dense" and stack:
            dense = layer
        elif layer.kind == "TimeDistributed" and stack and _wraps_dense(layer):
            layer.config = layer.config.get("layer", {}).get("config", {})  # the Dense's settings
            dense = layer
        elif layer.kind in ("GRU", "SimpleRNN"):
            raise InputError(f"{p}: {what}: a {layer.kind} is not an LSTM; lstm-diag analyses LSTMs")
        else:
            where = "after the LSTM" if stack else "before the LSTM"
            raise InputError(f"{p}: {what} {where}: {_CHAIN}")
    if not stack:
        raise InputError(f"{p}: no LSTM layer found (layers: {', '.join(k.name for k in layers) or 'none'})")
    if not has_config:
        conv.notes.append(
            "no architecture in the file (weights only): layers ordered by their Keras names; "
            "activations and return_sequences could not be checked"
        )
    kinds = {k.kind for k in stack}
    if len(kinds) > 1:
        raise InputError(
            f"{p}: the LSTM layers mix Bidirectional and one-direction layers "
            f"({', '.join(f'{k.name} ({k.kind})' for k in stack)}); nn.LSTM (and the engine) has one "
            "bidirectional setting for all layers"
        )
    width, H = _embedding(embedding, conv, p), None
    for k, layer in enumerate(stack):
        width, H = _recurrent(
            layer, k, width, H, conv, p, top=k == len(stack) - 1, has_dense=dense is not None
        )
    if dense is not None:
        _dense(dense, width, conv, p)
    return conv


_CHAIN = (
    "lstm-diag reads Embedding -> LSTM/Bidirectional(LSTM) ... -> Dense chains; for another head, "
    "use the upstream-gradient mode (lstm_diag.capture)"
)


def _read(layer: KLayer, role: str, p: Path) -> np.ndarray:
    ds = layer.vars.get(role)
    if ds is None:
        raise InputError(f"{p}: layer {layer.name!r} ({layer.kind}) has no {role} variable")
    check_size(ds.shape, ds.dtype.itemsize, p, f"{ds.name}")
    return float_array(np.asarray(ds[()]), p, f"{ds.name} ({role})")


def _origin(layer: KLayer, role: str) -> str:
    """Where a variable came from: its HDF5 path, the role it has there, the layer's name."""
    return f"{layer.vars[role].name} ({role.split('.')[-1]} of {layer.name!r})"


def _embedding(layer: KLayer | None, conv: Converted, p: Path) -> int | None:
    if layer is None:
        return None
    if layer.config.get("mask_zero"):
        raise InputError(
            f"{p}: Embedding {layer.name!r} has mask_zero=True (steps with token 0 are skipped by the LSTM), "
            "which lstm-diag does not model; pad with a real token or mask the loss with y = -100"
        )
    E = _read(layer, "embeddings", p)  # (V, I)
    if E.ndim != 2:
        raise InputError(f"{p}: Embedding {layer.name!r} has embeddings of shape {E.shape}, expected (V, I)")
    conv.put(EMBEDDING_WEIGHT, E, f"{_origin(layer, 'embeddings')} (V, I), as is")
    return E.shape[1]


def _lstm_config(cfg: dict, name: str, p: Path, bidirectional: bool) -> None:
    if not cfg:
        return
    for key, want in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        got = cfg.get(key, want)
        if got != want:
            raise InputError(f"{p}: LSTM {name!r} has {key}={got!r}; the LSTM equations need {want}")
    if cfg.get("go_backwards") and not bidirectional:
        raise InputError(
            f"{p}: LSTM {name!r} has go_backwards=True outside a Bidirectional wrapper: a reverse-only "
            "layer has no nn.LSTM equivalent; reverse x in time and set go_backwards=False"
        )
    if cfg.get("time_major"):
        raise InputError(f"{p}: LSTM {name!r} has time_major=True, which lstm-diag does not read")


def _recurrent(
    layer: KLayer,
    k: int,
    width: int | None,
    H: int | None,
    conv: Converted,
    p: Path,
    top: bool,
    has_dense: bool,
) -> tuple[int, int]:
    """One LSTM or Bidirectional(LSTM) layer as nn.LSTM layer k: (output width D*H, H)."""
    cfg = layer.config
    if layer.kind == "Bidirectional":
        merge = cfg.get("merge_mode", "concat")
        if merge != "concat":
            raise InputError(
                f"{p}: Bidirectional {layer.name!r} has merge_mode={merge!r}; nn.LSTM concatenates the "
                "two directions (merge_mode='concat')"
            )
        wrapped = cfg.get("layer", {})
        if wrapped.get("class_name", "LSTM") != "LSTM":
            raise InputError(
                f"{p}: Bidirectional {layer.name!r} wraps a {wrapped['class_name']}, not an LSTM"
            )
        inner = wrapped.get("config", {})
        backward = cfg.get("backward_layer", {}).get("config", {})
        _lstm_config(inner, layer.name, p, True)
        _lstm_config(backward, layer.name, p, True)
        directions = [("forward.", False), ("backward.", True)]
    else:
        inner = cfg
        _lstm_config(inner, layer.name, p, False)
        directions = [("", False)]
    for role_prefix, reverse in directions:
        H = _direction(layer, role_prefix, (k, reverse), width, H, conv, p)
    returns_sequences = inner.get("return_sequences") if inner else None
    if not top and returns_sequences is False:
        raise InputError(f"{p}: LSTM {layer.name!r} has return_sequences=False but another LSTM follows it")
    if top and has_dense and returns_sequences is not None:
        conv.target = "all" if returns_sequences else "last"
        if layer.kind == "Bidirectional" and not returns_sequences:
            raise InputError(
                f"{p}: Bidirectional {layer.name!r} has return_sequences=False: its backward half returns "
                "its state at t=1, while nn.LSTM's out[:, -1] (the engine's target 'last') reads both "
                "directions at t=T; use return_sequences=True with a per-step head, or the "
                "upstream-gradient mode"
            )
    for key in ("dropout", "recurrent_dropout"):
        if inner and inner.get(key):
            conv.notes.append(f"{layer.name}: {key}={inner[key]} is training-only; analysed in eval mode")
    if inner and inner.get("stateful"):
        conv.notes.append(
            f"{layer.name}: stateful=True; analysed from zero states unless data.h0/c0 are given"
        )
    return H * len(directions), H


def _direction(
    layer: KLayer,
    role: str,
    unit: tuple[int, bool],
    width: int | None,
    H: int | None,
    conv: Converted,
    p: Path,
) -> int:
    """One direction (`role` "", "forward." or "backward.") of a Keras LSTM layer as nn.LSTM's
    unit (layer k, reverse); returns its hidden size."""
    kernel, recurrent = _read(layer, role + "kernel", p), _read(layer, role + "recurrent_kernel", p)
    what = f"LSTM {layer.name!r}" + (f" ({role[:-1]} direction)" if role else "")
    h = recurrent.shape[0] if recurrent.ndim == 2 else -1
    if recurrent.ndim != 2 or kernel.ndim != 2 or kernel.shape[1] != recurrent.shape[1]:
        raise InputError(
            f"{p}: {what}: kernel {kernel.shape} and recurrent_kernel {recurrent.shape} do not "
            "make an LSTM (expected (I, 4H) and (H, 4H))"
        )
    if recurrent.shape[1] == 3 * h:
        raise InputError(
            f"{p}: {what}: recurrent_kernel {recurrent.shape} has 3 gate blocks: a GRU, not an LSTM"
        )
    if recurrent.shape[1] != 4 * h:
        raise InputError(f"{p}: {what}: recurrent_kernel {recurrent.shape} is not (H, 4H)")
    check_stacked(f"{p}: {what}", h, H, f"kernel {kernel.shape}", kernel.shape[0], width)
    conv.put(
        lstm_name("weight_ih", *unit),
        np.ascontiguousarray(kernel.T),
        f"{_origin(layer, role + 'kernel')} (I, 4H), transposed; gates i, f, c, o = i, f, g, o",
    )
    conv.put(
        lstm_name("weight_hh", *unit),
        np.ascontiguousarray(recurrent.T),
        f"{_origin(layer, role + 'recurrent_kernel')} (H, 4H), transposed",
    )
    if role + "bias" in layer.vars:
        bias = _read(layer, role + "bias", p)
        if bias.shape != (4 * h,):
            raise InputError(f"{p}: {what}: bias {bias.shape}, expected ({4 * h},)")
        conv.put(lstm_name("bias_ih", *unit), bias, f"{_origin(layer, role + 'bias')} (4H), as is")
        zeros = "zeros (Keras has one bias; only the sum counts)"
        conv.put(lstm_name("bias_hh", *unit), np.zeros_like(bias), zeros)
    return h


def _dense(layer: KLayer, width: int, conv: Converted, p: Path) -> None:
    activation = layer.config.get("activation", "linear")
    if activation == "softmax":
        conv.head_activation = "softmax"
        conv.notes.append(
            f"{layer.name}: Dense with softmax: the head is its linear part and the softmax is "
            "loss.type cross_entropy's (the model's outputs are compared as probabilities)"
        )
    elif activation not in ("linear", None):
        raise InputError(
            f"{p}: Dense {layer.name!r} has activation={activation!r}; lstm-diag's head is linear "
            "(or softmax, read as the cross-entropy's); for another head use the upstream-gradient mode"
        )
    W = _read(layer, "kernel", p)  # (D*H, O)
    if W.ndim != 2 or W.shape[0] != width:
        raise InputError(
            f"{p}: Dense {layer.name!r} kernel {W.shape} does not read the LSTM's {width} outputs"
        )
    conv.put(HEAD_WEIGHT, np.ascontiguousarray(W.T), f"{_origin(layer, 'kernel')} (H, O), transposed")
    if "bias" in layer.vars:
        b = _read(layer, "bias", p)
        conv.put(HEAD_BIAS, b, f"{_origin(layer, 'bias')} (O), as is")
    else:
        conv.put(HEAD_BIAS, np.zeros(W.shape[1], W.dtype), "zeros (Dense with use_bias=False)")
