"""``vqa bench mc``: logit scoring vs generation, and the graph's own overhead, measured in one run, fairly.

Every arm goes through ``run_batch`` exactly as ``vqa batch`` does (dynamic batching, results log, trace,
submission) into a fresh run folder, and the arms take turns: each repeat runs every arm once, in an order
rotated by one per repeat, so load from elsewhere on the machine lands on all of them alike; each is warmed up
once first (not counted). Each arm reports the median and the minimum over the repeats, per question.

- ``logits``: the model scores the option letters (one forward pass per batch); no tools.
- ``generate``: the same questions answered by greedy generation held to exactly ``new_tokens`` new tokens
  (``min_new_tokens`` = ``max_new_tokens``), so a random tiny model cannot stop after one token and the two
  arms compare a fixed answer length; no tools.
- ``overhead``: the model-free evidence reasoner with routing: loading and hashing the image, routing (rules,
  the learned model; the question's e5 embedding is already in the process, as for a question text seen before),
  LangGraph, the results log and the trace. Routed tools are not run (``RouteOnly``): their time is theirs.
- ``overhead_fresh``: the same with question texts new to the process, so routing's e5 embeds them (a chunk per
  call, as ``vqa batch`` does); ``e5_ms_per_q`` is its median minus ``overhead``'s.
- ``overhead_nodes_ms_per_q``: of ``overhead``, the mean wall time a question spends inside each graph node.
  ``batch_size`` questions run at once on threads, so these overlap (together they exceed the wall time per
  question): they show where a question waits, e.g. ``reason`` for its batch to fill, ``load_image`` for a core.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Callable

from PIL import Image

from agent.core.schema import Question
from agent.reasoners.base import ReasonRequest
from agent.reasoners.evidence import EvidenceReasoner
from agent.reasoners.qwen import QwenBackend
from agent.runner import ResultsLog, run_batch
from agent.services import Services
from eval.bench.overhead import RouteOnly, make_questions


def _timed(services: Services, qs: list[Question], run_dir: Path, batch_size: int,
           tools: list[str] | None) -> tuple[float, dict[str, float]]:
    """Seconds per question of one ``run_batch``, and the mean seconds per question inside each node."""
    t0 = time.perf_counter()
    s = run_batch(qs, services, run_dir, batch_size=batch_size, forced_tools=tools)
    seconds = (time.perf_counter() - t0) / len(qs)
    if s.failed:
        raise RuntimeError(f"{s.failed} benchmark questions failed; see {run_dir / 'failed.csv'}")
    nodes: dict[str, float] = {}
    for a in ResultsLog(run_dir / "results.jsonl").load().values():
        for node, sec in a.timings.items():
            nodes[node] = nodes.get(node, 0.0) + sec / len(qs)
    return seconds, nodes


def prompt_tokens(backend: QwenBackend, requests: list[ReasonRequest]) -> dict[str, dict[str, float]]:
    """Mean text and image tokens per question by ``route/language`` (route: the tools whose evidence is in the
    prompt, ``none`` without; language: Korean when the question has Hangul, else English)."""
    image_id = backend.loaded[0].config.image_token_id
    groups: dict[str, list[tuple[int, int]]] = {}
    for req in requests:
        ids = backend.encode([req])[0]["input_ids"][0]
        image = int((ids == image_id).sum())
        route = "+".join(sorted({r.tool for r in req.results})) or "none"
        lang = "ko" if any("\uac00" <= c <= "\ud7a3" for c in req.question.text) else "en"
        groups.setdefault(f"{route}/{lang}", []).append((len(ids) - image, image))
    return {k: {"text": round(statistics.mean(t for t, _ in v), 1), "image": round(statistics.mean(i for _, i in v), 1),
                "questions": len(v)} for k, v in sorted(groups.items())}


def run_bench(model: str, n: int = 16, batch_size: int = 8, device: str = "auto", repeats: int = 5,
              new_tokens: int = 8) -> dict:
    """Every arm's median and minimum per question, the overhead per node and the prompt's tokens."""
    with tempfile.TemporaryDirectory(prefix="vqa-bench-") as tmp:
        root = Path(tmp)
        qs = make_questions(root, n)
        logits = QwenBackend(model, device=device)
        with closing(logits):
            logits.load()
            generate = logits.with_decoding(generate=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
            model_services = {"logits": Services(reasoner=logits), "generate": Services(reasoner=generate)}
            overhead = Services(reasoner=EvidenceReasoner(), router=RouteOnly())
            counter = itertools.count()

            def arm(name: str) -> Callable[[Path], tuple[float, dict[str, float]]]:
                if name in model_services:
                    return lambda d: _timed(model_services[name], qs, d, batch_size, [])
                if name == "overhead":
                    return lambda d: _timed(overhead, qs, d, batch_size, None)
                return lambda d: _timed(overhead, make_questions(root, n, tag=f"f{next(counter)}"), d, batch_size,
                                        None)

            names = ["logits", "generate", "overhead", "overhead_fresh"]
            for name in names:  # warm-up, not counted (the fresh arm's texts are new again when timed)
                arm(name)(root / f"warm-{name}")
            times: dict[str, list[float]] = {name: [] for name in names}
            nodes: list[dict[str, float]] = []
            for r in range(repeats):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    sec, per_node = arm(name)(root / f"{name}-{r}")
                    times[name].append(sec)
                    if name == "overhead":
                        nodes.append(per_node)
            device_name = str(logits.device)
            requests = []
            for q in qs:
                with Image.open(q.image) as im:
                    requests.append(ReasonRequest(question=q, image=im.convert("RGB")))
            tokens = prompt_tokens(logits, requests)
    out: dict = {"model": model, "device": device_name, "questions": n, "batch_size": batch_size,
                 "repeats": repeats, "new_tokens": new_tokens}
    for name, unit, scale in (("logits", "s", 1), ("generate", "s", 1), ("overhead", "ms", 1000),
                              ("overhead_fresh", "ms", 1000)):
        out[f"{name}_{unit}_per_q"] = round(scale * statistics.median(times[name]), 4)
        out[f"{name}_{unit}_per_q_min"] = round(scale * min(times[name]), 4)
    out["e5_ms_per_q"] = round(out["overhead_fresh_ms_per_q"] - out["overhead_ms_per_q"], 3)
    out["overhead_nodes_ms_per_q"] = {k: round(1000 * statistics.median(d.get(k, 0.0) for d in nodes), 3)
                                      for k in sorted({k for d in nodes for k in d})}
    out["prompt_tokens_per_q"] = tokens
    return out
