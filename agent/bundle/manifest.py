"""A bundle's ``manifest.json``: every file it holds, with its size, sha256 and where it came from; checked on use.

The manifest is the bundle's truth: ``vqa bundle`` rewrites it after each run (so a re-run knows what it already
has), ``install.sh`` and ``vqa doctor`` check the files against it, and a file that is missing, of another size or
of another hash is named with the fix (run ``vqa bundle DIR`` again on a machine with network).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, Field

from agent.core.errors import ConfigError

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FORMAT = 1
_CHUNK = 1 << 20


class Entry(BaseModel):
    """One file of the bundle, its path relative to the bundle's folder (``/`` separators)."""

    path: str
    size: int = Field(ge=0)
    sha256: str
    source: str  # a URL, ``pip:NAME==VERSION``, ``hub:ORG/NAME@REV`` or the local path it was copied from
    kind: str  # wheel, model, easyocr, tessdata, font, file


class Manifest(BaseModel):
    format: int = FORMAT
    created_by: str = ""  # vqa-orchestrator VERSION
    target: dict[str, str] = Field(default_factory=dict)  # python, platform, implementation, abi
    files: list[Entry] = Field(default_factory=list)

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.files}

    def add(self, entry: Entry) -> None:
        """Add ``entry``, replacing one of the same path."""
        self.files = [e for e in self.files if e.path != entry.path] + [entry]

    def drop_missing(self, root: Path) -> None:
        """Forget entries whose file is gone (so the next run fetches them again)."""
        self.files = [e for e in self.files if (root / e.path).is_file()]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def entry_for(root: Path, path: Path, *, source: str, kind: str) -> Entry:
    """The manifest entry of ``path`` (a file under ``root``), hashed now."""
    return Entry(path=path.relative_to(root).as_posix(), size=path.stat().st_size, sha256=sha256(path),
                 source=source, kind=kind)


def read(root: Path) -> Manifest:
    """The manifest of the bundle at ``root`` (an empty one when there is none yet)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return Manifest()
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not a bundle manifest ({str(exc).splitlines()[0]}); delete it and run "
                          f"vqa bundle {root} again") from None


def write(root: Path, manifest: Manifest) -> Path:
    path = Path(root) / MANIFEST
    manifest.files.sort(key=lambda e: e.path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    write_sums(root, manifest)
    return path


def verify(root: Path, manifest: Manifest, *, hashes: bool = True) -> list[str]:
    """One line per file that does not match: missing, another size, or (with ``hashes``) another sha256.
    Files in the bundle but not in the manifest are not checked (a user may add their own)."""
    problems = []
    for e in manifest.files:
        path = Path(root) / e.path
        if not path.is_file():
            problems.append(f"{e.path}: missing (expected {e.size} bytes from {e.source})")
        elif path.stat().st_size != e.size:
            problems.append(f"{e.path}: {path.stat().st_size} bytes, expected {e.size}")
        elif hashes and sha256(path) != e.sha256:
            problems.append(f"{e.path}: sha256 differs from the manifest's (file damaged or replaced)")
    return problems


def write_sums(root: Path, manifest: Manifest) -> Path:
    """``SHA256SUMS`` beside the manifest, so ``install.sh`` checks the files with ``sha256sum -c`` before anything
    of the project is installed."""
    path = Path(root) / SUMS
    path.write_text("".join(f"{e.sha256}  {e.path}\n" for e in sorted(manifest.files, key=lambda e: e.path)),
                    encoding="utf-8")
    return path
