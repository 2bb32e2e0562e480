"""Generated woven textures with subtle defects: a reproducible anomaly-detection set that needs no download.

A plain weave: warp threads (vertical) and weft threads (horizontal) cross over and under each other; every image
has its own thread pitch jitter, phase, yarn colour, lighting gradient and sensor noise. Defects are kept subtle
(a trivial patch-mean score separates them poorly):

- ``scratch``: a thin, slightly lighter line across a few threads at a random angle;
- ``blot``: a soft, low-contrast stain a few threads wide;
- ``missing``: a short stretch where one weft thread is missing (the warp shows through).

``make_set(out)`` writes ``normal_fit/`` (to fit on), ``test/`` (normal and defective) and ``labels.csv``
(``id,path,label`` with ``normal``/``anomaly``, paths relative to ``out``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

DEFECTS = ("scratch", "blot", "missing")


def _threads(n: int, pitch: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel along one axis: the thread index and the position across the thread (0..1), pitch jittered."""
    widths = pitch * (1 + 0.04 * rng.standard_normal(n))
    edges = np.concatenate([[0.0], np.cumsum(widths)]) - rng.uniform(0, pitch)
    x = np.arange(n) + 0.5
    idx = np.searchsorted(edges, x) - 1
    idx = np.clip(idx, 0, len(widths) - 1)
    pos = (x - edges[idx]) / widths[idx]
    return idx, np.clip(pos, 0, 1)


def weave(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A normal woven texture, float RGB in 0..1, and what a defect needs to know (the weft threads' rows)."""
    pitch = rng.uniform(7.5, 8.5)
    wi, wp = _threads(size, pitch, rng)  # warp: columns
    fi, fp = _threads(size, pitch, rng)  # weft: rows
    warp_profile = np.sin(np.pi * wp) ** 0.6  # a round yarn: bright in the middle
    weft_profile = np.sin(np.pi * fp) ** 0.6
    over = ((wi[None, :] + fi[:, None]) % 2 == 0)  # plain weave: warp on top on the even crossings
    shade = np.where(over, 0.55 + 0.4 * warp_profile[None, :], 0.5 + 0.4 * weft_profile[:, None])
    gap = np.minimum(warp_profile[None, :] + 0.15, weft_profile[:, None] + 0.15)
    shade = shade * np.clip(0.35 + gap, 0, 1)
    base = np.array([0.62, 0.55, 0.45]) + 0.04 * rng.standard_normal(3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = 1 + 0.08 * (rng.uniform(-1, 1) * (xx - 0.5) + rng.uniform(-1, 1) * (yy - 0.5))
    img = shade[..., None] * base[None, None, :] * light[..., None]
    return img, {"weft_rows": fi, "weft_pos": fp, "warp_profile": warp_profile, "over": over, "base": base,
                 "light": light}


def add_defect(img: np.ndarray, kind: str, info: dict, rng: np.random.Generator) -> np.ndarray:
    """``img`` with one subtle defect of ``kind`` away from the border."""
    size = img.shape[0]
    out = img.copy()
    cy, cx = rng.uniform(0.25, 0.75, size=2) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.15, 0.3) * size
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        mask = np.exp(-0.5 * (across / 0.8) ** 2) * (np.abs(along) < length / 2)
        out = out + 0.12 * mask[..., None]
    elif kind == "blot":
        r = rng.uniform(0.04, 0.07) * size
        mask = np.exp(-0.5 * (((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2))
        tint = np.array([-0.10, -0.08, -0.03]) * rng.choice([-1, 1])
        out = out + mask[..., None] * tint[None, None, :]
    elif kind == "missing":
        rows = info["weft_rows"]
        target = rows[int(cy)]
        length = rng.uniform(0.15, 0.3) * size
        gone = (rows[:, None] == target) & (np.abs(xx - cx) < length / 2)
        warp_only = (0.55 + 0.4 * info["warp_profile"][None, :]) * 0.85  # the warp seen through the gap, darker
        val = warp_only[..., None] * info["base"][None, None, :] * info["light"][..., None]
        out = np.where(gone[..., None], np.broadcast_to(val, out.shape), out)
    else:
        raise ValueError(f"defect kind must be one of {DEFECTS}, found {kind!r}")
    return out


def render(img: np.ndarray, rng: np.random.Generator) -> Image.Image:
    noisy = img + 0.02 * rng.standard_normal(img.shape)
    return Image.fromarray((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8))


def make_set(out: Path, *, n_fit: int = 30, n_normal: int = 20, n_defect: int = 20, size: int = 256,
             seed: int = 0) -> Path:
    """Write the set under ``out``; returns the labels file."""
    rng = np.random.default_rng(seed)
    (out / "normal_fit").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    for i in range(n_fit):
        render(weave(size, rng)[0], rng).save(out / "normal_fit" / f"fit_{i:03d}.png")
    rows = []
    for i in range(n_normal):
        render(weave(size, rng)[0], rng).save(out / "test" / f"normal_{i:03d}.png")
        rows.append((f"normal_{i:03d}", f"test/normal_{i:03d}.png", "normal"))
    for i in range(n_defect):
        kind = DEFECTS[i % len(DEFECTS)]
        img, info = weave(size, rng)
        render(add_defect(img, kind, info, rng), rng).save(out / "test" / f"{kind}_{i:03d}.png")
        rows.append((f"{kind}_{i:03d}", f"test/{kind}_{i:03d}.png", "anomaly"))
    labels = out / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "label"])
        w.writerows(rows)
    return labels
