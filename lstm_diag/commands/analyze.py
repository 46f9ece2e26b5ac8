"""`lstm-diag analyze`: forward + BPTT, gradient flow and diagnostics."""

from __future__ import annotations

import click

from .common import (
    config_argument,
    debug_option,
    format_option,
    handle_errors,
    load,
    set_option,
    stdout_console,
)

EPILOG = """\b
Examples:
  lstm-diag analyze
  lstm-diag analyze configs/vanishing.yaml
  lstm-diag analyze cfg.yaml --format json | jq '.layers[0].grad_c_norm[0]'
  lstm-diag analyze cfg.yaml --save-weights init.npz
"""


@click.command("analyze", epilog=EPILOG)
@config_argument
@set_option
@format_option("table", "json")
@click.option(
    "--save-weights",
    type=click.Path(dir_okay=False),
    help="Write the model's weights (PyTorch names) to this .npz.",
)
@debug_option
@handle_errors
def analyze_cmd(config, overrides, fmt, save_weights):
    """Run the LSTM on CONFIG and report gradient flow through time.

    Prints the loss, the norms of dL/dc_t and dL/dh_t at every step and layer,
    and each parameter's norm and gradient norm.
    """
    from ..analysis import analyze
    from ..io import save_weights as write_weights

    result = analyze(load(config, overrides))
    doc = result.to_dict()
    if fmt == "json":
        from ..report.jsonout import dumps

        click.echo(dumps(doc), nl=False)
    else:
        from ..report.analysis_table import render

        render(doc, stdout_console())
    if save_weights:
        path = write_weights(save_weights, result.problem.params)
        click.echo(f"weights written to {path}", err=True)
