"""``anomaly``: is this product photo defective? A PatchCore-style score against a model of normal photos.

Configured by ``[anomaly] model = MODEL`` (a file from ``vqa anomaly fit NORMAL_DIR --out MODEL``); without one the
tool is unavailable and the router's pick is skipped. The evidence: the image score, the threshold fitted on
the normal photos, the verdict (``anomaly`` when the score is above it), the most anomalous region (a box in the
image's pixels) and a heat map drawn into the question's artifacts (``anomaly.jpg``). The evidence reasoner
answers a yes/no or normal/defective question from the verdict (``AnomalyEvidence.support``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from agent.core.evidence import Evidence, quote_json
from agent.core.images import encode_jpeg
from agent.core.schema import Question
from tools.base import Routing, Tool, ToolUnavailable
from tools.imports import lazy

cv2 = lazy("cv2")

# Words that say an option (or the question) is about a defect, and words that say "normal"; yes/no words.
DEFECT = re.compile(r"결함|불량|흠집?|긁힘|스크래치|파손|손상|얼룩|찍힘|하자|이상(?!\s*없)|비정상|defect|damage|"
                    r"scratch|stain|flaw|faulty|anomal|broken|crack", re.IGNORECASE)
NORMAL = re.compile(r"정상|양품|이상\s*없|문제\s*없|깨끗|\bnormal\b|\bok\b|\bfine\b|\bgood\b|no defect|intact|clean",
                    re.IGNORECASE)
YES = re.compile(r"^\s*(?:예|네|응|맞(?:다|아요|습니다)|그렇다|있(?:다|음|어요|습니다)|yes|true|y)\b", re.IGNORECASE)
NO = re.compile(r"^\s*(?:아니(?:오|요|다)?|없(?:다|음|어요|습니다)|no|false|n)\b", re.IGNORECASE)


def option_says_anomaly(option: str, question: str) -> bool | None:
    """``True`` when choosing ``option`` means "defective", ``False`` when it means "normal", ``None`` unknown."""
    if NORMAL.search(option):
        return False
    if DEFECT.search(option):
        return True
    yes, no = bool(YES.search(option)), bool(NO.search(option))
    if yes == no:
        return None
    asks_normal = bool(NORMAL.search(question)) and not DEFECT.search(question)
    return yes != asks_normal


class AnomalyEvidence(Evidence):
    tool: Literal["anomaly"] = "anomaly"
    score: float  # the image's anomaly score (max of the smoothed patch-distance map)
    threshold: float  # fitted on the normal images
    verdict: Literal["normal", "anomaly"]
    region: list[float]  # [x1, y1, x2, y2] of the most anomalous region, image pixels
    image_size: list[int]
    spread: float = 1.0  # the normal scores' standard deviation: how far above the threshold is far
    model: str = ""
    backbone: str = ""
    color = "#d81b60"

    def prompt_lines(self) -> list[str]:
        return [f"verdict={quote_json(self.verdict)} (score {self.score:.3f}, threshold {self.threshold:.3f}; "
                "above the threshold means unlike the normal examples)",
                f"most_anomalous_region={quote_json([round(v) for v in self.region])} (x1, y1, x2, y2 in pixels)"]

    def summary(self, limit: int = 6) -> str:
        return f"{self.verdict} (score {self.score:.2f} vs threshold {self.threshold:.2f})"

    def probability(self) -> float:
        """How sure the verdict "anomaly" is: a logistic of the distance to the threshold in normal spreads."""
        z = (self.score - self.threshold) / max(self.spread, 1e-6)
        return 1 / (1 + math.exp(-max(min(z, 30.0), -30.0)))

    def support(self, question: Question) -> dict[str, float] | None:
        p = self.probability()
        out = {}
        for letter, option in question.options.items():
            says = option_says_anomaly(option, question.text)
            if says is not None:
                out[letter] = p if says else 1 - p
        return out or None


class AnomalyConfig(BaseModel):
    """``[anomaly]`` settings."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None  # a file written by `vqa anomaly fit`
    heatmap: bool = True  # draw the heat map artifact


