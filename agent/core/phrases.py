"""What to detect and what the options count: Korean/English target phrases and numeric options, no model import.

``target(question)`` turns a question (and its options) into English Grounding DINO prompts: the noun phrase of a
counting or existence question ("사진 속 사람은 몇 명인가요?" -> ``person``, "How many red cars are there?" ->
``red car``), else the options when they name objects ("고양이" / "개" -> ``cat`` / ``dog``). Korean nouns go through
``LEXICON``, a maintained table of common objects (COCO's classes and everyday things); an unknown Korean noun
falls back to what its counter implies (명 -> person, 마리 -> animal ...). ``parse_count`` reads an option as a
count interval: "3개", "세 개", "three", "3 people", "10명 이상", "2~3", "없음".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

# ---------------------------------------------------------------- the lexicon (Korean noun -> detector phrase)

LEXICON: dict[str, str] = {
    # people
    "사람": "person", "인물": "person", "남자": "man", "남성": "man", "여자": "woman", "여성": "woman",
    "아이": "child", "어린이": "child", "아기": "baby", "학생": "student", "소년": "boy", "소녀": "girl",
    "선수": "player", "군인": "soldier", "경찰": "police officer", "우주인": "astronaut", "우주비행사": "astronaut",
    "노인": "old person", "손님": "person", "관광객": "tourist", "얼굴": "face", "손": "hand",
    # animals
    "동물": "animal", "고양이": "cat", "개": "dog", "강아지": "dog", "새": "bird", "말": "horse", "소": "cow",
    "젖소": "cow", "양": "sheep", "돼지": "pig", "닭": "chicken", "오리": "duck", "코끼리": "elephant", "곰": "bear",
    "얼룩말": "zebra", "기린": "giraffe", "물고기": "fish", "생선": "fish", "토끼": "rabbit", "호랑이": "tiger",
    "사자": "lion", "원숭이": "monkey", "비둘기": "pigeon", "갈매기": "seagull", "나비": "butterfly", "사슴": "deer",
    "펭귄": "penguin", "거북이": "turtle", "거북": "turtle", "백조": "swan",
    # vehicles and street
    "자동차": "car", "차": "car", "승용차": "car", "차량": "vehicle", "버스": "bus", "트럭": "truck",
    "자전거": "bicycle", "오토바이": "motorcycle", "비행기": "airplane", "기차": "train", "열차": "train",
    "배": "boat", "보트": "boat", "택시": "taxi", "로켓": "rocket", "헬리콥터": "helicopter", "신호등": "traffic light",
    "표지판": "sign", "간판": "signboard", "소화전": "fire hydrant", "벤치": "bench", "가로등": "street lamp",
    "우산": "umbrella", "건물": "building", "집": "house", "나무": "tree", "꽃": "flower", "창문": "window",
    "창": "window", "문": "door", "계단": "stairs", "깃발": "flag", "국기": "flag", "풍선": "balloon", "탑": "tower",
    "산": "mountain", "구름": "cloud", "울타리": "fence", "펜스": "fence", "기둥": "pillar", "텐트": "tent",
    # things
    "물건": "object", "물체": "object", "사물": "object", "컵": "cup", "머그잔": "mug", "잔": "glass",
    "유리잔": "glass", "와인잔": "wine glass", "커피": "coffee cup", "병": "bottle", "그릇": "bowl", "접시": "plate",
    "숟가락": "spoon", "포크": "fork", "칼": "knife", "젓가락": "chopsticks", "의자": "chair", "소파": "couch",
    "침대": "bed", "식탁": "dining table", "탁자": "table", "테이블": "table", "책상": "desk", "책": "book",
    "시계": "clock", "꽃병": "vase", "가위": "scissors", "인형": "doll", "곰인형": "teddy bear", "화분": "potted plant",
    "식물": "plant", "텔레비전": "television", "티비": "television", "노트북": "laptop", "컴퓨터": "computer",
    "모니터": "monitor", "마우스": "computer mouse", "리모컨": "remote control", "키보드": "keyboard",
    "휴대폰": "cell phone", "핸드폰": "cell phone", "스마트폰": "cell phone", "전화기": "telephone",
    "전자레인지": "microwave", "오븐": "oven", "토스터": "toaster", "싱크대": "sink", "냉장고": "refrigerator",
    "가방": "bag", "배낭": "backpack", "핸드백": "handbag", "넥타이": "tie", "여행가방": "suitcase",
    "캐리어": "suitcase", "모자": "hat", "안경": "glasses", "신발": "shoe", "장갑": "glove", "공": "ball",
    "축구공": "soccer ball", "야구공": "baseball", "농구공": "basketball", "연": "kite", "스케이트보드": "skateboard",
    "서핑보드": "surfboard", "라켓": "racket", "동전": "coin", "지폐": "banknote", "열쇠": "key", "상자": "box",
    "박스": "box", "바구니": "basket", "초": "candle", "양초": "candle", "램프": "lamp", "전등": "lamp",
    "거울": "mirror", "그림": "painting", "액자": "picture frame", "카메라": "camera", "헬멧": "helmet",
    "마스크": "mask", "펜": "pen", "연필": "pencil", "국자": "ladle", "냄비": "pot", "쟁반": "tray",
    # food
    "음식": "food", "과일": "fruit", "사과": "apple", "바나나": "banana", "오렌지": "orange", "귤": "tangerine",
    "딸기": "strawberry", "포도": "grapes", "수박": "watermelon", "샌드위치": "sandwich", "브로콜리": "broccoli",
    "당근": "carrot", "핫도그": "hot dog", "피자": "pizza", "도넛": "donut", "케이크": "cake", "빵": "bread",
    "햄버거": "hamburger", "계란": "egg", "달걀": "egg", "토마토": "tomato", "레몬": "lemon", "김밥": "gimbap",
    "떡": "rice cake", "쿠키": "cookie", "아이스크림": "ice cream", "음료": "drink", "만두": "dumpling",
}

# Modifiers kept in front of the noun ("빨간 자동차" -> "red car").
MODIFIERS: dict[str, str] = {
    "빨간": "red", "빨간색": "red", "붉은": "red", "파란": "blue", "파란색": "blue", "푸른": "blue", "노란": "yellow",
    "노란색": "yellow", "초록": "green", "초록색": "green", "녹색": "green", "흰": "white", "하얀": "white",
    "흰색": "white", "하얀색": "white", "검은": "black", "검정": "black", "까만": "black", "검은색": "black",
    "검정색": "black", "회색": "gray", "갈색": "brown", "주황": "orange", "주황색": "orange", "보라": "purple",
    "보라색": "purple", "분홍": "pink", "분홍색": "pink", "은색": "silver", "금색": "gold", "큰": "large",
    "작은": "small",
}

# What an unknown noun probably is, from its counter ("알파카는 몇 마리" -> animal).
COUNTER_CLASS: dict[str, str] = {
    "명": "person", "분": "person", "사람": "person", "마리": "animal", "대": "vehicle", "권": "book",
    "송이": "flower", "그루": "tree", "채": "house", "잔": "cup", "켤레": "shoe", "척": "boat", "벌": "clothing",
    "병": "bottle", "장": "sheet of paper", "개": "object", "쌍": "object", "층": "floor", "칸": "compartment",
}
COUNTERS = sorted(COUNTER_CLASS, key=len, reverse=True)

# Words that say where, not what ("사진 속", "테이블 위에"): skipped when looking for the counted noun.
PLACE_WORDS = {"사진", "그림", "이미지", "화면", "영상", "속", "안", "위", "아래", "밑", "앞", "뒤", "옆", "주변",
               "근처", "곳", "여기", "저기", "거기", "모두", "총", "전부", "다", "전체", "모든", "보이는", "있는",
               "현재", "이", "그", "저", "장면", "풍경"}
PARTICLES = sorted(["들에게", "에게서", "에서는", "에서", "에게", "으로", "로", "들은", "들이", "들을", "들의", "들도",
                    "들", "은", "는", "이", "가", "을", "를", "의", "도", "에", "와", "과", "랑", "만"],
                   key=len, reverse=True)

_KO_COUNT = re.compile(r"몇\s*(?:" + "|".join(COUNTERS) + r")|몇\s*사람|(?:의\s*)?(?:개수|숫자)|(?<=\s)수(?:는|가)(?=\s|\?|$)")
_KO_EXIST = re.compile(r"\s*(?:있|없)(?:나요|습니까|어요|는가|을까요|는지)|\s*보(?:이나요|입니까|이는가|여요)")

_EN_PATTERNS = [
    re.compile(r"\bhow many (?P<np>.+?)(?=\s+(?:are|is|can|could|do|does|did|were|was|in|on|at|inside|visible|"
               r"shown|there|appear|have|has)\b|\s*[?.,]|$)"),
    re.compile(r"\bnumber of (?P<np>.+?)(?=\s+(?:in|on|at|inside|visible|shown|that|which|is|are)\b|\s*[?.,]|$)"),
    re.compile(r"\bcount (?:the |all (?:the )?)?(?P<np>.+?)(?=\s+(?:in|on|at|inside|visible)\b|\s*[?.,]|$)"),
    re.compile(r"\b(?:is|are) there (?:any |a |an |some |more than one |only one )?(?P<np>.+?)"
               r"(?=\s+(?:in|on|at|near|inside|visible|shown|under|behind)\b|\s*[?.,]|$)"),
    re.compile(r"\bdo(?:es)? (?:the )?(?:image|photo|picture) (?:show|contain|have) (?:any |a |an )?(?P<np>.+?)"
               r"(?=\s*[?.,]|$)"),
]
_DETERMINERS = {"the", "a", "an", "any", "some", "all", "these", "those", "this", "that", "of", "different",
                "total", "separate", "individual"}
_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
              "geese": "goose", "feet": "foot", "teeth": "tooth", "knives": "knife", "leaves": "leaf",
              "shelves": "shelf", "wolves": "wolf", "glasses": "glasses", "scissors": "scissors", "skis": "skis",
              "grapes": "grapes", "sheep": "sheep", "fish": "fish", "deer": "deer", "bus": "bus", "chopsticks":
              "chopsticks", "stairs": "stairs", "pants": "pants", "jeans": "jeans", "shorts": "shorts"}


def singular(word: str) -> str:
    """English plural -> singular for nouns in detector prompts (``"buses" -> "bus"``, ``"people" -> "person"``)."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(w) > 3 and w.endswith("ies"):
        return w[:-3] + "y"
    if re.search(r"(?:ss|x|z|ch|sh|us)es$", w):
        return w[:-2]
    if len(w) > 2 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def english_phrase(noun_phrase: str) -> str | None:
    """Clean an English noun phrase for the detector: no determiners, at most three words, the head singular."""
    words = [w for w in re.findall(r"[a-z][a-z'-]*", noun_phrase.lower()) if w not in _DETERMINERS]
    if not words:
        return None
    words = words[-3:]
    return " ".join(words[:-1] + [singular(words[-1])])


