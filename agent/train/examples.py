"""Training examples, gathered and encoded exactly as inference gathers and encodes a question.

Evidence: each labelled row goes through the graph (``agent.runner.ask``: load_image, route or the forced tools,
run_tool through the tool cache) with the model-free evidence reasoner standing in for the model, whose decision
is discarded; what is kept is the row's ``ToolResult`` list, i.e. the evidence ``vqa batch`` would show the model.
A row whose image cannot be used is skipped (with its reason), as inference would fall back on it.

Batches: ``QwenBackend.encode`` builds the prompt (``prompts.render`` in the chat template) and the pixels, as it
does for scoring; ``with_answers`` appends the gold letter's token after the prompt. Labels are ``-100`` (ignored)
everywhere but that token, so the loss is the cross-entropy of the answer letter at the very position whose
logits ``vqa batch`` scores.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from agent.core.errors import ConfigError, DataError
from agent.core.images import load_image
from agent.core.schema import LETTERS, Question, ToolResult
from agent.graph import Services, build_graph, marked_images
from agent.reasoners.base import ReasonRequest

IGNORE = -100  # label of positions without loss (the Hugging Face convention)


@dataclass
class Example:
    question: Question  # with its gold ``answer``
    results: list[ToolResult] = field(default_factory=list)
    split: str = "train"  # train or val


def split_rows(questions: Sequence[Question], val_frac: float, seed: int) -> tuple[list[Question], list[Question]]:
    """``(train, val)``: a seeded random ``val_frac`` share held out (at least one row when ``val_frac > 0``)."""
    if val_frac <= 0:
        return list(questions), []
    n_val = max(1, round(len(questions) * val_frac))
    if n_val >= len(questions):
        raise DataError(f"--val-frac {val_frac} leaves no training rows out of {len(questions)}; use a smaller share")
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    return ([q for i, q in enumerate(questions) if i not in held], [q for i, q in enumerate(questions) if i in held])


def collect(questions: Sequence[Question], services: Services, *, split: str, forced_tools: list[str] | None,
            on_done: Callable[[Question], None] | None = None) -> tuple[list[Example], list[tuple[str, str]]]:
    """Each question's evidence through the graph: ``(examples, skipped as (id, reason))``."""
    from agent.runner import ask

    graph = build_graph()
    examples, skipped = [], []
    for q in questions:
        answer = ask(services, q, forced_tools=forced_tools, graph=graph)
        if answer.method == "fallback":
            skipped.append((q.id, "; ".join(answer.errors) or "no answer"))
        else:
            examples.append(Example(question=q, results=list(answer.evidence), split=split))
        if on_done:
            on_done(q)
    return examples, skipped


def request(example: Example, services: Services) -> ReasonRequest:
    """What the reason node would hand the model for this row: the working image, the results, the marked images."""
    q = example.question
    image = load_image(q.image, max_pixels=services.max_pixels, hard_cap_pixels=services.hard_cap_pixels)
    images, problems = marked_images(example.results)
    if problems:
        raise DataError(f"row {q.id}: {problems[0]}; rerun vqa train to recompute the tool outputs")
    return ReasonRequest(question=q, image=image.image, results=example.results, images=images)


def answer_token_ids(tokenizer: Any, letters: Sequence[str]) -> dict[str, int]:
    """The single token each answer letter is written as (the bare lower-case letter the prompt asks for)."""
    out = {}
    for letter in letters:
        ids = tokenizer.encode(letter, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"the tokenizer writes the answer letter {letter!r} as {len(ids)} tokens {ids}; "
                              "expected one token, as in the Qwen-VL vocabularies")
        out[letter] = ids[0]
    return out


def with_answers(inputs: Any, answer_ids: Sequence[int]) -> dict[str, Any]:
    """Append each row's answer token after its (left-padded) prompt; the loss is that token's alone.

    Per-token tensors grow by one column: ``attention_mask`` with 1, ``position_ids`` with the next position,
    any other (e.g. ``mm_token_type_ids``) with 0 (text).
    """
    import torch

    ids = inputs["input_ids"]
    answer = torch.tensor(list(answer_ids), dtype=ids.dtype).unsqueeze(1)
    out = dict(inputs)
    for key, value in inputs.items():
        if key == "input_ids":
            out[key] = torch.cat([value, answer], dim=1)
        elif torch.is_tensor(value) and value.dim() >= 2 and value.shape[:2] == ids.shape:
            if key == "position_ids":
                extra = value[:, -1:] + 1
            else:
                extra = torch.full_like(value[:, -1:], 1 if key == "attention_mask" else 0)
            out[key] = torch.cat([value, extra], dim=1)
    # Logits only for the last two positions (the letter's is predicted from the one before it), so the
    # vocabulary-sized output is 2 rows per example, not one per token: labels cover those two positions.
    labels = torch.full((ids.shape[0], 2), IGNORE, dtype=ids.dtype)
    labels[:, -1] = answer[:, 0]
    out["labels"], out["logits_to_keep"] = labels, 2
    return out


class Collator:
    """Examples -> one training batch (``QwenBackend.encode`` + ``with_answers``)."""

    def __init__(self, backend: Any, tokenizer: Any, services: Services) -> None:
        self.backend, self.services = backend, services
        self.answer_ids = answer_token_ids(tokenizer, LETTERS)

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        inputs, _ = self.backend.encode([request(e, self.services) for e in examples])
        return with_answers(inputs, [self.answer_ids[e.question.answer] for e in examples])


def write_evidence(path: Path, examples: Sequence[Example], prompts: dict[str, str]) -> None:
    """``evidence.jsonl``: per row its split, the tools that ran (ok or not), their results and the exact prompt."""
    with open(path, "w", encoding="utf-8") as f:
        for e in examples:
            record = {"id": e.question.id, "split": e.split, "answer": e.question.answer,
                      "tools": {r.tool: r.ok for r in e.results},
                      "results": [r.model_dump(mode="json") for r in e.results], "prompt": prompts.get(e.question.id)}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
