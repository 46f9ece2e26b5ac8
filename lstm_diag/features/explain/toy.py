"""`explain --toy`: a scalar LSTM (sizes 1, T = 3) walked forward and back through every
step, ending with a finite-difference check of every parameter's gradient."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core import engine
from ...core.engine import GATES
from ...setup.config import Config
from ...setup.problem import Problem
from ..analysis import AnalysisResult, analyze_problem
from ..gradcheck import STEP, central_difference
from .notation import Equation, Form, Operands, sub
from .step import SCHEMA_VERSION, StepView, _Step


@dataclass
class FDCheck:
    """One parameter entry: the engine's gradient against a finite difference."""

    name: str
    index: tuple[int, ...]
    label: str  # "Wᵢₕ[f]"
    label_tex: str  # "W_{ih}[f]"
    analytic: float  # Backward.params (engine)
    summed: float | None  # Σ over steps of the printed per-step contributions (LSTM params)
    numeric: float  # 4th-order central difference of the engine's loss, step gradcheck.STEP
    rel_error: float

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "index": list(self.index),
            "label": self.label,
            "label_tex": self.label_tex,
            "analytic": self.analytic,
            "summed_contributions": self.summed,
            "numeric": self.numeric,
            "rel_error": self.rel_error,
        }


@dataclass
class Toy:
    """`lstm-diag explain --toy`: a scalar LSTM walked through every step."""

    params: dict[str, np.ndarray]
    x: np.ndarray  # (T,)
    y: float
    loss: float
    steps: list[StepView]  # t = 1..T
    head: list[Equation]  # ŷ, L, ∂L/∂ŷ, ∂ℓ_T/∂h_T, head gradients
    checks: list[FDCheck]
    tol: float

    @property
    def passed(self) -> bool:
        return all(c.rel_error <= self.tol for c in self.checks)

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "explain",
            "mode": "toy",
            "params": self.params,
            "x": self.x,
            "y": self.y,
            "loss": self.loss,
            "steps": [s.to_dict() for s in self.steps],
            "head": [e.to_dict() for e in self.head],
            "gradcheck": {
                "tolerance": self.tol,
                "passed": self.passed,
                "entries": [c.to_dict() for c in self.checks],
            },
        }


# ------------------------------------------------------------------------ toy

# A scalar LSTM (I = H = O = 1), hand-chosen so that no gate saturates and every
# number can be followed with a pocket calculator. Rows in the gate order i, f, g, o.
TOY_PARAMS = {
    "weight_ih_l0": [[0.5], [0.6], [0.9], [0.4]],
    "weight_hh_l0": [[-0.4], [0.5], [0.8], [0.3]],
    "bias_ih_l0": [0.1, 1.0, 0.0, -0.1],  # b_f = 1 (Jozefowicz et al. 2015)
    "bias_hh_l0": [0.0, 0.0, 0.0, 0.0],
    "head.weight": [[1.5]],
    "head.bias": [0.2],
}
TOY_X = [1.0, -0.5, 0.8]  # x_1, x_2, x_3
TOY_Y = 0.5  # the target of the last step; loss (ŷ - y)²
TOY_TOL = 1e-6  # gradcheck's float64 tolerance


def toy_problem() -> Problem:
    """The toy as an ordinary lstm-diag problem (mse on the last step, float64)."""
    T = len(TOY_X)
    config = Config.model_validate(
        {
            "model": {"input_size": 1, "hidden_size": 1, "num_layers": 1, "output_size": 1},
            "data": {"batch_size": 1, "seq_len": T},
            "loss": {"type": "mse", "target": "last"},
        }
    )
    spec = engine.Spec(1, 1, 1, 1)
    params = {k: np.array(v, dtype=np.float64) for k, v in TOY_PARAMS.items()}
    x = np.array(TOY_X, dtype=np.float64).reshape(1, T, 1)  # (B, T, I)
    y = np.array([[TOY_Y]])  # (B, O)
    return Problem(config=config, spec=spec, params=params, x=x, y=y)


