"""``escalate``: when a decision is unsure, which tool to add next. Pure functions; the graph's ``reason`` →
``escalate`` → ``run_tool`` → ``reason`` cycle (``agent.graph``) calls them.

A decision is unsure (``unsure``) when the reasoner flags ``no_evidence``, its top probability is under
``confidence``, or top minus second is under ``margin``; the reason is said as data for ``Round.why``
(``"top 0.34 < 0.6"``). The next tools (``candidates``) are those not yet tried for the question: first the
router's next candidates (tools it scored under their threshold, highest score first), then every other
registered tool, cheapest first by the seconds measured in this run (``agent.planners.costs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from agent.core.schema import Round, Route, ToolCall, ToolResult
from agent.planners import PlannerSettings
from agent.planners.costs import ToolCosts

ADD_PER_ROUND = 1  # tools added per escalation round: one, so a cheap tool that settles it spares the others


def top_two(probs: dict[str, float]) -> tuple[float, float]:
    """The highest and second-highest option probabilities (0.0 for a missing second)."""
    ranked = sorted(probs.values(), reverse=True) + [0.0, 0.0]
    return ranked[0], ranked[1]


def unsure(probs: dict[str, float], flags: Sequence[str], p: PlannerSettings) -> str | None:
    """Why the decision is not confident enough to stop (``"no evidence; top 0.33 < 0.6"``), or ``None``."""
    top, second = top_two(probs)
    why = ["no evidence"] if "no_evidence" in flags else []
    if top < p.confidence:
        why.append(f"top {top:.2f} < {p.confidence:g}")
    if top - second < p.margin:
        why.append(f"margin {top - second:.2f} < {p.margin:g}")
    return "; ".join(why) or None


def candidates(route: Route, tried: Iterable[str], registered: Sequence[str], costs: ToolCosts,
               unavailable: Callable[[str], str | None]) -> list[str]:
    """Tools that may still be added, in the order they would be: the router's scored tools under threshold
    (highest score first), then the rest cheapest first. Tried, skipped and unavailable tools are left out."""
    done = set(tried) | set(route.skipped)
    open_ = [t for t in registered if t not in done and not unavailable(t)]
    scored = sorted((t for t in open_ if t in route.scores), key=lambda t: (-route.scores[t], t))
    return scored + costs.cheapest_first([t for t in open_ if t not in route.scores])


def record_round(index: int, planner: str, tools: Sequence[str], results: Sequence[ToolResult], why: str,
                 probs: dict[str, float] | None, answer: str | None, seconds: float) -> Round:
    """One ``Round``: the tools called in it (from their results), why, and the decision after it."""
    by_tool = {r.tool: r for r in results}
    calls = [ToolCall(tool=t, ok=r.ok, error=r.error, cached=r.cached) if (r := by_tool.get(t)) is not None
             else ToolCall(tool=t, ok=False, error="no result") for t in tools]
    top, second = top_two(probs) if probs else (None, None)
    return Round(index=index, planner=planner, calls=calls, why=why, answer=answer, confidence=top,
                 margin=None if top is None else round(top - second, 6), seconds=round(seconds, 6))
