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
- ``node``: one graph node run (``node``: load_image, route, run_tool, reason, escalate, finish; ``tool`` for run_tool),
  ``start``/``end`` wall-clock seconds, ``ok``/``error``, summarised ``inputs`` and ``outputs``: the working
  image is saved once as ``images/<sha256[:16]>.jpg`` beside the trace and referenced, never inlined;
  run_tool outputs are the ``ToolResult`` (``cached`` is lifted to the event); reason outputs carry the exact
  ``prompt`` sent to the model, the per-option ``probs`` and the planner ``round`` it closes (``Round``); escalate
  outputs why and the tools it adds; finish outputs the answer, the gold letter and every round.
- ``rotations``: option-order debiasing / circular evaluation, one record per rotation (probabilities mapped
  back to the original letters, the letter chosen in the rotated order, the prompt).
- ``error``: the question failed outside any node (a bad CSV row, an internal error).

Paths in events are relative to the trace's folder when they lie inside it. ``tags`` carries e.g. the
ablation arm. Export to OpenTelemetry is opt-in (``VQA_TRACE_EXPORT=otel``; ``agent.trace.export``).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.core.errors import VqaError
from agent.core.fileio import JsonlLog, atomic_open
from agent.core.redact import redact
from agent.core.schema import Question, ToolResult

TRACE_VERSION = 1
TRACE_FILE = "trace.jsonl"
SYNC_EVERY = 1.0  # seconds between fsyncs: a machine crash loses at most this much of the trace
IMAGE_SIDE = 1280  # longest side of the image copies the trace keeps (overlays use the working image's pixels)

Kind = Literal["question", "node", "rotations", "error"]


class TraceEvent(BaseModel):
    """One line of ``trace.jsonl``."""

    v: int = TRACE_VERSION
    run: str  # one id per invocation (a ``vqa batch`` or ``vqa eval`` call)
    qid: str
    seq: int  # order of the event within its (run, tags, qid)
    kind: Kind
    node: str | None = None  # load_image, route, run_tool, reason, escalate, finish
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

    def tool_result(self) -> ToolResult | None:
        """A run_tool event's ``ToolResult`` (its evidence typed), or ``None`` when it does not validate."""
        try:
            return ToolResult.model_validate({**self.outputs, "settings": self.inputs.get("settings", {})})
        except ValueError:
            return None


class TraceError(VqaError):
    """A trace file is missing, or written by a newer version."""


Sink = Callable[[TraceEvent], None]


