"""explain's notation: the plain-text form of a formula is derived from its one LaTeX source."""

from __future__ import annotations

import pytest
from conftest import run

from lstm_diag.features.explain import CONTRIBUTION_RULE, CONTRIBUTION_SUMS
from lstm_diag.features.explain.notation import math, prose, sym, text_of


@pytest.mark.parametrize(
    ("src", "text"),
    [
        (r"f_t \odot c_{t-1} + i_t \odot g_t", "fₜ ⊙ cₜ₋₁ + iₜ ⊙ gₜ"),
        (r"W_{hh}^\top \delta z_{t+1}", "Wₕₕᵀ δzₜ₊₁"),
        (r"\sigma'(z^{f}_{12})", "σ′(zᶠ₁₂)"),
        (r"1 - \tanh^2 c_t", "1 - tanh² cₜ"),
        (r"W_{ih}^{(1)\top} \delta z_{t}^{(1)}", "Wᵢₕ⁽¹⁾ᵀ δzₜ⁽¹⁾"),
        (r"\partial \ell_T/\partial h_T", "∂ℓ_T/∂h_T"),  # no Unicode subscript T: stays _T
        (r"W_{\text{head}}^\top\, \partial L/\partial \hat y", "W_headᵀ ∂L/∂ŷ"),
        (r"{0} \cdot (1 - {0}) + {1}^2", "{0} · (1 - {0}) + {1}²"),  # placeholders pass through
        (r"\frac{\partial L}{\partial W_{hh}} = \sum_t \delta z_t\, h_{t-1}^\top", "∂L/∂Wₕₕ = Σₜ δzₜ hₜ₋₁ᵀ"),
    ],
)
def test_text_is_derived_from_the_latex_source(src, text):
    assert text_of(src) == text
    assert math(src).tex == src and math(src).text == text


def test_symbols_take_gate_and_time():
    assert sym(r"\delta z", "t-1", "g").text == "δzᵍₜ₋₁"
    assert sym(r"\delta z", "t-1", "g").tex == r"\delta z^{g}_{t-1}"


def test_prose_keeps_markdown_and_derives_the_text():
    src = r"Step $t$ adds $\delta z_t[r] \cdot x_t[j]$ to $\partial L/\partial W_{ih}[r,j]$."
    assert prose(src).tex == src
    assert prose(src).text == "Step t adds δzₜ[r] · xₜ[j] to ∂L/∂Wᵢₕ[r,j]."


def test_contribution_sums_are_rendered_from_one_source():
    """Eqs. (14)-(16) and the rule of one step's share: the terminal shows the text forms,
    markdown the LaTeX forms, both from CONTRIBUTION_SUMS / CONTRIBUTION_RULE."""
    table, md = run("explain", "--toy").stdout, run("explain", "--toy", "--format", "markdown").stdout
    assert len(CONTRIBUTION_SUMS) == 3
    for eq, n in zip(CONTRIBUTION_SUMS, ("(14)", "(15)", "(16)"), strict=True):
        assert f"{eq.lhs.text} = {eq.rhs.text}" in table
        assert rf"{eq.lhs.tex} &= {eq.rhs.tex} && \text{{{n}}}" in md
    assert " ".join(CONTRIBUTION_RULE.text.split()) in " ".join(table.split())
    assert CONTRIBUTION_RULE.tex in md
