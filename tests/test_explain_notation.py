"""explain's notation: the plain-text form of a formula is derived from its one LaTeX source."""

from __future__ import annotations

import pytest

from lstm_diag.features.explain.notation import math, sym, text_of


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
    ],
)
def test_text_is_derived_from_the_latex_source(src, text):
    assert text_of(src) == text
    assert math(src).tex == src and math(src).text == text


def test_symbols_take_gate_and_time():
    assert sym(r"\delta z", "t-1", "g").text == "δzᵍₜ₋₁"
    assert sym(r"\delta z", "t-1", "g").tex == r"\delta z^{g}_{t-1}"
