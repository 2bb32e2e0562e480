"""The model-free evidence reasoner: OCR text matched against options."""

from __future__ import annotations

import math

import pytest

from agent.core.schema import OcrEvidence, Question, TextSpan, ToolResult
from agent.reasoners.base import ReasonRequest
from agent.reasoners.evidence import (
    Coverage,
    EvidenceReasoner,
    coverage,
    in_order_share,
    misread_support,
    normalise,
    ocr_support,
    text_support,
    word_credit,
)


def q(options: list[str], text: str = "간판에 적힌 가게 이름은?") -> Question:
    return Question(id="q", text=text, options=dict(zip("abcde", options)))


def ocr(*spans: tuple[str, float]) -> ToolResult:
    return ToolResult(tool="ocr", ok=True, evidence=OcrEvidence(
        engine="test", spans=[TextSpan(text=t, box=[0, 0, 1, 1], confidence=c) for t, c in spans]))


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello, World!", "helloworld"), ("김밥 천국", "김밥천국"), ("ＡＢＣ１２", "abc12"), ("  -- ", ""),
])
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(("option", "found", "expected"), [
    ("김밥천국", "김밥 천국 분식", 1.0),     # substring after normalisation
    ("Hello", "HELL0 world", 3 / 4),         # bigrams he, el, ll match; lo does not
    ("명동칼국수", "서울식당", 0.0),
    ("", "anything", 0.0),
])
def test_text_support(option: str, found: str, expected: float) -> None:
    assert text_support(option, found) == pytest.approx(expected)


def test_ocr_match_picks_the_option_read_in_the_image() -> None:
    d = EvidenceReasoner(sharpness=6.0).decide([ReasonRequest(
        question=q(["행복분식", "김밥천국", "명동칼국수", "서울식당"]), image=None,
        results=[ocr(("김밥천국", 1.0), ("24시", 0.8))])])[0]
    assert d.method == "evidence" and not d.flags
    # supports: b = 1.0, others 0 -> p(b) = e^6 / (e^6 + 3)
    assert d.probs["b"] == pytest.approx(math.exp(6) / (math.exp(6) + 3))
    assert max(d.probs, key=d.probs.get) == "b"
    assert sum(d.probs.values()) == pytest.approx(1.0)


def test_span_confidence_weights_the_support() -> None:
    d = EvidenceReasoner(sharpness=6.0).decide([ReasonRequest(
        question=q(["STOP", "EXIT"]), image=None, results=[ocr(("STOP", 0.5), ("EXIT", 1.0))])])[0]
    # a = max(0.5, 0.9) = 0.9 (whole-text match x 0.9), b = max(1.0, 0.9) = 1.0
    assert d.probs["b"] == pytest.approx(1 / (1 + math.exp(-0.6)))


@pytest.mark.parametrize("results", [
    [],                                                             # no tool ran
    [ToolResult(tool="ocr", ok=False, error="tesseract missing")],  # the tool failed
    [ocr(("전혀 다른 글", 0.9))],                                     # text matches no option
])
def test_no_evidence_is_uniform_and_flagged(results: list[ToolResult]) -> None:
    d = EvidenceReasoner().decide([ReasonRequest(question=q(["가", "나", "다"]), image=None, results=results)])[0]
    assert d.probs == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert d.flags == ["no_evidence"]


@pytest.mark.parametrize(("option", "found", "expected"), [("다", "전혀 다른 글", 0.0), ("3", "NO 3 PARKING", 1.0)])
def test_single_character_options_match_whole_words_only(option: str, found: str, expected: float) -> None:
    assert text_support(option, found) == expected


@pytest.mark.parametrize("text", ["표지판에 적힌 장소가 아닌 것은?", "Which place is NOT on the sign?"])
def test_negated_question_prefers_the_unsupported_option(text: str) -> None:
    d = EvidenceReasoner().decide([ReasonRequest(question=q(["Car Parks", "Swimming Pool", "Sports Centre"], text),
                                                 image=None, results=[ocr(("Car Parks", 0.9), ("Sports Centre", 0.9))])])[0]
    assert max(d.probs, key=d.probs.get) == "b" and d.flags == ["negated"]


# ---- OCR support: word coverage, not character n-grams ---------------------------------------------------------

def spans(*lines: tuple[str, float]) -> list[TextSpan]:
    return [TextSpan(text=t, box=[0, 0, 1, 1], confidence=c) for t, c in lines]


