"""`lstm-diag train`: train small LSTMs under several clip settings and compare what clipping did."""

from __future__ import annotations

import click

from .common import (
    FiniteFloat,
    config_argument,
    debug_option,
    emit_json,
    engine_notes,
    engine_option,
    fail_if,
    fail_on_option,
    format_option,
    handle_errors,
    load,
    set_option,
    stderr_console,
    stdout_console,
    with_engine,
    with_flags,
    write_document_figures,
)
from .progress import ProgressBar

EPILOG = """\b
Examples:
  lstm-diag train configs/adding.yaml --steps 300
  lstm-diag train cfg.yaml --optimizer sgd --lr 1.0 --clip none,norm:1.0
  lstm-diag train cfg.yaml --clip none,norm:1.0,value:0.1,agc:0.01 --metrics run.jsonl
  lstm-diag train cfg.yaml --metrics run.csv --plots figs/ --save-weights final.npz
  lstm-diag train cfg.yaml --format json > train.json
  lstm-diag train cfg.yaml --snapshot-every 50 --metrics run.jsonl --plots figs/

Clip settings: none | norm:MAX_NORM | value:CLIP_VALUE | agc:LAMBDA (a bare mode takes
the clipping: section's value). Every setting trains from the same initial weights on
the same batches. Ctrl-C stops after the current step and still writes everything
measured so far (exit 130). Details: docs/train.md.
"""

EXIT_INTERRUPTED = 130


class _StopFlag:
    """Ctrl-C during training: the first asks train() to stop after the current step (it still
    writes everything measured), a second aborts at once."""

    def __init__(self, bar: ProgressBar):
        self.bar, self.requested = bar, False

    def __call__(self, signum, frame) -> None:
        import signal

        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts now
        self.bar.print("stopping after this step (Ctrl-C again to abort)")


def _show_step(bar: ProgressBar, labels: list[str], event) -> None:
    from ..numfmt import fmt

    loss = "loss " + " ".join(fmt(event.losses[k], 2) if k in event.losses else "×" for k in labels)
    bar.update(event.step, loss)
    for d in event.diverged:
        bar.print(f"[red]{d['setting']}[/] stopped at step {d['step']}: {d['code']} {d['cause']}")


def _check_outputs(metrics: str | None, save_weights: str | None) -> None:
    """The output paths, before any work: exit 2 now, not after training (nothing written)."""
    from ..setup.outputs import into_folder

    for path, name in ((metrics, "metrics.jsonl"), (save_weights, "weights.npz")):
        if path:
            into_folder(path, name)


def _save_weights(result, target: str, err) -> None:
    """Each setting's final weights: OUT.npz -> OUT.<setting>.npz (a folder: weights.<setting>.npz
    inside it), paths on stderr."""
    from ..setup.outputs import into_folder
    from ..setup.outputs import save_weights as write_weights

    out = into_folder(target, "weights.npz")
    for run in result.runs:
        name = f"{out.stem}.{run.setting.slug}{out.suffix or '.npz'}"
        path = write_weights(out.with_name(name), run.params)
        err.print(f"weights ({run.setting.label}, after {run.steps_done} steps) written to {path}")


def _run(cfg, bar: ProgressBar, stop: _StopFlag, labels: list[str]):
    """train(), with the metrics file opened only once every input is checked (on_ready),
    renamed into place at the end, kept beside its target on an abort (SIGTERM, named on
    stderr), removed on an error (docs/train.md, "The metrics file")."""
    from ..features.shutdown import Terminated
    from ..features.train import train

    writer = None

    def on_ready():
        nonlocal writer
        if cfg.train.metrics:
            from ..report.train_render import MetricsWriter
            from ..setup.outputs import into_folder

            metrics = into_folder(cfg.train.metrics, "metrics.jsonl")
            writer = MetricsWriter(metrics, cfg.model.num_layers, bool(cfg.train.snapshot_every))
        bar.start()

    def on_step(event):
        if writer is not None:
            writer.write(event.records)
        _show_step(bar, labels, event)

    try:
        result = train(cfg, on_step, lambda: stop.requested, on_ready=on_ready)
        if writer is not None:
            writer.commit()
    except BaseException as e:
        if writer is not None:
            kept = writer.abandon() if isinstance(e, (KeyboardInterrupt, Terminated)) else writer.discard()
            if kept is not None:
                click.echo(f"metrics so far ({writer.lines} lines) kept in {kept}", err=True)
        raise
    return result, writer


