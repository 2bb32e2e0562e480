"""Set-of-Mark drawing: regions -> numbered marks that stay legible. Plain functions, no model import.

Layout rules, each tested on real photos: overlapping masks become disjoint regions (a smaller mask stays on
top of a larger one); every number sits inside its region, at the interior point farthest from the region's
border where its whole label fits (else the farthest point whose label overlaps no other); labels never
overlap; neighbouring regions get different colours; a label's text is black or white, whichever contrasts
more with its fill (WCAG contrast ratio at least 4.5 for every palette colour). Drawing itself is supervision's
(mask fill, outline, label annotators); this module only decides where and in which colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tools.imports import lazy

sv = lazy("supervision")
cv2 = lazy("cv2")

# Saturated, mutually distinct fills (Kelly's colours of maximum contrast, minus white/black/greys).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 179, 0), (128, 62, 117), (255, 104, 0), (166, 189, 215), (193, 0, 32), (206, 162, 98),
    (0, 125, 52), (246, 118, 142), (0, 83, 138), (255, 122, 92), (83, 55, 122), (255, 142, 0),
    (179, 40, 81), (244, 200, 0), (127, 24, 13), (147, 170, 0), (89, 51, 21), (241, 58, 19), (35, 44, 22),
)
BLACK, WHITE = (0, 0, 0), (255, 255, 255)
LABEL_GAP = 2  # px kept free between two labels
MAX_CANDIDATES = 20_000  # interior points tried per region, best first


def relative_luminance(rgb: Sequence[int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0 black .. 1 white)."""
    c = np.asarray(rgb, dtype=float) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2])


def contrast_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """WCAG 2 contrast ratio, 1 (same) .. 21 (black on white); 4.5 is the minimum for normal text."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_color_for(fill: Sequence[int]) -> tuple[int, int, int]:
    return BLACK if contrast_ratio(fill, BLACK) >= contrast_ratio(fill, WHITE) else WHITE


@dataclass(frozen=True)
class LabelStyle:
    """Font settings for the numbers, scaled to the image; ``size(text)`` is the label box supervision draws."""

    scale: float
    thickness: int
    padding: int

    @classmethod
    def for_image(cls, size: tuple[int, int]) -> LabelStyle:
        scale = float(np.clip(min(size) / 900.0, 0.45, 2.0))
        return cls(scale=round(scale, 2), thickness=max(1, round(scale * 2)), padding=max(3, round(5 * scale)))

    def size(self, text: str) -> tuple[int, int]:
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self.scale, self.thickness)
        return w + 2 * self.padding, h + 2 * self.padding


@dataclass(frozen=True)
class Placement:
    """Where one region's number goes: label centre, the label box supervision draws, and whether it fits wholly
    inside the region (``inside``) — the centre always lies inside it."""

    center: tuple[int, int]
    rect: tuple[int, int, int, int]
    inside: bool


def label_rect(center: tuple[int, int], wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box supervision draws for a label centred on ``center`` (``Position.CENTER``)."""
    (x, y), (w, h) = center, wh
    return x - w // 2, y - h // 2, x + w // 2, y + h // 2


