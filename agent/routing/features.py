"""What a question's options (and its wording) say about the tools it needs: pure functions, no model.

``option_features(question, options)`` gives one number in [0, 1] per name in ``FEATURES``:

- ``text``: share of options that look like text to be read — dates, times, prices, measures, codes, phone
  numbers, large bare numbers (``2024.03.01``, ``오후 3시``, ``3,500원``, ``500ml``, ``3A``, ``7번``, ``143``);
- ``name``: share of options that look like names rather than common words — Latin script in a Korean question,
  ALL-CAPS or capitalised unknown words in an English one (``KIM``, ``Blue Bottle``), Hangul words that are not
  common nouns (``행복분식``; common words come from ``data/common_words.txt`` and the detect tool's lexicon);
- ``count``: share of options that are small counts (``2명``, ``세 마리``, ``3``, ``two``);
- ``position``: share of options that are places in the picture (``왼쪽``, ``소파 위``, ``on the left``);
- ``colour``: share of options that are colours;
- ``culture``: share of options that are Korean culture words (``송편``, ``경복궁``, ``gayageum``, ``고려``;
  ``data/culture_words.txt``): things the retrieve tool knows;
- ``yesno``: every option is yes/no (``예``/``아니오``, ``있다``/``없다``, ``yes``/``no``);
- ``presence``: the question asks whether something is there (``강아지가 있나요?``, ``Is there a ...``,
  ``사진에 없는 것은?``) — not ``어디에 있나요`` (where), ``열려 있나요`` (a state) or ``하고 있나요`` (an activity);
- ``yesno_presence``: both — yes/no options raise ``detect`` only when the question asks about presence;
- ``spatial``: the question itself names a place or relation in the picture (``옆``, ``밑``, ``맨 앞``,
  ``on top of``, ``holding``, ``tallest``): broader than the ``som`` keyword rules, so the model can tell a
  question about signs from one about *where* a sign is. Plain ``위에``/``안에`` (on, in) are left out: they mostly
  say where counted things are ("테이블 위에 접시가 몇 개").
- ``reading``: the question asks for something that is usually printed — a price, a date or time, a product,
  shop or station name, a number on a thing, a destination (``얼마``, ``상품명``, ``유통기한``, ``등번호``,
  ``how much``, ``expiry``, ``what time``, ``bound for``): soft evidence for ``ocr``, broader than its rules;
- ``attribute``: the question asks how something looks or feels — its colour, shape, material, pattern, a face's
  expression, a mood, a posture, the weather or season (``바탕색은``, ``무슨 모양``, ``표정``, ``what colour``,
  ``made of``): evidence against ``ocr`` even when the thing is a sign or a label (``asks_appearance``: the colour,
  shape, material or pattern part, which also vetoes the ``ocr`` keyword rules).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from importlib.resources import files

from agent.core.phrases import LEXICON, MODIFIERS, parse_count, parse_yes_no, strip_particle

FEATURES: tuple[str, ...] = ("text", "name", "count", "position", "colour", "culture", "yesno", "presence",
                             "yesno_presence", "spatial", "reading", "attribute")

_MONTHS = r"jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec"
_TEXTLIKE = re.compile("|".join([
    r"\d{4}\s*[./-]\s*\d{1,2}\s*[./-]\s*\d{1,2}", r"\b\d{1,2}\s*/\s*\d{1,2}(?:\s*/\s*\d{2,4})?\b",  # dates
    r"\d{1,2}\s*월(?:\s*\d{1,2}\s*일)?", r"\d{1,2}\s*일\b", r"\b(?:19|20)\d{2}\s*년?\b",
    rf"\b(?:{_MONTHS})[a-z]*\.?\s+\d{{1,2}}\b", r"[월화수목금토일]요일", r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)day\b",
    r"\b\d{1,2}(?:st|nd|rd|th)\s+century\b", r"\d+\s*세기",
    r"\b\d{1,2}:\d{2}\b", r"(?:오전|오후|새벽|밤)\s*\d{1,2}\s*시", r"\d{1,2}\s*시(?:\s*\d{1,2}\s*분)?",  # times
    r"\b\d{1,2}\s*(?:a\.?m\.?|p\.?m\.?)(?![a-z])",
    r"[$₩€£¥]\s*\d", r"\d[\d,.]*\s*(?:원|won|달러|dollars?|엔|yen|유로|euros?)(?![a-z])", r"\b\d+\.\d{2}\b",  # prices
    r"\d+(?:[.,]\d+)?\s*(?:ml|l|g|kg|mg|km|cm|mm|m|kcal|cal|km/h|mph|inch(?:es)?|인치|%|°c|°f|°|℃|도|호실|호|번지|번)"
    r"(?![a-z가-힣])", r"\d+\s*층(?![가-힣])",  # measures, rooms, floors, numbers on things
    r"\b\d{2,4}-\d{3,4}-\d{4}\b", r"^\d+\s*[-:]\s*\d+$",  # phone numbers, scores
    r"\b(?=[a-z]*\d)(?=\d*[a-z])[a-z\d]{2,}(?:-[a-z\d]+)*\b",  # codes mixing letters and digits (3a, r5, ktx-123)
    r"^0\d+$", r"^\d{3,}$",  # numbers that are read, not counted (bus lines, rooms, years)
]))
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_LATIN = re.compile(r"[A-Za-z]{2,}")
_VERBISH = re.compile(r"(?:다|요|기|음|함|게|고)$")
_COLOURS_EN = {"red", "orange", "yellow", "green", "blue", "navy", "purple", "pink", "white", "black", "grey", "gray",
               "brown", "beige", "gold", "silver", "violet", "turquoise", "khaki"}
_POSITION = re.compile(r"왼쪽|오른쪽|좌측|우측|앞쪽|뒤쪽|위쪽|아래쪽|가운데|중앙|한가운데|맨\s*(?:앞|뒤|위|아래)|"
                       r"(?:^|\s)(?:위|아래|앞|뒤|옆|밑|안|사이|근처|곁|너머)$|"
                       r"\b(?:left|right|front|behind|above|below|beside|under|next to|on top|middle|centre|center|"
                       r"between|near|corner)\b|^(?:on|in|under|by|at|against|inside|across) (?:the|a)\b")
_SPATIAL_Q = re.compile(r"왼|오른|좌측|우측|위쪽|아래쪽|앞쪽|뒤쪽|뒤편|가운데|중앙|옆(?!면)|앞에|뒤에|아래|밑|사이|"
                        r"너머|근처|곁|맞은편|건너편|꼭대기|구석|끝에|맨\s*(?:앞|뒤|위|아래)|번째|들고|쥐고|손에|"
                        r"어디에(?!서)|(?:가장|제일)\s*(?:큰|작은|가까운|먼|멀리|높은|높이|낮은|긴|짧은|앞|뒤)|"
                        r"(?:누워|앉아|서|숨어|엎드려|기대어|매달려|올라가)\s*있는\s*곳|타고\s*있는|"
                        r"(?:위|안|속)에\s*(?:누워|앉아|놓인|놓여|올라|들어|숨어|서\s*있|걸린|걸려|꽂힌)|"
                        r"\b(?:the|to|on|at) (?:far |very )?(?:left|right)\b|"
                        r"\b(?:left|right)(?:-hand)? (?:side|corner|of|end)\b|"
                        r"\b(?:above|below|under|beneath|behind|in front|front row|next to|beside|between|middle|"
                        r"cent(?:er|re) of|corner|top|bottom|inside|near|closest|nearest|farthest|largest|smallest|"
                        r"tallest|shortest|holding|lying|sitting on|hanging)\b|\bwhere (?:is|are) (?:the|a|an)\b|"
                        r"\b(?:riding|sleeping|lying|sitting|standing|resting|perched|parked|leaning|hiding)\s+"
                        r"(?:on|in|under|against|at|by|near|inside|beside)\b|"
                        r"\bat the (?:front|back|end|edge|top|bottom|far end)\b|\bin the shade\b|"
                        r"\b(?:top|bottom|lowest|highest|upper|lower|first|second|third|last) (?:shelf|row|step|floor of)\b")
_READING_Q = re.compile(r"(?<!개수는 )(?<!수는 )얼마(?!나)|요금|값은|가격|상품명|제품명|상호|이름표|명찰|번호|등번호|호실|유통기한|날짜|며칠|"
                        r"몇\s*층|(?:으|하)?라고\s*(?:되어|적혀|쓰여|나와|표시)|어디로|어디행|목적지|이어지|향하|까지\s*가|"
                        r"(?:가게|학원|식당|카페|병원|회사|상점|약국|호텔|학교|팀|브랜드|제품|상품|정류장|거리|도로)"
                        r"[은는이가의]?\s*(?:이름|명칭)|"
                        r"몇\s*시|몇\s*월|요일|시각|행선지|종점|종착|정류장|역은|역\s*이름|전화|할인|용량|칼로리|"
                        r"\b(?:how much|cost|price|fee|expir\w*|date|what time(?! of)|when does|which day|bound for|headed|"
                        r"destination|number (?:on|of the)|name of (?:the|this)|called\?|brand|flavou?r|author|"
                        r"platform|which gate|gate number|room number|speed limit|percent|discount|score|which floor|door plate|"
                        r"name ?plate|name tag|going|lead(?:s|ing)? to|exit for)\b")
_APPEARANCE_Q = re.compile(r"무슨\s*색|어떤\s*색|몇\s*가지\s*색|색깔|색상|바탕색|(?:의|는|은)\s*색(?:은|이)|모양|재질|소재|무늬|"
                           r"무엇으로\s*(?:만들|되어)|\b(?:what|which) colou?rs?\b|\bcolou?r (?:is|are|of)\b|"
                           r"\bwhat shape\b|\bshape of\b|\bmade (?:of|from)\b|\bmaterial\b|\bpattern\b")
_ATTRIBUTE_Q = re.compile(r"표정|기분|감정|분위기|느낌|자세|날씨|계절|\b(?:expression|mood|feel(?:ing|s)?|emotion|posture|"
                          r"weather|season|atmosphere)\b")
_DESTINATION = re.compile(r"\b(?:going|headed|heading|bound|destination)\b|어디로|행선지|종착")
_KO_WH = re.compile(r"어디|무엇|뭐|뭘|무슨|어떤|어떻게|어느|누가|누구|왜|언제|몇|얼마")
_KO_PRESENCE = re.compile(r"(?:[이가도]|은|는)\s*(?:있|보이|보입)(?:나요|습니까|니까|니|어요|어|나|는지요?|는가요?|을까요)|"
                          r"(?:찾을|볼)\s*수\s*있(?:나요|습니까|어요|을까요)")
_KO_ABSENT = re.compile(r"(?:없는|찾을\s*수\s*없는|보이지\s*않는)\s*(?:것|물건|동물|사람|물체)")
_EN_WH = re.compile(r"^(?:what|which|where|who|whom|whose|how|why|when)\b")
_EN_PRESENCE = re.compile(r"^(?:is|are) there\b|\bcan you (?:see|spot|find)\b|\bdo you see\b|"
                          r"\bdoes (?:the|this) (?:image|photo|picture|scene|room) (?:show|contain|have|include)\b|"
                          r"^(?:is|are) (?:anyone|anybody|someone|somebody|any)\b")
_EN_ABSENT = re.compile(r"\b(?:not|n't) (?:in|on|be found|visible|present|appear|shown)\b")


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Korean and English common words (``data/common_words.txt``) plus the detect tool's nouns and colours."""
    text = files("agent.routing").joinpath("data/common_words.txt").read_text(encoding="utf-8")
    words = {w.lower() for line in text.splitlines() if not line.startswith("#") for w in line.split()}
    return frozenset(words | culture_words() | set(LEXICON) | set(MODIFIERS))


