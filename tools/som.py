"""``som``: Set-of-Mark prompting. SAM segments the photo into regions, numbered marks are drawn on a copy, and the
reasoner gets that marked image plus a table (mark -> box, area, label).

Regions come from ``detect``'s boxes when the graph also routed ``detect`` (SAM prompted with each box, labels
kept), else from SAM's automatic mask generation (a point grid, quality and stability filters, box NMS), capped
at ``max_regions``. SAM runs through transformers (a hub id or folder: ``tools.sam_transformers``) or through the
original ``segment-anything`` package (a released ``sam_vit_*.pth`` file: ``tools.sam_original``). Layout and
colours are ``tools.marks`` (numbers inside their regions, labels never overlapping, black or white text by
contrast); drawing is supervision's.

The marked image is written to ``workdir/som.jpg`` when there is a run directory, else to
``$TMPDIR/vqa-som/<content hash>.jpg``; either path is the ``marked`` artifact, which the graph's ``reason`` node
opens and passes to the reasoner as a second image. The trace keeps the path.
"""

from __future__ import annotations

import hashlib
import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agent.core.errors import ConfigError, brief
from agent.core.images import encode_jpeg
from agent.core.phrases import target
from agent.core.schema import Mark, Question, SomEvidence
from tools.base import Routing, Tool
from tools.detect import DetectTool, Grounded, sources_digest
from tools.imaging import fit_within
from tools.imports import lazy
from tools.marks import LabelStyle, assign_colors, disjoint_regions, draw_marks, place_labels, reading_order

sv = lazy("supervision")

DEFAULT_SEGMENTER = "facebook/sam-vit-base"
BACKENDS = {"transformers": "tools.sam_transformers:TransformersSam",  # lazy, like the tool registry
            "segment-anything": "tools.sam_original:OriginalSam"}


# ---------------------------------------------------------------- plain functions (no model)

