"""Candidate log-likelihoods from an OpenAI-compatible server that returns prompt log-probabilities (vLLM's
``prompt_logprobs`` on ``/v1/chat/completions``).

Each candidate is sent as the assistant's reply, the last message, continued rather than closed
(``continue_final_message``, ``add_generation_prompt: false``), with ``max_tokens: 1`` and ``prompt_logprobs:
0``; the server returns one entry per prompt token with its log-probability and decoded text. The candidate's
tokens are the last prompt tokens whose decoded texts, joined, cover the candidate: their log-probabilities
summed give ``sum``, divided by their number ``mean``. The prefix is computed once per candidate here (the
server's prefix cache, vLLM ``--enable-prefix-caching``, is what shares it).

A server whose reply has no ``prompt_logprobs`` (the OpenAI API, llama.cpp's chat endpoint) is refused with one
line naming what it lacks, the first time it answers.
"""

from __future__ import annotations

from typing import Any

from agent.core.errors import ConfigError
from agent.reasoners.base import ReasonRequest
from agent.reasoners.openai import data_url
from agent.visdial import prompt
from agent.visdial.scorers import CandidateScores, RankContext


class ServerScorer:
    """Scores candidates with a loaded ``OpenAIBackend``'s server (its client, retries and timeouts)."""

    name = "openai"

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @property
    def fingerprint(self) -> str:
        return f"rank-{self.backend.fingerprint}"

    def messages(self, req: ReasonRequest, ctx: RankContext, candidate: str) -> list[dict]:
        text = prompt.render(req.question.text, req.results, caption=ctx.caption, history=req.history)
        images = ([req.image] if req.image is not None else []) + list(req.images)
        content: list[dict] = [{"type": "image_url", "image_url": {"url": data_url(im, self.backend.max_pixels)}}
                               for im in images]
        content.append({"type": "text", "text": text})
        return [{"role": "user", "content": content}, {"role": "assistant", "content": candidate}]

    def score(self, req: ReasonRequest, ctx: RankContext) -> CandidateScores:
        self.backend.load()
        sums, means = [], []
        for c in ctx.candidates:
            total, n = self._one(self.messages(req, ctx, c), c)
            sums.append(total)
            means.append(total / max(n, 1))
        return CandidateScores(sum=sums, mean=means, method="logits")

    def _one(self, messages: list[dict], candidate: str) -> tuple[float, int]:
        b = self.backend
        body = {"model": b.model, "messages": messages, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0,
                "add_generation_prompt": False, "continue_final_message": True}
        data = b._call(f"POST {b.base_url}/chat/completions", b._client.post, "/chat/completions", body=body,
                       cast_to=object)
        entries = data.get("prompt_logprobs") if isinstance(data, dict) else None
        if not entries:
            raise ConfigError(f"the server at {b.base_url} returns no prompt_logprobs, which ranking candidates needs "
                              "(vLLM's prompt_logprobs); rank with a vLLM server, --reasoner qwen or --reasoner "
                              "evidence")
        return candidate_logprob(entries, candidate)


def candidate_logprob(entries: list[Any], candidate: str) -> tuple[float, int]:
    """Sum and count of the log-probabilities of the last prompt tokens whose decoded texts cover ``candidate``.
    ``entries``: vLLM's ``prompt_logprobs`` (``None`` for the first token, else ``{token_id: {"logprob",
    "decoded_token", ...}}`` whose first item is the prompt's own token)."""
    want = candidate.strip()
    text, total, n = "", 0.0, 0
    for e in reversed(entries):
        if not e:
            break
        tok = next(iter(e.values()))
        text = str(tok.get("decoded_token") or "") + text
        total += float(tok["logprob"])
        n += 1
        if want and want in text.strip():
            return total, n
    raise ConfigError(f"prompt_logprobs do not end with the candidate {candidate!r}: the server's chat template did "
                      "not leave the reply last (it needs continue_final_message, vLLM >= 0.6)")
