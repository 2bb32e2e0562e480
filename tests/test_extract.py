"""The free-text letter parser: a table of replies (our own, written for this test) -> (letter, rule).

Each form the parser knows, in 2-5 option questions, English, Korean, Chinese and Japanese replies, with
distractor letters in explanations and negations; ``None`` rows are ambiguous on purpose.
"""

from __future__ import annotations

import re

import pytest

from agent.reasoners.base import parse_letter
from agent.reasoners.extract import RULES, Extraction, clean, extract_letter

OPTIONS = {
    "en2": {"a": "yes", "b": "no"},
    "en3": {"a": "coffee", "b": "milk", "c": "orange juice"},
    "en4": {"a": "histogram of grey values", "b": "edge gradient", "c": "colour hue", "d": "texture energy"},
    "en5": {"a": "red", "b": "blue", "c": "green", "d": "yellow", "e": "black"},
    "ko2": {"a": "예", "b": "아니요"},
    "ko3": {"a": "커피", "b": "우유", "c": "녹차"},
    "ko4": {"a": "1개", "b": "2개", "c": "12개", "d": "20개"},
    "ko5": {"a": "주차 금지", "b": "출입 금지", "c": "금연", "d": "정숙", "e": "일방통행"},
}

# (reply, options, letter, rule)
TABLE: list[tuple[str, str, str | None, str | None]] = [
    # ---- tags: any case, left open, a lone "answer>", the last one wins, a tag beats a later declaration
    ("<answer>b</answer>", "en3", "b", "tag"),
    ("<ANSWER>C</ANSWER>", "en4", "c", "tag"),
    ("<Answer> (d) </Answer>", "en5", "d", "tag"),
    ("Let me look closely at the mug.\n<answer>A", "en2", "a", "tag"),
    ("The cup is white inside. answer>b", "en3", "b", "tag"),
    ("<answer>a</answer> ... on reflection <answer>c</answer>", "en4", "c", "tag"),
    ("<answer>B</answer>\nSo the answer is C.", "en4", "b", "tag"),
    ("<final_answer>e</final_answer>", "en5", "e", "tag"),
    ("<answer>milk</answer>", "en3", "b", "tag"),
    ("<answer>우유</answer>", "ko3", "b", "tag"),
    ("<answer>\n  d\n</answer>", "ko4", "d", "tag"),
    ("생각해 보면 빨간 원 안의 글자입니다. <answer>B</answer>", "ko5", "b", "tag"),
    ("<answer>E</answer>", "en4", None, None),  # not one of four options
    ("<Answer>b) milk</Answer> because a is darker", "en3", "b", "tag"),
    # ---- LaTeX boxes and JSON
    ("The final answer is $\\boxed{B}$", "en3", "b", "boxed"),
    ("\\boxed{\\text{C}}", "en4", "c", "boxed"),
    ("Thus \\boxed{(a)}.", "en2", "a", "boxed"),
    ("We get \\boxed{d}; rechecking the hue gives \\boxed{e}", "en5", "e", "boxed"),
    ("정답: \\boxed{c}", "ko4", "c", "boxed"),
    ("\\boxed{colour hue}", "en4", "c", "boxed"),
    ('{"answer": "b"}', "en3", "b", "json"),
    ('```json\n{"answer": "D"}\n```', "en5", "d", "json"),
    ("{'answer': 'a', 'reason': 'the sign shows B and C faded'}", "en2", "a", "json"),
    # ---- English declarations
    ("The answer is (C).", "en3", "c", "declaration"),
    ("Answer: b", "en2", "b", "declaration"),
    ("answer: B", "en4", "b", "declaration"),
    ("**Answer:** D", "en5", "d", "declaration"),
    ("### Answer\nB", "en3", "b", "declaration"),
    ("The correct answer is option A because the sign is red.", "en5", "a", "declaration"),
    ("My final answer: e", "en5", "e", "declaration"),
    ("Final answer - c", "en4", "c", "declaration"),
    ("After comparing them, the best option would be D.", "en4", "d", "declaration"),
    ("Option B is correct; A shows a dog.", "en3", "b", "declaration"),
    ("(c) is the right answer, since (a) and (b) are other drinks.", "en3", "c", "declaration"),
    ("B is correct.", "en2", "b", "declaration"),
    ("The answer is milk.", "en3", "b", "declaration"),
    ("Answer: orange juice", "en3", "c", "declaration"),
    ("the answer would be (d) texture energy", "en4", "d", "declaration"),
    ("I think the correct choice is c.", "en4", "c", "declaration"),
    ("Answer: B\n\nExplanation: A is a cat and C is a dog.", "en4", "b", "declaration"),
    ("The answer is B. Wait, actually the answer is D.", "en4", "d", "declaration"),
    ("correct answer = e", "en5", "e", "declaration"),
    ("Answer: A. Option B shows blue and option C shows green.", "en5", "a", "declaration"),
    ("The answer is not A but B.", "en2", "b", "declaration"),
    ("It's not A; the answer is D.", "en4", "d", "declaration"),
    ("A is wrong because the hue is red. The answer is C.", "en4", "c", "declaration"),
    ("The answer is B, not A.", "en3", "b", "declaration"),
    ("Answer: C (A and B show other colours)", "en5", "c", "declaration"),
    ("Looking at options A through D, the pattern suggests D is the best answer.", "en4", "d", "declaration"),
    ("The answer: e (black).", "en5", "e", "declaration"),
    ("Answer — (A) red", "en5", "a", "declaration"),
    ("answer:a", "en2", "a", "declaration"),
    ("Answer is A", "en2", "a", "declaration"),
    ("A is the answer.", "en2", "a", "declaration"),
    ("The sign says NO PARKING, so the answer is a.", "ko5", "a", "declaration"),
    ("<think>Maybe A? No, the cup is white, so B.</think>The answer is C.", "en3", "c", "declaration"),
    ("The answer is **B**.", "en4", "b", "declaration"),
    ("Final Answer: `c`", "en3", "c", "declaration"),
    ("The most likely answer is (b) since the left cup holds (a) coffee.", "en3", "b", "declaration"),
    ("Correct option: D", "en5", "d", "declaration"),
    ("Answer\n\n(e)", "en5", "e", "declaration"),
    ("Answer: yes", "en2", "a", "declaration"),
    # ---- Korean declarations
    ("정답은 b입니다.", "ko3", "b", "declaration"),
    ("정답: (C)", "ko4", "c", "declaration"),
    ("답: d", "ko4", "d", "declaration"),
    ("b가 정답입니다.", "ko2", "b", "declaration"),
    ("정답은 c번입니다.", "ko5", "c", "declaration"),
    ("c번이 맞습니다.", "ko5", "c", "declaration"),
    ("정답은 우유입니다.", "ko3", "b", "declaration"),
    ("a는 정답이 아닙니다. 정답은 b입니다.", "ko2", "b", "declaration"),
    ("b는 정답이 아니고, 정답은 d입니다.", "ko4", "d", "declaration"),
    ("최종 답: e", "ko5", "e", "declaration"),
    ("사진 속 표지판에는 '금연'이라고 적혀 있으므로 정답은 C입니다.", "ko5", "c", "declaration"),
    ("정답 ⇒ a", "ko5", "a", "declaration"),
    ("답은 (b) 아니요 입니다.", "ko2", "b", "declaration"),
    ("정답은 a가 아니라 c입니다.", "ko5", "c", "declaration"),
    ("정답은 ② 출입 금지입니다.", "ko5", "b", "declaration"),
    ("정답 ③", "ko4", "c", "declaration"),
    ("사진에 보이는 음료는 커피입니다. 따라서 정답은 a입니다.", "ko3", "a", "declaration"),
    ("보기 a는 1개, 보기 b는 2개입니다. 사진 속 병은 12개이므로 정답은 c입니다.", "ko4", "c", "declaration"),
    ("정답：Ｄ", "ko4", "d", "declaration"),
    ("정답은 (A) 입니다. B와 C는 사진에 없습니다.", "ko3", "a", "declaration"),
    ("정답: 녹차", "ko3", "c", "declaration"),
    ("The answer is 우유.", "ko3", "b", "declaration"),
    ("정답은 texture energy 입니다.", "en4", "d", "declaration"),
    ("정답은 **D**", "en4", "d", "declaration"),
    ("d가 맞아요. a는 색이 다릅니다.", "en5", "d", "declaration"),
    ("보기 중에서는 c가 가장 적절합니다.", "ko4", "c", "declaration"),
    # ---- Chinese and Japanese declarations (full-width punctuation)
    ("答案：A", "en2", "a", "declaration"),
    ("答案是C。", "en4", "c", "declaration"),
    ("正确答案为 B", "en3", "b", "declaration"),
    ("B选项正确", "en4", "b", "declaration"),
    ("不是A，答案是D", "en4", "d", "declaration"),
    ("【答案】C", "en3", "c", "declaration"),
    ("所以选项是A", "en2", "a", "declaration"),
    ("正解は b です。", "en3", "b", "declaration"),
    ("答えはDです", "en5", "d", "declaration"),
    ("Bが正解です。", "en2", "b", "declaration"),
    ("正解：「c」", "en4", "c", "declaration"),
    ("答案：（Ｅ）", "en5", "e", "declaration"),
    # ---- verbs of choice
    ("I'd go with A.", "en2", "a", "verb"),
    ("Choosing d, since the surface looks rough.", "en4", "d", "verb"),
    ("I select B.", "en3", "b", "verb"),
    ("I'll pick (c) here.", "en5", "c", "verb"),
    ("Going with option e.", "en5", "e", "verb"),
    ("I would choose A because the sign is red.", "en5", "a", "verb"),
    ("I wouldn't choose A; I'd go with C.", "en5", "c", "verb"),
    ("Not choosing b, selecting d instead.", "en4", "d", "verb"),
    ("Leaning towards B, though C is close.", "en3", "b", "verb"),
    ("Between B and C, I'd say C.", "en5", "c", "verb"),
    ("I opt for b.", "en2", "b", "verb"),
    ("I'm settling on (d).", "en5", "d", "verb"),
    ("I pick option A, the histogram.", "en4", "a", "verb"),
    ("b를 선택합니다.", "ko3", "b", "verb"),
    ("저는 d를 고르겠습니다.", "ko4", "d", "verb"),
    ("c로 하겠습니다.", "ko5", "c", "verb"),
    ("a를 선택하지 않고 b를 선택합니다.", "ko2", "b", "verb"),
    ("선택: e", "ko5", "e", "verb"),
    ("사진을 보니 C를 고릅니다.", "ko4", "c", "verb"),
    ("我选B。", "en3", "b", "verb"),
    ("选择C", "en4", "c", "verb"),
    ("应选D，因为纹理最明显", "en4", "d", "verb"),
    ("aを選びます。", "en2", "a", "verb"),
    # ---- a letter closing the reply after an explanation
    ("Comparing both panels, B.", "en2", "b", "trailing"),
    ("The left image shows a dark drink in a mug; A", "en3", "a", "trailing"),
    ("The drink is orange and cold. C.", "en3", "c", "trailing"),
    ("Looking at the colours → d", "en5", "d", "trailing"),
    ("The sign has a red circle with a slash, so: e", "en5", "e", "trailing"),
    ("Based on the text in the image, the choice is clear: **B**", "en4", "b", "trailing"),
    ("표지판의 글자를 보면, c", "ko5", "c", "trailing"),
    ("따라서 b", "ko2", "b", "trailing"),
    ("The cup's contents look like tea, which is not listed. Closest: (b)", "en3", "b", "trailing"),
    ("It looks dark brown with foam on top.\nA", "en3", "a", "trailing"),
    ("Option A? No, B.", "en2", "b", "trailing"),
    ("Eliminate A and B. C.", "en3", "c", "trailing"),
    ("The answer isn't B, it's D.", "en4", "d", "trailing"),
    ("A and C describe colour, B describes edges; the page says grey values, so A.", "en4", "a", "trailing"),
    ("병이 네 줄로 세 개씩 있으니 12개, 즉 C", "ko4", "c", "trailing"),
    ("Hmm, the hue is not relevant here... D", "en4", "d", "trailing"),
    # ---- a reply starting with its letter
    ("b", "en2", "b", "bare"),
    ("(B)", "en3", "b", "bare"),
    ("B. milk", "en3", "b", "bare"),
    ("c) green", "en5", "c", "bare"),
    ("**D**", "en4", "d", "bare"),
    ("A. The sign is red, not blue (B) or green (C).", "en5", "a", "bare"),
    ("B\n\nThe photo shows a cup of milk next to coffee beans.", "en3", "b", "bare"),
    ("a) yes", "en2", "a", "bare"),
    ("b 입니다", "ko2", "b", "bare"),
    ("(d) 20개", "ko4", "d", "bare"),
    ("C: 12개. 사진에 병이 12개 있습니다.", "ko4", "c", "bare"),
    ("【B】", "en3", "b", "bare"),
    ("（Ｂ）　ｍｉｌｋ", "en3", "b", "bare"),
    ("`c`", "en4", "c", "bare"),
    ("```\nd\n```", "en4", "d", "bare"),
    ("B", "ko5", "b", "bare"),
    ("Option C", "en4", "c", "bare"),
    ("①", "ko4", "a", "bare"),
    ("B, not C.", "en4", "b", "bare"),
    ("Clearly D; A, B and C can be ruled out.", "en4", "d", "bare"),
    ("E. black", "en5", "e", "bare"),
    ("A: histogram of grey values", "en4", "a", "bare"),
    ("<think>the answer is b</think>\nd", "en4", "d", "bare"),
    ("d.\n\nThe others (a, b, c) do not match.", "ko5", "d", "bare"),
    ("Probably (a).", "en2", "a", "bare"),
    # ---- the option's text instead of a letter
    ("It is milk.", "en3", "b", "option_exact"),
    ("Milk.", "en3", "b", "option_exact"),
    ("The page mentions the histogram of grey values.", "en4", "a", "option_exact"),
    ("orange juice", "en3", "c", "option_exact"),
    ("병이 12개 있습니다.", "ko4", "c", "option_exact"),
    ("우유가 담겨 있습니다.", "ko3", "b", "option_exact"),
    ("컵에는 커피가 아니라 우유가 들어 있어요.", "ko3", "b", "option_exact"),
    ("Coffee, not milk.", "en3", "a", "option_exact"),
    ("Coffee. Milk would look lighter.", "en3", "a", "option_exact"),
    ("예, 주차 금지 표지판이 있습니다.", "ko2", "a", "option_exact"),
    ("no", "en2", "b", "option_exact"),
    ("Yes, there is one.", "en2", "a", "option_exact"),
    ("GREEN", "en5", "c", "option_exact"),
    ("표지판에 '정숙'이라고 적혀 있습니다.", "ko5", "d", "option_exact"),
    ("The car is yellow.", "en5", "d", "option_exact"),
    ("Texture-energy", "en4", "d", "option_normalised"),
    ("the colourhue", "en4", "c", "option_normalised"),
    ("주차금지", "ko5", "a", "option_normalised"),
    ("일방 통행입니다", "ko5", "e", "option_normalised"),
    ("EDGE_GRADIENT", "en4", "b", "option_normalised"),
    # ---- a letter written as a label somewhere, and nothing else
    ("I believe (b) fits the photo best.", "en3", "b", "mention"),
    ("Hard to say; maybe **C** given the colour.", "en5", "c", "mention"),
    ("사진으로 보아 (d)가 가장 그럴듯해 보입니다.", "ko4", "d", "mention"),
    # ---- ambiguous on purpose: no letter
    ("", "en2", None, None),
    ("I cannot tell from this photo.", "en3", None, None),
    ("잘 모르겠습니다.", "ko2", None, None),
    ("The answer is B or C; I can't tell.", "en4", None, None),
    ("A cat is sitting on the mat.", "en2", None, None),
    ("The answer is a cat, so none fit.", "en3", None, None),
    ("It's either coffee or milk.", "en3", None, None),
    ("(a) and (b) are both plausible.", "en2", None, None),
    ("Not b.", "en2", None, None),
    ("Answer: 2", "en4", None, None),
    ("정답은 없습니다.", "ko4", None, None),
    ("E", "en4", None, None),
    ("I'd rather not guess between A and C.", "en4", None, None),
]


