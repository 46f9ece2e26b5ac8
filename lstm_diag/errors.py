"""The errors the CLI turns into one line on stderr and exit 2 (a leaf: imports nothing).

`InputError` is bad input or environment: a file that cannot be read, an array of
the wrong shape, a value out of range. `ConfigError` narrows it to a config field
(the message starts with the field's path); `OutputError` to an output that
cannot be written (the message names the path).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or environment: the CLI prints the message and exits 2."""


class ConfigError(InputError):
    """A config field (or --set / CLI flag) that is invalid: the message names the field."""


class OutputError(InputError):
    """An output path that cannot be written: the message names the path."""


def unreadable(path: object, what: str, e: OSError, error: type[InputError] = InputError) -> InputError:
    """The one-line error for a file that could not be opened or read: `e`, the OSError that
    open() or read() raised, in words, naming the file and what it should have been
    (`what`: "config file", "weights file"). The readers of every format raise it `from None`."""
    if isinstance(e, FileNotFoundError):
        return error(f"{path}: no such {what}")
    if isinstance(e, IsADirectoryError):
        return error(f"{path}: is a folder, expected a {what}")
    if isinstance(e, PermissionError):
        return error(f"{path}: cannot read the {what} (permission denied)")
    return error(f"{path}: cannot read the {what} ({e.strerror or e.__class__.__name__})")


class InputWarning(UserWarning):
    """Something about the input the user should know, that changes no result silently
    (e.g. values that underflow to zero in the configured dtype): one line on stderr."""


PREVIEW_CHARS = 60


def preview(value: object, limit: int = PREVIEW_CHARS) -> str:
    """A value for an error message: its repr, cut to `limit` characters, with its type and
    length when cut (`'aaaa…' (str of 52428800 characters)`), so that no message grows with
    the input. Containers are never repr'd whole: their repr is built only up to the limit."""
    if isinstance(value, (str, bytes)):
        text = repr(value[: limit + 1])
        if len(value) <= limit:
            return text
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{text[:limit]}… ({type(value).__name__} of {len(value)} {unit})"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        text = _short_repr(value, limit)
        if len(text) <= limit:
            return text
        return f"{text[:limit]}… ({type(value).__name__} of {len(value)} items)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({type(value).__name__}, {len(text)} characters)"


def _short_repr(value: object, limit: int, depth: int = 0) -> str:
    """repr of nested containers, stopping once `limit` characters are produced."""
    if depth > 8:
        return "…"
    if isinstance(value, dict):
        opening, closing = "{", "}"
        items = (
            f"{_short_repr(k, limit, depth + 1)}: {_short_repr(v, limit, depth + 1)}"
            for k, v in value.items()
        )
    elif isinstance(value, (list, tuple, set, frozenset)):
        opening, closing = {list: "[]", tuple: "()", set: "{}", frozenset: "{}"}.get(type(value), "[]")
        items = (_short_repr(v, limit, depth + 1) for v in value)
    elif isinstance(value, (str, bytes)):
        return repr(value[: limit + 1])
    else:
        return repr(value)[: limit + 1]
    n, parts = 1, []
    for item in items:
        parts.append(item)
        n += len(item) + 2
        if n > limit:
            parts.append("…")
            break
    return opening + ", ".join(parts) + closing
