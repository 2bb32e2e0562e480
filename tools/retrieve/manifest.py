"""The knowledge base's ``manifest.json`` as typed data: what it was built with, its indexes and sources.

The JSON keys are the models' fields, in order. Reading checks the format and version first (so a foreign or
newer file gets a message saying so), then the fields.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.core.errors import ConfigError, DataError

FORMAT, FORMAT_VERSION = "vqa-kb", 1
IndexType = Literal["flat", "ivf", "hnsw"]


class EmbedderInfo(BaseModel):
    """What the KB records of its ``Embedder`` (``embedders.identity``); the fingerprint decides who may query."""

    name: str
    spec: str
    backend: str
    dim: int
    modalities: list[str]
    fingerprint: str


class IndexInfo(BaseModel):
    """One FAISS index: its type, the parameters it was built with (``tools.retrieve.index``) and its size."""

    type: IndexType
    params: dict[str, Any] = Field(default_factory=dict)
    count: int = 0


class SourceInfo(BaseModel):
    """One ``vqa kb build``/``add`` that added entries."""

    model_config = ConfigDict(extra="allow")

    path: str
    kind: str
    added: int
    skipped: int = 0
    at: str


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class KbManifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal["vqa-kb"] = FORMAT
    version: int = FORMAT_VERSION
    embedder: EmbedderInfo
    index_choice: str  # "auto" or an index type
    image_weight: float
    count: int = 0
    indexes: dict[str, IndexInfo] = Field(default_factory=dict)
    sources: list[SourceInfo] = Field(default_factory=list)
    created: str = Field(default_factory=now)
    updated: str = Field(default_factory=now)
    kinds: dict[str, int] = Field(default_factory=dict)  # entries per kind

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n"


def read_manifest(path: Path) -> KbManifest:
    """The manifest at ``path``; ``DataError`` when it is unreadable or not ours, ``ConfigError`` when newer."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}; rebuild with `vqa kb build --force`") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("version"), int):
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise DataError(f"{path} is not a vqa knowledge-base manifest (format {found!r})")
    if raw["version"] > FORMAT_VERSION:
        raise ConfigError(f"{path.parent} is knowledge-base format {raw['version']}, newer than this version reads "
                          f"({FORMAT_VERSION}): upgrade vqa-orchestrator or rebuild it")
    try:
        return KbManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise DataError(f"{path} is damaged ({problems}); rebuild it with `vqa kb build --force`") from None
