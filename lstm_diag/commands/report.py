"""`lstm-diag report`: one self-contained HTML file with the analysis and its figures."""

from __future__ import annotations

import click

from .common import config_argument, debug_option, handle_errors, set_option
from .plot import analysis_document, dpi_option

EPILOG = """\b
Examples:
  lstm-diag report -o report.html                 # the built-in default model
  lstm-diag report configs/vanishing.yaml -o vanishing.html
  lstm-diag report cfg.yaml -o report.html --set data.seq_len=1000 --dpi 90
  lstm-diag report result.json -o report.html     # from a saved `analyze --format json`

The file embeds its figures (PNG) and CSS and loads nothing from the network:
attach it to an issue or a PR. Its path is printed on stderr.
"""


DEFAULT_NAME = "lstm-diag-report.html"


@click.command("report", epilog=EPILOG)
@config_argument
@set_option
@click.option(
    "-o",
    "--output",
    "--out",
    "out_file",
    type=click.Path(),
    default=DEFAULT_NAME,
    show_default=True,
    help=f"The HTML file to write (its folder is created if missing); a folder (out/) gets {DEFAULT_NAME}.",
)
@dpi_option
@debug_option
@handle_errors
def report_cmd(config, overrides, out_file, dpi):
    """Write a shareable HTML report of the analysis of CONFIG.

    The same summary, per-layer tables, gate statistics, clipping snapshot and
    findings (codes, messages, remedies) as `analyze`, with every figure of
    `lstm-diag plot` embedded. CONFIG may also be a document saved by `analyze
    --format json`: the report is then made from it alone, without computing.
    """
    from ..report.figures.analysis import figures, source_label
    from ..report.figures.style import figure_bytes
    from ..report.html import render_html
    from ..setup.outputs import atomic_write_text, into_folder

    target = into_folder(out_file, DEFAULT_NAME)
    doc = analysis_document(config, overrides)
    images = {name: figure_bytes(fig, "png", dpi) for name, fig in figures(doc)}
    path = atomic_write_text(target, render_html(doc, images, source_label(doc)))
    click.echo(f"report written to {path}", err=True)
