"""Per-option probabilities: the small pure functions every reasoner, the graph, calibration and eval share.

Probabilities are dicts keyed by option letter (``{"a": 0.7, "b": 0.3}``). In ``agent.core``: it imports nothing
from the project, so tools may use it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def logsumexp(values: Sequence[float]) -> float:
    """``log(sum(exp(v)))`` without overflow; ``-inf`` for no values (or only ``-inf``)."""
    top = max(values, default=-math.inf)
    if not math.isfinite(top):
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def uniform(letters: Sequence[str]) -> dict[str, float]:
    """Every letter equally likely: what a reasoner says when it has nothing to go on."""
    return {k: 1.0 / len(letters) for k in letters}


def one_hot(letter: str, letters: Sequence[str]) -> dict[str, float]:
    """All the probability on ``letter``: a generated (or fallback) answer."""
    return {k: float(k == letter) for k in letters}


def softmax_over_letters(scores: Mapping[str, float]) -> dict[str, float]:
    """Normalise per-letter log-scores into probabilities (``-inf`` gets 0; all ``-inf``: uniform)."""
    finite = [s for s in scores.values() if math.isfinite(s)]
    if not finite:
        return uniform(list(scores))
    top = max(finite)
    exps = {k: (math.exp(s - top) if math.isfinite(s) else 0.0) for k, s in scores.items()}
    z = sum(exps.values())
    return {k: v / z for k, v in exps.items()}


def chosen_letter(probs: Mapping[str, float], letters: Sequence[str]) -> str:
    """The highest-probability letter, ties going to the earliest."""
    letters = list(letters)
    return max(letters, key=lambda k: (probs.get(k, 0.0), -letters.index(k)))


def apply_temperature(probs: Mapping[str, float], temperature: float) -> dict[str, float]:
    """``softmax(log p / T)`` over the same letters: T > 1 flattens, T < 1 sharpens, the argmax never changes.

    Exact zeros stay zero (a one-hot generated answer is unchanged).
    """
    if temperature <= 0:
        raise ValueError(f"expected a positive temperature, found {temperature}")
    live = {k: math.log(p) / temperature for k, p in probs.items() if p > 0}
    if not live:
        return dict(probs)
    return softmax_over_letters({k: live.get(k, -math.inf) for k in probs})


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (``scipy.stats.binomtest``); ``(0.0, 1.0)`` when
    ``n == 0`` (no information). Unlike the normal interval it stays inside [0, 1] and is not empty at ``k = 0``
    or ``k = n``.
    """
    if not 0 <= k <= n:
        raise ValueError(f"expected 0 <= k <= n, found k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))