PAGE_OPTIONS = ["histogram of grey values", "edge gradient", "colour hue", "texture energy"]
PAGE_QUESTION = "이 페이지에 적힌 글에 따르면 두 봉우리는 무엇의 양 끝 부분에 있나요?"
# issue 15: Tesseract kor+eng on a photo of a printed page read these two lines and missed "histogram"
ISSUE_LINES = (("at the two extreme parts of the", 0.9), ("of grey values:", 0.85))
# recorded: Tesseract kor+eng (CRAFT boxes) on examples/images/page_histogram.jpg, all lines in reading order
TESSERACT_PAGE = (("제 3 장 영상 분할", .938), ("3.2", .95), ("Choosing", .95), ("global threshold", .935),
                  ("스 global threshold separates objects", .904), ("from the", .95), ("In", .94),
                  ("scan the tea!", .847), ("groups form", .865), ("two peaks", .92), ("that lie", .945),
                  ("at the two extreme", .96), ("parts", .96), ("of the", .95), ("histogram", .57),
                  ("of Grey u es: dark", .748), ("the left", .955),
                  ("and bright paper on the right. The threshold is", .954), ("few pixels fall,", .947),
                  ("and eve Ty pixel above it", .893), ("counted", .96), ("as", .96), ("background.", .92),
                  ("임 계 값 은 두 봉우리 사 이 의 골 짜 기 에 둔다.", .929), ("57", .95))


@pytest.mark.parametrize(("want", "seen", "credit"), [
    ("grey", "grey", 1.0), ("park", "parks", 1.0), ("우유", "우유가", 1.0),  # plural, Hangul particle
    ("wivenhoe", "wiveniioe", 14 / 17), ("centre", "center", 10 / 12), ("galleries", "gallepies", 16 / 18),
    ("1000ml", "100oml", 1.0),  # misreadings; in a number only a letter read for a digit
    ("서울식당", "서울", 0.5), ("parks", "ark", 0.3),  # a word read in part: Hangul by its share, else half
    ("texture", "extreme", 0.0), ("central", "centre", 0.0), ("park", "rark", 0.0), ("parks", "ar", 0.0),
    ("500ml", "100oml", 0.0), ("5120", "5210", 0.0), ("the", "theatre", 0.0), ("다", "다른", 0.0),
])
def test_word_credit(want: str, seen: str, credit: float) -> None:
    assert word_credit(want, seen) == pytest.approx(credit)


@pytest.mark.parametrize(("positions", "share"), [([], 1.0), ([4], 1.0), ([5, 8, 9], 1.0), ([3, 1, 2], 2 / 3),
                                                  ([9, 5, 1], 1 / 3)])
def test_in_order_share(positions: list[int], share: float) -> None:
    assert in_order_share(positions) == pytest.approx(share)


