"""`lstm-diag diff A B`: two analyses side by side, with signed changes and findings that came and went."""

from __future__ import annotations

import click

from .common import (
    debug_option,
    emit_json,
    engine_notes,
    engine_option,
    fail_if,
    fail_on_option,
    format_option,
    handle_errors,
    set_option,
    stdout_console,
    with_engine,
)

EPILOG = """\b
Examples:
  lstm-diag diff before.json after.json          # two saved `analyze --format json` documents
  lstm-diag diff ckpt_100.pt ckpt_900.pt --config cfg.yaml
  lstm-diag diff init.json trained.pt --config cfg.yaml --format markdown
  lstm-diag diff a.json b.json --format json | jq '.change.units[0].horizon'
  lstm-diag diff a.pt b.pt -c cfg.yaml --fail-on LD5   # exit 1 if B is worse than A

\b
A and B are each an analyze JSON document or a checkpoint (.pt, .safetensors, .npz...),
analysed on CONFIG's data as `lstm-diag analyze CONFIG --set model.weights=CKPT` would.
--fail-on matches the LD5xx findings where B is worse than A (the rule of docs/track.md)
and the findings B has that A did not.
"""


def _side(arg: str, config, overrides) -> tuple[dict, dict]:
    """(point, its source) for one argument: a saved document, or a checkpoint to analyse."""
    from ..features.analysis import SCHEMA_VERSION
    from ..features.track import analyse, checkpoint_config
    from ..features.trajectory import point
    from ..setup.document import read_analysis_document

    doc = read_analysis_document(arg, SCHEMA_VERSION)
    if doc is not None:
        return point(doc), {"label": arg, "kind": "analyze document"}
    from pathlib import Path

    cfg = checkpoint_config(config, overrides, Path(arg))
    return analyse(cfg), {"label": arg, "kind": "checkpoint"}


@click.command("diff", epilog=EPILOG)
@click.argument("a", metavar="A", type=click.Path(dir_okay=False))
@click.argument("b", metavar="B", type=click.Path(dir_okay=False))
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False),
    help="For checkpoints: the config whose data, loss and diagnostics they are analysed with "
    "(model.weights is the checkpoint). Default: the built-in default.",
)
@set_option
@format_option("table", "json", "markdown")
@fail_on_option
@click.option("--no-dynamics", is_flag=True, help="For checkpoints: skip the Lyapunov spectrum (no λ₁).")
@engine_option
@debug_option
@handle_errors
def diff_cmd(a, b, config, overrides, fmt, fail_on, no_dynamics, engine):
    """Compare two analyses A and B: the loss, and per layer the gradient horizon, decay
    rate, λ₁, forget retention and τ, saturation, stuck units and verdict, each with its
    signed change B − A; the findings that appeared and disappeared; and the LD5xx
    findings where B is worse than A.
    """
    from ..features.findings import from_dict
    from ..features.track import diff_document
    from ..features.trajectory import DIFF_SCHEMA_VERSION

    if no_dynamics:
        overrides = (*overrides, "diagnostics.dynamics=false")
    overrides = with_engine(overrides, engine)
    (pa, sa), (pb, sb) = _side(a, config, overrides), _side(b, config, overrides)
    engine_notes()
    doc = diff_document(pa, pb, "A", "B", [sa, sb])
    if fmt == "json":
        emit_json(doc, "diff", DIFF_SCHEMA_VERSION)
    elif fmt == "markdown":
        from ..report.track_render import diff_markdown

        click.echo(diff_markdown(doc), nl=False)
    else:
        from ..report.track_render import render_diff

        render_diff(doc, stdout_console())
    fail_if([from_dict(f) for f in doc["findings"]], fail_on)
