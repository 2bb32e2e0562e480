"""A PatchCore-style memory bank (Roth et al., 2022): normal patch features, subsampled by a greedy coreset; an
image's anomaly map is each patch's distance to its nearest bank feature, its score the map's maximum.

Pure numpy on top of a backbone (``tools.anomaly.features``); no model is imported here.

- ``fit(images, backbone)``: features of every normal image, standardised per channel; the bank is a greedy
  k-center coreset (``coreset`` of the patches, at least ``min_bank``), as PatchCore subsamples. The threshold
  comes from the normal images themselves: ``folds``-fold, each fold is scored against a bank built without it,
  and the threshold is the mean plus ``sigmas`` standard deviations of those held-out normal scores.
- ``AnomalyModel.score(image)``: ``(score, map)``; ``save``/``load`` one ``.npz`` file (arrays plus a JSON header).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from agent.core.errors import ConfigError
from tools.anomaly.features import Backbone, backbone
from tools.imports import lazy

cv2 = lazy("cv2")

FORMAT = "vqa-anomaly-patchcore/1"


def nearest_distance(x: np.ndarray, bank: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distance of each row of ``x`` to its nearest row of ``bank``."""
    bb = (bank * bank).sum(1)
    out = np.empty(len(x), dtype=np.float32)
    for i in range(0, len(x), chunk):
        a = x[i:i + chunk]
        d2 = (a * a).sum(1)[:, None] + bb[None, :] - 2 * a @ bank.T
        out[i:i + chunk] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


def greedy_coreset(x: np.ndarray, n: int, seed: int = 0, dims: int = 128) -> np.ndarray:
    """Indices of ``n`` rows chosen by greedy k-center (each pick is the row farthest from those picked), on a
    random projection to ``dims`` dimensions when the features are wider, as PatchCore does."""
    if n >= len(x):
        return np.arange(len(x))
    rng = np.random.default_rng(seed)
    z = x if x.shape[1] <= dims else x @ (rng.standard_normal((x.shape[1], dims)) / np.sqrt(dims)).astype(np.float32)
    picked = [int(rng.integers(len(z)))]
    dist = np.linalg.norm(z - z[picked[0]], axis=1)
    for _ in range(n - 1):
        i = int(dist.argmax())
        picked.append(i)
        dist = np.minimum(dist, np.linalg.norm(z - z[i], axis=1))
    return np.array(picked)


@dataclass
class AnomalyModel:
    """What ``vqa anomaly fit`` writes: the bank, the standardisation, the threshold and how it was made."""

    backbone: str
    size: int
    mean: np.ndarray
    std: np.ndarray
    bank: np.ndarray
    threshold: float
    normal_scores: list[float] = field(default_factory=list)  # the held-out normal scores the threshold is from
    n_fit: int = 0
    smooth: float = 1.5  # sigma, in patches, of the Gaussian applied to the map before its maximum
    _backbone: Backbone | None = field(default=None, repr=False)

    def features(self, image: Image.Image) -> np.ndarray:
        if self._backbone is None:
            self._backbone = backbone(self.backbone, self.size)
        return self._backbone.extract(image)

    def score_features(self, feats: np.ndarray) -> tuple[float, np.ndarray]:
        h, w, d = feats.shape
        z = ((feats.reshape(-1, d) - self.mean) / self.std).astype(np.float32)
        amap = nearest_distance(z, self.bank).reshape(h, w)
        if self.smooth > 0:
            amap = cv2.GaussianBlur(amap, (0, 0), self.smooth)
        return float(amap.max()), amap

    def score(self, image: Image.Image) -> tuple[float, np.ndarray]:
        """The image's anomaly score and its map (patch grid; higher is more anomalous)."""
        return self.score_features(self.features(image))

    def save(self, path: Path) -> None:
        header = {"format": FORMAT, "backbone": self.backbone, "size": self.size, "threshold": self.threshold,
                  "normal_scores": self.normal_scores, "n_fit": self.n_fit, "smooth": self.smooth}
        buf = io.BytesIO()
        np.savez_compressed(buf, mean=self.mean, std=self.std, bank=self.bank, header=np.array(json.dumps(header)))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> AnomalyModel:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"anomaly model {path} does not exist; build one with `vqa anomaly fit NORMAL_DIR "
                              f"--out {path}`")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                arrays = {k: z[k] for k in ("mean", "std", "bank")}
        except (ValueError, KeyError, OSError) as exc:
            raise ConfigError(f"{path} is not an anomaly model written by `vqa anomaly fit` ({exc})") from None
        if header.get("format") != FORMAT:
            raise ConfigError(f"{path}: expected format {FORMAT}, found {header.get('format')!r}; refit it")
        return cls(backbone=header["backbone"], size=header["size"], threshold=header["threshold"],
                   normal_scores=header["normal_scores"], n_fit=header["n_fit"], smooth=header["smooth"], **arrays)


def _bank(feats: list[np.ndarray], mean: np.ndarray, std: np.ndarray, coreset: float, min_bank: int,
          seed: int) -> np.ndarray:
    d = feats[0].shape[-1]
    z = ((np.concatenate([f.reshape(-1, d) for f in feats]) - mean) / std).astype(np.float32)
    n = min(len(z), max(min_bank, int(round(coreset * len(z)))))
    return z[greedy_coreset(z, n, seed)]


def fit(images: Sequence[Image.Image], spec: str = "filters", *, size: int = 256, coreset: float = 0.1,
        min_bank: int = 1000, folds: int = 5, sigmas: float = 3.0, smooth: float = 1.5, seed: int = 0,
        on_image: Callable[[int], None] | None = None) -> AnomalyModel:
    """A model from normal images (at least ``folds`` of them, for the threshold)."""
    if len(images) < max(folds, 2):
        raise ConfigError(f"anomaly fit needs at least {max(folds, 2)} normal images, found {len(images)}")
    bb = backbone(spec, size)
    feats = []
    for i, im in enumerate(images):
        feats.append(bb.extract(im))
        if on_image:
            on_image(i)
    d = feats[0].shape[-1]
    flat = np.concatenate([f.reshape(-1, d) for f in feats])
    mean, std = flat.mean(0), flat.std(0) + 1e-6
    held: list[float] = []
    order = np.random.default_rng(seed).permutation(len(feats))
    for k in range(folds):
        out_idx = set(order[k::folds].tolist())
        bank = _bank([f for i, f in enumerate(feats) if i not in out_idx], mean, std, coreset, min_bank, seed)
        probe = AnomalyModel(spec, size, mean, std, bank, threshold=0.0, smooth=smooth, _backbone=bb)
        held += [probe.score_features(feats[i])[0] for i in sorted(out_idx)]
    scores = np.array(held)
    threshold = float(scores.mean() + sigmas * scores.std())
    return AnomalyModel(spec, size, mean, std, _bank(feats, mean, std, coreset, min_bank, seed), threshold,
                        normal_scores=[round(float(s), 6) for s in held], n_fit=len(images), smooth=smooth,
                        _backbone=bb)
