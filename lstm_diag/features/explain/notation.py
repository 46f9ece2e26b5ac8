"""Notation of `explain`: symbols, their Unicode and LaTeX renderings, and the `Equation` record.

Each `Equation` holds its symbolic form (plain text with Unicode sub/superscripts,
and LaTeX), a template into which a renderer substitutes the numbers of its
operands, and its value. Equation numbers (1)-(23) are docs/equations.md's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_SUB = str.maketrans("0123456789+-t", "₀₁₂₃₄₅₆₇₈₉₊₋ₜ")
_SUP = str.maketrans("0123456789()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾")
GATE_SUP = {"i": "ⁱ", "f": "ᶠ", "g": "ᵍ", "o": "ᵒ"}
GATE_FN = {"i": "σ", "f": "σ", "g": "tanh", "o": "σ"}
GATE_FN_TEX = {"i": r"\sigma", "f": r"\sigma", "g": r"\tanh", "o": r"\sigma"}


@dataclass(frozen=True)
class Form:
    """One piece of math, as plain text and as LaTeX."""

    text: str
    tex: str


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


def sym(text: str, tex: str, time: str | int | None = None, gate: str | None = None) -> Form:
    """A symbol with optional gate superscript and time subscript: zⁱₜ, z^{i}_{t}."""
    t_text = (GATE_SUP[gate] if gate else "") + (sub(time) if time is not None else "")
    t_tex = (f"^{{{gate}}}" if gate else "") + (f"_{{{time}}}" if time is not None else "")
    return Form(text + t_text, tex + t_tex)


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

    def __call__(self, name: str, values) -> str:
        v = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.n,)).copy()
        self.items.append((name, v))
        return "{" + str(len(self.items) - 1) + "}"
