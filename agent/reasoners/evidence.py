"""A model-free reasoner: option probabilities from tool evidence alone.

Used for runs without a VLM and as the "tools alone" arm of ablations. Each
evidence type has a scorer giving every option a support in [0, 1]; supports
add up across tools and become probabilities through a softmax with
``sharpness``. With no usable evidence it says so: uniform probabilities and the
flag ``no_evidence``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable, Sequence

from agent.reasoners.base import ReasonRequest, softmax_over_letters, uniform
from agent.schema import Decision, OcrEvidence, Question

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_NEGATION = re.compile(r"아닌|않은|없는|틀린|\bnot\b|\bexcept\b|\bisn't\b|\bnever\b", re.IGNORECASE)


def is_negated(question: str) -> bool:
    """``"...이 아닌 것은?"`` / ``"Which is NOT ..."``: the answer is the option the evidence does not support."""
    return bool(_NEGATION.search(question))


def normalise(text: str) -> str:
    """NFKC, lower case, no spaces or punctuation: ``"Hello, World!" -> "helloworld"``."""
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text).lower())


def _bigrams(s: str) -> set[str]:
    return {s[i : i + 2] for i in range(len(s) - 1)} if len(s) > 1 else {s}


def text_support(option: str, found: str) -> float:
    """How much of ``option`` appears in ``found``: 1.0 for a substring, else the share of its character bigrams.

    A one-character option only counts as a whole word (``"다"`` is not found in ``"다른"``).
    """
    o, f = normalise(option), normalise(found)
    if not o or not f:
        return 0.0
    if len(o) == 1:
        return float(any(normalise(w) == o for w in found.split()))
    if o in f:
        return 1.0
    return len(_bigrams(o) & _bigrams(f)) / len(_bigrams(o))


def score_ocr(ev: OcrEvidence, q: Question) -> dict[str, float]:
    """Support of each option by the text read in the image, weighted by OCR confidence."""
    out = {}
    for letter, option in q.options.items():
        whole = text_support(option, ev.text)
        best_span = max((text_support(option, s.text) * s.confidence for s in ev.spans), default=0.0)
        out[letter] = max(best_span, whole * 0.9)
    return out


SCORERS: dict[type, Callable[[object, Question], dict[str, float]]] = {OcrEvidence: score_ocr}


class EvidenceReasoner:
    """``decide`` without a model. ``min_support``: below it an option counts as unsupported."""

    name = "evidence"

    def __init__(self, sharpness: float = 6.0, min_support: float = 0.5) -> None:
        self.sharpness = sharpness
        self.min_support = min_support

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        return [self._one(r) for r in batch]

    def _one(self, req: ReasonRequest) -> Decision:
        q = req.question
        total = dict.fromkeys(q.letters, 0.0)
        used = 0
        for r in req.results:
            scorer = SCORERS.get(type(r.evidence)) if r.ok else None
            if scorer is None:
                continue
            used += 1
            for letter, s in scorer(r.evidence, q).items():
                total[letter] += s
        if used == 0:
            return Decision(probs=uniform(q.letters), method="evidence", flags=["no_evidence"],
                            raw="no tool evidence to score")
        if max(total.values()) < self.min_support:
            return Decision(probs=uniform(q.letters), method="evidence", flags=["no_evidence"],
                            raw=f"evidence supports no option (best support {max(total.values()):.2f})")
        sign, flags = (-1.0, ["negated"]) if is_negated(q.text) else (1.0, [])
        probs = softmax_over_letters({k: sign * self.sharpness * v for k, v in total.items()})
        return Decision(probs=probs, method="evidence", flags=flags,
                        raw="support " + ", ".join(f"{k}={v:.2f}" for k, v in total.items()))
