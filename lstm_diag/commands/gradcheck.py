"""`lstm-diag gradcheck`: the engine's gradients against finite differences."""

from __future__ import annotations

import click

from .common import (
    FailOnFinding,
    FiniteFloat,
    config_argument,
    debug_option,
    emit_json,
    format_option,
    handle_errors,
    load,
    set_option,
    stderr_console,
    stdout_console,
)

EPILOG = """\b
Examples:
  lstm-diag gradcheck
  lstm-diag gradcheck cfg.yaml --samples 64
  lstm-diag gradcheck cfg.yaml --set dtype=float32      # tolerance widens to 1e-3
"""


@click.command("gradcheck", epilog=EPILOG)
@config_argument
@set_option
@format_option("table", "json")
@click.option(
    "--samples", default=16, show_default=True, type=click.IntRange(1), help="Entries checked per tensor."
)
@click.option(
    "--tol",
    type=FiniteFloat(0, open_min=True),
    help="Largest accepted relative error [default: 1e-6 for float64, 1e-3 for float32].",
)
@debug_option
@handle_errors
def gradcheck_cmd(config, overrides, fmt, samples, tol):
    """Check every gradient of CONFIG's model by central finite differences.

    For a sample of entries of each parameter tensor and of the input x, compares
    the BPTT gradient with a fourth-order central difference (step 1e-3) and shows
    the largest relative error per tensor. Exits 1 if any exceeds the tolerance.
    """
    from ..features.gradcheck import DEFAULT_TOL, check_gradients
    from ..setup.problem import build

    cfg = load(config, overrides)
    if tol is None:
        tol = DEFAULT_TOL[cfg.dtype]
        if cfg.dtype == "float32":
            stderr_console().print(
                "[yellow]warning:[/] float32 model: its float32 gradients are compared with "
                f"float64 finite differences; tolerance widened to {tol:g}"
            )
    checks = check_gradients(build(cfg), samples=samples, seed=cfg.seed)
    ok = all(c.passed(tol) for c in checks)
    if fmt == "json":
        doc = {
            "dtype": cfg.dtype,
            "tolerance": tol,
            "passed": ok,
            "tensors": [c.to_dict() for c in checks],
        }
        emit_json(doc, "gradcheck", 1)
    else:
        from ..report.gradcheck_table import render

        render(checks, tol, cfg.dtype, stdout_console())
    if not ok:
        raise FailOnFinding()