def test_coverage_by_hand() -> None:
    c = coverage("histogram of grey values", spans(*ISSUE_LINES))
    # of (0.9, first line: higher confidence), grey and values (0.85) found; histogram not: 3 of 4 words,
    # 12 of 21 characters, in order, confidence (2*0.9 + 10*0.85) / 12
    assert c == Coverage(words=0.75, chars=pytest.approx(12 / 21), order=1.0, confidence=pytest.approx(10.3 / 12))
    assert c.support == pytest.approx(0.9 * (0.75 + 12 / 21) / 2 * (0.7 + 0.3 * 10.3 / 12))
    assert coverage("texture energy", spans(*ISSUE_LINES)) == Coverage(0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("lines", [ISSUE_LINES, TESSERACT_PAGE], ids=["issue-15", "tesseract-page"])
def test_the_page_photo_question_picks_the_histogram(lines) -> None:
    d = EvidenceReasoner().decide([ReasonRequest(question=q(PAGE_OPTIONS, PAGE_QUESTION), image=None,
                                                 results=[ocr(*lines)])])[0]
    assert max(d.probs, key=d.probs.get) == "a" and d.probs["a"] > 0.85 and d.flags == []


@pytest.mark.parametrize(("lines", "read", "accident"), [
    (ISSUE_LINES, "histogram of grey values", "texture energy"),
    (tuple(s for s in TESSERACT_PAGE if s[0] != "histogram"), "histogram of grey values", "colour hue"),
    ((("DOUBLE", 0.99), ("PARKING", 0.99)), "parking", "smoking"),
])
def test_shared_character_ngrams_never_outrank_words_read(lines, read: str, accident: str) -> None:
    text = " ".join(t for t, _ in lines)
    assert text_support(accident, text) > 0  # the old bigram share gave the accident some support ...
    assert ocr_support(read, spans(*lines)) > ocr_support(accident, spans(*lines)) == 0.0  # ... words give none


@pytest.mark.parametrize(("question", "options", "lines", "answer"), [
    # recorded from `make demo` on examples/test.csv (TEST_005, TEST_002, TEST_001, TEST_010): Tesseract kor+eng
    # with CRAFT boxes, then EasyOCR English
    ("건물 정면 간판에 적힌 문구는 무엇인가요?",
     ["priory gardens at the ship", "the ship inn", "galleries of the priory", "priory galleries at the ship"],
     (("priory", 0.72), ("001006", 0.42), ("the ship", 0.955), ("galleries:", 0.53), ("at the", 0.96),
      ("ship", 0.92)), "d"),
    ("간판에 적힌 가게 이름은 무엇인가요?", ["the print shop", "the copy centre", "the book centre"],
     (("the", 0.96), ("“copy centre®", 0.42)), "b"),
    ("표지판에 적힌 안내 장소가 아닌 것은 무엇인가요?", ["Sports Centre", "Conference Centre", "Car Parks", "Swimming Pool"],
     (("Sports Centre", 0.65), ("Wiveniioe", 0.55), ("ark", 0.45), ("Conference", 0.68), ("Centre", 0.72)), "d"),
    ("According to the sign, what is prohibited at all times?", ["smoking", "double parking", "cycling", "loitering"],
     (("DOUBLE", 0.9994), ("PARKING", 0.9999), ("PROHIBITED", 0.9992)), "b"),
    # EasyOCR English on examples/images/priory_galleries.jpg
    ("What is written on the building's sign?", ["priory gardens", "the ship inn", "priory galleries", "art galleries"],
     (("gollerles", 0.9083), ("priory gallepies", 0.8137), ("at tbe", 0.7087), ("sbip", 0.9764)), "c"),
    # recorded: EasyOCR English on examples/images/sports_centre_sign.jpg, tow_zone.jpg and milk_label.jpg
    ("Which park is named on the sign?", ["Central Park", "Hyde Park", "Wivenhoe Park", "Victoria Park"],
     (("Sports Centre =", 0.48), ("Wiventioe", 0.67), ("rark", 0.99), ("Conference'", 0.95), ("Centre", 1.0),
      ("Car Parks", 0.77)), "c"),
    ("노란 펜스의 표지에 적힌 영어 문구는 무엇인가요?", ["KEEP OUT", "NO PARKING", "NO ENTRY", "STOP"],
     (("48 39", 0.31), ("TOW-AWAY ZONE", 0.96), ("NUPARKING", 0.69)), "b"),
    ("라벨에 적힌 용량은 얼마인가요?", ["500mL", "900mL", "1000mL", "2L"],
     (("ORGANIC MILK", 0.92), ("1829R 100%", 0.39), ("100OmL", 0.62)), "c"),
])
def test_real_ocr_readings_pick_the_written_option(question: str, options: list[str], lines, answer: str) -> None:
    d = EvidenceReasoner().decide([ReasonRequest(question=q(options, question), image=None, results=[ocr(*lines)])])[0]
    assert max(d.probs, key=d.probs.get) == answer and "no_evidence" not in d.flags


@pytest.mark.parametrize(("option", "line", "support"), [
    ("NO PARKING", ("NUPARKING", 0.69), 0.9 * 16 / 18 * (0.7 + 0.3 * 0.69)),  # words run together, a letter wrong
    ("NO PARKING", ("A NO PARKING ZONE", 0.69), 0.9 * (0.7 + 0.3 * 0.69)),  # below the exact reading's 0.9
    ("NO ENTRY", ("NUPARKING", 0.69), 0.0),
    ("500mL", ("100OmL", 0.62), 0.0),  # numbers are never fuzzy
    ("STOP", ("STEP", 0.9), 0.0),  # too short
])
def test_misread_support(option: str, line: tuple[str, float], support: float) -> None:
    assert misread_support(option, spans(line)) == pytest.approx(support)
