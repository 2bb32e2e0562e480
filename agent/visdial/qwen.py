"""Candidate log-likelihoods from an in-process Qwen-VL (``agent.reasoners.qwen.QwenBackend``), with the prefix
computed once.

The prompt (``agent.visdial.prompt``, the photo and the tools' marked images) is the user turn; each candidate is
scored as the assistant's reply in the processor's chat template (the reply's text up to and including its end of
turn token: what ``vqa train --task visdial`` trains on). One forward pass over the prefix keeps its keys and
values; the candidates then run in chunks of ``chunk`` as one right-padded batch over that cache (repeated once per
candidate of a chunk, cropped back to the prefix after each chunk), their
positions continuing the prefix's (Qwen's multimodal rotary positions: the prefix's ``rope_deltas``). Per
candidate: the sum of its tokens' log-probabilities, and that sum over its number of tokens (``mean``).

``independent_scores`` scores the same token ids with one full forward pass per candidate: the reference the
test and ``vqa bench visdial`` compare with.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from agent.reasoners.base import ReasonRequest
from agent.visdial import prompt
from agent.visdial.scorers import CandidateScores, RankContext


class QwenScorer:
    """Scores candidates with a loaded ``QwenBackend`` (``chunk``: candidates per batched pass)."""

    name = "qwen"

    def __init__(self, backend: Any, chunk: int = 50) -> None:
        self.backend, self.chunk = backend, chunk

    @property
    def fingerprint(self) -> str:
        return f"rank-{self.backend.fingerprint}"

    # ------------------------------------------------------------------ inputs

    def prefix_text(self, req: ReasonRequest, ctx: RankContext) -> str:
        _, processor = self.backend.loaded
        text = prompt.render(req.question.text, req.results, caption=ctx.caption, history=req.history)
        pictures = (req.image is not None) + len(req.images)
        content = [{"type": "image"} for _ in range(pictures)] + [{"type": "text", "text": text}]
        return processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)

    def reply_text(self, req: ReasonRequest, ctx: RankContext, prefix: str, candidate: str) -> str:
        """The candidate as the assistant's reply: the chat template's text after the prefix, to its end of turn."""
        _, processor = self.backend.loaded
        text = prompt.render(req.question.text, req.results, caption=ctx.caption, history=req.history)
        pictures = (req.image is not None) + len(req.images)
        content = [{"type": "image"} for _ in range(pictures)] + [{"type": "text", "text": text}]
        full = processor.apply_chat_template(
            [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text",
                                                                                      "text": candidate}]}],
            tokenize=False)
        end = "<|im_end|>"
        if full.startswith(prefix) and end in full[len(prefix):]:
            reply = full[len(prefix):]
            return reply[: reply.rindex(end) + len(end)]
        return candidate + end

    def encode(self, req: ReasonRequest, ctx: RankContext) -> tuple[Any, list[list[int]], str]:
        """The prefix's model inputs (batch of 1), each candidate's token ids, and the prefix text."""
        _, processor = self.backend.loaded
        prefix = self.prefix_text(req, ctx)
        images = [p.convert("RGB") for p in ([req.image] if req.image is not None else []) + list(req.images)]
        inputs = processor(text=[prefix], return_tensors="pt", **self.backend.image_kwargs(images))
        tok = processor.tokenizer
        ids = [tok.encode(self.reply_text(req, ctx, prefix, c), add_special_tokens=False) for c in ctx.candidates]
        return inputs, ids, prefix

    # ------------------------------------------------------------------ scoring

    def score(self, req: ReasonRequest, ctx: RankContext) -> CandidateScores:
        model, _ = self.backend.loaded
        inputs, ids, prefix = self.encode(req, ctx)
        sums = shared_prefix_scores(model, inputs.to(model.device), ids, chunk=self.chunk)
        return CandidateScores(sum=sums, mean=[s / max(len(i), 1) for s, i in zip(sums, ids)], method="logits",
                               prompt=prefix)


def _rope_model(model: Any) -> Any:
    """The module that keeps ``rope_deltas`` (Qwen2/2.5/3-VL: ``model.model``; under PEFT one level deeper)."""
    m = model
    for _ in range(4):
        if hasattr(m, "rope_deltas"):
            return m
        m = getattr(m, "model", None) or getattr(m, "base_model", None)
        if m is None:
            break
    return None


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@torch.inference_mode()
def shared_prefix_scores(model: Any, inputs: Any, ids: Sequence[Sequence[int]], *, chunk: int = 25) -> list[float]:
    """Summed log-probability of each token sequence ``ids`` after the prefix ``inputs`` (batch of 1): one pass
    over the prefix, then the candidates in right-padded batches of ``chunk`` over its cache, repeated once per
    candidate of a chunk and cropped back to the prefix between chunks."""
    rope = _rope_model(model)
    if rope is not None:
        rope.rope_deltas = None  # computed afresh from this prefix (a stale value would shift the positions)
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    cache = out.cache
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    n_prefix = inputs["input_ids"].shape[1]
    delta = 0
    if rope is not None and rope.rope_deltas is not None:
        delta = int(rope.rope_deltas.reshape(-1)[0])
    device = inputs["input_ids"].device
    scores: list[float] = []
    kv = None
    for start in range(0, len(ids), chunk):
        part = [list(x) for x in ids[start:start + chunk]]
        width = max(len(x) for x in part)
        batch = torch.zeros((len(part), width), dtype=torch.long, device=device)
        mask = torch.zeros((len(part), n_prefix + width), dtype=torch.long, device=device)
        mask[:, :n_prefix] = 1
        for i, x in enumerate(part):
            batch[i, :len(x)] = torch.tensor(x, dtype=torch.long, device=device)
            mask[i, n_prefix:n_prefix + len(x)] = 1
        pos = torch.arange(n_prefix + delta, n_prefix + delta + width, device=device)
        position_ids = pos.view(1, 1, -1).expand(3, len(part), -1)
        if kv is None:  # the prefix's cache, one copy per candidate of a chunk, made once
            kv = cache
            kv.batch_repeat_interleave(len(part))
        else:  # back to the prefix alone (the last chunk may be smaller)
            kv.crop(-(kv.get_seq_length() - n_prefix))  # a negative count: tokens to remove from the end
            if len(part) < chunk:
                kv.batch_select_indices(torch.arange(len(part), device=device))
        logits = model(input_ids=batch, attention_mask=mask, position_ids=position_ids, cache=kv,
                       use_cache=True).logits
        later = _token_logprobs(logits[:, :-1], batch[:, 1:]) if width > 1 else None
        for i, x in enumerate(part):
            total = float(first[x[0]])
            if later is not None and len(x) > 1:
                total += float(later[i, : len(x) - 1].sum())
            scores.append(total)
        del logits
    return scores


@torch.inference_mode()
def independent_scores(model: Any, inputs: Any, ids: Sequence[Sequence[int]]) -> list[float]:
    """The same sums as ``shared_prefix_scores``, with one full forward pass (prefix + candidate) per candidate."""
    rope = _rope_model(model)
    n_prefix = inputs["input_ids"].shape[1]
    scores = []
    for x in ids:
        if rope is not None:
            rope.rope_deltas = None
        cand = torch.tensor([list(x)], dtype=torch.long, device=inputs["input_ids"].device)
        full = {k: v for k, v in inputs.items()}
        full["input_ids"] = torch.cat([inputs["input_ids"], cand], dim=1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        if "mm_token_type_ids" in inputs:
            full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(cand).to(
                inputs["mm_token_type_ids"].dtype)], dim=1)
        logits = model(**full, use_cache=False).logits[0, n_prefix - 1:-1]
        scores.append(float(_token_logprobs(logits, cand[0]).sum()))
    return scores
