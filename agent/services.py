"""What the graph's nodes use that is not per-question data: ``Services``, immutable for a run.

A run that needs something different (a wrapped reasoner, another artifacts folder) builds a changed copy with
``services.replace(...)``; nothing is mutated and restored. The tools themselves are built lazily, once, into a
``ToolBox`` that every copy shares; whoever built the services (the command line) owns them and closes them.
Tool calls run through ``pool`` (``agent.toolpool``): a call that times out is abandoned without holding up other
calls or the process's exit; an ablation arm gets a fresh pool, so one arm's stuck calls never count in another.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cache import ToolCache
from agent.core.errors import VqaError
from agent.core.images import DEFAULT_DECODE_BUDGET, LoadedImage
from agent.core.paths import artifact_dirname
from agent.core.schema import Question, ToolResult
from agent.planners import PlannerSettings
from agent.planners.costs import ToolCosts
from agent.reasoners.base import Reasoner
from agent.router import Router
from agent.toolpool import ToolCancelled, ToolPool, ToolStuck, ToolTimeout
from tools import load_tool
from tools.base import NoArgs, Tool

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.runner import RowExecutor


class ToolBox:
    """Tool instances built on first use (one per name and settings)."""

    def __init__(self) -> None:
        self._tools: dict[tuple[str, str], Tool] = {}
        self._lock = threading.Lock()

    def get(self, name: str, settings: Mapping[str, Any]) -> Tool:
        key = (name, json.dumps(settings, sort_keys=True, default=str))
        with self._lock:
            tool = self._tools.get(key)
        if tool is None:  # built outside the lock: loading one tool must not hold up the others
            tool = load_tool(name, **settings)
            with self._lock:
                tool = self._tools.setdefault(key, tool)
        return tool


@dataclass(frozen=True)
class Services:
    """Everything the nodes use that is not per-question data (the graph's runtime context)."""

    reasoner: Reasoner
    router: Router = field(default_factory=Router)
    tool_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_pixels: int = 4_000_000
    hard_cap_pixels: int = 400_000_000
    decode_budget: int = DEFAULT_DECODE_BUDGET  # bytes of decoded pixels (agent.core.images)
    tool_timeout: float = 120.0
    artifacts_dir: Path | None = None
    images_root: Path | None = None  # when set, image paths must stay inside it (symlinks included)
    cache: ToolCache | None = None  # tool outputs computed once per image, tool, settings and question inputs
    toolbox: ToolBox = field(default_factory=ToolBox)  # shared by every copy
    pool: ToolPool = field(default_factory=ToolPool)  # where tool calls run, with their timeouts
    planner: PlannerSettings = field(default_factory=PlannerSettings)  # who picks the tools (agent.planners)
    costs: ToolCosts = field(default_factory=ToolCosts)  # measured seconds per tool in this run, shared by copies
    vlm: Any = None  # the vlm planner's tool-calling model (agent.planners.vlm.ToolCaller), with --planner vlm
    executor: RowExecutor | None = None  # where run_batch answers questions (None: threads here; or Ray workers)

    def replace(self, **changes: Any) -> Services:
        """A copy with ``changes`` (e.g. ``reasoner=``, ``artifacts_dir=``); the tool box is shared."""
        return dataclasses.replace(self, **changes)

    def tool(self, name: str) -> Tool:
        return self.toolbox.get(name, self.tool_settings.get(name, {}))

    def unavailable(self, name: str) -> str | None:
        """Why the tool cannot run in this process (its load failed earlier), or ``None`` (it may run)."""
        try:
            return self.tool(name).unavailable
        except VqaError:  # bad settings: reported when the tool runs, like any tool failure
            return None

    def cannot_run(self, name: str) -> str | None:
        """Why the tool cannot run now, trying its load (which its run would do anyway) if not yet tried: its load
        failed (no weights, no knowledge base), or its timed-out calls pile up; ``None``: it can run."""
        try:
            tool = self.tool(name)
        except VqaError as exc:
            return str(exc)
        if self.pool.abandoned(name) >= self.pool.max_abandoned:
            return f"{self.pool.abandoned(name)} earlier calls timed out and are still running"
        try:
            tool.setup()
        except VqaError:
            return tool.unavailable or "could not load"
        return None

    def run_tool(self, tool: Tool, image: LoadedImage, question: Question,
                 peers: dict[str, Tool] | None = None, args: NoArgs | None = None) -> ToolResult:
        """``tool.run`` on the working image, through the tool cache when there is one; ``args``: the tool's
        optional arguments (``Tool.Args``), from a planner."""
        workdir = self.workdir(question.id)
        if self.cache is None:
            return tool.run(image.image, question, workdir, peers, args)
        return self.cache.run(tool, image, question, workdir, peers, args)

    def call_tool(self, tool: Tool, image: LoadedImage, question: Question,
                  peers: dict[str, Tool] | None = None, args: NoArgs | None = None) -> ToolResult:
        """``run_tool`` in the tool's pool slot with the tool timeout; a failure, a timeout or a full pool is a failed
        ``ToolResult``, never an exception. A result computed now is added to ``costs``."""
        if self.cache is not None:  # a stored result needs no slot, no weights and no clock
            hit = self.cache.lookup(tool, image, question, self.workdir(question.id), peers, args)
            if hit is not None:
                return hit
        try:
            tool.setup()  # weights load once, outside the timed call (a failure is reported by run, at once)
        except VqaError:
            pass
        try:
            result = self.pool.call(tool.name, lambda: self.run_tool(tool, image, question, peers, args),
                                    timeout=self.tool_timeout)
        except VqaError as exc:  # a bad tool setting fails this tool for this question, like any tool failure
            return ToolResult(tool=tool.name, ok=False, error=f"{type(exc).__name__}: {exc}")
        except ToolTimeout as exc:  # the call is abandoned: it holds no slot, and the process can still exit
            return ToolResult(tool=tool.name, ok=False, seconds=self.tool_timeout, transient=True,
                              error=f"{exc} of running (raise --tool-timeout to wait longer)")
        except ToolStuck as exc:
            return ToolResult(tool=tool.name, ok=False, transient=True, error=f"not run: {exc} (raise --tool-timeout)")
        except ToolCancelled as exc:  # Ctrl-C: the question is recorded incomplete and answered again on resume
            return ToolResult(tool=tool.name, ok=False, transient=True, error=f"not run: {exc}")
        if result.ok and not result.cached:  # what computing it costs, for the planners that order tools by cost
            self.costs.add(result.tool, result.seconds)
        return result

    def workdir(self, qid: str) -> Path | None:
        if self.artifacts_dir is None:
            return None
        d = self.artifacts_dir / artifact_dirname(qid)  # unique, and one component inside artifacts/
        d.mkdir(parents=True, exist_ok=True)
        return d

    def close(self) -> None:
        """Close the reasoner. Only the owner (who built these services) calls it, once. Tool calls still running
        (abandoned after a timeout) run on daemon threads and never hold up the exit."""
        self.reasoner.close()


# ---------------------------------------------------------------- building them from settings (API, CLI, Ray workers)


def register_plugins(settings: Settings) -> None:
    """Register the config file's plug-in tools (``[tools.register]``)."""
    from tools import register

    for name, spec in settings.tools.classes.items():
        register(name, spec)


def open_services(settings: Settings) -> Services:
    """The services every run shares: the reasoner (loaded), the router and the configured tools (built); a bad
    model or tool setting fails here, before any question. Seeds ``random``, numpy and torch when ``seed`` is set."""
    from agent.planners import check_planner
    from agent.reasoners import load_reasoner
    from agent.toolpool import configure as configure_pool
    from tools import tool_names

    s = settings
    check_planner(s.planner)  # a planner this install lacks fails before any work
    configure_pool(s.tool_concurrency, s.device)  # tool slots and thread pools sized to the machine
    reasoner = load_reasoner(s.reasoner, **s.reasoner_kwargs())
    services = Services(reasoner=reasoner, router=Router(),
                        tool_settings=s.tool_settings(), max_pixels=s.image_max_pixels,
                        hard_cap_pixels=s.hard_cap_pixels, decode_budget=s.image_decode_budget,
                        tool_timeout=s.tool_timeout, planner=PlannerSettings.from_settings(s))
    try:
        for name in services.tool_settings:  # every configured tool is built now: a bad setting fails early
            if name in tool_names():
                services.tool(name)
        reasoner.load()
        if s.planner == "vlm":
            services = with_tool_caller(services, s)
    except BaseException:
        services.close()
        raise
    if s.seed is not None:
        seed_everything(s.seed)
    return services


def with_tool_caller(services: Services, settings: Settings) -> Services:
    """``services`` with the ``vlm`` planner's tool-calling model over its reasoner (the evidence reasoner has none:
    a one-line ``ConfigError``)."""
    if services.vlm is not None:
        return services
    from agent.planners.vlm import tool_caller

    return services.replace(vlm=tool_caller(settings, services.reasoner))


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy, and torch when something has imported it (never imported here)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)  # every device's generator
