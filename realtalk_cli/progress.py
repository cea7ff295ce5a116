"""Rich progress bars and console on stderr, silenced by --quiet."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

_state = {"quiet": False}
console = Console(stderr=True)
# errors are printed even under --quiet
err_console = Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet
    console.quiet = quiet


def is_quiet() -> bool:
    return _state["quiet"]


class _InfoColumn(ProgressColumn):
    """Free text per task (loss, fps, ...), set with `progress.update(task, info=...)`."""

    def render(self, task):
        return Text(str(task.fields.get("info", "")))


def progress(transient: bool = False) -> Progress:
    """A progress bar for long work; use as `with progress() as p: task = p.add_task(...)`."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _InfoColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=_state["quiet"],
    )