@lru_cache(maxsize=1)
def culture_words() -> frozenset[str]:
    """Korean culture words, Hangul and romanised (``data/culture_words.txt``), lower-cased."""
    text = files("agent.routing").joinpath("data/culture_words.txt").read_text(encoding="utf-8")
    return frozenset(w.lower() for line in text.splitlines() if not line.startswith("#") for w in line.split())


def is_culture(option: str) -> bool:
    """A Korean culture word (``송편``, ``윷놀이``, ``Gyeongbokgung``), with or without a particle or article."""
    text = _norm(option).lower()
    text = re.sub(r"^(?:the|a|an)\s+", "", text)
    words, tokens = culture_words(), text.split()
    return (text.replace(" ", "") in words or strip_particle(text) in words
            or bool(tokens) and all(t in words or strip_particle(t) in words for t in tokens))


def asks_appearance(question: str) -> bool:
    """Does the question ask a colour, shape, material or pattern (not the text) of something?"""
    return bool(_APPEARANCE_Q.search(_norm(question).lower()))


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", s).strip())


def is_textlike(option: str) -> bool:
    """Dates, times, prices, measures, codes, phone numbers, large bare numbers."""
    return bool(_TEXTLIKE.search(_norm(option).lower()))


def is_name(option: str, korean_question: bool) -> bool:
    """A proper name to be read: Latin script in a Korean question, ALL CAPS or capitalised unknown words in an
    English one, or Hangul words none of which is a common word."""
    text, common = _norm(option), common_words()
    if not text or re.search(r"\d", text):
        return False
    if _HANGUL.search(text):
        tokens = text.split()
        return all(_HANGUL.search(t) and t not in common and strip_particle(t) not in common
                   and not _VERBISH.search(t) for t in tokens)
    if not _LATIN.search(text):
        return False
    if korean_question:
        return True
    words = re.findall(r"[A-Za-z][A-Za-z'.-]*", text)
    return any((w.isupper() and len(w) >= 2) or (w[0].isupper() and w.lower().strip(".") not in common)
               for w in words)


