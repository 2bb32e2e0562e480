"""Which option a free-text reply chose: the one parser shared by every backend, ``vqa chat`` and the planner.

``extract_letter(text, options)`` tries the forms a model writes, from the most explicit to the least, and the
first rule that finds a valid, non-negated letter wins; the result names that rule (recorded as the decision's
flag ``parsed:<rule>``):

1. ``tag`` / ``boxed`` / ``json``: ``<answer>b</answer>`` (any case, left open, or a lone ``answer>``),
   ``\\boxed{B}``, ``{"answer": "c"}``; with several, the last one wins.
2. ``declaration``: "The answer is (C)", "Answer: b", "B is correct", ``정답은 b``, ``b가 정답``, ``答案：A``,
   ``正解は b``; the last one wins. What follows the marker may be an option's text ("정답: coffee").
3. ``verb``: "I'd go with A", "Choosing d, since...", "I select B.", ``b를 선택합니다``, ``选择C``; the last wins.
4. ``trailing``: a letter closing the reply after a separator or its own sentence ("Comparing both panels, B.").
5. ``bare``: a reply that starts with its letter ("B. milk", "(c)", "**D**") or a line holding only a letter.
6. ``option_exact`` then ``option_normalised``: one option's text quoted instead of a letter (exact words, case
   aside; then after ``agent.core.text.normalise``); when several options' texts occur, only one the reply starts
   with counts, and a text inside a longer one's match ("2개" in "12개") is not a hit.
7. ``mention``: the only letter written as a label ("(b)", "**b**", "option b") anywhere.

Everywhere, a negated letter or text does not count ("not b", "b is wrong", ``b는 정답이 아닙니다``, ``不是A``),
``<think>...</think>`` is skipped, full-width forms are folded (NFKC), circled ①-⑤ read as a-e, and a lone
"a"/"A" before a noun is the article. Left ambiguous on purpose (``None``): digits ("answer: 2"), two letters
joined ("B or C"), several options' texts with no lead, and letters outside the options.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.core.text import normalise

RULES: tuple[str, ...] = ("tag", "boxed", "json", "declaration", "verb", "trailing", "bare", "option_exact",
                          "option_normalised", "mention")


@dataclass(frozen=True)
class Extraction:
    """The chosen letter (``None``: no rule found one) and the rule that found it."""

    letter: str | None
    rule: str | None = None

    @property
    def flag(self) -> str:
        return f"parsed:{self.rule}" if self.letter else "unparsed"


# ---------------------------------------------------------------- building blocks

_OPEN = r"[(\[{【「『〈《〔*_`'\"$]*"
_CLOSE = r"[)\]}】」』〉》〕*_`'\"$]*"
_PREFIX = r"(?:(?:option|choice|letter)\s*|보기\s*|선택지\s*|选项\s*|選項\s*|選択肢\s*)?"
_LETTER = (rf"(?P<pre>{_PREFIX})(?P<open>{_OPEN})\s*(?<![A-Za-z0-9])(?<![A-Za-z]\.)(?P<x>[A-Ea-e])"
           rf"(?![A-Za-z0-9])(?!\.[A-Za-z])(?P<close>{_CLOSE})")
_JUNK = r"[\s*_#>~|]*"  # Markdown around markers: "**Answer:** B", "### Answer\nB"
# Words after "a"/"A" that show it is a letter, not the article ("A because ...", "a is correct").
_AFTER_LETTER_A = {"is", "was", "would", "should", "seems", "appears", "looks", "fits", "matches", "because",
                   "since", "as", "and", "or", "but", "for", "which", "that", "here", "then", "so",
                   "therefore", "best", "correctly", "instead", "rather", "too", "also", "only"}
_CIRCLED = str.maketrans({"①": "(a)", "②": "(b)", "③": "(c)", "④": "(d)", "⑤": "(e)"})

_NEG_BEFORE = re.compile(
    r"(?:\bnot|n't|\bnever|\bno|rather\s+than|instead\s+of|\bexcept|\bexcluding|\beliminat\w*|"
    r"\brul(?:e[sd]?|ing)\s+out|\bother\s+than|\bunlike|\bbesides|\bwithout|\bavoid\w*|不是|并非|並非|排除|除了|不选|不選|ではなく)"
    rf"\s*(?:the\s+)?(?:option|choice|answer|letter|보기|选项)?\s*{_OPEN}\s*$", re.IGNORECASE)
_NEG_AFTER = re.compile(
    r"^\s*[).\]]?\s*(?:(?:is|are|was|would\s+be|seems|looks)\s+)?(?:not\b|n't\b|incorrect|wrong|false|unlikely|"
    r"impossible|ruled\s+out|eliminated|excluded|can(?:not|'t)\s+be)"
    r"|^\s*번?\s*(?:(?:은|는|이|가|도)\s*(?:정답이\s*|답이\s*)?(?:아니|아닙|아님|아닌|틀|오답|제외)"
    r"|(?:아님|아닙|아니다|아니라|아니고|아닌|틀렸|오답|제외))"
    r"|^\s*(?:是)?\s*(?:错|錯|不对|不對|不是|不正确|不正確)"
    r"|^\s*(?:は|が)?\s*(?:不正解|違|間違|ではな|じゃな)", re.IGNORECASE)
_NEG_VERB = re.compile(r"(?:\bnot|n't|\bnever|\bavoid\w*|\bwithout|不)\s*(?:\w+\s+){0,2}$", re.IGNORECASE)


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_LEAD_DECLARATION = [
    # English: "the (final/correct) answer is", "my choice:", "correct option would be", "Answer -"
    _rx(rf"(?:\b(?:final|correct|right|best|my|the|most\s+\w+)\s+)*\b(?:answer|option|choice|response|selection)s?"
        rf"\b{_JUNK}(?:would\s+be|should\s+be|will\s+be|must\s+be|has\s+to\s+be|is\s+(?:likely|probably|clearly|"
        rf"therefore|thus|then|definitely|indeed)|is|was|=|:|-|–|—|→|=>){_JUNK}"),
    _rx(rf"\b(?:final\s+)?answer\b{_JUNK}"),  # "Answer B", "**Answer**\nb"
    _rx(r"(?:최종\s*)?(?:정답|답변|답)\s*(?:은|는|이|:|=|→|⇒|-)?\s*"),  # 정답은 b, 답: b
    _rx(r"(?:正确|正確)?(?:答案|答)[】\]]?\s*(?:是|为|為|应为|應為|应该是|應該是)?\s*:?\s*"),  # 答案：A, 【答案】C
    _rx(r"(?:选项|選項)\s*(?:是|为|為)\s*"),  # 选项是A
    _rx(r"(?:正解|答え|解答|回答)\s*(?:は|:)?\s*"),  # 正解は b
]
_POST_DECLARATION = [
    _rx(rf"^{_JUNK}(?:(?:is|would\s+be|seems\s+to\s+be|appears\s+to\s+be|must\s+be|should\s+be)\s+)?(?:the\s+)?"
        r"(?:correct|right|best|true|accurate|final\s+answer|answer)\b"),
    _rx(r"^\s*번?\s*(?:이|가|은|는)?\s*(?:가장\s*)?(?:정답|답|맞|올바|옳|적절|알맞|적합)"),  # b가 정답, b번이 맞습니다
    _rx(r"^\s*(?:选项|選項)?\s*(?:是)?\s*(?:正确|正確|对的|對的)"),  # B正确, B是正确的
    _rx(r"^\s*(?:が|は)\s*(?:正解|正しい)"),  # Bが正解
]
_LEAD_VERB = [
    _rx(r"\b(?:go(?:ing|es)?|went)\s+(?:with|for)\s+|\b(?:choose|chose|choosing|chosen|select|selected|selecting|"
        r"pick|picked|picking|opt(?:s|ed|ing)?\s+for|settl(?:e|es|ed|ing)\s+(?:on|for)|lean(?:s|ed|ing)?\s+"
        r"(?:towards?|to)|vote[sd]?\s+for|voting\s+for)\s+(?:the\s+)?(?:answer\s+)?"),
    _rx(r"\b(?:i(?:'d|\s+would)?|would)\s+say\s+"),  # "I'd say C"
    _rx(r"(?:선택|고른\s*것|고른\s*답|제\s*선택)\s*(?:은|는|:|하면)?\s*"),  # 선택: b
    _rx(r"(?:我|应|應|应该|應該)?(?:选择|選擇|选|選)\s*(?=[(\[【「*`'\"]*\s*[A-Ea-e](?![A-Za-z]))"),  # 选择C, 我选B
]
_POST_VERB = [
    _rx(r"^\s*번?\s*(?:을|를|으로|로)\s*(?:선택|고르|골라|고릅|고를|골랐|택하|택합|택할|하겠|할게|합니다|정하|정했)"),
    _rx(r"^\s*を\s*(?:選|選択)"),  # bを選びます
]
_KO_NEG_TAIL = re.compile(r"^\S*?(?:지\s*않|지\s*마|이\s*아니|가\s*아니|\s*아니|\s*아닙)")
_TAG = _rx(r"<\s*(?:final[_\s-]?)?answer\s*>|(?<![<\w/])answer>")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{\s*([^{}]*)\}")
_JSON = _rx(r"[\"']?\banswer[\"']?\s*:\s*[\"']\s*([^\"']{1,80})[\"']")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mathtt|texttt)\s*\{([^{}]*)\}")
_SEPARATOR_BEFORE = _rx(r"(?:^|[,;:—–\-→=>(\n.!?。…]|\b(?:so|thus|therefore|hence|then|finally|overall|is|pick|"
                        r"choice|option|it's|it\s+is)|따라서|그러므로|결론적으로|즉|所以|因此|故|よって|したがって)\s*$")
_LETTER_RX = re.compile(_LETTER, re.IGNORECASE)
_ADVERB = r"(?:(?:clearly|probably|likely|definitely|surely|obviously|perhaps|maybe|most\s+likely)\s*,?\s*)?"
_AT_START = re.compile(rf"^{_JUNK}{_ADVERB}{_LETTER}(?=[\s.:;,、。!)\]-]|$)", re.IGNORECASE)
_LONE_LINE = re.compile(rf"^{_JUNK}{_LETTER}{_JUNK}[.:]?\s*$", re.IGNORECASE | re.MULTILINE)
_AT_END = re.compile(rf"{_LETTER}[\s.!。!)\]】*`'\"$]*\Z", re.IGNORECASE)
_CONTRAST = _rx(r"^[^.!?。\n]{0,14}?(?:아니라|아니고|\bbut(?:\s+rather)?|\brather|而是|ではなく)\s*,?\s*")
_JOINED = re.compile(rf"^{_CLOSE}\s*(?:or|/|and|또는|或|か)\s*{_OPEN}\s*[A-Ea-e](?![A-Za-z0-9])", re.IGNORECASE)
_JOINED_BEFORE = re.compile(rf"(?<![A-Za-z0-9])[A-Ea-e]{_CLOSE}\s*(?:or|/|and|또는|或|か)\s*{_OPEN}\s*$", re.IGNORECASE)


def clean(text: str) -> str:
    """The reply as the rules read it: no closed ``<think>`` block, LaTeX ``\\text{}`` unwrapped, code fences as
    line breaks, circled numbers as ``(a)``..``(e)``, full-width forms folded (NFKC)."""
    text = _THINK.sub(" ", text.translate(_CIRCLED))
    text = unicodedata.normalize("NFKC", text)
    for _ in range(3):
        text = _LATEX_TEXT.sub(r"\1", text)
    return re.sub(r"```[A-Za-z]*", "\n", text).strip()


# ---------------------------------------------------------------- letters, negation, option text

def _is_article(m: re.Match[str], text: str) -> bool:
    """A lone "a"/"A" before a word ("a cat", "A dog is ...") is the article, not a letter."""
    if m.group("x").lower() != "a" or m.group("pre") or m.group("open") or m.group("close"):
        return False
    nxt = re.match(r"\s+([A-Za-z]+)", text[m.end():])
    return bool(nxt) and nxt.group(1).lower() not in _AFTER_LETTER_A


def _negated(text: str, start: int, end: int) -> bool:
    before = re.split(r"[.!?。\n;]", text[max(0, start - 40):start])[-1]
    return bool(_NEG_BEFORE.search(before) or _NEG_AFTER.search(text[end:end + 30]))


def _letter(m: re.Match[str] | None, text: str, options: Mapping[str, str]) -> str | None:
    """The letter of a ``_LETTER`` match when it is an option, not the article, not negated, not "B or C"."""
    if m is None:
        return None
    x = m.group("x").lower()
    if x not in options or _is_article(m, text) or _negated(text, m.start("x"), m.end()):
        return None
    joined = _JOINED.match(text[m.end():]) or _JOINED_BEFORE.search(text[max(0, m.start("x") - 20):m.start("x")])
    return None if joined else x


def _option_spans(text: str, option: str) -> list[tuple[int, int]]:
    """Where ``option`` occurs in ``text`` as whole words (case aside); Hangul may carry a particle after it."""
    tail = r"(?![A-Za-z0-9])" if option[-1:].isascii() else ""
    head = r"(?<![A-Za-z0-9])" if option[:1].isascii() else r"(?<![\uac00-\ud7a3])"
    rx = re.compile(head + r"\s+".join(map(re.escape, option.split())) + tail, re.IGNORECASE)
    return [(m.start(), m.end()) for m in rx.finditer(text)]


def _option_at(text: str, pos: int, options: Mapping[str, str]) -> str | None:
    """The option whose text starts at ``pos`` (after quotes or brackets), the longest when several do."""
    rest = re.sub(rf"^{_OPEN}\s*", "", text[pos:pos + 200])
    hits = [k for k, v in options.items() if v and any(s == 0 for s, _ in _option_spans(rest, v))]
    hits = hits or [k for k, v in options.items() if normalise(v) and normalise(rest).startswith(normalise(v))]
    return max(hits, key=lambda k: len(options[k])) if hits else None


def _content(content: str, options: Mapping[str, str]) -> str | None:
    """The letter inside a tag, box or JSON value: a letter at its start, else an option's text."""
    m = _AT_START.match(content.strip())
    return _letter(m, content.strip(), options) or _option_at(content, 0, options)


