"""Tool evidence: data that renders itself (prompt lines, a one-line summary, the HTML trace) and may score options.

Every tool returns one ``Evidence`` subclass whose ``tool`` field is a literal naming it. Defining such a class
registers it under that name, so ``ToolResult`` validates and serialises any tool's evidence, plug-ins' included;
a record whose evidence type is not loaded reads back as ``GenericEvidence`` (its fields kept as they are, so
it serialises to the same JSON). The prompt builder, the display, the trace page and the evidence reasoner
only call the hooks below, never a tool by name:

- ``prompt_lines()``: the data lines inside ``<tool_output tool="...">`` (untrusted text through ``quote``);
- ``summary(limit)``: one line for the terminal and the trace tree;
- ``overlay()`` / ``table()`` / ``color``: boxes drawn on the photo, a table and their colour on the HTML page;
- ``support(question)``: option -> support in [0, 1] for the evidence reasoner, or ``None`` (no opinion). The
  built-in types name their scorer by ``"module:function"`` (``scorer``), so this layer never imports a reasoner.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from agent.core.schema import Question

_TYPES: dict[str, type[Evidence]] = {}


def quote(text: str) -> str:
    """JSON-quote untrusted text; ``<`` and ``>`` are escaped so it cannot close the data delimiters."""
    return json.dumps(text, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")


def quote_json(value: Any) -> str:
    """Any JSON value as data: strings quoted, containers dumped, ``<``/``>`` escaped inside them."""
    return json.dumps(value, ensure_ascii=False, default=str).replace("<", "\\u003c").replace(">", "\\u003e")


@dataclass
class Box:
    """A box drawn on the photo: ``[x1, y1, x2, y2]`` in the pixels of ``Overlay.size`` and its label."""

    xyxy: list[float]
    label: str = ""


@dataclass
class Overlay:
    boxes: list[Box]
    size: list[int] | None = None  # width, height the boxes refer to; None: the working image's
    css: str = ""  # class of each box group on the page; "" means "tool-box <tool>-box"


@dataclass
class Table:
    """A table on the HTML trace page (cells are text, escaped by the page)."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    css: str = "evidence-table"
    row_css: str = "evidence-row"


def find_boxes(value: Any) -> list[Box]:
    """Every ``{"box": [x1, y1, x2, y2], ...}`` in a JSON tree, labelled with its text, label or id."""
    out: list[Box] = []
    if isinstance(value, dict):
        box = value.get("box")
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
            out.append(Box(list(box), str(value.get("text") or value.get("label") or value.get("id") or "")))
        for v in value.values():
            if isinstance(v, (dict, list)):
                out += find_boxes(v)
    elif isinstance(value, list):
        for v in value:
            out += find_boxes(v)
    return out


class Evidence(BaseModel):
    """What one tool found. Subclasses set ``tool: Literal["name"] = "name"`` and override the hooks they need."""

    tool: str
    color: ClassVar[str] = "#444444"  # its boxes on the HTML trace page
    scorer: ClassVar[str | None] = None  # "module:function(evidence, question) -> {letter: support}"

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.model_fields["tool"].default
        if isinstance(name, str) and name:
            known = _TYPES.get(name)
            if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
                raise TypeError(f"evidence for tool {name!r} is already {known.__module__}.{known.__qualname__}; "
                                f"{cls.__module__}.{cls.__qualname__} needs another tool name")
            _TYPES[name] = cls

    def _fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"tool"})

    def prompt_lines(self) -> list[str]:
        """The data lines shown to the model; by default one ``field=<JSON>`` line per field."""
        return [f"{k}={quote_json(v)}" for k, v in self._fields().items()] or ["no data"]

    def summary(self, limit: int = 6) -> str:
        """One line: what the tool found; by default the fields, shortened."""
        text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in self._fields().items())
        return text if len(text) <= 40 * limit else text[: 40 * limit - 3] + "..."

    def overlay(self) -> Overlay | None:
        """Boxes for the photo on the HTML page; by default every ``box`` in the fields (sized by ``image_size``)."""
        data = self._fields()
        boxes = find_boxes(data)
        size = data.get("image_size")
        return Overlay(boxes, size if isinstance(size, list) and len(size) >= 2 else None) if boxes else None

    def table(self) -> Table | None:
        """A table for the HTML page, or ``None``."""
        return None

    def support(self, question: Question) -> dict[str, float] | None:
        """Each option's support in [0, 1] for the evidence reasoner, or ``None`` when it says nothing about them."""
        if not self.scorer:
            return None
        module, _, name = self.scorer.partition(":")
        return getattr(importlib.import_module(module), name)(self, question)


