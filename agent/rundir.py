"""The run directory's guards: one process at a time, answers never mixed across settings, outputs that never
overwrite an input or the run's own files.

``run.json`` remembers what shapes the answers (model, adapter, reasoner, tools, prompt version, ...). A rerun in
the same directory resumes only when those are the same; with other settings it refuses, unless ``force``, which
sets the earlier answers aside (renamed, never deleted) and starts afresh. Beside them, under ``provenance``, it
records what else produced the run, as lm-evaluation-harness's results files do (package version, git commit,
seed, planner, command line, library versions); those are never compared.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shlex
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from agent.core.errors import ConfigError, VqaError
from agent.core.redact import redact, redact_deep

LOCK_FILE = ".lock"
IDENTITY_FILE = "run.json"
OWN_FILES = ("results.jsonl", "trace.jsonl", "failed.csv", IDENTITY_FILE, "metrics.json", "ablation.csv",
             "ablation.png", LOCK_FILE)  # what a run writes at its top level
PROVENANCE = "provenance"  # run.json's record of what produced the run: kept, never compared
PACKAGE = "vqa-orchestrator"
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


def remember(run_dir: Path, identity: dict[str, Any], *, force: bool = False,
             provenance: dict[str, Any] | None = None) -> None:
    """Record ``identity`` (and ``provenance``, never compared) in ``run.json``, or refuse when the directory holds
    answers made with another identity."""
    path = run_dir / IDENTITY_FILE
    before = _read(path)
    if before:
        before.pop(PROVENANCE, None)
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
    record(run_dir, identity, provenance)


def record(run_dir: Path, identity: dict[str, Any], provenance: dict[str, Any] | None = None) -> None:
    """Write ``run.json`` (``identity``, plus ``provenance`` when given) without comparing it with the last one: for
    runs that answer everything afresh (``vqa eval``) or resume nothing (``vqa ask``)."""
    path = run_dir / IDENTITY_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    data = redact_deep({**identity, **({PROVENANCE: provenance} if provenance is not None else {})})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str), encoding="utf-8")
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

    return redact_deep({**{k: getattr(settings, k) for k in ANSWER_SETTINGS}, "tools": forced_tools,
                        "tool_settings": settings.tool_settings(), "prompts": template_versions()})


PLANNER_SETTINGS = ("planner", "confidence", "margin", "max_rounds", "max_steps")
LIBRARIES = ("torch", "transformers", "peft", "langgraph", "pydantic")
_SECRET_FLAGS = ("--api-key",)


def dist_version(dist: str) -> str | None:
    """The installed version of the distribution ``dist``, or ``None`` when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def package_version() -> str:
    """This package's installed version (``0+unknown`` when it runs from a folder that was never installed)."""
    return dist_version(PACKAGE) or "0+unknown"


def git_commit(root: Path | None = None) -> str | None:
    """The commit of the checkout this code runs from (``+dirty`` with uncommitted changes), or ``None`` when it
    is not a git checkout or git is missing."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def command_line(argv: list[str]) -> str:
    """``argv`` as one shell line, with the value of every secret flag (``--api-key``) replaced by ``***``."""
    shown, hide = [], False
    argv = [a.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for a in argv]  # bytes that are not UTF-8
    for arg in argv:
        if hide:
            shown.append("***")
        elif any(arg.startswith(f + "=") for f in _SECRET_FLAGS):
            shown.append(arg.split("=", 1)[0] + "=***")
        else:
            shown.append(arg)
        hide = arg in _SECRET_FLAGS
    return redact(shlex.join(shown))  # and URL passwords, bearer tokens, remembered secrets


def provenance(settings: Any, *, command: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """What produced a run besides its identity: package version, git commit, seed, planner settings, the command
    line (secrets hidden), row limit, Python and library versions, and when."""
    return {"package": PACKAGE, "version": package_version(), "git_commit": git_commit(),
            "seed": getattr(settings, "seed", None), "limit": limit,
            "planner": {k: getattr(settings, k) for k in PLANNER_SETTINGS if hasattr(settings, k)},
            "command": command, "python": platform.python_version(),
            "libraries": {name: dist_version(name) for name in LIBRARIES},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
