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
