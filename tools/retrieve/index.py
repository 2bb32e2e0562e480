"""FAISS index choice for the knowledge base: which type for how many vectors, built and tuned how.

All indexes use inner product over L2-normalised vectors (cosine similarity). ``flat`` is exact; ``ivf``
(``IndexIVFFlat``: about 4 sqrt(n) k-means lists, a tenth of them probed) and ``hnsw`` (``IndexHNSWFlat``) are
approximate. ``auto`` picks flat up to ``FLAT_MAX`` vectors and IVF above: on 2 CPU cores with 512-d vectors
(``vqa bench kb``), flat costs 27 ms a query batched and ~70 ms alone at 100k, IVF ~4 ms with
recall@10 0.99 after a ~25 s build, and HNSW (efSearch 128) ~3-5 ms with recall@10 0.986 after a 70-140 s
build. All three keep their vectors, so hits are rescored exactly and an index can be rebuilt as another type.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.core.errors import ConfigError

INDEX_CHOICES = ("auto", "flat", "ivf", "hnsw")
FLAT_MAX = 50_000  # auto: exact search up to here (15-35 ms a query at 50k x 512 on 2 cores), IVF above
IVF_RETRAIN_GROWTH = 4
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 40, 128


def choose_index_type(n: int, choice: str = "auto") -> str:
    if choice not in INDEX_CHOICES:
        raise ConfigError(f"index type must be one of {list(INDEX_CHOICES)}, found {choice!r}")
    return choice if choice != "auto" else ("flat" if n <= FLAT_MAX else "ivf")


def ivf_lists(n: int) -> int:
    """About 4 sqrt(n) lists, and at least 39 training vectors per list (FAISS's minimum for k-means)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def ivf_probes(nlist: int) -> int:
    """A tenth of the lists, at least 32: recall@10 about 0.97 at 10k and 0.99 at 100k (eval/bench/kb.py)."""
    return min(nlist, max(32, nlist // 10))


def build_index(vectors: np.ndarray, kind: str) -> tuple[Any, dict[str, Any]]:
    """A new inner-product index of ``kind`` holding ``vectors``; returns it and the parameters to record."""
    import faiss

    n, d = vectors.shape
    if kind == "flat":
        index, params = faiss.IndexFlatIP(d), {}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        params = {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
    elif kind == "ivf":
        nlist = ivf_lists(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        params = {"nlist": nlist, "nprobe": ivf_probes(nlist), "trained_on": n}
    else:
        raise ConfigError(f"index type must be one of {list(INDEX_CHOICES[1:])}, found {kind!r}")
    index.add(vectors)
    configure(index, kind, params)
    return index, params


def configure(index: Any, kind: str, params: dict[str, Any]) -> None:
    """Search parameters (not all are stored in the file) and, for IVF, the map that lets vectors be read back."""
    if kind == "ivf":
        index.nprobe = int(params["nprobe"])
        index.make_direct_map()
    elif kind == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])


def all_vectors(index: Any) -> np.ndarray:
    return index.reconstruct_n(0, index.ntotal) if index.ntotal else np.empty((0, index.d), dtype=np.float32)