class GenericEvidence(Evidence):
    """Evidence of a tool whose type is not loaded in this process: every field kept as read."""

    model_config = ConfigDict(extra="allow")


def evidence_type(tool: str | None) -> type[Evidence]:
    """The registered evidence type of ``tool``, else ``GenericEvidence``."""
    return _TYPES.get(tool or "", GenericEvidence)


def evidence_types() -> dict[str, type[Evidence]]:
    return dict(_TYPES)


def _box(b: list[float]) -> list[int]:
    return [round(v) for v in b]


# ---------------------------------------------------------------- ocr

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


class OcrEvidence(Evidence):
    tool: Literal["ocr"] = "ocr"
    engine: str  # the engine, or the engines joined with ", "
    spans: list[TextSpan]
    reads: list[OcrRead] = Field(default_factory=list)  # each engine's own spans; empty when one engine read

    color: ClassVar[str] = "#e4572e"
    scorer: ClassVar[str | None] = "agent.core.support:score_ocr"

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.spans)

    def prompt_lines(self) -> list[str]:
        if not self.spans:
            return ["no text found"]
        return [f"text={quote(s.text)} confidence={s.confidence:.2f} box={_box(s.box)}" for s in self.spans]

    def summary(self, limit: int = 6) -> str:
        if not self.spans:
            return f"{self.engine}: no text found"
        shown = ", ".join(repr(s.text) for s in self.spans[:limit])
        more = f" (+{len(self.spans) - limit} more)" if len(self.spans) > limit else ""
        return f"{self.engine}: {len(self.spans)} spans: {shown}{more}"

    def overlay(self) -> Overlay | None:
        return Overlay([Box(list(s.box), s.text) for s in self.spans], css="ocr-span") if self.spans else None

    def table(self) -> Table | None:
        if not self.spans:
            return None
        return Table("OCR spans", ["#", "text", "confidence", "box"], css="ocr-spans", row_css="ocr-span-row",
                     rows=[[str(i), s.text, f"{s.confidence:.2f}", str(_box(s.box))]
                           for i, s in enumerate(self.spans, 1)])


# ---------------------------------------------------------------- retrieve

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

    def prompt_line(self) -> str:
        """A quoted few-shot example: a solved question with its answer, a caption, a passage."""
        head = f"id={quote(self.id)} score={self.score:.2f}" + (" same_photo=true" if self.same_image else "")
        if self.kind == "question":
            options = " ".join(f"{k}={quote(v)}" for k, v in (self.options or {}).items())
            answer = (f" answer={self.answer} {quote(self.answer_text)}"
                      if self.answer and self.answer_text is not None else "")
            return f"similar solved question {head}: question={quote(self.text)} options: {options}{answer}"
        if self.kind == "caption":
            return f"similar image {head}: caption={quote(self.text)}"
        return f"passage {head}: text={quote(self.text)}"


class RetrieveEvidence(Evidence):
    tool: Literal["retrieve"] = "retrieve"
    kb: str
    embedder: str
    entries: list[RetrievedEntry]
    excluded: list[str] = Field(default_factory=list)  # ids the leakage guard kept out

    color: ClassVar[str] = "#76b041"
    scorer: ClassVar[str | None] = "agent.core.support:score_retrieve"

    def prompt_lines(self) -> list[str]:
        return [e.prompt_line() for e in self.entries] or ["no similar entries found"]

    def summary(self, limit: int = 6) -> str:
        if not self.entries:
            return "no similar entries"
        return f"{len(self.entries)} similar: " + ", ".join(
            f"{e.id} {e.score:.2f}" + (f" -> {e.answer_text!r}" if e.answer_text else "") for e in self.entries[:limit])

    def table(self) -> Table | None:
        if not self.entries:
            return None
        return Table("Retrieved entries", ["id", "kind", "score", "text", "answer"],
                     rows=[[e.id, e.kind, f"{e.score:.2f}", e.text, e.answer_text or ""] for e in self.entries])


