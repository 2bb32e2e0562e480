"""What every tool is: a card (name, description, limitations), a lazy ``setup()``, ``run() -> ToolResult``.

Tools are declared as data so listing, routing or ablating them never loads a
model: heavy imports and weights happen in ``setup()``, once, on first use.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from agent.errors import VqaError
from agent.schema import Evidence, Question, ToolResult

_LOAD_LOCK = threading.RLock()  # transformers loads in parallel threads corrupt each other: one load at a time


class ToolError(VqaError):
    """A tool could not do its job; the message says what to do about it."""


class Tool(ABC):
    """Base class: subclasses set the card attributes and implement ``load`` and ``apply``."""

    name: ClassVar[str]
    description: ClassVar[str]
    limitations: ClassVar[str]

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self._ready = False
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Load weights/binaries once; thread-safe; raises ``ToolError`` with a fix when impossible."""
        with self._lock:
            if not self._ready:
                with _LOAD_LOCK:
                    self.load()
                self._ready = True

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def apply(self, image: Image.Image, question: Question, workdir: Path | None) -> tuple[Evidence, dict[str, str]]:
        """Return the evidence and artifacts (name -> file written under ``workdir``)."""

    def run(self, image: Image.Image, question: Question, workdir: Path | None = None) -> ToolResult:
        """Never raises: a failure is ``ok=False`` with the error, timed like a success."""
        t0 = time.perf_counter()
        try:
            self.setup()
            evidence, artifacts = self.apply(image, question, workdir)
        except Exception as exc:  # noqa: BLE001 - a tool failure must not fail the question
            return ToolResult(tool=self.name, ok=False, error=f"{type(exc).__name__}: {exc}",
                              seconds=time.perf_counter() - t0, settings=self.settings)
        return ToolResult(tool=self.name, ok=True, evidence=evidence, artifacts=artifacts,
                          seconds=time.perf_counter() - t0, settings=self.settings)
