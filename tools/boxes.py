"""Box geometry for counting: grounding scores -> detections, duplicate and crowd-box removal, tiling, count
uncertainty. Plain functions on ``sv.Detections`` (``class_id`` = phrase index, ``data["label"]`` = phrase), no
model import, so they are tested on recorded model outputs.

Counting is "filter, then ``len``", where the filters are: box and text thresholds, class-aware NMS, removal of
boxes that contain two or more boxes of their class (a crowd box around its members), removal of a box that
mostly contains, or is mostly contained in, one other box of its class (a part or a duplicate; the lower score
goes), and, across classes, removal of near-identical boxes (the same object named twice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tools.imports import lazy

sv = lazy("supervision")



def empty_detections() -> sv.Detections:
    return sv.Detections(xyxy=np.empty((0, 4)), confidence=np.empty(0), class_id=np.empty(0, dtype=int),
                         data={"label": np.array([], dtype=object)})


def make_detections(boxes: Sequence[Sequence[float]], scores: Sequence[float], class_ids: Sequence[int],
                    phrases: Sequence[str]) -> sv.Detections:
    """Detections with ``class_id`` indexing ``phrases`` and ``data["label"]`` the phrase itself."""
    if not len(boxes):
        return empty_detections()
    ids = np.asarray(class_ids, dtype=int)
    return sv.Detections(xyxy=np.asarray(boxes, dtype=float).reshape(-1, 4), confidence=np.asarray(scores, float),
                         class_id=ids, data={"label": np.array([phrases[i] for i in ids], dtype=object)})


def cxcywh_to_xyxy(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Normalised ``(cx, cy, w, h)`` -> pixel ``(x1, y1, x2, y2)`` in an image of ``size = (width, height)``."""
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    w, h = size
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    return sv.clip_boxes(xyxy * [w, h, w, h], (w, h))


def grounded_detections(probs: np.ndarray, boxes: np.ndarray, token_phrase: np.ndarray, phrases: Sequence[str],
                        size: tuple[int, int], box_threshold: float, text_threshold: float) -> sv.Detections:
    """Grounding DINO's per-query outputs -> labelled boxes.

    ``probs``: ``(queries, tokens)`` sigmoid scores; ``boxes``: ``(queries, 4)`` normalised cx, cy, w, h;
    ``token_phrase``: ``(tokens,)`` index of the phrase each token belongs to, ``-1`` for special tokens, periods
    and padding. As in the original release, a query is kept when its best token scores at least
    ``box_threshold``; its label is the phrase whose best token scores highest, provided that score reaches
    ``text_threshold`` (else the query names nothing and is dropped). Its confidence is that phrase score.
    """
    probs = np.asarray(probs, dtype=float)
    token_phrase = np.asarray(token_phrase, dtype=int)[: probs.shape[1]]
    if not len(phrases) or not (token_phrase >= 0).any():
        return empty_detections()
    valid = probs[:, : len(token_phrase)]
    per_phrase = np.stack([valid[:, token_phrase == k].max(1) if (token_phrase == k).any()
                           else np.zeros(len(valid)) for k in range(len(phrases))], 1)
    best_any = valid[:, token_phrase >= 0].max(1)
    label = per_phrase.argmax(1)
    score = per_phrase[np.arange(len(valid)), label]
    keep = (best_any >= box_threshold) & (score >= text_threshold)
    if not keep.any():
        return empty_detections()
    return make_detections(cxcywh_to_xyxy(boxes[keep], size), score[keep], label[keep], phrases)


def _areas(xyxy: np.ndarray) -> np.ndarray:
    return (xyxy[:, 2] - xyxy[:, 0]).clip(0) * (xyxy[:, 3] - xyxy[:, 1]).clip(0)


def remove_group_boxes(det: sv.Detections, contain: float = 0.9, min_members: int = 2,
                       max_member_area: float = 0.8) -> sv.Detections:
    """Drop every box that contains ``min_members`` or more boxes of its own class (a crowd box around its members).

    A member lies at least ``contain`` inside the box (intersection over the member's area) and is at most
    ``max_member_area`` of its area (a near-identical box is a duplicate for NMS, not a member).
    """
    if len(det) < min_members + 1:
        return det
    ios = sv.box_iou_batch(det.xyxy, det.xyxy, overlap_metric=sv.OverlapMetric.IOS)  # ios[i, j]: overlap over the smaller of i, j
    area = _areas(det.xyxy)
    same = det.class_id[:, None] == det.class_id[None, :]
    member = (ios >= contain) & same & (area[None, :] <= max_member_area * area[:, None])  # member[i, j]: j in i
    np.fill_diagonal(member, False)
    return det[member.sum(1) < min_members]


