"""Counting geometry on recorded detector outputs: grounding, NMS, crowd boxes, duplicates, tiling, uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from tools.boxes import (
    count_boxes,
    count_distribution,
    cxcywh_to_xyxy,
    dedupe,
    empty_detections,
    grounded_detections,
    make_detections,
    merge_tiles,
    remove_group_boxes,
    tile_grid,
)

PHRASES = ["person", "dog"]


def det(rows: list[tuple[list[float], float, int]]):
    """``[(box, score, class), ...]`` -> detections labelled from ``PHRASES``."""
    return make_detections([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], PHRASES)


def boxes_of(d) -> list[list[float]]:
    return sorted(d.xyxy.round(1).tolist())


# ---- grounding: query scores over tokens -> labelled boxes ---------------------------------------------------

# A recorded shape: prompt "person. dog." -> tokens [CLS] person . dog . [SEP] (+ padding up to 8)
TOKENS = np.array([-1, 0, -1, 1, -1, -1, -1, -1])


def test_grounding_labels_each_query_by_its_best_phrase_and_applies_both_thresholds() -> None:
    probs = np.zeros((5, 8))
    probs[0, 1] = 0.9                      # person
    probs[1, 3] = 0.6                      # dog
    probs[2, [1, 3]] = [0.5, 0.7]          # both: the better phrase (dog) wins
    probs[3, 2] = 0.95                     # only the period scores: names nothing, dropped
    probs[4, 1] = 0.2                      # below the box threshold
    boxes = np.array([[0.5, 0.5, 0.2, 0.4]] * 5)
    d = grounded_detections(probs, boxes, TOKENS, PHRASES, (200, 100), box_threshold=0.3, text_threshold=0.25)
    assert d.data["label"].tolist() == ["person", "dog", "dog"]
    assert d.class_id.tolist() == [0, 1, 1] and d.confidence.tolist() == [0.9, 0.6, 0.7]
    assert d.xyxy[0].tolist() == [80.0, 30.0, 120.0, 70.0]


def test_text_threshold_drops_queries_whose_phrase_is_too_weak() -> None:
    probs = np.zeros((1, 8))
    probs[0, [1, 2]] = [0.2, 0.9]  # strong on a period (kept by the box threshold), weak on the phrase
    d = grounded_detections(probs, np.array([[0.5, 0.5, 0.1, 0.1]]), TOKENS, PHRASES, (10, 10), 0.35, 0.25)
    assert len(d) == 0


def test_boxes_are_clipped_to_the_image() -> None:
    assert cxcywh_to_xyxy(np.array([[0.05, 0.5, 0.2, 0.2]]), (100, 50)).round(6).tolist() == [[0, 20, 15, 30]]


# ---- duplicates and crowd boxes -------------------------------------------------------------------------------

def test_nms_is_class_aware() -> None:
    d = dedupe(det([([0, 0, 10, 10], 0.9, 0), ([1, 0, 11, 10], 0.8, 0), ([1, 0, 11, 10], 0.7, 1)]), cross_iou=0.95)
    assert sorted(zip(d.data["label"], d.confidence.round(2))) == [("dog", 0.7), ("person", 0.9)]


def test_same_box_under_two_labels_keeps_the_stronger() -> None:
    d = dedupe(det([([0, 0, 10, 10], 0.6, 0), ([0, 0, 10, 10.5], 0.8, 1)]), cross_iou=0.85)
    assert d.data["label"].tolist() == ["dog"]


def test_crowd_box_around_two_members_goes_and_the_members_stay() -> None:
    crowd = ([0, 0, 100, 50], 0.9, 0)  # scores higher than its members: NMS alone would keep it instead
    members = [([5, 5, 40, 48], 0.7, 0), ([55, 3, 95, 49], 0.6, 0)]
    assert boxes_of(remove_group_boxes(det([crowd, *members]))) == [[5, 5, 40, 48], [55, 3, 95, 49]]
    assert boxes_of(dedupe(det([crowd, *members]))) == [[5, 5, 40, 48], [55, 3, 95, 49]]


def test_box_around_members_of_another_class_is_not_a_crowd_box() -> None:
    d = remove_group_boxes(det([([0, 0, 100, 50], 0.9, 1), ([5, 5, 40, 48], 0.7, 0), ([55, 3, 95, 49], 0.6, 0)]))
    assert len(d) == 3


def test_part_inside_one_object_is_a_duplicate_and_the_lower_score_goes() -> None:
    person, torso = ([10, 10, 50, 100], 0.8, 0), ([15, 30, 45, 70], 0.5, 0)  # IoU 0.33: NMS keeps both
    assert boxes_of(dedupe(det([person, torso]))) == [[10, 10, 50, 100]]
    assert boxes_of(dedupe(det([(person[0], 0.5, 0), (torso[0], 0.8, 0)]))) == [[15, 30, 45, 70]]


def test_separate_and_touching_objects_all_count() -> None:
    rows = [([x, 0, x + 20, 40], 0.8, 0) for x in (0, 20, 40, 70)]  # side by side, touching, one apart
    assert len(dedupe(det(rows))) == 4


def test_count_boxes_splits_kept_boxes_from_near_misses_that_duplicate_nothing() -> None:
    rows = [([0, 0, 20, 40], 0.8, 0), ([30, 0, 50, 40], 0.5, 0),
            ([1, 0, 21, 40], 0.3, 0),   # near miss duplicating the first: not uncertainty
            ([60, 0, 80, 40], 0.3, 0),  # near miss on its own: maybe a third person
            ([90, 0, 99, 40], 0.1, 0)]  # far below: ignored
    kept, near = count_boxes(det(rows), 0.35, near=0.1)
    assert boxes_of(kept) == [[0, 0, 20, 40], [30, 0, 50, 40]] and boxes_of(near) == [[60, 0, 80, 40]]


def test_count_boxes_of_nothing() -> None:
    kept, near = count_boxes(empty_detections(), 0.35)
    assert len(kept) == len(near) == 0


def test_count_distribution_is_poisson_binomial_around_the_threshold() -> None:
    d = count_distribution([0.35, 0.35], threshold=0.35)  # two coin flips
    assert d.tolist() == pytest.approx([0.25, 0.5, 0.25])
    sure = count_distribution([0.9, 0.95, 0.2], threshold=0.35, temperature=0.05)
    assert sure.argmax() == 2 and sure[2] == pytest.approx(0.95, abs=0.01) and sum(sure) == pytest.approx(1.0)
    assert count_distribution([], 0.35).tolist() == [1.0]


# ---- tiling --------------------------------------------------------------------------------------------------

def test_tile_grid_covers_the_image_with_overlap() -> None:
    grid = tile_grid((1000, 600), tile=400, overlap=0.2)
    xs, ys = sorted({int(t[0]) for t in grid}), sorted({int(t[1]) for t in grid})
    assert xs == [0, 300, 600] and ys == [0, 200]
    assert (grid[:, 2] - grid[:, 0] == 400).all() and grid[:, 2].max() == 1000 and grid[:, 3].max() == 600
    assert tile_grid((300, 200), tile=400).tolist() == [[0, 0, 300, 200]]


def test_tiles_merge_into_image_coordinates_and_cut_objects_are_dropped() -> None:
    grid = np.array([[0, 0, 60, 50], [40, 0, 100, 50]])  # two tiles overlapping on x = 40..60
    left = det([([10, 10, 20, 20], 0.9, 0),   # small, whole
                ([45, 10, 60, 20], 0.8, 0)])  # touches the left tile's inner edge (x = 60): cut
    right = det([([5, 10, 15, 20], 0.8, 0),   # the same object, whole in the right tile -> x 45..55
                 ([40, 30, 60, 40], 0.7, 0)])  # touches the image border x = 100: not cut
    whole = det([([0, 0, 100, 50], 0.5, 0)])
    merged = merge_tiles(whole, [left, right], grid, (100, 50))
    assert boxes_of(merged) == [[0, 0, 100, 50], [10, 10, 20, 20], [45, 10, 55, 20], [80, 30, 100, 40]]
    kept, _ = count_boxes(merged, 0.35)  # the whole-image box contains the three others: a crowd box
    assert boxes_of(kept) == [[10, 10, 20, 20], [45, 10, 55, 20], [80, 30, 100, 40]]


def test_the_same_object_seen_by_two_tiles_and_the_whole_image_counts_once() -> None:
    grid = np.array([[0, 0, 60, 50], [40, 0, 100, 50]])
    obj = [44, 10, 56, 20]
    left = det([([44, 10, 56, 20], 0.8, 0)])
    right = det([([4, 10, 16, 20], 0.7, 0)])
    whole = det([([43, 9, 57, 21], 0.6, 0)])
    kept, _ = count_boxes(merge_tiles(whole, [left, right], grid, (100, 50)), 0.35)
    assert boxes_of(kept) == [obj]