def heat_map(image: Image.Image, amap: np.ndarray, threshold: float, box: list[float]) -> Image.Image:
    """The photo with the anomaly map blended over it (red at and above the threshold) and the region boxed."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    up = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    norm = np.clip(up / max(threshold, 1e-6), 0, 1)
    color = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    out = (0.55 * rgb + 0.45 * color).astype(np.uint8)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), max(1, w // 200))
    return Image.fromarray(out)


def anomalous_region(amap: np.ndarray, size: tuple[int, int]) -> list[float]:
    """The box (image pixels) of the connected part of the map around its maximum that is above half-way from
    the map's median to its maximum."""
    h, w = amap.shape
    peak, median = float(amap.max()), float(np.median(amap))
    mask = (amap >= median + 0.5 * (peak - median)).astype(np.uint8)
    _, labels = cv2.connectedComponents(mask)
    iy, ix = np.unravel_index(int(amap.argmax()), amap.shape)
    ys, xs = np.nonzero(labels == labels[iy, ix])
    sx, sy = size[0] / w, size[1] / h
    return [float(xs.min() * sx), float(ys.min() * sy), float((xs.max() + 1) * sx), float((ys.max() + 1) * sy)]


class AnomalyTool(Tool):
    name = "anomaly"
    evidence = AnomalyEvidence
    Config = AnomalyConfig
    commands = "tools.anomaly.cli:app"  # vqa anomaly fit / eval / textures
    eval_task = "tools.anomaly.cli:eval_cmd"  # vqa eval --task anomaly
    cost = 0.5  # the offline backbone: filters and a nearest-neighbour search, well under a second per image
    routing = Routing(
        keywords=(r"결함|불량|흠집|긁힘|스크래치|파손|찍힘|하자|비정상",
                  r"\b(?:defects?|defective|faulty|flaws?|flawed|scratch(?:ed|es)?|anomal(?:y|ous|ies)|"
                  r"manufacturing (?:error|fault))\b"),
        examples=("이 부품에 결함이 있나요?", "이 제품은 정상인가요, 불량인가요?", "Is this part defective?",
                  "Does the fabric have any flaws?"),
        why="asks whether the item is defective")
    description = ("Says whether a product or surface photo is normal or defective, compared with a model of normal "
                   "photos (vqa anomaly fit): an anomaly score, the threshold, the verdict, the most anomalous "
                   "region and a heat map.")
    limitations = ("Only meaningful for the kind of item its model was fitted on, photographed the same way; the "
                   "offline default backbone (fixed filters) sees texture and colour changes, not missing parts of "
                   "objects. Needs [anomaly] model = MODEL.")

    def __init__(self, *, model: str | None = None, heatmap: bool = True) -> None:
        super().__init__(**({"model": str(model)} if model else {}), heatmap=heatmap)
        self._model = None

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of the model file: a refitted model gives other results under the same path."""
        path = self.settings.get("model")
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path and Path(path).is_file() else ""

    def load(self) -> None:
        from tools.anomaly.patchcore import AnomalyModel

        path = self.settings.get("model")
        if not path:
            raise ToolUnavailable("no anomaly model: fit one with `vqa anomaly fit NORMAL_DIR --out MODEL` and set "
                                  "[anomaly] model = MODEL in the config file")
        self._model = AnomalyModel.load(path)

    def apply(self, image: Image.Image, question: Question, workdir: Path | None,
              peers: Mapping[str, Tool]) -> tuple[AnomalyEvidence, dict[str, str]]:
        m = self._model
        score, amap = m.score(image)
        box = anomalous_region(amap, image.size)
        spread = float(np.std(m.normal_scores)) if m.normal_scores else 1.0
        ev = AnomalyEvidence(score=round(score, 4), threshold=round(m.threshold, 4),
                             verdict="anomaly" if score > m.threshold else "normal", region=[round(v, 1) for v in box],
                             image_size=list(image.size), spread=round(spread, 4),
                             model=Path(self.settings["model"]).name, backbone=m.backbone)
        if not self.settings.get("heatmap", True):
            return ev, {}
        data = encode_jpeg(heat_map(image, amap, m.threshold, box), quality=90)
        if workdir is not None:
            path = Path(workdir) / "anomaly.jpg"
        else:
            path = Path(tempfile.gettempdir()) / "vqa-anomaly" / (hashlib.sha1(data).hexdigest()[:20] + ".jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return ev, {"heatmap": str(path)}
