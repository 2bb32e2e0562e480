"""Run traces: one append-only JSONL of node events per run directory (``RUN/trace.jsonl``), its reader and
its terminal rendering.

Split with ``results.jsonl``: ``results.jsonl`` is the resume log, the latest ``Answer`` per question (what the
submission is built from); ``trace.jsonl`` is the timeline, one ``TraceEvent`` per graph node run, appended as
each node finishes, for every attempt of every question in every invocation (``run`` tells invocations
apart), fallbacks and row errors included. Node outputs reuse the shared types' JSON (``ToolResult``,
``Decision`` fields), so nothing is stored twice in two schemas; the trace alone is enough to render a question.

Event kinds (schema version ``TRACE_VERSION``; readers refuse newer versions):

- ``question``: what was asked (id, text, options, language, category, gold, image path, forced tools,
  reasoner); ``start`` is when the question started.
- ``node``: one graph node run (``node``: load_image, route, run_tool, reason, finish; ``tool`` for run_tool),
  ``start``/``end`` wall-clock seconds, ``ok``/``error``, summarised ``inputs`` and ``outputs``: the working
  image is saved once as ``images/<sha256[:16]>.jpg`` beside the trace and referenced, never inlined;
  run_tool outputs are the ``ToolResult`` (``cached`` is lifted to the event); reason outputs carry the exact
  ``prompt`` sent to the model and the per-option ``probs``; finish outputs the answer and the gold letter.
- ``rotations``: option-order debiasing / circular evaluation, one record per rotation (probabilities mapped
  back to the original letters, the letter chosen in the rotated order, the prompt).
- ``error``: the question failed outside any node (a bad CSV row, an internal error).

Paths in events are relative to the trace's folder when they lie inside it. ``tags`` carries e.g. the
ablation arm. Export to OpenTelemetry is opt-in (``VQA_TRACE_EXPORT=otel``; ``agent.trace_export``).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.errors import VqaError
from agent.schema import Question

TRACE_VERSION = 1
TRACE_FILE = "trace.jsonl"
IMAGE_SIDE = 1280  # longest side of the image copies the trace keeps (overlays use the working image's pixels)

Kind = Literal["question", "node", "rotations", "error"]


class TraceEvent(BaseModel):
    """One line of ``trace.jsonl``."""

    v: int = TRACE_VERSION
    run: str  # one id per invocation (a ``vqa batch`` or ``vqa eval`` call)
    qid: str
    seq: int  # order of the event within its (run, tags, qid)
    kind: Kind
    node: str | None = None  # load_image, route, run_tool, reason, finish
    tool: str | None = None
    start: float  # wall clock, seconds since the epoch
    end: float
    ok: bool = True
    error: str | None = None
    cached: bool | None = None  # run_tool: served from the tool cache
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def label(self) -> str:
        return f"{self.node}:{self.tool}" if self.tool else (self.node or self.kind)


class TraceError(VqaError):
    """A trace file is missing, or written by a newer version."""


Sink = Callable[[TraceEvent], None]


@dataclass
class _Shared:
    path: Path
    run: str
    sinks: list[Sink]
    lock: threading.Lock = field(default_factory=threading.Lock)
    open: dict[tuple[tuple[tuple[str, str], ...], str], QuestionTrace] = field(default_factory=dict)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class TraceWriter:
    """Appends events to ``path`` (flushed per event, fsynced per question); safe across threads.

    ``tagged(arm=...)`` gives a view that writes to the same file with extra tags.
    """

    def __init__(self, path: Path, *, run: str | None = None, tags: dict[str, str] | None = None,
                 sinks: list[Sink] | None = None, _shared: _Shared | None = None) -> None:
        if _shared is None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            _repair(path)
            if sinks is None:
                from agent.trace_export import sinks_from_env

                sinks = sinks_from_env()
            _shared = _Shared(path=path, run=run or new_run_id(), sinks=sinks)
        self._s = _shared
        self.tags = dict(tags or {})

    @property
    def path(self) -> Path:
        return self._s.path

    @property
    def run(self) -> str:
        return self._s.run

    @property
    def images_dir(self) -> Path:
        return self._s.path.parent / "images"

    def tagged(self, **tags: str) -> TraceWriter:
        return TraceWriter(self.path, tags={**self.tags, **tags}, _shared=self._s)

    def emit(self, event: TraceEvent, *, sync: bool = False) -> None:
        line = event.model_dump_json() + "\n"
        with self._s.lock, open(self._s.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        for sink in self._s.sinks:
            sink(event)

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the trace's folder when inside it, else absolute."""
        p = Path(path).resolve()
        try:
            return p.relative_to(self._s.path.parent.resolve()).as_posix()
        except ValueError:
            return str(p)

    def _key(self, qid: str) -> tuple[tuple[tuple[str, str], ...], str]:
        return tuple(sorted(self.tags.items())), qid

    def question(self, question: Question, *, forced_tools: list[str] | None = None,
                 reasoner: str | None = None) -> QuestionTrace:
        """Start a question: writes its ``question`` event and returns the object that records its nodes."""
        qt = QuestionTrace(self, question.id)
        with self._s.lock:
            self._s.open[self._key(question.id)] = qt
        now = time.time()
        qt.write("question", start=now, end=now, inputs={
            "text": question.text, "options": question.options, "language": question.language,
            "category": question.category, "gold": question.answer,
            "image": str(question.image) if question.image else None, "forced_tools": forced_tools,
            "reasoner": reasoner})
        return qt

    def open_question(self, qid: str) -> QuestionTrace | None:
        with self._s.lock:
            return self._s.open.get(self._key(qid))

    def rotations(self, qid: str, records: list[dict[str, Any]], start: float, end: float) -> None:
        """Record a question's option rotations (``agent.calibration``) while it is open."""
        qt = self.open_question(qid)
        if qt is not None:
            qt.rotations(records, start, end)

    def row_error(self, qid: str, message: str) -> None:
        now = time.time()
        QuestionTrace(self, qid).write("error", start=now, end=now, ok=False, error=message, sync=True)

    def _close(self, qid: str) -> None:
        with self._s.lock:
            self._s.open.pop(self._key(qid), None)


