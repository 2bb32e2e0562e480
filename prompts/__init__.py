"""Prompt templates (Jinja, ``StrictUndefined``); each tool's evidence renders its own quoted data lines
(``Evidence.prompt_lines``).

Each template's first line is ``{# version: N #}``; the template id with its version (``answer.ko@1``,
``template_id``) goes into every decision, its trace event and its ``Answer`` record (``template``), and the
versions of all templates into a run directory's identity (``run.json``), so an answer from a changed prompt is
never confused with an old one.

Everything a user, a CSV or a tool wrote is data: tool evidence is JSON-quoted (``quote``); the question, the
options and earlier chat turns go through the templates' ``inline`` filter (escaped onto one line), so no value
can add a line, open or close a tag, or pose as an option or an answer.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agent.core.evidence import quote
from agent.core.schema import Question, ToolResult

HERE = Path(__file__).parent
_VERSION = re.compile(r"\{#\s*version:\s*(\S+)\s*#\}")


@lru_cache(maxsize=None)
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, autoescape=False)
    env.filters["inline"] = inline
    return env


def template_version(name: str) -> str:
    m = _VERSION.search((HERE / name).read_text(encoding="utf-8"))
    if not m:
        raise ValueError(f"prompt template {name} has no '{{# version: N #}}' header")
    return m.group(1)


def template_versions() -> dict[str, str]:
    """Every template's version, by name (``{"answer.en": "1", ...}``): part of what identifies a run's answers."""
    return {f.name.removesuffix(".j2"): template_version(f.name) for f in sorted(HERE.glob("*.j2"))}


def inline(text: str) -> str:
    """Untrusted text inside a prompt line: ``quote`` without the outer quotes (no newline, ``<`` or ``>``)."""
    return quote(text)[1:-1]


def evidence_lines(result: ToolResult) -> list[str]:
    """The data lines of one successful tool result, each value quoted (its evidence renders itself)."""
    return result.evidence.prompt_lines()


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
        question=question.text, options=question.options, letters=question.letters,
        evidence=blocks, history=list(history), marked=marked,
    )
    return text.strip(), template_id(question)


def render_plan(question: Question) -> tuple[str, str]:
    """The ``vlm`` planner's first message for ``question`` (what it may do with the tools, then the question and
    its options) and the template id, e.g. ``("...", "plan@1")``."""
    text = _env().get_template("plan.j2").render(question=question.text, options=question.options,
                                                 letters=question.letters)
    return text.strip(), f"plan@{template_version('plan.j2')}"


def render_template(name: str, **values: object) -> str:
    """Render the template file ``name`` (e.g. ``"visdial.en.j2"``) with ``values``, stripped."""
    return _env().get_template(name).render(**values).strip()
