"""Dynamic batching: questions run their graphs concurrently; their reasoner calls meet here.

The runner announces each question (``enter``) and retires it (``leave``).
A batch goes to the backend as soon as it is full, or when every announced
question that has not yet asked is gone (failed early or finished) — so
nobody waits for a request that will never come, and batch composition does
not change results (backends score padded batches exactly). A request never waits more than ``max_wait`` seconds
for its batch to fill: when tools queue for the machine, questions reach the reasoner one by one, and a finished
question must not wait for the slowest of its batch before it is answered and written.

A backend that serves concurrent calls (a server: ``concurrent_batches`` > 1) gets up to that many batches in
flight, each sent as soon as a slot is free; the in-process model takes one batch at a time.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Sequence

from agent.core.schema import Decision
from agent.reasoners.base import Reasoner, ReasonRequest


class BatchingReasoner:
    """Wraps a backend with the same ``decide`` contract; ``batch_sizes`` records what was sent."""

    def __init__(self, backend: Reasoner, max_batch: int, max_wait: float = 1.0) -> None:
        self.backend = backend
        self.max_wait = max_wait  # seconds a queued request waits for its batch to fill
        self.name = backend.name
        self.max_batch = max(1, max_batch)
        self.max_inflight = max(1, int(getattr(backend, "concurrent_batches", 1)))
        self.batch_sizes: list[int] = []
        self._cv = threading.Condition()
        self._expecting: set[str] = set()
        self._queue: list[tuple[ReasonRequest, Future]] = []
        self._since = 0.0  # when the oldest queued request arrived
        self._inflight = 0

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
            if not self._queue:
                self._since = time.monotonic()
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
        """A batch may go: a slot is free, and the batch is full, nobody else is coming, the oldest request has
        waited ``max_wait``, or the backend takes concurrent batches (then waiting to fill one only adds latency)."""
        return bool(self._queue) and self._inflight < self.max_inflight and (
            len(self._queue) >= self.max_batch or not self._expecting or self.max_inflight > 1
            or time.monotonic() - self._since >= self.max_wait)

    def _wait(self, fut: Future) -> None:
        while not fut.done():
            with self._cv:
                if fut.done():
                    return
                if not self._ready():
                    self._cv.wait(timeout=max(0.01, min(1.0, self._since + self.max_wait - time.monotonic())))
                    continue
                taken, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._since = time.monotonic()  # the rest (if any) start waiting now
                self._inflight += 1
            try:
                self._run(taken)
            finally:
                with self._cv:
                    self._inflight -= 1
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
