"""Rich progress bars and console on stderr, silenced by --quiet; wall time per stage."""

from __future__ import annotations

import time
from collections import defaultdict

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


class Clock:
    """Accumulates wall time per stage: `with clock("render"): ...`; `mark(name)` notes when something
    first happened (seconds since the clock was made)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.marks: dict[str, float] = {}
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, self.elapsed())

    def __call__(self, stage: str):
        clock = self

        class _Span:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                clock.seconds[stage] += time.perf_counter() - self.t

        return _Span()
