"""`lstm-diag plot`: the figures of `analyze`, written to a folder."""

from __future__ import annotations

import click

from .common import config_argument, debug_option, handle_errors, set_option, write_figures

EPILOG = """\b
Examples:
  lstm-diag plot -o plots/                       # the built-in default model
  lstm-diag plot configs/vanishing.yaml -o plots/
  lstm-diag plot cfg.yaml -o figs --format svg --set data.seq_len=1000
  lstm-diag analyze cfg.yaml --format json > result.json   # compute here,
  lstm-diag plot result.json -o plots/                     # draw anywhere
  lstm-diag plot result.json --only grad_flow --only dynamics_l0   # two figures
  lstm-diag analyze cfg.yaml --plots plots/      # the same files, beside the report

\b
CONFIG may be a document saved by `analyze --format json` (recognised by its
content): its figures are drawn without computing anything, byte for byte the
figures of the config it came from.

Files (docs/plots.md): grad_flow, and per layer k gate_heatmaps_l<k>,
saturation_l<k>, forget_gate_l<k>, gate_grads_l<k>, dynamics_l<k>; the written
paths on stderr, one per line.
"""


def dpi_option(fn):
    from ..report.figures.style import DPI

    return click.option(
        "--dpi",
        type=click.IntRange(30, 600),
        default=DPI,
        show_default=True,
        help="Resolution of png figures (svg and pdf are vector).",
    )(fn)


def analysis_document(config, overrides) -> dict:
    """The analyze document the figures are drawn from: read from CONFIG when it is a saved
    `analyze --format json` document, else computed from the config. Either way it is the
    document as JSON carries it (compute -> document -> draw), so both give the same figures."""
    from ..features.analysis import SCHEMA_VERSION, analyze, run_source
    from ..report.jsonout import roundtrip
    from ..setup.document import read_analysis_document
    from .common import echo_notes, load

    doc = None if config is None else read_analysis_document(config, SCHEMA_VERSION)
    if doc is not None:
        if overrides:
            from ..errors import ConfigError

            raise ConfigError(f"--set: {config} is a saved analyze document; --set applies to configs only")
        return doc
    result = analyze(load(config, overrides), source=run_source(config, overrides))
    echo_notes(result.problem.notes)
    return roundtrip(result.to_dict())


def _parse_only(ctx, param, value) -> list[str]:
    """--only NAME (repeatable, comma-separated too): names of the right form, before anything
    is computed; whether the model has that figure is checked once its document is known."""
    from ..report.figures.analysis import FIGURE_NAME, FIGURE_NAMES_TEXT

    names = [name.strip() for item in value for name in item.split(",") if name.strip()]
    for name in names:
        if not FIGURE_NAME.fullmatch(name):
            raise click.BadParameter(f"{name!r} is not a figure name; the names are {FIGURE_NAMES_TEXT}")
    return names


@click.command("plot", epilog=EPILOG)
@config_argument
@set_option
@click.option(
    "-o",
    "--output",
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
@click.option(
    "--only",
    "only",
    multiple=True,
    callback=_parse_only,
    metavar="NAME",
    help="Draw only this figure (repeatable; comma-separated lists too), by its file name "
    "without the extension, e.g. grad_flow or gate_heatmaps_l1. An unknown name stops "
    "before anything is drawn and lists the model's figures.",
)
@debug_option
@handle_errors
def plot_cmd(config, overrides, out_dir, fmt, dpi, only):
    """Draw where the gradient dies through time, and why, for the LSTM of CONFIG.

    Runs the same analysis as `analyze` and draws it (or draws a saved `analyze
    --format json` document given as CONFIG): ||dL/dc_t|| and ||dL/dh_t|| over t
    with the vanishing threshold and horizon; per layer the gate activations
    (units x time), the per-unit saturation scatter (Karpathy et al. 2015), the
    forget-gate histogram with its time constant, ||dL/dz|| per gate, and the state
    dynamics. The written files are listed on stderr, one per line.
    """
    from ..report.figures.analysis import figures

    for path in write_figures(figures(analysis_document(config, overrides), only), out_dir, fmt, dpi):
        click.echo(f"figure written to {path}", err=True)
