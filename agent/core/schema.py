"""The shared vocabulary: questions, tool results, routes, steps, answers.

Every module speaks these types; tools return data (never prose), typed as an ``agent.core.evidence.Evidence``
subclass that renders itself. Pixel geometry travels as ``supervision.Detections`` inside tools and as plain
lists (``[x1, y1, x2, y2]``) once serialised here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from agent.core.evidence import (  # noqa: F401 - re-exported: the built-in evidence types are part of the vocabulary
    DetectedBox,
    DetectEvidence,
    Evidence,
    GenericEvidence,
    Mark,
    OcrEvidence,
    OcrRead,
    RetrievedEntry,
    RetrieveEvidence,
    SomEvidence,
    TextSpan,
    evidence_type,
)

LETTERS: str = "abcde"
MIN_OPTIONS, MAX_OPTIONS = 2, 5
QUESTION_LIMIT = 8_000  # characters of a question; a longer one is refused (a CSV row goes to failed.csv)
OPTION_LIMIT = 2_000  # characters of one option

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
    line: int | None = Field(None, exclude=True)  # the CSV line the row starts on (failed.csv); not in records

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question text is empty")
        if len(v.strip()) > QUESTION_LIMIT:
            raise ValueError(f"the question is {len(v.strip()):,} characters; expected at most {QUESTION_LIMIT:,}")
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
        long = [k for k, t in v.items() if len(str(t).strip()) > OPTION_LIMIT]
        if long:
            raise ValueError(f"options {long} are longer than {OPTION_LIMIT:,} characters; expected short answers")
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


def brief_error(error: str | None, limit: int = 100) -> str:
    """A failure as one short line for views that show it per question: a tool unavailable for the whole run
    reads ``unavailable: <what is missing>`` (its full text, with the fix, is shown once: in the run's summary and
    on the first row of ``tool_failures.csv`` for that tool); anything else its first line, cut to ``limit``."""
    text = (error or "failed").strip() or "failed"
    first = text.splitlines()[0]
    for prefix in ("ToolUnavailable: ", "unavailable: "):
        if first.startswith(prefix):  # what is missing, without the long how-to that follows it
            first = "unavailable: " + first.removeprefix(prefix).split(" (")[0].split(": ")[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


class ToolResult(BaseModel):
    """What one tool produced for one question. ``ok=False`` always carries ``error``.

    ``evidence`` is the tool's own ``Evidence`` subclass (looked up by its ``tool`` field when read from JSON, a
    ``GenericEvidence`` when that type is not loaded) and is written out with all of its fields."""

    tool: str
    ok: bool
    evidence: SerializeAsAny[Evidence] | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)  # name -> file path (e.g. marked image)
    error: str | None = None
    seconds: float = 0.0
    settings: dict[str, Any] = Field(default_factory=dict)
    cached: bool = False
    transient: bool = False  # the failure may not recur (a timeout, a stopped run): a rerun calls the tool again

    @field_validator("evidence", mode="before")
    @classmethod
    def _typed_evidence(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return evidence_type(v.get("tool")).model_validate(v)
        return v

    @model_validator(mode="after")
    def _failure_has_error(self) -> ToolResult:
        if not self.ok and not self.error:
            raise ValueError("a failed ToolResult must say why (error is empty)")
        if self.ok and self.evidence is None:
            raise ValueError("a successful ToolResult must carry evidence")
        return self

    def summary(self, limit: int = 6) -> str:
        """One line: what the tool found, or why it failed."""
        return self.evidence.summary(limit) if self.ok and self.evidence is not None else \
            f"failed: {brief_error(self.error)}"


class Route(BaseModel):
    """Which tools a question gets and why: the router's choice (``tools``, ``reasons``, ``method``: rules, e5,
    none or forced), then what the graph runs of it (``run``) and what it cannot run (``skipped``: tool -> why)."""

    tools: list[str] = Field(default_factory=list)
    reasons: dict[str, str] = Field(default_factory=dict)
    method: str = "none"
    run: list[str] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    scores: dict[str, float] = Field(default_factory=dict)  # the learned stage's probability per tool
    thresholds: dict[str, float] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)  # option features that fired (with their options)
    nearest: list[dict[str, Any]] = Field(default_factory=list)  # the closest bank questions: question, tools, cos

    def as_dict(self) -> dict[str, Any]:
        """The router's part (``vqa route --json``): the choice, and the learned stage's scores when it ran."""
        keys = {"tools", "reasons", "method"} | ({"scores", "thresholds", "features", "nearest"} if self.scores else set())
        return self.model_dump(include=keys)


class Step(BaseModel):
    """One graph node's run for one question: what the trace shows. ``tool``: which tool, for ``run_tool``."""

    node: str
    tool: str | None = None
    ok: bool = True
    started: float
    seconds: float
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        """``"run_tool:ocr"`` for a tool's step, else the node (the key of ``Answer.timings``)."""
        return f"{self.node}:{self.tool}" if self.tool else self.node


Method = Literal["logits", "generate", "evidence", "fallback"]


class Decision(BaseModel):
    """A reasoner's verdict on one question."""

    probs: dict[str, float]
    method: Method
    prompt: str | None = None
    raw: str | None = None  # generated text, when generating
    flags: list[str] = Field(default_factory=list)  # e.g. "no_evidence", "unparsed"
    text: str | None = None  # the free-text answer to an open question (no options)
    template: str | None = None  # the prompt template and its version, e.g. "answer.ko@1" (no prompt: None)
    reasoner: str | None = None  # the backend's fingerprint: the model and settings that determine the output


class ToolCall(BaseModel):
    """One call of a tool by a planner: the tool, the arguments it was given, and how it went."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    ok: bool = True
    error: str | None = None  # unknown tool, bad arguments, repeated call, tool failure ...
    cached: bool = False  # the output came from an earlier round or the tool cache, not a new run


class Round(BaseModel):
    """One round (``escalate``) or planner step (``vlm``): the tools called, why, and the confidence after it."""

    index: int
    planner: str  # rules, escalate, vlm
    calls: list[ToolCall] = Field(default_factory=list)
    why: str = ""
    answer: str | None = None  # the letter chosen after this round, when the round ended with a decision
    confidence: float | None = None  # top option probability after this round
    margin: float | None = None  # top minus second probability after this round
    seconds: float = 0.0


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
    route: Route | None = None  # None: the question never reached the router (e.g. its image failed to load)
    steps: list[Step] = Field(default_factory=list)
    gold: str | None = None
    text: str | None = None  # the free-text answer to an open question ("answer" is then "")
    template: str | None = None  # as ``Decision``: what produced this answer
    reasoner: str | None = None
    rounds: list[Round] = Field(default_factory=list)  # planner rounds/steps; empty for a plain rules run

    @field_validator("route", mode="before")
    @classmethod
    def _no_route(cls, v: Any) -> Any:
        return None if v == {} else v  # records written before routes were typed said {} for "not routed"

    @property
    def failed(self) -> bool:
        """A fallback answer: no reasoner decided it (a bad image or row, a reasoner failure)."""
        return self.method == "fallback"

    @property
    def incomplete(self) -> bool:
        """Answered while a tool failed for a reason that may pass (it timed out, the run was stopped): a rerun of
        the run directory answers it again; a tool that is unavailable (weights missing) is not such a reason."""
        return any(not r.ok and r.transient for r in self.evidence)