# ---------------------------------------------------------------- the rules

Candidate = tuple[int, str]  # (position, letter)


def _tags(text: str, options: Mapping[str, str]) -> list[tuple[int, str, str]]:
    found: list[tuple[int, str, str]] = []
    for m in _TAG.finditer(text):
        if text[max(0, m.start() - 1):m.start()] == "/" or text[m.start():m.start() + 2] == "</":
            continue
        body = re.split(r"<", text[m.end():m.end() + 200], maxsplit=1)[0]
        if (x := _content(body, options)) is not None:
            found.append((m.start(), x, "tag"))
    for m in _BOXED.finditer(text):
        if (x := _content(m.group(1), options)) is not None:
            found.append((m.start(), x, "boxed"))
    for m in _JSON.finditer(text):
        if (x := _content(m.group(1), options)) is not None:
            found.append((m.start(), x, "json"))
    return found


def _leads(text: str, options: Mapping[str, str], patterns: list[re.Pattern[str]], verb: bool,
           allow_text: bool) -> list[Candidate]:
    found = []
    for rx in patterns:
        for m in rx.finditer(text):
            if verb and _NEG_VERB.search(text[max(0, m.start() - 30):m.start()]):
                continue
            skip = re.match(r"(?:not|never)\s+", text[m.end():], re.IGNORECASE)  # "answer is not a but c"
            lm = _LETTER_RX.match(text, m.end() + (skip.end() if skip else 0))
            x = _letter(lm, text, options) if lm else None
            if x is None and lm and (cm := _CONTRAST.match(text[lm.end():])):  # "not a but c", "a가 아니라 c"
                lm = _LETTER_RX.match(text, lm.end() + cm.end())
                x = _letter(lm, text, options) if lm else None
            if x is None and allow_text and not (lm and lm.group("x").lower() in options):
                x = _option_at(text, m.end(), options)
                if x is not None and _negated(text, m.end(), m.end()):
                    x = None
            if x is not None:
                found.append((m.start(), x))
    return found


