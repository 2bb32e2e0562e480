"""Filling a knowledge base: sources -> entries -> vectors, for ``vqa kb build`` and ``vqa kb add``.

Sources, by what the path is:

- a ``.csv`` file: the competition layout (``id,path,question,a,b,c,d[,e],answer``) read by
  ``agent.data.read_questions``; each row with an answer becomes a solved ``question`` entry with its image
  (paths relative to ``images_root``, by default the CSV's folder).
- a ``.jsonl`` file: text ``passage`` entries, one ``{"id": ..., "text": ...}`` object a line (other keys ignored).
- a folder: ``caption`` entries, one per image, captioned by ``metadata.jsonl`` (the Hugging Face imagefolder
  layout: ``{"file_name": ..., "text": ...}``) or by a ``NAME.txt`` beside ``NAME.jpg``; ids are the paths.

Rows that cannot be used (no answer, a missing or corrupt image, a repeated id, an id already in the knowledge
base, a caption file over ``CAPTION_LIMIT``) are skipped and listed in the summary with the reason; a source with
nothing usable, or a ``.jsonl`` or ``metadata.jsonl`` over ``SOURCE_LIMIT``, is a ``DataError``. Sizes are checked
before a file is read.
Every image is read through ``agent.core.images.load_image`` (its sha256 is the leakage guard's key); text-only
embedders hash the file without decoding it (``agent.core.images.file_sha256``: the same regular-file and size rules).
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import ConfigError, DataError, ImageError
from agent.core.images import file_sha256, load_image, resolve_image_path
from agent.data import RowError, read_questions
from tools.retrieve.embedders import BATCH, Embedder, identity, load_embedder
from tools.retrieve.index import choose_index_type
from tools.retrieve.kb import (
    IMAGE_ROWS,
    MANIFEST,
    KbEntry,
    KnowledgeBase,
    check_weight,
    embedder_for,
    entry_role,
    question_text,
)
from tools.retrieve.manifest import SourceInfo, now

CAPTION_LIMIT = 64 << 10  # bytes per caption file (NAME.txt); a larger one skips its image, unread
SOURCE_LIMIT = 512 << 20  # bytes per passages .jsonl or metadata.jsonl; a larger one is refused, unread
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
Progress = Callable[[int, int], None]


@dataclass
class Skip:
    where: str  # the entry's id, or "line N"
    reason: str


@dataclass
class Candidate:
    entry: KbEntry
    image_path: Path | None = None
    images_root: Path | None = None  # CSV rows: the image must resolve (symlinks too) inside it


@dataclass
class BuildSummary:
    kb: str
    source: str
    source_kind: str  # competition | passages | captions
    added: int
    total: int
    embedder: str
    indexes: dict[str, dict[str, Any]]
    seconds: float
    skipped: list[Skip] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- sources

def read_source(path: Path, images_root: Path | None = None) -> tuple[str, list[Candidate], list[Skip]]:
    """``(kind, candidates, skipped)`` for a competition CSV, a passages JSONL or a captioned image folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"expected a source at {path}, found nothing; check the path")
    if path.is_dir():
        kind, (cands, skips) = "captions", _read_folder(path)
    elif path.suffix.lower() == ".csv":
        kind, (cands, skips) = "competition", _read_csv(path, Path(images_root) if images_root else path.parent)
    elif path.suffix.lower() == ".jsonl":
        kind, (cands, skips) = "passages", _read_jsonl(path)
    else:
        raise DataError(f"expected a competition .csv, a passages .jsonl or a folder of captioned images, found {path}")
    if not cands:
        why = "; ".join(f"{s.where}: {s.reason}" for s in skips[:5]) or "no rows"
        raise DataError(f"found nothing usable in {path} ({why}); expected {kind} as described in "
                        "`vqa kb build --help`")
    return kind, cands, skips


def _read_csv(path: Path, root: Path) -> tuple[list[Candidate], list[Skip]]:
    if not root.is_dir():
        raise ConfigError(f"--images {root} is not a folder; pass the folder the CSV's paths are relative to")
    cands, skips = [], []
    for row in read_questions(path, root):
        if isinstance(row, RowError):
            skips.append(Skip(row.id or f"line {row.line}", f"{row.reason}: {row.message}"))
        elif row.answer is None:
            skips.append(Skip(row.id, "no answer: a knowledge base of solved questions needs the answer column"))
        else:
            rel = row.image.relative_to(root).as_posix()
            cands.append(Candidate(KbEntry(id=row.id, kind="question", text=row.text, options=row.options,
                                           answer=row.answer, image=rel, source=path.name), row.image, root))
    return cands, skips


