"""Options and behaviour every command shares: CONFIG, --set, --format, --debug,
exit codes (0 ok, 1 a --fail-on finding, 2 bad usage or input, 3 internal error)."""

from __future__ import annotations

import functools
import sys
import traceback

import click

EXIT_OK, EXIT_FINDING, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class FailOnFinding(Exception):
    """Raised by a command to exit 1 after its output is complete (--fail-on)."""


class FiniteFloat(click.ParamType):
    """A float option that is a finite number (NaN and inf refused), optionally > or >= a bound.

    Every float flag uses it: a NaN tolerance would fail every check, an infinite learning
    rate would diverge, and neither is what the user meant."""

    name = "float"

    def __init__(self, minimum: float | None = None, open_min: bool = False):
        self.minimum, self.open_min = minimum, open_min

    def convert(self, value, param, ctx):
        import math

        from ..errors import preview

        if isinstance(value, float):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{preview(value)} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"must be a finite number, got {value!r}", param, ctx)
        if self.minimum is not None and (v <= self.minimum if self.open_min else v < self.minimum):
            self.fail(f"must be {'>' if self.open_min else '>='} {self.minimum:g}, got {v:g}", param, ctx)
        return v


def config_argument(fn):
    return click.argument("config", required=False, type=click.Path(dir_okay=False))(fn)


def set_option(fn):
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a config field, e.g. --set model.hidden_size=64 (repeatable).",
    )(fn)


def format_option(*choices: str, default: str = "table"):
    def deco(fn):
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(choices),
            default=default,
            show_default=True,
            help="table: rich, for people; json: one document on stdout, for machines"
            + ("; markdown: for issues and notebooks." if "markdown" in choices else "."),
        )(fn)

    return deco


def _parse_fail_on(ctx, param, value):
    if value is None:
        return None
    from ..features.codes import CODES

    items = [v.strip() for v in value.split(",") if v.strip()]
    for v in items:
        if v.lower() in ("error", "warning", "info"):
            continue
        if not any(code.startswith(v.upper()) for code in CODES):
            raise click.BadParameter(
                f"{v!r} is not a finding code, code prefix or severity (error, warning, info); "
                "see `lstm-diag codes`"
            )
    return items


def fail_on_option(fn):
    return click.option(
        "--fail-on",
        callback=_parse_fail_on,
        metavar="CODES|warning|error",
        help="Exit 1 if a finding matches: codes or prefixes (LD101,LD2) or a severity "
        "(warning = warning or error).",
    )(fn)


def emit_json(doc: dict, command: str, schema_version: int) -> None:
    """The command's one JSON document on stdout, stamped with its schema version and name."""
    from ..report.jsonout import document, dumps

    click.echo(dumps(document(command, schema_version, doc)), nl=False)


def fail_if(findings, fail_on) -> None:
    """--fail-on: after the output is complete, exit 1 (FailOnFinding) if a finding matches."""
    if not fail_on:
        return
    from ..features.findings import matches

    hit = sorted({f.code for f in findings if matches(f, fail_on)})
    if hit:
        click.echo(f"--fail-on: found {', '.join(hit)}", err=True)
        raise FailOnFinding()


def debug_option(fn):
    return click.option("--debug", is_flag=True, help="Show the full traceback on errors.")(fn)


def one_line(text: str) -> str:
    """Control characters (a newline in a file name...) shown escaped, so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Input warnings as one line on stderr (`warning: ...`); others as Python shows them."""
    from ..errors import InputWarning

    if issubclass(category, InputWarning):
        click.echo(f"warning: {one_line(str(message))}", err=True)
    else:
        import warnings

        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _exiting() -> None:
    """Stopping on a signal: a further Ctrl-C or SIGTERM while exiting changes nothing
    (the exit code stays 130/143 and cleanup is not cut short)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)


def handle_errors(fn):
    """Turn bad input into one line on stderr and exit 2; never a traceback unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args, debug=False, **kwargs):
        import warnings

        import numpy as np

        from ..errors import InputError, InputWarning
        from ..features.shutdown import Terminated, shutdown_signals

        try:
            # Floating-point trouble is reported as findings (LD4xx), never as warnings.
            with warnings.catch_warnings(), np.errstate(all="ignore"), shutdown_signals():
                warnings.simplefilter("ignore", RuntimeWarning)
                warnings.simplefilter("always", InputWarning)
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except InputError as e:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {one_line(str(e))}", err=True)
            sys.exit(EXIT_INPUT)
        except FailOnFinding:
            sys.exit(EXIT_FINDING)
        except MemoryError:
            click.echo(
                "error: out of memory: reduce data.batch_size, data.seq_len or model.hidden_size",
                err=True,
            )
            sys.exit(EXIT_INPUT)
        except KeyboardInterrupt:
            _exiting()
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Terminated as e:
            _exiting()
            click.echo(f"terminated ({e.signame})", err=True)
            sys.exit(128 + e.signum)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug: say so in one line, details with --debug
            if debug:
                traceback.print_exc()
            else:
                click.echo(
                    f"internal error: {e.__class__.__name__}: {e} (rerun with --debug for the traceback)",
                    err=True,
                )
            sys.exit(EXIT_INTERNAL)

    return wrapper


