"""Reading a run's trace: the events of ``RUN/trace.jsonl`` grouped into one view per question attempt."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.trace.events import TRACE_FILE, TRACE_VERSION, Kind, TraceError, TraceEvent


def trace_path(run: Path) -> Path:
    """``RUN/trace.jsonl`` for a run folder, or the file itself."""
    run = Path(run)
    path = run / TRACE_FILE if run.is_dir() else run
    if not path.is_file():
        raise TraceError(f"expected a trace at {path}, found nothing; run `vqa batch` or `vqa eval` with "
                         f"--run-dir {run} first")
    return path


def read_trace(path: Path) -> list[TraceEvent]:
    """Every event in file order; a torn last line is ignored, a newer schema version is refused."""
    events = []
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            if i >= len(lines) - 1:  # the last line, cut by a kill
                continue
            raise TraceError(f"{path}:{i}: expected one JSON event per line, found {line[:60]!r}") from None
        if raw.get("v", 0) > TRACE_VERSION:
            raise TraceError(f"{path}:{i}: trace schema version {raw.get('v')} is newer than this program's "
                             f"({TRACE_VERSION}); upgrade vqa-orchestrator to read it")
        events.append(TraceEvent.model_validate(raw))
    return events


@dataclass
class QuestionView:
    """The events of one attempt at one question, in order."""

    qid: str
    run: str
    tags: dict[str, str]
    events: list[TraceEvent]

    def first(self, kind: Kind, node: str | None = None) -> TraceEvent | None:
        return next((e for e in self.events if e.kind == kind and (node is None or e.node == node)), None)

    def nodes(self, node: str) -> list[TraceEvent]:
        return [e for e in self.events if e.kind == "node" and e.node == node]

    @property
    def question(self) -> dict[str, Any]:
        q = self.first("question")
        return q.inputs if q else {}

    @property
    def answer(self) -> dict[str, Any]:
        f = self.first("node", "finish")
        return f.outputs if f else {}

    @property
    def start(self) -> float:
        return min(e.start for e in self.events)

    @property
    def seconds(self) -> float:
        return max(e.end for e in self.events) - self.start


def questions(events: Iterable[TraceEvent], *, qid: str | None = None, tags: dict[str, str] | None = None,
              all_runs: bool = False) -> list[QuestionView]:
    """Group events by attempt; by default keep each question's latest attempt (per tag set), first-seen order."""
    groups: dict[tuple, QuestionView] = {}
    for e in events:
        if qid is not None and e.qid != qid:
            continue
        if tags and any(e.tags.get(k) != v for k, v in tags.items()):
            continue
        key = (e.run, tuple(sorted(e.tags.items())), e.qid)
        groups.setdefault(key, QuestionView(e.qid, e.run, e.tags, [])).events.append(e)
    views = list(groups.values())
    for v in views:
        v.events.sort(key=lambda e: e.seq)
    if all_runs:
        return views
    latest: dict[tuple, QuestionView] = {}
    for v in views:  # file order: a later run's attempt replaces an earlier one
        latest[(tuple(sorted(v.tags.items())), v.qid)] = v
    return list(latest.values())
