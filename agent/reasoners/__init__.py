"""Reasoner registry: backends are chosen by registered name, loaded lazily (no torch import here)."""

from __future__ import annotations

import importlib
from typing import Any

from agent.core.errors import ConfigError

REGISTRY: dict[str, str] = {
    "qwen": "agent.reasoners.qwen:QwenBackend",
    "evidence": "agent.reasoners.evidence:EvidenceReasoner",
    "openai": "agent.reasoners.openai:OpenAIBackend",  # Qwen-VL behind an OpenAI-compatible server
}


def load_reasoner(name: str, **settings: Any):
    if name not in REGISTRY:
        raise ConfigError(f"unknown reasoner {name!r}: expected one of {sorted(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**settings)
