"""Text helpers shared by tools and the evidence reasoner: no model imports."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """NFKC, lower case, no spaces or punctuation: ``"Hello, World!" -> "helloworld"``."""
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text).lower())
