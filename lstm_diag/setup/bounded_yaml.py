"""One YAML loader for everything lstm-diag reads as YAML (config files, --set values),
bounded before anything grows: text size, nesting depth, node count after alias
expansion, and anchors/aliases; duplicate keys refused; no Python objects.

A 1 KB YAML can otherwise describe gigabytes: nested anchors and aliases ("billion
laughs") are shared by the parser but expanded by every later copy, comparison or
message. Here the composed node graph is measured as if fully expanded, before any
Python value is constructed. Every failure is a `ConfigError` naming the file, the
line and what was exceeded.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, preview, unreadable

MAX_TEXT_BYTES = 4 * 2**20  # config files are a few KB
MAX_DEPTH = 50  # nesting of mappings and sequences
MAX_ALIASES = 1000  # *alias uses in one document
MAX_NODES = 10_000  # values (nodes), as read and once every alias is expanded; a config has ~50
MAX_EXPANDED_CHARS = MAX_TEXT_BYTES  # characters of scalars once every alias is expanded


def read_text_capped(path: Path, what: str = "config file", limit: int = MAX_TEXT_BYTES) -> str:
    """The file's text, refusing (without reading it all) anything over `limit` bytes:
    a huge file is refused from its size, a device or pipe (/dev/zero) after limit + 1 bytes."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise ConfigError(f"{path}: is a folder, expected a {what}")
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise ConfigError(
                    f"{path}: {what} of {_size(st.st_size)} is over the {_size(limit)} limit; refused unread"
                )
            data = fh.read(limit + 1)
    except OSError as e:
        raise unreadable(path, what, e, ConfigError) from None
    if len(data) > limit:
        raise ConfigError(f"{path}: {what} is over the {_size(limit)} limit (not a regular file); refused")
    if b"\x00" in data:
        raise ConfigError(f"{path}: not a text file (holds NUL bytes); expected a YAML {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML {what}") from None


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n} bytes"


try:  # libyaml's parser (C, not recursive) is ~50x faster; PyYAML's own parser otherwise
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)


class BoundedLoader(
    yaml.composer.Composer, _Parser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
):
    """A safe loader (no Python objects) reading 1e-3 as a float as YAML 1.2 does, composing
    in Python over the parser's events so that depth, node count and aliases are bounded as
    the document is read, and refusing duplicate keys."""

    def __init__(self, stream: str):
        _Parser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Bound(f"holds more than {MAX_NODES} values", self.peek_event().start_mark)
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _Bound(f"more than {MAX_ALIASES} aliases (*name)", mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Bound(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # keys merged in by `<<` may be overridden: YAML's rule, not a duplicate
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in seen:
                    raise _Duplicate(key, seen[key], line, key_node.start_mark)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class _Bound(Exception):
    def __init__(self, what: str, mark):
        super().__init__(what)
        self.what, self.mark = what, mark


class _Duplicate(Exception):
    def __init__(self, key, first: int, second: int, mark):
        super().__init__(key)
        self.key, self.first, self.second, self.mark = key, first, second, mark


def _expanded(root) -> None:
    """Measure the node graph as if every alias were copied; raise _Bound past the limits.
    Memoized per node, so a billion-laughs document costs one pass over its distinct nodes."""
    memo: dict[int, tuple[int, int]] = {}

    def size(node) -> tuple[int, int]:
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = (MAX_NODES + 1, 0)  # a node reached again while being measured: a cycle
        if isinstance(node, yaml.ScalarNode):
            out = (1, len(node.value))
        else:
            pairs = isinstance(node, yaml.MappingNode)
            items = [x for kv in node.value for x in kv] if pairs else node.value
            n, chars = 1, 0
            for child in items:
                cn, cc = size(child)
                n, chars = n + cn, chars + cc
                if n > MAX_NODES or chars > MAX_EXPANDED_CHARS:
                    break
            out = (n, chars)
        memo[key] = out
        if out[0] > MAX_NODES:
            raise _Bound(f"expands to more than {MAX_NODES} values (through aliases?)", node.start_mark)
        if out[1] > MAX_EXPANDED_CHARS:
            raise _Bound(
                f"expands to more than {MAX_EXPANDED_CHARS // 2**20} MB of text (through aliases?)",
                node.start_mark,
            )
        return out

    size(root)


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document with every bound; errors are one-line ConfigErrors naming
    `source` (a file path, or `--set KEY`) and the line."""
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node)
        return loader.construct_document(node)
    except _Bound as e:
        raise ConfigError(f"{source}{_where(e.mark)}: YAML {e.what}; refused") from None
    except _Duplicate as e:
        raise ConfigError(
            f"{source}: duplicate key {preview(e.key)} on lines {e.first} and {e.second}; "
            "YAML would keep only the last, remove one"
        ) from None
    except RecursionError:  # a bound above should have stopped it first
        raise ConfigError(f"{source}: YAML nested too deeply; refused") from None
    except ValueError as e:  # a scalar the resolver took for a number but is not one
        raise ConfigError(f"{source}: invalid YAML: {preview(str(e))}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}{_where(mark)}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def _where(mark) -> str:
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
