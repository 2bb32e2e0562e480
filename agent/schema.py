"""The shared vocabulary: questions, tool results, answers.

Every module speaks these types; tools return data (never prose) and the
prompt renders it. Pixel geometry travels as ``supervision.Detections`` inside
tools and as plain lists (``[x1, y1, x2, y2]``) once serialised here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TOOL_NAMES: tuple[str, ...] = ("som", "detect", "ocr", "retrieve")
LETTERS: str = "abcde"
MIN_OPTIONS, MAX_OPTIONS = 2, 5

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def detect_language(text: str) -> Literal["ko", "en"]:
    """``"ko"`` when the text contains any Hangul, else ``"en"``."""
    return "ko" if _HANGUL.search(text) else "en"


class Question(BaseModel):
    """One multiple-choice question about one image; with no options (``vqa chat`` only) an open question,
    answered in free text (``Answer.text``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    image: Path | None = None
    text: str
    options: dict[str, str]
    language: Literal["ko", "en"] | None = None
    answer: str | None = None  # gold letter, when known (train/eval rows)
    category: str | None = None

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question text is empty")
        return v.strip()

    @field_validator("options")
    @classmethod
    def _options_are_letters(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:  # an open question (chat); CSV rows and `vqa ask` always bring 2-5 options
            return {}
        letters = list(v)
        expected = list(LETTERS[: len(letters)])
        if not (MIN_OPTIONS <= len(letters) <= MAX_OPTIONS):
            raise ValueError(f"expected {MIN_OPTIONS}-{MAX_OPTIONS} options, found {len(letters)}")
        if letters != expected:
            raise ValueError(f"options must be keyed {expected}, found {letters}")
        blank = [k for k, t in v.items() if not str(t).strip()]
        if blank:
            raise ValueError(f"options {blank} are empty")
        return {k: str(t).strip() for k, t in v.items()}

    @model_validator(mode="after")
    def _fill_language_and_check_answer(self) -> Question:
        if self.language is None:
            lang = detect_language(self.text + " " + " ".join(self.options.values()))
            object.__setattr__(self, "language", lang)
        if self.answer is not None and self.answer not in self.options:
            raise ValueError(f"answer {self.answer!r} is not one of the options {list(self.options)}")
        return self

    @property
    def letters(self) -> list[str]:
        return list(self.options)


class TextSpan(BaseModel):
    """A piece of text found in the image."""

    text: str
    box: list[float]  # x1, y1, x2, y2 in original-image pixels
    confidence: float
    engine: str | None = None  # the OCR engine that read it


class OcrRead(BaseModel):
    """What one OCR engine read, when several engines read the image (their spans are merged into ``spans``)."""

    engine: str
    spans: list[TextSpan]
    seconds: float = 0.0


class OcrEvidence(BaseModel):
    tool: Literal["ocr"] = "ocr"
    engine: str  # the engine, or the engines joined with ", "
    spans: list[TextSpan]
    reads: list[OcrRead] = Field(default_factory=list)  # each engine's own spans; empty when one engine read

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.spans)


class RetrievedEntry(BaseModel):
    """A knowledge-base entry the ``retrieve`` tool found: a solved question, a captioned image or a passage."""

    id: str
    kind: Literal["question", "caption", "passage"]
    score: float  # image and text similarity combined (agent/kb.py)
    image_score: float | None = None
    text_score: float | None = None
    same_image: bool = False  # the entry's image file is byte-identical to the question's
    text: str  # the question, caption or passage
    options: dict[str, str] | None = None
    answer: str | None = None  # letter, for solved questions
    answer_text: str | None = None
    image: str | None = None


class RetrieveEvidence(BaseModel):
    tool: Literal["retrieve"] = "retrieve"
    kb: str
    embedder: str
    entries: list[RetrievedEntry]
    excluded: list[str] = Field(default_factory=list)  # ids the leakage guard kept out


class DetectedBox(BaseModel):
    box: list[float]  # x1, y1, x2, y2 in original-image pixels
    score: float
    label: str  # the detector phrase it matched


class DetectEvidence(BaseModel):
    """What ``detect`` found: the boxes of the asked-for phrase and their count, with how sure it is."""

    tool: Literal["detect"] = "detect"
    model: str
    phrase: str  # the detector's text prompt, e.g. "person." or "cat. dog."
    target: str | None  # the counted phrase; None when the options name the objects (then every box counts)
    source: str  # where the phrase came from: lexicon | english | counter | options | default
    query: str  # the question's (or options') words it came from, e.g. "사람"
    count: int
    count_probs: dict[int, float]  # P(count = k), for the k with P >= 0.001
    confidence: float  # count_probs[count]
    counts: dict[str, int]  # boxes per phrase
    boxes: list[DetectedBox]
    tiles: int = 0  # tiles read besides the whole image
    image_size: list[int] = Field(default_factory=list)  # width, height the boxes refer to
    option_counts: dict[str, list[int | None]] = Field(default_factory=dict)  # letter -> [lo, hi] (hi None: no limit)
    option_labels: dict[str, str] = Field(default_factory=dict)  # letter -> phrase, when options name objects


class Mark(BaseModel):
    """One numbered region of the marked image."""

    id: int  # the number drawn in the image
    box: list[float]  # x1, y1, x2, y2 of the region in original-image pixels
    area: float  # share of the image the region covers, 0..1
    point: list[float]  # x, y where the number is drawn (inside the region)
    label: str | None = None  # the detector phrase, when the region came from a detect box
    score: float | None = None  # detector score or segmenter quality


class SomEvidence(BaseModel):
    """Set-of-Mark: regions with numbers drawn on a copy of the photo (artifact ``marked``) and their table."""

    tool: Literal["som"] = "som"
    model: str
    source: Literal["detect", "auto"]  # regions seeded from detect's boxes, or automatic mask generation
    note: str | None = None  # e.g. why detect's boxes were not used
    marks: list[Mark]
    image_size: list[int] = Field(default_factory=list)


# Later tools add their evidence types to this union (discriminated by ``tool``).
Evidence = Annotated[Union[OcrEvidence, RetrieveEvidence, DetectEvidence, SomEvidence], Field(discriminator="tool")]


class ToolResult(BaseModel):
    """What one tool produced for one question. ``ok=False`` always carries ``error``."""

    tool: str
    ok: bool
    evidence: Evidence | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)  # name -> file path (e.g. marked image)
    error: str | None = None
    seconds: float = 0.0
    settings: dict[str, Any] = Field(default_factory=dict)
    cached: bool = False

    @model_validator(mode="after")
    def _failure_has_error(self) -> ToolResult:
        if not self.ok and not self.error:
            raise ValueError("a failed ToolResult must say why (error is empty)")
        if self.ok and self.evidence is None:
            raise ValueError("a successful ToolResult must carry evidence")
        return self


class Step(BaseModel):
    """One graph node's run for one question: what the trace shows."""

    node: str
    ok: bool = True
    started: float
    seconds: float
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


Method = Literal["logits", "generate", "evidence", "fallback"]


class Decision(BaseModel):
    """A reasoner's verdict on one question."""

    probs: dict[str, float]
    method: Method
    prompt: str | None = None
    raw: str | None = None  # generated text, when generating
    flags: list[str] = Field(default_factory=list)  # e.g. "no_evidence", "unparsed"
    text: str | None = None  # the free-text answer to an open question (no options)


class Answer(BaseModel):
    """The record kept for one question: what ``vqa ask --json`` prints."""

    id: str
    answer: str
    probs: dict[str, float]
    method: Method
    tools: list[str]
    evidence: list[ToolResult]
    timings: dict[str, float]
    errors: list[str] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    prompt: str | None = None
    raw: str | None = None
    question: str
    options: dict[str, str]
    route: dict[str, Any] = Field(default_factory=dict)
    steps: list[Step] = Field(default_factory=list)
    gold: str | None = None
    text: str | None = None  # the free-text answer to an open question ("answer" is then "")

    @property
    def failed(self) -> bool:
        return self.method == "fallback"
