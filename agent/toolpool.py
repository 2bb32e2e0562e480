"""Running tool calls: as many at once as the machine serves well, with timeouts that count run time and let go.

Concurrency that fits the machine: each tool has its own slots (``per_tool``, by default from the cores or GPUs:
``machine_slots``), and tools that run on the CPU also share one CPU budget of the same size, so eight questions
asking for OCR at once on two cores queue for it instead of each getting a quarter of the cores (and all timing
out). A question waits for a slot as long as it takes; the timeout starts when its call starts, so it measures the
tool's own run time, never the queue. For a CPU call, run time is the CPU time the process got while it ran,
divided by the call's share of the cores (``_RunClock``): on an idle machine that is the wall clock; on a machine
busy with other people's work, a call is not timed out for the time the cores spent on them. A call that gets no
CPU at all (hung on a lock or a socket) still times out after ``ceiling`` times the timeout of wall time. ``configure`` sizes torch's and OpenMP's thread pools to match (cores divided
by the CPU slots), so the calls that do run never oversubscribe the cores either.

``concurrent.futures`` pools cannot abandon a call: one that times out keeps its worker, later calls queue
behind it, and the interpreter waits for it at exit. Here a call that times out gives its slot back at once and
finishes, or not, on a daemon thread that never holds up the process's exit, and a tool whose abandoned calls pile
up is reported as stuck instead of spawning more threads. An abandoned call keeps its share of the CPU budget
until it really ends (or one more timeout has passed), so the next call's clock does not start while the cores are
still busy with it. ``cancel()`` (Ctrl-C) makes every waiting and running
call return ``ToolCancelled`` within a fraction of a second.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
POLL = 0.2  # seconds between looks at the cancel flag while a call waits for a slot or runs
_DEFAULT: dict[str, int] = {}  # the process's slots, set by configure()


class ToolTimeout(Exception):
    """The call did not finish in time (it may still be running, abandoned)."""


class ToolStuck(Exception):
    """Too many of this tool's calls timed out and are still running: it is not called again in this pool."""


class ToolCancelled(Exception):
    """The run is stopping (Ctrl-C): the call was not started, or was abandoned."""


def cpu_count() -> int:
    """The cores this process may run on (its affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _no_gpu_device() -> bool:
    """True on a Linux machine with no NVIDIA or AMD GPU device node: torch could find no GPU there, so it need
    not be imported to ask (a server-backed run without tools never imports it)."""
    dev = Path("/dev")
    return (sys.platform == "linux" and dev.is_dir() and not any(dev.glob("nvidia[0-9]*"))
            and not (dev / "kfd").exists())


def gpu_count(device: str = "auto") -> int:
    """GPUs the tools run on: 0 with ``device="cpu"`` or without CUDA (torch is asked only if it is installed,
    and only where a GPU device exists)."""
    if device == "cpu" or ("torch" not in sys.modules and _no_gpu_device()):
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def machine_slots(device: str = "auto", cores: int | None = None) -> int:
    """Calls of one tool at once that the hardware serves well: two per GPU (one computes while the other
    prepares), else one per four cores (each call then gets four threads), at least one."""
    gpus = gpu_count(device)
    if gpus:
        return 2 * gpus
    return max(1, (cores or cpu_count()) // 4)


def configure(slots: int | None = None, device: str = "auto") -> int:
    """Set the process's tool slots (``None``: ``machine_slots``) and size torch's and OpenMP's thread pools to the
    cores divided by them; returns the slots. A thread limit already set in the environment is kept."""
    gpus = gpu_count(device)
    slots = slots or (2 * gpus if gpus else machine_slots("cpu"))
    threads = max(1, cpu_count() // slots)
    _DEFAULT.update(slots=slots, threads=threads, gpus=gpus)
    for var in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT"):  # read by OpenMP when a library (or tesseract) starts
        os.environ.setdefault(var, str(threads))
    if "torch" in sys.modules:  # otherwise torch reads OMP_NUM_THREADS when it is first imported
        torch = sys.modules["torch"]
        if "OMP_NUM_THREADS" not in os.environ or os.environ["OMP_NUM_THREADS"] == str(threads):
            torch.set_num_threads(threads)
    return slots


CPU = "<cpu>"  # the key that counts the calls holding the shared CPU budget


def process_cpu_seconds() -> float:
    """CPU seconds used by this process's threads and its finished child processes (tesseract)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class _RunClock:
    """A CPU call's run time: the process's CPU seconds while it runs, shared out among the CPU calls running
    and divided by each call's threads, so on an idle machine it runs with the wall clock, and on a machine busy
    with other processes it counts only the time the call actually got the cores."""

    def __init__(self, pool: ToolPool, t0: float) -> None:
        self.pool, self.ran, self.last = pool, 0.0, process_cpu_seconds()

    def tick(self) -> float:
        now = process_cpu_seconds()
        sharing = max(1, self.pool.running(CPU))
        self.ran += (now - self.last) / (self.pool.threads * sharing)
        self.last = now
        return self.ran


def default_slots() -> int:
    return _DEFAULT.get("slots") or machine_slots("cpu")


