"""Ranking candidate answers through the graph, one round at a time, and the resumable VisDial run.

A round becomes an open ``Question`` (the round's question, no options) run through ``agent.graph``: the image
is loaded, the router picks the tools, they run, and the reason node asks ``RankReasoner``, which scores the
round's candidates with the backend's ``CandidateScorer`` (the request carries the tools' results, the photo,
the marked images and the history; the caption and the candidates come from the round). Its ``RankDecision``
keeps both scores of every candidate; the trace's reason event shows the top candidates with their scores.

``run_visdial`` ranks every round not yet in ``RUN/rounds.jsonl`` (one ``RankRecord`` per ranked round, written
as it finishes: a killed run resumes where it stopped; records of another reasoner are ranked again), then writes
``RUN/ranks.json`` (the challenge's submission format: ``image_id``, ``round_id``, ``ranks`` with 1 = best),
``RUN/metrics.json`` and ``RUN/failed.json`` (rounds without a ranking: a missing photo, a failed reasoner; they
are tried again on the next run).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pydantic import BaseModel

from agent.core.errors import ConfigError
from agent.core.fileio import JsonlLog, atomic_write
from agent.core.schema import Decision, Question
from agent.reasoners.base import ReasonRequest
from agent.services import Services
from agent.trace.events import TRACE_FILE, TraceWriter
from agent.visdial import prompt
from agent.visdial.data import DialogRound
from agent.visdial.metrics import scores_to_ranks, visdial_metrics
from agent.visdial.registry import scorer_for
from agent.visdial.scorers import CandidateScorer, RankContext, RankScore, top_candidates

TOP_IN_TRACE = 5


@dataclass(frozen=True)
class RankTask:
    """Candidates to rank for one question about one photo (``history``: earlier question-answer rounds)."""

    id: str
    image: Path | None
    question: str
    candidates: tuple[str, ...]
    caption: str = ""
    history: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_round(cls, r: DialogRound) -> RankTask:
        return cls(id=r.id, image=r.image, question=r.question, candidates=r.options, caption=r.caption,
                   history=r.history)


class RankDecision(Decision):
    """A ``Decision`` over free-form candidates: both scores of each (no per-letter probabilities)."""

    sums: list[float]
    means: list[float]
    tiebreak: list[float] | None = None
    rank_score: RankScore

    @property
    def scores(self) -> list[float]:
        return self.means if self.rank_score == "mean" else self.sums


class RankReasoner:
    """The reasoner the graph sees while ranking: scores the candidates of each request's task with ``scorer``.
    Loading and closing belong to the backend the scorer wraps (its owner, the ``Orchestrator``)."""

    def __init__(self, scorer: CandidateScorer, tasks: Mapping[str, RankTask], rank_score: RankScore = "mean"):
        self.scorer, self.tasks, self.rank_score = scorer, tasks, rank_score
        self.name = f"rank:{scorer.name}"
        self.fatal: ConfigError | None = None  # the backend cannot rank at all (e.g. no prompt_logprobs)

    def load(self) -> None:
        """The wrapped backend is loaded by its owner."""

    def close(self) -> None:
        """The wrapped backend is closed by its owner."""

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        out: list[Decision] = []
        for req in batch:
            task = self.tasks[req.question.id]
            try:
                s = self.scorer.score(req, RankContext(candidates=task.candidates, caption=task.caption))
            except ConfigError as exc:
                self.fatal = exc
                raise
            scores = s.by(self.rank_score)
            top = top_candidates(task.candidates, scores, TOP_IN_TRACE, s.tiebreak)
            out.append(RankDecision(
                probs={}, method=s.method, prompt=s.prompt, flags=s.flags, text=top[0]["text"] if top else None,
                raw="top: " + "; ".join(f"{t['text']!r} {t['score']:.4g}" for t in top),
                template=prompt.template_id(), reasoner=self.scorer.fingerprint, sums=s.sum, means=s.mean,
                tiebreak=s.tiebreak, rank_score=self.rank_score))
        return out


class RankRecord(BaseModel):
    """One ranked task: what ``rounds.jsonl`` keeps (both scores, so either ``--rank-score`` can be written)."""

    id: str
    image_id: int | None = None
    round_id: int | None = None
    gt_index: int | None = None
    candidates: list[str] = []
    sums: list[float]
    means: list[float]
    tiebreak: list[float] | None = None
    method: str
    flags: list[str] = []
    tools: list[str] = []
    reasoner: str | None = None
    template: str | None = None
    seconds: float = 0.0

    def scores(self, rank_score: RankScore) -> list[float]:
        return self.means if rank_score == "mean" else self.sums

    def ranks(self, rank_score: RankScore) -> list[int]:
        return scores_to_ranks(self.scores(rank_score), self.tiebreak)

    def top(self, rank_score: RankScore, n: int = 10) -> list[dict[str, Any]]:
        return top_candidates(self.candidates, self.scores(rank_score), n, self.tiebreak)


class RankFailure(Exception):
    """A task got no ranking (its photo failed to load, the reasoner failed); the message says why."""


class Ranker:
    """Ranks tasks through the graph with the services' reasoner (its candidate scorer)."""

    def __init__(self, services: Services, *, rank_score: RankScore = "mean", forced_tools: list[str] | None = None,
                 trace: TraceWriter | None = None) -> None:
        from agent.graph import build_graph

        self.services, self.rank_score, self.forced_tools, self.trace = services, rank_score, forced_tools, trace
        self.scorer = scorer_for(services.reasoner)
        self.graph = build_graph()

    def rank(self, task: RankTask) -> RankRecord:
        """Rank one task; raises ``RankFailure`` when it gets no ranking, ``ConfigError`` when the backend cannot
        rank at all."""
        t0 = time.perf_counter()
        reasoner = RankReasoner(self.scorer, {task.id: task}, self.rank_score)
        services = self.services.replace(reasoner=reasoner)
        q = Question(id=task.id, image=task.image, text=task.question, options={})
        state = self._run(services, q, list(task.history))
        if reasoner.fatal is not None:  # no later task could be ranked either: stop with its one line
            raise reasoner.fatal
        d = state.get("decision")
        if not isinstance(d, RankDecision):
            raise RankFailure("; ".join(state.get("errors", [])) or "the reasoner gave no ranking")
        return RankRecord(id=task.id, candidates=list(task.candidates), sums=d.sums, means=d.means,
                          tiebreak=d.tiebreak, method=d.method,
                          flags=d.flags, tools=[r.tool for r in state.get("results", [])], reasoner=d.reasoner,
                          template=d.template, seconds=round(time.perf_counter() - t0, 4))

    def _run(self, services: Services, q: Question, history: list[tuple[str, str]]) -> dict:
        inputs = {"question": q, "forced_tools": self.forced_tools, "history": history, "results": [], "steps": [],
                  "errors": []}
        if self.trace is None:
            return self.graph.invoke(inputs, context=services)
        qt = self.trace.question(q, forced_tools=self.forced_tools, reasoner=services.reasoner.name)
        state: dict = {}
        try:
            for mode, chunk in self.graph.stream(inputs, context=services, stream_mode=["updates", "values"]):
                if mode == "updates":
                    qt.update(chunk)
                else:
                    state = chunk
        except BaseException as exc:
            qt.error(f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            qt.close()
        return state


def _load_records(log: JsonlLog, fingerprint: str) -> dict[str, RankRecord]:
    out: dict[str, RankRecord] = {}
    for line in log.lines():
        try:
            rec = RankRecord.model_validate_json(line)
        except ValueError:
            continue  # a damaged line: its round is ranked again
        if rec.reasoner == fingerprint:
            out[rec.id] = rec
    return out


def run_visdial(rounds: Sequence[DialogRound], services: Services, run_dir: Path, *,
                dense: dict[tuple[int, int], list[float]] | None = None, rank_score: RankScore = "mean",
                limit: int | None = None, forced_tools: list[str] | None = None, trace: TraceWriter | None = None,
                on_done: Callable[[DialogRound, RankRecord | None], None] | None = None) -> dict[str, Any]:
    """Rank every round (the first ``limit``) not yet ranked in ``run_dir``; write ranks.json, metrics.json and
    failed.json; return the metrics."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rounds = list(rounds)[:limit] if limit is not None else list(rounds)
    ranker = Ranker(services, rank_score=rank_score, forced_tools=forced_tools,
                    trace=trace if trace is not None else TraceWriter(run_dir / TRACE_FILE))
    log = JsonlLog(run_dir / "rounds.jsonl", sync_every=1.0)
    done = _load_records(log, ranker.scorer.fingerprint)
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    try:
        for r in rounds:
            rec = done.get(r.id)
            if rec is None:
                try:
                    if r.image is None:
                        raise RankFailure(f"no photo for image_id {r.image_id} in --images (expected "
                                          f"*_{r.image_id:012d}.jpg or {r.image_id}.jpg/.png)")
                    rec = ranker.rank(RankTask.from_round(r)).model_copy(
                        update={"image_id": r.image_id, "round_id": r.round_id, "gt_index": r.gt_index})
                except RankFailure as exc:
                    failed[r.id] = str(exc)
                else:
                    log.append(rec.model_dump_json())
                    done[r.id] = rec
            if on_done:
                on_done(r, rec)
    finally:
        log.sync()
        ranker.trace.sync()
    records = [done[r.id] for r in rounds if r.id in done]
    ranks = [{"image_id": rec.image_id, "round_id": rec.round_id, "ranks": rec.ranks(rank_score)} for rec in records]
    atomic_write(run_dir / "ranks.json", json.dumps(ranks))
    metrics = visdial_metrics([{**k, "gt_index": rec.gt_index} for k, rec in zip(ranks, records)], dense)
    metrics.update(failed=len(failed), rank_score=rank_score, reasoner=ranker.scorer.fingerprint,
                   seconds=round(time.perf_counter() - t0, 3),
                   s_per_round=round(sum(rec.seconds for rec in records) / len(records), 4) if records else 0.0)
    atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    by_id = {r.id: r for r in rounds}
    atomic_write(run_dir / "failed.json", json.dumps(
        [{"image_id": by_id[i].image_id, "round_id": by_id[i].round_id, "error": e} for i, e in failed.items()],
        indent=2))
    return metrics
