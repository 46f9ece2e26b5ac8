"""`lstm-diag compare`: init schemes (and sequence lengths) side by side, over seeds."""

from __future__ import annotations

import click

from .common import (
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
  lstm-diag compare                                  # pytorch,keras,orthogonal,chrono x 5 seeds
  lstm-diag compare cfg.yaml --init pytorch,keras,chrono --seeds 10 --jobs 4
  lstm-diag compare cfg.yaml --init pytorch,xavier_uniform:forget_bias=1,chrono:t_max=500
  lstm-diag compare cfg.yaml --seq-lens 50,200,1000 --plots figs/
  lstm-diag compare cfg.yaml --seeds 20 --scheduler local --cache runs/  # Dask; resumable
  lstm-diag compare cfg.yaml --grid model.forget_bias=0,1,3 --grid data.seq_len=50,200,1000 \\
      --init pytorch,chrono --seeds 5 --plots figs/     # a 2-axis sweep: heatmaps
  lstm-diag compare cfg.yaml --train-steps 100 --format markdown > compare.md
  lstm-diag compare cfg.yaml --format json | jq '.ranking'

\b
Init specs: SCHEME[:OPTION=VALUE[:OPTION=VALUE]]. Options: forget_bias,
recurrent_scale (any scheme), t_max (chrono), gain (identity). Flags override
the compare: section of CONFIG (any --grid replaces compare.grid). Details:
docs/compare.md.

\b
Grid: --grid FIELD=V1,V2,... (repeat it for more axes) sweeps any config
field; the runs are the cross product of every axis, the init specs and the
seeds. Values are read as --set reads them; values holding commas go in YAML
list form: --grid 'train.betas=[[0.9, 0.999], [0.5, 0.9]]'. Not an axis:
seed (--seeds), model.init (--init), engine, compare.*, output paths.
"""


def _where(s, runs: int) -> str:
    """Where the runs executed, for the summary line on stderr."""
    if s.scheduler == "local":
        from ..features.executor import local_workers

        return f"on a Dask LocalCluster of {min(local_workers(s.jobs), runs)} worker(s)"
    if s.scheduler is not None:
        return f"on the Dask scheduler {s.scheduler}"
    return f"with {min(s.jobs, runs)} process(es)"


def _run_line(run: dict) -> str:
    where = "".join(
        f", {f.rsplit('.', 1)[-1]}={v}" for f, v in run.get("point", {}).items() if f != "data.seq_len"
    )
    return f"{run['scheme']}{where} seed {run['seed']} T={run['seq_len']}: horizon {run['horizon']}"


def _grid_flags(items: tuple[str, ...]) -> dict | None:
    """--grid FIELD=VALUES (repeated) -> {field: 'values'}; None when no --grid is given."""
    from ..errors import ConfigError

    if not items:
        return None
    grid: dict[str, str] = {}
    for item in items:
        field, sep, values = item.partition("=")
        field = field.strip()
        if not sep or not field:
            raise ConfigError(
                f"--grid {item!r}: expected FIELD=V1,V2,... e.g. --grid model.forget_bias=0,1,3"
            )
        if field in grid:
            raise ConfigError(f"--grid: {field} is given twice; list all its values in one --grid")
        grid[field] = values
    return grid


def _summary(err, doc: dict, how: str) -> None:
    """On stderr: the one-line summary (for logs and grep), and every grid axis that
    changed no measured number."""
    err.print(f"compare: {len(doc['runs'])} runs {how}", soft_wrap=True)
    for ax in doc["axes"]:
        if not ax["changes_results"]:
            err.print(
                f"warning: the grid axis {ax['field']} changed no measured number "
                "(every run equal across its values)"
            )


def _emit(doc: dict, fmt: str, invocation: str) -> None:
    """The document on stdout as --format says (json, markdown or the rich tables)."""
    if fmt == "json":
        from ..features.compare import SCHEMA_VERSION

        emit_json(doc, "compare", SCHEMA_VERSION)
    elif fmt == "markdown":
        from ..report.compare_render import render_markdown

        click.echo(render_markdown(doc, invocation), nl=False)
    else:
        from ..report.compare_render import render

        render(doc, stdout_console(), invocation)


def _invocation(config, overrides, engine) -> str:
    """CONFIG and the --set/--engine options compare was given, as `analyze` takes them
    (the start of the command that reproduces the best cell's run)."""
    import shlex

    parts = [shlex.quote(str(config))] if config else []
    parts += [f"--set {shlex.quote(o)}" for o in overrides]
    parts += [f"--engine {engine}"] if engine else []
    return " ".join(parts)


def _shape(runs, specs, seeds: int, lens) -> str:
    """'2 schemes × 5 seeds × 3 lengths', or with a grid '2 schemes × 6 grid points × 5 seeds'."""
    points = len({r.point for r in runs})
    if lens or points == 1:
        return f"{len(specs)} schemes × {seeds} seeds" + (f" × {len(lens)} lengths" if lens else "")
    return f"{len(specs)} schemes × {points} grid points × {seeds} seeds"


@click.command("compare", epilog=EPILOG)
@config_argument
@click.option(
    "--init",
    "init",
    metavar="SPECS",
    help="Comma-separated init specs to compare [compare.init: pytorch,keras,orthogonal,chrono].",
)
@click.option("--seeds", type=int, metavar="N", help="Seeds per scheme [compare.seeds: 5].")
@click.option(
    "-j", "--jobs", type=int, metavar="J", help="Worker processes; never changes a result [compare.jobs: 1]."
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run on Dask: 'local' starts a LocalCluster for the run (--jobs workers, or one per core), "
    "or the address of a running scheduler (tcp://host:8786); never changes a result "
    "[compare.scheduler; needs pip install 'lstm-diag[dask]'].",
)
@click.option(
    "--cache",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Keep each finished run in DIR; a rerun (after Ctrl-C, a crash, a lost worker) computes "
    "only the missing runs, with identical output [compare.cache].",
)
@click.option(
    "--seq-lens",
    metavar="T1,T2,...",
    help="Sweep the sequence length too, e.g. 50,200,1000 [compare.seq_lens: data.seq_len].",
)
@click.option(
    "--grid",
    "grid",
    metavar="FIELD=V1,V2,...",
    multiple=True,
    help="Sweep a config field over these values; repeat for more axes [compare.grid].",
)
@click.option(
    "--train-steps",
    type=int,
    metavar="K",
    help="Also train each run K steps (the train: section's optimizer) and measure again "
    "[compare.train_steps: 0].",
)
@click.option(
    "--plots", type=click.Path(file_okay=False), help="Write the compare figures (PNG) to this folder."
)
@set_option
@format_option("table", "json", "markdown")
@engine_option
@fail_on_option
@debug_option
@handle_errors
def compare_cmd(
    config,
    init,
    seeds,
    jobs,
    scheduler,
    cache,
    seq_lens,
    grid,
    train_steps,
    plots,
    overrides,
    fmt,
    engine,
    fail_on,
):
    """Compare initialization schemes on CONFIG's architecture and data, over seeds,
    and sweep any config field (--grid).

    For every cell (grid point x scheme) x seed: the same data batch per seed, the
    weights drawn from the scheme; measured as `analyze` measures them. Shows per
    cell the median and interquartile range of the gradient horizon, decay rate,
    ||dL/dc_1||/||dL/dc_T||, gate saturation, forget-gate mean and time constant,
    sigma_max of each recurrent gate block, loss and verdicts, ranked by horizon,
    and the `analyze` command that reproduces the best cell.
    """
    import time

    from ..features.compare import compare, plan, run_findings
    from ..features.executor import in_flight

    flags = {"init": init, "seeds": seeds, "jobs": jobs, "seq_lens": seq_lens, "scheduler": scheduler}
    flags |= {"train_steps": train_steps, "plots": plots, "cache": cache, "grid": _grid_flags(grid)}
    cfg = with_flags(load(config, with_engine(overrides, engine)), "compare", flags)
    s = cfg.compare
    if s.scheduler is not None:
        from ..features.executor import require_distributed

        require_distributed()  # before any run: exit 2 naming the extra
    specs, lens = s.init_specs, s.seq_len_list
    runs = plan(cfg, specs, s.seeds, lens, s.grid_axes, s.train_steps, jobs=in_flight(s.jobs, s.scheduler))
    progress = ProgressBar("compare", len(runs), rate=True)
    counts = {True: 0, False: 0}  # cached, computed

    def done(run: dict, cached: bool) -> None:
        counts[cached] += 1
        text = f"{counts[True]} cached · " if counts[True] else ""
        progress.update(advance=1, text=text + _run_line(run))

    t0 = time.perf_counter()
    try:
        doc = compare(
            cfg,
            specs,
            s.seeds,
            lens,
            jobs=s.jobs,
            train_steps=s.train_steps,
            on_done=done,
            on_start=progress.start,
            runs=runs,
            scheduler=s.scheduler,
            cache=s.cache,
        )
    finally:
        progress.stop()
    engine_notes()
    err = stderr_console()
    seconds = time.perf_counter() - t0
    cached = f": {counts[True]} cached, {counts[False]} computed" if s.cache else ""
    _summary(
        err, doc, f"({_shape(runs, specs, s.seeds, lens)}) in {seconds:.1f} s {_where(s, len(runs))}{cached}"
    )
    _emit(doc, fmt, _invocation(config, overrides, engine))
    if s.plots:
        from ..report.figures.compare import figures

        for path in write_document_figures(figures, doc, s.plots):
            err.print(f"figure written to {path}")
    fail_if(run_findings(doc), fail_on)
