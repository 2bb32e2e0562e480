"""Caption metrics with pycocoevalcap: BLEU-4, METEOR (where Java runs), ROUGE-L and CIDEr.

Tokenisation, stated:

- English: pycocoevalcap's ``PTBTokenizer`` (Stanford PTB rules through Java, lower-cased, punctuation dropped),
  as the COCO caption evaluation does.
- Korean: NFC, lower-cased, every character that is not a letter or digit is a separator, and each Hangul syllable
  is its own token (Latin words and numbers stay whole): "고양이가 잔다." -> "고 양 이 가 잔 다". Syllables, not
  eojeol, because Korean particles glue onto words ("고양이가", "고양이는") and would make every word a miss; no
  morphological analyser is needed. METEOR's English stemmer and synonyms do not apply to Korean: its score there
  is exact syllable matching only.

``score(refs, hyps, lang)``: ``refs`` id -> reference captions, ``hyps`` id -> one caption; returns the corpus
scores (pycocoevalcap's) and a ``meteor_error`` when METEOR could not run.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

from agent.core.errors import ConfigError

HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
TOKEN = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]|[^\W_\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]+")


def tokenize_ko(text: str) -> str:
    """Korean caption -> space-separated tokens (the rule in the module docstring)."""
    return " ".join(TOKEN.findall(unicodedata.normalize("NFC", text).lower()))


def tokenize(captions: Mapping[str, Sequence[str]], lang: str) -> dict[str, list[str]]:
    """id -> tokenised captions, by the language's rule."""
    if lang == "ko":
        return {k: [tokenize_ko(c) for c in v] for k, v in captions.items()}
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def score(refs: Mapping[str, Sequence[str]], hyps: Mapping[str, str], lang: str) -> dict:
    """Corpus BLEU-4, METEOR, ROUGE-L and CIDEr of ``hyps`` against ``refs`` (same ids)."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise ConfigError("caption metrics need pycocoevalcap: pip install 'vqa-orchestrator[caption]'") from None

    if set(refs) != set(hyps):
        missing = sorted(set(refs) ^ set(hyps))[:5]
        raise ValueError(f"references and captions must have the same ids; these are in only one: {missing}")
    gts, res = tokenize(refs, lang), tokenize({k: [v] for k, v in hyps.items()}, lang)
    out: dict = {"n": len(refs), "lang": lang, "tokenizer": "syllables" if lang == "ko" else "ptb"}
    out["bleu4"] = float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    out["rougeL"] = float(Rouge().compute_score(gts, res)[0])
    out["cider"] = float(Cider().compute_score(gts, res)[0])
    try:
        from pycocoevalcap.meteor.meteor import Meteor

        out["meteor"] = float(Meteor().compute_score(gts, res)[0])
    except Exception as exc:  # noqa: BLE001 - METEOR needs Java; the other metrics stand without it
        out["meteor"] = None
        out["meteor_error"] = f"{type(exc).__name__}: {exc}"
    return out
