"""Rich rendering of a finite-difference gradient check."""

from __future__ import annotations

from rich.console import Console

from .text import fmt, table


def render(checks, tol: float, dtype: str, console: Console) -> None:
    t = table(f"Gradient check: BPTT vs finite differences ({dtype}, tol {tol:g})")
    for col, just in (
        ("tensor", "left"),
        ("shape", "right"),
        ("n", "right"),
        ("rel. error", "right"),
        ("worst at", "left"),
        ("analytic", "right"),
        ("numeric", "right"),
        ("", "left"),
    ):
        t.add_column(col, justify=just, no_wrap=True)
    for c in checks:
        ok = c.passed(tol)
        t.add_row(
            c.name,
            "×".join(map(str, c.shape)),
            str(c.checked),
            fmt(c.max_rel_error, 2),
            ",".join(map(str, c.worst_index)),
            fmt(c.worst_analytic, 3),
            fmt(c.worst_numeric, 3),
            "[green]ok[/]" if ok else "[bold red]FAIL[/]",
        )
    console.print(t)
    failed = [c.name for c in checks if not c.passed(tol)]
    if failed:
        console.print(f"[bold red]{len(failed)} tensor(s) above tolerance:[/] {', '.join(failed)}")
    else:
        console.print(f"[green]all {len(checks)} tensors within {tol:g}[/]")
