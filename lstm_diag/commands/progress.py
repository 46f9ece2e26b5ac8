"""The one progress bar of the long commands (train, compare): rich, on stderr, never stdout.

    train ━━━━━━━━━━━━━━━━━━━━ 120/200 35.2 it/s 0:00:03 loss 0.41 0.39 ×
"""

from __future__ import annotations

from .common import stderr_console


class ProgressBar:
    """`label`, a bar, done/total, (items per second), elapsed time, and a free text.

    transient=True erases the bar when done (and shows nothing when stderr is not a
    terminal); transient=False leaves its last state on stderr.
    """

    def __init__(
        self, label: str, total: int, *, transient: bool = True, rate: bool = False, width: int = 24
    ):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = stderr_console()
        columns = [TextColumn(f"[bold]{label}[/]"), BarColumn(bar_width=width), MofNCompleteColumn()]
        columns += [TextColumn("{task.fields[rate]}")] if rate else []
        columns += [TimeElapsedColumn(), TextColumn("{task.fields[text]}")]
        self.progress = Progress(
            *columns, console=console, transient=transient, disable=transient and not console.is_terminal
        )
        self.task = self.progress.add_task(label, total=total, rate="", text="")

    def __enter__(self) -> ProgressBar:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        if self.progress.console.is_interactive:
            self.progress.stop()
        else:  # no bar was drawn; rich's Progress.stop would still end stderr with a blank line
            self.progress.live.stop()

    def update(self, completed: int | None = None, text: str | None = None, advance: int = 0) -> None:
        """Move to `completed` (or by `advance`) and show `text`; the rate is items per second so far."""
        fields = {} if text is None else {"text": text}
        elapsed = self.progress.tasks[0].elapsed or 0.0
        done = completed if completed is not None else self.progress.tasks[0].completed + advance
        fields["rate"] = f"{done / elapsed:.1f} it/s" if elapsed > 0 else ""
        self.progress.update(self.task, completed=done, **fields)

    def print(self, message: str) -> None:
        """A line above the bar (stderr)."""
        self.progress.console.print(message)