def _posts(text: str, options: Mapping[str, str], patterns: list[re.Pattern[str]]) -> list[Candidate]:
    found = []
    for lm in _LETTER_RX.finditer(text):
        x = _letter(lm, text, options)
        if x is None:
            continue
        after = text[lm.end():]
        for rx in patterns:
            pm = rx.match(after)
            if pm and not _KO_NEG_TAIL.match(after[pm.end():pm.end() + 12]):
                found.append((lm.start(), x))
                break
    return found


def _declarations(text: str, options: Mapping[str, str]) -> list[Candidate]:
    return _leads(text, options, _LEAD_DECLARATION, False, True) + _posts(text, options, _POST_DECLARATION)


def _verbs(text: str, options: Mapping[str, str]) -> list[Candidate]:
    return _leads(text, options, _LEAD_VERB, True, False) + _posts(text, options, _POST_VERB)


def _trailing(text: str, options: Mapping[str, str]) -> list[Candidate]:
    m = _AT_END.search(text)
    if m is None or (x := _letter(m, text, options)) is None:
        return []
    before = text[:m.start()]
    return [(m.start(), x)] if before.strip(" *_#>") and _SEPARATOR_BEFORE.search(before) else []


def _bare(text: str, options: Mapping[str, str]) -> list[Candidate]:
    first = _letter(_AT_START.match(text), text, options)
    if first is not None:
        return [(0, first)]
    return [(m.start(), x) for m in _LONE_LINE.finditer(text) if (x := _letter(m, text, options))][:1]