def strip_particle(token: str) -> str:
    """``"사람들은" -> "사람"``: one trailing particle, then a plural 들, removed."""
    for p in PARTICLES:
        if token.endswith(p) and len(token) > len(p):
            token = token[: -len(p)]
            break
    return token[:-1] if token.endswith("들") and len(token) > 1 else token


def korean_noun(token: str) -> tuple[str, str | None]:
    """``(noun, english)``: the token itself if the lexicon knows it, else the token without its particle; the
    lexicon's phrase for it, or for its longest known suffix of two or more syllables (``"야구공" -> "baseball"``)."""
    candidates = [token] + [token[: -len(p)] for p in PARTICLES if token.endswith(p) and len(token) > len(p)]
    for c in candidates:
        for form in (c, c[:-1] if c.endswith("들") and len(c) > 1 else None):
            if form and form in LEXICON:
                return form, LEXICON[form]
    noun = strip_particle(token)
    for i in range(1, len(noun) - 1):
        if noun[i:] in LEXICON:
            return noun, LEXICON[noun[i:]]
    return noun, None


@dataclass(frozen=True)
class Target:
    """What to ask the detector for. ``phrases`` are English prompts; ``primary`` is the counted one (``None`` when
    the options name the objects); ``source`` says where it came from, ``query`` the words it came from."""

    phrases: tuple[str, ...]
    primary: str | None
    source: str  # "lexicon" | "english" | "counter" | "options" | "default" | "asked" (a planner named it)
    query: str
    option_labels: dict[str, str] = field(default_factory=dict)  # letter -> phrase (options mode)

    @property
    def prompt(self) -> str:
        """Grounding DINO's text input: lower-case phrases each ended by a period, ``"cat. dog."``."""
        return " ".join(f"{p}." for p in self.phrases)


