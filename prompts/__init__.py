"""Prompt templates (Jinja, ``StrictUndefined``) and the rendering of tool evidence as quoted data.

Each template's first line is ``{# version: N #}``; the template id with its version (``answer.ko@1``,
``template_id``) goes into every decision, its trace event and its ``Answer`` record (``template``), so an
answer from a changed prompt is never confused with an old one.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agent.schema import (
    DetectEvidence,
    OcrEvidence,
    Question,
    RetrievedEntry,
    RetrieveEvidence,
    SomEvidence,
    ToolResult,
)

HERE = Path(__file__).parent
_VERSION = re.compile(r"\{#\s*version:\s*(\S+)\s*#\}")


@lru_cache(maxsize=None)
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(HERE), undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, autoescape=False)


def template_version(name: str) -> str:
    m = _VERSION.search((HERE / name).read_text(encoding="utf-8"))
    if not m:
        raise ValueError(f"prompt template {name} has no '{{# version: N #}}' header")
    return m.group(1)


def quote(text: str) -> str:
    """JSON-quote untrusted text; ``<`` and ``>`` are escaped so it cannot close the data delimiters."""
    return json.dumps(text, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")


def evidence_lines(result: ToolResult) -> list[str]:
    """The data lines of one successful tool result, each value quoted."""
    ev = result.evidence
    if isinstance(ev, OcrEvidence):
        if not ev.spans:
            return ["no text found"]
        return [f"text={quote(s.text)} confidence={s.confidence:.2f} box={[round(v) for v in s.box]}"
                for s in ev.spans]
    if isinstance(ev, RetrieveEvidence):
        return [retrieved_line(e) for e in ev.entries] or ["no similar entries found"]
    if isinstance(ev, DetectEvidence):
        return detect_lines(ev)
    if isinstance(ev, SomEvidence):
        return som_lines(ev)
    raise TypeError(f"no prompt rendering for evidence of type {type(ev).__name__}")


def retrieved_line(e: RetrievedEntry) -> str:
    """One retrieved entry as a quoted few-shot example: a solved question with its answer, a caption, a passage."""
    head = f"id={quote(e.id)} score={e.score:.2f}" + (" same_photo=true" if e.same_image else "")
    if e.kind == "question":
        options = " ".join(f"{k}={quote(v)}" for k, v in (e.options or {}).items())
        answer = f" answer={e.answer} {quote(e.answer_text)}" if e.answer and e.answer_text is not None else ""
        return f"similar solved question {head}: question={quote(e.text)} options: {options}{answer}"
    if e.kind == "caption":
        return f"similar image {head}: caption={quote(e.text)}"
    return f"passage {head}: text={quote(e.text)}"


def detect_lines(ev: DetectEvidence, max_boxes: int = 20) -> list[str]:
    """The count and how sure it is, which options it matches, then the boxes (best first)."""
    lines = [f"phrase={quote(ev.phrase)} from={quote(ev.query)} ({ev.source}) count={ev.count} "
             f"confidence={ev.confidence:.2f}" + (f" tiles={ev.tiles}" if ev.tiles else "")]
    if ev.option_labels:
        lines.append("options as objects: " + " ".join(f"{k}={quote(p)} found={ev.counts.get(p, 0)}"
                                                      for k, p in ev.option_labels.items()))
    if ev.option_counts:
        spans = " ".join(f"{k}={lo}" + ("+" if hi is None else "" if hi == lo else f"-{hi}")
                         for k, (lo, hi) in ev.option_counts.items())
        hits = [k for k, (lo, hi) in ev.option_counts.items() if lo <= ev.count and (hi is None or ev.count <= hi)]
        lines.append(f"options as counts: {spans}; count {ev.count} matches " + (",".join(hits) or "no option"))
    lines += [f"box={[round(v) for v in b.box]} label={quote(b.label)} score={b.score:.2f}"
              for b in ev.boxes[:max_boxes]]
    if len(ev.boxes) > max_boxes:
        lines.append(f"(+{len(ev.boxes) - max_boxes} more boxes)")
    return lines


def som_lines(ev: SomEvidence) -> list[str]:
    """Where the marks are (the marked image) and one line per mark."""
    note = f" ({ev.note})" if ev.note else ""
    if not ev.marks:
        return [f"no regions found{note}"]
    head = (f"marked image: the second image, {len(ev.marks)} numbered regions from "
            f"{'detect boxes' if ev.source == 'detect' else 'automatic segmentation'}{note}")
    return [head] + [f"mark={m.id} box={[round(v) for v in m.box]} area={m.area:.3f}"
                     + (f" label={quote(m.label)}" if m.label else "") for m in ev.marks]


def _template_name(question: Question) -> str:
    return f"{'answer' if question.options else 'open'}.{question.language or 'en'}.j2"


def template_id(question: Question) -> str:
    """The template ``question`` is rendered with and its version, e.g. ``"answer.ko@1"``."""
    name = _template_name(question)
    return f"{name.removesuffix('.j2')}@{template_version(name)}"


def render(question: Question, results: Iterable[ToolResult], *, history: Iterable[tuple[str, str]] = (),
           marked: bool | None = None) -> tuple[str, str]:
    """Render the answer prompt for ``question``; returns ``(text, template_id)`` e.g. ``("...", "answer.ko@1")``.

    ``marked``: the model also sees a marked image (som) after the photo; by default, when a tool drew one.

    A question without options (``vqa chat``) gets the free-text template ``open.<lang>``.
    """
    name = _template_name(question)
    results = list(results)
    blocks = [{"tool": r.tool, "lines": evidence_lines(r)} for r in results if r.ok and r.evidence is not None]
    if marked is None:
        marked = any(r.ok and "marked" in r.artifacts for r in results)
    text = _env().get_template(name).render(
        question=quote(question.text)[1:-1], options=question.options, letters=question.letters,
        evidence=blocks, history=list(history), marked=marked,
    )
    return text.strip(), template_id(question)
