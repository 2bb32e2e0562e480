"""The ranking prompt (``prompts/visdial.en.j2``): the tools' evidence (quoted data), the caption, the earlier
rounds and the question; each candidate is scored as the assistant's reply to it. Training (``vqa train --task
visdial``) uses the same prompt with the ground-truth answer as the reply (train = infer)."""

from __future__ import annotations

from typing import Iterable

import prompts
from agent.core.schema import ToolResult

TEMPLATE = "visdial.en.j2"


def template_id() -> str:
    return f"{TEMPLATE.removesuffix('.j2')}@{prompts.template_version(TEMPLATE)}"


def render(question: str, results: Iterable[ToolResult], *, caption: str = "",
           history: Iterable[tuple[str, str]] = ()) -> str:
    """The user turn of a ranking prompt (no chat markup)."""
    blocks = [{"tool": r.tool, "lines": prompts.evidence_lines(r)} for r in results if r.ok and r.evidence is not None]
    return prompts.render_template(TEMPLATE, question=question, caption=caption, history=list(history),
                                   evidence=blocks)
