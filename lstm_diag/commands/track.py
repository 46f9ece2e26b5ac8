"""`lstm-diag track`: gradient flow at every checkpoint of a training run, on the same data."""

from __future__ import annotations

import click

from .common import (
    debug_option,
    echo_notes,
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
    write_document_figures,
)

EPILOG = """\b
Examples:
  lstm-diag track runs/ckpt_*.pt --config cfg.yaml
  lstm-diag track runs/ --config cfg.yaml --jobs 2 -o figs/
  lstm-diag track a.pt b.safetensors c.npz --config cfg.yaml --format json > track.json
  lstm-diag track 'runs/*.pt' --config cfg.yaml --fail-on LD5     # exit 1 if the latest is worse
  lstm-diag track runs/ --config cfg.yaml --no-dynamics --format markdown > track.md

\b
Steps: from the checkpoint's `step`, `global_step` or `epoch` entry (a checkpoint dict,
safetensors metadata, a 0-d array in an .npz), else the last number in the file name,
else the order given; stderr says which for each file. --fail-on compares the latest
checkpoint with the first: it matches the LD5xx findings of the rule in docs/track.md
(horizon shrank, verdict worse, loss rose, more stuck units) and the findings of the
latest checkpoint that the first did not have. Details: docs/track.md.
"""


def _configs(config, overrides, checkpoints):
    """Each checkpoint's config (validated before anything runs: a bad file stops here)."""
    from ..features.track import checkpoint_config

    return [checkpoint_config(config, overrides, c.path) for c in checkpoints]


def _run(configs, jobs, checkpoints):
    from ..features.track import analyse_all
    from ..features.trajectory import step_text
    from .progress import ProgressBar

    bar = ProgressBar("track", len(configs), transient=True, rate=False)
    done = [0]

    def on_done(point):
        done[0] += 1
        bar.update(done[0], f"step {step_text(checkpoints[done[0] - 1].step)}" if jobs <= 1 else "")

    with bar:
        return analyse_all(configs, jobs, on_done)


@click.command("track", epilog=EPILOG)
@click.argument("checkpoints", nargs=-1, required=True, metavar="CKPT...")
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False),
    help="The config whose data, loss and diagnostics every checkpoint is analysed with "
    "(model.weights is each CKPT in turn). Default: the built-in default.",
)
@set_option
@format_option("table", "json", "markdown")
@fail_on_option
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Analyse this many checkpoints at once, in worker processes (same results).",
)
@click.option(
    "-o",
    "--output",
    "--plots",
    "plots",
    type=click.Path(file_okay=False),
    help="Write the trajectory figures (png) to this folder (created if missing); --plots as in "
    "analyze, compare and train. The table or document goes to stdout.",
)
@click.option("--no-dynamics", is_flag=True, help="Skip the Lyapunov spectrum (no λ₁ column); faster.")
@engine_option
@debug_option
@handle_errors
def track_cmd(checkpoints, config, overrides, fmt, fail_on, jobs, plots, no_dynamics, engine):
    """Analyse every checkpoint CKPT of a training run on the same data and show how
    gradient flow changed over training.

    CKPT: .pt/.pth/.bin/.ckpt (state dicts or checkpoint dicts), .safetensors, .npz files,
    folders of them, or quoted globs. Each is analysed exactly as `lstm-diag analyze
    CONFIG --set model.weights=CKPT` (same loss, horizon, verdict...). Per layer a table
    over the steps: loss, gradient horizon, decay rate, λ₁, forget retention and τ,
    gate saturation, stuck units, verdict; then what got worse from the first to the latest.
    """
    from ..features.analysis import run_source
    from ..features.findings import from_dict
    from ..features.track import track_document
    from ..features.trajectory import step_text
    from ..setup.checkpoints import find_checkpoints

    if no_dynamics:
        overrides = (*overrides, "diagnostics.dynamics=false")
    overrides = with_engine(overrides, engine)
    found = find_checkpoints(checkpoints)
    echo_notes(found.notes)
    for c in found.checkpoints:
        click.echo(f"step {step_text(c.step)}: {c.path} (from {c.source_text})", err=True)
    configs = _configs(config, overrides, found.checkpoints)
    points = _run(configs, jobs, found.checkpoints)
    engine_notes()
    doc = track_document(found.checkpoints, points, run_source(config, overrides), configs[0])
    _emit(doc, fmt)
    if plots:
        from ..report.figures.trajectory import track_figures

        for path in write_document_figures(track_figures, doc, plots):
            click.echo(f"figure written to {path}", err=True)
    fail_if([from_dict(f) for f in doc["findings"]], fail_on)


def _emit(doc: dict, fmt: str) -> None:
    from ..features.trajectory import SCHEMA_VERSION

    if fmt == "json":
        emit_json(doc, "track", SCHEMA_VERSION)
    elif fmt == "markdown":
        from ..report.track_render import track_markdown

        click.echo(track_markdown(doc), nl=False)
    else:
        from ..report.track_render import render_track

        render_track(doc, stdout_console())
