"""The option letter in an OpenAI-compatible server's reply: pure functions, tested on recorded replies.

- ``logprob_probs``: per-letter probabilities from the answer's first token and its ``top_logprobs``;
- ``constraint_fields`` / ``conforming_letter``: the request fields that constrain decoding to the letters in
  each server dialect, and whether a reply kept to them (a server that ignores the fields answers freely).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

from agent.core.probs import logsumexp, softmax_over_letters

DIALECTS: tuple[str, ...] = ("choice", "guided_choice", "json_schema", "grammar")
_LETTER = re.compile(r"^[\s(\[*\"']*([a-eA-E])[\s)\].:*\"',]*$")


def token_letter(token: str) -> str | None:
    """The option letter a token spells (``"b"``, ``" B"``, ``"(b"``, ``"**B"``, ``"b."``), else ``None``."""
    m = _LETTER.match(token)
    return m.group(1).lower() if m else None


def logprob_probs(content: Sequence[dict], letters: Sequence[str], max_skip: int = 3) -> dict[str, float] | None:
    """Per-letter probabilities from the answer's first word, or ``None`` when it is not an option letter.

    Leading tokens without letters or digits (``"("``, ``"**"``, spaces) are skipped, at most ``max_skip``.
    """
    for i, entry in enumerate(content):
        token = entry.get("token", "")
        if not any(c.isalnum() for c in token):
            if i >= max_skip:
                return None
            continue
        if token_letter(token) not in letters:
            return None
        alternatives = [(token, entry.get("logprob", 0.0))]
        alternatives += [(t.get("token", ""), t.get("logprob", -math.inf)) for t in entry.get("top_logprobs") or []]
        scores: dict[str, list[float]] = {k: [] for k in letters}
        for tok, lp in dict(alternatives).items():
            k = token_letter(tok)
            if k in scores and lp is not None:
                scores[k].append(float(lp))
        return softmax_over_letters({k: logsumexp(v) for k, v in scores.items()})
    return None


def constraint_fields(dialect: str, letters: Sequence[str]) -> dict[str, Any]:
    """The request fields that constrain the answer to ``letters`` in one server dialect."""
    if dialect == "choice":
        return {"structured_outputs": {"choice": list(letters)}}
    if dialect == "guided_choice":
        return {"guided_choice": list(letters)}
    if dialect == "json_schema":
        schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": list(letters)}},
                  "required": ["answer"], "additionalProperties": False}
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}}
    if dialect == "grammar":
        return {"grammar": "root ::= " + " | ".join(f'"{k}"' for k in letters)}
    raise ValueError(f"unknown constraint dialect {dialect!r}: expected one of {DIALECTS}")


def conforming_letter(text: str, dialect: str, letters: Sequence[str]) -> str | None:
    """The letter when ``text`` is exactly what ``dialect`` allows, else ``None`` (the server ignored it)."""
    t = text.strip()
    if dialect == "json_schema":
        try:
            t = json.loads(t)["answer"]
        except (ValueError, TypeError, KeyError):
            return None
    return t if t in letters else None