@dataclass
class _Shared:
    log: JsonlLog
    run: str
    sinks: list[Sink]
    lock: threading.Lock = field(default_factory=threading.Lock)
    open: dict[tuple[tuple[tuple[str, str], ...], str], QuestionTrace] = field(default_factory=dict)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class TraceWriter:
    """Appends events to ``path`` (written through per event; fsynced when a question closes if the last fsync is
    ``SYNC_EVERY`` seconds old, and by ``sync()``); safe across threads.

    ``tagged(arm=...)`` gives a view that writes to the same file with extra tags.
    """

    def __init__(self, path: Path, *, run: str | None = None, tags: dict[str, str] | None = None,
                 sinks: list[Sink] | None = None, log: JsonlLog | None = None, _shared: _Shared | None = None) -> None:
        if _shared is None:  # log: where the lines go instead of ``path`` (paths and images stay beside ``path``)
            _shared = _Shared(log=log or JsonlLog(path, sync_every=SYNC_EVERY), run=run or new_run_id(),
                              sinks=list(sinks or []))
        self._s = _shared
        self.tags = dict(tags or {})

    @property
    def path(self) -> Path:
        return self._s.log.path

    @property
    def run(self) -> str:
        return self._s.run

    @property
    def images_dir(self) -> Path:
        return self.path.parent / "images"

    def sync(self) -> None:
        """fsync every event written so far (the end of a run)."""
        self._s.log.sync()

    def tagged(self, **tags: str) -> TraceWriter:
        return TraceWriter(self.path, tags={**self.tags, **tags}, _shared=self._s)

    def emit(self, event: TraceEvent, *, sync: bool = False) -> None:
        line = event.model_dump_json()
        if (safe := redact(line)) != line:  # no secret in the trace or its exports (agent.core.redact)
            line, event = safe, TraceEvent.model_validate_json(safe)
        self._s.log.append(line, sync=sync)
        for sink in self._s.sinks:
            sink(event)

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the trace's folder when inside it, else absolute."""
        p = Path(path).resolve()
        try:
            return p.relative_to(self.path.parent.resolve()).as_posix()
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
                inputs, outputs, cached = self._summarise(step.node, step.tool, upd, step.detail)
                self.write("node", node=step.node, tool=step.tool, start=step.started,
                           end=step.started + step.seconds, ok=step.ok, error=step.error, cached=cached,
                           inputs=inputs, outputs=outputs)
                if step.node == "vlm_plan":  # the tools the model called: events like run_tool's (spans, boxes,
                    self._tool_calls(step.started, upd.get("results") or [])  # errors on the trace page)

    def _tool_calls(self, start: float, results: list[Any]) -> None:
        for r in results:
            out = r.model_dump(mode="json", exclude={"settings"})
            out["artifacts"] = {k: self.writer.relative(v) for k, v in r.artifacts.items()}
            self.write("node", node="run_tool", tool=r.tool, start=start, end=start + r.seconds, ok=r.ok,
                       error=r.error, cached=r.cached, outputs=out,
                       inputs={"tool": r.tool, "image_sha256": self._image_sha, "settings": r.settings,
                               "planner": "vlm"})

    def _summarise(self, node: str, tool: str | None, upd: dict[str, Any],
                   detail: dict[str, Any]) -> tuple[dict, dict, bool | None]:
        if node == "load_image":
            img = upd.get("image")
            if img is None:
                return {}, dict(detail), None
            self._image_sha = img.sha256
            return ({"path": str(img.path)},
                    {"sha256": img.sha256, "size": list(img.image.size), "original_size": list(img.original_size),
                     "file": self._save_image(img)}, None)
        if node == "route" and upd.get("route") is not None:
            return {}, upd["route"].model_dump(mode="json"), None
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
                        "text": getattr(d, "text", None), "template": d.template, "reasoner": d.reasoner,
                        "round": upd["rounds"][-1].model_dump(mode="json") if upd.get("rounds") else None}, None
        if node == "finish" and upd.get("answer") is not None:
            a = upd["answer"]
            return {}, {"answer": a.answer, "method": a.method, "probs": a.probs, "gold": a.gold,
                        "text": getattr(a, "text", None), "errors": a.errors,
                        "rounds": [r.model_dump(mode="json") for r in a.rounds]}, None
        return {}, dict(detail), None

    def _save_image(self, img: Any) -> str:
        """The working image, saved once per content as a JPEG no larger than ``IMAGE_SIDE``."""
        d = self.writer.images_dir
        path = d / f"{img.sha256[:16]}.jpg"
        if not path.exists():
            d.mkdir(parents=True, exist_ok=True)
            im = img.image.copy()
            im.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
            with atomic_open(path, "wb") as f:
                im.convert("RGB").save(f, format="JPEG", quality=88)
        return self.writer.relative(path)

    def rotations(self, records: list[dict[str, Any]], start: float, end: float) -> None:
        self.write("rotations", start=start, end=end, outputs={"rotations": records})

    def error(self, message: str) -> None:
        now = time.time()
        self.write("error", start=now, end=now, ok=False, error=message)

    def close(self) -> None:
        """The question is over: its events are fsynced, at most once per ``SYNC_EVERY`` seconds."""
        self.writer._s.log.sync(when_due=True)
        self.writer._close(self.qid)