def is_count(option: str) -> bool:
    """A small count: ``2명``, ``세 마리``, ``3``, ``two``, ``4개 이상`` (not ``3 km``, ``10 AM``)."""
    if is_textlike(option):
        return False
    c = parse_count(_norm(option))
    return c is not None and c[0] <= 20


def is_position(option: str) -> bool:
    return bool(_POSITION.search(_norm(option).lower()))


def is_colour(option: str) -> bool:
    text = _norm(option).lower()
    tokens = text.split()
    return 0 < len(tokens) <= 3 and any(t in _COLOURS_EN or (t in MODIFIERS and MODIFIERS[t] in _COLOURS_EN)
                                        or t.endswith("색") for t in tokens)


def asks_presence(question: str) -> bool:
    """Does the question ask whether something is there (or which thing is not)?"""
    text = _norm(question).lower().rstrip("?.! ")
    if _HANGUL.search(text):
        if _KO_ABSENT.search(text):
            return True
        return bool(_KO_PRESENCE.search(text)) and not _KO_WH.search(text)
    if _EN_ABSENT.search(text):
        return True
    return bool(_EN_PRESENCE.search(text)) and not _EN_WH.search(text)


def option_kinds(question: str, options: list[str]) -> dict[str, list[str]]:
    """For each option-level feature, the options that have it (for explanations)."""
    korean = bool(_HANGUL.search(question))
    checks = {"text": is_textlike, "name": lambda o: not is_textlike(o) and not is_count(o) and is_name(o, korean),
              "count": is_count, "position": is_position, "colour": is_colour, "culture": is_culture}
    return {k: [o for o in options if f(o)] for k, f in checks.items()}


def option_features(question: str, options: list[str] | None) -> dict[str, float]:
    """One value in [0, 1] per name in ``FEATURES`` (all 0 for the option shares when there are no options)."""
    options = [o for o in (options or []) if o and o.strip()]
    n = len(options)
    kinds = option_kinds(question, options)
    feats = {k: (len(v) / n if n else 0.0) for k, v in kinds.items()}
    yesno = float(n >= 2 and all(parse_yes_no(o) is not None for o in options))
    presence = float(asks_presence(question))
    q = _norm(question).lower()
    spatial = float(bool(_SPATIAL_Q.search(q)) and not _DESTINATION.search(q))
    reading = float(bool(_READING_Q.search(q)))
    attribute = float(bool(_APPEARANCE_Q.search(q) or _ATTRIBUTE_Q.search(q)))
    feats.update(yesno=yesno, presence=presence, yesno_presence=yesno * presence, spatial=spatial, reading=reading,
                 attribute=attribute)
    return {k: feats[k] for k in FEATURES}
