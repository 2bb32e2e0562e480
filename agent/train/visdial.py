"""``vqa train --task visdial``: a LoRA adapter trained on the ground-truth answers of VisDial rounds, in the prompt
the ranker scores (train = infer).

Each round runs through the graph once (``agent.visdial.rank``: the photo is loaded, the router's or the forced
tools run) to collect its evidence. Its training sequence is then exactly what ``QwenScorer`` scores for a
candidate: the prefix of ``QwenScorer.encode`` (the photo, the marked images, ``agent.visdial.prompt`` with the
evidence, the caption, the earlier rounds and the question, in the processor's chat template) followed by the
ground-truth answer as the assistant's reply, to its end-of-turn token. The loss is the reply tokens' negative
log-likelihood alone (the prefix is labelled -100), i.e. minus the summed score the ranker gives that answer.

A plain loop (AdamW, linear warm-up then cosine decay, ``batch_size × grad_accum`` rounds per optimizer step),
seeded; the adapter and its manifest (``agent.core.adapter``: base model fingerprint, the ``visdial`` template version)
go to ``out``; ``train_log.jsonl`` has one line per step.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from agent.config import Settings
from agent.train.options import TrainOptions
from agent.visdial.data import DialogRound

IGNORE = -100


def collect_rounds(rounds: Sequence[DialogRound], services: Any, forced_tools: list[str] | None,
                   on_done: Callable[[int, int], None] | None = None) -> tuple[list[tuple[DialogRound, dict]],
                                                                            list[tuple[str, str]]]:
    """Each round's graph state (tools' results, history) with the model-free scorer: ``(kept, skipped)``."""
    from agent.core.schema import Question
    from agent.graph import build_graph
    from agent.visdial.rank import RankReasoner, RankTask
    from agent.visdial.registry import scorer_for

    graph, scorer = build_graph(), scorer_for(services.reasoner)
    kept, skipped = [], []
    for i, r in enumerate(rounds):
        if r.image is None:
            skipped.append((r.id, f"no photo for image_id {r.image_id} in --images"))
        else:
            task = RankTask.from_round(r)
            ranker = RankReasoner(scorer, {r.id: task})
            q = Question(id=r.id, image=r.image, text=r.question, options={})
            state = graph.invoke({"question": q, "forced_tools": forced_tools, "history": list(r.history),
                                  "results": [], "steps": [], "errors": []},
                                 context=services.replace(reasoner=ranker))
            if state.get("image") is None and state.get("errors"):
                skipped.append((r.id, "; ".join(state["errors"])))
            else:
                kept.append((r, state))
        if on_done:
            on_done(i + 1, len(rounds))
    return kept, skipped


def round_request(r: DialogRound, state: dict):
    """The ``ReasonRequest`` the reason node hands the scorer for this round (photo, results, marked images)."""
    from agent.core.schema import Question
    from agent.graph import marked_images
    from agent.reasoners.base import ReasonRequest

    q = Question(id=r.id, image=r.image, text=r.question, options={})
    results = list(state.get("results", []))
    images, _ = marked_images(results)
    return ReasonRequest(question=q, image=state["image"].image, results=results, images=images, history=list(r.history))


def training_inputs(scorer: Any, r: DialogRound, request: Any) -> dict[str, Any]:
    """Prefix + the ground-truth reply as one sequence, labels on the reply's tokens only (``QwenScorer.encode``:
    the same token ids the ranker scores)."""
    import torch

    from agent.visdial.scorers import RankContext

    inputs, ids, _ = scorer.encode(request, RankContext(candidates=(r.answer,), caption=r.caption))
    reply = torch.tensor([ids[0]], dtype=torch.long)
    full = dict(inputs)
    n = inputs["input_ids"].shape[1]
    full["input_ids"] = torch.cat([inputs["input_ids"], reply], dim=1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    if "mm_token_type_ids" in inputs:
        full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(reply).to(
            inputs["mm_token_type_ids"].dtype)], dim=1)
    labels = torch.full_like(full["input_ids"], IGNORE)
    labels[0, n:] = reply[0]
    full["labels"] = labels
    return full


def train_visdial(rounds: Sequence[DialogRound], settings: Settings, options: TrainOptions, out: Path,
                  images: Path, *, forced_tools: list[str] | None = None,
                  on_evidence: Callable[[int, int], None] | None = None,
                  on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Train a LoRA adapter into ``out``; returns a summary (rows, skipped, steps, first and last loss)."""
    import torch
    from transformers import get_cosine_schedule_with_warmup, set_seed

    from agent.train.manifest import write_manifest
    from agent.train.run import build_model, check_settings, evidence_services, manifest_data, train_device
    from agent.visdial import prompt
    from agent.visdial.qwen import QwenScorer, _rope_model

    check_settings(settings)
    device, out = train_device(settings), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    services = evidence_services(settings, images, out)
    kept, skipped = collect_rounds(rounds, services, forced_tools, on_evidence)
    if not kept:
        from agent.core.errors import DataError

        raise DataError(f"no round could be used for training ({len(skipped)} skipped; first: "
                        f"{skipped[0][1] if skipped else 'the file has no rounds'})")
    backend, model, processor = build_model(settings, options, device)
    scorer = QwenScorer(backend)
    examples = [(r, round_request(r, state)) for r, state in kept]
    per_step = options.batch_size * options.grad_accum
    steps = options.max_steps or max(1, math.ceil(options.epochs * len(examples) / per_step))
    set_seed(options.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    sched = get_cosine_schedule_with_warmup(optim, math.ceil(options.warmup * steps), steps)
    order: list[int] = []
    rng = random.Random(options.seed)
    rope = _rope_model(model)
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    log = open(out / "train_log.jsonl", "w", encoding="utf-8")
    try:
        for step in range(1, steps + 1):
            total = 0.0
            for _ in range(per_step):
                if not order:
                    order = list(range(len(examples)))
                    rng.shuffle(order)
                r, req = examples[order.pop()]
                if rope is not None:
                    rope.rope_deltas = None  # positions computed afresh for each sequence
                batch = {k: v.to(model.device) if torch.is_tensor(v) else v
                         for k, v in training_inputs(scorer, r, req).items()}
                loss = model(**batch).loss / per_step
                loss.backward()
                total += float(loss)
            optim.step()
            sched.step()
            optim.zero_grad()
            losses.append(total)
            log.write(json.dumps({"step": step, "loss": round(total, 6), "lr": sched.get_last_lr()[0],
                                  "time": round(time.time(), 3)}) + "\n")
            log.flush()
            if on_step:
                on_step(step, steps, total)
    finally:
        log.close()
    model.eval()
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    dtype = str(backend.dtype).removeprefix("torch.")
    write_manifest(out, {**manifest_data(settings, options, model, dtype, forced_tools, {prompt.template_id()}, {},
                                         (len(examples), 0)), "task": "visdial"})
    return {"train_rows": len(examples), "skipped": skipped, "steps": steps, "first_loss": losses[0],
            "last_loss": losses[-1], "seconds": round(time.perf_counter() - t0, 2)}
