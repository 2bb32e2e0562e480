"""The tool contract: what every tool declares (its card and its wiring) and how it runs.

A tool is a class whose class attributes say everything the orchestrator needs without loading a model:

- ``name``, ``description``, ``limitations``: its card (the registry, ``--tools`` and traces use ``name``);
- ``evidence``: its ``agent.core.evidence.Evidence`` subclass (``tool`` field = ``name``), which renders itself for
  the prompt, the terminal and the trace page and may score options for the evidence reasoner;
- ``uses``: peer tools whose work it reads when the route also runs them (``som`` seeds regions with ``detect``);
  they arrive as ``run(..., peers={name: tool})``;
- ``routing``: keywords, example questions and the reason shown when a keyword fires, which let the router pick
  it (built-in and plug-in tools alike: ``agent.router`` names no tool);
- ``Config``: its settings model (the config file's ``[name]`` table, or ``[tools.settings.name]``), checked
  before the tool is built; ``flags``: which top-level settings (CLI flags) fill which of its keys
  (``{"kb": "kb"}``); ``cost``: rough CPU seconds per image, the planners' prior until a run measures it;
- ``commands``: ``"module:app"``, a Typer app of the tool's own commands, mounted as ``vqa NAME``, or a Typer
  command function, mounted as the command ``vqa NAME``; ``eval_task``: ``"module:function"``, a Typer command
  function that ``vqa eval --task NAME CSV --images DIR --run-dir RUN [its options]`` runs;
- ``Args``: the optional arguments a planner may pass besides the image and the question (``detect``: the
  phrases to find; ``ocr``: the language; ``retrieve``: the query), a pydantic model whose fields all default to
  ``None`` and arrive as keyword arguments of ``apply`` (none by default); ``tools.langchain`` shows them;
- what enters its cache key: ``settings`` (the constructor's keyword arguments, as stored by ``__init__``),
  ``cache_inputs(question)`` (the parts of the question it reads), ``version`` and ``fingerprint`` (bump or
  compute them when the output changes for reasons the tool's own source does not show).

Heavy imports and weights happen in ``load()``, once, on first use. ``run`` never raises: a failure is
``ToolResult(ok=False, error=...)``, timed like a success; so is a ``SystemExit`` or a ``KeyboardInterrupt`` the tool
raises in a worker thread (only the user's Ctrl-C, in the main thread, passes through).
"""

from __future__ import annotations

import inspect
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image
from pydantic import BaseModel, ConfigDict

from agent.core.errors import VqaError
from agent.core.evidence import Evidence
from agent.core.schema import Question, ToolResult

_LOAD_LOCK = threading.RLock()  # transformers loads in parallel threads corrupt each other: one load at a time
CARD = ("name", "description", "limitations", "evidence")


class ToolError(VqaError):
    """A tool could not do its job; the message says what to do about it."""


class ToolUnavailable(ToolError):
    """The tool could not load (missing weights, an unreachable hub, a missing binary): it is unavailable for the
    rest of the process, and later calls fail at once with the same message instead of trying again."""


