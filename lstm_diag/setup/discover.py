"""Finding the model in a weights file: which arrays are the nn.LSTM, the head, the embedding.

Works on names and shapes alone (no array is read), whatever file they came from
(formats/: PyTorch, safetensors, npz, and Keras/ONNX converted to PyTorch's names):

- the LSTM is found by its `weight_ih_l0` suffix whatever the prefix (`lstm.`, `rnn.`,
  `model.encoder.rnn.`; `weight_ih`/`weight_hh` without `_l0` for an nn.LSTMCell);
  input_size, hidden_size, num_layers, proj_size, bidirectional and bias follow from the
  shapes: weight_ih_l{k} (4H, I_k), weight_hh_l{k} (4H, R), weight_hr_l{k} (P, H),
  bias_ih_l{k}, bias_hh_l{k} (4H), `_reverse` for the backward direction, where
  R = P with a projection, else H, and I_k = D R for k > 0 (D = 2 if bidirectional);
- a linear head is a remaining 2-D `X.weight` (O, D R) with its `X.bias` (O,);
- an embedding is a remaining 2-D `X.weight` (V, I) without a bias;
- in a checkpoint dict ({"model": ..., "optimizer": ..., "epoch": ...}) the state dict
  is the section that holds the LSTM; everything else is reported unused, with why.

`discover` raises `InputError` (one line, exit 2) when no LSTM can be found or its
arrays are inconsistent, and names what it found instead (a GRU, a vanilla RNN, the
closest names). Ambiguity that only matters for some analyses (two possible heads)
is kept in the result and raised by `FoundModel.need_head()` / `need_embedding()`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..core.names import param_name
from ..errors import ConfigError, InputError

Shape = tuple[int, ...]
PARAM = re.compile(r"(weight|bias)_(ih|hh|hr)(_l\d+)?(_reverse)?")
GATE_BLOCKS = {3: "a GRU (3 gate blocks)", 1: "a vanilla RNN (1 gate block)"}


@dataclass(frozen=True)
class LSTMParams:
    """An nn.LSTM found in a file, with its arguments and where each parameter is."""

    prefix: str  # "encoder.rnn." ("" for bare names); names[...] are prefix + engine name
    input_size: int
    hidden_size: int
    num_layers: int
    proj_size: int  # 0: no projection
    bidirectional: bool
    bias: bool
    names: dict[str, str]  # engine name (weight_ih_l0, weight_hr_l1_reverse...) -> name in the file
    cell: bool = False  # an nn.LSTMCell (names without _l0): one layer

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_width(self) -> int:
        """What the head (or the layer above) reads per step: D x (P or H)."""
        return self.directions * (self.proj_size or self.hidden_size)

    def describe(self) -> str:
        """`nn.LSTM(32, 128, num_layers=2, proj_size=16, bidirectional=True, bias=False)`."""
        args = [str(self.input_size), str(self.hidden_size)]
        if self.num_layers != 1:
            args.append(f"num_layers={self.num_layers}")
        if self.proj_size:
            args.append(f"proj_size={self.proj_size}")
        if self.bidirectional:
            args.append("bidirectional=True")
        if not self.bias:
            args.append("bias=False")
        return f"nn.{'LSTMCell' if self.cell else 'LSTM'}({', '.join(args)})"


@dataclass(frozen=True)
class Linear:
    """A linear layer y = W x + b: weight (out_features, in_features), bias (out_features,)."""

    weight: str
    bias: str | None
    out_features: int
    in_features: int

    @property
    def name(self) -> str:
        return self.weight.removesuffix("weight").rstrip(".") or self.weight

    def describe(self) -> str:
        no_bias = "" if self.bias else ", bias=False"
        return f"{self.name}: nn.Linear({self.in_features}, {self.out_features}{no_bias})"


@dataclass(frozen=True)
class Embedding:
    """An embedding matrix (num_embeddings V, embedding_dim I): x_t = E[token_t]."""

    weight: str
    num_embeddings: int
    embedding_dim: int

    def describe(self) -> str:
        return f"{self.weight}: nn.Embedding({self.num_embeddings}, {self.embedding_dim})"


@dataclass
class FoundModel:
    """What `discover` found: the LSTM, a head, an embedding, and what is left unused."""

    lstm: LSTMParams
    head: Linear | None = None
    embedding: Embedding | None = None
    head_candidates: list[Linear] = field(default_factory=list)  # > 1 when ambiguous
    embedding_candidates: list[Embedding] = field(default_factory=list)
    mlp: list[Linear] = field(default_factory=list)  # a chain of linears after the LSTM
    scope: str | None = None  # the checkpoint section holding the model ("model"), if any
    unused: dict[str, str] = field(default_factory=dict)  # name in the file -> why unused
    source: str = "weights"  # the file, for messages

    @property
    def output_size(self) -> int | None:
        return self.head.out_features if self.head else None

    def need_head(self) -> Linear:
        """The linear head, or a one-line InputError saying why there is none."""
        if self.head is not None:
            return self.head
        if self.mlp:
            chain = " -> ".join(f"{m.name} {(m.out_features, m.in_features)}" for m in self.mlp)
            raise InputError(
                f"{self.source}: the LSTM feeds an MLP head ({chain}); lstm-diag models one linear "
                "head: use the upstream-gradient mode (loss.type: upstream, dL/dh in the data file)"
            )
        if len(self.head_candidates) > 1:
            names = ", ".join(c.describe() for c in self.head_candidates)
            raise ConfigError(f"model.head: {len(self.head_candidates)} possible heads ({names}); name one")
        raise InputError(
            f"{self.source}: no linear head reading the LSTM's {self.lstm.output_width} outputs "
            f"(a 2-D X.weight (O, {self.lstm.output_width}) with X.bias (O,)); name it with "
            "model.head, or use the upstream-gradient mode (loss.type: upstream)"
        )

    def need_embedding(self) -> Embedding:
        if self.embedding is not None:
            return self.embedding
        if len(self.embedding_candidates) > 1:
            names = ", ".join(c.describe() for c in self.embedding_candidates)
            raise ConfigError(
                f"model.embedding: {len(self.embedding_candidates)} possible embeddings ({names}); name one"
            )
        raise InputError(
            f"{self.source}: token ids need an embedding, but there is no remaining "
            f"(V, {self.lstm.input_size}) matrix without a bias; name it with model.embedding"
        )

    def param_names(self, with_head: bool = True) -> dict[str, str]:
        """Engine names (`weight_ih_l0`, `head.weight`...) -> names in the file."""
        names = dict(self.lstm.names)
        if with_head:
            head = self.need_head()
            names["head.weight"] = head.weight
            if head.bias is not None:
                names["head.bias"] = head.bias
        return names

    def unused_groups(self) -> list[tuple[str, int, str]]:
        """Unused arrays grouped by reason and common prefix: (pattern, count, reason)."""
        groups: dict[tuple[str, str], list[str]] = {}
        for name, why in self.unused.items():
            top = name.split(".", 1)[0]
            key = (top, why) if "." in name else (name, why)
            groups.setdefault(key, []).append(name)
        out = []
        for (top, why), names in groups.items():
            out.append((names[0] if len(names) == 1 else f"{top}.*", len(names), why))
        return out


# ---------------------------------------------------------------------------- the search


def discover(
    shapes: Mapping[str, Shape],
    *,
    sections: tuple[str, ...] = (),
    source: str = "weights",
    lstm: str | None = None,
    head: str | None = None,
    embedding: str | None = None,
    weights_key: str | None = None,
) -> FoundModel:
    """Find the LSTM (and head, embedding) among named shapes; see the module docstring.

    lstm / head / embedding: a prefix or array name that picks one when there are
    several candidates (config fields model.lstm, model.head, model.embedding).
    weights_key: the checkpoint section holding the state dict (model.weights_key).
    """
    shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
    scope, in_scope = _scope(shapes, sections, weights_key, source)
    prefix, cell = _pick_lstm(in_scope, lstm, sections, source)
    if scope is None and sections:
        scope = next((s for s in sections if prefix.startswith(s + ".")), None)
        in_scope = {k: v for k, v in shapes.items() if scope is None or k.startswith(scope + ".")}
    params = _lstm_params(in_scope, prefix, cell, source)
    found = FoundModel(lstm=params, scope=scope, source=source)
    rest = {k: v for k, v in in_scope.items() if k not in params.names.values()}
    _find_head(found, rest, head)
    _find_embedding(found, rest, embedding)
    _explain_unused(found, shapes, scope)
    return found


def _scope(shapes, sections, weights_key, source):
    if weights_key is None:
        return None, shapes
    key = weights_key.rstrip(".")
    inside = {k: v for k, v in shapes.items() if k.startswith(key + ".")}
    if not inside:
        tops = sorted({k.split(".", 1)[0] for k in shapes if "." in k})
        choices = ", ".join(sections or tops) or "none"
        raise ConfigError(f"model.weights_key: {source} has no section {key!r}; sections: {choices}")
    return key, inside


def _lstm_candidates(shapes) -> list[tuple[str, bool]]:
    stacked = [(k[: -len("weight_ih_l0")], False) for k in shapes if k.endswith("weight_ih_l0")]
    cells = [
        (k[: -len("weight_ih")], True)
        for k in shapes
        if k.endswith("weight_ih") and (k[: -len("weight_ih")] + "weight_hh") in shapes
    ]
    return [c for c in stacked + cells if c[0] == "" or c[0].endswith(".")]


def _pick_lstm(shapes, wanted, sections, source) -> tuple[str, bool]:
    cands = _lstm_candidates(shapes)
    if wanted is not None:
        w = wanted.removesuffix("weight_ih_l0").rstrip(".")
        hits = [c for c in cands if c[0].rstrip(".") == w or c[0].rstrip(".").endswith("." + w)]
        if len(hits) != 1:
            listed = ", ".join(_shown(c[0]) for c in cands) or "none"
            what = "matches several" if hits else "matches none"
            raise ConfigError(f"model.lstm: {wanted!r} {what} of the LSTMs in {source} ({listed})")
        return hits[0]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise InputError(_no_lstm_message(shapes, source))
    listed = ", ".join(_shown(c[0]) for c in cands)
    hint = f"model.weights_key (a section: {', '.join(sections)}) or " if sections else ""
    raise ConfigError(
        f"model.lstm: {source} holds {len(cands)} LSTMs ({listed}); choose one with {hint}model.lstm"
    )


def _shown(prefix: str) -> str:
    return prefix.rstrip(".") or "(no prefix)"


def _no_lstm_message(shapes, source) -> str:
    names = list(shapes)
    close = difflib.get_close_matches("weight_ih_l0", [n.rsplit(".", 1)[-1] for n in names], n=3, cutoff=0.5)
    hint = f"; closest names: {', '.join(close)}" if close else ""
    shown = ", ".join(names[:8]) + (f" ... ({len(names)} arrays)" if len(names) > 8 else "")
    return f"{source}: no nn.LSTM found: no array named *weight_ih_l0 (found: {shown or 'no arrays'}){hint}"


def _lstm_params(shapes, prefix: str, cell: bool, source: str) -> LSTMParams:
    """Sizes from the shapes, every expected array checked; see the module docstring."""
    suffix = "" if cell else "_l0"

    def get(name):
        return shapes.get(prefix + name + suffix)

    w_ih, w_hh, w_hr = get("weight_ih"), get("weight_hh"), get("weight_hr")
    if w_hh is None:
        raise InputError(_missing(shapes, prefix + "weight_hh" + suffix, source))
    if len(w_ih) != 2 or len(w_hh) != 2 or (w_hr is not None and len(w_hr) != 2):
        raise InputError(f"{source}: {prefix}weight_ih{suffix} and weight_hh{suffix} must be 2-D matrices")
    if w_hr is not None:
        P, H = w_hr
        if w_hh[1] != P:
            raise InputError(
                f"{source}: {prefix}weight_hh{suffix} has shape {w_hh}, expected (4 x {H}, {P}) "
                f"with the projection {prefix}weight_hr{suffix} {w_hr}"
            )
    else:
        P, H = 0, w_hh[1]
    if H == 0 or w_hh[0] % H or w_hh[0] // H != 4:
        blocks = w_hh[0] // H if H and w_hh[0] % H == 0 else None
        what = GATE_BLOCKS.get(blocks, f"not an LSTM ({w_hh[0]} rows are not 4 gate blocks of {H})")
        raise InputError(
            f"{source}: {prefix}weight_hh{suffix} {w_hh}: this is {what}, not an LSTM"
            if blocks in GATE_BLOCKS
            else f"{source}: {prefix}weight_hh{suffix} {w_hh}: {what}"
        )
    return _check_layers(shapes, prefix, cell, source, input_size=w_ih[1], H=H, P=P)


def _check_layers(shapes, prefix, cell, source, input_size, H, P) -> LSTMParams:
    layers = 1 if cell else _count(shapes, prefix, "weight_ih_l{}")
    bidir = not cell and prefix + "weight_ih_l0_reverse" in shapes
    bias = prefix + ("bias_ih" if cell else "bias_ih_l0") in shapes
    D, R = (2 if bidir else 1), (P or H)
    expected: dict[str, Shape] = {}
    for k in range(layers):
        for d in range(D):
            shapes_kd = {"weight_ih": (4 * H, input_size if k == 0 else D * R), "weight_hh": (4 * H, R)}
            shapes_kd |= {"bias_ih": (4 * H,), "bias_hh": (4 * H,)} if bias else {}
            shapes_kd |= {"weight_hr": (P, H)} if P else {}
            for kind, shape in shapes_kd.items():  # nn.LSTMCell names have no _l{k}
                expected[kind if cell else param_name(kind, k, d)] = shape
    desc = LSTMParams(prefix, input_size, H, layers, P, bidir, bias, {}, cell).describe()
    for name, shape in expected.items():
        full = prefix + name
        if full not in shapes:
            raise InputError(_missing(shapes, full, source, f" ({desc} has it)"))
        if shapes[full] != shape:
            raise InputError(f"{source}: {full} has shape {shapes[full]}, expected {shape} for {desc}")
    stray = [
        k
        for k in shapes
        if k.startswith(prefix) and PARAM.fullmatch(k[len(prefix) :]) and k[len(prefix) :] not in expected
    ]
    if stray:
        raise InputError(f"{source}: unexpected {', '.join(stray[:4])} for {desc} found at {_shown(prefix)}")
    names = {k if not cell else _stacked_name(k): prefix + k for k in expected}
    return LSTMParams(prefix, input_size, H, layers, P, bidir, bias, names, cell)


def _stacked_name(cell_name: str) -> str:
    return cell_name + "_l0"


def _count(shapes, prefix, pattern) -> int:
    k = 0
    while prefix + pattern.format(k) in shapes:
        k += 1
    return k


def _missing(shapes, name, source, why="") -> str:
    close = difflib.get_close_matches(name, list(shapes), n=2, cutoff=0.6)
    hint = f"; closest present: {', '.join(close)}" if close else ""
    return f"{source}: missing {name}{why}{hint}"


# ---------------------------------------------------------------------------- head, embedding


def _linears(shapes) -> list[Linear]:
    out = []
    for k, s in shapes.items():
        if len(s) == 2 and (k == "weight" or k.endswith(".weight")):
            b = k[: -len("weight")] + "bias"
            bias = b if shapes.get(b) == (s[0],) else None
            out.append(Linear(k, bias, s[0], s[1]))
    return out


def _named(items, wanted, attr="weight"):
    w = wanted.rstrip(".")
    return [
        c
        for c in items
        if getattr(c, attr) in (w, w + ".weight")
        or getattr(c, attr).endswith("." + w)
        or getattr(c, attr).endswith("." + w + ".weight")
    ]


def _one_named(field: str, what: str, items: list, wanted: str, source: str):
    """The one candidate `model.<field>` names, else exit 2 listing every candidate."""
    hits = _named(items, wanted)
    if len(hits) != 1:
        listed = ", ".join(c.describe() for c in items) or "none"
        raise ConfigError(f"model.{field}: {wanted!r} matches {len(hits)} {what} in {source} ({listed})")
    return hits[0]


def _find_head(found: FoundModel, rest, wanted) -> None:
    linears = _linears(rest)
    if wanted is not None:
        head = _one_named("head", "linear layers", linears, wanted, found.source)
        if head.in_features != found.lstm.output_width:
            raise ConfigError(
                f"model.head: {head.describe()} reads {head.in_features} inputs, but the LSTM "
                f"outputs {found.lstm.output_width}"
            )
        found.head = head
        return
    cands = [c for c in linears if c.bias is not None and c.in_features == found.lstm.output_width]
    if len(cands) == 1:
        nxt = [
            c
            for c in linears
            if c.bias is not None and c.in_features == cands[0].out_features and c != cands[0]
        ]
        if len(nxt) == 1:  # the head's output feeds another linear: an MLP
            found.mlp = [cands[0], nxt[0]]
            return
        found.head = cands[0]
    elif cands:
        found.head_candidates = cands


def _find_embedding(found: FoundModel, rest, wanted) -> None:
    taken = {found.head.weight} if found.head else set()
    taken |= {m.weight for m in found.mlp} | {c.weight for c in found.head_candidates}
    mats = [
        Embedding(c.weight, c.out_features, c.in_features)
        for c in _linears(rest)
        if c.bias is None and c.weight not in taken
    ]
    if wanted is not None:
        emb = _one_named("embedding", "matrices", mats, wanted, found.source)
        if emb.embedding_dim != found.lstm.input_size:
            raise ConfigError(
                f"model.embedding: {emb.describe()} gives vectors of {emb.embedding_dim}, "
                f"but the LSTM reads {found.lstm.input_size}"
            )
        found.embedding = emb
        return
    cands = [m for m in mats if m.embedding_dim == found.lstm.input_size]
    named = [m for m in cands if "emb" in m.weight.lower()]
    if len(cands) == 1 or len(named) == 1:
        found.embedding = (named or cands)[0]
    elif cands:
        found.embedding_candidates = cands


def _section_reason(section: str, scope: str) -> str:
    s = section.lower()
    if "optim" in s:
        return "optimizer state, ignored"
    if "sched" in s:
        return "scheduler state, ignored"
    if "ema" in s or "average" in s or "swa" in s:
        return f"another copy of the weights, ignored (model.weights_key: {section} picks it)"
    return f"outside the state dict {scope!r}, ignored"


def _explain_unused(found: FoundModel, shapes, scope) -> None:
    used = set(found.lstm.names.values())
    if found.head:
        used |= {found.head.weight, found.head.bias} - {None}
    if found.embedding:
        used.add(found.embedding.weight)
    maybe_heads = {n for c in found.head_candidates for n in (c.weight, c.bias) if n}
    maybe_emb = {c.weight for c in found.embedding_candidates}
    mlp = {n for c in found.mlp for n in (c.weight, c.bias) if n}
    for name in shapes:
        if name in used:
            continue
        if scope is not None and not name.startswith(scope + "."):
            why = _section_reason(name.split(".", 1)[0], scope)
        elif name in mlp:
            why = "part of an MLP head (use the upstream-gradient mode)"
        elif name in maybe_heads:
            why = "a possible head (model.head picks one)"
        elif name in maybe_emb:
            why = "a possible embedding (model.embedding picks one)"
        elif name.startswith(found.lstm.prefix) and found.lstm.prefix:
            why = "beside the LSTM's parameters, not one of them"
        else:
            why = "not the LSTM, its head or an embedding"
        found.unused[name] = why
