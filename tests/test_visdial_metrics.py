"""VisDial metrics against hand-computed cases (the challenge's definitions)."""

from __future__ import annotations

import math

import pytest

from agent.core.errors import DataError
from agent.visdial.metrics import check_ranks, ndcg, scores_to_ranks, sparse_metrics, visdial_metrics


@pytest.mark.parametrize("scores, ranks", [
    ([0.1, 0.9, 0.5], [3, 1, 2]),
    ([1.0, 1.0, 0.0], [1, 2, 3]),  # a tie: the option listed first ranks better
    ([0.0, 2.0, 2.0, 2.0], [4, 1, 2, 3]),
    ([-1.0, -3.0, -2.0], [1, 3, 2]),  # log-likelihoods
])
def test_scores_to_ranks(scores, ranks):
    assert scores_to_ranks(scores) == ranks


def test_sparse_metrics_hand_computed():
    m = sparse_metrics([1, 2, 6, 20])
    assert m["r@1"] == 0.25 and m["r@5"] == 0.5 and m["r@10"] == 0.75
    assert m["mean"] == pytest.approx((1 + 2 + 6 + 20) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 6 + 1 / 20) / 4)
    lo, hi = m["ci"]["mrr"]
    assert lo <= m["mrr"] <= hi and lo < hi
    lo, hi = m["ci"]["r@1"]
    assert 0 < lo < 0.25 < hi < 1


def test_ndcg_hand_computed():
    rel = [0.0] * 100
    rel[3], rel[7] = 1.0, 0.5  # k = 2
    ranks = list(range(1, 101))  # option i at rank i+1
    ranks[7], ranks[0] = 1, 8  # option 7 first, option 3 at rank 4 (outside the top 2)
    # predicted top 2: options 7, 1 -> dcg = 0.5/log2(2) + 0/log2(3); best = 1 + 0.5/log2(3)
    assert ndcg(ranks, rel) == pytest.approx(0.5 / (1 + 0.5 / math.log2(3)))
    ranks[3], ranks[1] = 2, 4  # now options 7, 3: dcg = 0.5 + 1/log2(3)
    assert ndcg(ranks, rel) == pytest.approx((0.5 + 1 / math.log2(3)) / (1 + 0.5 / math.log2(3)))


def test_ndcg_k_is_one():
    rel = [0.0] * 100
    rel[42] = 1.0
    ranks = scores_to_ranks([0.0] * 100)  # option 0 first
    assert ndcg(ranks, rel) == 0.0  # only the top 1 counts: rank 43 gives nothing
    ranks = scores_to_ranks([1.0 if i == 42 else 0.0 for i in range(100)])
    assert ndcg(ranks, rel) == 1.0


def test_ndcg_with_ties_in_relevance():
    rel = [0.0] * 100
    rel[0] = rel[1] = rel[2] = 0.5  # k = 3, any order of the three is perfect
    ranks = scores_to_ranks([1.0 if i in (2, 1, 0) else 0.0 for i in range(100)])
    assert ndcg(ranks, rel) == pytest.approx(1.0)


def test_all_zero_relevance_is_refused():
    with pytest.raises(DataError, match="all zero"):
        ndcg(list(range(1, 101)), [0.0] * 100)
    rec = {"image_id": 5, "round_id": 2, "ranks": list(range(1, 101)), "gt_index": 0}
    with pytest.raises(DataError, match="image_id 5 round 2"):
        visdial_metrics([rec], {(5, 2): [0.0] * 100})


def test_visdial_metrics_from_records():
    recs = [{"image_id": 1, "round_id": r, "ranks": list(range(1, 101)), "gt_index": g}
            for r, g in ((1, 0), (2, 4), (3, None))]
    rel = [0.0] * 100
    rel[0] = 1.0
    m = visdial_metrics(recs, {(1, 1): rel})
    assert m["rounds"] == 3 and m["rounds_with_gt"] == 2 and m["rounds_with_dense"] == 1
    assert m["r@1"] == 0.5 and m["r@5"] == 1.0 and m["mean"] == 3.0 and m["mrr"] == pytest.approx(0.6)
    assert m["ndcg"] == 1.0


def test_check_ranks():
    check_ranks(list(range(100, 0, -1)))
    with pytest.raises(DataError):
        check_ranks([1] * 100)