def _head_equations(result: AnalysisResult) -> list[Equation]:
    """ŷ, L and their derivatives for the toy (B = O = 1), from the engine's Forward/Backward."""
    p, fwd, bwd = result.problem, result.fwd, result.bwd
    T = p.x.shape[1]
    v, c = p.params["head.weight"][0, 0], p.params["head.bias"][0]
    h_T = fwd.layers[-1].h[-1, 0, 0]
    y_hat, y, dy = fwd.y_hat[0, 0], p.y[0, 0], fwd.dy_hat[0, 0]

    def eq(key, lhs, rhs, subst, operands, value, row, source):
        op = Operands(1)
        ph = [op(n, val) for n, val in operands]
        txt = subst.format(*ph)
        tex = txt.replace("·", r"\cdot").replace("²", "^2")
        return Equation(key, "", lhs, rhs, Form(txt, tex), op.items, np.array([value]), [row], source)

    Ts = sub(T)
    return [
        eq(
            "y_hat",
            Form("ŷ", r"\hat y"),
            Form("W_head h_T + b_head", r"W_{\text{head}}\, h_T + b_{\text{head}}"),
            "{} · {} + {}",
            [("W_head", v), (f"h{Ts}", h_T), ("b_head", c)],
            y_hat,
            Form("ŷ", r"\hat y"),
            "Forward.y_hat",
        ),
        eq(
            "loss",
            Form("L", "L"),
            Form("(ŷ - y)²", r"(\hat y - y)^2"),
            "({} - {})²",
            [("ŷ", y_hat), ("y", y)],
            fwd.loss,
            Form("L", "L"),
            "Forward.loss",
        ),
        eq(
            "dy_hat",
            Form("∂L/∂ŷ", r"\partial L/\partial \hat y"),
            Form("2 (ŷ - y)", r"2 (\hat y - y)"),
            "2 · ({} - {})",
            [("ŷ", y_hat), ("y", y)],
            dy,
            Form("∂L/∂ŷ", r"\partial L/\partial \hat y"),
            "Forward.dy_hat",
        ),
        eq(
            "dl_dh",
            Form("∂ℓ_T/∂h_T", r"\partial \ell_T/\partial h_T"),
            Form("W_headᵀ ∂L/∂ŷ", r"W_{\text{head}}^\top\, \partial L/\partial \hat y"),
            "{} · {}",
            [("W_head", v), ("∂L/∂ŷ", dy)],
            dy * v,
            Form(f"∂ℓ{Ts}/∂h{Ts}", rf"\partial \ell_{{{T}}}/\partial h_{{{T}}}"),
            "the head's part of eq. (8) at t = T (display only)",
        ),
        eq(
            "dW_head",
            Form("∂L/∂W_head", r"\partial L/\partial W_{\text{head}}"),
            Form("∂L/∂ŷ · h_Tᵀ", r"\partial L/\partial \hat y\; h_T^\top"),
            "{} · {}",
            [("∂L/∂ŷ", dy), (f"h{Ts}", h_T)],
            bwd.params["head.weight"][0, 0],
            Form("∂L/∂W_head", r"\partial L/\partial W_{\text{head}}"),
            "Backward.params['head.weight']",
        ),
        eq(
            "db_head",
            Form("∂L/∂b_head", r"\partial L/\partial b_{\text{head}}"),
            Form("∂L/∂ŷ", r"\partial L/\partial \hat y"),
            "{}",
            [("∂L/∂ŷ", dy)],
            bwd.params["head.bias"][0],
            Form("∂L/∂b_head", r"\partial L/\partial b_{\text{head}}"),
            "Backward.params['head.bias']",
        ),
    ]


TOY_LABELS = {  # text, LaTeX
    "weight_ih_l0": ("Wᵢₕ", "W_{ih}"),
    "weight_hh_l0": ("Wₕₕ", "W_{hh}"),
    "bias_ih_l0": ("bᵢₕ", "b_{ih}"),
    "bias_hh_l0": ("bₕₕ", "b_{hh}"),
    "head.weight": ("W_head", r"W_{\text{head}}"),
    "head.bias": ("b_head", r"b_{\text{head}}"),
}


def _finite_difference(problem: Problem, name: str, j: int, step: float = STEP) -> float:
    """gradcheck's 4th-order central difference of the engine's loss in one flat entry."""
    params = {k: v.copy() for k, v in problem.params.items()}
    flat = params[name].reshape(-1)  # a view into params[name]

    def L() -> float:
        return engine.loss_only(params, problem.spec, problem.x, problem.y, problem.loss, problem.target)

    return central_difference(L, flat, j, step)


def toy() -> Toy:
    """Run the toy through `analyze` and explain every step, ending with a gradient check."""
    problem = toy_problem()
    result = analyze_problem(problem)
    builder = _Step(result, layer=0, sample=0, units=[0])
    T = problem.x.shape[1]
    steps = [builder.view(tau) for tau in range(1, T + 1)]
    L0 = result.loss
    floor = 1e-6 * max(abs(L0), 1.0)
    checks = []
    for name, arr in problem.params.items():
        grad = result.bwd.params[name]
        for j in range(arr.size):
            idx = tuple(int(v) for v in np.unravel_index(j, arr.shape))
            a = float(grad.reshape(-1)[j])
            n = _finite_difference(problem, name, j)
            label, label_tex = TOY_LABELS[name]
            if name.startswith("head"):
                summed = None
            else:
                key = "bias_ih_l0" if name == "bias_hh_l0" else name  # b_ih, b_hh: same gradient (16)
                summed = float(sum(np.asarray(s.contributions.batch[key]).reshape(-1)[j] for s in steps))
                label, label_tex = f"{label}[{GATES[idx[0]]}]", f"{label_tex}[{GATES[idx[0]]}]"
            rel = abs(a - n) / max(abs(a), abs(n), floor)
            checks.append(FDCheck(name, idx, label, label_tex, a, summed, n, rel))
    return Toy(
        params=problem.params,
        x=problem.x[0, :, 0].copy(),
        y=float(problem.y[0, 0]),
        loss=L0,
        steps=steps,
        head=_head_equations(result),
        checks=checks,
        tol=TOY_TOL,
    )