def stdout_console():
    from rich.console import Console

    return Console(highlight=False)


def file_console():
    """A console that records plain text (no colour) for writing to a file, 100 columns."""
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), record=True, width=100, no_color=True, highlight=False)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def echo_notes(lines) -> None:
    """How the inputs were read ("warning: ..." / "note: ...", e.g. a data file's layout or
    selection): one line each, on stderr."""
    for line in lines:
        click.echo(one_line(line), err=True)


def load(config, overrides):
    """The validated config; notes about its weights file (format, unused arrays) on stderr."""
    from ..setup.config import load_config

    cfg = load_config(config, overrides)[0]
    m = cfg.model
    if m.weights is not None:
        from pathlib import Path

        from ..setup.datafile import KNOWN
        from ..setup.weights import SELECTORS, notes

        d = cfg.data
        same = d.task == "file" and d.path is not None and Path(d.path).resolve() == Path(m.weights).resolve()
        for line in notes(m.weights, KNOWN if same else (), **{k: getattr(m, k) for k in SELECTORS}):
            click.echo(f"note: {one_line(line)}", err=True)
    return cfg


def with_flags(cfg, section: str, flags: dict):
    """CONFIG with the command's flags over its `section:` (flags win over YAML and --set).

    A flag left out (None) keeps the config's value. An invalid value is reported under
    the flag's name: `--seeds: must be a positive integer, got 0`.
    """
    from ..errors import ConfigError

    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return cfg.patched({f"{section}.{k}": v for k, v in given.items()})
    except ConfigError as e:
        msg = str(e)
        for key in given:
            field = f"{section}.{key}:"
            if msg.startswith(field):
                raise ConfigError(f"--{key.replace('_', '-')}:{msg[len(field) :]}") from None
        raise


def write_figures(named_figures, out_dir, fmt: str = "png", dpi: int | None = None) -> list:
    """Encode each (file stem, Figure) and write it to out_dir/<stem>.<fmt>, atomically
    (the folder is created if missing); returns the paths written."""
    from pathlib import Path

    from ..report.figures.style import DPI, figure_bytes
    from ..setup.outputs import atomic_write_bytes

    out = Path(out_dir)
    return [
        atomic_write_bytes(out / f"{stem}.{fmt}", figure_bytes(fig, fmt, DPI if dpi is None else dpi))
        for stem, fig in named_figures
    ]


def engine_option(fn):
    return click.option(
        "--engine",
        type=click.Choice(["numpy", "fast", "auto"]),
        default=None,
        help="Step loops: numpy (the reference), fast (fused numba kernels, extra `fast`), "
        "auto (fast when installed). Default: the config's engine (auto).",
    )(fn)


def with_engine(overrides, engine):
    """--engine as the config override engine=..."""
    return overrides if engine is None else (*overrides, f"engine={engine}")


def engine_notes() -> None:
    """After a run, on stderr: a first-use compile of the fused kernels with its time, and
    (once) a model layout that made the NumPy engine run instead of the fast one."""
    from ..core.backends import last, take_compiled

    for sel in take_compiled():
        click.echo(
            f"engine: compiled the fast kernels for {sel.dtype} in {sel.compile_s:.1f} s "
            f"(first use; cached in {sel.cache_dir}, or set NUMBA_CACHE_DIR)",
            err=True,
        )
    sel = last()
    if sel is not None and sel.note and sel.requested != "numpy" and "cover" in sel.note:
        click.echo(f"engine: {sel.note}", err=True)


def write_document_figures(figures, doc: dict, out_dir, fmt: str = "png", dpi: int | None = None) -> list:
    """Draw `figures(doc)` from the document as its JSON carries it (compute -> document ->
    draw: the figures of a saved --format json document are the same bytes), and write them."""
    from ..report.jsonout import roundtrip

    return write_figures(figures(roundtrip(doc)), out_dir, fmt, dpi)
