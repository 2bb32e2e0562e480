"""The model-free evidence reasoner: OCR text matched against options."""

from __future__ import annotations

import math

import pytest

from agent.reasoners.base import ReasonRequest
from agent.reasoners.evidence import EvidenceReasoner, normalise, text_support
from agent.schema import OcrEvidence, Question, TextSpan, ToolResult


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
