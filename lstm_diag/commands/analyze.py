"""`lstm-diag analyze`: forward + BPTT, gradient flow and diagnostics."""

from __future__ import annotations

import click

from .common import (
    config_argument,
    debug_option,
    echo_notes,
    engine_notes,
    engine_option,
    fail_if,
    fail_on_option,
    file_console,
    format_option,
    handle_errors,
    load,
    set_option,
    stderr_console,
    stdout_console,
    with_engine,
    write_document_figures,
)

EPILOG = """\b
Examples:
  lstm-diag analyze
  lstm-diag analyze configs/vanishing.yaml
  lstm-diag analyze cfg.yaml --format json | jq '.layers[0].flow.horizon'
  lstm-diag analyze cfg.yaml --format markdown > report.md
  lstm-diag analyze cfg.yaml --fail-on LD101,LD102     # exit 1 if found (CI gate)
  lstm-diag analyze cfg.yaml --set clipping.mode=norm --set clipping.max_norm=1
  lstm-diag analyze cfg.yaml --save-weights init.npz --plots figs/
  lstm-diag analyze long.yaml --no-dynamics      # skip Jacobians/Lyapunov (faster)
  lstm-diag analyze cfg.yaml --batches 6         # median [IQR] over 6 batches, verdicts by majority
  lstm-diag analyze cfg.yaml --set data.batch_index=3   # batch 3 alone
"""


SUFFIX = {"json": "json", "markdown": "md", "table": "txt"}  # of -o FOLDER/lstm-diag-analyze.*


@click.command("analyze", epilog=EPILOG)
@config_argument
@set_option
@format_option("table", "json", "markdown")
@fail_on_option
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="Write the report to this file instead of stdout (atomically: a temporary file, then a "
    "rename); a folder (out/) gets lstm-diag-analyze.json, .md or .txt by --format.",
)
@click.option(
    "--save-weights",
    type=click.Path(),
    help="Write the model's weights (PyTorch names) to this .npz; a folder (out/) gets weights.npz.",
)
@click.option(
    "--plots",
    type=click.Path(file_okay=False),
    help="Also write the figures of `lstm-diag plot` (png) to this folder.",
)
@click.option(
    "--no-dynamics",
    is_flag=True,
    help="Skip the state Jacobians and Lyapunov spectrum (diagnostics.dynamics=false); "
    "they cost 0.1-0.35x the forward+backward pass, more on small shapes (docs/dynamics.md).",
)
@click.option(
    "--batches",
    type=click.IntRange(1),
    help="Analyse N consecutive batches (data.batches) with the same weights: median [IQR] of "
    "horizon, decay, λ₁ and saturation, verdicts by majority; --fail-on judges findings of more "
    "than half the batches (docs/batches.md).",
)
@engine_option
@debug_option
@handle_errors
def analyze_cmd(config, overrides, fmt, fail_on, output, save_weights, plots, no_dynamics, batches, engine):
    """Run the LSTM on CONFIG and diagnose gradient flow through time.

    Reports the loss; per layer the norms of dL/dc_t, dL/dh_t and dL/dz per gate at
    every step, the decay rate and gradient horizon, gate saturation, and the state
    dynamics (Lyapunov exponents and one-step Jacobian norms: why the gradient
    vanishes or explodes); what the configured clipping would do; and findings with
    codes, messages and remedies.
    """
    from ..features.analysis import SCHEMA_VERSION, analyze, run_source
    from ..setup.outputs import into_folder

    target = into_folder(output, f"lstm-diag-analyze.{SUFFIX[fmt]}") if output is not None else None
    weights_to = into_folder(save_weights, "weights.npz") if save_weights else None
    if no_dynamics:
        overrides = (*overrides, "diagnostics.dynamics=false")
    if batches is not None:
        overrides = (*overrides, f"data.batches={batches}")
    overrides = with_engine(overrides, engine)
    cfg = load(config, overrides)
    result = run_batches(cfg, run_source(config, overrides), analyze)
    engine_notes()
    echo_notes(result.problem.notes)
    doc = result.to_dict()
    if fmt == "json":
        from ..report.jsonout import document, dumps

        text = dumps(document("analyze", SCHEMA_VERSION, doc))
    elif fmt == "markdown":
        from ..report.analysis_md import render_markdown

        text = render_markdown(doc)
    else:
        from ..report.analysis_table import render

        console = stdout_console() if output is None else file_console()
        render(doc, console)
        text = None if output is None else console.export_text()
    if target is not None:
        from ..setup.outputs import atomic_write_text

        stderr_console().print(f"report written to {atomic_write_text(target, text)}")
    elif text is not None:
        click.echo(text, nl=False)
    if weights_to is not None:
        from ..setup.outputs import save_weights as write_weights

        path = write_weights(weights_to, result.problem.params)
        stderr_console().print(f"weights written to {path}")
    if plots:
        from ..report.figures.analysis import figures

        for path in write_document_figures(figures, doc, plots):
            click.echo(f"figure written to {path}", err=True)
    fail_if(result.gate_findings, fail_on)


def run_batches(cfg, source, analyze):
    """`analyze(cfg)`, with a progress bar on stderr over data.batches > 1 and a note of what
    was read."""
    n = cfg.data.batches
    if n == 1:
        return analyze(cfg, source=source)
    from .progress import ProgressBar

    with ProgressBar("batches", n) as bar:
        result = analyze(cfg, source=source, on_batch=lambda k, r: bar.update(completed=k, text=r.verdict))
    d = cfg.data
    click.echo(
        f"note: {n} batches from data.batch_index {d.batch_index} ({result.batches['source']}, "
        f"{result.batches['batch_size']} sequences each); the report's details are of batch "
        f"{d.batch_index}, the spread is over all {n}",
        err=True,
    )
    return result
