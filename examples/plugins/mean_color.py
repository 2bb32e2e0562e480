"""``mean_color``: a plug-in tool for vqa — the dominant colours of a photo's main object, named in English and Korean.

Copy this file anywhere, put its folder on ``PYTHONPATH`` and register it in a config file::

    [tools.register]
    mean_color = "mean_color:MeanColorTool"

    [tools.settings.mean_color]   # optional: the constructor's settings
    colors = 4

then ``vqa ask car.png "What color is the car?" -c red -c blue --tools mean_color --config cfg.toml``; the router
also picks it by itself for colour questions ("무슨 색", "what colour"). An installed package registers it with an
entry point instead: ``[project.entry-points."vqa.tools"] mean_color = "mean_color:MeanColorTool"``.

How it works: every pixel of a small copy of the photo is named by the nearest entry of a colour-name table in
CIELAB (OpenCV's conversion), 11 basic colours each with a few shades. A colour's ``share`` is its part of the
photo; its ``object_share`` estimates its part of the main object: pixels near the centre count more (a Gaussian
weight), and a colour that is as common along the border as in the centre (sky, road, wall) is discounted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel

from agent.core.errors import ConfigError
from agent.core.evidence import Evidence, Table
from agent.core.schema import Question
from tools.base import Routing, Tool

# name, Korean name, words that name it in an option (English as whole words, Korean as parts), shades (sRGB)
COLORS: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("red", "빨간색", ("red", "crimson", "scarlet", "빨간", "빨강", "붉은", "레드", "적색"),
     ("#ff0000", "#e53935", "#c81e28", "#b22222", "#8b0000")),
    ("orange", "주황색", ("orange", "주황", "오렌지"), ("#ff8c00", "#ffa500", "#f57c00", "#e06000")),
    ("yellow", "노란색", ("yellow", "gold", "golden", "노란", "노랑", "황색", "금색", "옐로"),
     ("#ffff00", "#ffd700", "#f0e130", "#e6c200")),
    ("green", "초록색", ("green", "lime", "olive", "초록", "녹색", "연두", "그린", "풀색"),
     ("#008000", "#00c000", "#228b22", "#32cd32", "#556b2f", "#90ee90")),
    ("blue", "파란색", ("blue", "navy", "sky blue", "azure", "파란", "파랑", "청색", "하늘색", "남색", "블루"),
     ("#0000ff", "#1e40c0", "#4169e1", "#1e90ff", "#000080", "#87ceeb", "#5f9ea0")),
    ("purple", "보라색", ("purple", "violet", "lavender", "보라", "자주", "퍼플"),
     ("#800080", "#8a2be2", "#9370db", "#4b0082")),
    ("pink", "분홍색", ("pink", "분홍", "핑크"), ("#ffc0cb", "#ff69b4", "#ff1493", "#f4a6b8")),
    ("brown", "갈색", ("brown", "tan", "beige", "갈색", "밤색", "고동색", "브라운", "베이지"),
     ("#8b4513", "#a0522d", "#654321", "#d2b48c", "#c19a6b")),
    ("black", "검은색", ("black", "검은", "검정", "까만", "블랙", "흑색"), ("#000000", "#1c1c1c")),
    ("white", "흰색", ("white", "흰", "하얀", "하양", "화이트", "백색"), ("#ffffff", "#f2f2f2")),
    ("gray", "회색", ("gray", "grey", "silver", "회색", "그레이", "잿빛", "은색"),
     ("#808080", "#a9a9a9", "#5a5a5a", "#c8c8c8", "#3c3c3c")),
]
_KO = re.compile(r"[\uac00-\ud7a3]")


def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    parts = [re.escape(w) if _KO.search(w) else rf"\b{re.escape(w)}\b" for w in words]
    return re.compile("|".join(parts), re.IGNORECASE)


WORDS = {name: _word_pattern(words) for name, _, words, _ in COLORS}
KOREAN = {name: ko for name, ko, _, _ in COLORS}


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 ``(..., 3)`` -> CIELAB float ``(..., 3)`` (L in 0..100)."""
    flat = rgb.reshape(1, -1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def _shade_table() -> tuple[np.ndarray, np.ndarray]:
    rgb, owner = [], []
    for i, (_, _, _, shades) in enumerate(COLORS):
        for h in shades:
            rgb.append([int(h[k:k + 2], 16) for k in (1, 3, 5)])
            owner.append(i)
    return to_lab(np.array(rgb, dtype=np.uint8)), np.array(owner)


SHADES_LAB, SHADE_OWNER = _shade_table()


def name_pixels(rgb: np.ndarray) -> np.ndarray:
    """The index in ``COLORS`` of every pixel of an ``(h, w, 3)`` sRGB array (nearest shade in CIELAB)."""
    lab = to_lab(rgb).reshape(-1, 3)
    dist = ((lab[:, None, :] - SHADES_LAB[None, :, :]) ** 2).sum(-1)
    return SHADE_OWNER[dist.argmin(1)].reshape(rgb.shape[:2])


class ColorShare(BaseModel):
    name: str  # English basic colour name
    name_ko: str
    rgb: str  # mean colour of its pixels, "#rrggbb"
    share: float  # part of the whole photo, 0..1
    object_share: float  # estimated part of the main object, 0..1


def dominant_colors(image: Image.Image, *, colors: int = 4, max_side: int = 96, center_sigma: float = 0.3,
                    border: float = 0.1) -> list[ColorShare]:
    """The ``colors`` colours with the largest ``object_share`` (then ``share``), largest first."""
    small = image.convert("RGB")
    small.thumbnail((max_side, max_side))
    rgb = np.asarray(small)
    h, w = rgb.shape[:2]
    names = name_pixels(rgb)
    ys, xs = np.mgrid[0:h, 0:w]
    weight = np.exp(-0.5 * (((xs + 0.5) / w - 0.5) ** 2 + ((ys + 0.5) / h - 0.5) ** 2) / center_sigma ** 2)
    bw, bh = max(1, round(border * w)), max(1, round(border * h))
    edge = np.zeros((h, w), bool)
    edge[:bh], edge[-bh:], edge[:, :bw], edge[:, -bw:] = True, True, True, True
    n = len(COLORS)
    share = np.bincount(names.ravel(), minlength=n) / names.size
    center = np.bincount(names.ravel(), weights=weight.ravel(), minlength=n) / weight.sum()
    rim = np.bincount(names[edge], minlength=n) / edge.sum()
    score = center * (center / np.maximum(center + rim, 1e-9)) ** 2  # central, and more central than on the border
    obj = score / score.sum() if score.sum() > 0 else share
    order = sorted(range(n), key=lambda i: (-obj[i], -share[i]))
    out = []
    for i in order[:colors]:
        if share[i] == 0:
            break
        mean = rgb[names == i].reshape(-1, 3).mean(0).round().astype(int)
        out.append(ColorShare(name=COLORS[i][0], name_ko=COLORS[i][1], rgb="#" + "".join(f"{v:02x}" for v in mean),
                              share=round(float(share[i]), 4), object_share=round(float(obj[i]), 4)))
    return out


def option_colors(option: str) -> list[str]:
    """The basic colours an option names (``"빨간색"`` -> ``["red"]``, ``"red and white"`` -> both)."""
    return [name for name, pattern in WORDS.items() if pattern.search(option)]


class MeanColorEvidence(Evidence):
    """The main object's colours and the whole photo's, largest first."""

    tool: Literal["mean_color"] = "mean_color"
    colors: list[ColorShare]

    color: ClassVar[str] = "#b5179e"

    def prompt_lines(self) -> list[str]:
        if not self.colors:
            return ["no colours measured"]
        return ["main object = the centre of the photo, colours common along its border discounted"] + [
            f"color={c.name} ({c.name_ko}) object_share={c.object_share:.2f} photo_share={c.share:.2f} rgb={c.rgb}"
            for c in self.colors]

    def summary(self, limit: int = 6) -> str:
        shown = ", ".join(f"{c.name} {c.object_share:.0%}" for c in self.colors[:limit])
        return f"main object: {shown}" if shown else "no colours measured"

    def table(self) -> Table | None:
        return Table("Colours", ["colour", "한국어", "rgb", "object share", "photo share"],
                     rows=[[c.name, c.name_ko, c.rgb, f"{c.object_share:.2f}", f"{c.share:.2f}"] for c in self.colors])

    def support(self, question: Question) -> dict[str, float] | None:
        """An option naming colours gets the largest ``object_share`` among them; ``None`` when no option names a
        colour (the question is not about colours)."""
        named = {k: option_colors(v) for k, v in question.options.items()}
        if not any(named.values()):
            return None
        share = {c.name: c.object_share for c in self.colors}
        return {k: max((share.get(c, 0.0) for c in cs), default=0.0) for k, cs in named.items()}


class MeanColorTool(Tool):
    name = "mean_color"
    evidence = MeanColorEvidence
    description = ("Names the dominant colours of the photo's main object (its centre, colours unlike the border) "
                   "and of the whole photo, in English and Korean, with their shares and mean RGB.")
    limitations = ("Assumes the object asked about is central and differs from the background; cannot tell which "
                   "of several objects a question means. Lighting and white balance shift colours; only 11 basic "
                   "colour names (no 'navy' or 'beige' as such).")
    routing = Routing(keywords=(r"무슨\s*색|어떤\s*색|색깔|색상|\bcolou?rs?\b",),
                      examples=("이 꽃은 어떤 색깔인가요?", "What colour is the woman's dress?"))

    def __init__(self, *, colors: int = 4, max_side: int = 96, center_sigma: float = 0.3, border: float = 0.1) -> None:
        if colors < 1 or max_side < 8:
            raise ConfigError(f"mean_color colors must be >= 1 and max_side >= 8, found {colors} and {max_side}")
        if not (0 < center_sigma <= 1 and 0 < border < 0.5):
            raise ConfigError(f"mean_color center_sigma must be in (0, 1] and border in (0, 0.5), found "
                              f"{center_sigma} and {border}")
        super().__init__(colors=colors, max_side=max_side, center_sigma=center_sigma, border=border)

    def cache_inputs(self, question: Question) -> dict:
        return {}  # the colours depend on the image only

    def load(self) -> None:
        pass  # no weights

    def apply(self, image: Image.Image, question: Question, workdir: Path | None,
              peers: Mapping[str, Tool]) -> tuple[MeanColorEvidence, dict[str, str]]:
        return MeanColorEvidence(colors=dominant_colors(image, **self.settings)), {}
