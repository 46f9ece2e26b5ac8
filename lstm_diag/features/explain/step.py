"""`explain`, one time step: its forward and backward equations with the engine's numbers.

Pure: builds plain data, prints nothing (renderers are in report/explain_render.py).
Each `Equation` holds its symbolic form (plain text with Unicode sub/superscripts,
and LaTeX), a template into which a renderer substitutes the numbers of its
operands, and its value. Equation numbers (1)-(23) are docs/equations.md's.

Where the numbers come from:
- forward values (i, f, g, o, c_t, h_t, tanh c_t, x_t) are the engine's caches
  (`LayerCache.gates/c/h/tanh_c/x`);
- every gradient value (δh_t, δc_t, δz_t, δh_0, δc_0, ∂L/∂θ, the loss and ∂L/∂ŷ)
  is the engine's (`LayerGrads.dh/dc/dz/dh0/dc0`, `Backward.params`, `Forward`);
- computed here, for display only, are decompositions of those numbers: the
  pre-activations z_t (eq. (1) from the cached x_t, h_{t-1}), the gate derivative
  factors σ'(z) = y(1-y) and tanh'(z) = 1-y², the parts of eq. (8), and the
  per-step shares of eqs. (14)-(16). Tests check that they recombine to the
  engine's values.

Time steps are 1-based as in docs/equations.md (t = 1..T; t = 0 is the initial state);
layers, samples and units are 0-based, as PyTorch indexes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.engine import GATES
from ...core.names import param_name
from ...errors import ConfigError
from ...setup.config import Config
from ...setup.problem import Problem
from ..analysis import AnalysisResult
from .notation import GATE_FN, GATE_FN_TEX, GATE_SUP, Equation, Form, Operands, at_unit, shift, sub, sup, sym

SCHEMA_VERSION = 1
DEFAULT_UNITS = 2  # units shown when --units is not given
MAX_COLS = 2  # columns of W_ih and W_hh shown in the contribution tables


@dataclass
class Contribution:
    """One step's share of the parameter gradients, eqs. (14)-(16), at chosen entries.

    Rows are rows r of W_ih, W_hh, b (r = gate·H + unit, gate order i, f, g, o);
    columns are inputs j of x_t (W_ih) and units v of h_{t-1} (W_hh).
    """

    t: int
    layer: int
    sample_index: int  # b
    rows: list[int]
    row_labels: list[str]  # "i[0]", or "i" when H = 1
    x_cols: list[int]
    h_cols: list[int]
    dz: np.ndarray  # (n,)       this sample's δz_t[r] (engine)
    x: np.ndarray  # (nx,)       this sample's x_t[j] (cache)
    h_prev: np.ndarray  # (nh,)  this sample's h_{t-1}[v] (cache)
    sample: dict[str, np.ndarray]  # this sample at step t: W_ih (n, nx), W_hh (n, nh), b (n,)
    batch: dict[str, np.ndarray]  # Σ over the batch at step t, same shapes
    total: dict[str, np.ndarray]  # the engine's ∂L/∂θ at the same entries (all steps)

    def to_dict(self) -> dict:
        return {
            "step": self.t,
            "sample_index": self.sample_index,
            "rows": self.rows,
            "row_labels": self.row_labels,
            "x_cols": self.x_cols,
            "h_cols": self.h_cols,
            "dz": self.dz,
            "x": self.x,
            "h_prev": self.h_prev,
            "sample": self.sample,
            "batch": self.batch,
            "total": self.total,
        }


@dataclass
class StepView:
    """Everything shown for one time step t (1-based) of one layer and sample."""

    t: int
    forward: list[Equation]  # eqs. (1)-(7)
    backward: list[Equation]  # eqs. (8), (9), gate derivatives, (10)-(13)
    contributions: Contribution  # eqs. (14)-(16)
    previous: list[Equation]  # eqs. (8), (9) at t-1: what flows on to step t-1

    def to_dict(self) -> dict:
        return {
            "step": self.t,
            "forward": [e.to_dict() for e in self.forward],
            "backward": [e.to_dict() for e in self.backward],
            "contributions": self.contributions.to_dict(),
            "previous": [e.to_dict() for e in self.previous],
        }


@dataclass
class View:
    """The validated selection: step t (1-based), layer, sample, units (0-based)."""

    step: int
    layer: int
    sample: int
    units: list[int]


@dataclass
class Explanation:
    """`lstm-diag explain CONFIG`: one step of one layer, for one sample and a few units."""

    config: Config
    view: View
    loss: float
    sizes: dict[str, int]  # T, B, I, H, L, O
    step: StepView

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "explain",
            "mode": "step",
            "config": self.config.model_dump(mode="json"),
            "sizes": self.sizes,
            "view": {
                "step": self.view.step,
                "layer": self.view.layer,
                "sample": self.view.sample,
                "units": self.view.units,
            },
            "loss": self.loss,
            **self.step.to_dict(),
        }


# ----------------------------------------------------------------- one time step


class _Step:
    """Builds the equations of one layer and sample; `s` is a 0-based step index."""

    def __init__(self, result: AnalysisResult, layer: int, sample: int, units: list[int]):
        p = result.problem
        self.P, self.spec, self.target = p.params, p.spec, p.target
        self.fwd, self.bwd = result.fwd, result.bwd
        self.k, self.b = layer, sample
        self.units = np.asarray(units)
        self.n = len(units)
        self.cache = result.fwd.layers[layer]
        self.grads = result.bwd.layers[layer]
        self.T, _, self.H = self.cache.tanh_c.shape
        self.I_k = self.cache.x.shape[2]
        self.W_ih = self.P[param_name("weight_ih", layer)]  # (4H, I_k)
        self.W_hh = self.P[param_name("weight_hh", layer)]  # (4H, H)
        self.bias = self.P[param_name("bias_ih", layer)] + self.P[param_name("bias_hh", layer)]  # (4H,)
        self.top = layer == self.spec.num_layers - 1

    # helpers --------------------------------------------------------------
    def rows_of(self, gate: str) -> np.ndarray:
        return GATES.index(gate) * self.H + self.units  # rows of W_ih, W_hh, b, z

    def act(self, gate: str, tau: int) -> np.ndarray:
        """A gate's activations at step tau (1-based), (n,); zero past the end (f_{T+1} := 0)."""
        if tau > self.T:
            return np.zeros(self.n)
        return self.cache.gate(gate)[tau - 1, self.b, self.units]

    def numeric_rows(self, form: Form) -> list[Form]:
        unit = (lambda u: None) if self.H == 1 else (lambda u: int(u))
        return [at_unit(form, unit(u)) for u in self.units]

    def dz_at(self, tau: int) -> np.ndarray:
        """δz at step tau (1-based) for this sample, (4H,); zero past the end (δz_{T+1} = 0)."""
        if tau > self.T:
            return np.zeros(4 * self.H)
        return self.grads.dz[tau - 1, self.b]

    def direct(self, tau: int) -> np.ndarray:
        """The non-recurrent part of eq. (8) at step tau, (n,): from the head or the layer above."""
        if not self.top:
            above = self.bwd.layers[self.k + 1].dz[tau - 1, self.b]  # (4H',)
            W_up = self.P[param_name("weight_ih", self.k + 1)]  # (4H', H)
            return above @ W_up[:, self.units]  # (4H',) @ (4H', n)
        W_head = self.P["head.weight"][:, self.units]  # (O, n)
        if self.target == "last":
            if tau != self.T:
                return np.zeros(self.n)
            return self.fwd.dy_hat[self.b] @ W_head  # (O,) @ (O, n)
        return self.fwd.dy_hat[self.b, tau - 1] @ W_head

    # forward, eqs. (1)-(7) -------------------------------------------------
    def forward(self, tau: int) -> list[Equation]:
        s, b = tau - 1, self.b
        x = self.cache.x[s, b]  # (I_k,)
        h_prev = self.cache.h[s, b]  # (H,)  h_{t-1}
        t_ = "t"
        x_name = "xₜ" if self.k == 0 else f"hₜ{sup(f'({self.k - 1})')}"
        x_tex = "x_t" if self.k == 0 else f"h_t^{{({self.k - 1})}}"
        eqs = [
            Equation(
                "z",
                "1",
                sym("z", "z", t_),
                Form(
                    f"Wᵢₕ {x_name} + bᵢₕ + Wₕₕ hₜ₋₁ + bₕₕ",
                    rf"W_{{ih}} {x_tex} + b_{{ih}} + W_{{hh}} h_{{t-1}} + b_{{hh}}",
                ),
            )
        ]
        z_all = {}
        for gate in GATES:
            r = self.rows_of(gate)
            wx = self.W_ih[r] @ x  # (n, I_k) @ (I_k,)
            uh = self.W_hh[r] @ h_prev  # (n, H) @ (H,)
            z = wx + self.bias[r] + uh  # eq. (1), for display: the cache holds activations
            z_all[gate] = z
            op = Operands(self.n)
            gs = GATE_SUP[gate]
            if self.I_k == 1:
                in_txt = in_tex = f"{op(f'Wᵢₕ[{gate}]', self.W_ih[r, 0])} · {op(x_name, x[0])}"
                in_tex = in_txt.replace("·", r"\cdot")
            else:
                in_txt = in_tex = op(f"(Wᵢₕ {x_name}){gs}", wx)
            b_ph = op(f"b{gs}", self.bias[r])
            if self.H == 1:
                rec_txt = f"{op(f'Wₕₕ[{gate}]', self.W_hh[r, 0])} · {op('hₜ₋₁', h_prev[0])}"
                rec_tex = rec_txt.replace("·", r"\cdot")
            else:
                rec_txt = rec_tex = op(f"(Wₕₕ hₜ₋₁){gs}", uh)
            if self.I_k == 1 and self.H == 1:
                rhs = Form(
                    f"Wᵢₕ[{gate}] {x_name} + b{gs} + Wₕₕ[{gate}] hₜ₋₁",
                    rf"W_{{ih}}[{gate}]\, {x_tex} + b^{{{gate}}} + W_{{hh}}[{gate}]\, h_{{t-1}}",
                )
            else:
                rhs = Form(
                    f"(Wᵢₕ {x_name}){gs} + b{gs} + (Wₕₕ hₜ₋₁){gs}",
                    rf"(W_{{ih}} {x_tex})^{{{gate}}} + b^{{{gate}}} + (W_{{hh}} h_{{t-1}})^{{{gate}}}",
                )
            eqs.append(
                Equation(
                    f"z_{gate}",
                    "1",
                    sym("z", "z", t_, gate),
                    rhs,
                    Form(f"{in_txt} + {b_ph} + {rec_txt}", f"{in_tex} + {b_ph} + {rec_tex}"),
                    op.items,
                    z,
                    self.numeric_rows(sym("z", "z", tau, gate)),
                    "recomputed by eq. (1) from cached x_t, h_{t-1} (display only)",
                )
            )
            op = Operands(self.n)
            fn, fn_tex = GATE_FN[gate], GATE_FN_TEX[gate]
            ph = op(f"z{gs}ₜ", z)
            eqs.append(
                Equation(
                    gate,
                    str(2 + GATES.index(gate)),
                    sym(gate, gate, t_),
                    Form(f"{fn}(z{gs}ₜ)", rf"{fn_tex}(z^{{{gate}}}_t)"),
                    Form(f"{fn}({ph})", rf"{fn_tex}({ph})"),
                    op.items,
                    self.act(gate, tau),
                    self.numeric_rows(sym(gate, gate, tau)),
                    "LayerCache.gates",
                )
            )
        i, f, g, o = (self.act(q, tau) for q in GATES)
        c_prev = self.cache.c[s, b, self.units]
        op = Operands(self.n)
        ph = [op("fₜ", f), op("cₜ₋₁", c_prev), op("iₜ", i), op("gₜ", g)]
        eqs.append(
            Equation(
                "c",
                "6",
                sym("c", "c", t_),
                Form("fₜ ⊙ cₜ₋₁ + iₜ ⊙ gₜ", r"f_t \odot c_{t-1} + i_t \odot g_t"),
                Form(
                    f"{ph[0]} · {ph[1]} + {ph[2]} · {ph[3]}",
                    rf"{ph[0]} \cdot {ph[1]} + {ph[2]} \cdot {ph[3]}",
                ),
                op.items,
                self.cache.c[s + 1, b, self.units],
                self.numeric_rows(sym("c", "c", tau)),
                "LayerCache.c",
            )
        )
        op = Operands(self.n)
        ph = [op("oₜ", o), op("cₜ", self.cache.c[s + 1, b, self.units]), op("tanh cₜ", self.tanh_c(tau))]
        eqs.append(
            Equation(
                "h",
                "7",
                sym("h", "h", t_),
                Form("oₜ ⊙ tanh(cₜ)", r"o_t \odot \tanh(c_t)"),
                Form(
                    f"{ph[0]} · tanh({ph[1]}) = {ph[0]} · {ph[2]}",
                    rf"{ph[0]} \cdot \tanh({ph[1]}) = {ph[0]} \cdot {ph[2]}",
                ),
                op.items,
                self.cache.h[s + 1, b, self.units],
                self.numeric_rows(sym("h", "h", tau)),
                "LayerCache.h",
            )
        )
        return eqs

    def tanh_c(self, tau: int) -> np.ndarray:
        return self.cache.tanh_c[tau - 1, self.b, self.units]

    # backward, eqs. (8)-(13) -----------------------------------------------
    def dh_equations(self, tau: int, label: str | int, key: str, ref: str) -> list[Equation]:
        """Eq. (8) at step tau (0 = the initial state), symbol time `label`."""
        nxt = shift(label, 1)
        dz_next = self.dz_at(tau + 1)  # (4H,)
        rec = dz_next @ self.W_hh[:, self.units]  # (4H,) @ (4H, n): (W_hhᵀ δz_{t+1})[u]
        rec_sym = Form(f"Wₕₕᵀ δz{sub(nxt)}", rf"W_{{hh}}^\top \delta z_{{{nxt}}}")
        eqs = []
        if self.H == 1 and tau < self.T:  # spell out the sum over the four gate rows
            op = Operands(self.n)
            terms = [
                f"{op(f'Wₕₕ[{q}]', self.W_hh[j, 0])} · {op(f'δz{GATE_SUP[q]}{sub(tau + 1)}', dz_next[j])}"
                for j, q in enumerate(GATES)
            ]
            txt = " + ".join(terms)
            eqs.append(
                Equation(
                    f"{key}_rec",
                    ref,
                    rec_sym,
                    Form(
                        " + ".join(f"Wₕₕ[{q}] δz{GATE_SUP[q]}{sub(nxt)}" for q in GATES),
                        " + ".join(rf"W_{{hh}}[{q}]\, \delta z^{{{q}}}_{{{nxt}}}" for q in GATES),
                    ),
                    Form(txt, txt.replace("·", r"\cdot")),
                    op.items,
                    rec,
                    [Form(f"Wₕₕᵀ δz{sub(tau + 1)}", rf"W_{{hh}}^\top \delta z_{{{tau + 1}}}")],
                    "W_hhᵀ times LayerGrads.dz of the next step (display only)",
                )
            )
        op = Operands(self.n)
        lhs = sym("δh", r"\delta h", label)
        value = self.grads.dh[tau - 1, self.b, self.units] if tau >= 1 else self.grads.dh0[self.b, self.units]
        source = "LayerGrads.dh" if tau >= 1 else "LayerGrads.dh0"
        if tau == 0:  # δh_0 = W_hhᵀ δz_1
            rhs, subst = rec_sym, op(rec_sym.text, rec)
            subst = Form(subst, subst)
        else:
            if self.top:
                d_txt, d_tex = (
                    f"∂ℓ{sub(label)}/∂h{sub(label)}",
                    rf"\partial \ell_{{{label}}}/\partial h_{{{label}}}",
                )
            else:
                k1 = self.k + 1
                d_txt = f"Wᵢₕ{sup(f'({k1})')}ᵀ δz{sub(label)}{sup(f'({k1})')}"
                d_tex = rf"W_{{ih}}^{{({k1})\top}} \delta z_{{{label}}}^{{({k1})}}"
            d_ph = op(d_txt, self.direct(tau))
            r_ph = op(rec_sym.text, rec) if tau < self.T else "0"
            rhs = Form(f"{d_txt} + {rec_sym.text}", f"{d_tex} + {rec_sym.tex}")
            subst = Form(f"{d_ph} + {r_ph}", f"{d_ph} + {r_ph}")
        eqs.append(
            Equation(
                key,
                ref,
                lhs,
                rhs,
                subst,
                op.items,
                value,
                self.numeric_rows(sym("δh", r"\delta h", tau)),
                source,
            )
        )
        return eqs

    def dc_equation(self, tau: int, label: str | int, key: str, ref: str) -> Equation:
        """Eq. (9) at step tau (0 = the initial state), symbol time `label`."""
        nxt = shift(label, 1)
        op = Operands(self.n)
        parts_txt, parts_tex, sub_parts = [], [], []
        if tau >= 1:
            dh = self.grads.dh[tau - 1, self.b, self.units]
            o = self.act("o", tau)
            tc = self.tanh_c(tau)
            L = sub(label)
            parts_txt.append(f"δh{L} ⊙ o{L} ⊙ (1 - tanh² c{L})")
            parts_tex.append(rf"\delta h_{{{label}}} \odot o_{{{label}}} \odot (1 - \tanh^2 c_{{{label}}})")
            ph = [op(f"δh{L}", dh), op(f"o{L}", o), op(f"1 - tanh² c{L}", 1.0 - tc * tc)]
            sub_parts.append(f"{ph[0]} · {ph[1]} · {ph[2]}")
        N = sub(nxt)
        parts_txt.append(f"δc{N} ⊙ f{N}")
        parts_tex.append(rf"\delta c_{{{nxt}}} \odot f_{{{nxt}}}")
        if tau < self.T:
            ph = [op(f"δc{N}", self.grads.dc[tau, self.b, self.units]), op(f"f{N}", self.act("f", tau + 1))]
            sub_parts.append(f"{ph[0]} · {ph[1]}")
        else:
            sub_parts.append("0")
        txt = " + ".join(sub_parts)
        value = self.grads.dc[tau - 1, self.b, self.units] if tau >= 1 else self.grads.dc0[self.b, self.units]
        return Equation(
            key,
            ref,
            sym("δc", r"\delta c", label),
            Form(" + ".join(parts_txt), " + ".join(parts_tex)),
            Form(txt, txt.replace("·", r"\cdot")),
            op.items,
            value,
            self.numeric_rows(sym("δc", r"\delta c", tau)),
            "LayerGrads.dc" if tau >= 1 else "LayerGrads.dc0",
        )

    def backward(self, tau: int) -> list[Equation]:
        i, f, g, o = (self.act(q, tau) for q in GATES)
        tc = self.tanh_c(tau)
        c_prev = self.cache.c[tau - 1, self.b, self.units]
        dh = self.grads.dh[tau - 1, self.b, self.units]
        dc = self.grads.dc[tau - 1, self.b, self.units]
        dz = self.grads.dz[tau - 1, self.b]  # (4H,)
        eqs = self.dh_equations(tau, "t", "dh", "8")
        op = Operands(self.n)
        ph = op("tanh cₜ", tc)
        eqs.append(
            Equation(
                "dtanh_c",
                "",
                Form("tanh′(cₜ)", r"\tanh'(c_t)"),
                Form("1 - tanh² cₜ", r"1 - \tanh^2 c_t"),
                Form(f"1 - {ph}²", rf"1 - {ph}^2"),
                op.items,
                1.0 - tc * tc,
                self.numeric_rows(Form(f"tanh′(c{sub(tau)})", rf"\tanh'(c_{{{tau}}})")),
                "computed from LayerCache.tanh_c",
            )
        )
        eqs.append(self.dc_equation(tau, "t", "dc", "9"))
        # each gate's local derivative: σ'(z) = y(1 - y), tanh'(z) = 1 - y²
        local = {"i": i * (1.0 - i), "f": f * (1.0 - f), "g": 1.0 - g * g, "o": o * (1.0 - o)}
        local_eqs: dict[str, Equation] = {}
        for q, y in zip(GATES, (i, f, g, o), strict=True):
            op = Operands(self.n)
            ph = op(f"{q}ₜ", y)
            gs = GATE_SUP[q]
            if q == "g":
                lhs = Form(f"tanh′(z{gs}ₜ)", r"\tanh'(z^{g}_t)")
                rhs, subst = Form("1 - gₜ²", "1 - g_t^2"), Form(f"1 - {ph}²", f"1 - {ph}^2")
                row = Form(f"tanh′(z{gs}{sub(tau)})", rf"\tanh'(z^{{g}}_{{{tau}}})")
            else:
                lhs = Form(f"σ′(z{gs}ₜ)", rf"\sigma'(z^{{{q}}}_t)")
                rhs = Form(f"{q}ₜ(1 - {q}ₜ)", rf"{q}_t(1 - {q}_t)")
                subst = Form(f"{ph} · (1 - {ph})", rf"{ph} \cdot (1 - {ph})")
                row = Form(f"σ′(z{gs}{sub(tau)})", rf"\sigma'(z^{{{q}}}_{{{tau}}})")
            local_eqs[q] = Equation(
                f"d{q}",
                "",
                lhs,
                rhs,
                subst,
                op.items,
                local[q],
                self.numeric_rows(row),
                "computed from LayerCache.gates",
            )
        # eqs. (10)-(13): δz = (upstream δ) ⊙ (what the gate multiplies) ⊙ (gate derivative)
        spec = {
            "i": ("10", ("δcₜ", dc, r"\delta c_t"), ("gₜ", g, "g_t")),
            "f": ("11", ("δcₜ", dc, r"\delta c_t"), ("cₜ₋₁", c_prev, "c_{t-1}")),
            "g": ("12", ("δcₜ", dc, r"\delta c_t"), ("iₜ", i, "i_t")),
            "o": ("13", ("δhₜ", dh, r"\delta h_t"), ("tanh cₜ", tc, r"\tanh c_t")),
        }
        for q, (ref, (n1, v1, t1), (n2, v2, t2)) in spec.items():
            gs = GATE_SUP[q]
            d_txt = f"tanh′(z{gs}ₜ)" if q == "g" else f"σ′(z{gs}ₜ)"
            d_tex = r"\tanh'(z^{g}_t)" if q == "g" else rf"\sigma'(z^{{{q}}}_t)"
            op = Operands(self.n)
            ph = [op(n1, v1), op(n2, v2), op(d_txt, local[q])]
            eqs.append(local_eqs[q])  # the gate's derivative, then its δz
            eqs.append(
                Equation(
                    f"dz_{q}",
                    ref,
                    sym("δz", r"\delta z", "t", q),
                    Form(f"{n1} ⊙ {n2} ⊙ {d_txt}", rf"{t1} \odot {t2} \odot {d_tex}"),
                    Form(" · ".join(ph), r" \cdot ".join(ph)),
                    op.items,
                    dz[self.rows_of(q)],
                    self.numeric_rows(sym("δz", r"\delta z", tau, q)),
                    "LayerGrads.dz",
                )
            )
        return eqs

    def previous(self, tau: int) -> list[Equation]:
        """Eqs. (8), (9) at t-1: what this step sends back to step t-1 (or to h_0, c_0)."""
        label: str | int = "t-1" if tau > 1 else 0
        ref8, ref9 = ("8 at t-1", "9 at t-1") if tau > 1 else ("", "")
        eqs = self.dh_equations(tau - 1, label, "dh_prev", ref8)
        eqs.append(self.dc_equation(tau - 1, label, "dc_prev", ref9))
        return eqs

    # eqs. (14)-(16) ----------------------------------------------------------
    def contributions(self, tau: int) -> Contribution:
        s, b, k, H = tau - 1, self.b, self.k, self.H
        rows = [int(GATES.index(q) * H + u) for q in GATES for u in self.units]
        labels = [q if H == 1 else f"{q}[{int(u)}]" for q in GATES for u in self.units]
        x_cols = list(range(min(self.I_k, MAX_COLS)))
        h_cols = [int(u) for u in self.units[:MAX_COLS]]
        dz = self.grads.dz[s]  # (B, 4H)
        x = self.cache.x[s]  # (B, I_k)
        h_prev = self.cache.h[s]  # (B, H)  h_{t-1}
        names = (param_name("weight_ih", k), param_name("weight_hh", k), param_name("bias_ih", k))
        dz_r = dz[:, rows]  # (B, n)
        sample = {
            names[0]: np.outer(dz_r[b], x[b, x_cols]),  # eq. (14): δz_t x_tᵀ
            names[1]: np.outer(dz_r[b], h_prev[b, h_cols]),  # eq. (15): δz_t h_{t-1}ᵀ
            names[2]: dz_r[b].copy(),  # eq. (16): δz_t
        }
        batch = {
            names[0]: dz_r.T @ x[:, x_cols],  # (n, B) @ (B, nx)
            names[1]: dz_r.T @ h_prev[:, h_cols],  # (n, B) @ (B, nh)
            names[2]: dz_r.sum(axis=0),
        }
        grads = self.bwd.params
        total = {
            names[0]: grads[names[0]][np.ix_(rows, x_cols)],
            names[1]: grads[names[1]][np.ix_(rows, h_cols)],
            names[2]: grads[names[2]][rows],
        }
        return Contribution(
            t=tau,
            layer=k,
            sample_index=b,
            rows=rows,
            row_labels=labels,
            x_cols=x_cols,
            h_cols=h_cols,
            dz=dz_r[b].copy(),
            x=x[b, x_cols].copy(),
            h_prev=h_prev[b, h_cols].copy(),
            sample=sample,
            batch=batch,
            total=total,
        )

    def view(self, tau: int) -> StepView:
        return StepView(
            t=tau,
            forward=self.forward(tau),
            backward=self.backward(tau),
            contributions=self.contributions(tau),
            previous=self.previous(tau),
        )