class QuestionTrace:
    """The events of one question in one invocation; ``update`` takes LangGraph ``stream_mode="updates"`` chunks."""

    def __init__(self, writer: TraceWriter, qid: str) -> None:
        self.writer, self.qid = writer, qid
        self._seq = itertools.count()
        self._image_sha: str | None = None

    def write(self, kind: Kind, *, start: float, end: float, sync: bool = False, **fields: Any) -> None:
        self.writer.emit(TraceEvent(run=self.writer.run, qid=self.qid, seq=next(self._seq), kind=kind, start=start,
                                    end=end, tags=self.writer.tags, **fields), sync=sync)

    def update(self, chunk: dict[str, dict[str, Any]]) -> None:
        for node, upd in chunk.items():
            if not isinstance(upd, dict):
                continue
            for step in upd.get("steps", []):
                name, _, tool = step.node.partition(":")
                inputs, outputs, cached = self._summarise(name, tool, upd, step.detail)
                self.write("node", node=name, tool=tool or None, start=step.started,
                           end=step.started + step.seconds, ok=step.ok, error=step.error, cached=cached,
                           inputs=inputs, outputs=outputs)

    def _summarise(self, node: str, tool: str, upd: dict[str, Any],
                   detail: dict[str, Any]) -> tuple[dict, dict, bool | None]:
        if node == "load_image":
            img = upd.get("image")
            if img is None:
                return {}, dict(detail), None
            self._image_sha = img.sha256
            return ({"path": str(img.path)},
                    {"sha256": img.sha256, "size": list(img.image.size), "original_size": list(img.original_size),
                     "file": self._save_image(img)}, None)
        if node == "route":
            return {}, dict(upd.get("route", detail)), None
        if node == "run_tool" and upd.get("results"):
            r = upd["results"][0]
            out = r.model_dump(mode="json", exclude={"settings"})
            out["artifacts"] = {k: self.writer.relative(v) for k, v in r.artifacts.items()}
            return {"tool": tool, "image_sha256": self._image_sha, "settings": r.settings}, out, r.cached
        if node == "reason":
            d = upd.get("decision")
            if d is None:
                return {}, {}, None
            return {}, {"method": d.method, "probs": d.probs, "flags": d.flags, "prompt": d.prompt, "raw": d.raw,
                        "text": getattr(d, "text", None)}, None
        if node == "finish" and upd.get("answer") is not None:
            a = upd["answer"]
            return {}, {"answer": a.answer, "method": a.method, "probs": a.probs, "gold": a.gold,
                        "text": getattr(a, "text", None), "errors": a.errors}, None
        return {}, dict(detail), None

    def _save_image(self, img: Any) -> str:
        """The working image, saved once per content as a JPEG no larger than ``IMAGE_SIDE``."""
        d = self.writer.images_dir
        path = d / f"{img.sha256[:16]}.jpg"
        if not path.exists():
            d.mkdir(parents=True, exist_ok=True)
            im = img.image.copy()
            im.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
            tmp = d / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
            im.convert("RGB").save(tmp, format="JPEG", quality=88)
            os.replace(tmp, path)
        return self.writer.relative(path)

    def rotations(self, records: list[dict[str, Any]], start: float, end: float) -> None:
        self.write("rotations", start=start, end=end, outputs={"rotations": records})

    def error(self, message: str) -> None:
        now = time.time()
        self.write("error", start=now, end=now, ok=False, error=message)

    def close(self) -> None:
        """The question is over: its events are fsynced."""
        with self.writer._s.lock, open(self.writer.path, "a", encoding="utf-8") as f:
            os.fsync(f.fileno())
        self.writer._close(self.qid)


