"""`explain`: the LSTM equations at one time step, symbolically and with the engine's numbers.

Pure: builds plain data, prints nothing (renderers are in report/explain_render.py).
- `notation`: symbols and the `Equation` record (Unicode and LaTeX from one source);
- `step`: one time step's forward and backward with the engine's numbers (`select`, `explain`);
- `toy`: the scalar walk-through of `lstm-diag explain --toy` (`toy`).
"""

from .notation import GATE_FN, GATE_FN_TEX, GATE_SUP, Equation, Form, at_unit, shift, sub, sup, sym
from .step import (
    CONTRIBUTION_RULE,
    CONTRIBUTION_SUMS,
    SCHEMA_VERSION,
    Contribution,
    Explanation,
    StepView,
    View,
    explain,
    select,
)
from .toy import TOY_PARAMS, TOY_TOL, TOY_X, TOY_Y, FDCheck, Toy, toy, toy_problem

__all__ = [
    "CONTRIBUTION_RULE",
    "CONTRIBUTION_SUMS",
    "GATE_FN",
    "GATE_FN_TEX",
    "GATE_SUP",
    "SCHEMA_VERSION",
    "TOY_PARAMS",
    "TOY_TOL",
    "TOY_X",
    "TOY_Y",
    "Contribution",
    "Equation",
    "Explanation",
    "FDCheck",
    "Form",
    "StepView",
    "Toy",
    "View",
    "at_unit",
    "explain",
    "select",
    "shift",
    "sub",
    "sup",
    "sym",
    "toy",
    "toy_problem",
]
