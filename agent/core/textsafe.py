"""Untrusted text made safe for a terminal: control characters removed before it is shown.

A question, an option, an id or a server's error can hold terminal escapes (``ESC]2;…BEL`` retitles the window,
``ESC[2J`` clears it), other C0/C1 controls, or bidirectional overrides (U+202E shows text reversed). ``clean``
drops them (an escape sequence whole, with its parameters), keeping newlines and tabs; ``clean_deep`` does so through lists and dicts. Only what is printed is
cleaned: files (``results.jsonl``, traces, the submission) keep the text byte for byte.
Part of ``agent.core``: it imports nothing from the project.
"""

from __future__ import annotations

import re
from typing import Any

# whole escape sequences first (CSI, OSC to BEL/ST, DCS/PM/APC/SOS to ST, two-byte ESC x; their C1 forms), so no
# parameter text is left behind
_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|[\x1b]\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
                       r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?|\x1b[ -~]")
# then what is left: C0 but tab and newline, DEL, C1; the bidi embeddings, overrides, isolates and marks
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """``text`` without control characters (C0 but ``\\n``/``\\t``, DEL, C1) and bidi controls."""
    if not isinstance(text, str):
        return text
    return _UNSAFE.sub("", _SEQUENCE.sub("", text))


def clean_deep(value: Any) -> Any:
    """``clean`` applied to every string inside lists, tuples and dict values and keys."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean_deep(k): clean_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean_deep(v) for v in value)
    return value
