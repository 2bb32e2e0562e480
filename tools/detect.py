"""``detect``: open-vocabulary detection and counting with Grounding DINO (transformers), Korean or English.

The phrase comes from the question (``agent.core.phrases.target``: the lexicon maps Korean nouns to English prompts),
the boxes from one forward pass over the whole image plus, for large images, overlapping tiles at the
detector's own resolution; ``tools.boxes`` turns scores into a count (thresholds, class-aware NMS, crowd-box and
duplicate removal) and a count distribution. ``som`` reuses the same result: ``detections()`` runs once per
image and phrase even when both tools ask for it at the same time.

Checkpoints load through ``transformers`` from a hub id or a local folder and never download when the hub is
unreachable: a missing checkpoint is a ``ToolError`` naming ``--detector``. fp16 on a CUDA GPU.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field

from agent.core.errors import ConfigError, ModelLoadError, brief
from agent.core.hub import locate
from agent.core.phrases import Target, asked_target, parse_count, target
from agent.core.schema import DetectedBox, DetectEvidence, Question
from tools.base import NoArgs, Routing, Tool, ToolError
from tools.boxes import count_boxes, count_distribution, grounded_detections, merge_tiles, tile_grid
from tools.device import half_dtype, resolve_device
from tools.imports import lazy

sv = lazy("supervision")

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
DETECTOR_CLASSES = {"grounding-dino": "GroundingDinoForObjectDetection",
                    "mm-grounding-dino": "MMGroundingDinoForObjectDetection"}  # config.model_type -> class
TILING = ("auto", "on", "off")
# transformers builds models under a process-wide meta-device context: two from_pretrained calls in parallel
# threads (detect and som start together) corrupt each other, so checkpoints load one at a time.
LOAD_LOCK = threading.Lock()


def load_checkpoint(model: str, classes: dict[str, str], flag: str, what: str) -> tuple[Any, Any]:
    """``(processor, model)`` from a hub id or folder, the class chosen by the config's registered ``model_type``.
    Raises ``ToolError`` naming ``flag`` when the checkpoint is missing, unreachable or of another kind."""
    path = Path(model).expanduser()
    if path.suffix in (".pth", ".pt", ".ckpt"):
        raise ToolError(f"{flag} {model!r} is an original-format {what} checkpoint; this tool loads transformers "
                        "checkpoints (a folder with config.json): convert it first (see docs/tools.md)")
    try:  # a folder, or a hub id from the local cache; the hub itself is asked at most once per process
        folder = locate(model, flag=flag, what=what)
    except ModelLoadError as exc:
        raise ToolError(str(exc)) from None
    import transformers  # only now: a checkpoint that is not there costs no heavy import

    try:
        with LOAD_LOCK:
            config = transformers.AutoConfig.from_pretrained(folder)
            if config.model_type not in classes:
                raise ToolError(f"{flag} {model!r} is a {config.model_type!r} checkpoint; expected a {what} "
                                f"({', '.join(classes)})")
            processor = transformers.AutoProcessor.from_pretrained(folder)
            net = getattr(transformers, classes[config.model_type]).from_pretrained(folder)
    except ToolError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here is the user's path or an offline hub id
        raise ToolError(f"could not load the {what} {model!r} ({brief(exc)}): pass {flag} with a local checkpoint "
                        f"folder (saved with save_pretrained on a networked machine), or `vqa dev make-tiny DIR` "
                        "for a tiny random one; with HF_HUB_OFFLINE=1 an uncached hub id fails at once") from None
    return processor, net


def sources_digest(*modules: Any) -> str:
    """sha256 (16 hex) of the modules' source files: the plain helpers a tool's output depends on, for cache keys."""
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).hexdigest()[:16]


def image_digest(image: Image.Image) -> str:
    return hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest() + f"{image.size}{image.mode}"


class SingleFlight:
    """A small cache where concurrent callers of one key wait for one computation (``detect`` and ``som`` in
    parallel branches run the detector once). Failures are not cached."""

    def __init__(self, size: int = 32) -> None:
        self._lock = threading.Lock()
        self._done: OrderedDict[Hashable, Any] = OrderedDict()
        self._running: dict[Hashable, Future] = {}
        self._size = size

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            fut = self._running.get(key)
            owner = fut is None
            if owner:
                fut = self._running[key] = Future()
        if not owner:
            return fut.result()
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                self._running.pop(key, None)
            fut.set_exception(exc)
            raise
        with self._lock:
            self._running.pop(key, None)
            self._done[key] = value
            while len(self._done) > self._size:
                self._done.popitem(last=False)
        fut.set_result(value)
        return value


def token_phrases(offsets: Sequence[tuple[int, int]], prompt: str, phrases: Sequence[str]) -> np.ndarray:
    """For each token (its ``(start, end)`` characters in ``prompt``), the index of the phrase it belongs to, or
    ``-1`` (special tokens, periods). ``prompt`` is ``"cat. red car."`` for ``phrases = ["cat", "red car"]``."""
    spans, pos = [], 0
    for p in phrases:
        start = prompt.index(p, pos)
        spans.append((start, start + len(p)))
        pos = start + len(p)
    out = np.full(len(offsets), -1, dtype=int)
    for t, (s, e) in enumerate(offsets):
        if e > s:
            out[t] = next((k for k, (a, b) in enumerate(spans) if a <= s and e <= b), -1)
    return out


@dataclass(frozen=True)
class Grounded:
    """One detector run: what was asked, the boxes that count, the near misses, and how many tiles were read."""

    target: Target
    kept: sv.Detections
    near: sv.Detections
    tiles: int
    size: tuple[int, int]


def annotate(image: Image.Image, det: sv.Detections, path: Path) -> Path:
    """Boxes and ``label score`` tags drawn by supervision (the phrases are English, so any font works)."""
    labels = [f"{label} {score:.2f}" for label, score in zip(det.data.get("label", []), det.confidence)]
    scene = sv.BoxAnnotator(color_lookup=sv.ColorLookup.INDEX, thickness=2).annotate(image.copy(), det)
    scene = sv.LabelAnnotator(color_lookup=sv.ColorLookup.INDEX, text_scale=0.45, text_padding=3).annotate(
        scene, det, labels=labels)
    scene.save(path, quality=88)
    return path


class DetectArgs(NoArgs):
    phrases: list[str] | None = Field(None, description="What to find and count, e.g. ['person'] or ['red car', "
                                      "'bus'] (default: what the question asks about)")


class DetectTool(Tool):
    name = "detect"
    routing = Routing(
        keywords=(  # searched in the lower-cased question; high precision
            r"몇\s*(?:명|개|마리|대|권|송이|채|그루|장|잔|켤레|척|벌|병|쌍|자루|알|사람)|개수|세어|세면|"
            r"(?:사람|인원)\s*수|의\s*수(?:는|가)",
            r"\bhow many\b(?!\s+(?:calories|grams?|kilograms?|kilometers?|kilometres?|km|miles?|minutes?|hours?|"
            r"seconds?|years?|days?|dollars?|won|percent|degrees?|floors?|meters?|metres?|times?|liters?|litres?|"
            r"ml)\b)|\bnumber of\b|\bcount the\b|^count\b|^(?:is|are) there\b|\bany\s+\w+\s+(?:in|on)\b",
        ),
        why="asks for a count", presence=True)
    flags = {"detector": "model"}  # top-level settings (CLI flags) -> constructor keys
    cost = 4.0  # rough CPU seconds per image: the planners' prior
    Args = DetectArgs
    evidence = DetectEvidence
    description = ("Finds the objects a question asks about (Korean or English, e.g. '사람', 'red car') and counts "
                   "them: boxes with scores, a count, how sure the count is, and which numeric option it matches.")
    limitations = ("Open-vocabulary boxes, not masks: misses heavily occluded or tiny objects and merges touching "
                   "ones; counts above ~20 are unreliable. Korean nouns outside the lexicon fall back to their "
                   "counter's class (명 -> person). Says nothing about text, colour questions or relations.")

    def __init__(self, *, model: str = DEFAULT_DETECTOR, box_threshold: float = 0.35, text_threshold: float = 0.25,
                 nms_iou: float = 0.5, contain: float = 0.9, cross_iou: float = 0.85, near: float = 0.1,
                 tiling: str = "auto", tile_size: int | None = None, tile_overlap: float = 0.2, max_tiles: int = 12,
                 batch_size: int = 4, device: str = "auto") -> None:
        """``tiling``: ``auto`` tiles when the image's short side exceeds 1.5x the detector's input short side
        (800 px for the released checkpoints); ``tile_size`` defaults to that input size; at most ``max_tiles``."""
        if tiling not in TILING:
            raise ConfigError(f"detect tiling must be one of {list(TILING)}, found {tiling!r}")
        for key, v in (("box_threshold", box_threshold), ("text_threshold", text_threshold), ("nms_iou", nms_iou),
                       ("contain", contain), ("cross_iou", cross_iou)):
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"detect {key} must be in 0..1, found {v}")
        super().__init__(model=str(model), box_threshold=box_threshold, text_threshold=text_threshold,
                         nms_iou=nms_iou, contain=contain, cross_iou=cross_iou, near=near, tiling=tiling,
                         tile_size=tile_size, tile_overlap=tile_overlap, max_tiles=max_tiles, batch_size=batch_size,
                         device=device)
        self._cache = SingleFlight()
        self._infer = threading.Lock()
        self._processor: Any = None
        self._model: Any = None

    @property
    def fingerprint(self) -> str:
        """Changes when the counting or phrase code changes (the tool cache hashes this module's source itself)."""
        import agent.core.phrases
        import tools.boxes

        return sources_digest(tools.boxes, agent.core.phrases)

    def cache_inputs(self, question: Question) -> dict[str, Any]:
        """What the output reads of the question: its text and options (the phrase, the options as counts)."""
        return {"text": question.text, "options": question.options}

    def load(self) -> None:
        self._processor, model = load_checkpoint(self.settings["model"], DETECTOR_CLASSES, "--detector",
                                                 "Grounding DINO detector")
        self._device = resolve_device(self.settings["device"])
        self._dtype = half_dtype(self._device)
        self._model = model.to(self._device, dtype=self._dtype).eval()
        size = getattr(self._processor.image_processor, "size", None) or {}
        self.input_side = int(size.get("shortest_edge") or size.get("height") or 800)

    # ---------------------------------------------------------------- inference

    def tiles_for(self, size: tuple[int, int]) -> np.ndarray | None:
        """The tile grid for an image of ``size``, or ``None`` when the whole image alone is read."""
        s = self.settings
        if s["tiling"] == "off" or (s["tiling"] == "auto" and min(size) <= 1.5 * self.input_side):
            return None
        tile = int(s["tile_size"] or self.input_side)
        grid = tile_grid(size, tile, s["tile_overlap"])
        while len(grid) > s["max_tiles"]:
            tile = math.ceil(tile * 1.25)
            grid = tile_grid(size, tile, s["tile_overlap"])
        return grid if len(grid) > 1 else None

    def _forward(self, images: list[Image.Image], t: Target) -> list[sv.Detections]:
        import torch

        s, tok = self.settings, self._processor.tokenizer
        offsets = tok(t.prompt, return_offsets_mapping=True)["offset_mapping"]
        phrase_of = token_phrases(offsets, t.prompt, t.phrases)
        out: list[sv.Detections] = []
        for i in range(0, len(images), s["batch_size"]):
            chunk = images[i: i + s["batch_size"]]
            inputs = self._processor(images=chunk, text=[t.prompt] * len(chunk), return_tensors="pt", padding=True)
            inputs = {k: (v.to(self._device, self._dtype) if v.is_floating_point() else v.to(self._device))
                      for k, v in inputs.items()}
            with self._infer, torch.inference_mode():
                res = self._model(**inputs)
            probs = torch.sigmoid(res.logits.float()).cpu().numpy()
            boxes = res.pred_boxes.float().cpu().numpy()
            for img, p, b in zip(chunk, probs, boxes):
                out.append(grounded_detections(p, b, phrase_of, t.phrases, img.size, s["box_threshold"] - s["near"],
                                               s["text_threshold"]))
        return out

    def _detect(self, image: Image.Image, t: Target) -> Grounded:
        s = self.settings
        grid = self.tiles_for(image.size)
        crops = [image] + ([image.crop(tuple(int(v) for v in box)) for box in grid] if grid is not None else [])
        found = self._forward(crops, t)
        det = merge_tiles(found[0], found[1:], grid, image.size) if grid is not None else found[0]
        kept, near = count_boxes(det, s["box_threshold"], near=s["near"], nms_iou=s["nms_iou"], contain=s["contain"],
                                 cross_iou=s["cross_iou"])
        return Grounded(t, kept, near, 0 if grid is None else len(grid), image.size)

    def detections(self, image: Image.Image, question: Question, t: Target | None = None) -> Grounded:
        """The detector's answer for this image and question (or the target ``t``, when given); concurrent and
        repeated calls share one run."""
        self.setup()
        image = image.convert("RGB")
        t = t or target(question.text, question.options)
        return self._cache.get((image_digest(image), t.prompt), lambda: self._detect(image, t))

    # ---------------------------------------------------------------- evidence

    def apply(self, image: Image.Image, question: Question, workdir: Path | None,
              peers: Mapping[str, Tool], phrases: list[str] | None = None) -> tuple[DetectEvidence, dict[str, str]]:
        """``phrases``: what to find instead of what the question asks about."""
        t = asked_target(phrases) if phrases else None
        g = self.detections(image, question, t)
        evidence = to_evidence(g, question, self.settings["model"], self.settings["box_threshold"], t)
        artifacts: dict[str, str] = {}
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            artifacts["annotated"] = str(annotate(image.convert("RGB"), g.kept, Path(workdir) / "detect.jpg"))
        return evidence, artifacts


def to_evidence(g: Grounded, question: Question, model: str, box_threshold: float,
                t: Target | None = None) -> DetectEvidence:
    """Count (of the asked-for phrase, or of all boxes when the options name the objects), its distribution and
    confidence, per-label counts, the boxes largest score first, and the options read as counts. The phrase's
    provenance is this question's (another question may have asked for the same phrase in other words), or the
    asked target ``t``'s."""
    t = t or target(question.text, question.options)
    if t.phrases != g.target.phrases:
        raise ValueError(f"detections for {g.target.prompt!r} do not answer a question asking for {t.prompt!r}")

    def of_target(det: sv.Detections) -> sv.Detections:
        return det if t.primary is None or not len(det) else det[det.data["label"] == t.primary]

    counted, near = of_target(g.kept), of_target(g.near)
    dist = count_distribution(np.concatenate([counted.confidence, near.confidence]), box_threshold)
    order = np.argsort(-g.kept.confidence, kind="stable")
    boxes = [DetectedBox(box=[round(float(v), 1) for v in g.kept.xyxy[i]], score=round(float(g.kept.confidence[i]), 4),
                         label=str(g.kept.data["label"][i])) for i in order]
    counts = {p: int((g.kept.data["label"] == p).sum()) if len(g.kept) else 0 for p in t.phrases}
    options = {k: list(c) for k, c in ((k, parse_count(v)) for k, v in question.options.items()) if c is not None}
    return DetectEvidence(
        model=model, phrase=t.prompt, target=t.primary, source=t.source, query=t.query, count=len(counted),
        count_probs={k: round(float(p), 4) for k, p in enumerate(dist) if p >= 1e-3 or k == len(counted)},
        confidence=round(float(dist[len(counted)]), 4), counts=counts, boxes=boxes, tiles=g.tiles,
        image_size=list(g.size), option_counts=options, option_labels=dict(t.option_labels))
