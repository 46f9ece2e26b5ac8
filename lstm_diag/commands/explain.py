"""`lstm-diag explain`: one time step's equations, symbolically and with the engine's numbers."""

from __future__ import annotations

import click

from .common import (
    FailOnFinding,
    config_argument,
    debug_option,
    emit_json,
    format_option,
    handle_errors,
    load,
    set_option,
    stdout_console,
)

EPILOG = """\b
Examples:
  lstm-diag explain --toy                     # a scalar LSTM, every step, by hand
  lstm-diag explain                           # last step of the built-in default
  lstm-diag explain cfg.yaml --step 1 --units 0,5
  lstm-diag explain cfg.yaml --layer 1 --sample 3 --format markdown > step.md
  lstm-diag explain --toy --format json | jq '.gradcheck.passed'
  lstm-diag explain charlm.yaml --vocab vocab.json --step 40   # token-id data, labelled

Steps count from 1 (t = 1..T); layers, samples and units from 0.
"""


@click.command("explain", epilog=EPILOG)
@config_argument
@set_option
@format_option("table", "markdown", "json")
@click.option("--step", metavar="T", help="Time step t, 1-based (1..T) [default: the last].")
@click.option("--layer", metavar="K", help="Layer, 0-based [default: 0].")
@click.option("--sample", metavar="B", help="Sample of the batch, 0-based [default: 0].")
@click.option("--units", metavar="U1,U2", help="Hidden units to show, 0-based [default: 0,1].")
@click.option(
    "--vocab",
    metavar="VOCAB.json",
    type=click.Path(dir_okay=False),
    help="Label token-id inputs with their strings: a JSON list of tokens (id k at position k) "
    "or an object {token: id}. Every id in the data must be in it.",
)
@click.option(
    "--toy",
    is_flag=True,
    help="A built-in scalar LSTM (sizes 1, T = 3), walked forward and back through every "
    "step, ending with a finite-difference check.",
)
@debug_option
@handle_errors
def explain_cmd(config, overrides, fmt, step, layer, sample, units, vocab, toy):
    """Show the LSTM equations at one time step with the numbers substituted.

    For step t of one layer and sample, and a few hidden units: the forward pass
    (z_t, i, f, g, o, c_t, h_t; docs/equations.md eqs. 1-7), the backward pass (dL/dh_t,
    dL/dc_t, each gate's derivative, dL/dz_t; eqs. 8-13), the step's share of the
    parameter gradients (eqs. 14-16) and what flows back to step t-1. Every number
    is the engine's own, so it explains what `analyze` reports. Numbers have 4
    significant digits, and values near ±1 enough digits to show their distance from 1
    (σ′ = 0.999994628 · (1 - 0.999994628), never 1 · (1 - 1)).

    With token-id data (`tokens` in the data file), the header names the step's input token
    and the tokens around it; --vocab gives their strings.
    """
    from ..errors import ConfigError

    if toy:
        given = [
            name
            for name, v in (
                ("CONFIG", config),
                ("--set", overrides),
                ("--step", step),
                ("--layer", layer),
                ("--sample", sample),
                ("--units", units),
                ("--vocab", vocab),
            )
            if v
        ]
        if given:
            raise ConfigError(f"--toy: runs the built-in scalar LSTM and takes no {', '.join(given)}")
        from ..features.explain import toy as make_toy

        result = make_toy()
    else:
        from ..features.analysis import analyze_problem
        from ..features.explain import explain, select
        from ..setup.problem import build

        # explain reads the full per-step caches, and needs no Jacobian/Lyapunov section
        overrides = (*overrides, "diagnostics.memory=full", "diagnostics.dynamics=false")
        from ..setup.vocab import load_vocab

        words = None if vocab is None else load_vocab(vocab)  # a bad file stops before the analysis
        problem = build(load(config, overrides))
        view = select(problem, step, layer, sample, units)
        result = explain(analyze_problem(problem), view, words)
    if fmt == "json":
        from ..features.explain import SCHEMA_VERSION

        emit_json(result.to_dict(), "explain", SCHEMA_VERSION)
    elif fmt == "markdown":
        from ..report.explain_render import markdown

        click.echo(markdown(result), nl=False)
    else:
        from ..report.explain_render import render

        render(result, stdout_console())
    if toy and not result.passed:
        raise FailOnFinding()
