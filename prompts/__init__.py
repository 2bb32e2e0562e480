"""Prompt templates (Jinja, ``StrictUndefined``) and the rendering of tool evidence as quoted data.

Each template's first line is ``{# version: N #}``; the version goes into
traces and cache keys so a prompt change is never confused with an old one.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agent.schema import OcrEvidence, Question, ToolResult

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
    raise TypeError(f"no prompt rendering for evidence of type {type(ev).__name__}")


def render(question: Question, results: Iterable[ToolResult], *, history: Iterable[tuple[str, str]] = ()) -> tuple[str, str]:
    """Render the answer prompt for ``question``; returns ``(text, template_id)`` e.g. ``("...", "answer.ko@1")``."""
    name = f"answer.{question.language or 'en'}.j2"
    blocks = [{"tool": r.tool, "lines": evidence_lines(r)} for r in results if r.ok and r.evidence is not None]
    text = _env().get_template(name).render(
        question=quote(question.text)[1:-1], options=question.options, letters=question.letters,
        evidence=blocks, history=list(history),
    )
    return text.strip(), f"{name.removesuffix('.j2')}@{template_version(name)}"
