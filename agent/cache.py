"""Tool-output cache: each tool output is computed once per (image, tool, settings, model, code, question inputs).

Key: the sha256 of a canonical JSON of everything that determines a tool's output (see ``cache_key``):

- the image: the source file's sha256 and the size of the working copy the tool sees;
- the tool (its contract, ``tools.base.Tool``): its name, its settings (``tool.settings``, JSON with sorted keys),
  the size and mtime of any file or folder a setting names (a model folder, a knowledge base) and of the files
  directly inside it, its ``fingerprint``, its ``version`` and the sha256 of its module's source, so a code
  change invalidates its entries; the same for each peer tool it is given (``som`` reads ``detect``); plus this
  package's version and ``CACHE_VERSION``;
- the question: what the tool reads of it, ``tool.cache_inputs(question)`` (by default every field of the
  question, its id included);
- the tool's optional arguments (``Tool.Args``) when a planner gave any.

Storage: ``ROOT/<key[:2]>/<key>.json`` (the ``ToolResult`` and the key's parts) plus, beside it,
``<key>.<artifact name><suffix>`` copies of the files the tool drew. Every file is written to a temporary name
and ``os.replace``d, artifacts first and the JSON last, so the JSON's existence is the commit: an interrupted
write leaves at most stray temporary files, never a half entry. Only successful results are stored; a failure
or a timeout is never cached. Served results carry ``cached=True`` and their artifacts are copied into the
question's work folder. An unreadable entry is a miss (and is recomputed and replaced).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from agent.core.fileio import atomic_write
from agent.core.images import LoadedImage
from agent.core.schema import Question, ToolResult
from agent.rundir import package_version
from tools.base import NoArgs, Tool

CACHE_VERSION = 1


def source_hash(obj: Any) -> str:
    """sha256 of the source file that defines ``obj``'s class ("" when there is none, e.g. in a REPL)."""
    try:
        path = inspect.getsourcefile(type(obj))
    except TypeError:
        path = None
    return _file_hash(path) if path else ""


@functools.lru_cache(maxsize=64)
def _file_hash(path: str) -> str:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""


def path_stamps(settings: dict[str, Any]) -> dict[str, Any]:
    """For each setting naming an existing file or folder (a model, a knowledge base): size and mtime of it and of
    the files directly inside, so rebuilding a knowledge base or replacing weights invalidates the entries."""
    out: dict[str, Any] = {}
    for name, value in sorted(settings.items()):
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            continue
        p = Path(value).expanduser()
        try:
            if p.is_file():
                st = p.stat()
                out[name] = [st.st_size, st.st_mtime_ns]
            elif p.is_dir():
                out[name] = sorted([c.name, c.stat().st_size, c.stat().st_mtime_ns] for c in p.iterdir() if c.is_file())
        except OSError:
            continue
    return out


def tool_parts(tool: Tool) -> dict[str, Any]:
    return {
        "tool": tool.name,
        "tool_version": str(tool.version),
        "tool_source": source_hash(tool),
        "fingerprint": str(tool.fingerprint or ""),
        "settings": tool.settings,
        "paths": path_stamps(tool.settings),
    }


def key_parts(tool: Tool, image: LoadedImage, question: Question,
              peers: dict[str, Tool] | None = None, args: NoArgs | None = None) -> dict[str, Any]:
    """Everything the key hashes, as plain JSON data (stored with the entry, for inspection)."""
    given = args.model_dump(mode="json", exclude_none=True) if args is not None else {}
    return {
        "cache_version": CACHE_VERSION,
        "package": package_version(),
        **tool_parts(tool),
        "peers": {name: tool_parts(p) for name, p in sorted((peers or {}).items())},
        "image_sha256": image.sha256,
        "image_size": list(image.image.size),
        "question": dict(tool.cache_inputs(question)),
        **({"args": given} if given else {}),  # absent without arguments: keys made before args stay valid
    }


