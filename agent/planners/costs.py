"""Measured tool costs for one run: mean seconds per tool, fed by every successful tool run the graph computes.

``escalate`` orders the tools it may add cheapest first by these means. A tool not yet measured in the run is
placed by its stated cost (``Tool.cost``, rough CPU seconds per image; a name not registered counts as
``DEFAULT_PRIOR``), so the order is stated, not guessed anew, until the run has measured it. Results served from the tool cache are not
counted: a cache lookup says nothing about what computing the tool costs on the next image.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tools import prior_seconds

DEFAULT_PRIOR = 5.0


@dataclass
class ToolCosts:
    """Per tool: how many computed runs and their total seconds (thread-safe; shared by every copy of
    ``Services``)."""

    _runs: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, tool: str, seconds: float) -> None:
        with self._lock:
            n, total = self._runs.get(tool, (0, 0.0))
            self._runs[tool] = (n + 1, total + max(seconds, 0.0))

    def mean(self, tool: str) -> float | None:
        """Mean measured seconds, or ``None`` when the tool has not been computed in this run."""
        with self._lock:
            n, total = self._runs.get(tool, (0, 0.0))
        return total / n if n else None

    def estimate(self, tool: str) -> float:
        """The measured mean, else the stated prior."""
        m = self.mean(tool)
        return m if m is not None else prior_seconds(tool, DEFAULT_PRIOR)

    def cheapest_first(self, tools: list[str]) -> list[str]:
        return sorted(tools, key=lambda t: (self.estimate(t), t))

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``tool -> {"runs", "mean_s"}`` of the measured tools."""
        with self._lock:
            return {t: {"runs": n, "mean_s": round(total / n, 4)} for t, (n, total) in self._runs.items()}
