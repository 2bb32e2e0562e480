"""A model-free reasoner: option probabilities from tool evidence alone.

Used for runs without a VLM and as the "tools alone" arm of ablations. Each
evidence type may score the options (``Evidence.support``: the built-in types
name their scorers in ``agent.core.support``), giving every option a support in [0, 1]; supports
add up across tools and become probabilities through a softmax with
``sharpness``. With no usable evidence it says so: uniform probabilities and the
flag ``no_evidence``.
"""

from __future__ import annotations

from typing import Sequence

from agent.core.probs import softmax_over_letters, uniform
from agent.core.schema import Decision
from agent.core.support import (  # noqa: F401  (the scorers, also importable from here)
    Coverage,
    coverage,
    in_order_share,
    is_negated,
    misread_support,
    normalise,
    ocr_support,
    score_detect,
    score_ocr,
    score_retrieve,
    text_support,
    word_credit,
)
from agent.reasoners.base import ReasonRequest


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
