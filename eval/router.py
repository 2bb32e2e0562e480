"""How well the router picks tools, on the held-out ``test`` set (``agent/routing/data/heldout_v2.jsonl``) or a
split of the bank (``val``, ``train``): ``vqa dev eval-router [--split test] [--bank PATH] [--model PATH] [--json]``.

It reports exact-set accuracy (the routed set equals the gold set), per-tool precision / recall / F1 and micro-F1, each
with a 95% interval — Wilson for the proportions (accuracy, precision, recall), a percentile bootstrap over
questions (scipy, 2,000 resamples, fixed seed) for the F1 scores — and the routing time per question after the
model is loaded (median and p95; the first call, which loads e5 and the model, is timed apart).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.core.errors import DataError
from agent.routing.bank import SPLITS, TOOL_NAMES, BankItem, default_for, load_bank, split
from eval.metrics import wilson_interval

N_BOOT = 2000


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, axis: int = -1) -> np.ndarray:
    tp, fp, fn = (np.sum(a, axis=axis) for a in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def _f1_interval(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, seed: int) -> tuple[float, float]:
    """Percentile bootstrap over questions of F1 from per-question counts."""
    from scipy.stats import bootstrap

    if len(tp) < 2:
        return 0.0, 1.0
    res = bootstrap((tp, fp, fn), _f1, paired=True, vectorized=True, n_resamples=N_BOOT, method="percentile",
                    confidence_level=0.95, random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _ratio(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"value": k / n if n else 0.0, "ci": [lo, hi], "k": k, "n": n}


def multilabel_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                       tools: Sequence[str] = TOOL_NAMES, seed: int = 0) -> dict:
    """Exact-set accuracy, per-tool precision/recall/F1 and micro-F1 (over ``tools``), each with a 95% interval."""
    if len(gold) != len(pred):
        raise ValueError(f"expected one prediction per question, found {len(pred)} predictions for {len(gold)}")
    g = np.array([[t in s for t in tools] for s in gold], dtype=bool).reshape(len(gold), len(tools))
    p = np.array([[t in s for t in tools] for s in pred], dtype=bool).reshape(len(pred), len(tools))
    tp, fp, fn = (g & p).astype(int), (~g & p).astype(int), (g & ~p).astype(int)
    out: dict = {"n": len(gold), "exact": _ratio(int((g == p).all(axis=1).sum()), len(gold)), "per_tool": {}}
    for j, tool in enumerate(tools):
        a, b, c = int(tp[:, j].sum()), int(fp[:, j].sum()), int(fn[:, j].sum())
        out["per_tool"][tool] = {"support": a + c, "predicted": a + b, "precision": _ratio(a, a + b),
                                 "recall": _ratio(a, a + c), "f1": {"value": float(_f1(tp[:, j], fp[:, j], fn[:, j])),
                                 "ci": list(_f1_interval(tp[:, j], fp[:, j], fn[:, j], seed))}}
    a, b, c = (m.sum(axis=1) for m in (tp, fp, fn))
    out["micro"] = {"precision": _ratio(int(a.sum()), int(a.sum() + b.sum())),
                    "recall": _ratio(int(a.sum()), int(a.sum() + c.sum())),
                    "f1": {"value": float(_f1(a, b, c)), "ci": list(_f1_interval(a, b, c, seed))}}
    return out


def evaluate_router(router, items: list[BankItem]) -> dict:
    """Route every item (timing each call) and score the routes against the bank's labels."""
    t0 = time.perf_counter()
    router.route("warm-up: 이 사진은 무엇인가요?", ["a", "b"])  # loads e5 and the model; timed apart
    load_s = time.perf_counter() - t0
    preds, ms = [], []
    for it in items:
        t = time.perf_counter()
        preds.append(router.route(it.question, it.options).tools)
        ms.append(1000 * (time.perf_counter() - t))
    res = multilabel_metrics([it.tools for it in items], preds)
    res["timing"] = {"first_call_s": round(load_s, 3), "median_ms": round(float(np.median(ms)), 2),
                     "p95_ms": round(float(np.percentile(ms, 95)), 2), "mean_ms": round(float(np.mean(ms)), 2)}
    res["errors"] = [{"id": it.id, "question": it.question, "gold": it.tools, "routed": p}
                     for it, p in zip(items, preds) if set(p) != set(it.tools)]
    return res


def _pct(r: dict) -> str:
    return f"{r['value']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"


def format_report(res: dict, title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"questions: {res['n']}   exact-set accuracy: {_pct(res['exact'])}   "
                 f"micro-F1: {_pct(res['micro']['f1'])}")
    lines.append(f"{'tool':<9} {'support':>7} {'precision [95% CI]':>24} {'recall [95% CI]':>24} {'F1 [95% CI]':>24}")
    for tool, m in res["per_tool"].items():
        lines.append(f"{tool:<9} {m['support']:>7} {_pct(m['precision']):>24} {_pct(m['recall']):>24} "
                     f"{_pct(m['f1']):>24}")
    if "timing" in res:
        t = res["timing"]
        lines.append(f"routing time after load: median {t['median_ms']} ms, p95 {t['p95_ms']} ms "
                     f"(first call, loading e5 and the model: {t['first_call_s']} s)")
    return "\n".join(lines)


def run(split_name: str = "test", bank: Path | None = None, model: Path | None = None) -> dict:
    from agent.router import Router

    items = split(load_bank(bank or default_for(split_name)), split_name)
    if not items:
        raise DataError(f"the bank has no questions in split {split_name!r}; expected some in one of {SPLITS}")
    return {"split": split_name, **evaluate_router(Router(model_path=model), items)}


if __name__ == "__main__":  # the old spelling: one line naming the new one
    sys.exit("python -m eval.router is now: vqa dev eval-router [--split test] [--bank PATH] [--model PATH] [--json]")
