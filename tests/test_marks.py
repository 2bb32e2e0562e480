"""Set-of-Mark layout on real photos: numbers inside their regions, labels never overlapping, readable contrast.

Regions come from classic segmentation of the example photos (coins: Otsu threshold; astronaut and chelsea:
SLIC superpixels, which tile the whole image with many neighbours), so the layout is tested on real shapes
without SAM weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage import filters, measure, segmentation

from tools.marks import (
    LABEL_GAP,
    PALETTE,
    LabelStyle,
    assign_colors,
    contrast_ratio,
    disjoint_regions,
    draw_marks,
    label_rect,
    place_labels,
    reading_order,
    text_color_for,
)

IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"


def coin_regions(img: Image.Image) -> np.ndarray:
    grey = np.asarray(img.convert("L"))
    labels = measure.label(ndi.binary_fill_holes(grey > filters.threshold_otsu(grey)))
    return np.stack([labels == i for i in range(1, labels.max() + 1) if (labels == i).sum() > 100])


def superpixels(img: Image.Image, n: int) -> np.ndarray:
    labels = segmentation.slic(np.asarray(img), n_segments=n, compactness=10, start_label=1)
    return np.stack([labels == i for i in range(1, labels.max() + 1)])


CASES = {"coins": ("coins.jpg", coin_regions), "astronaut": ("astronaut.jpg", lambda im: superpixels(im, 30)),
         "chelsea": ("chelsea.jpg", lambda im: superpixels(im, 24))}


@pytest.fixture(scope="module", params=list(CASES))
def layout(request):
    name, make = CASES[request.param]
    img = Image.open(IMAGES / name).convert("RGB")
    regions = disjoint_regions(make(img))
    style = LabelStyle.for_image(img.size)
    wh = style.size("88")
    placements = place_labels(regions, wh)
    return img, regions, wh, placements, style


def test_every_number_sits_inside_its_region(layout) -> None:
    img, regions, wh, placements, _ = layout
    assert len(placements) == len(regions) >= 15
    for region, p in zip(regions, placements):
        x, y = p.center
        assert region[y, x], f"label centre {p.center} is outside its region"
        assert p.inside, f"label {p.rect} does not fit inside its region"
        x1, y1, x2, y2 = p.rect
        assert region[y1:y2 + 1, x1:x2 + 1].all()
        assert (x2 - x1, y2 - y1) == (wh[0] // 2 * 2, wh[1] // 2 * 2) and p.rect == label_rect(p.center, wh)


def test_labels_never_overlap_and_stay_in_the_frame(layout) -> None:
    img, _, _, placements, _ = layout
    rects = [p.rect for p in placements]
    for i, a in enumerate(rects):
        assert 0 <= a[0] and 0 <= a[1] and a[2] < img.width and a[3] < img.height
        for b in rects[i + 1:]:
            apart = a[2] + LABEL_GAP <= b[0] or b[2] + LABEL_GAP <= a[0] or a[3] + LABEL_GAP <= b[1] \
                or b[3] + LABEL_GAP <= a[1]
            assert apart, f"labels {a} and {b} overlap"


def test_each_palette_colour_has_readable_text() -> None:
    for fill in PALETTE:
        assert contrast_ratio(text_color_for(fill), fill) >= 4.5, fill
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast_ratio((119, 119, 119), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)  # WCAG's own example


def test_touching_regions_get_different_colours(layout) -> None:
    _, regions, _, _, _ = layout
    colors = assign_colors(regions)
    grown = [ndi.binary_dilation(r, iterations=3) for r in regions]
    touching = [(i, j) for i in range(len(regions)) for j in range(i) if (grown[i] & regions[j]).any()]
    assert all(colors[i] != colors[j] for i, j in touching)
    assert len(set(colors)) >= min(len(regions), len(PALETTE)) // 2  # spread over the palette, not one colour


def test_drawn_labels_have_their_fill_and_contrasting_text(layout) -> None:
    img, regions, _, placements, style = layout
    colors = assign_colors(regions)
    out = np.asarray(draw_marks(img, regions, placements, [str(i + 1) for i in range(len(regions))], colors, style))
    assert out.shape == np.asarray(img).shape
    for i, (p, fill) in enumerate(zip(placements, colors)):
        x1, y1, x2, y2 = drawn = label_rect(p.center, style.size(str(i + 1)))  # "1" is narrower than "88"
        assert p.rect[0] <= x1 and p.rect[1] <= y1 and x2 <= p.rect[2] and y2 <= p.rect[3]
        box = out[y1 + 1:y2, x1 + 1:x2].reshape(-1, 3).astype(int)
        assert (out[y1 + 1, x1 + 1] == fill).all() and (out[y2 - 1, x2 - 1] == fill).all(), f"label fill {drawn}"
        ink = np.abs(box - np.array(text_color_for(fill))).sum(1) < 60
        assert ink.sum() >= 8, "the number is drawn in the contrasting text colour"
    outside = np.ones(regions.shape[1:], bool)
    for p in placements:
        outside[p.rect[1]:p.rect[3] + 1, p.rect[0]:p.rect[2] + 1] = False
    covered = regions.any(0) & outside
    assert (out[covered] != np.asarray(img)[covered]).any(axis=1).mean() > 0.9  # regions are tinted


def test_smaller_mask_stays_on_top_where_masks_overlap() -> None:
    person = np.zeros((20, 20), bool)
    person[2:18, 2:18] = True
    shirt = np.zeros((20, 20), bool)
    shirt[8:14, 6:14] = True
    regions = disjoint_regions(np.stack([person, shirt]))
    assert regions[1].sum() == shirt.sum() and regions[0].sum() == person.sum() - shirt.sum()
    assert not (regions[0] & regions[1]).any()


def test_a_region_too_small_for_its_label_still_gets_its_centre_inside() -> None:
    tiny = np.zeros((1, 60, 60), bool)
    tiny[0, 30:34, 30:34] = True
    [p] = place_labels(tiny, (21, 18))
    assert tiny[0, p.center[1], p.center[0]] and not p.inside


def test_reading_order_is_rows_top_down_then_left_to_right() -> None:
    points = [(50, 12), (10, 10), (30, 40), (5, 45), (90, 8)]
    assert reading_order(points, row_height=10) == [1, 0, 4, 3, 2]
