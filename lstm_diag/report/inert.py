"""Text from the outside world (paths, array names, config values) made inert for each
output kind: one helper per kind, used by every renderer.

- `terminal`: rich tables and lines on a terminal. Control characters (ESC sequences that
  set the title or clear the screen, newlines, bells) are shown escaped (`\\x1b`, `\\n`),
  and rich markup (`[bold]`) is escaped so it prints as written.
- `markdown`: markdown (tables, headings, text). The same control-character escaping
  (a newline cannot start a new heading), markdown syntax backslash-escaped (`#`, `*`,
  `_`, `[`, `]`, `!`, `|`, backticks...), and `<`, `>`, `&` as HTML entities, so that no
  link, image or tag is formed.
- `figure`: matplotlib text. Every figure is drawn with `text.parse_math` off
  (report/figures/style.py), so `$` never starts mathtext; control characters are
  shown escaped.
- `html`: `html.escape` (report/html.py uses it for every value).
"""

from __future__ import annotations

import html as _html
import re
from typing import Any

MAX_CHARS = 300  # a path or a name longer than this is cut in displays


def plain(text: Any, limit: int = MAX_CHARS) -> str:
    """One printable line: control characters escaped (\\x1b, \\n...), cut to `limit`."""
    s = str(text)
    if len(s) > limit:
        s = s[:limit] + f"… ({len(s)} characters)"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def terminal(text: Any) -> str:
    """Inert on a terminal and in rich markup."""
    from rich.markup import escape

    return escape(plain(text))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]#!|~$])")


def markdown(text: Any, limit: int = MAX_CHARS) -> str:
    """Inert in markdown: no heading, link, image, emphasis, table cell break or tag."""
    s = plain(text, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def figure(text: Any) -> str:
    """Inert in a matplotlib text (mathtext is off for every figure; see the docstring)."""
    return plain(text)


def html(text: Any) -> str:
    return _html.escape(str(text), quote=True)
