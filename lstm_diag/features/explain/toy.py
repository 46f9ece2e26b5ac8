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
from .notation import Equation, Operands, math
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


_W, _B = r"W_{\text{head}}", r"b_{\text{head}}"
_DY = r"\partial L/\partial \hat y"


def _head_equations(result: AnalysisResult) -> list[Equation]:
    """ŷ, L and their derivatives for the toy (B = O = 1), from the engine's Forward/Backward."""
    p, fwd, bwd = result.problem, result.fwd, result.bwd
    T = p.x.shape[1]
    v, c = p.params["head.weight"][0, 0], p.params["head.bias"][0]
    h_T = fwd.layers[-1].h[-1, 0, 0]
    y_hat, y, dy = fwd.y_hat[0, 0], p.y[0, 0], fwd.dy_hat[0, 0]
    h_src = f"h_{{{T}}}"
    # key, lhs, rhs, template ({} in operand order), operands, value, numeric row, source
    table = [
        ("y_hat", r"\hat y", rf"{_W}\, h_T + {_B}", r"{} \cdot {} + {}",
         [(_W, v), (h_src, h_T), (_B, c)], y_hat, r"\hat y", "Forward.y_hat"),
        ("loss", "L", r"(\hat y - y)^2", "({} - {})^2",
         [(r"\hat y", y_hat), ("y", y)], fwd.loss, "L", "Forward.loss"),
        ("dy_hat", _DY, r"2 (\hat y - y)", r"2 \cdot ({} - {})",
         [(r"\hat y", y_hat), ("y", y)], dy, _DY, "Forward.dy_hat"),
        ("dl_dh", r"\partial \ell_T/\partial h_T", rf"{_W}^\top\, {_DY}", r"{} \cdot {}",
         [(_W, v), (_DY, dy)], dy * v, rf"\partial \ell_{{{T}}}/\partial h_{{{T}}}",
         "the head's part of eq. (8) at t = T (display only)"),
        ("dW_head", rf"\partial L/\partial {_W}", rf"{_DY}\; h_T^\top", r"{} \cdot {}",
         [(_DY, dy), (h_src, h_T)], bwd.params["head.weight"][0, 0], rf"\partial L/\partial {_W}",
         "Backward.params['head.weight']"),
        ("db_head", rf"\partial L/\partial {_B}", _DY, "{}",
         [(_DY, dy)], bwd.params["head.bias"][0], rf"\partial L/\partial {_B}",
         "Backward.params['head.bias']"),
    ]  # fmt: skip
    eqs = []
    for key, lhs, rhs, template, operands, value, row, source in table:
        op = Operands(1)
        subst = math(template.format(*(op(name, val) for name, val in operands)))
        eqs.append(
            Equation(key, "", math(lhs), math(rhs), subst, op.items, np.array([value]), [math(row)], source)
        )
    return eqs


TOY_LABELS = {  # `math` sources of the parameters' names
    "weight_ih_l0": "W_{ih}",
    "weight_hh_l0": "W_{hh}",
    "bias_ih_l0": "b_{ih}",
    "bias_hh_l0": "b_{hh}",
    "head.weight": _W,
    "head.bias": _B,
}


def _finite_difference(problem: Problem, name: str, j: int, step: float = STEP) -> float:
    """gradcheck's 4th-order central difference of the engine's loss in one flat entry."""
    params = {k: v.copy() for k, v in problem.params.items()}
    flat = params[name].reshape(-1)  # a view into params[name]

    def L() -> float:
        return engine.loss_only(params, problem.spec, problem.x, problem.y, problem.loss, problem.target)

    return central_difference(L, flat, j, step)


def _checks(problem: Problem, result: AnalysisResult, steps: list[StepView]) -> list[FDCheck]:
    """Every parameter entry: the engine's gradient, the sum of the printed per-step shares,
    and a finite difference."""
    floor = 1e-6 * max(abs(result.loss), 1.0)
    checks = []
    for name, arr in problem.params.items():
        grad = result.bwd.params[name]
        for j in range(arr.size):
            idx = tuple(int(v) for v in np.unravel_index(j, arr.shape))
            a = float(grad.reshape(-1)[j])
            n = _finite_difference(problem, name, j)
            label = TOY_LABELS[name]
            if name.startswith("head"):
                summed = None
            else:
                key = "bias_ih_l0" if name == "bias_hh_l0" else name  # b_ih, b_hh: same gradient (16)
                summed = float(sum(np.asarray(s.contributions.batch[key]).reshape(-1)[j] for s in steps))
                label = f"{label}[{GATES[idx[0]]}]"
            rel = abs(a - n) / max(abs(a), abs(n), floor)
            form = math(label)
            checks.append(FDCheck(name, idx, form.text, form.tex, a, summed, n, rel))
    return checks


def toy() -> Toy:
    """Run the toy through `analyze` and explain every step, ending with a gradient check."""
    problem = toy_problem()
    result = analyze_problem(problem)
    builder = _Step(result, layer=0, sample=0, units=[0])
    T = problem.x.shape[1]
    steps = [builder.view(tau) for tau in range(1, T + 1)]
    return Toy(
        params=problem.params,
        x=problem.x[0, :, 0].copy(),
        y=float(problem.y[0, 0]),
        loss=result.loss,
        steps=steps,
        head=_head_equations(result),
        checks=_checks(problem, result, steps),
        tol=TOY_TOL,
    )