def dedupe(det: sv.Detections, nms_iou: float = 0.5, contain: float = 0.9, cross_iou: float = 0.85) -> sv.Detections:
    """Class-aware NMS, then crowd boxes, then parts/duplicates (containment, lower score goes), then the same
    box under two labels (IoU at least ``cross_iou`` across classes, lower score goes)."""
    if len(det) < 2:
        return det
    det = det.with_nms(threshold=nms_iou, class_agnostic=False)
    det = remove_group_boxes(det, contain=contain)
    det = det.with_nms(threshold=contain, class_agnostic=False, overlap_metric=sv.OverlapMetric.IOS)
    return det.with_nms(threshold=cross_iou, class_agnostic=True)


def count_boxes(det: sv.Detections, box_threshold: float, *, near: float = 0.1, nms_iou: float = 0.5,
                contain: float = 0.9, cross_iou: float = 0.85) -> tuple[sv.Detections, sv.Detections]:
    """``(kept, near_misses)``: the boxes that count (at least ``box_threshold``, deduplicated) and the boxes within
    ``near`` below the threshold that duplicate no kept box, which make the count uncertain."""
    cand = det[det.confidence >= box_threshold - near] if len(det) else det
    cand = cand.with_nms(threshold=nms_iou, class_agnostic=False) if len(cand) > 1 else cand
    strong = cand.confidence >= box_threshold
    kept, rest = dedupe(cand[strong], nms_iou, contain, cross_iou), cand[~strong]
    if len(kept) and len(rest):
        same = rest.class_id[:, None] == kept.class_id[None, :]
        iou = sv.box_iou_batch(rest.xyxy, kept.xyxy)
        ios = sv.box_iou_batch(rest.xyxy, kept.xyxy, overlap_metric=sv.OverlapMetric.IOS)
        rest = rest[~(same & ((iou >= nms_iou) | (ios >= contain))).any(1)]
    return kept, rest


def count_distribution(scores: Sequence[float], threshold: float, temperature: float = 0.05) -> np.ndarray:
    """P(count = k) for k = 0..len(scores): each box is real with probability ``sigmoid((score - threshold) /
    temperature)`` (a box at the threshold is a coin flip), independently: a Poisson-binomial distribution."""
    dist = np.array([1.0])
    for s in scores:
        p = 1.0 / (1.0 + math.exp(-(float(s) - threshold) / temperature))
        dist = np.convolve(dist, [1.0 - p, p])
    return dist


# ---------------------------------------------------------------- tiling

def tile_grid(size: tuple[int, int], tile: int, overlap: float = 0.2) -> np.ndarray:
    """Tiles ``(x1, y1, x2, y2)`` of side ``tile`` covering an image of ``size = (width, height)``; neighbours
    overlap by at least ``overlap`` of a tile; the first and last tiles touch the image borders."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap must be in [0, 1), found {overlap}")

    def starts(length: int) -> np.ndarray:
        if length <= tile:
            return np.array([0])
        n = math.ceil((length - tile) / (tile * (1.0 - overlap))) + 1
        return np.round(np.linspace(0, length - tile, n)).astype(int)

    w, h = size
    return np.array([[x, y, min(x + tile, w), min(y + tile, h)] for y in starts(h) for x in starts(w)], dtype=int)


def merge_tiles(whole: sv.Detections, parts: Sequence[sv.Detections], grid: np.ndarray, size: tuple[int, int],
                edge_margin: float = 2.0) -> sv.Detections:
    """Detections from the whole image plus detections from each tile (in tile coordinates) -> one set in image
    coordinates. A tile box touching an inner tile edge (one that is not an image border) is a cut object and is
    dropped: it appears whole in an overlapping tile or in the whole-image pass. Duplicates stay for ``dedupe``."""
    w, h = size
    out = [whole] if len(whole) else []
    for det, (x1, y1, x2, y2) in zip(parts, np.asarray(grid, dtype=float)):
        if not len(det):
            continue
        b = det.xyxy + [x1, y1, x1, y1]
        cut = ((x1 > 0) & (b[:, 0] <= x1 + edge_margin)) | ((y1 > 0) & (b[:, 1] <= y1 + edge_margin)) \
            | ((x2 < w) & (b[:, 2] >= x2 - edge_margin)) | ((y2 < h) & (b[:, 3] >= y2 - edge_margin))
        moved = det[~cut]
        moved.xyxy = b[~cut]
        if len(moved):
            out.append(moved)
    return sv.Detections.merge(out) if out else empty_detections()
