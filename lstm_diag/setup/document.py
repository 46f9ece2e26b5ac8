"""Saved documents read back: `analyze --format json` files drawn by `plot` and `report`.

A document is recognised by its content, not its name: a JSON object with
`schema_version` and `command`. Values come back exactly as computed: json writes the
shortest repr of each float64, which parses to the same bits, and the NaN/±Inf values
written as null are put back from the document's `nonfinite` map (docs/json-schema.md).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import InputError

FIGURE_DATA_SINCE = 2  # the first analyze schema_version that carries every figure's data
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
# What the figures read from each layer; a document without them cannot be drawn.
_LAYER_FIELDS = ("grad_c_norm", "grad_h_norm", "grad_z_norm", "gates", "forget_histogram", "flow", "verdict")
_TOP_FIELDS = ("config", "loss", "layers", "verdict", "findings")


def _restore(obj: Any, path: str, marks: dict[str, str]) -> Any:
    """Put back the values written as null, found by the paths `jsonout` gave them."""
    if isinstance(obj, dict):
        return {k: _restore(v, f"{path}.{k}" if path else k, marks) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v, f"{path}[{i}]", marks) for i, v in enumerate(obj)]
    if obj is None and path in marks:
        return _NONFINITE[marks[path]]
    return obj


def loads(text: str | bytes) -> Any:
    """A JSON document with its NaN and ±Inf values back (its `nonfinite` map is consumed)."""
    doc = json.loads(text)
    if isinstance(doc, dict) and isinstance(doc.get("nonfinite"), dict):
        marks = doc.pop("nonfinite")
        doc = _restore(doc, "", {k: v for k, v in marks.items() if v in _NONFINITE})
    return doc


# How every document lstm-diag writes begins (jsonout stamps schema_version first).
_DOCUMENT_START = re.compile(rb'\A(\xef\xbb\xbf)?\s*\{\s*"schema_version')


def _looks_like_json(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{")


def read_analysis_document(path: str | Path, newest: int) -> dict | None:
    """The analyze document in `path`, or None when the file is not a document (a config).

    newest: the newest schema_version this lstm-diag writes. Raises InputError (one line
    naming the file) for another command's document, a version without figure data or
    newer than this lstm-diag, or a document missing what the figures draw.
    """
    p = Path(path)
    try:
        if not p.is_file() or not _looks_like_json(p):
            return None
        text = p.read_bytes()
    except OSError:
        return None  # the config loader names the problem
    try:
        doc = loads(text)
    except (ValueError, RecursionError) as err:
        if _DOCUMENT_START.match(text):  # lstm-diag's own document, cut off (a run that stopped)
            where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
            raise InputError(
                f"{p}: an lstm-diag document that is not complete JSON (it breaks off{where}); "
                "write it again with `lstm-diag analyze --format json -o FILE`"
            ) from None
        return None  # not JSON: YAML flow style, or a broken file the config loader reports
    if not isinstance(doc, dict) or "schema_version" not in doc:
        return None
    version, command = doc.get("schema_version"), doc.get("command")
    if command is None and version == 1 and "layers" in doc:
        raise InputError(
            f"{p}: an analyze document of schema_version 1, which lacks the figure data; "
            "rerun `lstm-diag analyze --format json` with this version to draw it"
        )
    if command != "analyze":
        raise InputError(
            f"{p}: a {command or 'non-analyze'} document; plot and report draw the documents of "
            "`lstm-diag analyze --format json`"
        )
    if not isinstance(version, int) or not FIGURE_DATA_SINCE <= version <= newest:
        raise InputError(
            f"{p}: schema_version {version!r}; this lstm-diag draws analyze documents of schema_version "
            f"{FIGURE_DATA_SINCE}..{newest}"
        )
    _check_fields(doc, p)
    return doc


def _check_fields(doc: dict, p: Path) -> None:
    missing = [k for k in _TOP_FIELDS if k not in doc]
    layers = doc.get("layers")
    if not missing and (not isinstance(layers, list) or not layers):
        missing = ["layers (a non-empty list)"]
    for k, layer in enumerate(layers if not missing else []):
        if not isinstance(layer, dict):
            missing.append(f"layers[{k}] (an object)")
            break
        missing += [f"layers[{k}].{f}" for f in _LAYER_FIELDS if f not in layer]
    if missing:
        raise InputError(f"{p}: not a complete analyze document: missing {', '.join(missing[:3])}")
