"""The labelled question bank the router learns from (``data/bank.jsonl``) and the held-out set it is measured on
(``data/heldout_v2.jsonl``).

One JSON object a line: ``id``, ``split`` (``train`` | ``val`` | ``test``), ``group`` (a hand-written batch or a
template; a group never straddles splits), ``src`` (``hand`` | ``template``), ``lang``, ``question``, ``options``
and ``tools`` (the tools the question needs, a subset of ``som, detect, ocr, retrieve``; empty: none).
The bank holds ``train`` and ``val``; ``test`` is the separate held-out file, written and labelled before the
router was run on it and never used to fit or tune. ``data/LABELLING.md`` says how questions are labelled.
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError, field_validator

from agent.core.errors import DataError
from agent.core.schema import MAX_OPTIONS, MIN_OPTIONS
from tools import BUILTIN

TOOL_NAMES = tuple(BUILTIN)  # the built-in tools: the labels of the bank and the learned router

SPLITS = ("train", "val", "test")


def default_bank() -> Path:
    return Path(str(files("agent.routing").joinpath("data/bank.jsonl")))


def default_heldout() -> Path:
    """The held-out test set (``split`` ``test`` only)."""
    return Path(str(files("agent.routing").joinpath("data/heldout_v2.jsonl")))


def default_for(split_name: str) -> Path:
    """Where a split lives by default: ``test`` in the held-out file, ``train`` and ``val`` in the bank."""
    return default_heldout() if split_name == "test" else default_bank()


class BankItem(BaseModel):
    id: str
    split: Literal["train", "val", "test"]
    group: str
    src: Literal["hand", "template"] = "hand"
    lang: Literal["ko", "en"]
    question: str
    options: list[str]
    tools: list[str]

    @field_validator("options")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        if not MIN_OPTIONS <= len(v) <= MAX_OPTIONS:
            raise ValueError(f"expected {MIN_OPTIONS}-{MAX_OPTIONS} options, found {len(v)}")
        return v

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TOOL_NAMES]
        if unknown:
            raise ValueError(f"unknown tool(s) {unknown}; expected a subset of {list(TOOL_NAMES)}")
        return [t for t in TOOL_NAMES if t in v]  # canonical order, no duplicates


def load_bank(path: Path | None = None) -> list[BankItem]:
    """Every item of the bank; a malformed line, a repeated id or a group in two splits is a ``DataError``."""
    path = Path(path) if path else default_bank()
    if not path.is_file():
        raise DataError(f"question bank {path} does not exist; pass a JSONL file (one labelled question a line)")
    items: list[BankItem] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(BankItem.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise DataError(f"{path}:{n}: expected a bank item (id, split, group, lang, question, options, tools): "
                            f"{msg}") from None
    seen: dict[str, str] = {}
    group_split: dict[str, str] = {}
    for it in items:
        if it.id in seen:
            raise DataError(f"{path}: id {it.id!r} appears twice; ids must be unique")
        seen[it.id] = it.split
        if group_split.setdefault(it.group, it.split) != it.split:
            raise DataError(f"{path}: group {it.group!r} is in both {group_split[it.group]} and {it.split}; "
                            "a group must stay in one split")
    if not items:
        raise DataError(f"question bank {path} is empty")
    return items


def split(items: list[BankItem], *names: str) -> list[BankItem]:
    return [it for it in items if it.split in names]


def fingerprint(items: list[BankItem]) -> str:
    """sha256 of the items (what a model trained on them saw), order-independent."""
    lines = sorted(it.model_dump_json() for it in items)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
