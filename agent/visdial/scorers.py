"""How a reasoner scores free-form candidate answers: one ``CandidateScorer`` per reasoner backend, chosen by
the reasoner's registered name (lazy ``module:Class`` strings, so importing this never imports torch).

Every scorer returns ``CandidateScores``: per candidate a summed and a length-normalised score (for the model
scorers the log-likelihood of the candidate as the answer, summed over its tokens and divided by their number;
for the evidence scorer both are its coverage). Ties are kept in the scores; ``metrics.scores_to_ranks`` breaks
them by option order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

from agent.core.schema import DetectEvidence, OcrEvidence, TextSpan
from agent.core.support import ocr_support, words
from agent.reasoners.base import ReasonRequest

RankScore = Literal["mean", "sum"]


@dataclass(frozen=True)
class CandidateScores:
    """Per candidate, in input order: ``sum`` and ``mean`` (length-normalised) scores, and the prompt scored."""

    sum: list[float]
    mean: list[float]
    method: Literal["logits", "evidence"]
    prompt: str | None = None
    flags: list[str] = field(default_factory=list)
    tiebreak: list[float] | None = None  # among equal scores, the higher ranks first (then the option order)

    def by(self, rank_score: RankScore) -> list[float]:
        return self.mean if rank_score == "mean" else self.sum


@dataclass(frozen=True)
class RankContext:
    """What a round adds to the graph's request: the candidates and the photo's caption."""

    candidates: tuple[str, ...]
    caption: str = ""


class CandidateScorer(Protocol):
    name: str

    @property
    def fingerprint(self) -> str: ...

    def score(self, req: ReasonRequest, ctx: RankContext) -> CandidateScores: ...


_NUMBER = re.compile(r"\d+")
_NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}


def detect_support(candidate: str, ev: DetectEvidence) -> float:
    """A candidate naming a detected object gets that object's best box score; a count equal to the number of
    boxes of a detected label it names (or of all boxes, when it names none) gets the mean score of those boxes."""
    cand = words(candidate)
    if not cand or not ev.boxes:
        return 0.0
    named = [b for b in ev.boxes if b.label and set(words(b.label)) <= set(cand)]
    counts = [int(w) if w.isdigit() else _NUMBER_WORDS[w] for w in cand if w.isdigit() or w in _NUMBER_WORDS]
    if counts:
        pool = named or ev.boxes
        return sum(b.score for b in pool) / len(pool) if len(pool) in counts else 0.0
    return max((b.score for b in named), default=0.0)


def span_share(candidate: str, span: TextSpan) -> float:
    """The share of a span's words that the candidate accounts for ("no" accounts for half of "NO PARKING")."""
    read, said = words(span.text), set(words(candidate))
    return sum(w in said for w in read) / len(read) if read else 0.0


def prominent_ocr_support(candidate: str, spans: Sequence[TextSpan]) -> float:
    """``ocr_support`` weighted by how much of the text read the candidate accounts for and how prominent that
    text is: per span, its support times ``0.7 + 0.3 * span_share`` times ``0.8 + 0.2 * height / tallest height``
    (a sign's large title before its small print); across spans (a phrase broken over lines) the plain support
    times 0.7. The best of these."""
    if not spans:
        return 0.0
    tallest = max(s.box[3] - s.box[1] for s in spans) or 1.0
    per_span = [ocr_support(candidate, [s]) * (0.7 + 0.3 * span_share(candidate, s))
                * (0.8 + 0.2 * (s.box[3] - s.box[1]) / tallest) for s in spans]
    return max(*per_span, 0.7 * ocr_support(candidate, spans))


class EvidenceScorer:
    """Coverage of each candidate by the tools' evidence: the OCR support of ``agent.core.support``
    (``ocr_support``: exact reading, joined spans, misreading or word coverage, weighted by the share of the
    read text it accounts for and that text's prominence: ``prominent_ocr_support``) plus ``detect_support``, summed over the tools that ran. A candidate that repeats
    an earlier round's answer, in whole or in part (all its words are in it), gets half its support (a dialog's new question asks for something new). Both
    ``sum`` and ``mean`` hold this coverage. Ties are kept; ``tiebreak`` prefers the candidate with more words
    (the more specific reading: "no parking" before "no"), then the option order. No usable evidence: every
    candidate 0 (flag ``no_evidence``)."""

    name = "evidence"

    def __init__(self, reasoner: Any = None) -> None:
        self.reasoner = reasoner

    @property
    def fingerprint(self) -> str:
        return "rank-evidence@4"

    def score(self, req: ReasonRequest, ctx: RankContext) -> CandidateScores:
        totals = [0.0] * len(ctx.candidates)
        used = 0
        for r in req.results:
            ev = r.evidence if r.ok else None
            if isinstance(ev, OcrEvidence):
                scores = [prominent_ocr_support(c, ev.spans) for c in ctx.candidates]
            elif isinstance(ev, DetectEvidence):
                scores = [detect_support(c, ev) for c in ctx.candidates]
            else:
                continue
            used += 1
            totals = [t + s for t, s in zip(totals, scores)]
        said = [set(words(a)) for _, a in req.history]
        totals = [t * 0.5 if any(set(words(c)) <= a for a in said if a) else t
                  for t, c in zip(totals, ctx.candidates)]
        flags = [] if used and max(totals, default=0.0) > 0 else ["no_evidence"]
        return CandidateScores(sum=totals, mean=list(totals), method="evidence", flags=flags,
                               tiebreak=[float(len(words(c))) for c in ctx.candidates])


def top_candidates(candidates: Sequence[str], scores: Sequence[float], n: int = 5,
                   tiebreak: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """The ``n`` best candidates with their scores and option index, best first (ties: ``tiebreak``, then the
    option order, as ``metrics.scores_to_ranks``)."""
    from agent.visdial.metrics import scores_to_ranks

    ranks = scores_to_ranks(scores, tiebreak)
    order = sorted(range(len(scores)), key=lambda i: ranks[i])[:n]
    return [{"index": i, "text": candidates[i], "score": round(float(scores[i]), 6)} for i in order]
