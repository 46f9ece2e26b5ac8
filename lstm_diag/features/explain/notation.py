"""Notation of `explain`: symbols, the `Equation` record, and one source per formula.

Every formula is written once, in a small subset of LaTeX (`math(src)`); its plain-text
form with Unicode sub/superscripts is derived from that source (`text_of`):
`\\delta c_{t-1} \\odot f_t` -> `δcₜ₋₁ ⊙ fₜ`, `W_{hh}^\\top` -> `Wₕₕᵀ`, `\\hat y` -> `ŷ`,
`z^{i}_{3}` -> `zⁱ₃`, `\\frac{\\partial L}{\\partial b}` -> `∂L/∂b`; a subscript with no
Unicode form stays `_T`, `_head`. Template placeholders `{0}`, `{1}`, ... pass through
unchanged. Prose with inline `$...$` math is written once too (`prose`).

Each `Equation` holds its symbolic form (a `Form`: text and LaTeX), a template into
which a renderer substitutes the numbers of its operands, and its value. Equation
numbers (1)-(23) are docs/equations.md's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_SUB = str.maketrans("0123456789+-t", "₀₁₂₃₄₅₆₇₈₉₊₋ₜ")
_SUP = str.maketrans("0123456789()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾")
GATE_SUP = {"i": "ⁱ", "f": "ᶠ", "g": "ᵍ", "o": "ᵒ"}
GATE_FN = {"i": "σ", "f": "σ", "g": "tanh", "o": "σ"}
GATE_FN_TEX = {"i": r"\sigma", "f": r"\sigma", "g": r"\tanh", "o": r"\sigma"}

# the LaTeX subset of `math`: command -> text; commands in _GLUED join the next symbol
_COMMANDS = {
    "delta": "δ",
    "partial": "∂",
    "sigma": "σ",
    "tanh": "tanh",
    "odot": "⊙",
    "cdot": "·",
    "top": "ᵀ",
    "ell": "ℓ",
    "sum": "Σ",
    ",": "",  # thin space: the following blank shows the product
    ";": " ·",  # a product that the text form shows with a dot
}
_GLUED = {"delta", "partial"}
_SUB_CHARS = dict(zip("0123456789+-()tih", "₀₁₂₃₄₅₆₇₈₉₊₋₍₎ₜᵢₕ", strict=True))
_SUP_CHARS = dict(zip("0123456789+-()ifgo2ᵀ", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁽⁾ⁱᶠᵍᵒ²ᵀ", strict=True))


@dataclass(frozen=True)
class Form:
    """One piece of math, as plain text and as LaTeX."""

    text: str
    tex: str


def _group(src: str, i: int) -> tuple[str, int]:
    """The argument at src[i]: `{...}` (nested), a command, or one character; and the end."""
    if src[i] == "{":
        depth, j = 0, i
        while True:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            if depth == 0:
                return src[i + 1 : j], j + 1
            j += 1
    if src[i] == "\\":
        return src[i : _command(src, i)[1]], _command(src, i)[1]
    return src[i], i + 1


def _command(src: str, i: int) -> tuple[str, int]:
    """The name of the command at src[i] == "\\" (letters, or one symbol like `,`), and its end."""
    j = i + 1
    if not src[j].isalpha():
        return src[j], j + 1
    while j < len(src) and src[j].isalpha():
        j += 1
    return src[i + 1 : j], j


def _script(body: str, chars: dict[str, str], mark: str) -> str:
    """A sub/superscript in Unicode when every character has one, else `_body` / `^body`."""
    text = text_of(body)
    if all(c in chars for c in text):
        return "".join(chars[c] for c in text)
    return mark + text


def text_of(src: str) -> str:
    """The plain-text (Unicode) form of a `math` source; see the module docstring."""
    out, i = [], 0
    while i < len(src):
        c = src[i]
        if c in "_^":
            body, i = _group(src, i + 1)
            out.append(_script(body, _SUB_CHARS if c == "_" else _SUP_CHARS, c))
        elif c == "\\" and src.startswith("\\text{", i):
            body, i = _group(src, i + 5)
            out.append(body)
        elif c == "\\" and src.startswith("\\frac", i):
            num, i = _group(src, i + 5)
            den, i = _group(src, i)
            out.append(f"{text_of(num)}/{text_of(den)}")
        elif c == "\\" and src.startswith("\\hat y", i):
            out.append("ŷ")
            i += 6
        elif c == "\\":
            name, i = _command(src, i)
            out.append(_COMMANDS[name])
            if name in _GLUED and src[i : i + 1] == " ":
                i += 1
        elif c == "'":
            out.append("′")
            i += 1
        elif c == "{":  # a template placeholder {n}
            j = src.index("}", i)
            out.append(src[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def math(src: str) -> Form:
    """One formula from its single source: LaTeX as written, text derived by `text_of`."""
    return Form(text_of(src), src)


def prose(src: str) -> Form:
    """A sentence with inline `$...$` math, from one source: markdown keeps it as written,
    the text form shows each math span by `text_of` without the dollars."""
    parts = src.split("$")
    text = "".join(text_of(p) if k % 2 else p for k, p in enumerate(parts))
    return Form(text, src)


@dataclass
class Equation:
    """lhs = rhs, symbolically, then for each shown unit: subst(operands) = value.

    `subst` is a template over the operands, `{0}`, `{1}`, ... in `operands` order;
    a renderer formats the numbers. An equation without operands is symbolic only.
    """

    key: str  # stable id, e.g. "c", "dz_f", "dh_prev"
    ref: str  # docs/equations.md equation number(s), e.g. "6", "8 at t-1"; "" for a definition
    lhs: Form
    rhs: Form
    subst: Form | None = None
    operands: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (name, (n,))
    value: np.ndarray | None = None  # (n,) one value per shown unit (or entry)
    rows: list[Form] = field(default_factory=list)  # left side of each numeric row
    source: str = ""  # where `value` comes from

    def to_dict(self) -> dict:
        d = {
            "key": self.key,
            "equation": self.ref,
            "lhs": self.lhs.text,
            "rhs": self.rhs.text,
            "latex": f"{self.lhs.tex} = {self.rhs.tex}",
        }
        if self.value is not None:
            d["rows"] = [r.text for r in self.rows]
            d["operands"] = {name: v.tolist() for name, v in self.operands}
            d["value"] = self.value.tolist()
            d["source"] = self.source
        return d


def sub(label: str | int) -> str:
    """A time label as Unicode subscript: 't-1' -> 'ₜ₋₁', 12 -> '₁₂'."""
    return str(label).translate(_SUB)


def sup(label: str | int) -> str:
    return str(label).translate(_SUP)


def shift(label: str | int, k: int) -> str | int:
    """Time label moved by k: 't' +1 -> 't+1', 't-1' +1 -> 't', 3 +1 -> 4."""
    if isinstance(label, int):
        return label + k
    base, _, off = label.replace("+", " +").replace("-", " -").partition(" ")
    n = (int(off) if off else 0) + k
    return base if n == 0 else f"{base}{n:+d}"


def sym(src: str, time: str | int | None = None, gate: str | None = None) -> Form:
    """A symbol with optional gate superscript and time subscript: z^{i}_{t}, zⁱₜ."""
    return math(src + (f"^{{{gate}}}" if gate else "") + (f"_{{{time}}}" if time is not None else ""))


def at_unit(form: Form, unit: int | None) -> Form:
    """c₃ -> c₃[u]; a function's argument takes the index: σ′(zⁱ₃) -> σ′(zⁱ₃[u])."""
    if unit is None:
        return form
    if form.text.endswith(")"):
        return Form(f"{form.text[:-1]}[{unit}])", f"{form.tex[:-1]}[{unit}])")
    return Form(f"{form.text}[{unit}]", f"{form.tex}[{unit}]")


class Operands:
    """Collects operands and hands out their template placeholders, in order."""

    def __init__(self, n: int):
        self.n = n
        self.items: list[tuple[str, np.ndarray]] = []

    def __call__(self, src: str, values) -> str:
        """The placeholder of a new operand named by the `math` source `src` (shown as text)."""
        v = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.n,)).copy()
        self.items.append((text_of(src), v))
        return "{" + str(len(self.items) - 1) + "}"
