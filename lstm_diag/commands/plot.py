"""`lstm-diag plot`: the figures of `analyze`, written to a folder."""

from __future__ import annotations

import click

from .common import config_argument, debug_option, handle_errors, load, set_option

EPILOG = """\b
Examples:
  lstm-diag plot -o plots/                       # the built-in default model
  lstm-diag plot configs/vanishing.yaml -o plots/
  lstm-diag plot cfg.yaml -o figs --format svg --set data.seq_len=1000
  lstm-diag analyze cfg.yaml --plots plots/      # the same files, beside the report

Files (docs/plots.md): grad_flow, and per layer k gate_heatmaps_l<k>,
saturation_l<k>, forget_gate_l<k>, gate_grads_l<k>; one path per line on stdout.
"""


def dpi_option(fn):
    return click.option(
        "--dpi",
        type=click.IntRange(30, 600),
        default=110,
        show_default=True,
        help="Resolution of png figures (svg and pdf are vector).",
    )(fn)


@click.command("plot", epilog=EPILOG)
@config_argument
@set_option
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="lstm-diag-plots",
    show_default=True,
    help="Folder for the figures (created if missing).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "svg", "pdf"]),
    default="png",
    show_default=True,
    help="File format of the figures.",
)
@dpi_option
@debug_option
@handle_errors
def plot_cmd(config, overrides, out_dir, fmt, dpi):
    """Draw where the gradient dies through time, and why, for the LSTM of CONFIG.

    Runs the same analysis as `analyze` and draws it: ||dL/dc_t|| and ||dL/dh_t||
    over t with the vanishing threshold and horizon; per layer the gate activations
    (units x time), the per-unit saturation scatter (Karpathy et al. 2015), the
    forget-gate histogram with its time constant, and ||dL/dz|| per gate. Prints the
    written files, one per line.
    """
    from ..features.analysis import analyze
    from ..report.plots import source_label, write_figures

    result = analyze(load(config, overrides))
    for path in write_figures(result, out_dir, fmt, dpi, label=source_label(config, overrides)):
        click.echo(str(path))
