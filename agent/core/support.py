"""How the built-in evidence types bear on the options: ``Evidence.support`` of ``OcrEvidence``,
``RetrieveEvidence`` and ``DetectEvidence`` names these scorers (``scorer = "agent.core.support:score_ocr"``).

In ``agent.core``: it imports only the pure text helpers (``agent.core.text``, ``agent.core.phrases``) and the schema's types
for annotations, so the evidence types can name it without a cycle. The evidence reasoner
(``agent.reasoners.evidence``) adds the supports up.

OCR support (``ocr_support``) is the best of four readings, so an exact reading always ranks first:

- the option's whole text (after ``normalise``) inside one span: that span's confidence;
- inside the text of all spans joined in reading order (a phrase broken across lines): 0.9;
- misread as a whole inside one span ("NUPARKING" for "NO PARKING": words run together, a letter wrong): the
  best ``difflib`` ratio, at least ``FUZZY``, between the option and a stretch of the span as long as it,
  as ``0.9 * ratio * (0.7 + 0.3 * confidence)`` (options of 4+ characters and no digit);
- word coverage (``coverage``): each option word is matched to the OCR word that stands for it best (equal; the
  same word with a plural or a Hangul particle; a misreading with ``difflib`` ratio >= ``FUZZY``, except in
  numbers, where only letters read for digits are forgiven, "100OmL" = "1000mL"; an OCR word inside the option
  word, read in part: for Hangul (2+ syllables) credited by its share of the syllables, else (3+ letters) by half
  its share). The support is
  ``0.9 * (words + characters) / 2 * (0.7 + 0.3 * confidence) * (0.85 + 0.15 * order)``: the share of option
  words found and the share of their characters, the matched words' OCR confidence (weighted by characters),
  and the share of matched words that appear in the option's order.

Only whole OCR words count: characters shared across unrelated words ("te", "ex", "xt" of "extreme" and
"texture") give nothing, so an option none of whose words were read never outranks one with words read.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Sequence

from agent.core.phrases import is_polar, parse_yes_no
from agent.core.text import normalise

if TYPE_CHECKING:
    from agent.core.schema import DetectEvidence, OcrEvidence, Question, RetrieveEvidence, TextSpan

_NEGATION = re.compile(r"아닌|않은|없는|틀린|\bnot\b|\bexcept\b|\bisn't\b|\bnever\b", re.IGNORECASE)


def is_negated(question: str) -> bool:
    """``"...이 아닌 것은?"`` / ``"Which is NOT ..."``: the answer is the option the evidence does not support."""
    return bool(_NEGATION.search(question))


def _bigrams(s: str) -> set[str]:
    return {s[i : i + 2] for i in range(len(s) - 1)} if len(s) > 1 else {s}


def text_support(option: str, found: str) -> float:
    """How much of ``option`` appears in ``found``: 1.0 for a substring, else the share of its character bigrams.

    A one-character option only counts as a whole word (``"다"`` is not found in ``"다른"``).
    """
    o, f = normalise(option), normalise(found)
    if not o or not f:
        return 0.0
    if len(o) == 1:
        return float(any(normalise(w) == o for w in found.split()))
    if o in f:
        return 1.0
    return len(_bigrams(o) & _bigrams(f)) / len(_bigrams(o))


FUZZY = 0.8  # difflib ratio from which an OCR word is a misreading ("wiveniioe" ~ "wivenhoe"; not "centre" ~ "central")
_WORD = re.compile(r"[^\W_]+")
_HANGUL = re.compile(r"[\uac00-\ud7a3]+")
_AS_DIGITS = str.maketrans("oilszb", "011528")  # letters OCR reads for digits ("100OmL")


def words(text: str) -> list[str]:
    """Lower-case NFKC words: letters, digits and Hangul runs (``"of grey values:" -> ["of", "grey", "values"]``)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def word_credit(want: str, seen: str) -> float:
    """How well the OCR word ``seen`` stands for the option word ``want``, in [0, 1] (see the module docstring)."""
    if want == seen:
        return 1.0
    if len(want) >= 2 and seen.startswith(want):
        extra = seen[len(want):]
        if extra in ("s", "es") or (len(extra) <= 2 and _HANGUL.fullmatch(extra) and _HANGUL.fullmatch(want)):
            return 1.0
    if any(c.isdigit() for c in want + seen):  # one digit changes a number: only OCR's letter-for-digit slips
        return float(want.translate(_AS_DIGITS) == seen.translate(_AS_DIGITS))
    if len(want) >= 4 and len(seen) >= 3:
        ratio = SequenceMatcher(None, want, seen, autojunk=False).ratio()
        if ratio >= FUZZY:
            return ratio
    if _HANGUL.fullmatch(want) and len(seen) >= 2 and seen in want:
        return len(seen) / len(want)
    if len(seen) >= 3 and seen in want:  # a word OCR read in part ("ark" of "Parks"): half its share
        return 0.5 * len(seen) / len(want)
    return 0.0