def select_regions(masks: np.ndarray, priority: np.ndarray, min_area: float,
                   max_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, regions)``: at most ``max_regions`` masks (highest ``priority`` first) made disjoint, each
    covering at least ``min_area`` of the image once the smaller masks on top of it are taken out."""
    keep = np.arange(len(masks))
    total = float(np.prod(masks.shape[1:])) if len(masks) else 1.0
    for _ in range(4):
        regions = disjoint_regions(masks[keep])
        big = regions.sum((1, 2)) / total >= min_area
        if big.all() and len(keep) <= max_regions:
            return keep, regions
        cand = keep[big]
        keep = np.sort(cand[np.argsort(-priority[cand], kind="stable")[:max_regions]])
    regions = disjoint_regions(masks[keep])
    nonempty = regions.any((1, 2))
    return keep[nonempty], regions[nonempty]


def save_marked(image: Image.Image, workdir: Path | None) -> Path:
    """``workdir/som.jpg``, or a content-addressed file under the temp folder when there is no run directory."""
    data = encode_jpeg(image, quality=90)
    if workdir is not None:
        path = Path(workdir) / "som.jpg"
    else:
        folder = Path(tempfile.gettempdir()) / "vqa-som"
        folder.mkdir(exist_ok=True)
        path = folder / (hashlib.sha1(data).hexdigest()[:20] + ".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- the tool

class SomTool(Tool):
    name = "som"
    routing = Routing(
        keywords=(  # searched in the lower-cased question; high precision
            r"왼쪽|오른쪽|좌측|우측|위쪽|아래쪽|앞쪽|뒤쪽|중앙|옆에|앞에|뒤에|사이에|가장\s*(?:큰|작은|가까운|먼|높은|낮은)|"
            r"어디에(?!서)|어느\s*쪽|어느\s*위치",
            r"\b(?:the|to|on|at)\s+(?:far\s+|very\s+)?(?:left|right)\b|"
            r"\b(?:left|right)(?:-hand)?\s+(?:side|corner|of|end)\b|"
            r"\b(?:above|below|beneath|behind|in front of|next to|between|in the middle|largest|smallest|closest|"
            r"nearest|farthest|which (?:one|side))\b",
        ),
        why="asks about positions in the picture")
    flags = {"segmenter": "model"}  # top-level settings (CLI flags) -> constructor keys
    cost = 8.0  # rough CPU seconds per image: the planners' prior
    evidence = SomEvidence
    uses = ("detect",)  # a routed detect's boxes seed the regions
    description = ("Draws numbered marks on the photo's regions (objects, parts, background) and lists each mark's "
                   "box, area and label, so the answer can point at regions: left/right, largest, which one.")
    limitations = ("SAM regions follow edges, not meaning: one object may split into parts or merge with "
                   "neighbours; at most max_regions marks, small regions dropped. Labels exist only for regions "
                   "seeded by detect's boxes.")

    def __init__(self, *, model: str = DEFAULT_SEGMENTER, max_regions: int = 24, min_area: float = 0.002,
                 points_per_side: int = 16, points_per_batch: int = 64, pred_iou_thresh: float = 0.86,
                 stability_thresh: float = 0.92, nms_iou: float = 0.7, max_side: int | None = 1024,
                 backend: str = "auto", device: str = "auto") -> None:
        """``points_per_side``: the automatic grid (16 -> 256 prompts, 3 masks each); ``pred_iou_thresh`` and
        ``stability_thresh`` filter those masks as SAM's generator does; ``max_side`` caps the marked image.
        ``backend``: ``auto`` reads a ``.pth`` file with segment-anything and anything else with transformers."""
        if max_regions < 1 or points_per_side < 1:
            raise ConfigError(f"som max_regions and points_per_side must be at least 1, found {max_regions} and "
                              f"{points_per_side}")
        if backend not in ("auto", *BACKENDS):
            raise ConfigError(f"som backend must be one of {['auto', *BACKENDS]}, found {backend!r}")
        if not 0.0 <= min_area < 1.0:
            raise ConfigError(f"som min_area is a share of the image in [0, 1), found {min_area}")
        super().__init__(model=str(model), max_regions=max_regions, min_area=min_area,
                         points_per_side=points_per_side, points_per_batch=points_per_batch,
                         pred_iou_thresh=pred_iou_thresh, stability_thresh=stability_thresh, nms_iou=nms_iou,
                         max_side=max_side, backend=backend, device=device)
        self._sam: Any = None

    @property
    def fingerprint(self) -> str:
        """Changes when the layout and drawing code changes (the tool cache hashes this module's source itself)."""
        import tools.imaging
        import tools.marks

        return sources_digest(tools.marks, tools.imaging)

    def cache_inputs(self, question: Question) -> dict[str, Any]:
        """What the output reads of the question: only the phrase ``detect`` seeds the regions with."""
        return {"detect_phrase": target(question.text, question.options).prompt}

    def load(self) -> None:
        s = self.settings
        kind = s["backend"]
        if kind == "auto":
            kind = "segment-anything" if Path(s["model"]).suffix in (".pth", ".pt") else "transformers"
        module, _, cls = BACKENDS[kind].partition(":")
        self._sam = getattr(importlib.import_module(module), cls)(s["model"], s["device"])

    # ---------------------------------------------------------------- the tool's work

    def _seeds(self, image: Image.Image, question: Question,
               detect: DetectTool | None) -> tuple[Grounded | None, str | None]:
        if detect is None:
            return None, None
        try:
            g = detect.detections(image, question)
        except Exception as exc:  # noqa: BLE001 - detect records its own failure; som falls back to automatic
            return None, f"detect failed ({brief(exc)}): automatic regions"
        if not len(g.kept):
            return None, f"detect found nothing for {g.target.prompt!r}: automatic regions"
        return g, None

    def apply(self, image: Image.Image, question: Question, workdir: Path | None,
              peers: Mapping[str, Tool]) -> tuple[SomEvidence, dict[str, str]]:
        s = self.settings
        image = image.convert("RGB")
        small, scale = fit_within(image, s["max_side"])
        seeds, note = self._seeds(image, question, peers.get("detect"))
        if seeds is not None:
            boxes = seeds.kept.xyxy * scale
            masks, _ = self._sam.segment(small, boxes, s)
            for mask, (x1, y1, x2, y2) in zip(masks, np.round(boxes).astype(int)):
                if not mask.any():  # SAM found no object in the box: the box itself is the region
                    mask[y1:y2 + 1, x1:x2 + 1] = True
            scores = priority = seeds.kept.confidence
            labels = [str(v) for v in seeds.kept.data["label"]]
        else:
            masks, scores = self._sam.segment(small, None, s)
            if not len(masks):  # a mark on a so-so region beats no marks at all; the note says so
                masks, scores = self._sam.segment(small, None, {**s, "pred_iou_thresh": 0.0, "stability_thresh": 0.0})
                note = "; ".join(filter(None, [note, f"no region passed the quality filters (predicted IoU >= "
                                                     f"{s['pred_iou_thresh']}, stability >= {s['stability_thresh']}): "
                                                     "the best unfiltered regions"]))
            labels, priority = [None] * len(masks), masks.sum((1, 2)).astype(float)
        idx, regions = select_regions(masks, priority, s["min_area"], s["max_regions"])
        evidence = SomEvidence(model=f"{self._sam.name}:{s['model']}", source="auto" if seeds is None else "detect",
                               note=note, marks=[], image_size=list(image.size))
        if not len(idx):
            return evidence, {}
        style = LabelStyle.for_image(small.size)
        wh = style.size("8" * len(str(len(idx))))
        placements = place_labels(regions, wh)
        order = reading_order([p.center for p in placements], wh[1])
        regions, placements, idx = regions[order], [placements[i] for i in order], idx[order]
        marked = draw_marks(small, regions, placements, [str(n + 1) for n in range(len(idx))],
                            assign_colors(regions), style)
        boxes, total = sv.mask_to_xyxy(regions).astype(float), float(regions[0].size)
        evidence.marks = [
            Mark(id=n + 1, box=[round(float(v) / scale, 1) for v in boxes[n]],
                 area=round(float(regions[n].sum()) / total, 4),
                 point=[round(c / scale, 1) for c in placements[n].center],
                 label=labels[i], score=round(float(scores[i]), 4))
            for n, i in enumerate(idx)]
        return evidence, {"marked": str(save_marked(marked, Path(workdir) if workdir is not None else None))}
