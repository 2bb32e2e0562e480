"""The VisDial challenge metrics, as ``visdialch/metrics.py`` of the challenge starter code defines them.

- ``scores_to_ranks``: rank 1 = highest score. Ties are kept in the scores and broken here by one stated rule:
  the higher ``tiebreak`` value when the scorer gives one (the evidence scorer: more words), then the option
  listed first (lower index in ``answer_options``).
- Sparse metrics, from the rank of the ground-truth option per round: ``r@1``, ``r@5``, ``r@10`` (share of
  rounds with the ground truth at rank <= k), ``mean`` (mean rank) and ``mrr`` (mean of 1/rank).
- ``ndcg``: per round with dense annotations, k = the number of options with non-zero relevance; the DCG of the
  relevances of the top-k options in predicted order, ``sum(rel_i / log2(i + 1))`` for positions i = 1..k,
  over the DCG of the k highest relevances; averaged over rounds. A round whose relevances are all zero has no
  NDCG (0/0) and is refused.

Intervals (95%): Wilson for the recalls (``eval.metrics.wilson_interval``), a seeded percentile bootstrap
(``scipy.stats.bootstrap``) for mean rank, MRR and NDCG.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from agent.core.errors import DataError
from agent.core.probs import wilson_interval

RECALLS = (1, 5, 10)
BOOTSTRAP_RESAMPLES = 2000


def scores_to_ranks(scores: Sequence[float], tiebreak: Sequence[float] | None = None) -> list[int]:
    """Each option's rank (1 = best) from its score; ties go to the higher ``tiebreak``, then the option listed
    first."""
    s = np.asarray(scores, dtype=float)
    t = np.zeros_like(s) if tiebreak is None else np.asarray(tiebreak, dtype=float)
    order = np.lexsort((np.arange(len(s)), -t, -s))  # the last key sorts first
    ranks = np.empty(len(order), dtype=int)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks.tolist()


def check_ranks(ranks: Sequence[int], n: int = 100) -> None:
    """Raise ``DataError`` unless ``ranks`` is a permutation of 1..n."""
    if sorted(ranks) != list(range(1, n + 1)):
        raise DataError(f"ranks must be a permutation of 1..{n}, found {len(ranks)} values "
                        f"{sorted(set(ranks))[:5]}...")


def gt_rank(ranks: Sequence[int], gt_index: int) -> int:
    return int(ranks[gt_index])


def ndcg(ranks: Sequence[int], relevance: Sequence[float]) -> float:
    """NDCG of one round over its top k options, k = the number of options with non-zero relevance."""
    rel = np.asarray(relevance, dtype=float)
    k = int(np.count_nonzero(rel))
    if k == 0:
        raise DataError("NDCG is undefined for a round whose relevances are all zero (k = 0)")
    order = np.argsort(np.asarray(ranks), kind="stable")  # option indices from rank 1 down
    discounts = np.log2(np.arange(k) + 2.0)
    dcg = float(np.sum(rel[order[:k]] / discounts))
    best = float(np.sum(np.sort(rel)[::-1][:k] / discounts))
    return dcg / best


def _bootstrap(values: np.ndarray) -> list[float] | None:
    if len(values) < 2:
        return None
    if np.all(values == values[0]):
        return [float(values[0])] * 2
    from scipy.stats import bootstrap

    res = bootstrap((values,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                    random_state=np.random.default_rng(0))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def sparse_metrics(gt_ranks: Sequence[int]) -> dict[str, Any]:
    """``r@1``, ``r@5``, ``r@10``, ``mean``, ``mrr`` over rounds (ground-truth ranks), with ``ci`` per metric."""
    r = np.asarray(gt_ranks, dtype=float)
    if not len(r):
        return {}
    out: dict[str, Any] = {}
    ci: dict[str, list[float] | None] = {}
    for k in RECALLS:
        hits = int(np.sum(r <= k))
        out[f"r@{k}"] = hits / len(r)
        ci[f"r@{k}"] = list(wilson_interval(hits, len(r)))
    out["mean"], ci["mean"] = float(r.mean()), _bootstrap(r)
    out["mrr"], ci["mrr"] = float(np.mean(1.0 / r)), _bootstrap(1.0 / r)
    out["ci"] = ci
    return out


def visdial_metrics(records: Sequence[dict[str, Any]], dense: dict[tuple[int, int], list[float]] | None = None
                    ) -> dict[str, Any]:
    """The challenge metrics of ranked rounds: each record has ``image_id``, ``round_id``, ``ranks`` and
    ``gt_index`` (``None``: no sparse metrics for it). With ``dense``, ``ndcg`` over the rounds it annotates."""
    with_gt = [r for r in records if r.get("gt_index") is not None]
    out: dict[str, Any] = {"rounds": len(records), "rounds_with_gt": len(with_gt)}
    out.update(sparse_metrics([gt_rank(r["ranks"], r["gt_index"]) for r in with_gt]))
    if dense is not None:
        values = []
        for r in records:
            rel = dense.get((r["image_id"], r["round_id"]))
            if rel is None:
                continue
            try:
                values.append(ndcg(r["ranks"], rel))
            except DataError as exc:
                raise DataError(f"dense annotations, image_id {r['image_id']} round {r['round_id']}: {exc}; "
                                "remove the round or fix its gt_relevance") from None
        out["rounds_with_dense"] = len(values)
        if values:
            out["ndcg"] = float(np.mean(values))
            out.setdefault("ci", {})["ndcg"] = _bootstrap(np.asarray(values))
    return out
