"""The reasoner contract and the pure helpers every backend shares.

A reasoner turns a batch of requests (question, image, tool results) into one
``Decision`` each: a probability per option and how it was reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from PIL import Image

from agent.core.schema import Decision, Question, ToolResult
from agent.reasoners.extract import parse_letter  # noqa: F401 - the one parser, re-exported for the backends


@dataclass
class ReasonRequest:
    question: Question
    image: Image.Image | None
    results: list[ToolResult] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (question, answer) turns
    images: list[Image.Image] = field(default_factory=list)  # shown after the photo, e.g. som's marked image


class Reasoner(Protocol):
    """A backend: ``load`` (idempotent; ``decide`` loads on first use too), ``decide``, then ``close`` once."""

    name: str

    def load(self) -> None:
        """Get ready (weights, a server connection); raise a ``VqaError`` saying what is wrong."""
        ...

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        """One decision per request, in order. Raises only for failures of the whole batch."""
        ...

    def close(self) -> None:
        """Release what ``load`` took (memory, connections); the owner calls it at exit, errors included."""
        ...


def letter_variants(letter: str) -> list[str]:
    """Surface forms a model may start its answer with for ``letter``."""
    out: list[str] = []
    for c in (letter.lower(), letter.upper()):
        out += [c, f" {c}", f"({c}", f" ({c}", f"{c})", f"{c}.", f"**{c}"]
    return out