def _korean_target(text: str) -> Target | None:
    m = _KO_COUNT.search(text) or _KO_EXIST.search(text)
    if not m:
        return None
    counter = next((c for c in COUNTERS if re.match(r"몇\s*" + c, m.group(0))), None)
    tokens = re.findall(r"[\w]+", text[: m.start()])
    content = [t for t in tokens if strip_particle(t) not in PLACE_WORDS and t not in PLACE_WORDS]
    for back, token in enumerate(reversed(content[-3:])):
        noun, english = korean_noun(token)
        if english is None:
            continue
        i = len(content) - 1 - back
        mods = [MODIFIERS[strip_particle(t)] for t in content[max(0, i - 2): i] if strip_particle(t) in MODIFIERS]
        phrase = " ".join(mods + [english])
        return Target((phrase,), phrase, "lexicon", " ".join(content[i - len(mods): i] + [noun]))
    query = strip_particle(content[-1]) if content else ""
    if counter:
        phrase = COUNTER_CLASS[counter]
        return Target((phrase,), phrase, "counter", query or counter)
    return Target(("object",), "object", "default", query) if query else None


def _english_target(text: str) -> Target | None:
    low = text.lower()
    for pat in _EN_PATTERNS:
        m = pat.search(low)
        if m:
            phrase = english_phrase(m.group("np"))
            if phrase:
                return Target((phrase,), phrase, "english", m.group("np").strip())
    return None