def disjoint_regions(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` masks -> the same masks made disjoint: where masks overlap, the smaller one keeps the pixel
    (a shirt stays visible on top of the person wearing it)."""
    masks = np.asarray(masks, dtype=bool)
    if not len(masks):
        return masks
    owner = np.full(masks.shape[1:], -1, dtype=int)
    for i in np.argsort(-masks.sum((1, 2)), kind="stable"):  # largest first, smaller ones paint over it
        owner[masks[i]] = i
    return owner[None] == np.arange(len(masks))[:, None, None]


def _overlaps(rects: np.ndarray, placed: list[tuple[int, int, int, int]]) -> np.ndarray:
    """For candidate rects ``(K, 4)``: does each intersect (or come within ``LABEL_GAP`` of) any placed rect?"""
    if not placed:
        return np.zeros(len(rects), dtype=bool)
    p = np.asarray(placed)[None, :, :]
    r = rects[:, None, :]
    return ((r[..., 0] < p[..., 2] + LABEL_GAP) & (p[..., 0] < r[..., 2] + LABEL_GAP)
            & (r[..., 1] < p[..., 3] + LABEL_GAP) & (p[..., 1] < r[..., 3] + LABEL_GAP)).any(1)


def place_labels(regions: np.ndarray, wh: tuple[int, int]) -> list[Placement]:
    """One non-overlapping label of size ``wh`` per region of ``(N, H, W)`` disjoint masks, each centred inside its
    region. Small regions choose first (they have the fewest spots); each takes its most interior free spot."""
    n, height, width = regions.shape
    w, h = wh
    placed: list[tuple[int, int, int, int]] = []
    out: dict[int, Placement] = {}
    for i in np.argsort(regions.sum((1, 2)), kind="stable"):
        mask = regions[i].astype(np.uint8)
        dist = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        ys, xs = np.nonzero(mask)
        if not len(xs):
            raise ValueError(f"region {i} is empty: drop empty regions before placing labels")
        order = np.argsort(-dist[ys, xs], kind="stable")[:MAX_CANDIDATES]
        xs, ys = xs[order], ys[order]
        rects = np.stack([xs - w // 2, ys - h // 2, xs + w // 2, ys + h // 2], 1)
        x1, y1 = rects[:, 0].clip(0, width), rects[:, 1].clip(0, height)
        x2, y2 = (rects[:, 2] + 1).clip(0, width), (rects[:, 3] + 1).clip(0, height)
        integral = cv2.integral(mask)
        filled = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
        in_frame = (rects[:, 0] >= 0) & (rects[:, 1] >= 0) & (rects[:, 2] < width) & (rects[:, 3] < height)
        inside = in_frame & (filled == (rects[:, 2] - rects[:, 0] + 1) * (rects[:, 3] - rects[:, 1] + 1))
        free = in_frame & ~_overlaps(rects, placed)
        if (inside & free).any():  # the most interior spot where the label fits
            k = int(np.argmax(inside & free))
        elif free.any():  # too small for the label: the free spot where the label covers most of the region
            k = int(np.argmax(np.where(free, filled, -1)))
        else:
            k = 0
        rect = tuple(int(v) for v in rects[k])
        placed.append(rect)
        out[int(i)] = Placement(center=(int(xs[k]), int(ys[k])), rect=rect, inside=bool(inside[k]))
    return [out[i] for i in range(n)]


def reading_order(points: Sequence[tuple[int, int]], row_height: float) -> list[int]:
    """Indices of points top-to-bottom, then left-to-right within rows ``row_height`` tall."""
    order = sorted(range(len(points)), key=lambda i: points[i][1])
    rows: list[list[int]] = []
    for i in order:
        if rows and points[i][1] - points[rows[-1][0]][1] <= row_height:
            rows[-1].append(i)
        else:
            rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda j: points[j][0])]


def assign_colors(regions: np.ndarray, margin: int = 3) -> list[tuple[int, int, int]]:
    """A palette colour per region: never one of a touching region's (within ``margin`` px) where the palette
    allows, and otherwise the least used so far, so colours spread over the image. Greedy, in region order."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    grown = [cv2.dilate(r.astype(np.uint8), kernel).astype(bool) for r in regions]
    colors: list[int] = []
    for i in range(len(regions)):
        taken = {colors[j] for j in range(i) if (grown[i] & regions[j]).any()}
        free = [c for c in range(len(PALETTE)) if c not in taken] or list(range(len(PALETTE)))
        colors.append(min(free, key=lambda c: (colors.count(c), c)))
    return [PALETTE[c] for c in colors]


def draw_marks(image: Image.Image, regions: np.ndarray, placements: Sequence[Placement], labels: Sequence[str],
               colors: Sequence[tuple[int, int, int]], style: LabelStyle) -> Image.Image:
    """Translucent fills and outlines of the regions, then the numbered labels, all drawn by supervision."""
    scene = image.convert("RGB").copy()  # a PIL scene: supervision converts RGB<->BGR itself
    if not len(regions):
        return scene
    palette = sv.ColorPalette([sv.Color(*c) for c in colors])
    det = sv.Detections(xyxy=sv.mask_to_xyxy(regions).astype(float), mask=regions)
    scene = sv.MaskAnnotator(color=palette, opacity=0.3, color_lookup=sv.ColorLookup.INDEX).annotate(scene, det)
    scene = sv.PolygonAnnotator(color=palette, thickness=max(1, style.thickness),
                                color_lookup=sv.ColorLookup.INDEX).annotate(scene, det)
    anchors = sv.Detections(xyxy=np.array([[x, y, x, y] for x, y in (p.center for p in placements)], dtype=float))
    text = sv.ColorPalette([sv.Color(*text_color_for(c)) for c in colors])
    labeler = sv.LabelAnnotator(color=palette, text_color=text, text_scale=style.scale,
                                text_thickness=style.thickness, text_padding=style.padding,
                                text_position=sv.Position.CENTER, color_lookup=sv.ColorLookup.INDEX)
    return labeler.annotate(scene, anchors, labels=list(labels))
