"""Running tool calls with timeouts that really let go.

``concurrent.futures`` pools cannot abandon a call: one that times out keeps its worker, later calls queue
behind it, and the interpreter waits for it at exit. Here each tool has its own slots (a stuck ``detect`` never
delays ``ocr``), a call that times out gives its slot back at once and finishes, or not, on a daemon thread that
never holds up the process's exit, and a tool whose abandoned calls pile up is reported as stuck instead of
spawning more threads.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Callable, TypeVar

T = TypeVar("T")


class ToolTimeout(Exception):
    """The call did not finish in time (it may still be running, abandoned)."""


class ToolStuck(Exception):
    """Too many of this tool's calls timed out and are still running: it is not called again in this pool."""


class ToolPool:
    """``call(tool, fn, timeout)``: at most ``per_tool`` calls of one tool at once, each on a daemon thread."""

    def __init__(self, per_tool: int = 4, max_abandoned: int = 2) -> None:
        self.per_tool = per_tool
        self.max_abandoned = max_abandoned
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = defaultdict(lambda: threading.BoundedSemaphore(per_tool))
        self._abandoned: dict[str, int] = defaultdict(int)  # timed-out calls still running, per tool

    def abandoned(self, tool: str) -> int:
        with self._lock:
            return self._abandoned[tool]

    def call(self, tool: str, fn: Callable[[], T], timeout: float) -> T:
        """``fn()``'s result; ``ToolTimeout`` after ``timeout`` seconds (waiting for a slot included)."""
        with self._lock:
            if self._abandoned[tool] >= self.max_abandoned:
                raise ToolStuck(f"{self._abandoned[tool]} earlier calls timed out and are still running")
            slots = self._slots[tool]
        if not slots.acquire(timeout=timeout):
            raise ToolTimeout(f"no free slot for {tool} within {timeout:.0f}s")
        fut: Future = Future()
        state = {"abandoned": False}
        done = threading.Lock()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                fut.set_exception(exc)
            finally:
                with done:
                    if state["abandoned"]:
                        with self._lock:
                            self._abandoned[tool] -= 1
                    else:
                        slots.release()

        threading.Thread(target=run, name=f"tool-{tool}", daemon=True).start()
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            with done:
                if fut.done():  # finished in the meantime: its slot is already back
                    return fut.result()
                state["abandoned"] = True
                with self._lock:
                    self._abandoned[tool] += 1
                slots.release()
            raise ToolTimeout(f"timed out after {timeout:.0f}s") from None