# ---------------------------------------------------------------- detect

class DetectedBox(BaseModel):
    box: list[float]  # x1, y1, x2, y2 in original-image pixels
    score: float
    label: str  # the detector phrase it matched


class DetectEvidence(Evidence):
    """What ``detect`` found: the boxes of the asked-for phrase and their count, with how sure it is."""

    tool: Literal["detect"] = "detect"
    model: str
    phrase: str  # the detector's text prompt, e.g. "person." or "cat. dog."
    target: str | None  # the counted phrase; None when the options name the objects (then every box counts)
    source: str  # where the phrase came from: lexicon | english | counter | options | default | asked
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

    color: ClassVar[str] = "#17bebb"
    scorer: ClassVar[str | None] = "agent.core.support:score_detect"
    max_boxes: ClassVar[int] = 20  # boxes listed in the prompt

    def prompt_lines(self) -> list[str]:
        """The count and how sure it is, which options it matches, then the boxes (best first)."""
        lines = [f"phrase={quote(self.phrase)} from={quote(self.query)} ({self.source}) count={self.count} "
                 f"confidence={self.confidence:.2f}" + (f" tiles={self.tiles}" if self.tiles else "")]
        if self.option_labels:
            lines.append("options as objects: " + " ".join(f"{k}={quote(p)} found={self.counts.get(p, 0)}"
                                                          for k, p in self.option_labels.items()))
        if self.option_counts:
            spans = " ".join(f"{k}={lo}" + ("+" if hi is None else "" if hi == lo else f"-{hi}")
                             for k, (lo, hi) in self.option_counts.items())
            hits = [k for k, (lo, hi) in self.option_counts.items()
                    if lo <= self.count and (hi is None or self.count <= hi)]
            lines.append(f"options as counts: {spans}; count {self.count} matches " + (",".join(hits) or "no option"))
        lines += [f"box={_box(b.box)} label={quote(b.label)} score={b.score:.2f}" for b in self.boxes[:self.max_boxes]]
        if len(self.boxes) > self.max_boxes:
            lines.append(f"(+{len(self.boxes) - self.max_boxes} more boxes)")
        return lines

    def summary(self, limit: int = 6) -> str:
        return (f"{self.count} x {self.target or self.phrase!r} (confidence {self.confidence:.2f}; phrase from "
                f"{self.source}: {self.query!r})")


# ---------------------------------------------------------------- som

class Mark(BaseModel):
    """One numbered region of the marked image."""

    id: int  # the number drawn in the image
    box: list[float]  # x1, y1, x2, y2 of the region in original-image pixels
    area: float  # share of the image the region covers, 0..1
    point: list[float]  # x, y where the number is drawn (inside the region)
    label: str | None = None  # the detector phrase, when the region came from a detect box
    score: float | None = None  # detector score or segmenter quality


class SomEvidence(Evidence):
    """Set-of-Mark: regions with numbers drawn on a copy of the photo (artifact ``marked``) and their table."""

    tool: Literal["som"] = "som"
    model: str
    source: Literal["detect", "auto"]  # regions seeded from detect's boxes, or automatic mask generation
    note: str | None = None  # e.g. why detect's boxes were not used
    marks: list[Mark]
    image_size: list[int] = Field(default_factory=list)

    color: ClassVar[str] = "#ffc914"

    def prompt_lines(self) -> list[str]:
        """Where the marks are (the marked image) and one line per mark."""
        note = f" ({self.note})" if self.note else ""
        if not self.marks:
            return [f"no regions found{note}"]
        head = (f"marked image: the second image, {len(self.marks)} numbered regions from "
                f"{'detect boxes' if self.source == 'detect' else 'automatic segmentation'}{note}")
        return [head] + [f"mark={m.id} box={_box(m.box)} area={m.area:.3f}"
                         + (f" label={quote(m.label)}" if m.label else "") for m in self.marks]

    def summary(self, limit: int = 6) -> str:
        labels = ", ".join(f"{m.id}:{m.label}" if m.label else str(m.id) for m in self.marks[:limit])
        more = f" (+{len(self.marks) - limit} more)" if len(self.marks) > limit else ""
        return f"{len(self.marks)} marks from {self.source}: {labels}{more}" + (f"; {self.note}" if self.note else "")
