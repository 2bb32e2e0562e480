"""Writing the adapter manifest (``vqa train``); reading and checking it is ``agent.core.adapter``, which inference uses
without importing training."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from agent.core.adapter import FORMAT, MANIFEST


def template_versions(template_ids: Iterable[str]) -> dict[str, str]:
    """``["answer.ko@2", ...]`` -> ``{"answer.ko": "2"}``."""
    out: dict[str, str] = {}
    for tid in template_ids:
        name, _, version = tid.partition("@")
        out[name] = version
    return out


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    """Write ``folder/vqa_adapter.json`` atomically (``format`` added)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, **data}, f, ensure_ascii=False, indent=2, default=str)
    os.replace(tmp, path)
    return path
