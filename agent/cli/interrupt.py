"""Ctrl-C for the whole ``vqa`` process.

Typer turns a ``KeyboardInterrupt`` into a silent exit 130 before ``main`` could say anything, so SIGINT gets its own
handler. Outside a long run the first Ctrl-C interrupts as usual, with one line. Inside ``stopping(...)`` (``vqa
batch``) it sets the run's stop event instead: no more rows start, running tool calls are cancelled, what is done is
kept; if the run has not ended ``GRACE`` seconds later, ``on_timeout`` says what is done and the process exits 130.
A second Ctrl-C always exits at once with 130 (answered rows are already in ``results.jsonl``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GRACE = 8.0  # seconds a stopping run gets before the process exits anyway (Ctrl-C to exit within 10 s)
_state: dict = {"count": 0, "stop": None, "on_stop": None, "on_timeout": None, "graceful": False}


def resume_command() -> str:
    """The command line that resumes this run: the same one (a run directory skips what is done)."""
    import sys

    from agent.rundir import command_line

    return command_line(["vqa", *sys.argv[1:]])


def stopped_cleanly() -> bool:
    """Whether the interrupt reached a long run, which said itself what is done and how to resume."""
    return _state["graceful"]


def interrupted() -> bool:
    """Whether Ctrl-C was pressed in this process."""
    return _state["count"] > 0


def _handler(signum: int, frame: object) -> None:
    _state["count"] += 1
    if _state["count"] > 1:
        os.write(2, b"\ninterrupted again: exiting now\n")
        os._exit(130)
    stop: threading.Event | None = _state["stop"]
    if stop is None:
        raise KeyboardInterrupt
    stop.set()
    _state["graceful"] = True
    if _state["on_stop"]:
        _state["on_stop"]()
    timer = threading.Timer(GRACE, _give_up)
    timer.daemon = True
    timer.start()


def _give_up() -> None:
    if _state["on_timeout"]:
        _state["on_timeout"]()
    os._exit(130)


def install() -> None:
    """Use this module's handler for SIGINT (main thread only; a no-op elsewhere, or where SIGINT is ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with SIGINT ignored (nohup, a & job): keep it
        return
    signal.signal(signal.SIGINT, _handler)


@contextmanager
def stopping(on_stop: Callable[[], None] | None = None,
             on_timeout: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """An event the first Ctrl-C sets (instead of raising) while the block runs; ``on_stop`` runs then, in the
    handler; ``on_timeout`` before the process exits if the block has not ended ``GRACE`` seconds later."""
    stop = threading.Event()
    _state.update(stop=stop, on_stop=on_stop, on_timeout=on_timeout)
    try:
        yield stop
    finally:
        _state.update(stop=None, on_stop=None, on_timeout=None)


def exit_now(code: object) -> None:
    """Exit with ``code`` (as ``sys.exit`` reads it). While abandoned tool calls still run on their daemon threads
    (inside torch or OpenMP), the interpreter's teardown would pull the libraries from under them and the process
    could end in ``terminate called without an active exception``: then the output is flushed and the process
    exits at once, as every record is already written through."""
    import sys

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    if not any(t.name.startswith("tool-") and t.is_alive() for t in threading.enumerate()):
        sys.exit(status)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
