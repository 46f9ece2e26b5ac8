"""JSON that is always valid (RFC 8259 has no NaN/Infinity).

Non-finite floats become `null`, and the document gains `"nonfinite"`: the JSON
paths of those values with what they were (`"nan"`, `"inf"`, `"-inf"`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

_PLAIN = (int, str, bool, type(None))  # kept as they are


def _clean(obj: Any, path: str, marks: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v, f"{path}.{k}" if path else k, marks) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, (list, tuple)):
        # A finite float or a plain value is kept without building its path, which only a
        # non-finite value needs (x - x is 0 for finite x, NaN for NaN and the infinities).
        return [
            v if (type(v) is float and v - v == 0.0) or type(v) in _PLAIN
            else _clean(v, f"{path}[{i}]", marks)
            for i, v in enumerate(obj)
        ]  # fmt: skip
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isfinite(v):
            return v
        marks[path] = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return None
    return obj


def to_jsonable(doc: dict) -> dict:
    marks: dict[str, str] = {}
    clean = _clean(doc, "", marks)
    if marks:
        clean["nonfinite"] = marks
    return clean


def document(command: str, schema_version: int, body: dict) -> dict:
    """Every JSON document the CLI prints starts with `schema_version` and `command`
    (docs/json-schema.md), whichever command made it."""
    for key, want in (("command", command), ("schema_version", schema_version)):
        if body.get(key, want) != want:
            raise ValueError(f"document {key} {body[key]!r} is not {want!r}")
    rest = {k: v for k, v in body.items() if k not in ("command", "schema_version")}
    return {"schema_version": schema_version, "command": command, **rest}


def dumps(doc: dict, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(doc), indent=indent, allow_nan=False) + "\n"



def roundtrip(doc: dict) -> dict:
    """The document as a reader of `dumps` gets it (`setup.document.loads`): what figures are
    drawn from, whichever machine computed it (same types, same values, NaN and Inf included)."""
    from ..setup.document import loads

    return loads(dumps(doc, indent=None))
