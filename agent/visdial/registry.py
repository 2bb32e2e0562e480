"""The candidate scorer of each reasoner backend, by its registered name (lazy ``module:Class`` strings, so
importing this never imports torch)."""

from __future__ import annotations

import importlib
from typing import Any

from agent.core.errors import ConfigError
from agent.visdial.scorers import CandidateScorer

SCORERS: dict[str, str] = {
    "evidence": "agent.visdial.scorers:EvidenceScorer",
    "qwen": "agent.visdial.qwen:QwenScorer",
    "openai": "agent.visdial.server:ServerScorer",
}


def scorer_for(reasoner: Any) -> CandidateScorer:
    """The candidate scorer of a loaded reasoner backend (by its registered ``name``)."""
    name = getattr(reasoner, "name", None)
    if name not in SCORERS:
        raise ConfigError(f"reasoner {name!r} cannot rank candidates: expected one of {sorted(SCORERS)} "
                          "(--reasoner evidence, qwen or openai)")
    module, _, cls = SCORERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(reasoner)
