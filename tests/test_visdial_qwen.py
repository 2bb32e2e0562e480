"""The Qwen-VL candidate scorer: one prefix pass with the candidates batched over its cache gives the same
log-likelihoods as a full pass per candidate (tiny random-weight checkpoints; the numbers mean nothing else)."""

from __future__ import annotations

import pytest
from PIL import Image

from agent.core.schema import Question
from agent.reasoners.base import ReasonRequest
from agent.reasoners.qwen import QwenBackend
from agent.visdial.qwen import QwenScorer, independent_scores, shared_prefix_scores
from agent.visdial.scorers import RankContext

SMALL = 64 * 28 * 28
CANDIDATES = ("no parking", "yes", "a much longer answer with many words in it", "2", "bus stop", "i can't tell",
              "no")


@pytest.fixture(scope="module", params=["vlm-qwen2.5-vl", "vlm-qwen3-vl"])
def backend(request, tiny_dir) -> QwenBackend:
    b = QwenBackend(str(tiny_dir / request.param), max_pixels=SMALL, device="cpu")
    b.load()
    yield b
    b.close()


def request_for(history=()) -> ReasonRequest:
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    q = Question(id="r", text="what does the sign say?", options={})
    return ReasonRequest(question=q, image=img, history=list(history))


@pytest.mark.parametrize("chunk", [3, 100])
def test_shared_prefix_equals_independent_passes(backend, chunk):
    scorer = QwenScorer(backend, chunk=chunk)
    ctx = RankContext(CANDIDATES, caption="a sign on a wall")
    inputs, ids, prefix = scorer.encode(request_for([("is it red?", "yes")]), ctx)
    assert "a sign on a wall" in prefix and "is it red?" in prefix
    assert len({len(i) for i in ids}) > 1  # candidates of different lengths share a padded batch
    shared = shared_prefix_scores(backend._model, inputs, ids, chunk=chunk)
    alone = independent_scores(backend._model, inputs, ids)
    assert shared == pytest.approx(alone, abs=1e-4)
    assert len(set(round(s, 3) for s in shared)) == len(set(CANDIDATES))  # distinct candidates, distinct scores


def test_scores_are_sum_and_mean_of_the_reply_tokens(backend):
    scorer = QwenScorer(backend)
    ctx = RankContext(CANDIDATES)
    s = scorer.score(request_for(), ctx)
    _, ids, _ = scorer.encode(request_for(), ctx)
    tok = backend.loaded[1].tokenizer
    assert tok.decode(ids[0]).startswith("no parking") and tok.decode(ids[0]).rstrip().endswith("<|im_end|>")
    assert all(x < 0 for x in s.sum)
    assert s.mean == pytest.approx([x / len(i) for x, i in zip(s.sum, ids)])
    assert s.method == "logits" and s.prompt is not None


def test_rank_through_the_graph(tiny_dir, tmp_path):
    from agent.api import Orchestrator

    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 48), (0, 90, 200)).save(photo)
    with Orchestrator(model=str(tiny_dir / "vlm-qwen2.5-vl"), reasoner="qwen", tools="none", device="cpu",
                      max_pixels=SMALL) as vqa:
        rec = vqa.rank(photo, "what colour is it?", ["blue", "red", "a dog"], history=[("is it a sign?", "yes")],
                       run_dir=tmp_path / "run", rank_score="sum")
    assert sorted(rec.ranks("sum")) == [1, 2, 3] and rec.method == "logits"
    assert rec.reasoner.startswith("rank-qwen:")
    trace = (tmp_path / "run" / "trace.jsonl").read_text()
    assert '"raw":"top: ' in trace  # the reason event shows the top candidates with their scores


@pytest.mark.slow
def test_rank_bench_reports_every_arm(tiny_dir):
    from eval.bench.visdial import run_rank_bench

    res = run_rank_bench(str(tiny_dir / "vlm-qwen2.5-vl"), candidates=4, repeats=1, chunk=3, device="cpu",
                         max_pixels=SMALL)
    assert res["candidates"] == 4 and res["max_abs_diff"] < 1e-4
    for k in ("prefix_s", "shared_s", "independent_s", "shared_over_prefix", "independent_over_shared"):
        assert res[k] > 0
