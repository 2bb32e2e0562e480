"""Running questions through the graph: one (``ask``) or many, resumably (``batch``).

A run directory keeps ``results.jsonl`` (one ``Answer`` per finished question,
written through as each finishes, fsynced at most once a second and at the end: a killed process loses none,
a machine crash at most the last second's, answered again on resume), ``failed.csv`` (rows that got a fallback
answer, with the reason), ``artifacts/<id>/`` (images the tools made) and
``trace.jsonl`` (every node of every attempt, appended as it finishes; see
``agent.trace.events``). A rerun with the same directory skips finished ids; failed rows, and rows answered while
a tool timed out or the run was stopped (``Answer.incomplete``), are answered again (the tool cache keeps what
did succeed); a tool that is unavailable (weights missing) is not retried.
"""

from __future__ import annotations

import csv
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from agent.batching import BatchingReasoner
from agent.calibration import adjusted
from agent.core.fileio import JsonlLog, atomic_open
from agent.core.probs import one_hot
from agent.core.redact import redact, redact_deep
from agent.core.schema import Answer, Question, brief_error
from agent.data import RowError, fallback_letter, spreadsheet_cell, write_submission
from agent.graph import build_graph, final_answer
from agent.services import Services
from agent.trace.events import TRACE_FILE, TraceWriter

TOOL_FAILURES = "tool_failures.csv"


class ResultsLog:
    """Append-only JSONL of ``Answer`` records, each written through to the operating system as it is appended
    and fsynced at most every ``sync_every`` seconds (``sync()`` at the end of a run): a killed process loses no
    record, a machine crash at most the last interval's, whose questions are answered again on resume. A torn last
    line (a kill mid-write) is dropped. A damaged line elsewhere (edited by hand, a disk error) is skipped and
    counted in ``damaged``: its question is simply answered again."""

    def __init__(self, path: Path, sync_every: float = 1.0) -> None:
        self._log = JsonlLog(path, sync_every=sync_every)
        self.path = self._log.path
        self.damaged: list[int] = []  # records (1-based, blank lines not counted) that are not an answer

    def load(self) -> dict[str, Answer]:
        out: dict[str, Answer] = {}
        self.damaged = []
        for n, line in enumerate(self._log.lines(), 1):
            try:
                a = Answer.model_validate_json(line)
            except ValueError:  # pydantic's ValidationError is a ValueError
                self.damaged.append(n)
                continue
            out[a.id] = a
        return out

    def append(self, answer: Answer) -> None:
        self._log.append(redact(answer.model_dump_json()))

    def sync(self) -> None:
        self._log.sync()


@dataclass
class BatchSummary:
    rows: int
    answered: int  # answered by the reasoner in this run or an earlier one
    failed: int  # got a fallback answer (listed in failed.csv)
    skipped: int  # already finished in an earlier run
    seconds: float
    new: int  # answered in this run
    no_evidence: int = 0  # answered with uniform probabilities: the evidence reasoner had nothing to go on
    incomplete: int = 0  # answered while a tool timed out or was stopped: a rerun answers them again
    retried: int = 0  # rows an earlier run left incomplete, answered again in this run
    interrupted: bool = False  # stopped (Ctrl-C) before every row was answered: no submission was written
    unanswered: int = 0  # rows left for the resume
    batch_sizes: list[int] = field(default_factory=list)
    tool_failures: dict[str, int] = field(default_factory=dict)  # per tool: questions answered while it failed
    tool_errors: dict[str, str] = field(default_factory=dict)  # per tool: its most common error
    damaged_lines: list[int] = field(default_factory=list)  # results.jsonl lines skipped (their rows answered again)
    answers: list[Answer] = field(default_factory=list, repr=False)  # one per input row, in order (the submission's)

    @property
    def seconds_per_question(self) -> float:
        return self.seconds / self.new if self.new else 0.0


def ask(services: Services, question: Question, *, forced_tools: list[str] | None = None,
        history: list[tuple[str, str]] | None = None, graph=None, trace: TraceWriter | None = None,
        on_step: Callable[[str, dict], None] | None = None) -> Answer:
    """Answer one question (the graph never raises for bad images or failing tools); with ``trace``, each node's
    event is appended as the node finishes; ``on_step(node, update)`` is called as each node finishes."""
    graph = graph or build_graph()
    inputs = {"question": question, "forced_tools": forced_tools, "history": history or [], "results": [],
              "steps": [], "errors": []}
    if trace is None and on_step is None:
        return final_answer(graph.invoke(inputs, context=services))
    qt = trace.question(question, forced_tools=forced_tools, reasoner=getattr(services.reasoner, "name", None)) \
        if trace is not None else None
    state: dict = {}
    try:
        for mode, chunk in graph.stream(inputs, context=services, stream_mode=["updates", "values"]):
            if mode == "updates":
                if qt is not None:
                    qt.update(chunk)
                if on_step is not None:
                    for node, update in chunk.items():
                        on_step(node, update if isinstance(update, dict) else {})
            else:
                state = chunk
    except BaseException as exc:
        if qt is not None:
            qt.error(f"internal error: {type(exc).__name__}: {exc}")
        raise
    finally:
        if qt is not None:
            qt.close()
    return final_answer(state)