def _options_exact(text: str, options: Mapping[str, str]) -> list[Candidate]:
    spans = {k: [s for s in _option_spans(text, v) if not _negated(text, *s)] for k, v in options.items() if v}
    free = {k: [s for s in ss if not _within(s, spans, k)] for k, ss in spans.items()}
    return _one_or_leading(text, {k: ss[0][0] for k, ss in free.items() if ss})


def _within(s: tuple[int, int], spans: dict[str, list[tuple[int, int]]], k: str) -> bool:
    """``s`` (a match of option ``k``) lies inside a longer match of another option ("2개" in "12개")."""
    return any(o != k and a <= s[0] and s[1] <= b and b - a > s[1] - s[0] for o, ss in spans.items() for a, b in ss)


def _options_normalised(text: str, options: Mapping[str, str]) -> list[Candidate]:
    """Options whose ``normalise``d text equals a run of whole words ("Texture-energy", "주차금지"); a Hangul
    run may end in a particle of up to 3 syllables ("일방 통행입니다")."""
    words = [w for w in (normalise(w) for w in re.split(r"[\W_]+", text)) if w]
    norm = {k: normalise(v) for k, v in options.items() if normalise(v)}
    hits: dict[str, int] = {}
    for k, v in norm.items():
        for i in range(len(words)):
            joined = ""
            for w in words[i:]:
                joined += w
                if len(joined) >= len(v):
                    break
            tail = joined[len(v):]
            if joined.startswith(v) and (not tail or (len(tail) <= 3 and re.fullmatch(r"[\uac00-\ud7a3]+", tail)
                                                      and not v[-1].isascii())):
                hits.setdefault(k, i)
    hits = {k: i for k, i in hits.items() if not any(o != k and norm[k] in norm[o] for o in hits)}
    lead = [k for k, i in hits.items() if i == 0]
    return [(i, k) for k, i in hits.items()] if len(hits) == 1 else [(0, lead[0])] if len(lead) == 1 else []


