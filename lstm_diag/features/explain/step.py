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
from ...setup.vocab import Vocab
from ..analysis import AnalysisResult
from .notation import GATE_FN_TEX, Equation, Form, Operands, at_unit, math, prose, shift, sym

SCHEMA_VERSION = 2  # docs/explain.md, "Version history"
CONTEXT = (24, 8)  # tokens shown before and after step t in the input context
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


def _dl(p: str) -> str:
    """∂L/∂p as a LaTeX fraction."""
    return rf"\frac{{\partial L}}{{\partial {p}}}"


# eqs. (14)-(16) and what one step adds to them: written once, shown by every renderer
CONTRIBUTION_SUMS = [
    Equation("dW_ih", "14", math(_dl("W_{ih}")), math(r"\sum_t \delta z_t\, x_t^\top")),
    Equation("dW_hh", "15", math(_dl("W_{hh}")), math(r"\sum_t \delta z_t\, h_{t-1}^\top")),
    Equation("db", "16", math(f"{_dl('b_{ih}')} = {_dl('b_{hh}')}"), math(r"\sum_t \delta z_t")),
]
CONTRIBUTION_RULE = prose(
    r"Step $t$ adds $\delta z_t[r] \cdot x_t[j]$ to $\partial L/\partial W_{ih}[r,j]$, "
    r"$\delta z_t[r] \cdot h_{t-1}[v]$ to $\partial L/\partial W_{hh}[r,v]$ and $\delta z_t[r]$ to "
    r"$\partial L/\partial b[r]$, for $b = b_{ih}$ and $b = b_{hh}$ alike; row "
    r"$r = \text{gate} \cdot H + u$ of the stacked $[i|f|g|o]$ parameters."
)


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
    inputs: dict | None = None  # token-id data: the sample's tokens around t (`step_inputs`)

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
            "inputs": self.inputs,
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
        x_src = "x_t" if self.k == 0 else f"h_t^{{({self.k - 1})}}"  # the layer's input
        rhs = math(rf"W_{{ih}} {x_src} + b_{{ih}} + W_{{hh}} h_{{t-1}} + b_{{hh}}")
        eqs = [Equation("z", "1", sym("z", "t"), rhs)]
        for gate in GATES:
            z_eq = self.z_equation(gate, tau, x_src)
            eqs += [z_eq, self.gate_equation(gate, tau, z_eq.value)]
        return eqs + [self.c_equation(tau), self.h_equation(tau)]

    def z_equation(self, gate: str, tau: int, x_src: str) -> Equation:
        """Eq. (1) for one gate's rows, recomputed from the cached x_t and h_{t-1}: the cache
        holds activations, so z is for display only."""
        x, h_prev = self.cache.x[tau - 1, self.b], self.cache.h[tau - 1, self.b]  # (I_k,), (H,)
        r, q = self.rows_of(gate), f"^{{{gate}}}"
        wx = self.W_ih[r] @ x  # (n, I_k) @ (I_k,)
        uh = self.W_hh[r] @ h_prev  # (n, H) @ (H,)
        op = Operands(self.n)
        if self.I_k == 1:
            inp = rf"{op(f'W_{{ih}}[{gate}]', self.W_ih[r, 0])} \cdot {op(x_src, x[0])}"
        else:
            inp = op(f"(W_{{ih}} {x_src}){q}", wx)
        b_ph = op(f"b{q}", self.bias[r])
        if self.H == 1:
            rec = rf"{op(f'W_{{hh}}[{gate}]', self.W_hh[r, 0])} \cdot {op('h_{t-1}', h_prev[0])}"
        else:
            rec = op(f"(W_{{hh}} h_{{t-1}}){q}", uh)
        if self.I_k == 1 and self.H == 1:
            rhs = rf"W_{{ih}}[{gate}]\, {x_src} + b{q} + W_{{hh}}[{gate}]\, h_{{t-1}}"
        else:
            rhs = rf"(W_{{ih}} {x_src}){q} + b{q} + (W_{{hh}} h_{{t-1}}){q}"
        return Equation(
            f"z_{gate}",
            "1",
            sym("z", "t", gate),
            math(rhs),
            math(f"{inp} + {b_ph} + {rec}"),
            op.items,
            wx + self.bias[r] + uh,  # eq. (1)
            self.numeric_rows(sym("z", tau, gate)),
            "recomputed by eq. (1) from cached x_t, h_{t-1} (display only)",
        )

    def gate_equation(self, gate: str, tau: int, z: np.ndarray) -> Equation:
        """Eqs. (2)-(5): a gate's activation, σ or tanh of its pre-activation."""
        op = Operands(self.n)
        fn = GATE_FN_TEX[gate]
        ph = op(f"z^{{{gate}}}_t", z)
        return Equation(
            gate,
            str(2 + GATES.index(gate)),
            sym(gate, "t"),
            math(rf"{fn}(z^{{{gate}}}_t)"),
            math(rf"{fn}({ph})"),
            op.items,
            self.act(gate, tau),
            self.numeric_rows(sym(gate, tau)),
            "LayerCache.gates",
        )

    def c_equation(self, tau: int) -> Equation:
        """Eq. (6): the cell state."""
        s, b = tau - 1, self.b
        i, f, g = (self.act(q, tau) for q in "ifg")
        op = Operands(self.n)
        ph = [op("f_t", f), op("c_{t-1}", self.cache.c[s, b, self.units]), op("i_t", i), op("g_t", g)]
        return Equation(
            "c",
            "6",
            sym("c", "t"),
            math(r"f_t \odot c_{t-1} + i_t \odot g_t"),
            math(rf"{ph[0]} \cdot {ph[1]} + {ph[2]} \cdot {ph[3]}"),
            op.items,
            self.cache.c[s + 1, b, self.units],
            self.numeric_rows(sym("c", tau)),
            "LayerCache.c",
        )

    def h_equation(self, tau: int) -> Equation:
        """Eq. (7): the hidden state."""
        s, b = tau - 1, self.b
        op = Operands(self.n)
        o, c = self.act("o", tau), self.cache.c[s + 1, b, self.units]
        ph = [op("o_t", o), op("c_t", c), op(r"\tanh c_t", self.tanh_c(tau))]
        return Equation(
            "h",
            "7",
            sym("h", "t"),
            math(r"o_t \odot \tanh(c_t)"),
            math(rf"{ph[0]} \cdot \tanh({ph[1]}) = {ph[0]} \cdot {ph[2]}"),
            op.items,
            self.cache.h[s + 1, b, self.units],
            self.numeric_rows(sym("h", tau)),
            "LayerCache.h",
        )

    def tanh_c(self, tau: int) -> np.ndarray:
        return self.cache.tanh_c[tau - 1, self.b, self.units]

    # backward, eqs. (8)-(13) -----------------------------------------------
    def recurrent_sum(self, tau: int, label: str | int, key: str, ref: str, rec: np.ndarray) -> Equation:
        """Eq. (8)'s recurrent term spelled out over the four gate rows (H = 1)."""
        nxt, dz_next = shift(label, 1), self.dz_at(tau + 1)  # (4H,)
        op = Operands(self.n)
        terms = []
        for j, q in enumerate(GATES):
            w_ph = op(f"W_{{hh}}[{q}]", self.W_hh[j, 0])
            dz_ph = op(rf"\delta z^{{{q}}}_{{{tau + 1}}}", dz_next[j])
            terms.append(rf"{w_ph} \cdot {dz_ph}")
        return Equation(
            f"{key}_rec",
            ref,
            math(rf"W_{{hh}}^\top \delta z_{{{nxt}}}"),
            math(" + ".join(rf"W_{{hh}}[{q}]\, \delta z^{{{q}}}_{{{nxt}}}" for q in GATES)),
            math(" + ".join(terms)),
            op.items,
            rec,
            [math(rf"W_{{hh}}^\top \delta z_{{{tau + 1}}}")],
            "W_hhᵀ times LayerGrads.dz of the next step (display only)",
        )

    def direct_symbol(self, label: str | int) -> str:
        """Eq. (8)'s non-recurrent term: from the head (top layer) or the layer above."""
        if self.top:
            return rf"\partial \ell_{{{label}}}/\partial h_{{{label}}}"
        k1 = self.k + 1
        return rf"W_{{ih}}^{{({k1})\top}} \delta z_{{{label}}}^{{({k1})}}"

    def dh_equations(self, tau: int, label: str | int, key: str, ref: str) -> list[Equation]:
        """Eq. (8) at step tau (0 = the initial state), symbol time `label`."""
        rec = self.dz_at(tau + 1) @ self.W_hh[:, self.units]  # (4H,) @ (4H, n): (W_hhᵀ δz_{t+1})[u]
        rec_src = rf"W_{{hh}}^\top \delta z_{{{shift(label, 1)}}}"
        eqs = []
        if self.H == 1 and tau < self.T:  # spell out the sum over the four gate rows
            eqs.append(self.recurrent_sum(tau, label, key, ref, rec))
        op = Operands(self.n)
        if tau == 0:  # δh_0 = W_hhᵀ δz_1
            rhs, subst = math(rec_src), op(rec_src, rec)
            value, source = self.grads.dh0[self.b, self.units], "LayerGrads.dh0"
        else:
            d_src = self.direct_symbol(label)
            d_ph = op(d_src, self.direct(tau))
            r_ph = op(rec_src, rec) if tau < self.T else "0"
            rhs, subst = math(f"{d_src} + {rec_src}"), f"{d_ph} + {r_ph}"
            value, source = self.grads.dh[tau - 1, self.b, self.units], "LayerGrads.dh"
        lhs, rows = sym(r"\delta h", label), self.numeric_rows(sym(r"\delta h", tau))
        eqs.append(Equation(key, ref, lhs, rhs, math(subst), op.items, value, rows, source))
        return eqs

    def dc_equation(self, tau: int, label: str | int, key: str, ref: str) -> Equation:
        """Eq. (9) at step tau (0 = the initial state), symbol time `label`."""
        nxt = shift(label, 1)
        op = Operands(self.n)
        parts, sub_parts = [], []
        if tau >= 1:
            dh = self.grads.dh[tau - 1, self.b, self.units]
            tc = self.tanh_c(tau)
            t_ = f"_{{{label}}}"
            parts.append(rf"\delta h{t_} \odot o{t_} \odot (1 - \tanh^2 c{t_})")
            ph = [op(rf"\delta h{t_}", dh), op(f"o{t_}", self.act("o", tau))]
            ph.append(op(rf"1 - \tanh^2 c{t_}", 1.0 - tc * tc))
            sub_parts.append(rf"{ph[0]} \cdot {ph[1]} \cdot {ph[2]}")
        n_ = f"_{{{nxt}}}"
        parts.append(rf"\delta c{n_} \odot f{n_}")
        if tau < self.T:
            dc_next = self.grads.dc[tau, self.b, self.units]
            ph = [op(rf"\delta c{n_}", dc_next), op(f"f{n_}", self.act("f", tau + 1))]
            sub_parts.append(rf"{ph[0]} \cdot {ph[1]}")
        else:
            sub_parts.append("0")
        value = self.grads.dc[tau - 1, self.b, self.units] if tau >= 1 else self.grads.dc0[self.b, self.units]
        return Equation(
            key,
            ref,
            sym(r"\delta c", label),
            math(" + ".join(parts)),
            math(" + ".join(sub_parts)),
            op.items,
            value,
            self.numeric_rows(sym(r"\delta c", tau)),
            "LayerGrads.dc" if tau >= 1 else "LayerGrads.dc0",
        )

    def dtanh_equation(self, tau: int) -> Equation:
        """tanh'(c_t) = 1 - tanh² c_t, a factor of eq. (9)."""
        op = Operands(self.n)
        tc = self.tanh_c(tau)
        ph = op(r"\tanh c_t", tc)
        return Equation(
            "dtanh_c",
            "",
            math(r"\tanh'(c_t)"),
            math(r"1 - \tanh^2 c_t"),
            math(f"1 - {ph}^2"),
            op.items,
            1.0 - tc * tc,
            self.numeric_rows(math(rf"\tanh'(c_{{{tau}}})")),
            "computed from LayerCache.tanh_c",
        )

    def local_derivative(self, q: str, tau: int, y: np.ndarray) -> Equation:
        """A gate's local derivative from its activation y: σ'(z) = y(1 - y), tanh'(z) = 1 - y²."""
        op = Operands(self.n)
        ph = op(f"{q}_t", y)
        if q == "g":
            rhs, subst, value = "1 - g_t^2", f"1 - {ph}^2", 1.0 - y * y
        else:
            rhs, subst, value = rf"{q}_t(1 - {q}_t)", rf"{ph} \cdot (1 - {ph})", y * (1.0 - y)
        return Equation(
            f"d{q}",
            "",
            math(_derivative(q, "t")),
            math(rhs),
            math(subst),
            op.items,
            value,
            self.numeric_rows(math(_derivative(q, f"{{{tau}}}"))),
            "computed from LayerCache.gates",
        )

    def dz_equation(self, q: str, tau: int, local: np.ndarray) -> Equation:
        """Eqs. (10)-(13): δz = (upstream δ) ⊙ (what the gate multiplies) ⊙ (gate derivative)."""
        s, b, u = tau - 1, self.b, self.units
        dc, dh = self.grads.dc[s, b, u], self.grads.dh[s, b, u]
        ref, (n1, v1), (n2, v2) = {
            "i": ("10", (r"\delta c_t", dc), ("g_t", self.act("g", tau))),
            "f": ("11", (r"\delta c_t", dc), ("c_{t-1}", self.cache.c[s, b, u])),
            "g": ("12", (r"\delta c_t", dc), ("i_t", self.act("i", tau))),
            "o": ("13", (r"\delta h_t", dh), (r"\tanh c_t", self.tanh_c(tau))),
        }[q]
        d = _derivative(q, "t")
        op = Operands(self.n)
        ph = [op(n1, v1), op(n2, v2), op(d, local)]
        return Equation(
            f"dz_{q}",
            ref,
            sym(r"\delta z", "t", q),
            math(rf"{n1} \odot {n2} \odot {d}"),
            math(r" \cdot ".join(ph)),
            op.items,
            self.grads.dz[s, b][self.rows_of(q)],
            self.numeric_rows(sym(r"\delta z", tau, q)),
            "LayerGrads.dz",
        )

    def backward(self, tau: int) -> list[Equation]:
        eqs = self.dh_equations(tau, "t", "dh", "8")
        eqs += [self.dtanh_equation(tau), self.dc_equation(tau, "t", "dc", "9")]
        for q in GATES:  # each gate's derivative, then its δz
            local = self.local_derivative(q, tau, self.act(q, tau))
            eqs += [local, self.dz_equation(q, tau, local.value)]
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