def cache_key(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ToolCache:
    """A folder of tool outputs. ``run`` is ``tool.run`` through the cache. Counters: ``computed`` (outputs
    computed and stored), ``failed`` (runs that failed, never stored), ``served`` (answered from the folder)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.computed = 0
        self.failed = 0
        self.served = 0
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def _key_lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def run(self, tool: Tool, image: LoadedImage, question: Question, workdir: Path | None = None,
            peers: dict[str, Tool] | None = None, args: NoArgs | None = None) -> ToolResult:
        """The cached result when there is one, else ``tool.run`` (stored when it succeeded). Never raises for a
        tool failure; concurrent calls with one key compute it once. ``peers``: as the graph passes them;
        ``args``: the tool's optional arguments (``Tool.Args``), as a planner gave them."""
        parts = key_parts(tool, image, question, peers, args)
        key = cache_key(parts)
        with self._key_lock(key):
            t0 = time.perf_counter()
            hit = self.get(key, workdir)
            if hit is not None:
                with self._guard:
                    self.served += 1
                return hit.model_copy(update={"seconds": time.perf_counter() - t0})
            result = tool.run(image.image, question, workdir, peers, args)
            with self._guard:
                if result.ok:
                    self.computed += 1
                else:
                    self.failed += 1
            if result.ok:
                self.put(key, result, parts)
            return result

    def lookup(self, tool: Tool, image: LoadedImage, question: Question, workdir: Path | None = None,
               peers: dict[str, Tool] | None = None, args: NoArgs | None = None) -> ToolResult | None:
        """``run``'s cached result, or ``None`` (nothing is computed): a hit needs no tool slot and no weights."""
        t0 = time.perf_counter()
        hit = self.get(cache_key(key_parts(tool, image, question, peers, args)), workdir)
        if hit is None:
            return None
        with self._guard:
            self.served += 1
        return hit.model_copy(update={"seconds": time.perf_counter() - t0})

    def get(self, key: str, workdir: Path | None = None) -> ToolResult | None:
        """The stored result (``cached=True``, artifacts copied into ``workdir``), or ``None`` on a miss."""
        path = self._entry(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            result = ToolResult.model_validate(entry["result"])
            stored = {name: path.parent / fname for name, fname in entry["artifacts"].items()}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):  # unreadable: a miss, replaced by the next put
            return None
        if not all(p.is_file() for p in stored.values()):
            return None
        artifacts = {}
        for name, src in stored.items():
            if workdir is None:
                artifacts[name] = str(src)
                continue
            Path(workdir).mkdir(parents=True, exist_ok=True)
            dst = Path(workdir) / entry["names"][name]
            shutil.copyfile(src, dst)
            artifacts[name] = str(dst)
        return result.model_copy(update={"cached": True, "artifacts": artifacts})

    def put(self, key: str, result: ToolResult, parts: dict[str, Any] | None = None) -> None:
        """Store a successful result: artifact copies first, then the JSON entry (the commit)."""
        if not result.ok:
            raise ValueError(f"only successful tool results are cached; {result.tool} failed: {result.error}")
        path = self._entry(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        stored, names = {}, {}
        for name, src in result.artifacts.items():
            src_path = Path(src)
            if not src_path.is_file():
                return  # the tool said it drew a file that is not there: do not store a result we cannot serve
            fname = f"{key}.{name}{src_path.suffix}"
            atomic_write(path.parent / fname, src_path.read_bytes())
            stored[name], names[name] = fname, src_path.name
        entry = {"v": CACHE_VERSION, "key": key, "parts": parts, "created": time.time(), "artifacts": stored,
                 "names": names, "result": result.model_copy(update={"artifacts": {}, "cached": False}).model_dump(
                     mode="json")}
        atomic_write(path, json.dumps(entry, ensure_ascii=False, default=str).encode("utf-8"))


def open_cache(setting: str, run_dir: Path | None) -> ToolCache | None:
    """The cache a ``cache`` setting names: ``"auto"`` is ``RUN/cache`` (none without a run folder), ``"off"`` none,
    anything else a folder (share one between runs to reuse tool outputs across them)."""
    if setting == "off" or (setting == "auto" and run_dir is None):
        return None
    return ToolCache(Path(run_dir) / "cache" if setting == "auto" else Path(setting).expanduser())