def _one_or_leading(text: str, first_at: dict[str, int]) -> list[Candidate]:
    """One option's text found: it. Several: the one the reply starts with, else none (ambiguous)."""
    if len(first_at) == 1:
        return [(p, k) for k, p in first_at.items()]
    lead = [k for k, p in first_at.items() if not re.sub(rf"^{_JUNK}{_OPEN}", "", text[:p]).strip()]
    return [(0, lead[0])] if len(lead) == 1 else []


def _mentions(text: str, options: Mapping[str, str]) -> list[Candidate]:
    found = [(m.start(), x) for m in _LETTER_RX.finditer(text)
             if (m.group("pre") or (m.group("open") and m.group("close"))) and (x := _letter(m, text, options))]
    return found if len({x for _, x in found}) == 1 else []


_TIERS: list[tuple[str, Callable[[str, Mapping[str, str]], list[Candidate]], bool]] = [
    ("declaration", _declarations, True), ("verb", _verbs, True), ("trailing", _trailing, True),
    ("bare", _bare, False), ("option_exact", _options_exact, False), ("option_normalised", _options_normalised, False),
    ("mention", _mentions, True),
]


def extract_letter(text: str, options: Mapping[str, str]) -> Extraction:
    """The option letter a free-text ``text`` chose among ``options`` (letter -> text), and the rule that found it."""
    options = {k.lower(): v for k, v in options.items()}
    t = clean(text or "")
    if not t or not options:
        return Extraction(None)
    tags = sorted(_tags(t, options))
    if tags:
        return Extraction(tags[-1][1], tags[-1][2])
    for rule, find, last in _TIERS:
        found = sorted(find(t, options))
        if found:
            return Extraction(found[-1 if last else 0][1], rule)
    return Extraction(None)


def parse_letter(text: str, options: Mapping[str, str]) -> str | None:
    """Just the letter of :func:`extract_letter` (``None`` when no rule found one)."""
    return extract_letter(text, options).letter
