"""The server candidate scorer: prompt log-probabilities parsed from a recorded vLLM reply, and a server without
them refused in one line (against the local test double of an OpenAI-compatible server)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.core.errors import ConfigError
from agent.core.schema import Question
from agent.reasoners.base import ReasonRequest
from agent.reasoners.openai import OpenAIBackend
from agent.visdial.registry import scorer_for
from agent.visdial.scorers import RankContext
from agent.visdial.server import candidate_logprob

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import FakeOpenAIServer  # noqa: E402


def entry(token_id: int, text: str, logprob: float) -> dict:
    return {str(token_id): {"logprob": logprob, "rank": 1, "decoded_token": text}}


def test_candidate_logprob_takes_the_tokens_that_cover_the_candidate():
    entries = [None, entry(1, "<|im_start|>", -0.1), entry(2, "assistant", -0.2), entry(3, "\n", -0.3),
               entry(4, "no", -1.5), entry(5, " park", -2.0), entry(6, "ing", -0.5)]
    assert candidate_logprob(entries, "no parking") == (pytest.approx(-4.0), 3)
    assert candidate_logprob(entries, "parking") == (pytest.approx(-2.5), 2)
    with pytest.raises(ConfigError, match="continue_final_message"):
        candidate_logprob(entries, "bus stop")


def test_server_without_prompt_logprobs_is_refused_in_one_line():
    with FakeOpenAIServer() as srv:
        b = OpenAIBackend("fake-qwen", srv.url)
        b.load()
        try:
            scorer = scorer_for(b)
            q = Question(id="x", text="what is it?", options={})
            with pytest.raises(ConfigError, match="returns no prompt_logprobs") as err:
                scorer.score(ReasonRequest(question=q, image=None), RankContext(("a cat", "a dog")))
            assert "\n" not in str(err.value)
        finally:
            b.close()


def test_rank_through_a_server_without_prompt_logprobs_stops_with_the_reason(tmp_path):
    from PIL import Image

    from agent.api import Orchestrator

    photo = tmp_path / "p.png"
    Image.new("RGB", (20, 20)).save(photo)
    with FakeOpenAIServer() as srv, Orchestrator(reasoner="openai", base_url=srv.url, model="fake-qwen",
                                                 tools="none") as vqa:
        with pytest.raises(ConfigError, match="returns no prompt_logprobs"):
            vqa.rank(photo, "what is it?", ["a cat", "a dog"])