def fallback_answer(row: Question | RowError, reason: str) -> Answer:
    if isinstance(row, RowError):
        return Answer(id=row.id, answer=fallback_letter(["a"]), probs={"a": 1.0}, method="fallback", tools=[],
                      evidence=[], timings={}, errors=[f"{row.reason}: {row.message}"], question="", options={})
    letter = fallback_letter(row.letters)
    return Answer(id=row.id, answer=letter, probs=one_hot(letter, row.letters), method="fallback",
                  tools=[], evidence=[], timings={}, errors=[reason], question=row.text, options=row.options)


@dataclass(frozen=True)
class Job:
    """What one ``run_batch`` asks of its executor besides the questions."""

    trace: TraceWriter
    forced_tools: list[str] | None = None
    batch_size: int = 8
    debias: bool = False
    temperature: float | None = None
    stop: threading.Event | None = None  # set: start no more questions, cancel running tool calls


class RowExecutor(Protocol):
    """Where ``run_batch`` gets its questions answered: ``LocalExecutor`` (threads in this process, the default) or
    ``agent.distributed.RayExecutor`` (Ray workers). ``run`` hands every question's ``Answer`` to ``on_answer``
    exactly once (from any thread) and returns the batch sizes the reasoner was sent; the caller alone writes the
    run directory."""

    def run(self, todo: list[Question], services: Services, job: Job,
            on_answer: Callable[[Answer], None]) -> list[int]: ...

    def describe(self) -> str:
        """One line for the user on where the questions ran."""
        ...