def _derivative(q: str, time: str) -> str:
    """The `math` source of gate q's local derivative: σ'(z^q_t), or tanh'(z^g_t)."""
    fn = r"\tanh" if q == "g" else r"\sigma"
    return f"{fn}'(z^{{{q}}}_{time})"


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


def step_inputs(problem: Problem, view: View, vocab: Vocab | None = None) -> dict | None:
    """The input tokens around step t of the shown sample, when the data holds token ids
    (x_t = E[token_t], eq. 24), with the vocabulary's strings when one is given; None for
    float inputs x. Every id in the data must have a token in the vocabulary (else InputError
    naming the vocabulary file); a vocabulary for float inputs is a ConfigError."""
    x = problem.x
    if x.ndim != 2:  # (B, T, I) floats: nothing to label
        if vocab is not None:
            raise ConfigError(
                f"--vocab: the data holds float inputs x of shape {tuple(x.shape)}, not token ids; "
                "a vocabulary labels token-id data (`tokens` in the data file, read through the "
                "model's embedding)"
            )
        return None
    if vocab is not None:
        src = problem.data.path if problem.data is not None else None
        vocab.check_ids(x, f"the data ({src})" if src else "the data")
    T = x.shape[1]
    lo, hi = max(0, view.step - 1 - CONTEXT[0]), min(T, view.step + CONTEXT[1])
    ids = [int(i) for i in x[view.sample, lo:hi]]  # (hi - lo,) positions t = lo+1..hi
    return {
        "vocab": None if vocab is None else str(vocab.path),
        "step": view.step,
        "id": int(x[view.sample, view.step - 1]),
        "token": None if vocab is None else vocab.tokens[int(x[view.sample, view.step - 1])],
        "context_first_step": lo + 1,
        "context_ids": ids,
        "context_tokens": None if vocab is None else [vocab.tokens[i] for i in ids],
    }


def explain(result: AnalysisResult, view: View, vocab: Vocab | None = None) -> Explanation:
    """The equations of `view.step` for one layer, sample and a few units, with the engine's numbers;
    token-id inputs are labelled with `vocab`'s strings when given (`step_inputs`)."""
    p = result.problem
    B, T = p.x.shape[:2]  # x: (B, T, I) floats, or (B, T) token ids
    I = p.spec.input_size
    sizes = {
        "T": int(T),
        "B": int(B),
        "I": int(I),
        "H": p.spec.hidden_size,
        "L": p.spec.num_layers,
        "O": p.spec.output_size,
    }
    inputs = step_inputs(p, view, vocab)
    step = _Step(result, view.layer, view.sample, view.units).view(view.step)
    return Explanation(config=p.config, view=view, loss=result.loss, sizes=sizes, step=step, inputs=inputs)
