"""A model-free reasoner: option probabilities from tool evidence alone.

Used for runs without a VLM and as the "tools alone" arm of ablations. Each
evidence type may score the options (``Evidence.support``: the built-in types
call the scorers below by name), giving every option a support in [0, 1]; supports
add up across tools and become probabilities through a softmax with
``sharpness``. With no usable evidence it says so: uniform probabilities and the
flag ``no_evidence``.
"""

from __future__ import annotations

import re
from typing import Sequence

from agent.probs import softmax_over_letters, uniform
from agent.reasoners.base import ReasonRequest
from agent.schema import Decision, DetectEvidence, OcrEvidence, Question, RetrieveEvidence
from tools.phrases import is_polar, parse_yes_no
from tools.text import normalise

_NEGATION = re.compile(r"아닌|않은|없는|틀린|\bnot\b|\bexcept\b|\bisn't\b|\bnever\b", re.IGNORECASE)


def is_negated(question: str) -> bool:
    """``"...이 아닌 것은?"`` / ``"Which is NOT ..."``: the answer is the option the evidence does not support."""
    return bool(_NEGATION.search(question))


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


# Similarity at or below which a retrieved answer counts for nothing. Scores run high (e5: 0.80-0.92 between
# different questions of examples/train.csv and test.csv, 0.93 for a question and its translation, ~1 for a
# repeat), and a count or colour answer ("2개") matches options of unrelated questions: only near-duplicates vote.
PRIOR_FLOOR = 0.9


def score_retrieve(ev: RetrieveEvidence, q: Question) -> dict[str, float]:
    """A prior from the answers of retrieved solved questions.

    A retrieved question asked the same way (both negated, "...아닌 것은?", or neither) votes for the options
    whose text equals its answer text (after ``normalise``), with its similarity rescaled from
    ``PRIOR_FLOOR..1`` to ``0..1``. An option's support is its share of the votes, times the strongest vote: a
    repeated question gives its answer almost 1, a paraphrase a little, a merely similar question nothing.
    For negated questions the reasoner negates every support (OCR presence means "not the answer"), while a
    retrieved answer already is the answer; so there the prior is returned as its complement,
    ``strength - support``, which the reasoner's negation turns back.
    """
    out = dict.fromkeys(q.letters, 0.0)
    by_text = {normalise(t): k for k, t in q.options.items()}
    negated = is_negated(q.text)
    votes: list[tuple[str, float]] = []
    for e in ev.entries:
        usable = e.kind == "question" and e.answer_text and is_negated(e.text) == negated
        letter = by_text.get(normalise(e.answer_text)) if usable else None
        weight = min(1.0, max(0.0, (e.score - PRIOR_FLOOR) / (1.0 - PRIOR_FLOOR)))
        if letter is not None and weight > 0:
            votes.append((letter, weight))
    total = sum(w for _, w in votes)
    if not total:
        return out
    strength = max(w for _, w in votes)
    for letter, w in votes:
        out[letter] += strength * w / total
    return {k: strength - v for k, v in out.items()} if negated else out


_ASKS_ABSENCE = re.compile(r"없(?:나요|습니까|어요|을까요|니)|\bis there no\b|\bare there no\b", re.IGNORECASE)


def score_detect(ev: DetectEvidence, q: Question) -> dict[str, float]:
    """Support from detected boxes, per option: a count option gets the probability that the count lies in its
    interval; a yes/no option the probability that there is at least one (예/yes to "...없나요?" means none);
    an option naming an object the best score of a box of that object. A count under a negated question
    ("...않은 사람은 몇 명?") is of a set the detector did not count, so it supports nothing."""
    out = dict.fromkeys(q.letters, 0.0)
    present = 1.0 - ev.count_probs.get(0, 0.0)
    absence = bool(_ASKS_ABSENCE.search(q.text))
    for k, option in q.options.items():
        yes = parse_yes_no(option)
        if k in ev.option_counts:
            lo, hi = ev.option_counts[k]
            if not is_negated(q.text):
                out[k] = sum(p for n, p in ev.count_probs.items() if n >= lo and (hi is None or n <= hi))
        elif yes is not None:
            says_present = yes != (absence and is_polar(option))
            out[k] = present if says_present else 1.0 - present
        elif k in ev.option_labels:
            out[k] = max((b.score for b in ev.boxes if b.label == ev.option_labels[k]), default=0.0)
    return out


class EvidenceReasoner:
    """``decide`` without a model. ``min_support``: below it an option counts as unsupported."""

    name = "evidence"

    def __init__(self, sharpness: float = 6.0, min_support: float = 0.5) -> None:
        self.sharpness = sharpness
        self.min_support = min_support

    def load(self) -> None:
        """Nothing to load: no model."""

    def close(self) -> None:
        """Nothing to release."""
    @property
    def fingerprint(self) -> str:
        """What determines the output (no model, no prompt): the scoring settings."""
        return f"evidence:sharpness={self.sharpness:g},min_support={self.min_support:g}"

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        return [self._one(r).model_copy(update={"reasoner": self.fingerprint}) for r in batch]

    def _one(self, req: ReasonRequest) -> Decision:
        q = req.question
        total = dict.fromkeys(q.letters, 0.0)
        used = 0
        for r in req.results:
            support = r.evidence.support(q) if r.ok and r.evidence is not None else None
            if support is None:  # no opinion on the options (e.g. som's marks)
                continue
            used += 1
            for letter in total:
                total[letter] += support.get(letter, 0.0)
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