def option_phrase(option: str) -> str | None:
    """An option that names an object -> its detector phrase (``"고양이" -> "cat"``, ``"Red cars" -> "red car"``)."""
    text = unicodedata.normalize("NFKC", option).strip()
    if parse_count(text) is not None or parse_yes_no(text) is not None:
        return None
    if re.search(r"[\uac00-\ud7a3]", text):
        tokens = re.findall(r"\w+", text)
        if not tokens or len(tokens) > 3:
            return None
        _, english = korean_noun(tokens[-1])
        if english is None:
            return None
        mods = [MODIFIERS[strip_particle(t)] for t in tokens[:-1] if strip_particle(t) in MODIFIERS]
        return " ".join(mods + [english])
    if not re.fullmatch(r"[A-Za-z][A-Za-z' -]*", text) or len(text.split()) > 3:
        return None
    return english_phrase(text)


def asked_target(phrases: list[str] | tuple[str, ...]) -> Target:
    """The detector's phrases when a planner names what to find: each read as an option naming an object would be
    (Korean nouns through the lexicon, English singularised), else taken as written; a single phrase is counted."""
    found = tuple(dict.fromkeys(option_phrase(p) or " ".join(p.lower().split()) for p in phrases if p.strip()))
    if not found:
        raise ValueError(f"expected at least one phrase to find (e.g. ['person']), found {list(phrases)!r}")
    return Target(found, found[0] if len(found) == 1 else None, "asked", " / ".join(p.strip() for p in phrases))


