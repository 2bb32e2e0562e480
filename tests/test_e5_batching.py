"""Routing's e5 embeddings computed a chunk per call (``agent.core.e5.QueryBatcher``, ``Router.expect``): the same
vectors bit for bit and the same routes as one call per question, in fewer calls. Calls are counted by a spy
around the real shipped e5 (``agent.router.e5_query``)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import agent.router as router_mod
from agent.core.e5 import QueryBatcher
from agent.core.schema import Question
from agent.router import Router, e5_query

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TEXTS = ["간판에 적힌 가게 이름은?", "사진 속 사람은 몇 명인가요?", "What is behind the woman?",
         "이 가게는 몇 시에 문을 닫나요?", "What color is the umbrella?", "이 전통 음식의 이름은 무엇인가요?",
         "Which object is next to the laptop?", "What is the mood of this photo?", "테이블 위에 접시가 몇 개 있나요?",
         "Read the license plate of the car."]


class CountingE5:
    """A spy around the real e5: records each call's texts."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(texts))
            if self.fail_first and len(self.calls) == 1:
                raise RuntimeError("engine failed")
        return e5_query(texts)


def test_expected_texts_are_embedded_a_chunk_per_call_bit_for_bit() -> None:
    spy = CountingE5()
    b = QueryBatcher(spy, chunk=4)
    b.expect(TEXTS)
    got = {t: b.get(t) for t in TEXTS[:4]}
    assert spy.calls == [TEXTS[:4]]
    assert b.get(TEXTS[5]) is not None and spy.calls[1] == [TEXTS[5], TEXTS[4], TEXTS[6], TEXTS[7]]
    for t, v in got.items():
        assert np.array_equal(v, e5_query(t)) and not v.flags.writeable
    assert b.get("not expected") is not None and spy.calls[-1] == ["not expected", *TEXTS[8:]]
    assert len(spy.calls) == b.calls == 3


def test_concurrent_askers_wait_for_the_call_already_embedding_their_text() -> None:
    spy = CountingE5()
    b = QueryBatcher(spy, chunk=8)
    b.expect(TEXTS[:8])
    out: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda t=t: out.setdefault(t, b.get(t))) for t in TEXTS[:8]]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(spy.calls) == 1 and sorted(spy.calls[0]) == sorted(TEXTS[:8])
    assert all(np.array_equal(out[t], e5_query(t)) for t in TEXTS[:8])


def test_a_failed_call_is_raised_and_not_remembered() -> None:
    spy = CountingE5(fail_first=True)
    b = QueryBatcher(spy, chunk=4)
    b.expect(TEXTS[:4])
    with pytest.raises(RuntimeError, match="engine failed"):
        b.get(TEXTS[0])
    assert np.array_equal(b.get(TEXTS[0]), e5_query(TEXTS[0])) and len(spy.calls) == 2


def test_routes_are_the_same_with_one_call_per_question_and_with_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = {}
    for chunk in (1, 4):
        spy = CountingE5()
        monkeypatch.setattr(router_mod, "QUESTION_EMBEDDINGS", QueryBatcher(spy, chunk=chunk))
        r = Router()
        r.expect(TEXTS)
        routes[chunk] = [r.route(t) for t in TEXTS]
        assert len(spy.calls) == (len(TEXTS) if chunk == 1 else 3)
    assert routes[1] == routes[4]
    assert any(route.method == "e5" for route in routes[4])  # the learned stage did decide something here


def test_a_batch_embeds_its_questions_in_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.reasoners.evidence import EvidenceReasoner
    from agent.runner import run_batch
    from agent.services import Services

    spy = CountingE5()
    monkeypatch.setattr(router_mod, "QUESTION_EMBEDDINGS", QueryBatcher(spy, chunk=32))
    texts = ["What color is the umbrella?", "사진 속 고양이는 무슨 색인가요?", "이 사진은 어떤 날씨인가요?",
             "What is the mood of this photo?"]  # questions no tool is routed to: routing alone is measured
    qs = [Question(id=f"q{i}", image=EXAMPLES / "images" / "coffee.jpg", text=t,
                   options={"a": "white", "b": "black", "c": "red"}) for i, t in enumerate(texts)]
    services = Services(reasoner=EvidenceReasoner())
    services.router.model()  # loads with its own probe embedding, not through the question embeddings
    s = run_batch(qs, services, tmp_path / "run", batch_size=2)
    assert s.answered == 4 and len(spy.calls) == 1 and sorted(spy.calls[0]) == sorted(texts)
