"""A vocabulary file: the token string of each id, for labelling token-id data (`explain --vocab`).

Two JSON shapes are accepted, the two that tokenizers and training scripts write:

- a list of strings, the token of id k at position k: `["\\n", " ", "!", ...]`;
- an object mapping each token to its id: `{"\\n": 0, " ": 1, "!": 2, ...}` (ids need not be
  contiguous; each id may appear once).

Anything else exits 2 with one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, preview

MAX_BYTES = 256 * 2**20  # a vocabulary larger than this is not a vocabulary


@dataclass
class Vocab:
    path: Path
    tokens: list[str | None]  # id -> token; None for an id the file does not name (object form)

    def __len__(self) -> int:
        return len(self.tokens)

    def check_ids(self, ids: np.ndarray, where: str) -> None:
        """Every id in `ids` has a token, else InputError naming the file, the id and `where`."""
        if ids.size == 0:
            return
        top = int(ids.max())
        if top >= len(self.tokens):
            raise InputError(
                f"{self.path}: {len(self.tokens)} tokens (ids 0..{len(self.tokens) - 1}), "
                f"but {where} holds id {top}: is this the data's vocabulary?"
            )
        missing = sorted({int(i) for i in np.unique(ids) if self.tokens[int(i)] is None})
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (", …" if len(missing) > 5 else "")
            raise InputError(f"{self.path}: no token for id {shown}, which {where} holds")


def load_vocab(path: str | Path) -> Vocab:
    """Read and validate a vocabulary file (list of tokens, or {token: id})."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"{p}: {size} bytes; a vocabulary file is at most {MAX_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except InputError:
        raise
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read the vocabulary file ({e.strerror or e})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    return Vocab(p, _tokens(doc, p))


def _tokens(doc, p: Path) -> list[str | None]:
    shape = "expected a JSON list of token strings or an object {token: id}"
    if isinstance(doc, list):
        if not doc:
            raise InputError(f"{p}: an empty list; {shape}")
        for k, tok in enumerate(doc):
            if not isinstance(tok, str):
                raise InputError(f"{p}: entry {k} is {preview(tok)}, not a string; {shape}")
        return list(doc)
    if isinstance(doc, dict):
        if not doc:
            raise InputError(f"{p}: an empty object; {shape}")
        by_id: dict[int, str] = {}
        for tok, i in doc.items():
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise InputError(f"{p}: token {preview(tok)} has id {preview(i)}; ids are integers ≥ 0")
            if i in by_id:
                raise InputError(f"{p}: tokens {preview(by_id[i])} and {preview(tok)} both have id {i}")
            by_id[i] = tok
        top = max(by_id)
        if top > 10 * len(by_id) + 1000:
            raise InputError(f"{p}: id {top} for only {len(by_id)} tokens; ids should number the tokens")
        out: list[str | None] = [None] * (top + 1)
        for i, tok in by_id.items():
            out[i] = tok
        return out
    raise InputError(f"{p}: a JSON {type(doc).__name__}; {shape}")
