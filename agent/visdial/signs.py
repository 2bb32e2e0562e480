"""A VisDial-format set of sign photos whose answers are written in the photo (``vqa dev make-signs OUT [--dialogs
N]``): the check that ranking through the tools works, with real OCR and no model.

Each photo is a sign we render with PIL (DejaVu Sans Bold, or Nanum Gothic Bold when DejaVu is absent): a title
line and a smaller second line, on a coloured card, slightly rotated, on a noisy background, saved as
``VisualDialog_signs_{id:012d}.jpg``. Each dialog has two rounds: "what does the sign say?" (the title) and
"what is written under it?" (the second line); their 100 candidates are the answer, the other signs' lines and
common VisDial answers, shuffled with a fixed seed. Dense annotations give the answer relevance 1 and the
answer with "it says" in front 0.5.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIGNS = [
    ("NO PARKING", "TOW AWAY ZONE"), ("BUS STOP", "ROUTE 42"), ("FRESH BREAD", "BAKED DAILY"),
    ("STAFF ONLY", "AUTHORISED PERSONNEL"), ("KEEP LEFT", "SLOW DOWN"), ("WET FLOOR", "CAUTION"),
    ("EXIT", "FIRE DOOR"), ("OPEN", "9 TO 5"), ("LIBRARY", "QUIET PLEASE"), ("PHARMACY", "OPEN LATE"),
    ("CAR WASH", "5 DOLLARS"), ("ICE CREAM", "TWO SCOOPS"), ("HOTEL", "VACANCY"), ("TAXI", "RANK"),
    ("POST OFFICE", "MAIL BOX"), ("GARDEN CENTRE", "PLANTS FOR SALE"), ("DANGER", "HIGH VOLTAGE"),
    ("MUSEUM", "FREE ENTRY"), ("COFFEE", "TAKE AWAY"), ("SCHOOL", "CHILDREN CROSSING"),
]
COMMON = ["yes", "no", "i can't tell", "maybe", "not sure", "white", "black", "red", "blue", "green", "2", "3",
          "1", "no people", "yes it is", "no it isn't", "it's daytime", "i don't think so", "outside", "a sign",
          "metal", "wood", "on a pole", "on a wall", "cloudy", "sunny", "i can't see", "no words", "just one",
          "it's a street", "the sky", "a building", "i think so", "probably", "nothing else", "a car", "trees",
          "english", "big letters", "small letters", "it's old", "it's new", "square", "round", "yellow", "orange",
          "4", "5", "10", "a few", "several", "no animals", "one person", "a man", "a woman", "it's raining",
          "it's clean", "i see a road", "on the left", "on the right", "in the middle", "near a door", "grass",
          "it's a city", "no cars", "at night", "morning", "i'm not sure", "can't tell", "very large", "very small"]
FONTS = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
         Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf")]
COLOURS = [((255, 255, 255), (20, 20, 20)), ((200, 20, 30), (255, 255, 255)), ((20, 60, 160), (255, 255, 255)),
           ((250, 210, 30), (10, 10, 10)), ((20, 110, 50), (255, 255, 255))]
QUESTIONS = ("what does the sign say?", "what is written under it?")
ID0 = 900_000


def _font(size: int) -> ImageFont.FreeTypeFont:
    for f in FONTS:
        if f.is_file():
            return ImageFont.truetype(str(f), size)
    return ImageFont.load_default(size)


def sign_photo(title: str, second: str, seed: int) -> Image.Image:
    """A photo-like picture of a sign with ``title`` and ``second`` written on it."""
    rng = np.random.default_rng(seed)
    card_colour, ink = COLOURS[seed % len(COLOURS)]
    big, small = _font(64), _font(36)
    w = int(max(big.getlength(title), small.getlength(second))) + 80
    card = Image.new("RGBA", (w, 190), (*card_colour, 255))
    d = ImageDraw.Draw(card)
    d.text(((w - big.getlength(title)) / 2, 25), title, font=big, fill=ink)
    d.text(((w - small.getlength(second)) / 2, 120), second, font=small, fill=ink)
    card = card.rotate(float(rng.uniform(-4, 4)), expand=True, fillcolor=(0, 0, 0, 0), resample=Image.BICUBIC)
    bg = rng.integers(90, 170, size=(3,))
    base = np.clip(rng.normal(0, 12, (card.height + 160, card.width + 160, 3)) + bg, 0, 255).astype(np.uint8)
    photo = Image.fromarray(base)
    photo.paste(card, (80, 80), card)  # the rotated card's own alpha: its corners stay background
    noisy = np.asarray(photo).astype(float) + rng.normal(0, 4, (photo.height, photo.width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_signs(out: Path, dialogs: int = 20, seed: int = 0) -> tuple[Path, Path]:
    """Write the photos, ``visdial_signs.json`` and ``visdial_signs_dense.json`` under ``out``; return both files."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = sorted({t.lower() for pair in SIGNS for t in pair})
    answers: list[str] = []
    index: dict[str, int] = {}

    def aid(text: str) -> int:
        if text not in index:
            index[text] = len(answers)
            answers.append(text)
        return index[text]

    questions = list(QUESTIONS)
    data_dialogs, dense = [], []
    for n in range(dialogs):
        title, second = SIGNS[n % len(SIGNS)]
        image_id = ID0 + n
        sign_photo(title, second, seed + n).save(out / "images" / f"VisualDialog_signs_{image_id:012d}.jpg",
                                                 quality=90)
        rounds = []
        for r, answer in enumerate((title.lower(), second.lower())):
            variant = f"it says {answer}"
            others = [t for t in lines if t != answer]
            pool = others + COMMON
            pool = [p for p in dict.fromkeys(pool) if p not in (answer, variant)][:98]
            options = [answer, variant, *pool]
            rng.shuffle(options)
            rounds.append({"question": r, "answer": aid(answer), "answer_options": [aid(o) for o in options],
                           "gt_index": options.index(answer)})
            relevance = [1.0 if o == answer else 0.5 if o == variant else 0.0 for o in options]
            dense.append({"image_id": image_id, "round_id": r + 1, "gt_relevance": relevance})
        data_dialogs.append({"image_id": image_id, "caption": "a sign with writing on it", "dialog": rounds})
    doc = {"version": "1.0", "split": "signs", "data": {"questions": questions, "answers": answers,
                                                       "dialogs": data_dialogs}}
    main, dense_path = out / "visdial_signs.json", out / "visdial_signs_dense.json"
    main.write_text(json.dumps(doc), encoding="utf-8")
    dense_path.write_text(json.dumps(dense), encoding="utf-8")
    return main, dense_path


if __name__ == "__main__":  # the old spelling: one line naming the new one
    raise SystemExit("python -m agent.visdial.signs is now: vqa dev make-signs OUT [--dialogs N]")
