"""The learned router as plain arrays: one logistic regression per tool over [e5 question embedding, option
features, neighbour votes], with its thresholds and the embedded bank questions (the neighbours, and the
explanations). numpy only (no scikit-learn at run time); saved as ``.npz`` without pickles (``data/router.npz``,
written by ``vqa dev train-router``).

Neighbour votes: per tool, the share of the ``k`` most similar bank questions that need it, weighted by
``exp((cos - best cos) / tau)`` — a close paraphrase of a bank question leans to its tools.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from agent.core.errors import ModelLoadError

PROBE_TEXT = "query fingerprint: 사진 속 간판에 적힌 글자는? What does the sign say?"
KNN_K, KNN_TAU = 5, 0.05
KNN_PREFIX = "knn_"
_ARRAYS = ("tools", "feature_names", "mean", "scale", "coef", "intercept", "thresholds", "bank_vectors",
           "bank_questions", "bank_tools", "probe", "meta")


def default_model() -> Path:
    return Path(str(files("agent.routing").joinpath("data/router.npz")))


def knn_votes(vecs: np.ndarray, bank: np.ndarray, bank_tools: np.ndarray, k: int = KNN_K, tau: float = KNN_TAU,
              exclude: np.ndarray | None = None) -> np.ndarray:
    """(n, T) neighbour votes of ``vecs`` (n, E) over ``bank`` (N, E); ``exclude`` (n, N) masks pairs out (in
    training, a question's own group)."""
    sims = np.atleast_2d(vecs) @ bank.T
    if exclude is not None:
        sims = np.where(exclude, -np.inf, sims)
    k = min(k, bank.shape[0])
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(sims, idx, axis=1)
    w = np.exp((top - top[:, :1]) / tau)
    return (w[:, :, None] * bank_tools[idx].astype(np.float64)).sum(axis=1) / w.sum(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class Neighbour:
    question: str
    tools: list[str]
    cos: float

    def as_dict(self) -> dict:
        return {"question": self.question, "tools": self.tools, "cos": round(self.cos, 3)}


@dataclass(frozen=True, eq=False)
class RouterModel:
    """``scores(vec, feats)`` -> one probability per tool; ``decide`` compares them with ``thresholds``."""

    tools: tuple[str, ...]
    feature_names: tuple[str, ...]  # after the embedding's dimensions: option features, then knn_<tool> votes
    mean: np.ndarray  # (D,) standardisation of [embedding, features]
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (T, D)
    intercept: np.ndarray  # (T,)
    thresholds: np.ndarray  # (T,)
    bank_vectors: np.ndarray  # (N, E) unit rows (float16 in the file): the questions it was trained on
    bank_questions: np.ndarray  # (N,) str
    bank_tools: np.ndarray  # (N, T) bool
    probe: np.ndarray  # (E,) the embedding of PROBE_TEXT when it was trained (detects a changed embedder)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, d = self.coef.shape
        e = self.probe.shape[0]
        expected = {"tools": (t,), "intercept": (t,), "thresholds": (t,), "mean": (d,), "scale": (d,),
                    "bank_vectors": (self.bank_questions.shape[0], e), "bank_tools": (self.bank_questions.shape[0], t)}
        for name, shape in expected.items():
            found = np.shape(getattr(self, name))
            if found != shape:
                raise ModelLoadError(f"router model: expected {name} of shape {shape}, found {found}; "
                                     "retrain it with `vqa dev train-router`")
        if d != e + len(self.feature_names):
            raise ModelLoadError(f"router model: expected {e} embedding dimensions + {len(self.feature_names)} "
                                 f"features = {e + len(self.feature_names)} weights per tool, found {d}")

    @property
    def dim(self) -> int:
        return int(self.probe.shape[0])

    @property
    def option_names(self) -> tuple[str, ...]:
        """The option features ``scores`` takes (the neighbour votes it computes itself)."""
        return tuple(n for n in self.feature_names if not n.startswith(KNN_PREFIX))

    def features(self, vec: np.ndarray, option_feats: np.ndarray) -> np.ndarray:
        """The non-embedding inputs in ``feature_names`` order: the option features, then the neighbour votes."""
        extra = []
        if len(self.feature_names) > len(self.option_names):
            knn = self.meta.get("knn", {})
            extra = knn_votes(np.asarray(vec, np.float32)[None], self.bank_vectors, self.bank_tools,
                              knn.get("k", KNN_K), knn.get("tau", KNN_TAU))[0]
        return np.concatenate([np.asarray(option_feats, np.float64), extra])

    def scores(self, vec: np.ndarray, option_feats: np.ndarray) -> np.ndarray:
        """Probability per tool (in ``tools`` order) for one embedded question and its option features."""
        return self.predict(vec, self.features(vec, option_feats))

    def predict(self, vec: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Probability per tool from the embedding and the inputs ``features`` returned."""
        x = np.concatenate([np.asarray(vec, np.float64), np.asarray(inputs, np.float64)])
        return 1.0 / (1.0 + np.exp(-(self.coef @ ((x - self.mean) / self.scale) + self.intercept)))

    def contributions(self, feats: np.ndarray) -> np.ndarray:
        """(T, F): each non-embedding input's additive share of each tool's logit (weight x standardised value);
        ``feats`` as ``features`` returns them."""
        e = self.dim
        x = (np.asarray(feats, np.float64) - self.mean[e:]) / self.scale[e:]
        return self.coef[:, e:] * x

    def nearest(self, vec: np.ndarray, k: int = 3) -> list[Neighbour]:
        sims = self.bank_vectors @ np.asarray(vec, np.float32)
        order = np.argsort(-sims, kind="stable")[:k]
        return [Neighbour(str(self.bank_questions[i]), [t for t, on in zip(self.tools, self.bank_tools[i]) if on],
                          float(sims[i])) for i in order]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in _ARRAYS if name != "meta"}
        arrays["bank_vectors"] = self.bank_vectors.astype(np.float16)
        arrays["tools"] = np.array(self.tools)
        arrays["feature_names"] = np.array(self.feature_names)
        arrays["meta"] = np.array(json.dumps(self.meta, ensure_ascii=False, sort_keys=True))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | None = None) -> RouterModel:
        path = Path(path) if path else default_model()
        if not path.is_file():
            raise ModelLoadError(f"router model {path} does not exist; train it with `vqa dev train-router`")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [a for a in _ARRAYS if a not in z.files]
                if missing:
                    raise ModelLoadError(f"router model {path}: expected arrays {list(_ARRAYS)}, missing {missing}; "
                                         "retrain it with `vqa dev train-router`")
                a = {name: z[name] for name in _ARRAYS}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(f"router model {path} is not a readable .npz ({exc}); "
                                 "retrain it with `vqa dev train-router`") from None
        return cls(tools=tuple(map(str, a["tools"])), feature_names=tuple(map(str, a["feature_names"])),
                   mean=a["mean"], scale=a["scale"], coef=a["coef"], intercept=a["intercept"],
                   thresholds=a["thresholds"], bank_vectors=a["bank_vectors"].astype(np.float32),
                   bank_questions=a["bank_questions"],
                   bank_tools=a["bank_tools"].astype(bool), probe=a["probe"], meta=json.loads(str(a["meta"])))