# ---------------------------------------------------------------- reading


def _repair(path: Path) -> None:
    """Drop a torn last line (a write cut by a kill) so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


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


# ---------------------------------------------------------------- terminal rendering


def _probs_text(probs: dict[str, float], chosen: str | None = None) -> str:
    return "  ".join(f"{'[b]' if k == chosen else ''}{k} {p:.0%}{'[/b]' if k == chosen else ''}"
                     for k, p in probs.items())


def _tool_summary(e: TraceEvent) -> str:
    from agent.display import evidence_summary
    from agent.schema import ToolResult

    try:
        r = ToolResult.model_validate({**e.outputs, "settings": e.inputs.get("settings", {})})
    except ValueError:
        return "failed: " + str(e.error) if not e.ok else "evidence of an unknown type"
    return evidence_summary(r, 4)


def render_question(view: QuestionView):
    """A Rich tree: question → load_image, route → tools, reason → answer, with start offsets and durations."""
    from rich.markup import escape
    from rich.tree import Tree

    q, a = view.question, view.answer
    gold, letter = q.get("gold"), a.get("answer")
    verdict = "" if gold is None or letter is None else (" [green]✓[/]" if gold == letter else " [red]✗[/]")
    tags = " · ".join(f"{v}" for v in view.tags.values())
    head = (f"[bold]{escape(view.qid)}[/]{' · ' + escape(tags) if tags else ''} · answer [bold]{letter or '-'}[/]"
            f"{' · gold ' + gold if gold else ''}{verdict} · {view.seconds:.2f}s  [dim]{view.run}[/]")
    tree = Tree(head)
    if q:
        tree.add(escape(q.get("text", "")) + "  " + "  ".join(f"{k}. {escape(v)}" for k, v in
                                                                q.get("options", {}).items()), style="italic")
    t0 = view.start

    def line(e: TraceEvent, what: str) -> str:
        error = e.error or "failed"
        status = "" if e.ok else f"  [red]{escape(error if len(error) <= 240 else error[:237] + '...')}[/]"
        return f"[cyan]{e.label}[/]  [dim]+{e.start - t0:.2f}s[/] {e.seconds:.2f}s  {what}{status}"

    route_branch = tree
    for e in view.events:
        if e.kind == "node" and e.node == "load_image":
            o = e.outputs
            what = f"{Path(str(e.inputs.get('path', ''))).name} {o.get('original_size')} → {o.get('size')}" if o.get(
                "size") else ""
            tree.add(line(e, escape(what)))
        elif e.kind == "node" and e.node == "route":
            o = e.outputs
            skipped = "".join(f"  [yellow]{t} skipped[/]" for t in o.get("skipped", {}))
            route_branch = tree.add(line(e, f"tools: [bold]{', '.join(o.get('run', [])) or 'none'}[/] "
                                            f"(by {o.get('method', '?')}){skipped}"))
        elif e.kind == "node" and e.node == "run_tool":
            tag = "[magenta]cached[/] · " if e.cached else ""
            route_branch.add(line(e, tag + escape(_tool_summary(e)) if e.ok else ""))
        elif e.kind == "node" and e.node == "reason":
            o = e.outputs
            node = tree.add(line(e, f"{o.get('method', '')}  {_probs_text(o.get('probs', {}))}"
                                    + (f"  [yellow]{', '.join(o.get('flags', []))}[/]" if o.get("flags") else "")))
            if o.get("prompt"):
                node.add(f"[dim]prompt: {len(o['prompt'])} chars: {escape(o['prompt'][:100])!s}…[/]")
        elif e.kind == "rotations":
            for r in e.outputs.get("rotations", []):
                tree.add(f"[cyan]rotation {r['shift']}[/]  order {''.join(r['order'])} → chose "
                         f"{r['chosen']}  {_probs_text(r['probs'])}")
        elif e.kind == "node" and e.node == "finish":
            tree.add(line(e, f"answer [bold]{a.get('answer')}[/] ({a.get('method')})"))
        elif e.kind == "error":
            tree.add(f"[red]error: {escape(e.error or '')}[/]")
        elif e.kind == "node":
            tree.add(line(e, ""))
    return tree
