"""File and folder names made from untrusted ids (question ids come from the CSV)."""

from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"[\w.-]+")  # one path component on every filesystem we write to
_MAX_BYTES = 120  # well under the usual 255-byte name limit, with room for a hash


def artifact_dirname(qid: str) -> str:
    """The folder name for question ``qid``'s artifacts: one path component, never ``.`` or ``..``, and
    different ids always get different names.

    An id that is already a safe name (letters, digits, ``_``, ``-``, ``.``; not ``.``/``..``; short) is used as
    it is. Any other id becomes its slug (unsafe characters as ``_``) plus ``~`` and 16 hex digits of the id's
    sha256: ``~`` never occurs in a safe name, so ``a/b`` (``a_b~…``) and ``a_b`` cannot meet.
    """
    if _SAFE.fullmatch(qid) and qid not in (".", "..") and len(qid.encode("utf-8")) <= _MAX_BYTES:
        return qid
    slug = re.sub(r"[^\w.-]", "_", qid)[:60]
    return f"{slug}~{hashlib.sha256(qid.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
