"""The progress of the commands that answer a CSV: every row counted (bad rows and resumed rows too), the elapsed
time from the command's start, and the rate and time left measured on the rows answered in this run only.

On a terminal it is a Rich bar; where standard error is not one (a log file, CI, a notebook's ``!vqa batch``
cell) a live bar shows nothing until the end, so a plain line is printed instead every ``LINE_EVERY`` seconds from
the start (while the model loads too) and when a pass ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from agent.cli.common import err

LINE_EVERY = 30.0  # seconds between plain progress lines where standard error is not a terminal


class RateColumn(ProgressColumn):
    """Rows answered in this run per second (``s/row`` when slower than one a second), ``-`` before the first."""

    def render(self, task: Task) -> Text:
        rows: RowProgress | None = task.fields.get("rows")
        return Text(rows.rate_text() if rows else "- rows/s", style="progress.data.speed")


class ClockColumn(ProgressColumn):
    """Elapsed time from the command's start, and the time left at this run's rate."""

    def render(self, task: Task) -> Text:
        rows: RowProgress | None = task.fields.get("rows")
        return Text(rows.clock_text() if rows else "", style="progress.elapsed")


class RowProgress:
    """``start(total)`` once the model is loaded, ``done(answer)`` per row, ``arm(name)`` for a new pass.

    ``agent.runner.run_batch`` reports the rows settled before it starts (bad rows, rows answered in an earlier
    run) on the calling thread, then the answered ones from its worker threads: those are counted apart as
    ``resumed``, and the rate is answered rows over the time since answering began."""

    def __init__(self, progress: Progress | None, description: str, *, lines_every: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._progress = progress
        self._description = description
        self._task: Any = None
        self._caller = threading.get_ident()
        self._lock = threading.Lock()
        self._lines_every = lines_every  # plain lines instead of a live bar (None: the bar draws itself)
        self._clock = clock  # seconds (the tests move one by hand)
        self.t0 = clock()  # the command's start: elapsed time counts from here
        self.total = 0
        self.resumed = 0  # settled before answering began (an earlier run's answers, bad rows)
        self.answered = 0  # answered in this run (this pass)
        self.began = self.t0  # when answering began (after the model loaded and resumed rows were counted)

    def start(self, total: int) -> None:
        self._caller = threading.get_ident()
        self.total, self.began = total, self._clock()
        if self._progress is not None:
            self._task = self._progress.add_task(self._description, total=total, rows=self)

    def arm(self, name: str) -> None:
        """A new pass over the same rows (an ablation arm): the counts start again, named ``name``."""
        with self._lock:
            self._description, self.resumed, self.answered, self.began = name, 0, 0, self._clock()
        if self._progress is not None and self._task is not None:
            self._progress.reset(self._task, description=name)

    def done(self, _answer: object = None) -> None:
        with self._lock:
            if threading.get_ident() == self._caller and not self.answered:
                self.resumed += 1
                self.began = self._clock()  # answering begins after the settled rows
            else:
                self.answered += 1
            finished = self.resumed + self.answered >= self.total
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)
        if self._lines_every is not None and finished:
            self.line()

    # ---------------------------------------------------------------- what is shown

    def rate(self) -> float | None:
        """Rows answered in this run per second since answering began; ``None`` before the first."""
        seconds = self._clock() - self.began
        return self.answered / seconds if self.answered and seconds > 0 else None

    def rate_text(self) -> str:
        rate = self.rate()
        if not rate:
            return "- rows/s"
        return f"{rate:.2f} rows/s" if rate >= 1 else f"{1 / rate:.1f} s/row"

    def clock_text(self) -> str:
        shown = f"{_duration(self._clock() - self.t0)} elapsed"
        rate, left = self.rate(), self.total - self.resumed - self.answered
        if rate and left > 0:
            shown += f", about {_duration(left / rate)} left"
        return shown

    def line(self) -> None:
        """One plain line: rows, resumed rows, the rate, elapsed and left."""
        if self._task is None and not self.total:
            err.print(f"{self._description}: starting (loading the model and tools), "
                      f"{_duration(self._clock() - self.t0)} elapsed", highlight=False, markup=False)
            return
        parts = [f"{self._description}: {self.resumed + self.answered}/{self.total} rows"]
        if self.resumed:
            parts.append(f"{self.resumed} resumed")
        parts += [self.rate_text(), self.clock_text()]
        err.print(", ".join(parts), highlight=False, markup=False)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@contextmanager
def row_progress(description: str, *, quiet: bool = False, transient: bool = False,
                 lines_every: float = LINE_EVERY) -> Iterator[RowProgress]:
    """A bar on stderr (none with ``quiet``) that counts rows, with the rate, elapsed time and time left; without
    a terminal, a plain line every ``lines_every`` seconds from now."""
    if quiet:
        yield RowProgress(None, description)
        return
    live = err.is_terminal
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                        ClockColumn(), console=err, transient=transient, disable=not live)
    rows = RowProgress(progress, description, lines_every=None if live else lines_every)
    stop = threading.Event()
    if not live:
        def tick() -> None:
            while not stop.wait(lines_every):
                rows.line()

        threading.Thread(target=tick, name="progress-lines", daemon=True).start()
    try:
        with progress:
            yield rows
    finally:
        stop.set()
