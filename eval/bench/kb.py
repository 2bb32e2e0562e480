"""Benchmark the knowledge base's index types on synthetic vectors: ``vqa bench kb`` prints JSON.

For each size: build seconds, query latency (a batch of queries, per query; and one query at a time, as the
``retrieve`` tool asks) for the exact ``flat`` index and the approximate ``ivf`` and ``hnsw`` indexes built
exactly as ``tools.retrieve.index.build_index`` builds them, and recall@10 of each approximate index against flat,
with a sweep of its search-time knob (IVF ``nprobe``, HNSW ``efSearch``).

The vectors lie near a 64-dimensional subspace with a falling spectrum, and the queries are perturbed database
vectors: real embeddings have a low intrinsic dimension, while uniformly random vectors in 512 dimensions make
every neighbour equally far (a useless worst case), and well-separated Gaussian clusters make IVF look perfect.
"""

from __future__ import annotations

import time

import numpy as np

from tools.retrieve.embedders import normalised
from tools.retrieve.index import FLAT_MAX, HNSW_EF_SEARCH, build_index, choose_index_type


def synthetic(n: int, dim: int, n_queries: int, seed: int, rank: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors near a ``rank``-dimensional subspace (variances falling as 1/i), and queries that are
    database vectors moved within it: nearest neighbours at cosine ~0.94, the 10th at ~0.6."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)
    scale = (np.arange(1, rank + 1) ** -0.5).astype(np.float32)
    z = rng.standard_normal((n, rank), dtype=np.float32) * scale
    x = z @ basis + 0.05 * np.sqrt(rank / dim) * rng.standard_normal((n, dim), dtype=np.float32)
    zq = z[rng.integers(0, n, n_queries)] + 0.3 * scale * rng.standard_normal((n_queries, rank), dtype=np.float32)
    return normalised(x), normalised(zq @ basis)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k ids that the approximate top-k contains."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def timed_search(index, queries: np.ndarray, k: int, singles: int) -> tuple[np.ndarray, dict[str, float]]:
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(singles):
        index.search(queries[i : i + 1], k)
    single = time.perf_counter() - t0
    return ids, {"batch_ms_per_query": round(1e3 * batch / len(queries), 4),
                 "single_query_ms": round(1e3 * single / singles, 4)}


def bench_size(n: int, dim: int, n_queries: int, k: int, singles: int, seed: int) -> dict:
    x, q = synthetic(n, dim, n_queries, seed)
    out: dict = {"n": n, "dim": dim, "queries": n_queries, "auto_picks": choose_index_type(n)}
    truth = None
    for kind in ("flat", "ivf", "hnsw"):
        t0 = time.perf_counter()
        index, params = build_index(x, kind)
        row = {"build_s": round(time.perf_counter() - t0, 3), "params": params}
        ids, lat = timed_search(index, q, k, singles)
        row.update(lat)
        if kind == "flat":
            truth = ids
        else:
            row[f"recall@{k}"] = round(recall_at(ids, truth), 4)
            knob, values = ("nprobe", [16, 32, 64, 128, 256]) if kind == "ivf" else ("ef_search", [32, 64, 128, 256])
            row["sweep"] = []
            for v in values:
                if kind == "ivf":
                    index.nprobe = min(v, params["nlist"])
                else:
                    index.hnsw.efSearch = v
                swept, lat = timed_search(index, q, k, singles)
                row["sweep"].append({knob: v, f"recall@{k}": round(recall_at(swept, truth), 4), **lat})
            if kind == "hnsw":
                index.hnsw.efSearch = HNSW_EF_SEARCH
        out[kind] = row
    return out


def run(sizes: list[int], dim: int = 512, queries: int = 200, singles: int = 50, k: int = 10, seed: int = 0) -> dict:
    """``bench_size`` for each database size, with faiss's version and threads."""
    import faiss

    t0 = time.perf_counter()
    results = [bench_size(n, dim, queries, k, singles, seed) for n in sizes]
    return {"faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "flat_max": FLAT_MAX,
            "results": results, "total_s": round(time.perf_counter() - t0, 1)}
