"""Writing files so that a kill never leaves half of one: atomic replacement and append-only JSON lines.

- ``staged()``: files are written under temporary names beside their targets, fsynced, then ``os.replace``d in
  the order they were staged (so the last one staged, e.g. a manifest, is the commit); on an error nothing is
  replaced and the temporary files are removed. ``atomic_open`` and ``atomic_write`` are the one-file cases.
- ``JsonlLog``: an append-only JSON-lines file whose torn last line (a write cut by a kill) is dropped when it
  is opened, so appends always start on a fresh line; appends are whole lines under a lock, written through to
  the operating system at once (a killed process loses nothing written) and fsynced on request: at once, or with
  ``sync_every`` seconds at most once per that interval (group commit; ``sync()`` forces it), so a machine crash
  or power loss loses at most the lines of the last interval.

Part of ``agent.core``: it imports nothing from the project.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o644  # temporary files are created 0600; the replaced file gets the usual permissions


@contextmanager
def staged() -> Iterator[Callable[[str | os.PathLike], Path]]:
    """``stage(target) -> temporary path`` to write to; when the block ends, every staged file is fsynced and
    replaces its target, in staging order. On an exception no target changes."""
    pairs: list[tuple[Path, Path]] = []

    def stage(target: str | os.PathLike) -> Path:
        target = Path(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        pairs.append((Path(tmp), target))
        return Path(tmp)

    try:
        yield stage
        for tmp, _ in pairs:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, FILE_MODE)
        for tmp, target in pairs:
            os.replace(tmp, target)
        for folder in dict.fromkeys(target.parent for _, target in pairs):
            _fsync_dir(folder)
    finally:
        for tmp, _ in pairs:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode, **kwargs)`` on a temporary file that replaces ``path`` when the block ends without an
    error; on an error ``path`` is left as it was."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes a whole file: expected a 'w' mode, found {mode!r}")
    with staged() as stage, open(stage(path), mode, **kwargs) as f:
        yield f


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically, fsynced."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class JsonlLog:
    """An append-only JSON-lines file, safe across threads; a torn last line is dropped when it is opened."""

    def __init__(self, path: str | os.PathLike, *, sync_every: float = 0.0) -> None:
        self.path = Path(path)
        self.lock = threading.Lock()
        self.sync_every = sync_every  # seconds between fsyncs of appends asked to sync; 0: every such append
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(self.path)
        self._synced = time.monotonic()
        self._pending = False  # appended lines not yet fsynced

    def append(self, line: str, *, sync: bool = True) -> None:
        """Append one line (no newline inside it), flushed to the operating system; with ``sync``, fsynced now, or
        (``sync_every``) when the last fsync is at least that old."""
        if "\n" in line:
            raise ValueError(f"a JSON-lines record must be one line, found {line.count(chr(10))} newlines in it")
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            self._pending = True
            if sync and time.monotonic() - self._synced >= self.sync_every:
                self._fsync(f)

    def sync(self, *, when_due: bool = False) -> None:
        """fsync what has been appended (``when_due``: only if the last fsync is ``sync_every`` seconds old)."""
        with self.lock:
            if not self._pending or (when_due and time.monotonic() - self._synced < self.sync_every):
                return
            with open(self.path, "a", encoding="utf-8") as f:
                self._fsync(f)

    def _fsync(self, f: IO[Any]) -> None:
        os.fsync(f.fileno())
        self._synced, self._pending = time.monotonic(), False

    def lines(self) -> list[str]:
        """The non-blank lines, in file order (none when the file does not exist)."""
        if not self.path.exists():
            return []
        return [line for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def repair_jsonl(path: Path) -> None:
    """Drop a torn last line (a write cut by a kill) so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