class LocalExecutor:
    """Questions run their graphs on threads of this process; their reasoner calls meet in one ``BatchingReasoner``."""

    def describe(self) -> str:
        return "answered in this process"

    def run(self, todo: list[Question], services: Services, job: Job,
            on_answer: Callable[[Answer], None]) -> list[int]:
        batcher = BatchingReasoner(adjusted(services.reasoner, debias=job.debias, temperature=job.temperature,
                                            on_rotations=job.trace.rotations), job.batch_size)
        services = services.replace(reasoner=batcher, executor=None)
        if job.stop is not None:
            services = services.replace(pool=services.pool.stopping(job.stop))
        graph = build_graph()

        def work(q: Question) -> None:
            if job.stop is not None and job.stop.is_set():  # stopping: not started, left for the resume
                batcher.leave(q.id)
                return
            try:
                a = ask(services, q, forced_tools=job.forced_tools, graph=graph, trace=job.trace)
            except Exception as exc:  # noqa: BLE001 - one broken question must not stop the batch
                a = fallback_answer(q, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                batcher.leave(q.id)
            on_answer(a)

        for q in todo:  # announced up front, so a batch waits for questions queued behind it, never for ghosts
            batcher.enter(q.id)
        pool = ThreadPoolExecutor(max_workers=max(job.batch_size, batcher.max_inflight), thread_name_prefix="question")
        futures = [pool.submit(work, q) for q in todo]
        try:
            for f in futures:
                f.result()
        except BaseException:  # Ctrl-C: drop queued questions, let running ones finish and be logged
            for q, f in zip(todo, futures):
                if f.cancel():
                    batcher.leave(q.id)
            raise
        finally:
            pool.shutdown(wait=True)
        return batcher.batch_sizes


def run_batch(rows: list[Question | RowError], services: Services, run_dir: Path, *, batch_size: int = 8,
              forced_tools: list[str] | None = None, out: Path | None = None,
              on_done: Callable[[Answer], None] | None = None, trace: TraceWriter | None = None,
              debias: bool = False, temperature: float | None = None,
              stop: threading.Event | None = None) -> BatchSummary:
    """Answer every row not yet finished in ``run_dir``; write the submission (one row per input row) to ``out``.

    ``trace``: where node events go (default ``run_dir/trace.jsonl`` without export sinks; the command line passes
    one with ``agent.trace.export.sinks_from_env()``). ``debias``: average the probabilities over
    every rotation of the options; ``temperature``: apply a fitted temperature (``agent.calibration``).
    ``on_done``: called once per input row with its answer: bad rows and rows finished in an earlier run first.
    Questions are answered by ``services.executor`` (default: ``LocalExecutor``); only this function writes
    ``run_dir``'s logs. ``stop`` (Ctrl-C): once set, no more questions start and running tool calls are cancelled
    (those questions are recorded incomplete); the submission is written only when every row is done, and the
    summary says ``interrupted``.
    """
    log = ResultsLog(run_dir / "results.jsonl")
    done = log.load()
    earlier = {k: a for k, a in done.items() if a.incomplete}  # answered again; kept if this run gets no further
    done = {k: a for k, a in done.items() if not a.incomplete}
    trace = trace if trace is not None else TraceWriter(run_dir / TRACE_FILE)
    todo = [r for r in rows if isinstance(r, Question) and r.id not in done]
    if forced_tools is None:  # routing's e5 stage embeds these a chunk per call
        services.router.expect([q.text for q in todo])
    failures: dict[str, Answer] = {}  # questions that got a fallback in this run (RowErrors are handled per row)
    lock = threading.Lock()

    def settle(a: Answer) -> None:
        with lock:
            if a.failed:
                failures[a.id] = a
            else:
                log.append(a)
                done[a.id] = a
        if on_done:
            on_done(a)

    for r in rows:
        if isinstance(r, RowError):
            trace.row_error(r.id or f"line {r.line}", f"{r.reason}: {r.message}")
        if on_done and (isinstance(r, RowError) or r.id in done):  # settled already: a progress bar counts them
            on_done(_final(r, done, failures))
    t0 = time.perf_counter()
    executor: RowExecutor = services.executor or LocalExecutor()
    try:
        batch_sizes = executor.run(todo, services, Job(trace=trace, forced_tools=forced_tools, batch_size=batch_size,
                                                       debias=debias, temperature=temperature, stop=stop),
                                   settle)
    finally:  # the logs sync at most once a second while answering (agent.core.fileio): once more now
        log.sync()
        trace.sync()
    seconds = time.perf_counter() - t0
    final = [_final(r, {**earlier, **done}, failures) for r in rows]
    unanswered = sum(isinstance(r, Question) and r.id not in done and r.id not in failures for r in rows)
    interrupted = bool(stop is not None and stop.is_set() and unanswered)
    if interrupted:  # what is done is in results.jsonl; a submission of guesses for the rest would mislead
        return BatchSummary(rows=len(rows), answered=len(done), failed=len(failures), skipped=len(rows) - len(todo) - sum(
            isinstance(r, RowError) for r in rows), seconds=seconds, new=len(todo) - len(failures) - unanswered,
            incomplete=sum(a.incomplete for a in done.values()), interrupted=True, unanswered=unanswered,
            damaged_lines=log.damaged)
    _write_failures(run_dir / "failed.csv", rows, final)
    failures_by_tool, errors_by_tool = tool_failures(final)
    _write_tool_failures(run_dir / TOOL_FAILURES, final)
    if out is not None:
        write_submission(out, [(a.id, a.answer) for a in final])
    return BatchSummary(rows=len(rows), answered=sum(not a.failed for a in final),
                        failed=sum(a.failed for a in final), skipped=len(rows) - len(todo) - sum(
                            isinstance(r, RowError) for r in rows), seconds=seconds, new=len(todo) - len(failures),
                        batch_sizes=batch_sizes,
                        no_evidence=sum("no_evidence" in a.flags for a in final),
                        incomplete=sum(a.incomplete for a in final), retried=sum(r.id in earlier for r in todo),
                        tool_failures=failures_by_tool,
                        tool_errors=errors_by_tool, damaged_lines=log.damaged, answers=final)


def tool_failures(answers: list[Answer]) -> tuple[dict[str, int], dict[str, str]]:
    """Per tool: how many questions were answered without it (it failed, or was skipped as unavailable after its
    load failed), and its most common error."""
    counts: Counter[str] = Counter()
    errors: dict[str, Counter[str]] = {}
    for a in answers:
        missed = [(r.tool, r.error or "failed") for r in a.evidence if not r.ok]
        missed += [(t, why) for t, why in (a.route.skipped.items() if a.route else ()) if why.startswith("unavailable")]
        for tool, why in missed:
            counts[tool] += 1
            errors.setdefault(tool, Counter())[why.removeprefix("unavailable: ").removeprefix("ToolUnavailable: ")] += 1
    return dict(counts), {t: c.most_common(1)[0][0] for t, c in errors.items()}


def _final(row: Question | RowError, done: dict[str, Answer], failures: dict[str, Answer]) -> Answer:
    """The answer that goes into the submission for one input row."""
    if isinstance(row, RowError):
        return fallback_answer(row, row.reason)
    return done.get(row.id) or failures.get(row.id) or fallback_answer(row, "not answered")


def _write_tool_failures(path: Path, final: list[Answer]) -> None:
    """``tool_failures.csv``: one row per (question, tool) whose tool failed; the question was still answered."""
    rows = [[a.id, r.tool, r.error or "failed"] for a in final for r in a.evidence if not r.ok]
    rows += [[a.id, t, why] for a in final for t, why in (a.route.skipped.items() if a.route else ())
             if why.startswith("unavailable")]
    told: set[str] = set()  # an unavailable tool's full reason once, on its first row; then one short word
    for row in rows:
        if brief_error(row[2]) != row[2] and row[2].startswith(("ToolUnavailable:", "unavailable")):
            row[2] = row[2] if row[1] not in told else brief_error(row[2])
            told.add(row[1])
    if not rows:
        path.unlink(missing_ok=True)
        return
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "tool", "error"])
        w.writerows([spreadsheet_cell(redact_deep(c)) for c in row] for row in rows)


def _write_failures(path: Path, rows: list[Question | RowError], final: list[Answer]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "line", "reason", "fallback_answer"])
        for r, a in zip(rows, final):
            if a.failed:
                w.writerow([spreadsheet_cell(redact_deep(c)) for c in (r.id, r.line, "; ".join(a.errors), a.answer)])
