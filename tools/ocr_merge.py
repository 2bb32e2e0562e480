"""Reading with several OCR engines: which engines a question needs, and how their spans merge.

The answer to a question about text lives in its options as much as in its wording: a Korean question may ask
which English phrase a page shows. So ``plan_engines`` reads the scripts of the question *and* its options and
picks one engine per script: EasyOCR's English model for Latin, and for Hangul EasyOCR Korean (which also reads
Latin, so it alone suffices) when its weights exist, else Tesseract ``kor+eng``. ``merge_spans`` then keeps one
reading per place: where spans of two engines overlap (box IoU of at least ``OVERLAP``; spans of one engine
are never merged, tilted lines overlap), the reading by the engine made for the span's script wins, then a Hangul
reading (an English model turns Hangul into Latin noise), then the higher confidence. Plain functions, no model
import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from agent.core.schema import Question
from tools.imports import lazy

sv = lazy("supervision")

OVERLAP = 0.5  # box IoU from which spans of two engines are one place
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


def script_of(text: str) -> str | None:
    """``"hangul"`` or ``"latin"``, whichever has more letters in ``text`` (Hangul on a tie); ``None`` for
    digits and punctuation alone."""
    hangul, latin = len(_HANGUL.findall(text)), len(_LATIN.findall(text))
    if not hangul and not latin:
        return None
    return "hangul" if hangul >= latin else "latin"


def scripts_in(texts: Sequence[str]) -> set[str]:
    """Every script with at least one letter in any of ``texts``."""
    joined = " ".join(texts)
    return {name for name, rx in (("hangul", _HANGUL), ("latin", _LATIN)) if rx.search(joined)}


def plan_engines(question: Question, korean_weights: bool) -> list[tuple[str, tuple[str, ...]]]:
    """``[(engine, languages), ...]`` for ``engine="auto"``: one engine per script of the question and its options
    (Latin: EasyOCR ``en``; Hangul: EasyOCR ``ko+en`` with its weights, which covers Latin too, else Tesseract
    ``ko+en``). With no letters at all (e.g. digit options), the question's language decides, as before."""
    scripts = scripts_in([question.text, *question.options.values()])
    if "hangul" in scripts and korean_weights:
        return [("easyocr", ("ko", "en"))]
    plan = [("easyocr", ("en",))] if "latin" in scripts else []
    if "hangul" in scripts:
        plan.append(("tesseract", ("ko", "en")))
    if not plan:
        plan = [("easyocr", ("en",))] if question.language != "ko" else [("tesseract", ("ko", "en"))]
    return plan


def native_scripts(engine: str, languages: Sequence[str]) -> set[str]:
    """The scripts an engine is chosen for when several read: Tesseract ``kor`` is the Hangul reader (its
    English is the weaker reading of photos), EasyOCR reads what its languages say."""
    if engine == "tesseract":
        return {"hangul"} if "ko" in languages else {"latin"}
    return {"latin"} | ({"hangul"} if "ko" in languages else set())


def merge_spans(reads: Sequence[tuple[str, set[str], sv.Detections]]) -> sv.Detections:
    """One detection set from ``(engine name, native scripts, spans)`` reads: spans are ranked (native to their
    engine, Hangul, confidence) and kept unless they overlap a better one of another engine; each keeps its engine
    in ``data["engine"]``. The order of the result is the ranking; the caller puts it in reading order."""
    rows = []
    for name, native, det in reads:
        for i in range(len(det)):
            text = str(det.data["text"][i])
            script = script_of(text)
            rank = (script is None or script in native, script == "hangul", float(det.confidence[i]))
            rows.append((rank, name, det.xyxy[i], text, float(det.confidence[i])))
    rows.sort(key=lambda r: r[0], reverse=True)
    kept: list[tuple] = []
    for row in rows:
        others = [k[2] for k in kept if k[1] != row[1]]
        if not others or sv.box_iou_batch(row[2][None, :], np.array(others)).max() < OVERLAP:
            kept.append(row)
    if not kept:
        return sv.Detections(xyxy=np.empty((0, 4)), confidence=np.empty(0),
                             data={"text": np.array([], dtype=object), "engine": np.array([], dtype=object)})
    return sv.Detections(xyxy=np.array([k[2] for k in kept], dtype=float),
                         confidence=np.array([k[4] for k in kept], dtype=float),
                         data={"text": np.array([k[3] for k in kept], dtype=object),
                               "engine": np.array([k[1] for k in kept], dtype=object)})
