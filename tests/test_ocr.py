"""The ``ocr`` tool: parsing and geometry on recorded engine outputs, then the real engines on real photos.

Tesseract tests need ``apt-get install tesseract-ocr tesseract-ocr-kor``; the Korean one also needs a Korean
font to render its text (``apt-get install fonts-nanum``). ``slow`` tests load EasyOCR's real offline weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from agent.core.errors import ConfigError
from agent.core.schema import Question, ToolResult
from tools.base import ToolError
from tools.imaging import fit_within
from tools.ocr import (
    KOREAN_WEIGHTS,
    OcrTool,
    choose_engine,
    clean_spans,
    easyocr_to_detections,
    make_detections,
    quad_to_xyxy,
    reading_order,
    storage_dir,
    tesseract_lines,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
KOREAN_FONT = Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf")

EN = Question(id="q_en", text="What does the sign say?", options={"a": "NOTICE", "b": "DANGER"})
KO = Question(id="q_ko", text="간판에 적힌 문구는 무엇인가요?", options={"a": "주차 금지", "b": "출입 금지"})


def photo(name: str) -> Image.Image:
    return Image.open(EXAMPLES / name)


def texts(result: ToolResult) -> str:
    assert result.ok, result.error
    return " ".join(s.text for s in result.evidence.spans)


def assert_boxes_inside(result: ToolResult, image: Image.Image) -> None:
    assert result.evidence.spans, "expected at least one span"
    for span in result.evidence.spans:
        x1, y1, x2, y2 = span.box
        assert 0 <= x1 <= x2 <= image.width and 0 <= y1 <= y2 <= image.height, span


# ---------------------------------------------------------------- pure functions on recorded outputs

@pytest.mark.parametrize("quad, expected", [
    ([[334, 480], [638, 480], [638, 570], [334, 570]], [334, 480, 638, 570]),
    ([[np.int32(10), np.int32(5)], [np.int32(30), np.int32(5)], [np.int32(30), np.int32(9)],
      [np.int32(10), np.int32(9)]], [10, 5, 30, 9]),
    ([[12.5, 40.0], [80.0, 20.0], [90.0, 35.0], [20.0, 60.5]], [12.5, 20.0, 90.0, 60.5]),  # rotated text
])
def test_quad_to_xyxy(quad, expected):
    assert quad_to_xyxy(quad) == pytest.approx(expected)


def test_easyocr_readtext_tuples_become_detections():
    # recorded from Reader(["en"]).readtext on examples/images/notice_sign.jpg
    raw = [([[np.int32(279), np.int32(35)], [np.int32(425), np.int32(35)], [np.int32(425), np.int32(79)],
             [np.int32(279), np.int32(79)]], "NojIcE", np.float64(0.3053)),
           ([[279, 86], [421, 86], [421, 122], [279, 122]], "DOUBLE", np.float64(0.9994))]
    det = easyocr_to_detections(raw)
    assert det.xyxy.tolist() == [[279, 35, 425, 79], [279, 86, 421, 122]]
    assert det.confidence.tolist() == pytest.approx([0.3053, 0.9994])
    assert det.data["text"].tolist() == ["NojIcE", "DOUBLE"]
    assert len(easyocr_to_detections([])) == 0


COLUMNS = ("level", "page_num", "block_num", "par_num", "line_num", "word_num",
           "left", "top", "width", "height", "conf", "text")


def tsv(*rows: tuple) -> dict[str, list]:
    """``image_to_data(output_type=DICT)`` from rows in its column order."""
    return {k: [r[i] for r in rows] for i, k in enumerate(COLUMNS)}


# recorded: tesseract 5.3 --psm 11 kor+eng on the grey examples/images/sports_centre_sign.jpg
SPORTS = tsv((1, 1, 0, 0, 0, 0, 0, 0, 1024, 768, -1, ""),
             (4, 1, 2, 1, 1, 0, 348, 491, 274, 72, -1, ""),
             (5, 1, 2, 1, 1, 1, 348, 491, 135, 72, 92, "Sports"),
             (5, 1, 2, 1, 1, 2, 493, 505, 129, 52, 92, "Centre"),
             (5, 1, 3, 1, 1, 1, 262, 514, 61, 126, 68, "t"),
             (5, 1, 4, 1, 1, 1, 387, 564, 151, 41, 46, "iveniioe"),
             (5, 1, 4, 1, 1, 2, 550, 573, 83, 40, 87, "rark"),
             (5, 1, 6, 1, 1, 1, 381, 678, 39, 34, 96, "ar"),
             (5, 1, 6, 1, 1, 2, 432, 671, 110, 48, 96, "Parks"))


@pytest.mark.parametrize("data, min_conf, expected", [
    (SPORTS, 0.0, [("Sports Centre", [348, 491, 622, 563], 0.92), ("t", [262, 514, 323, 640], 0.68),
                   ("iveniioe rark", [387, 564, 633, 613], 0.665), ("ar Parks", [381, 671, 542, 719], 0.96)]),
    # a low-confidence word leaves its line; a line with no word left disappears
    (SPORTS, 0.5, [("Sports Centre", [348, 491, 622, 563], 0.92), ("t", [262, 514, 323, 640], 0.68),
                   ("rark", [550, 573, 633, 613], 0.87), ("ar Parks", [381, 671, 542, 719], 0.96)]),
    # frames glued to words are stripped, noise-only words dropped, words joined in word_num order
    (tsv((5, 1, 1, 1, 1, 2, 300, 10, 100, 30, 90, "PARKING|"),
         (5, 1, 1, 1, 1, 1, 100, 12, 150, 30, 80, "[DOUBLE"),
         (5, 1, 1, 1, 1, 3, 420, 10, 10, 30, 95, "|"),
         (5, 1, 1, 1, 1, 4, 440, 10, 10, 30, 95, "—")),
     0.0, [("DOUBLE PARKING", [100, 10, 400, 42], 0.85)]),
    # Hangul words, two lines of one paragraph
    (tsv((5, 1, 1, 1, 1, 1, 40, 40, 90, 50, 96, "주차"), (5, 1, 1, 1, 1, 2, 150, 40, 90, 50, 97, "금지"),
         (5, 1, 1, 1, 2, 1, 40, 100, 200, 40, 93, "NO PARKING")),
     0.3, [("주차 금지", [40, 40, 240, 90], 0.965), ("NO PARKING", [40, 100, 240, 140], 0.93)]),
    ({}, 0.0, []),
    (tsv((1, 1, 0, 0, 0, 0, 0, 0, 100, 100, -1, "")), 0.0, []),
])
def test_tesseract_rows_become_lines(data, min_conf, expected):
    det = tesseract_lines(data, min_conf)
    got = [(t, b, c) for t, b, c in zip(det.data["text"].tolist(), det.xyxy.tolist(), det.confidence.tolist())]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (_, box, conf), (_, want_box, want_conf) in zip(got, expected):
        assert box == pytest.approx(want_box) and conf == pytest.approx(want_conf)


@pytest.mark.parametrize("boxes, expected", [
    ([], []),
    ([[0, 0, 10, 10]], [0]),
    # one row with a few pixels of jitter is read left to right
    ([[200, 12, 260, 40], [10, 10, 80, 38], [100, 8, 180, 36]], [1, 2, 0]),
    # a lower row comes after, whatever its x
    ([[300, 100, 400, 130], [10, 10, 80, 40], [20, 100, 90, 130], [150, 14, 240, 42]], [1, 3, 2, 0]),
    # a small word beside a tall heading joins its row; the next line down starts a new one
    ([[10, 0, 300, 100], [320, 40, 360, 60], [10, 110, 100, 140]], [0, 1, 2]),
    # the sports sign: four stacked lines
    ([[381, 671, 542, 719], [348, 491, 622, 563], [387, 564, 633, 613], [381, 614, 712, 664]], [1, 2, 3, 0]),
])
def test_reading_order(boxes, expected):
    assert reading_order(np.array(boxes, dtype=float).reshape(-1, 4)).tolist() == expected


def test_clean_spans_filters_clips_and_orders():
    det = make_detections([[500, 300, 900, 340], [10, 10, 60, 30], [5, 5, 50, 20], [100, 12, 160, 30],
                           [-4, 200, 40, 220]],
                          [" Car Parks ", "Sports", "=", "Centre", "low"], [0.8, 0.9, 0.9, 0.95, 0.1])
    out = clean_spans(det, 0.3, (800, 600))
    assert out.data["text"].tolist() == ["Sports", "Centre", "Car Parks"]
    assert out.xyxy.tolist()[-1] == [500, 300, 800, 340]  # clipped to the 800 px width
    assert len(clean_spans(make_detections([], [], []), 0.3, (10, 10))) == 0


@pytest.mark.parametrize("size, max_side, expected_size, expected_scale", [
    ((800, 600), 1280, (800, 600), 1.0),
    ((2000, 1000), 1000, (1000, 500), 0.5),
    ((300, 1200), 600, (150, 600), 0.5),
    ((3000, 2000), None, (3000, 2000), 1.0),
])
def test_fit_within(size, max_side, expected_size, expected_scale):
    out, scale = fit_within(Image.new("RGB", size), max_side)
    assert out.size == expected_size and scale == expected_scale


@pytest.mark.parametrize("engine, languages, question_language, korean_weights, expected", [
    ("auto", None, "en", False, ("easyocr", ("en",))),
    ("auto", None, "ko", True, ("easyocr", ("ko", "en"))),
    ("auto", None, "ko", False, ("tesseract", ("ko", "en"))),
    ("auto", ["en"], "ko", False, ("easyocr", ("en",))),
    ("tesseract", None, "en", True, ("tesseract", ("en",))),
    ("easyocr", ["ko", "en"], "en", False, ("easyocr", ("ko", "en"))),
])
def test_choose_engine(engine, languages, question_language, korean_weights, expected):
    assert choose_engine(engine, languages, question_language, korean_weights) == expected


def test_storage_dir_shares_or_links_folders(tmp_path):
    user, bundled = tmp_path / "user", tmp_path / "bundled"
    user.mkdir()
    bundled.mkdir()
    (bundled / "craft_mlt_25k.pth").write_bytes(b"d")
    (bundled / "english_g2.pth").write_bytes(b"e")
    (user / KOREAN_WEIGHTS).write_bytes(b"k")
    assert storage_dir(["craft_mlt_25k.pth", "english_g2.pth"], [user, bundled]) == bundled.resolve()
    merged = storage_dir(["craft_mlt_25k.pth", KOREAN_WEIGHTS], [user, bundled])
    assert sorted(p.name for p in merged.iterdir()) == ["craft_mlt_25k.pth", KOREAN_WEIGHTS]
    assert (merged / KOREAN_WEIGHTS).read_bytes() == b"k"
    (user / KOREAN_WEIGHTS).unlink()
    with pytest.raises(ToolError, match=re.escape(KOREAN_WEIGHTS) + ".*" + re.escape(str(user))):
        storage_dir(["craft_mlt_25k.pth", KOREAN_WEIGHTS], [user, bundled])


@pytest.mark.parametrize("settings, message", [
    ({"engine": "paddle"}, "engine must be one of"),
    ({"languages": ["ja"]}, "languages must be codes"),
    ({"min_confidence": 3}, "min_confidence"),
    ({"tesseract_boxes": "east"}, "tesseract_boxes"),
])
def test_bad_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        OcrTool(**settings)


def test_card():
    assert OcrTool.name == "ocr" and OcrTool.description and OcrTool.limitations


# ---------------------------------------------------------------- error paths (nothing is downloaded)

def test_easyocr_korean_without_weights_fails_naming_the_file(tmp_path):
    tool = OcrTool(engine="easyocr", languages=["ko", "en"], easyocr_model_dir=tmp_path, gpu=False)
    result = tool.run(photo("notice_sign.jpg"), KO)
    assert result.tool == "ocr" and not result.ok and result.evidence is None
    assert KOREAN_WEIGHTS in result.error and str(tmp_path) in result.error
    assert "easyocr_model_dir" in result.error


def test_easyocr_refuses_corrupt_weights_instead_of_downloading(tmp_path):
    (tmp_path / KOREAN_WEIGHTS).write_bytes(b"not the released weights")
    tool = OcrTool(engine="easyocr", languages=["ko", "en"], easyocr_model_dir=tmp_path, gpu=False)
    result = tool.run(photo("notice_sign.jpg"), KO)
    assert not result.ok and "downloads are disabled" in result.error and KOREAN_WEIGHTS in result.error


@pytest.mark.parametrize("boxes", ["tesseract", "craft"])
def test_missing_tesseract_binary_gives_the_apt_hint(monkeypatch, tmp_path, boxes):
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-such-tesseract"))
    result = OcrTool(engine="tesseract", tesseract_boxes=boxes, gpu=False).run(photo("notice_sign.jpg"), KO)
    assert not result.ok
    assert "apt-get install tesseract-ocr tesseract-ocr-kor" in result.error and "no-such-tesseract" in result.error


# ---------------------------------------------------------------- Tesseract on real photos

def test_tesseract_reads_english_sign_in_a_photo(tmp_path):
    image = photo("notice_sign.jpg")
    tool = OcrTool(engine="tesseract", languages=["ko", "en"], tesseract_boxes="tesseract")
    result = tool.run(image, KO, tmp_path)
    assert result.tool == "ocr" and result.evidence.engine == "tesseract:kor+eng"
    assert "PROHIBITED" in texts(result).upper()
    assert_boxes_inside(result, image)
    annotated = Image.open(result.artifacts["annotated"])
    assert annotated.format == "JPEG" and annotated.size == image.size


def test_boxes_come_back_in_the_callers_pixels():
    image, q = photo("notice_sign.jpg"), EN
    full = OcrTool(engine="tesseract", tesseract_boxes="tesseract", max_side=None).run(image, q)
    small = OcrTool(engine="tesseract", tesseract_boxes="tesseract", max_side=500).run(image, q)

    def box(result: ToolResult) -> list[float]:
        return next(s.box for s in result.evidence.spans if s.text == "PROHIBITED")

    assert box(small) == pytest.approx(box(full), abs=6)


@pytest.fixture(scope="module")
def korean_sign() -> Image.Image:
    """A real photo with a white sign reading 주차 금지 rendered onto it (needs a Korean font)."""
    if not KOREAN_FONT.is_file():
        pytest.fail(f"Korean font {KOREAN_FONT} is missing: apt-get install fonts-nanum (it renders the test's sign)")
    image = photo("no_parking.jpg").convert("RGB")
    draw, font = ImageDraw.Draw(image), ImageFont.truetype(str(KOREAN_FONT), 48)
    _, _, w, h = draw.textbbox((0, 0), "주차 금지", font=font)
    draw.rectangle((16, 16, 64 + w, 64 + h), fill="white")
    draw.text((40, 40), "주차 금지", font=font, fill="black")
    return image


@pytest.mark.slow
def test_auto_reads_korean_with_tesseract_when_easyocr_has_no_korean_weights(korean_sign, tmp_path):
    # an empty folder: no korean_g2.pth anywhere; max_side < 1024 also checks boxes scale back to the photo
    tool = OcrTool(easyocr_model_dir=tmp_path, gpu=False, max_side=800)
    result = tool.run(korean_sign, KO, tmp_path / "work")
    assert result.ok, result.error
    assert result.evidence.engine == "tesseract+craft:kor+eng"
    found = texts(result)
    assert "주차" in found and "금지" in found, found
    assert "PARKING" in found.upper(), found  # the photo's own English sign, read by the same engine
    assert_boxes_inside(result, korean_sign)
    assert Path(result.artifacts["annotated"]).is_file()


# ---------------------------------------------------------------- EasyOCR's real English weights

@pytest.fixture(scope="module")
def english_tool() -> OcrTool:
    return OcrTool(gpu=False)


@pytest.mark.slow
@pytest.mark.parametrize("name, word", [("notice_sign.jpg", "prohibited"), ("sports_centre_sign.jpg", "centre")])
def test_easyocr_english_reads_real_photos(english_tool, name, word, tmp_path):
    image = photo(name)
    result = english_tool.run(image, EN, tmp_path)
    assert result.tool == "ocr" and result.ok, result.error
    assert result.evidence.engine == "easyocr:en"
    assert word in texts(result).lower()
    assert all(s.confidence >= 0.3 for s in result.evidence.spans)
    assert_boxes_inside(result, image)
    assert Path(result.artifacts["annotated"]).name == "ocr.jpg"


# ---------------------------------------------------------------- several engines on one photo

@pytest.mark.slow
def test_korean_question_with_english_options_reads_with_both_engines(tmp_path):
    """The page photo of issue 15 (examples/images/page_histogram.jpg, its paragraph): a Korean question whose
    options are English reads with EasyOCR English and Tesseract kor+eng, and the evidence picks the histogram."""
    from agent.reasoners.base import ReasonRequest
    from agent.reasoners.evidence import EvidenceReasoner

    q = Question(id="page", text="이 페이지에 적힌 글에 따르면 두 봉우리는 무엇의 양 끝 부분에 있나요?",
                 options={"a": "histogram of grey values", "b": "edge gradient", "c": "colour hue",
                          "d": "texture energy"})
    image = photo("page_histogram.jpg").crop((140, 40, 800, 480))  # headings, the paragraph, the Korean line
    result = OcrTool(easyocr_model_dir=tmp_path, gpu=False).run(image, q, tmp_path / "work")
    assert result.ok, result.error
    ev = result.evidence
    assert ev.engine == "easyocr:en, tesseract+craft:kor+eng"
    assert [r.engine for r in ev.reads] == ["easyocr:en", "tesseract+craft:kor+eng"] and all(r.spans for r in ev.reads)
    assert {s.engine for s in ev.spans} == {"easyocr:en", "tesseract+craft:kor+eng"}  # English lines and Hangul
    assert "histogram" in texts(result) and "봉우리" in texts(result)
    assert len(ev.spans) < sum(len(r.spans) for r in ev.reads)  # the same lines read twice are kept once
    assert_boxes_inside(result, image)
    d = EvidenceReasoner().decide([ReasonRequest(question=q, image=None, results=[result])])[0]
    assert max(d.probs, key=d.probs.get) == "a", d.raw
