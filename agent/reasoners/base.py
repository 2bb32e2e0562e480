"""The reasoner contract and the pure helpers every backend shares.

A reasoner turns a batch of requests (question, image, tool results) into one
``Decision`` each: a probability per option and how it was reached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from PIL import Image

from agent.schema import Decision, Question, ToolResult


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


_PATTERNS = [
    r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?\**([a-e])\b",
    r"정답\s*(?:은|는|:)?\s*\(?\**([a-e])\b",
    r"^\W*\(?([a-e])\)?(?:[.):*\s]|$)",  # "b", "(b)", "b. milk", "**b**"
    r"\(([a-e])\)",
]


def parse_letter(text: str, options: dict[str, str]) -> str | None:
    """Find the chosen letter in generated text: ``"b"``, ``"(B)"``, ``"Answer: c"``, ``"정답은 b"``, or an option's text."""
    t = text.strip()
    low = t.lower()
    for pat in _PATTERNS:
        m = re.search(pat, low, flags=re.MULTILINE)
        if m and m.group(1) in options:
            return m.group(1)
    hits = [k for k, v in options.items() if v and v.lower() in low]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:  # prefer the longest option text that occurs (e.g. "12개" over "2개")
        return max(hits, key=lambda k: len(options[k]))
    return None