def target(question: str, options: dict[str, str] | None = None) -> Target:
    """The detector's phrases for a question: its counted/asked-about noun, else its options' objects, else
    ``"object"`` (Grounding DINO then finds salient things)."""
    text = unicodedata.normalize("NFKC", question).strip()
    found = _korean_target(text) if re.search(r"[\uac00-\ud7a3]", text) else None
    found = found or _english_target(text)
    if found and found.source != "default":
        return found
    labels = {k: p for k, p in ((k, option_phrase(v)) for k, v in (options or {}).items()) if p}
    if len(labels) >= 2:
        phrases = tuple(dict.fromkeys(labels.values()))
        return Target(phrases, None, "options", " / ".join(options[k] for k in labels), labels)
    return found or Target(("object",), "object", "default", "")


# ---------------------------------------------------------------- numeric options

_NATIVE_UNITS = {1: ("하나", "한"), 2: ("둘", "두"), 3: ("셋", "세"), 4: ("넷", "네"), 5: ("다섯",), 6: ("여섯",),
                 7: ("일곱",), 8: ("여덟",), 9: ("아홉",)}
_NATIVE_TENS = {10: "열", 20: "스물", 30: "서른", 40: "마흔", 50: "쉰", 60: "예순", 70: "일흔", 80: "여든", 90: "아흔"}
_SINO = {1: "일", 2: "이", 3: "삼", 4: "사", 5: "오", 6: "육", 7: "칠", 8: "팔", 9: "구"}
_EN_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
             "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_EN_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty",
            90: "ninety"}


def _number_words() -> tuple[dict[str, int], dict[str, int]]:
    """``(free, bound)``: numerals that stand alone ("셋", "three") and those only valid before a counter ("세")."""
    free: dict[str, int] = {w: i for i, w in enumerate(_EN_UNITS)}
    bound: dict[str, int] = {}
    for tens, word in _EN_TENS.items():
        free[word] = tens
        for u in range(1, 10):
            free[f"{word}-{_EN_UNITS[u]}"] = free[f"{word} {_EN_UNITS[u]}"] = tens + u
    free["a dozen"] = free["dozen"] = 12
    for tens in [0, *_NATIVE_TENS]:
        head = _NATIVE_TENS.get(tens, "")
        if tens:
            free[head] = tens
        for u, forms in _NATIVE_UNITS.items():
            free[head + forms[0]] = tens + u
            for f in forms[1:]:
                bound[head + f] = tens + u
    bound["스무"] = 20
    for tens in range(0, 10):
        head = ("" if tens == 1 else _SINO.get(tens, "")) + "십" if tens else ""
        if tens:
            bound[head] = tens * 10
        for u, w in _SINO.items():
            bound[head + w] = tens * 10 + u
    return free, bound


_FREE, _BOUND = _number_words()
_NUM = r"(?P<{n}>\d+|" + "|".join(sorted(map(re.escape, {**_FREE, **_BOUND}), key=len, reverse=True)) + ")"
_COUNTER = r"(?:\s*(?:" + "|".join(COUNTERS) + r"|사람|개체)(?:의|이|가)?)"
_EN_NOUN = r"(?:\s+(?!(?:on|in|at|of|to|the|and|or|left|right|top|bottom|side|o'clock)\b)[a-z]+){0,2}"
_ZERO = re.compile(r"^(?:없음|없다|없습니다|없어요|없어|하나도\s*없(?:음|다|습니다|어요)?|아무도\s*없(?:음|다|습니다)?|"
                   r"none|zero|nobody|no one|nothing|no\s+[a-z]+|0\s*" + _COUNTER + r"?)$")
_KO_MODS = {"이상": "ge", "이하": "le", "미만": "lt", "초과": "gt", "넘게": "gt", "넘음": "gt", "이상임": "ge"}
_EN_PRE = {"more than": "gt", "over": "gt", "at least": "ge", "fewer than": "lt", "less than": "lt", "under": "lt",
           "at most": "le", "up to": "le", "no more than": "le", "exactly": "eq", "only": "eq", "just": "eq",
           "about": "eq", "around": "eq", "approximately": "eq", "약": "eq", "대략": "eq", "총": "eq", "모두": "eq"}
