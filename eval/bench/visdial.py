"""``vqa bench visdial``: the cost of ranking candidates with a shared prefix, against scoring the prefix
alone and against one full forward pass per candidate.

The request is a VisDial-like round: a photo, a caption, nine earlier rounds and a question, with ``candidates``
answers (the sign set's answer pool). Arms, timed in turns ``repeats`` times (median and minimum reported):

- ``prefix_s``: one forward pass over the prefix (the model inputs already built), keeping its cache;
- ``shared_s``: ``shared_prefix_scores``: that pass plus the candidates in batches of ``chunk`` over its cache;
- ``independent_s``: ``independent_scores``: one full pass (prefix + candidate) per candidate.

``shared_over_prefix`` is the target's ratio (ranking costs at most 3x scoring the prefix alone);
``independent_over_shared`` is what sharing saves. The scores of both ranking arms are compared too
(``max_abs_diff``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from PIL import Image

from agent.core.schema import Question
from agent.reasoners.base import ReasonRequest
from agent.visdial.scorers import RankContext
from agent.visdial.signs import COMMON, SIGNS


def bench_request(side: int = 448) -> tuple[ReasonRequest, RankContext]:
    img = Image.new("RGB", (side, side * 3 // 4), (120, 140, 160))
    history = [(f"what is in the picture number {i}?", f"a sign with some words {i}") for i in range(9)]
    q = Question(id="bench", text="what does the sign say?", options={})
    answers = [t.lower() for pair in SIGNS for t in pair] + COMMON
    return (ReasonRequest(question=q, image=img, history=history),
            RankContext(candidates=tuple(answers), caption="a street sign on a pole in a city"))


def run_rank_bench(model: str, *, candidates: int = 100, repeats: int = 3, chunk: int = 50, device: str = "auto",
                   max_pixels: int | None = 200_704) -> dict[str, Any]:
    import torch

    from agent.reasoners.qwen import QwenBackend
    from agent.visdial.qwen import QwenScorer, independent_scores, shared_prefix_scores

    backend = QwenBackend(model, device=device, max_pixels=max_pixels)
    backend.load()
    req, ctx = bench_request()
    pool = list(ctx.candidates)
    ctx = RankContext(candidates=tuple((pool * (candidates // len(pool) + 1))[:candidates]), caption=ctx.caption)
    scorer = QwenScorer(backend, chunk=chunk)
    inputs, ids, _ = scorer.encode(req, ctx)
    m = backend._model
    inputs = inputs.to(m.device)

    def sync() -> None:
        if m.device.type == "cuda":
            torch.cuda.synchronize()

    def prefix() -> None:
        with torch.inference_mode():
            m(**inputs, use_cache=True, logits_to_keep=1)

    arms = {"prefix_s": prefix, "shared_s": lambda: shared_prefix_scores(m, inputs, ids, chunk=chunk),
            "independent_s": lambda: independent_scores(m, inputs, ids)}
    for fn in arms.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(repeats):
        for k, fn in arms.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    shared, alone = shared_prefix_scores(m, inputs, ids, chunk=chunk), independent_scores(m, inputs, ids)
    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict[str, Any] = {"model": model, "device": str(m.device), "candidates": len(ids), "chunk": chunk,
                           "prefix_tokens": int(inputs["input_ids"].shape[1]),
                           "candidate_tokens_mean": round(sum(map(len, ids)) / len(ids), 2), "repeats": repeats}
    for k in arms:
        out[k] = round(med[k], 4)
        out[k.replace("_s", "_min_s")] = round(min(times[k]), 4)
    out["shared_over_prefix"] = round(med["shared_s"] / med["prefix_s"], 2)
    out["independent_over_shared"] = round(med["independent_s"] / med["shared_s"], 2)
    out["max_abs_diff"] = float(max(abs(a - b) for a, b in zip(shared, alone)))
    backend.close()
    return out