@click.command("train", epilog=EPILOG)
@config_argument
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps per setting [train.steps: 200].")
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "momentum", "adam"]),
    help="sgd, momentum (SGD, train.momentum 0.9) or adam [train.optimizer: sgd].",
)
@click.option("--lr", type=FiniteFloat(), help="Learning rate [train.lr: 0.1].")
@click.option(
    "--clip",
    metavar="SETTINGS",
    help="Comma-separated clip settings to compare [train.clip: none,norm:1.0,value:0.1,agc:0.01].",
)
@click.option(
    "--log-every",
    type=click.IntRange(min=1),
    metavar="K",
    help="Record full metrics every K steps (and at the first and last) [train.log_every: 10].",
)
@click.option(
    "--snapshot-every",
    type=click.IntRange(min=1),
    metavar="N",
    help="Every N steps (and at 0 and the last) analyse each setting's weights on the batch "
    "`analyze` sees, as `track` would a checkpoint: into the metrics and JSON, and figures "
    "with --plots (docs/train.md, 'Snapshots') [train.snapshot_every: off].",
)
@click.option(
    "--metrics",
    type=click.Path(),
    help="Stream the logged metrics to FILE.jsonl or FILE.csv, one line per logged step and setting; "
    "a folder (out/) gets metrics.jsonl.",
)
@click.option(
    "--save-weights",
    type=click.Path(),
    help="Write each setting's final weights: OUT.npz -> OUT.<setting>.npz (PyTorch names); a folder "
    "(out/) gets weights.<setting>.npz.",
)
@click.option("--plots", type=click.Path(file_okay=False), help="Write loss, norm and horizon figures here.")
@set_option
@format_option("table", "json")
@engine_option
@fail_on_option
@debug_option
@handle_errors
def train_cmd(
    config, steps, optimizer, lr, clip, log_every, snapshot_every, metrics, save_weights, plots, overrides,
    fmt, engine, fail_on,
):
    """Train CONFIG's LSTM under several gradient-clipping settings and compare them.

    Each setting (--clip) trains from the same initial weights on the same batches, with
    the exact NumPy engine and a NumPy optimizer (torch.optim semantics). Reports per
    setting the loss, how often clipping bound, pre-clip gradient norms, divergence, and a
    verdict on what clipping did; suggests a max_norm from the unclipped run (Pascanu et
    al. 2013). Everything can also be set in the config's train: section.
    """
    import signal


    flags = {
        "steps": steps,
        "optimizer": optimizer,
        "lr": lr,
        "clip": clip,
        "log_every": log_every,
        "snapshot_every": snapshot_every,
        "metrics": metrics,
        "save_weights": save_weights,
        "plots": plots,
    }
    _check_outputs(metrics, save_weights)
    cfg = with_flags(load(config, with_engine(overrides, engine)), "train", flags)
    tc = cfg.train
    _check_outputs(tc.metrics, tc.save_weights)  # the config's own too
    labels = [s.label for s in cfg.clip_settings]
    bar = ProgressBar("train", tc.steps, transient=False, rate=True, width=20)
    stop = _StopFlag(bar)
    try:
        previous = signal.signal(signal.SIGINT, stop)
    except ValueError:  # not the main thread: Ctrl-C raises KeyboardInterrupt, which train() catches
        previous = None
    try:
        result, writer = _run(cfg, bar, stop, labels)
        engine_notes()
    finally:
        bar.stop()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    err = stderr_console()
    if result.interrupted:
        err.print(f"interrupted: results cover steps 1..{result.steps_run} of {result.steps}")
    if writer is not None:
        err.print(f"metrics: {writer.lines} lines written to {writer.path}")
    if tc.save_weights:
        _save_weights(result, tc.save_weights, err)
    doc = result.to_dict()
    if tc.plots:
        from ..report.figures.train import figures

        for path in write_document_figures(figures, doc, tc.plots):
            err.print(f"figure written to {path}")
        if "snapshots" in doc:
            from ..report.figures.trajectory import snapshot_figures

            for path in write_document_figures(snapshot_figures, doc, tc.plots):
                err.print(f"figure written to {path}")
    if fmt == "json":
        from ..features.train import SCHEMA_VERSION

        emit_json(doc, "train", SCHEMA_VERSION)
    else:
        from ..report.train_render import render

        render(doc, stdout_console())
    if result.interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    fail_if(result.findings, fail_on)
