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
from .progress import ProgressBar

EPILOG = """\b
Examples:
  lstm-diag gradcheck
  lstm-diag gradcheck cfg.yaml --entries 4        # a quick look at a large model
  lstm-diag gradcheck cfg.yaml --entries all      # every entry of every tensor
  lstm-diag gradcheck cfg.yaml --set dtype=float32      # tolerance widens to 1e-3
"""


class Entries(click.ParamType):
    """A positive number of entries per tensor, or `all` (returned as None)."""

    name = "N|all"

    def convert(self, value, param, ctx):
        if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
            return None
        try:
            n = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a positive integer or 'all'", param, ctx)
        if n < 1:
            self.fail(f"must be a positive integer or 'all', got {n}", param, ctx)
        return n


@click.command("gradcheck", epilog=EPILOG)
@config_argument
@set_option
@format_option("table", "json")
@click.option(
    "--entries",
    "--samples",
    "entries",
    default="16",
    show_default=True,
    type=Entries(),
    metavar="N|all",
    help="Entries checked per tensor: N (the largest-gradient entry and N-1 drawn at random, "
    "seeded by the config's seed and the tensor's name, spread over the gates) or `all`. "
    "--samples is the older name.",
)
@click.option(
    "--tol",
    type=FiniteFloat(0, open_min=True),
    help="Largest accepted relative error [default: 1e-6 for float64, 1e-3 for float32].",
)
@debug_option
@handle_errors
def gradcheck_cmd(config, overrides, fmt, entries, tol):
    """Check every gradient of CONFIG's model by central finite differences.

    For a subset of entries of each parameter tensor and of the input x (--entries),
    compares the BPTT gradient with a fourth-order central difference (step 1e-3) and
    shows the largest relative error per tensor. Before it starts, says on stderr how
    long it will take (4 loss evaluations per entry, one timed); a progress bar follows.
    Exits 1 if any tensor exceeds the tolerance.
    """
    from ..features.gradcheck import DEFAULT_TOL, plan_gradcheck, run_gradcheck
    from ..setup.problem import build

    cfg = load(config, overrides)
    if tol is None:
        tol = DEFAULT_TOL[cfg.dtype]
        if cfg.dtype == "float32":
            stderr_console().print(
                "[yellow]warning:[/] float32 model: its float32 gradients are compared with "
                f"float64 finite differences; tolerance widened to {tol:g}"
            )
    plan = plan_gradcheck(build(cfg), entries, seed=cfg.seed)
    click.echo(estimate_line(plan), err=True)
    with ProgressBar("gradcheck", plan.total) as bar:
        checks = run_gradcheck(plan, on_entry=lambda name: bar.update(advance=1, text=name))
    ok = all(c.passed(tol) for c in checks)
    if fmt == "json":
        doc = {
            "dtype": cfg.dtype,
            "tolerance": tol,
            "passed": ok,
            "entries": {"per_tensor": "all" if entries is None else entries, "seed": cfg.seed},
            "tensors": [c.to_dict() for c in checks],
        }
        emit_json(doc, "gradcheck", SCHEMA_VERSION)
    else:
        from ..report.gradcheck_table import render

        render(checks, tol, cfg.dtype, stdout_console())
    if not ok:
        raise FailOnFinding()


SCHEMA_VERSION = 2  # docs/json-schema.md, `gradcheck --format json`


def estimate_line(plan) -> str:
    """`gradcheck: 176 entries (16 per tensor, 11 tensors) x 4 loss evaluations; one forward
    pass took 0.21 s: about 1 min 30 s`."""
    from ..numfmt import duration

    per = "every entry" if plan.entries is None else f"up to {plan.entries} per tensor"
    return (
        f"gradcheck: {plan.total} entries ({per}, {len(plan.indices)} tensors) x 4 loss evaluations; "
        f"one forward pass took {plan.forward_seconds:.3g} s: about {duration(plan.estimated_seconds())}"
        + ("" if plan.entries is None else " (--entries N or all to change)")
    )
