"""Reading with several OCR engines: the engines a question needs, and merging their spans (no model loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.schema import Question
from tools.ocr import OcrTool, make_detections
from tools.ocr_merge import merge_spans, native_scripts, plan_engines, script_of, scripts_in

EASY, TESS = ("easyocr", ("en",)), ("tesseract", ("ko", "en"))


def question(text: str, *options: str) -> Question:
    return Question(id="q", text=text, options=dict(zip("abcde", options)))


@pytest.mark.parametrize(("text", "script"), [
    ("NO PARKING", "latin"), ("주차 금지", "hangul"), ("스 global threshold", "latin"),  # one stray syllable
    ("우유 mL", "hangul"), ("02-738-5120", None), ("", None),
])
def test_script_of(text: str, script: str | None) -> None:
    assert script_of(text) == script


def test_scripts_in() -> None:
    assert scripts_in(["간판에 적힌 것은?", "NOTICE", "12"]) == {"hangul", "latin"}
    assert scripts_in(["12", "3.5"]) == set()


@pytest.mark.parametrize(("q", "korean_weights", "plan"), [
    (question("What does the sign say?", "NOTICE", "DANGER"), False, [EASY]),
    (question("간판에 적힌 문구는?", "주차 금지", "출입 금지"), False, [TESS]),
    # issue 15: a Korean question whose options are English reads with both
    (question("페이지에 적힌 것은?", "histogram of grey values", "edge gradient"), False, [EASY, TESS]),
    (question("What is written on the sign?", "주차 금지", "출입 금지"), False, [EASY, TESS]),
    (question("페이지에 적힌 것은?", "histogram of grey values", "edge gradient"), True, [("easyocr", ("ko", "en"))]),
    (question("쪽 번호는?", "55", "57"), False, [TESS]),
    (question("Which number is on the bus?", "472", "274"), False, [EASY]),
    (question("12 + 30 = ?", "42", "52"), False, [EASY]),  # no letters anywhere: the question's language (en)
])
def test_plan_engines_by_the_scripts_of_question_and_options(q: Question, korean_weights: bool, plan) -> None:
    assert plan_engines(q, korean_weights) == plan


@pytest.mark.parametrize(("settings", "plan"), [
    ({"engine": "easyocr"}, [("easyocr", ("ko", "en"))]),  # --ocr-engine forces one engine, as before
    ({"engine": "tesseract"}, [TESS]),
    ({"languages": ["en"]}, [EASY]),
    ({}, [EASY, TESS]),
])
def test_the_tool_reads_with_one_engine_when_one_is_forced(settings: dict, plan, tmp_path) -> None:
    tool = OcrTool(easyocr_model_dir=tmp_path, gpu=False, **settings)  # tmp_path: no Korean weights
    assert tool.plan_for(question("표지판에 적힌 문구는?", "NO PARKING", "NO ENTRY")) == plan


def test_native_scripts() -> None:
    assert native_scripts("easyocr", ("en",)) == {"latin"}
    assert native_scripts("easyocr", ("ko", "en")) == {"latin", "hangul"}
    assert native_scripts("tesseract", ("ko", "en")) == {"hangul"}
    assert native_scripts("tesseract", ("en",)) == {"latin"}


def read(*spans: tuple[list[float], str, float]):
    return make_detections([b for b, _, _ in spans], [t for _, t, _ in spans], [c for _, _, c in spans])


LATIN, HANGUL = {"latin"}, {"hangul"}


def merged(*reads) -> list[tuple[str, str]]:
    det = merge_spans(reads)
    return sorted(zip(det.data["text"].tolist(), det.data["engine"].tolist()))


def test_english_text_keeps_the_english_reading() -> None:
    # the page photo: EasyOCR read the line whole; Tesseract missed "histogram" and misread "values"
    easy = read(([292, 254, 626, 286], "of grey values: dark ink on", 0.948), ([154, 246, 288, 279], "histogram", 1.0))
    tess = read(([295, 249, 540, 291], "of Grey u es: dark", 0.748), ([161, 241, 293, 284], "histogram", 0.57))
    assert merged(("easyocr:en", LATIN, easy), ("tesseract:kor+eng", HANGUL, tess)) == [
        ("histogram", "easyocr:en"), ("of grey values: dark ink on", "easyocr:en")]


def test_hangul_text_keeps_the_korean_reading() -> None:
    # EasyOCR's English model turns Hangul into Latin noise, even confidently
    easy = read(([40, 40, 240, 90], "Fxl 2Xl", 0.97))
    tess = read(([44, 42, 236, 88], "주차 금지", 0.91))
    assert merged(("easyocr:en", LATIN, easy), ("tesseract:kor+eng", HANGUL, tess)) == [
        ("주차 금지", "tesseract:kor+eng")]


def test_a_stray_syllable_does_not_make_an_english_line_korean() -> None:
    easy = read(([163, 147, 619, 185], "A global threshold separates objects", 0.906))
    tess = read(([165, 151, 615, 191], "스 global threshold separates objects", 0.904))
    assert merged(("easyocr:en", LATIN, easy), ("tesseract:kor+eng", HANGUL, tess)) == [
        ("A global threshold separates objects", "easyocr:en")]


def test_separate_places_and_one_engines_overlapping_lines_are_all_kept() -> None:
    # tilted lines of one engine overlap each other's boxes; a span only the other engine read stays
    easy = read(([163, 147, 619, 185], "A global threshold separates objects", 0.906),
                ([157, 169, 776, 218], "hackground when their brightness differs clearly:", 0.583))
    tess = read(([154, 436, 569, 463], "임 계 값 은 두 봉우리 사 이 의 골 짜 기 에 둔다.", 0.929))
    assert [t for t, _ in merged(("easyocr:en", LATIN, easy), ("tesseract:kor+eng", HANGUL, tess))] == [
        "A global threshold separates objects", "hackground when their brightness differs clearly:",
        "임 계 값 은 두 봉우리 사 이 의 골 짜 기 에 둔다."]


def test_digits_go_to_the_more_confident_reading() -> None:
    easy = read(([499, 707, 527, 723], "57", 0.99))
    tess = read(([500, 709, 522, 720], "51", 0.80))
    assert merged(("easyocr:en", LATIN, easy), ("tesseract:kor+eng", HANGUL, tess)) == [("57", "easyocr:en")]


def test_nothing_read_merges_to_nothing() -> None:
    det = merge_spans([("easyocr:en", LATIN, read()), ("tesseract:kor+eng", HANGUL, read())])
    assert len(det) == 0 and det.xyxy.shape == (0, 4) and np.asarray(det.data["engine"]).size == 0