# ------------------------------------------------------------------ selection


def _index(option: str, value, lo: int, hi: int, what: str) -> int:
    """An integer option in lo..hi, else a one-line ConfigError naming the option and range."""
    try:
        v = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{option}: expected an integer in {lo}..{hi} ({what}), got {value!r}") from None
    if not lo <= v <= hi:
        raise ConfigError(f"{option}: must be in {lo}..{hi} ({what}), got {v}")
    return v


def select(
    problem: Problem,
    step: int | str | None = None,
    layer: int | str | None = None,
    sample: int | str | None = None,
    units: str | list[int] | None = None,
) -> View:
    """Validate the requested view against the model's sizes (CLI option names in errors)."""
    spec = problem.spec
    if spec.bidirectional or spec.proj_size:
        field = "model.bidirectional" if spec.bidirectional else "model.proj_size"
        raise ConfigError(
            f"{field}: explain shows the equations of a unidirectional LSTM without projection; "
            "this model is not one (use `analyze`, which handles it)"
        )
    B, T = problem.x.shape[0], problem.x.shape[1]
    H = spec.hidden_size
    t = T if step is None else _index("--step", step, 1, T, "time steps, 1-based")
    k = 0 if layer is None else _index("--layer", layer, 0, spec.num_layers - 1, "layers, 0-based")
    b = 0 if sample is None else _index("--sample", sample, 0, B - 1, "samples in the batch, 0-based")
    if units is None:
        us = list(range(min(H, DEFAULT_UNITS)))
    else:
        items = units.split(",") if isinstance(units, str) else list(units)
        if not [u for u in items if str(u).strip()]:
            raise ConfigError(f"--units: expected unit indices in 0..{H - 1}, e.g. 0,3, got {units!r}")
        us = [_index("--units", u, 0, H - 1, "hidden units, 0-based") for u in items if str(u).strip()]
        us = list(dict.fromkeys(us))  # keep the order, drop repeats
    return View(step=t, layer=k, sample=b, units=us)


def explain(result: AnalysisResult, view: View) -> Explanation:
    """The equations of `view.step` for one layer, sample and a few units, with the engine's numbers."""
    p = result.problem
    B, T, I = p.x.shape
    sizes = {
        "T": int(T),
        "B": int(B),
        "I": int(I),
        "H": p.spec.hidden_size,
        "L": p.spec.num_layers,
        "O": p.spec.output_size,
    }
    step = _Step(result, view.layer, view.sample, view.units).view(view.step)
    return Explanation(config=p.config, view=view, loss=result.loss, sizes=sizes, step=step)
