"""What ``detect`` asks the detector for, and how options are read as counts: tables of questions -> results."""

from __future__ import annotations

import pytest

from agent.core.phrases import LEXICON, is_polar, option_phrase, parse_count, parse_yes_no, singular, target

ANIMALS = {"a": "고양이", "b": "개", "c": "토끼"}


@pytest.mark.parametrize(("question", "phrase", "source", "query"), [
    ("사진 속 사람은 몇 명인가요?", "person", "lexicon", "사람"),
    ("사진 속 아이들은 몇 명입니까?", "child", "lexicon", "아이"),
    ("빨간 자동차는 모두 몇 대인가요?", "red car", "lexicon", "빨간 자동차"),
    ("사진에 있는 사과의 개수는?", "apple", "lexicon", "사과"),
    ("테이블 위에 접시가 몇 개 있나요?", "plate", "lexicon", "접시"),
    ("고양이가 있나요?", "cat", "lexicon", "고양이"),
    ("고양이 있나요?", "cat", "lexicon", "고양이"),  # 고양'이' is not a particle
    ("사진에 강아지가 없습니까?", "dog", "lexicon", "강아지"),
    ("자전거가 보이나요?", "bicycle", "lexicon", "자전거"),
    ("사람 수는?", "person", "lexicon", "사람"),
    ("야구공은 몇 개인가요?", "baseball", "lexicon", "야구공"),
    ("알파카는 사진에 몇 마리 있나요?", "animal", "counter", "알파카"),  # unknown noun: its counter's class
    ("How many people are in the photo?", "person", "english", "people"),
    ("How many red cars are there?", "red car", "english", "red cars"),
    ("how many buses?", "bus", "english", "buses"),
    ("Is there a dog in the picture?", "dog", "english", "dog"),
    ("Are there any cats?", "cat", "english", "cats"),
    ("What is the number of glasses on the table?", "glasses", "english", "glasses"),
])
def test_question_gives_the_counted_phrase(question: str, phrase: str, source: str, query: str) -> None:
    t = target(question, ANIMALS)
    assert (t.phrases, t.primary, t.source, t.query) == ((phrase,), phrase, source, query)
    assert t.prompt == f"{phrase}."


@pytest.mark.parametrize("question", ["사진 속 동물은 무엇인가요?", "Which animal is in the photo?"])
def test_options_name_the_objects_when_the_question_does_not(question: str) -> None:
    t = target(question, ANIMALS)
    assert t.phrases == ("cat", "dog", "rabbit") and t.primary is None and t.source == "options"
    assert t.option_labels == {"a": "cat", "b": "dog", "c": "rabbit"} and t.prompt == "cat. dog. rabbit."


def test_no_noun_and_no_object_options_falls_back_to_object() -> None:
    t = target("이 사진의 분위기는?", {"a": "밝다", "b": "어둡다"})
    assert (t.phrases, t.source) == (("object",), "default")


def test_every_lexicon_phrase_is_lower_case_english() -> None:
    assert all(p == p.lower() and p.replace(" ", "").isalpha() and p.isascii() for p in LEXICON.values())


@pytest.mark.parametrize(("word", "expected"), [("people", "person"), ("buses", "bus"), ("boxes", "box"),
                                                ("cherries", "cherry"), ("cats", "cat"), ("glass", "glass"),
                                                ("knives", "knife"), ("sheep", "sheep"), ("bus", "bus")])
def test_singular(word: str, expected: str) -> None:
    assert singular(word) == expected


@pytest.mark.parametrize(("option", "expected"), [
    ("3개", (3, 3)), ("세 개", (3, 3)), ("세개", (3, 3)), ("three", (3, 3)), ("3 people", (3, 3)),
    ("Three cats", (3, 3)), ("1명", (1, 1)), ("한 명", (1, 1)), ("하나", (1, 1)), ("둘", (2, 2)),
    ("열두 마리", (12, 12)), ("스무 명", (20, 20)), ("스물한 명", (21, 21)), ("이십삼 개", (23, 23)),
    ("twenty-one", (21, 21)), ("twenty one cats", (21, 21)), ("약 3명", (3, 3)), ("３개", (3, 3)),
    ("10명 이상", (10, None)), ("5개 미만", (0, 4)), ("3명 이하", (0, 3)), ("2개 초과", (3, None)),
    ("more than 2", (3, None)), ("at least 4", (4, None)), ("5 or more", (5, None)), ("3+", (3, None)),
    ("fewer than 3", (0, 2)), ("at most 2 dogs", (0, 2)),
    ("2~3명", (2, 3)), ("2-3", (2, 3)), ("two to three", (2, 3)), ("between 2 and 5 people", (2, 5)),
    ("없음", (0, 0)), ("하나도 없다", (0, 0)), ("none", (0, 0)), ("no cats", (0, 0)), ("0", (0, 0)), ("0개", (0, 0)),
])
def test_numeric_options_are_read_as_count_intervals(option: str, expected: tuple) -> None:
    assert parse_count(option) == expected


@pytest.mark.parametrize("option", ["사람", "오리", "구름", "세탁기", "3번 출구", "the one on the left", "네",
                                    "빨간색", "Route 66", "a cat", "세"])
def test_other_options_are_not_counts(option: str) -> None:
    assert parse_count(option) is None


@pytest.mark.parametrize(("option", "yes", "polar"), [("예", True, True), ("네", True, True), ("있음", True, False),
                                                      ("아니요", False, True), ("없다", False, False),
                                                      ("Yes", True, True), ("there are none", False, False),
                                                      ("고양이", None, False)])
def test_yes_no_options(option: str, yes: bool | None, polar: bool) -> None:
    assert parse_yes_no(option) is yes and is_polar(option) is polar


@pytest.mark.parametrize(("option", "phrase"), [("고양이", "cat"), ("빨간 자동차", "red car"), ("Red cars", "red car"),
                                                ("3명", None), ("예", None), ("세탁기", None),
                                                ("a very long option text", None)])
def test_option_phrase(option: str, phrase: str | None) -> None:
    assert option_phrase(option) == phrase
