"""Reasoner wrappers that adjust option probabilities: option-order rotation and temperature.

Both keep the ``decide`` contract, so they sit between the batcher and the backend and the graph never knows.

- ``RotatingReasoner`` asks the backend every rotation of each question's options (rotation ``s`` puts the
  original option ``(i + s) mod n`` in position ``i``), with the same image and tool evidence (tools run once),
  maps every answer back to the original letters, and returns either the average over rotations
  (``--debias``, flag ``debiased``) or rotation 0 unchanged (circular evaluation, which only records). One
  backend call per rotation keeps the batch size the backend was given. ``on_rotations(qid, records, start,
  end)`` receives the per-rotation records (for the trace and circular metrics).
- ``TemperatureReasoner`` applies ``softmax(log p / T)`` to every decision (``--temperature``; fit it with
  ``vqa eval``); the chosen letter never changes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.core.probs import apply_temperature, chosen_letter
from agent.core.schema import Decision, Question
from agent.reasoners.base import Reasoner, ReasonRequest

RotationsCallback = Callable[[str, list[dict[str, Any]], float, float], None]


def rotate(question: Question, shift: int) -> Question:
    """The question with its options rotated left by ``shift``; the gold letter follows its option."""
    letters = question.letters
    n = len(letters)
    if n == 0 or shift % n == 0:
        return question
    texts = [question.options[letters[(i + shift) % n]] for i in range(n)]
    answer = None
    if question.answer is not None:
        answer = letters[(letters.index(question.answer) - shift) % n]
    return question.model_copy(update={"options": dict(zip(letters, texts)), "answer": answer})


def unrotate(probs: dict[str, float], letters: Sequence[str], shift: int) -> dict[str, float]:
    """Probabilities of a rotated question, keyed by the original letters."""
    n = len(letters)
    return {letters[k]: probs.get(letters[(k - shift) % n], 0.0) for k in range(n)}


class _Wrapper:
    """A reasoner around ``backend``: loading, closing and how many batches it takes at once are the backend's."""

    backend: Reasoner

    @property
    def concurrent_batches(self) -> int:
        return int(getattr(self.backend, "concurrent_batches", 1))

    def load(self) -> None:
        self.backend.load()

    def close(self) -> None:
        self.backend.close()


class RotatingReasoner(_Wrapper):
    """Decides every rotation of each question's options; ``average=True`` debiases, ``False`` only records."""

    def __init__(self, backend: Reasoner, *, average: bool, on_rotations: RotationsCallback | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        self.average = average
        self.on_rotations = on_rotations

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        t0 = time.time()
        n_max = max((len(r.question.letters) for r in batch), default=0)
        by_request: list[list[tuple[int, Decision]]] = [[] for _ in batch]
        for shift in range(max(n_max, 1)):  # an open question (no options) is asked once, unrotated
            idx = [i for i, r in enumerate(batch) if shift < max(len(r.question.letters), 1)]
            reqs = [dataclasses.replace(batch[i], question=rotate(batch[i].question, shift)) for i in idx]
            for i, d in zip(idx, self.backend.decide(reqs), strict=True):
                by_request[i].append((shift, d))
        t1 = time.time()
        return [self._combine(req, got, t0, t1) if req.question.letters else got[0][1]
                for req, got in zip(batch, by_request)]

    def _combine(self, req: ReasonRequest, got: list[tuple[int, Decision]], t0: float, t1: float) -> Decision:
        letters = req.question.letters
        records, mapped = [], []
        for shift, d in got:
            back = unrotate(d.probs, letters, shift)
            mapped.append(back)
            order = [letters[(i + shift) % len(letters)] for i in range(len(letters))]
            position = chosen_letter(d.probs, letters)  # ties go to the first option in the order shown
            records.append({"shift": shift, "order": order, "probs": back, "chosen_position": position,
                            "chosen": order[letters.index(position)], "method": d.method, "prompt": d.prompt})
        if self.on_rotations is not None:
            self.on_rotations(req.question.id, records, t0, t1)
        first = got[0][1]
        if not self.average:
            return first
        probs = {k: sum(m[k] for m in mapped) / len(mapped) for k in letters}
        return first.model_copy(update={"probs": probs, "flags": [*first.flags, "debiased"]})


class TemperatureReasoner(_Wrapper):
    """Applies a fitted temperature to every decision's probabilities."""

    def __init__(self, backend: Reasoner, temperature: float) -> None:
        if temperature <= 0:
            raise ValueError(f"expected a positive temperature, found {temperature}")
        self.backend = backend
        self.name = backend.name
        self.temperature = temperature

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        out = []
        for d in self.backend.decide(batch):
            out.append(d.model_copy(update={"probs": apply_temperature(d.probs, self.temperature),
                                            "flags": [*d.flags, f"temperature={self.temperature:g}"]}))
        return out


def adjusted(reasoner: Reasoner, *, debias: bool = False, temperature: float | None = None,
             on_rotations: RotationsCallback | None = None) -> Reasoner:
    """The reasoner with debiasing and/or a temperature applied (debias first, so T scales averaged probs)."""
    if debias:
        reasoner = RotatingReasoner(reasoner, average=True, on_rotations=on_rotations)
    if temperature is not None and temperature != 1.0:
        reasoner = TemperatureReasoner(reasoner, temperature)
    return reasoner