def naive_first_letter(text: str, options: dict[str, str]) -> str | None:
    """The baseline: the first standalone a-e in the reply."""
    m = re.search(r"\b([A-Ea-e])\b", text)
    return m.group(1).lower() if m and m.group(1).lower() in options else None


def test_the_table_covers_every_rule_in_every_size():
    assert len(TABLE) >= 150
    assert {rule for *_, rule in TABLE} >= set(RULES)
    assert {len(OPTIONS[o]) for _, o, _, _ in TABLE} == {2, 3, 4, 5}
    assert all(letter is None or letter in OPTIONS[o] for _, o, letter, _ in TABLE)


@pytest.mark.parametrize(("reply", "options", "letter", "rule"), TABLE)
def test_extract_letter(reply: str, options: str, letter: str | None, rule: str | None) -> None:
    got = extract_letter(reply, OPTIONS[options])
    assert (got.letter, got.rule) == (letter, rule)
    assert parse_letter(reply, OPTIONS[options]) == letter  # the backends' entry point agrees


def test_the_parser_beats_a_naive_first_letter_regex_on_the_table():
    ours = sum(extract_letter(r, OPTIONS[o]).letter == x for r, o, x, _ in TABLE)
    naive = sum(naive_first_letter(r, OPTIONS[o]) == x for r, o, x, _ in TABLE)
    assert ours == len(TABLE) and naive < 0.7 * len(TABLE)


@pytest.mark.parametrize(("extraction", "flag"), [
    (Extraction("b", "tag"), "parsed:tag"), (Extraction(None), "unparsed"),
])
def test_flag_names_the_rule(extraction: Extraction, flag: str) -> None:
    assert extraction.flag == flag


@pytest.mark.parametrize(("raw", "cleaned"), [
    ("（Ｂ）：ｍｉｌｋ", "(B):milk"),
    ("<think>A or B?</think> C", "C"),
    ("\\boxed{\\textbf{D}}", "\\boxed{D}"),
    ("정답은 ③", "정답은 (c)"),
])
def test_clean(raw: str, cleaned: str) -> None:
    assert clean(raw) == cleaned