def _read_jsonl(path: Path) -> tuple[list[Candidate], list[Skip]]:
    cands, skips, seen = [], [], set()
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            skips.append(Skip(f"line {n}", f"not JSON ({exc})"))
            continue
        pid = str(obj.get("id", "")).strip() if isinstance(obj, dict) else ""
        text = obj.get("text") if isinstance(obj, dict) else None
        if not pid or not isinstance(text, str) or not text.strip():
            skips.append(Skip(f"line {n}", 'expected an object with a non-empty "id" and "text"'))
        elif pid in seen:
            skips.append(Skip(pid, f"line {n}: repeated id (the first one is kept)"))
        else:
            seen.add(pid)
            cands.append(Candidate(KbEntry(id=pid, kind="passage", text=_nfc(text), source=path.name)))
    return cands, skips


def _read_folder(folder: Path) -> tuple[list[Candidate], list[Skip]]:
    captions: dict[str, str] = {}
    meta = folder / "metadata.jsonl"
    if meta.is_file():
        for n, line in enumerate(_read_text(meta).splitlines(), 1):
            try:
                obj = json.loads(line) if line.strip() else {}
            except ValueError as exc:
                raise DataError(f"{meta} line {n} is not JSON ({exc}); expected {{\"file_name\": ..., \"text\": ...}}")
            text = obj.get("text") or obj.get("caption") if isinstance(obj, dict) else None
            if isinstance(obj, dict) and obj.get("file_name") and isinstance(text, str):
                captions[str(obj["file_name"]).replace("\\", "/")] = text
    cands, skips = [], []
    for p in sorted(q for q in folder.rglob("*") if q.suffix.lower() in IMAGE_EXTS and q.is_file()):
        rel = p.relative_to(folder).as_posix()
        sidecar = p.with_suffix(".txt")
        if rel not in captions and sidecar.is_file() and _size(sidecar) > CAPTION_LIMIT:
            skips.append(Skip(rel, f"caption file {sidecar.name} is {_size(sidecar):,} bytes; expected at most "
                                   f"{CAPTION_LIMIT:,} (a caption, not a document)"))
            continue
        text = captions.get(rel) or (_read_text(sidecar, CAPTION_LIMIT).strip() if sidecar.is_file() else "")
        if not text.strip():
            skips.append(Skip(rel, f"no caption: expected {sidecar.name} beside it or a metadata.jsonl line"))
        else:
            cands.append(Candidate(KbEntry(id=rel, kind="caption", text=_nfc(text.strip()), image=rel,
                                           source=folder.name), p))
    return cands, skips


def _read_text(path: Path, limit: int = SOURCE_LIMIT) -> str:
    """The file as text, its size checked against ``limit`` before it is read (a ``DataError`` naming it)."""
    size = _size(path)
    if size > limit:
        raise DataError(f"{path} is {size:,} bytes; expected at most {limit:,} bytes for a "
                        f"{'caption' if limit == CAPTION_LIMIT else 'knowledge-base source'} file: split it, or "
                        "remove what is not text")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path} as UTF-8 text: {exc}") from exc


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


# ---------------------------------------------------------------- embedding

def embed(cands: list[Candidate], embedder: Embedder, on_progress: Progress | None = None,
          ) -> tuple[list[KbEntry], np.ndarray, np.ndarray, list[int], list[Skip]]:
    """Hash (and, for image embedders, load) every image, then embed texts and images in batches.

    Returns the kept entries, their text vectors, the image vectors, which kept entries those belong to, and
    the candidates skipped for their image.
    """
    reads_images = "image" in embedder.modalities
    entries: list[KbEntry] = []
    texts, images, with_image, skips = [], [], [], []
    for start in range(0, len(cands), BATCH):
        batch_entries, batch_images = [], []
        for c in cands[start : start + BATCH]:
            e = c.entry
            if c.image_path is not None:
                try:
                    sha, picture = _image(c, reads_images)
                except ImageError as exc:
                    skips.append(Skip(e.id, f"image {exc.reason}: {exc}"))
                    continue
                e = e.model_copy(update={"image_sha256": sha})
                if picture is not None:
                    with_image.append(len(entries) + len(batch_entries))
                    batch_images.append(picture)
            batch_entries.append(e)
        texts.append(_embed_texts(batch_entries, embedder))
        if batch_images:
            images.append(embedder.embed_images(batch_images))
        entries.extend(batch_entries)
        if on_progress:
            on_progress(min(start + BATCH, len(cands)), len(cands))
    dim = embedder.dim
    text_vecs = np.concatenate(texts) if texts else np.empty((0, dim), np.float32)
    image_vecs = np.concatenate(images) if images else np.empty((0, dim), np.float32)
    return entries, text_vecs, image_vecs, with_image, skips