class ToolPool:
    """``call(tool, fn, timeout)``: at most ``per_tool`` calls of one tool at once and, over the tools named in
    ``cpu_tools`` (default: all), at most ``cpu`` calls at once; each runs on a daemon thread."""

    def __init__(self, per_tool: int | None = None, max_abandoned: int = 2, cpu: int | None = None,
                 cpu_tools: frozenset[str] | None = None, ceiling: float = 4.0) -> None:
        self.per_tool = per_tool or default_slots()
        self.cpu = cpu if cpu is not None else (self.per_tool if gpu_count_cached() == 0 else 0)  # 0: no budget
        self.threads = max(1, cpu_count() // max(1, self.cpu))  # each CPU call's share of the cores
        self.cpu_tools = cpu_tools
        self.ceiling = ceiling  # a CPU call that gets no CPU (hung) still times out after ceiling x timeout
        self.max_abandoned = max_abandoned
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = defaultdict(
            lambda: threading.BoundedSemaphore(self.per_tool))
        self._cpu = threading.BoundedSemaphore(self.cpu) if self.cpu else None
        self._abandoned: dict[str, int] = defaultdict(int)  # timed-out calls still running, per tool
        self._cancelled = threading.Event()
        self._waiting: dict[str, int] = defaultdict(int)  # calls queued for a slot, per tool
        self._running: dict[str, int] = defaultdict(int)  # calls running (abandoned ones not counted), per tool

    def waiting(self, tool: str) -> int:
        with self._lock:
            return self._waiting[tool]

    def running(self, tool: str) -> int:
        with self._lock:
            return self._running[tool]

    def _count(self, table: dict[str, int], tool: str, n: int) -> None:
        with self._lock:
            table[tool] += n

    def abandoned(self, tool: str) -> int:
        with self._lock:
            return self._abandoned[tool]

    def cancel(self) -> None:
        """Stop: calls waiting for a slot and calls running return ``ToolCancelled`` (running ones are abandoned)."""
        self._cancelled.set()

    def stopping(self, stop: threading.Event) -> ToolPool:
        """This pool's slots and budget, whose calls are cancelled when ``stop`` is set (one run's Ctrl-C)."""
        pool = copy.copy(self)
        pool._cancelled = stop
        return pool

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _acquire(self, sem: threading.BoundedSemaphore) -> None:
        while not sem.acquire(timeout=POLL):
            if self._cancelled.is_set():
                raise ToolCancelled("stopped before it started")
        if self._cancelled.is_set():  # the slot came free because the run is stopping
            sem.release()
            raise ToolCancelled("stopped before it started")

    def call(self, tool: str, fn: Callable[[], T], timeout: float) -> T:
        """``fn()``'s result; ``ToolTimeout`` after ``timeout`` seconds of running (waiting for a slot is not
        counted)."""
        if self._cancelled.is_set():
            raise ToolCancelled("stopped before it started")
        with self._lock:
            if self._abandoned[tool] >= self.max_abandoned:
                raise ToolStuck(f"{self._abandoned[tool]} earlier calls timed out and are still running")
            slots = self._slots[tool]
        shared = self._cpu if self._cpu is not None and (self.cpu_tools is None or tool in self.cpu_tools) else None
        self._count(self._waiting, tool, 1)
        try:
            self._acquire(slots)
            if shared is not None:
                try:
                    self._acquire(shared)
                except ToolCancelled:
                    slots.release()
                    raise
        finally:
            self._count(self._waiting, tool, -1)
        self._count(self._running, tool, 1)
        if shared is not None:
            self._count(self._running, CPU, 1)

        once = threading.Lock()
        shared_held = [shared is not None]

        def release_shared() -> None:
            with once:
                if shared_held[0]:
                    shared_held[0] = False
                    self._count(self._running, CPU, -1)
                    shared.release()  # type: ignore[union-attr]

        def release() -> None:
            self._count(self._running, tool, -1)
            slots.release()
            release_shared()

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
                        release_shared()
                    else:
                        release()

        threading.Thread(target=run, name=f"tool-{tool}", daemon=True).start()
        t0, why = time.monotonic(), None
        clock = _RunClock(self, t0) if shared is not None else None
        while why is None:
            try:
                return fut.result(timeout=POLL)
            except FutureTimeout:
                wall = time.monotonic() - t0
                ran = clock.tick() if clock is not None else wall
                if self._cancelled.is_set():
                    why = ToolCancelled("stopped while running")
                elif ran >= timeout or wall >= self.ceiling * timeout:
                    why = ToolTimeout(f"timed out after {timeout:.0f}s" + (
                        f" ({wall:.0f}s on a busy machine)" if wall >= 1.5 * timeout else ""))
        with done:
            if fut.done():  # finished in the meantime: its slot is already back
                return fut.result()
            state["abandoned"] = True
            with self._lock:
                self._abandoned[tool] += 1
                self._running[tool] -= 1
            slots.release()  # the tool's slot comes back now; the CPU budget only when the call ends, or after
            if isinstance(why, ToolTimeout):  # one more timeout if it never does (a hung call must not block all)
                timer = threading.Timer(timeout, release_shared)
                timer.daemon = True
                timer.start()
            else:
                release_shared()
        raise why from None



def gpu_count_cached() -> int:
    """``gpu_count`` of the device ``configure`` was given (CPU until then), without importing torch again."""
    return _DEFAULT.get("gpus", 0)