class NoArgs(BaseModel):
    """A tool's optional arguments (``Tool.Args``): none. A tool with some subclasses this and adds fields that
    default to ``None``, each also a keyword argument of its ``apply``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Routing:
    """How the router may pick a tool: ``keywords`` are regular expressions searched in the lower-cased question
    (a match routes the tool and is shown as the reason, with ``why``); ``examples`` are questions the tool
    answers, added to the router's nearest-neighbour stage. ``not_for_appearance``: keywords do not fire on a
    question about how something looks (the colour of a sign needs no reading); ``presence``: a question asking
    whether something is there routes the tool too."""

    keywords: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    why: str = ""
    not_for_appearance: bool = False
    presence: bool = False


class NoConfig(BaseModel):
    """A tool's settings model (``Tool.Config``) when it declares none: any keys reach the constructor, which
    checks them. A tool with one subclasses ``BaseModel`` with ``extra="forbid"``."""

    model_config = ConfigDict(extra="allow")


class Tool(ABC):
    """Base class: subclasses set the card attributes and implement ``load`` and ``apply``."""

    name: ClassVar[str]
    description: ClassVar[str]
    limitations: ClassVar[str]
    evidence: ClassVar[type[Evidence]]
    uses: ClassVar[tuple[str, ...]] = ()
    routing: ClassVar[Routing] = Routing()
    Config: ClassVar[type[BaseModel]] = NoConfig
    flags: ClassVar[Mapping[str, str]] = {}
    cost: ClassVar[float] = 5.0
    commands: ClassVar[str | None] = None
    eval_task: ClassVar[str | None] = None
    Args: ClassVar[type[NoArgs]] = NoArgs
    version: ClassVar[str] = "1"
    fingerprint: str = ""  # a property where it is computed (e.g. a digest of helper modules)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A concrete tool must declare its card, and its evidence type must carry its name."""
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls):
            return
        missing = [a for a in CARD if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"tool class {cls.__qualname__} must declare {missing} (see tools/base.py)")
        if not (isinstance(cls.evidence, type) and issubclass(cls.evidence, Evidence)):
            raise TypeError(f"{cls.__qualname__}.evidence must be an agent.core.evidence.Evidence subclass, "
                            f"found {cls.evidence!r}")
        tag = cls.evidence.model_fields["tool"].default
        if tag != cls.name:
            raise TypeError(f"{cls.__qualname__}.evidence ({cls.evidence.__qualname__}) must have "
                            f"tool: Literal[{cls.name!r}] = {cls.name!r}, found default {tag!r}")
        check_args(cls)
        check_wiring(cls)

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self._ready = False
        self._unavailable: str | None = None  # why load() failed, once it has
        self._lock = threading.Lock()

    @property
    def unavailable(self) -> str | None:
        """Why this tool cannot run in this process (its load failed), or ``None``."""
        return self._unavailable

    def cache_inputs(self, question: Question) -> dict[str, Any]:
        """What the output depends on in the question; by default (conservatively) every field, the id included."""
        return question.model_dump(mode="json")

    def setup(self) -> None:
        """Load weights/binaries once; thread-safe. When impossible, raises ``ToolUnavailable`` with the fix, and
        raises it again at once on every later call: a load is tried once per process, never per question."""
        with self._lock:
            if self._unavailable is not None:
                raise ToolUnavailable(self._unavailable)
            if not self._ready:
                try:
                    with _LOAD_LOCK:
                        self.load()
                except Exception as exc:  # noqa: BLE001 - whatever stops a load, the tool is out for this run
                    plain = type(exc) in (ToolError, ToolUnavailable)  # else the kind says something (EmbedderMismatch)
                    self._unavailable = str(exc) if plain else f"{type(exc).__name__}: {exc}"
                    raise ToolUnavailable(self._unavailable) from None
                self._ready = True

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def apply(self, image: Image.Image, question: Question, workdir: Path | None,
              peers: Mapping[str, Tool]) -> tuple[Evidence, dict[str, str]]:
        """Return the evidence and artifacts (name -> file written under ``workdir``). ``peers``: the tools named
        in ``uses`` that the route also runs, by name (empty when none). A tool with ``Args`` also takes their
        fields as keyword arguments (those given; the rest keep their ``None`` defaults)."""

    def run(self, image: Image.Image, question: Question, workdir: Path | None = None,
            peers: Mapping[str, Tool] | None = None, args: NoArgs | None = None) -> ToolResult:
        """Never raises: a failure is ``ok=False`` with the error, timed like a success. ``args``: an instance of
        ``Args`` (its fields that are set reach ``apply``)."""
        t0 = time.perf_counter()
        try:
            if args is not None and not isinstance(args, self.Args):
                raise ToolError(f"{self.name} takes arguments {self.Args.__name__}, found {type(args).__name__}")
            self.setup()
            given = args.model_dump(exclude_none=True) if args is not None else {}
            evidence, artifacts = self.apply(image, question, workdir, dict(peers or {}), **given)
            if not isinstance(evidence, self.evidence):
                raise ToolError(f"{type(self).__qualname__}.apply returned {type(evidence).__name__}, expected "
                                f"{self.evidence.__name__} (its declared evidence type)")
        except BaseException as exc:  # noqa: BLE001 - a tool failure (SystemExit too) must not fail the question
            if user_interrupt(exc):
                raise
            return ToolResult(tool=self.name, ok=False, error=f"{type(exc).__name__}: {exc}",
                              seconds=time.perf_counter() - t0, settings=self.settings)
        return ToolResult(tool=self.name, ok=True, evidence=evidence, artifacts=artifacts,
                          seconds=time.perf_counter() - t0, settings=self.settings)


def user_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` may be the user's Ctrl-C (a ``KeyboardInterrupt`` in the main thread, where Python delivers
    SIGINT), or a generator closing; any other ``BaseException`` a tool raises (``SystemExit``, a
    ``KeyboardInterrupt`` in a worker thread) is the tool's failure."""
    return isinstance(exc, GeneratorExit) or (isinstance(exc, KeyboardInterrupt)
                                              and threading.current_thread() is threading.main_thread())


def check_args(cls: type[Tool]) -> None:
    """``cls.Args`` is a ``NoArgs`` subclass whose fields default to ``None`` and are keyword arguments of
    ``cls.apply``; else a ``TypeError`` says which."""
    if not (isinstance(cls.Args, type) and issubclass(cls.Args, NoArgs)):
        raise TypeError(f"{cls.__qualname__}.Args must be a tools.base.NoArgs subclass, found {cls.Args!r}")
    params = inspect.signature(cls.apply).parameters
    for name, f in cls.Args.model_fields.items():
        if f.is_required() or f.default is not None:
            raise TypeError(f"{cls.__qualname__}.Args.{name} must default to None (an optional argument), "
                            f"found {'no default' if f.is_required() else repr(f.default)}")
        p = params.get(name)
        if p is None or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise TypeError(f"{cls.__qualname__}.apply must take {name}=None as a keyword argument "
                            f"(declared in {cls.__qualname__}.Args)")


def check_wiring(cls: type[Tool]) -> None:
    """``cls.routing`` keywords are regular expressions, ``cls.Config`` a pydantic model, ``cls.cost`` a positive
    number of seconds and ``cls.flags`` maps setting names to its keys; else a ``TypeError`` says which."""
    if not isinstance(cls.routing, Routing):
        raise TypeError(f"{cls.__qualname__}.routing must be a tools.base.Routing, found {cls.routing!r}")
    for pattern in cls.routing.keywords:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise TypeError(f"{cls.__qualname__}.routing keyword {pattern!r} is not a regular expression "
                            f"({exc})") from None
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, BaseModel)):
        raise TypeError(f"{cls.__qualname__}.Config must be a pydantic BaseModel subclass, found {cls.Config!r}")
    if isinstance(cls.cost, bool) or not isinstance(cls.cost, (int, float)) or cls.cost <= 0:
        raise TypeError(f"{cls.__qualname__}.cost must be positive seconds per image, found {cls.cost!r}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(cls.flags).items()):
        raise TypeError(f"{cls.__qualname__}.flags must map setting names to its keys, found {cls.flags!r}")