_EN_POST = {"or more": "ge", "or fewer": "le", "or less": "le", "+": "ge"}
_PRE = "(?:(?P<pre>" + "|".join(sorted(map(re.escape, _EN_PRE), key=len, reverse=True)) + r")\s*)?"
_POST = r"(?:\s*(?P<post>" + "|".join(sorted(map(re.escape, [*_KO_MODS, *_EN_POST]), key=len, reverse=True)) + "))?"
_SINGLE = re.compile("^" + _PRE + _NUM.format(n="n") + r"(?P<counter>" + _COUNTER + "|" + _EN_NOUN + ")" + _POST
                     + r"\s*[.!]?$")
_RANGE = re.compile(r"^(?:between\s+)?" + _NUM.format(n="a") + _COUNTER + r"?\s*(?:~|-|–|to|and|에서)\s*"
                    + _NUM.format(n="b") + r"(?P<counter>" + _COUNTER + "|" + _EN_NOUN + ")" + r"(?:\s*사이)?$")


def _value(word: str, counted: bool) -> int | None:
    if word.isdigit():
        return int(word)
    if word in _FREE:
        return _FREE[word]
    return _BOUND.get(word) if counted else None


def parse_count(option: str) -> tuple[int, int | None] | None:
    """An option read as a count interval ``(lo, hi)`` (``hi=None``: no upper bound), or ``None`` when it is not a
    count: ``"3개" -> (3, 3)``, ``"세 개" -> (3, 3)``, ``"three" -> (3, 3)``, ``"3 people" -> (3, 3)``,
    ``"10명 이상" -> (10, None)``, ``"more than 2" -> (3, None)``, ``"2~3명" -> (2, 3)``, ``"없음" -> (0, 0)``."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", option).strip().lower())
    if _ZERO.match(text):
        return (0, 0)
    m = _SINGLE.match(text)
    if not m:
        r = _RANGE.match(text)
        counted = bool(r and r.group("counter").strip())
        a, b = (_value(r.group("a"), counted), _value(r.group("b"), counted)) if r else (None, None)
        return (min(a, b), max(a, b)) if a is not None and b is not None else None
    n = _value(m.group("n"), bool(m.group("counter").strip()))
    if n is None:
        return None
    kind = _EN_PRE.get(m.group("pre") or "", None) or {**_KO_MODS, **_EN_POST}.get(m.group("post") or "", "eq")
    return {"eq": (n, n), "ge": (n, None), "gt": (n + 1, None), "le": (0, n), "lt": (0, max(n - 1, 0))}[kind]


_POLAR_YES = r"예|네|응|그렇다|그렇습니다|맞다|맞습니다|yes|yeah|true"
_POLAR_NO = r"아니오|아니요|아니다|아닙니다|아니|no|false"
_YES = re.compile(r"^(?:" + _POLAR_YES + r"|있다|있습니다|있음|있어요|there (?:is|are)(?: one| some)?)[.!]?$")
_NO = re.compile(r"^(?:" + _POLAR_NO + r"|없다|없습니다|없음|없어요|there (?:is|are) (?:no|none))[.!]?$")
_POLAR = re.compile(r"^(?:" + _POLAR_YES + "|" + _POLAR_NO + r")[.!]?$")


def parse_yes_no(option: str) -> bool | None:
    """``True`` for yes/있다, ``False`` for no/없다, ``None`` for anything else."""
    text = unicodedata.normalize("NFKC", option).strip().lower()
    if _YES.match(text):
        return True
    if _NO.match(text):
        return False
    return None


def is_polar(option: str) -> bool:
    """Does the option answer the question's own polarity (예/아니오, yes/no) rather than state presence
    (있다/없다)? "고양이가 없나요?" - "예" means there is none, "있다" still means there is one."""
    return bool(_POLAR.match(unicodedata.normalize("NFKC", option).strip().lower()))
