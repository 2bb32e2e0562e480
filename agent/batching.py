"""Dynamic batching: questions run their graphs concurrently; their reasoner calls meet here.

The runner announces each question (``enter``) and retires it (``leave``).
A batch goes to the backend as soon as it is full, or when every announced
question that has not yet asked is gone (failed early or finished) — so
nobody waits for a request that will never come, and batch composition does
not change results (backends score padded batches exactly).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Sequence

from agent.reasoners.base import Reasoner, ReasonRequest
from agent.schema import Decision


class BatchingReasoner:
    """Wraps a backend with the same ``decide`` contract; ``batch_sizes`` records what was sent."""

    def __init__(self, backend: Reasoner, max_batch: int) -> None:
        self.backend = backend
        self.name = backend.name
        self.max_batch = max(1, max_batch)
        self.batch_sizes: list[int] = []
        self._cv = threading.Condition()
        self._expecting: set[str] = set()
        self._queue: list[tuple[ReasonRequest, Future]] = []
        self._flushing = False

    def load(self) -> None:
        self.backend.load()

    def close(self) -> None:
        """Closes the backend: only for an owner that wrapped its own backend."""
        self.backend.close()

    def enter(self, qid: str) -> None:
        with self._cv:
            self._expecting.add(qid)

    def leave(self, qid: str) -> None:
        with self._cv:
            self._expecting.discard(qid)
            self._cv.notify_all()

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        futures = []
        with self._cv:
            for req in batch:
                fut: Future = Future()
                self._queue.append((req, fut))
                self._expecting.discard(req.question.id)
                futures.append(fut)
            self._cv.notify_all()
        for fut in futures:
            self._wait(fut)
        return [f.result() for f in futures]

    def _ready(self) -> bool:
        return bool(self._queue) and not self._flushing and (
            len(self._queue) >= self.max_batch or not self._expecting)

    def _wait(self, fut: Future) -> None:
        while not fut.done():
            with self._cv:
                if fut.done():
                    return
                if not self._ready():
                    self._cv.wait(timeout=1.0)
                    continue
                taken, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._flushing = True
            try:
                self._run(taken)
            finally:
                with self._cv:
                    self._flushing = False
                    self._cv.notify_all()

    def _run(self, taken: list[tuple[ReasonRequest, Future]]) -> None:
        self.batch_sizes.append(len(taken))
        try:
            decisions = self.backend.decide([req for req, _ in taken])
        except Exception as exc:  # noqa: BLE001 - delivered to every waiting question
            for _, fut in taken:
                fut.set_exception(exc)
            return
        for (_, fut), d in zip(taken, decisions, strict=True):
            fut.set_result(d)
