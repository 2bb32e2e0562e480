"""Image-level anomaly evaluation: AUROC with a bootstrap interval, F1 at the model's threshold, per-image scores,
a plot of the two score distributions; arms compared side by side on the same rows.

Arms: ``patchcore`` (this tool's model), ``patch_mean`` (a trivial baseline: the largest deviation of a 32x32 patch's
mean grey level from the normal images' patch means, in their standard deviations) and ``anomalib`` (anomalib's
PatchCore on the same data, where anomalib is installed; otherwise the arm says why it did not run).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from agent.core.errors import ConfigError
from agent.core.fileio import atomic_write

LABELS = ("normal", "anomaly")


def read_labels(path: Path, images: Path) -> list[tuple[str, Path, int]]:
    """``(id, image path, 1 if anomaly)`` per row of an ``id,path,label`` CSV; a bad row is a ``ConfigError``."""
    from agent.core.images import resolve_image_path

    if not Path(path).is_file():
        raise ConfigError(f"labels file {path} does not exist (expected a CSV with id,path,label)")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"id", "path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{path}: expected columns id,path,label, found {reader.fieldnames}; add {sorted(missing)}")
        rows = []
        for n, r in enumerate(reader, start=2):
            label = (r["label"] or "").strip().lower()
            if label not in LABELS:
                raise ConfigError(f"{path} line {n}: label must be normal or anomaly, found {r['label']!r}")
            rows.append((r["id"], resolve_image_path(r["path"], images), int(label == "anomaly")))
    if len({y for *_, y in rows}) < 2:
        raise ConfigError(f"{path}: AUROC needs both normal and anomaly rows, found only {LABELS[rows[0][2]] if rows else 'none'}")
    return rows


def auroc(y: Sequence[int], s: Sequence[float]) -> float:
    """Area under the ROC curve (ties count half): the chance a random anomaly scores above a random normal."""
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    pos, neg = s[y == 1], s[y == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def auroc_ci(y: Sequence[int], s: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval, resampling normals and anomalies separately (stratified)."""
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    vals = []
    for _ in range(n):
        p, q = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        vals.append(((p[:, None] > q[None, :]).sum() + 0.5 * (p[:, None] == q[None, :]).sum()) / (len(p) * len(q)))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def f1_at(y: Sequence[int], s: Sequence[float], threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of "anomaly" when the score is above ``threshold``."""
    y, pred = np.asarray(y), np.asarray(s, dtype=float) > threshold
    tp, fp, fn = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1}


def patch_mean_scorer(normal: Sequence[Image.Image], size: int = 256, patch: int = 32) -> Callable[[Image.Image], float]:
    """The trivial baseline: max |patch mean - normal patch mean| / normal patch-mean std."""
    def means(im: Image.Image) -> np.ndarray:
        g = np.asarray(im.convert("L").resize((size, size)), dtype=np.float64)
        k = size // patch
        return g.reshape(k, patch, k, patch).mean((1, 3))

    ref = np.stack([means(im) for im in normal])
    mu, sd = ref.mean(), ref.std() + 1e-9
    return lambda im: float(np.abs((means(im) - mu) / sd).max())


def arm_metrics(y: Sequence[int], scores: Sequence[float], threshold: float | None) -> dict:
    lo, hi = auroc_ci(y, scores)
    out = {"auroc": auroc(y, scores), "auroc_ci": [lo, hi]}
    if threshold is not None:
        out.update(f1_at(y, scores, threshold))
    return out


def plot(path: Path, y: Sequence[int], scores: Sequence[float], threshold: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, s = np.asarray(y), np.asarray(scores)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(s.min(), s.max(), 25)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label="normal")
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label="anomaly")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def anomalib_arm() -> dict:
    """anomalib's PatchCore where installed; this install says why it cannot run it."""
    try:
        import anomalib  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "anomalib is not installed (pip install anomalib, and its backbone weights)"}
    return {"ran": False, "why": "anomalib is installed, but its PatchCore needs pretrained backbone weights "
                                 "downloaded from the hub, which this run does not do"}


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.json"
    atomic_write(path, json.dumps(metrics, indent=2, ensure_ascii=False))
    return path
