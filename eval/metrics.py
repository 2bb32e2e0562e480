"""Evaluation metrics as small pure functions: accuracy, Wilson intervals, exact McNemar, circular accuracy,
position bias, expected calibration error and temperature scaling.

Probabilities are per-option dicts (``{"a": 0.7, "b": 0.3}``); letters are option keys. Nothing here reads
files or models, so every function is tested against hand-computed values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from agent.core.probs import apply_temperature, chosen_letter, logsumexp, wilson_interval

__all__ = ["accuracy", "apply_temperature", "chosen_letter", "circular_accuracy", "expected_calibration_error",
           "fit_temperature", "mcnemar_exact", "nll", "paired_comparison", "position_bias", "wilson_interval"]

LOG_FLOOR = 1e-12  # probabilities below this count as this when taking logs (one-hot "generate" decisions)


def accuracy(correct: Sequence[bool]) -> float:
    """Share of ``True``; 0.0 for no questions."""
    return sum(map(bool, correct)) / len(correct) if correct else 0.0


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` (only A right) and ``c`` (only B right).

    Under the null each discordant pair is a fair coin: the two-sided binomial test of ``b`` in ``b + c`` trials
    at 1/2 (``scipy.stats.binomtest``), i.e. ``min(1, 2 * P(X <= min(b, c)))``; 1.0 when there are no
    discordant pairs.
    """
    if b < 0 or c < 0:
        raise ValueError(f"expected non-negative discordant counts, found b={b}, c={c}")
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5).pvalue)


def paired_comparison(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int, float]:
    """``(only_a, only_b, p)`` for two systems judged on the same questions, in the same order."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same questions: {len(a)} vs {len(b)} results")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    return only_a, only_b, mcnemar_exact(only_a, only_b)


def circular_accuracy(rotation_correct: Sequence[Sequence[bool]]) -> float:
    """Share of questions answered correctly under every rotation of their options."""
    return accuracy([bool(rs) and all(rs) for rs in rotation_correct])


def position_bias(chosen: Sequence[str], gold: Sequence[str], letters: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per letter: how often it was chosen and how often it was the right answer (shares of all answers).

    An unbiased model's ``chosen`` follows ``correct``; a model that likes "a" chooses it more often than it is
    right. ``gap`` is ``chosen - correct``.
    """
    if len(chosen) != len(gold):
        raise ValueError(f"expected one gold letter per choice, found {len(chosen)} choices and {len(gold)} golds")
    n = len(chosen)
    out = {}
    for k in letters:
        c, g = (sum(x == k for x in chosen) / n, sum(x == k for x in gold) / n) if n else (0.0, 0.0)
        out[k] = {"chosen": c, "correct": g, "gap": c - g}
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width bins over [0, 1]: ``sum_b |B|/N * |accuracy(B) - mean confidence(B)|``.

    Bin ``i`` holds confidences in ``(i/n_bins, (i+1)/n_bins]``; a confidence of exactly 0 goes to the first bin.
    """
    if len(confidence) != len(correct):
        raise ValueError(f"expected one correctness per confidence, found {len(confidence)} and {len(correct)}")
    if not confidence:
        return 0.0
    bins: dict[int, list[tuple[float, bool]]] = {}
    for p, ok in zip(confidence, correct):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"expected confidences in [0, 1], found {p}")
        i = min(n_bins - 1, max(0, math.ceil(p * n_bins) - 1))
        bins.setdefault(i, []).append((p, bool(ok)))
    n = len(confidence)
    return sum(len(b) / n * abs(sum(ok for _, ok in b) / len(b) - sum(p for p, _ in b) / len(b))
               for b in bins.values())


def _logits(probs: Mapping[str, float], letters: Sequence[str]) -> list[float]:
    return [math.log(max(probs.get(k, 0.0), LOG_FLOOR)) for k in letters]


def nll(probs: Sequence[Mapping[str, float]], gold: Sequence[str], temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the gold letters after ``apply_temperature`` (floored at ``LOG_FLOOR``)."""
    if not probs:
        return 0.0
    total = 0.0
    for p, g in zip(probs, gold, strict=True):
        letters = list(p)
        z = [v / temperature for v in _logits(p, letters)]
        total += logsumexp(z) - z[letters.index(g)]
    return total / len(probs)


def fit_temperature(probs: Sequence[Mapping[str, float]], gold: Sequence[str],
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising ``nll`` on a labelled set (logits = log probabilities), searched on log T.

    One scalar, so accuracy is unchanged; returns 1.0 for an empty set, or when the NLL does not depend on T
    (every row uniform).
    """
    if not probs or abs(nll(probs, gold, bounds[0]) - nll(probs, gold, bounds[1])) < 1e-12:
        return 1.0
    from scipy.optimize import minimize_scalar

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda t: nll(probs, gold, math.exp(t)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))
