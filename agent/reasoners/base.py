"""The reasoner contract and the pure helpers every backend shares.

A reasoner turns a batch of requests (question, image, tool results) into one
``Decision`` each: a probability per option and how it was reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from PIL import Image

from agent.reasoners.extract import parse_letter  # noqa: F401 - the one parser, re-exported for the backends
from agent.schema import Decision, Question, ToolResult


@dataclass
class ReasonRequest:
    question: Question
    image: Image.Image | None
    results: list[ToolResult] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (question, answer) turns
    images: list[Image.Image] = field(default_factory=list)  # shown after the photo, e.g. som's marked image


class Reasoner(Protocol):
    name: str

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        """One decision per request, in order. Raises only for failures of the whole batch."""
        ...


def letter_variants(letter: str) -> list[str]:
    """Surface forms a model may start its answer with for ``letter``."""
    out: list[str] = []
    for c in (letter.lower(), letter.upper()):
        out += [c, f" {c}", f"({c}", f" ({c}", f"{c})", f"{c}.", f"**{c}"]
    return out


def softmax_over_letters(scores: dict[str, float]) -> dict[str, float]:
    """Normalise per-letter log-scores into probabilities (``-inf`` gets 0)."""
    finite = [s for s in scores.values() if math.isfinite(s)]
    if not finite:
        return {k: 1.0 / len(scores) for k in scores}
    top = max(finite)
    exps = {k: (math.exp(s - top) if math.isfinite(s) else 0.0) for k, s in scores.items()}
    z = sum(exps.values())
    return {k: v / z for k, v in exps.items()}


def uniform(letters: Sequence[str]) -> dict[str, float]:
    return {k: 1.0 / len(letters) for k in letters}
