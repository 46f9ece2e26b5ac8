"""`lstm-diag codes`: the catalogue of finding codes."""

from __future__ import annotations

import click

from .common import debug_option, emit_json, format_option, handle_errors, stdout_console


@click.command(
    "codes", epilog="\b\nExamples:\n  lstm-diag codes\n  lstm-diag codes LD1\n  lstm-diag codes --format json"
)
@click.argument("prefix", required=False)
@format_option("table", "json", "markdown")
@debug_option
@handle_errors
def codes_cmd(prefix, fmt):
    """List the finding codes (optionally those starting with PREFIX).

    LD1xx gradient flow, LD2xx saturation, LD3xx clipping, LD4xx numerics. Every code
    is explained, with the math and remedies, in docs/codes.md.
    """
    from ..features.codes import CODES

    rows = [c for c in CODES.values() if not prefix or c.code.startswith(prefix.upper())]
    if fmt == "json":
        emit_json({"codes": [c.__dict__ for c in rows]}, "codes", 1)
    elif fmt == "markdown":
        lines = ["| code | name | severity | meaning |", "| --- | --- | --- | --- |"]
        lines += [f"| {c.code} | {c.name} | {c.severity} | {c.summary} |" for c in rows]
        click.echo("\n".join(lines))
    else:
        from ..report.text import table

        t = table("Finding codes (details: docs/codes.md)")
        t.add_column("code", no_wrap=True)
        t.add_column("severity", no_wrap=True)
        t.add_column("meaning")
        for c in rows:
            t.add_row(f"[bold]{c.code}[/]", c.severity, f"[bold]{c.name}[/]: {c.summary}")
        stdout_console().print(t)
