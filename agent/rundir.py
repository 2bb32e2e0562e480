"""The run directory's guards: one process at a time, answers never mixed across settings, outputs that never
overwrite an input or the run's own files.

``run.json`` remembers what shapes the answers (model, adapter, reasoner, tools, prompt version, ...). A rerun in
the same directory resumes only when those are the same; with other settings it refuses, unless ``force``, which
sets the earlier answers aside (renamed, never deleted) and starts afresh.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from agent.errors import ConfigError, VqaError

LOCK_FILE = ".lock"
IDENTITY_FILE = "run.json"
OWN_FILES = ("results.jsonl", "trace.jsonl", "failed.csv", IDENTITY_FILE, "metrics.json", "ablation.csv",
             "ablation.png", LOCK_FILE)  # what a run writes at its top level
SET_ASIDE = ("results.jsonl",)  # answers made with other settings: renamed by force, so nothing is resumed from them


class RunDirBusy(VqaError):
    """Another process holds the run directory."""


@contextmanager
def locked(run_dir: Path, command: str = "vqa") -> Iterator[None]:
    """Hold ``run_dir`` for this process; a second holder fails at once, naming the first."""
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"run directory {run_dir} cannot be written ({exc.strerror}); choose another --run-dir") \
            from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunDirBusy(f"run directory {run_dir} is in use by {holder}; wait for it to finish, or use "
                             "another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({command}, since {time.strftime('%H:%M:%S')})".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remember(run_dir: Path, identity: dict[str, Any], *, force: bool = False) -> None:
    """Record ``identity`` in ``run.json``, or refuse when the directory holds answers made with another one."""
    path = run_dir / IDENTITY_FILE
    before = _read(path)
    answers = [run_dir / name for name in SET_ASIDE if (run_dir / name).exists()]
    if before is not None and before != identity and answers:
        if not force:
            changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
            shown = ", ".join(f"{k}: {before.get(k)!r} -> {identity.get(k)!r}" for k in changed[:4])
            raise ConfigError(f"run directory {run_dir} holds answers made with other settings ({shown}); use a new "
                              "--run-dir, or --force to set those answers aside and start again")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for p in answers:
            p.rename(p.with_name(f"{p.stem}.{stamp}{p.suffix}"))
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as other settings, so answers are never silently mixed
    return data if isinstance(data, dict) else {}


def check_output(out: Path, *, inputs: list[Path], run_dir: Path | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output that would replace an input or a run file, or that cannot be written."""
    target = out.expanduser().resolve()
    for p in inputs:
        if p.exists() and target == p.expanduser().resolve():
            raise ConfigError(f"{flag} {out} is the input file {p}: writing it would destroy the input; choose "
                              "another path")
    if run_dir is not None and target.parent == run_dir.expanduser().resolve() and target.name in OWN_FILES:
        raise ConfigError(f"{flag} {out} is the run directory's own {target.name}; choose another name, e.g. "
                          f"{run_dir / 'submission.csv'}")
    if target.is_dir():
        raise ConfigError(f"{flag} {out} is a folder; expected a file path such as {out / 'submission.csv'}")
    in_run_dir = run_dir is not None and target.parent == run_dir.expanduser().resolve()  # made by the run
    if not target.parent.is_dir() and not in_run_dir:
        raise ConfigError(f"{flag} {out}: folder {out.parent} does not exist; create it first (mkdir -p "
                          f"{out.parent})")
    if target.parent.is_dir() and not os.access(target.parent, os.W_OK):
        raise ConfigError(f"{flag} {out}: folder {out.parent} is not writable")


ANSWER_SETTINGS = ("reasoner", "backend", "model", "base_url", "quant", "dtype", "adapter", "min_pixels", "max_pixels",
                   "generate", "max_new_tokens", "constrain", "debias", "temperature", "image_max_pixels")


def identity(settings: Any, forced_tools: list[str] | None) -> dict[str, Any]:
    """What shapes the answers of a run: the reasoner's settings, the tools and their settings, the prompts."""
    from prompts import template_versions

    return {**{k: getattr(settings, k) for k in ANSWER_SETTINGS}, "tools": forced_tools,
            "tool_settings": settings.tool_settings(), "prompts": template_versions()}
