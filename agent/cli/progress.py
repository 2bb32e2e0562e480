"""The progress bar of the commands that answer a CSV: every row counted (bad rows and resumed rows too), with the
rate and the time left measured on the rows answered in this run.

On a terminal it is a Rich bar; where standard error is not one (a log file, CI, a notebook's ``!vqa batch``
cell) a live bar shows nothing until the end, so a plain line is printed instead every ``LINE_EVERY`` seconds and
when a pass ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from agent.cli.common import err

LINE_EVERY = 30.0  # seconds between plain progress lines where standard error is not a terminal


class RateColumn(ProgressColumn):
    """Rows per second (``s/row`` when slower than one a second), or ``-`` before there is a rate."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed:
            return Text("- rows/s", style="progress.data.speed")
        shown = f"{speed:.2f} rows/s" if speed >= 1 else f"{1 / speed:.1f} s/row"
        return Text(shown, style="progress.data.speed")


class RowProgress:
    """``start(total)`` once the model is loaded, ``done(answer)`` per row, ``arm(name)`` for a new pass.

    ``agent.runner.run_batch`` reports the rows settled before it starts (bad rows, rows answered in an earlier
    run) on the calling thread, then the answered ones from its worker threads: the clock and the rate restart at
    the first answered row, so resumed rows never inflate the rate or shrink the time left."""

    def __init__(self, progress: Progress | None, description: str, *, lines_every: float | None = None) -> None:
        self._progress = progress
        self._description = description
        self._task: Any = None
        self._caller = threading.get_ident()
        self._answering = False
        self._lock = threading.Lock()
        self._lines_every = lines_every  # plain lines instead of a live bar (None: the bar draws itself)
        self._last_line = time.monotonic()

    def start(self, total: int) -> None:
        self._caller = threading.get_ident()
        if self._progress is not None:
            self._task = self._progress.add_task(self._description, total=total)

    def arm(self, name: str) -> None:
        """A new pass over the same rows (an ablation arm): the bar starts again, named ``name``."""
        self._answering = False
        if self._progress is not None and self._task is not None:
            self._progress.reset(self._task, description=name)

    def done(self, _answer: object = None) -> None:
        if self._progress is None or self._task is None:
            return
        with self._lock:
            if not self._answering and threading.get_ident() != self._caller:
                self._answering = True  # the first row answered now: measure from here
                completed = next(t.completed for t in self._progress.tasks if t.id == self._task)
                self._progress.reset(self._task, completed=completed)
            self._progress.advance(self._task)
            if self._lines_every is not None:
                self._line()

    def _line(self) -> None:
        task = next(t for t in self._progress.tasks if t.id == self._task)
        now = time.monotonic()
        if not task.finished and now - self._last_line < self._lines_every:
            return
        self._last_line = now
        parts = [f"{task.description}: {task.completed:.0f}/{task.total or 0:.0f} rows"]
        if task.speed:
            parts.append(str(RateColumn().render(task)))
        if task.time_remaining and not task.finished:
            parts.append(f"about {_duration(task.time_remaining)} left")
        err.print(", ".join(parts), highlight=False, markup=False)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@contextmanager
def row_progress(description: str, *, quiet: bool = False, transient: bool = False) -> Iterator[RowProgress]:
    """A bar on stderr (none with ``quiet``) that counts rows, with the rate, elapsed time and time left."""
    if quiet:
        yield RowProgress(None, description)
        return
    live = err.is_terminal
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=transient, disable=not live)
    with progress:
        yield RowProgress(progress, description, lines_every=None if live else LINE_EVERY)
