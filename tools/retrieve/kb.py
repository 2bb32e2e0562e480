"""The knowledge base of the ``retrieve`` tool: FAISS inner-product indexes over normalised embeddings, entry
metadata and a manifest, in one folder.

``KB/`` holds ``manifest.json`` (format version, the embedder's name, dimension and weights fingerprint, each
index's type, count and parameters, the sources added), ``entries.jsonl`` (one entry per line), ``text.faiss``
(every entry's text vector, row i = entry i) and, when the embedder reads images, ``image.faiss`` with
``image_rows.npy`` (the entry each image vector belongs to). Saving writes temporary files and replaces them,
the manifest last; ``open`` checks that every count agrees, so an interrupted write is reported, never used.

Scoring: a query has an image vector, a text vector or both; an entry is a candidate when either index returns
it among its top ``max(4k, k + 16)`` (more while the leakage guard leaves fewer than ``k``), and candidates are
rescored exactly from the stored vectors::

    score = sum(w_m * sim_m) / sum(w_m)   over the modalities m that both sides have

with ``w_image = image_weight`` (0.5 by default) and ``w_text = 1 - image_weight``: ``w·image + (1-w)·text`` when
both have an image and a text, and text alone for an entry without an image (a passage) or a text-only KB.

Index type: chosen by ``tools.retrieve.index`` (exact up to 50,000 vectors, IVF above; HNSW on request). Appends go
into the existing index, which is rebuilt when the chosen type changes or an IVF index has grown past
``IVF_RETRAIN_GROWTH`` times what its centroids were trained on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from agent.core.errors import ConfigError, DataError, ModelLoadError
from agent.core.fileio import staged
from agent.core.text import normalise
from tools.retrieve.embedders import Embedder, load_embedder
from tools.retrieve.index import IVF_RETRAIN_GROWTH, all_vectors, build_index, choose_index_type, configure
from tools.retrieve.manifest import EmbedderInfo, IndexInfo, KbManifest, now, read_manifest

GUARDS = ("row", "image", "off")
MANIFEST, ENTRIES, IMAGE_ROWS = "manifest.json", "entries.jsonl", "image_rows.npy"
BUILD_HINT = "build one with `vqa kb build SOURCE --out DIR`"


class EmbedderMismatch(ConfigError):
    """The knowledge base was built with another embedding model than the one given."""


class KbEntry(BaseModel):
    """One solved question (``question``), captioned image (``caption``) or text ``passage``."""

    id: str
    kind: Literal["question", "caption", "passage"]
    text: str  # the question, the caption or the passage
    options: dict[str, str] | None = None
    answer: str | None = None  # letter, for solved questions
    image: str | None = None  # the image path as the source gave it (for people)
    image_sha256: str | None = None  # of the image file's bytes, as agent.core.images.LoadedImage.sha256
    source: str | None = None

    @property
    def answer_text(self) -> str | None:
        return self.options.get(self.answer) if self.options and self.answer else None


def question_text(text: str, options: dict[str, str] | None) -> str:
    """What is embedded for a question, on both sides of a question-to-question match: the text, then the options."""
    return f"{text}\n{' / '.join(options.values())}" if options else text


def entry_role(entry: KbEntry) -> Literal["query", "passage"]:
    """e5 matches questions to questions symmetrically (``query`` both sides) and queries to passages."""
    return "query" if entry.kind == "question" else "passage"


@dataclass(frozen=True)
class Guard:
    """Who is asking (the query row's id, image hash and question) and what the leakage guard keeps out.

    ``row``: the row itself: the same id, or the same image file and the same question text (normalised), so a
    re-numbered copy of an evaluated row is never retrieved while other questions about the same photo are.
    ``image``: the same id or the same image file at all (for evaluation when test photos never occur in train).
    ``off``: only ``exclude_ids``, which are always left out.
    """

    mode: Literal["row", "image", "off"] = "row"
    query_id: str | None = None
    image_sha256: str | None = None
    text: str | None = None
    exclude_ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.mode not in GUARDS:
            raise ConfigError(f"leakage guard must be one of {list(GUARDS)}, found {self.mode!r}")

    def excludes(self, e: KbEntry) -> bool:
        if e.id in self.exclude_ids:
            return True
        if self.mode == "off":
            return False
        if self.query_id is not None and e.id == self.query_id:
            return True
        same_image = self.image_sha256 is not None and e.image_sha256 == self.image_sha256
        if self.mode == "image" or not same_image:
            return same_image
        return self.text is not None and normalise(e.text) == normalise(self.text)


@dataclass
class Hit:
    entry: KbEntry
    score: float
    image_score: float | None
    text_score: float | None
    same_image: bool = False

    def as_dict(self) -> dict[str, Any]:
        e = self.entry
        out = {"id": e.id, "score": round(self.score, 6), "image_score": _round(self.image_score),
               "text_score": _round(self.text_score), "same_image": self.same_image, "kind": e.kind, "text": e.text,
               "options": e.options, "answer": e.answer, "answer_text": e.answer_text, "image": e.image,
               "source": e.source}
        return {k: v for k, v in out.items() if v is not None}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


# ---------------------------------------------------------------- the knowledge base

@dataclass
class KnowledgeBase:
    root: Path
    manifest: KbManifest
    entries: list[KbEntry] = field(default_factory=list)
    indexes: dict[str, Any] = field(default_factory=dict)  # "text", "image" -> faiss index
    image_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        self.ids = {e.id: i for i, e in enumerate(self.entries)}
        self._image_pos = np.full(len(self.entries), -1, dtype=np.int64)
        self._image_pos[self.image_rows] = np.arange(len(self.image_rows))

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, root: Path, embedder: dict[str, Any] | EmbedderInfo, *, index: str = "auto",
               image_weight: float = 0.5) -> KnowledgeBase:
        """An empty knowledge base (nothing is written until ``save``)."""
        choose_index_type(1, index)
        check_weight(image_weight)
        stamp = now()
        return cls(Path(root), KbManifest(embedder=EmbedderInfo.model_validate(embedder), index_choice=index,
                                          image_weight=image_weight, created=stamp, updated=stamp))

    @classmethod
    def open(cls, root: str | os.PathLike) -> KnowledgeBase:
        import faiss

        root = Path(root)
        if not (root / MANIFEST).is_file():
            found = ("nothing" if not root.exists() else "a file" if root.is_file()
                     else "a folder without manifest.json")
            raise ConfigError(f"no knowledge base at {root}: expected a folder written by `vqa kb build`, found "
                              f"{found}; {BUILD_HINT}")
        manifest = read_manifest(root / MANIFEST)
        try:
            lines = (root / ENTRIES).read_text(encoding="utf-8").splitlines()
            entries = [KbEntry.model_validate_json(line) for line in lines if line.strip()]
            indexes = {name: faiss.read_index(str(root / f"{name}.faiss")) for name in manifest.indexes}
            rows = np.load(root / IMAGE_ROWS) if "image" in indexes else np.empty(0, dtype=np.int64)
        except (OSError, ValidationError, RuntimeError, ValueError) as exc:
            raise DataError(f"knowledge base {root} is damaged ({type(exc).__name__}: {exc}); "
                            "rebuild it with `vqa kb build --force`") from exc
        n, problems = manifest.count, []
        if len(entries) != n:
            problems.append(f"{ENTRIES} has {len(entries)}")
        if n and ("text" not in indexes or indexes["text"].ntotal != n):
            problems.append(f"text.faiss has {indexes['text'].ntotal if 'text' in indexes else 'no file'}")
        if "image" in indexes and not (indexes["image"].ntotal == len(rows) == manifest.indexes["image"].count
                                       and (not len(rows) or int(rows.max()) < n)):
            problems.append(f"image.faiss has {indexes['image'].ntotal} vectors for {len(rows)} rows")
        if problems:
            raise DataError(f"knowledge base {root} is inconsistent: the manifest says {n} entries but "
                            f"{'; '.join(problems)} (an interrupted write?); rebuild it with `vqa kb build --force`")
        for name, idx in indexes.items():
            configure(idx, manifest.indexes[name].type, manifest.indexes[name].params)
        return cls(root, manifest, entries, indexes, rows.astype(np.int64))

    def save(self) -> None:
        """Write everything to temporary files, then replace: indexes, rows, entries, and the manifest last."""
        import faiss

        self.root.mkdir(parents=True, exist_ok=True)
        m = self.manifest
        m.count, m.updated, m.kinds = len(self.entries), now(), self.kind_counts()
        with staged() as stage:
            for name, idx in self.indexes.items():
                faiss.write_index(idx, str(stage(self.root / f"{name}.faiss")))
            if "image" in self.indexes:
                stage(self.root / IMAGE_ROWS).write_bytes(_npy(self.image_rows))
            stage(self.root / ENTRIES).write_text("".join(e.model_dump_json(exclude_none=True) + "\n"
                                                          for e in self.entries), encoding="utf-8")
            stage(self.root / MANIFEST).write_text(self.manifest.to_json(), encoding="utf-8")

    # ------------------------------------------------------------ contents

    @property
    def embedder(self) -> EmbedderInfo:
        return self.manifest.embedder

    @property
    def image_weight(self) -> float:
        return self.manifest.image_weight

    def __len__(self) -> int:
        return len(self.entries)

    def kind_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.kind] = out.get(e.kind, 0) + 1
        return out

    def check_embedder(self, embedder: Any) -> None:
        """Refuse an embedder whose weights or dimension differ from the ones the KB was built with."""
        want = self.embedder
        if embedder.fingerprint != want.fingerprint or embedder.dim != want.dim:
            raise EmbedderMismatch(
                f"knowledge base {self.root} was built with embedder {want.name!r} (dim {want.dim}, "
                f"fingerprint {want.fingerprint}), but the embedder given is {embedder.name!r} (dim {embedder.dim},"
                f" fingerprint {embedder.fingerprint}): query it with --clip {want.spec!r} (or leave --clip out),"
                f" or rebuild it with `vqa kb build --clip {embedder.spec} --force`")

    def extend(self, entries: list[KbEntry], text_vectors: np.ndarray, image_vectors: np.ndarray | None = None,
               with_image: list[int] | None = None) -> None:
        """Append entries (ids must be new), their text vectors, and image vectors for entries ``with_image``
        (positions in ``entries``)."""
        clash = [e.id for e in entries if e.id in self.ids]
        if clash or len({e.id for e in entries}) != len(entries):
            raise DataError(f"ids must be unique in a knowledge base; {clash[:5] or 'the new entries'} repeat")
        if len(text_vectors) != len(entries):
            raise ValueError(f"expected {len(entries)} text vectors, found {len(text_vectors)}")
        base = len(self.entries)
        self.entries.extend(entries)
        self._add("text", text_vectors)
        if image_vectors is not None and len(image_vectors):
            rows = base + np.asarray(with_image, dtype=np.int64)
            if len(rows) != len(image_vectors):
                raise ValueError(f"expected {len(rows)} image vectors, found {len(image_vectors)}")
            self._add("image", image_vectors)
            self.image_rows = np.concatenate([self.image_rows, rows])
        self._reindex()

    def _add(self, name: str, new: np.ndarray) -> None:
        new = np.ascontiguousarray(new, dtype=np.float32)
        if new.shape[1] != self.embedder.dim:
            raise ValueError(f"expected {self.embedder.dim}-d vectors, found {new.shape[1]}-d")
        old, info = self.indexes.get(name), self.manifest.indexes.get(name)
        total = (old.ntotal if old is not None else 0) + len(new)
        kind = choose_index_type(total, self.manifest.index_choice)
        stale = (old is None or kind != info.type
                 or (kind == "ivf" and total > IVF_RETRAIN_GROWTH * info.params["trained_on"]))
        if stale:
            vectors = np.concatenate([all_vectors(old), new]) if old is not None else new
            index, params = build_index(vectors, kind)
            self.indexes[name], self.manifest.indexes[name] = index, IndexInfo(type=kind, params=params)
        else:
            old.add(new)
        self.manifest.indexes[name].count = total

    # ------------------------------------------------------------ search

    def search(self, embedder: Any, *, image=None, text: str | None = None, k: int = 3, guard: Guard | None = None,
               image_weight: float | None = None) -> tuple[list[Hit], list[tuple[str, float]]]:
        """Embed the query (an image needs an image-reading embedder and image vectors in the KB), then search."""
        self.check_embedder(embedder)
        if image is not None and "image" not in self.indexes:
            if not text:
                raise ConfigError(f"knowledge base {self.root} has no image vectors (built with "
                                  f"{self.embedder.name!r}): search it by text, or build one with a CLIP model")
            image = None  # a text-only KB answers on the question alone
        image_vec = embedder.embed_images([image])[0] if image is not None else None
        text_vec = embedder.embed_texts([text], role="query")[0] if text else None
        return self.search_vectors(image_vec, text_vec, k, guard=guard, image_weight=image_weight)

    def search_vectors(self, image_vec: np.ndarray | None, text_vec: np.ndarray | None, k: int, *,
                       guard: Guard | None = None, image_weight: float | None = None,
                       ) -> tuple[list[Hit], list[tuple[str, float]]]:
        """The ``k`` best entries the guard allows, and the (id, score) of guarded entries that would have made it."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, found {k}")
        guard = guard or Guard(mode="off")
        w = self.image_weight if image_weight is None else check_weight(image_weight)
        use_image = image_vec is not None and "image" in self.indexes
        if not use_image and text_vec is None:
            raise ConfigError("a search needs a text, or an image when the knowledge base has image vectors")
        n = len(self.entries)
        fetch = min(n, max(4 * k, k + 16))
        while True:
            found: set[int] = set()
            if text_vec is not None:
                found.update(_search(self.indexes["text"], text_vec, fetch))
            if use_image:
                found.update(self.image_rows[_search(self.indexes["image"], image_vec, fetch)].tolist())
            hits = self._score(sorted(found), image_vec if use_image else None, text_vec, w, guard)
            kept = [h for h in hits if not guard.excludes(h.entry)]
            if len(kept) >= k or fetch >= n:
                break
            fetch = min(n, fetch * 4)
        kept.sort(key=lambda h: (-h.score, h.entry.id))
        kept = kept[:k]
        floor = kept[-1].score if len(kept) == k else -math.inf
        excluded = sorted(((h.entry.id, round(h.score, 6)) for h in hits
                           if guard.excludes(h.entry) and h.score >= floor), key=lambda t: (-t[1], t[0]))
        return kept, excluded

    def _score(self, rows: list[int], image_vec, text_vec, w: float, guard: Guard) -> list[Hit]:
        if not rows:
            return []
        idx = np.asarray(rows, dtype=np.int64)
        text = self.indexes["text"].reconstruct_batch(idx) @ text_vec if text_vec is not None else None
        image = np.full(len(idx), np.nan, dtype=np.float32)
        if image_vec is not None:
            pos = self._image_pos[idx]
            has = pos >= 0
            if has.any():
                image[has] = self.indexes["image"].reconstruct_batch(pos[has]) @ image_vec
        hits = []
        for j, row in enumerate(rows):
            parts = [(w, float(image[j]))] if not np.isnan(image[j]) else []
            if text is not None:
                parts.append((1.0 - w, float(text[j])))
            if not parts:
                continue
            total = sum(p for p, _ in parts)
            score = (sum(p * s for p, s in parts) / total) if total > 0 else sum(s for _, s in parts) / len(parts)
            e = self.entries[row]
            hits.append(Hit(e, score, None if np.isnan(image[j]) else float(image[j]),
                            None if text is None else float(text[j]),
                            same_image=guard.image_sha256 is not None and e.image_sha256 == guard.image_sha256))
        return hits


def _search(index: Any, vec: np.ndarray, k: int) -> list[int]:
    _, ids = index.search(np.ascontiguousarray(vec, dtype=np.float32).reshape(1, -1), min(k, index.ntotal))
    return [int(i) for i in ids[0] if i >= 0]


def check_weight(w: float) -> float:
    if not 0.0 <= float(w) <= 1.0:
        raise ConfigError(f"image_weight must be in 0..1 (the image share of the score), found {w}")
    return float(w)


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a.astype(np.int64))
    return buf.getvalue()


def embedder_for(kb: KnowledgeBase, spec: str | None = None, device: str = "auto") -> Embedder:
    """The KB's own embedder (or ``spec``, which must be the same model), loaded and checked."""
    want = kb.embedder
    try:
        embedder = load_embedder(spec or want.spec, device=device)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc}; knowledge base {kb.root} was built with {want.name!r}: if that model "
                             "moved, pass its new location with --clip PATH") from exc
    kb.check_embedder(embedder)
    return embedder
