"""Planners: who picks the tools for a question (``--planner``; ``Settings.planner``).

- ``rules``: the router's tools (or ``--tools``), one round, one decision: the fixed pipeline.
- ``escalate``: the router's tools first; while the decision is unsure (top probability under ``confidence``,
  top minus second under ``margin``, or the reasoner's ``no_evidence`` flag) one more tool is added — the
  router's next candidates first (highest score under its threshold), then the rest, cheapest first by the
  seconds measured in this run (``ToolCosts``) — and the reasoner decides again, up to ``max_rounds`` rounds.
  Tool outputs already in the question's state are never computed again. Graph nodes: ``agent.graph``;
  the choice of the next tool: ``agent.planners.escalate``.
- ``vlm``: the model plans with tool calling (``agent.planners.vlm``).

Every planner records its rounds as ``Answer.rounds`` (``agent.core.schema.Round``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.core.errors import ConfigError

if TYPE_CHECKING:
    from agent.config import Settings

PLANNERS: dict[str, str] = {"rules": "agent.graph", "escalate": "agent.planners.escalate",
                            "vlm": "agent.planners.vlm"}  # name -> the module that implements it


@dataclass(frozen=True)
class PlannerSettings:
    """What the graph's planner nodes read (``Services.planner``)."""

    name: str = "rules"
    confidence: float = 0.6  # escalate: below this top probability, add a tool and decide again
    margin: float = 0.1  # escalate: ... or when top minus second is below this
    max_rounds: int = 3  # escalate: rounds per question, the first included
    max_steps: int = 6  # vlm: model turns per question

    @classmethod
    def from_settings(cls, settings: Settings) -> PlannerSettings:
        return cls(name=settings.planner, confidence=settings.confidence, margin=settings.margin,
                   max_rounds=settings.max_rounds, max_steps=settings.max_steps)


def check_planner(name: str) -> str:
    """``name`` when it is a planner, else a ``ConfigError`` naming the planners."""
    if name not in PLANNERS:
        raise ConfigError(f"unknown planner {name!r}: expected one of {', '.join(PLANNERS)}")
    return name
