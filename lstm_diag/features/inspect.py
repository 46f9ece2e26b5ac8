"""`inspect`: what a weights file holds and what lstm-diag finds in it, as one document.

The document (a dict, JSON-ready) is the single source of every output format:
the file's format (and an extension that disagrees), every array with its shape,
dtype and role, the LSTM found and its sizes, the head, the embedding, what is left
unused and why, and the checkpoint's scalar metadata (epoch, step...). Only names
and shapes are read: inspecting a 10 GB checkpoint reads its headers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..formats.loaded import LoadedFile
from ..formats.sniff import read_arrays
from ..setup.discover import Embedding, FoundModel, Linear, discover
from ..setup.weights import model_fields, unsupported_layout

SCHEMA_VERSION = 1


def inspect_file(path: str | Path, **selection: str | None) -> dict[str, Any]:
    """The inspect document for a file; `selection` as the config's model.weights_key,
    model.lstm, model.head, model.embedding. An unreadable file raises InputError; a
    readable file without an LSTM gives a document whose `problem` says why."""
    loaded = read_arrays(path, "weights")
    found, problem = None, None
    try:
        found = discover(
            loaded.shapes(),
            sections=loaded.sections,
            source=loaded.path.name,
            **{k: v for k, v in selection.items() if v is not None},
        )
    except InputError as e:  # a GRU, no LSTM, two LSTMs...: said, not fatal for inspect
        problem = str(e)
    return {
        "schema_version": SCHEMA_VERSION,
        "command": "inspect",
        "file": str(loaded.path),
        "format": loaded.format,
        "note": loaded.note,
        "arrays": _arrays(loaded, found),
        "model": _model(found) if found else None,
        "problem": problem,
        "unused": [
            {"names": pattern, "count": count, "reason": why}
            for pattern, count, why in (found.unused_groups() if found else [])
        ],
        "meta": dict(loaded.meta),
        "skipped": dict(loaded.skipped),
        "converted": _converted(loaded),
    }


def _roles(found: FoundModel | None) -> dict[str, str]:
    if found is None:
        return {}
    roles = {stored: f"lstm {name}" for name, stored in found.lstm.names.items()}
    if found.head:
        roles[found.head.weight] = "head weight"
        if found.head.bias:
            roles[found.head.bias] = "head bias"
    if found.embedding:
        roles[found.embedding.weight] = "embedding"
    roles.update({k: f"unused: {why}" for k, why in found.unused.items()})
    return roles


def _arrays(loaded: LoadedFile, found: FoundModel | None) -> list[dict[str, Any]]:
    roles = _roles(found)
    return [
        {"name": name, "shape": list(info.shape), "dtype": info.dtype, "role": roles.get(name, "")}
        for name, info in loaded.info.items()
    ]


def _linear(x: Linear) -> dict[str, Any]:
    return {
        "name": x.name,
        "weight": x.weight,
        "bias": x.bias,
        "in_features": x.in_features,
        "out_features": x.out_features,
        "description": x.describe(),
    }


def _embedding(x: Embedding) -> dict[str, Any]:
    return {
        "weight": x.weight,
        "num_embeddings": x.num_embeddings,
        "embedding_dim": x.embedding_dim,
        "description": x.describe(),
    }


def _model(found: FoundModel) -> dict[str, Any]:
    lstm = found.lstm
    return {
        "lstm": {
            "prefix": lstm.prefix,
            "description": lstm.describe(),
            **{k: v for k, v in model_fields(found).items() if k != "output_size"},
            "output_width": lstm.output_width,
            "cell": lstm.cell,
            "names": dict(lstm.names),
        },
        "head": _linear(found.head) if found.head else None,
        "head_candidates": [_linear(c) for c in found.head_candidates],
        "mlp_head": [_linear(c) for c in found.mlp],
        "embedding": _embedding(found.embedding) if found.embedding else None,
        "embedding_candidates": [_embedding(c) for c in found.embedding_candidates],
        "state_dict": found.scope,
        "engine": unsupported_layout(found) or "supported",
    }


def _converted(loaded: LoadedFile) -> dict[str, Any] | None:
    c = getattr(loaded, "converted", None)
    if c is None:
        return None
    return {"source": c.source, "mapping": list(c.mapping), "notes": list(c.notes)}