@dataclass(frozen=True)
class Coverage:
    """How much of an option the OCR words cover: shares of its words and characters, in-order share, confidence."""

    words: float
    chars: float
    order: float
    confidence: float

    @property
    def support(self) -> float:
        return 0.9 * (self.words + self.chars) / 2 * (0.7 + 0.3 * self.confidence) * (0.85 + 0.15 * self.order)


def coverage(option: str, spans: Sequence[TextSpan]) -> Coverage:
    """Match each option word to its best OCR word (credit, then confidence, then the first one after the previous
    match) and sum up; see the module docstring."""
    seen = [(w, s.confidence) for s in spans for w in words(s.text)]
    want = words(option)
    if not want or not seen:
        return Coverage(0.0, 0.0, 0.0, 0.0)
    matched: list[tuple[int, float, float, int]] = []  # (length, credit, confidence, position)
    last = -1
    for t in want:
        credit, conf, pos = max(((word_credit(t, w), q, i) for i, (w, q) in enumerate(seen)),
                                key=lambda m: (m[0], m[1], m[2] > last, -m[2]))
        if credit > 0:
            matched.append((len(t), credit, conf, pos))
            last = pos
    if not matched:
        return Coverage(0.0, 0.0, 0.0, 0.0)
    total_chars = sum(len(t) for t in want)
    weight = sum(n * c for n, c, _, _ in matched)
    return Coverage(words=sum(c for _, c, _, _ in matched) / len(want), chars=weight / total_chars,
                    order=in_order_share([p for *_, p in matched]),
                    confidence=sum(n * c * q for n, c, q, _ in matched) / weight)


def in_order_share(positions: Sequence[int]) -> float:
    """Length of the longest increasing run-in-order (subsequence) over the number of positions; 1.0 for 0 or 1."""
    if len(positions) < 2:
        return 1.0
    best = [1] * len(positions)
    for i, p in enumerate(positions):
        best[i] = 1 + max((best[j] for j in range(i) if positions[j] < p), default=0)
    return max(best) / len(positions)


def misread_support(option: str, spans: Sequence[TextSpan]) -> float:
    """The option misread as a whole inside one span (see the module docstring); 0 below ``FUZZY``."""
    o, best = normalise(option), 0.0
    if len(o) < 4 or any(c.isdigit() for c in o):
        return 0.0
    for s in spans:
        t = normalise(s.text)
        if len(t) < len(o):
            continue
        ratio = max(SequenceMatcher(None, o, t[i:i + len(o)], autojunk=False).ratio()
                    for i in range(len(t) - len(o) + 1))
        if ratio >= FUZZY:
            best = max(best, 0.9 * ratio * (0.7 + 0.3 * s.confidence))
    return best