def _image(c: Candidate, decode: bool) -> tuple[str, Any]:
    """The sha256 of the image file, and the decoded image when the embedder reads images."""
    path = resolve_image_path(c.entry.image, c.images_root) if c.images_root else c.image_path
    if decode:
        loaded = load_image(path)
        return loaded.sha256, loaded.image
    return file_sha256(path), None  # same file rules as load_image: a regular file under the size cap


def _embed_texts(entries: list[KbEntry], embedder: Embedder) -> np.ndarray:
    out = np.empty((len(entries), embedder.dim), dtype=np.float32)
    for role in ("query", "passage"):
        rows = [i for i, e in enumerate(entries) if entry_role(e) == role]
        if rows:
            out[rows] = embedder.embed_texts([question_text(entries[i].text, entries[i].options) for i in rows], role)
    return out


# ---------------------------------------------------------------- build and add



def build_kb(source: Path, out: Path, *, clip: str = "e5", images_root: Path | None = None, index: str = "auto",
             image_weight: float = 0.5, force: bool = False, device: str = "auto",
             on_progress: Progress | None = None) -> BuildSummary:
    """A new knowledge base in ``out`` from ``source``; ``force`` replaces one that is already there."""
    t0, out = time.perf_counter(), Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; expected a new or empty folder")
    if (out / MANIFEST).exists() and not force:
        raise ConfigError(f"{out} already holds a knowledge base: append with `vqa kb add {out} SOURCE`, "
                          "or replace it with --force")
    if out.is_dir() and not (out / MANIFEST).exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is a folder with other files in it; choose a new or empty folder")
    choose_index_type(1, index), check_weight(image_weight)  # bad options fail before any work
    kind, cands, skips = read_source(source, images_root)
    embedder = load_embedder(clip, device=device)
    entries, text_vecs, image_vecs, with_image, bad = embed(cands, embedder, on_progress)
    if not entries:
        why = "; ".join(f"{s.where}: {s.reason}" for s in bad[:5])
        raise DataError(f"no entry of {source} could be embedded: {why}")
    kb = KnowledgeBase.create(out, identity(embedder), index=index, image_weight=image_weight)
    kb.extend(entries, text_vecs, image_vecs, with_image)
    return _commit(kb, source, kind, len(entries), skips + bad, t0, stale_image=True)


def add_to_kb(kb_dir: Path, source: Path, *, images_root: Path | None = None, clip: str | None = None,
              device: str = "auto", on_progress: Progress | None = None) -> BuildSummary:
    """Append ``source`` to an existing knowledge base; ids already in it are skipped (the old entry is kept)."""
    t0 = time.perf_counter()
    kb = KnowledgeBase.open(kb_dir)
    kind, cands, skips = read_source(source, images_root)
    new = [c for c in cands if c.entry.id not in kb.ids]
    skips += [Skip(c.entry.id, "already in the knowledge base (ids are unique; the existing entry is kept)")
              for c in cands if c.entry.id in kb.ids]
    entries, bad = [], []
    if new:
        embedder = embedder_for(kb, clip, device)
        entries, text_vecs, image_vecs, with_image, bad = embed(new, embedder, on_progress)
        if entries:
            kb.extend(entries, text_vecs, image_vecs, with_image)
    return _commit(kb, source, kind, len(entries), skips + bad, t0, stale_image=False)


def _commit(kb: KnowledgeBase, source: Path, kind: str, added: int, skips: list[Skip], t0: float,
            stale_image: bool) -> BuildSummary:
    if added:
        kb.manifest.sources.append(SourceInfo(path=str(Path(source).resolve()), kind=kind, added=added,
                                              skipped=len(skips), at=now()))
        kb.save()
        if stale_image and "image" not in kb.indexes:  # left over from a KB this one replaced
            for name in ("image.faiss", IMAGE_ROWS):
                (kb.root / name).unlink(missing_ok=True)
    indexes = {n: {"type": i.type, "count": i.count} for n, i in kb.manifest.indexes.items()}
    return BuildSummary(kb=str(kb.root), source=str(source), source_kind=kind, added=added, total=len(kb),
                        embedder=kb.embedder.name, indexes=indexes, seconds=round(time.perf_counter() - t0, 3),
                        skipped=skips)