def ocr_support(option: str, spans: Sequence[TextSpan]) -> float:
    """The support of ``option`` by OCR ``spans`` (in reading order), in [0, 1]: the best of an exact reading in
    one span (its confidence), in all spans joined (0.9), a misreading and word coverage; see the module docstring.
    A one-character option only counts as a whole word."""
    o = normalise(option)
    if not o or not spans:
        return 0.0
    if len(o) == 1:
        found = [s.confidence for s in spans if o in (normalise(w) for w in s.text.split())]
        return max(found + [0.9]) if found else 0.0
    in_span = max((s.confidence for s in spans if o in normalise(s.text)), default=0.0)
    joined = 0.9 if o in normalise(" ".join(s.text for s in spans)) else 0.0
    return max(in_span, joined, misread_support(option, spans), coverage(option, spans).support)


def score_ocr(ev: OcrEvidence, q: Question) -> dict[str, float]:
    """Support of each option by the text read in the image (``ocr_support``)."""
    return {letter: ocr_support(option, ev.spans) for letter, option in q.options.items()}


# Similarity at or below which a retrieved answer counts for nothing. Scores run high (e5: 0.80-0.92 between
# different questions of examples/train.csv and test.csv, 0.93 for a question and its translation, ~1 for a
# repeat), and a count or colour answer ("2개") matches options of unrelated questions: only near-duplicates vote.
PRIOR_FLOOR = 0.9


def score_retrieve(ev: RetrieveEvidence, q: Question) -> dict[str, float]:
    """A prior from the answers of retrieved solved questions.

    A retrieved question asked the same way (both negated, "...아닌 것은?", or neither) votes for the options
    whose text equals its answer text (after ``normalise``), with its similarity rescaled from
    ``PRIOR_FLOOR..1`` to ``0..1``. An option's support is its share of the votes, times the strongest vote: a
    repeated question gives its answer almost 1, a paraphrase a little, a merely similar question nothing.
    For negated questions the reasoner negates every support (OCR presence means "not the answer"), while a
    retrieved answer already is the answer; so there the prior is returned as its complement,
    ``strength - support``, which the reasoner's negation turns back.
    """
    out = dict.fromkeys(q.letters, 0.0)
    by_text = {normalise(t): k for k, t in q.options.items()}
    negated = is_negated(q.text)
    votes: list[tuple[str, float]] = []
    for e in ev.entries:
        usable = e.kind == "question" and e.answer_text and is_negated(e.text) == negated
        letter = by_text.get(normalise(e.answer_text)) if usable else None
        weight = min(1.0, max(0.0, (e.score - PRIOR_FLOOR) / (1.0 - PRIOR_FLOOR)))
        if letter is not None and weight > 0:
            votes.append((letter, weight))
    total = sum(w for _, w in votes)
    if not total:
        return out
    strength = max(w for _, w in votes)
    for letter, w in votes:
        out[letter] += strength * w / total
    return {k: strength - v for k, v in out.items()} if negated else out


_ASKS_ABSENCE = re.compile(r"없(?:나요|습니까|어요|을까요|니)|\bis there no\b|\bare there no\b", re.IGNORECASE)


def score_detect(ev: DetectEvidence, q: Question) -> dict[str, float]:
    """Support from detected boxes, per option: a count option gets the probability that the count lies in its
    interval; a yes/no option the probability that there is at least one (예/yes to "...없나요?" means none);
    an option naming an object the best score of a box of that object. A count under a negated question
    ("...않은 사람은 몇 명?") is of a set the detector did not count, so it supports nothing."""
    out = dict.fromkeys(q.letters, 0.0)
    present = 1.0 - ev.count_probs.get(0, 0.0)
    absence = bool(_ASKS_ABSENCE.search(q.text))
    for k, option in q.options.items():
        yes = parse_yes_no(option)
        if k in ev.option_counts:
            lo, hi = ev.option_counts[k]
            if not is_negated(q.text):
                out[k] = sum(p for n, p in ev.count_probs.items() if n >= lo and (hi is None or n <= hi))
        elif yes is not None:
            says_present = yes != (absence and is_polar(option))
            out[k] = present if says_present else 1.0 - present
        elif k in ev.option_labels:
            out[k] = max((b.score for b in ev.boxes if b.label == ev.option_labels[k]), default=0.0)
    return out
