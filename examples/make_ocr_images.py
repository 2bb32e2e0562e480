"""Rebuild the generated photos of the OCR set (``ocr_set.csv``): text rendered with PIL, then made photo-like.

Each image is text we wrote, drawn with a font that ships in Debian (DejaVu, Nanum), placed on paper, a sign or
a label, warped in perspective onto a background, unevenly lit, blurred, given sensor noise and saved as JPEG
(longest side at most 1024 px). Seeds are fixed, so a rebuild gives the same pictures. Run from the repository
root: ``python examples/make_ocr_images.py`` (needs ``apt-get install fonts-dejavu fonts-nanum``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

OUT = Path(__file__).resolve().parent / "images"
FONTS = Path("/usr/share/fonts/truetype")
SERIF, SANS_BOLD = FONTS / "dejavu/DejaVuSerif.ttf", FONTS / "dejavu/DejaVuSans-Bold.ttf"
MYEONGJO, GOTHIC, GOTHIC_BOLD = (FONTS / "nanum/NanumMyeongjo.ttf", FONTS / "nanum/NanumGothic.ttf",
                                 FONTS / "nanum/NanumGothicBold.ttf")


def font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def lines(draw: ImageDraw.ImageDraw, xy: tuple[int, int], rows: list[tuple[str, Path, int, str]], gap: float = 1.5):
    """Draw ``(text, font, size, colour)`` rows downwards from ``xy``."""
    x, y = xy
    for text, path, size, colour in rows:
        draw.text((x, y), text, font=font(path, size), fill=colour)
        y += int(size * gap)


def perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """PIL's 8 perspective coefficients mapping output points ``dst`` to input points ``src`` (4x2 each)."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
    return np.linalg.solve(np.array(a, dtype=float), src.reshape(8)).tolist()


def photograph(card: Image.Image, background: Image.Image, corners: list[tuple[float, float]], seed: int,
               light: tuple[float, float] = (1.05, 0.7), blur: float = 1.0, noise: float = 5.0) -> Image.Image:
    """``card`` warped onto ``corners`` (clockwise from top-left) of ``background``, lit from one side, blurred,
    noisy."""
    rng = np.random.default_rng(seed)
    w, h = background.size
    src = np.array([[0, 0], [card.width, 0], [card.width, card.height], [0, card.height]], dtype=float)
    coeffs = perspective_coeffs(np.array(corners, dtype=float), src)
    warped = card.convert("RGB").transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
    mask = Image.new("L", card.size, 255).transform((w, h), Image.Transform.PERSPECTIVE, coeffs,
                                                    Image.Resampling.BICUBIC)
    scene = background.convert("RGB").copy()
    scene.paste(warped, (0, 0), mask)
    gx = np.linspace(light[0], light[1], w)[None, :, None]
    gy = np.linspace(1.0, 0.9, h)[:, None, None]
    arr = np.asarray(scene.filter(ImageFilter.GaussianBlur(blur)), dtype=float) * gx * gy
    arr += rng.normal(0, noise, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def desk(size: tuple[int, int], seed: int, colour=(96, 70, 48)) -> Image.Image:
    """A wood-like desk: a base colour with streaks along x."""
    rng = np.random.default_rng(seed)
    w, h = size
    rows = np.convolve(rng.normal(0, 1.0, h + 40), np.ones(41) / 41 ** 0.5, mode="valid")[:h, None] * 6
    streaks = rows + rng.normal(0, 4, (h, w))
    arr = np.array(colour, dtype=float)[None, None, :] + streaks[:, :, None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def save(image: Image.Image, name: str) -> None:
    image.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    image.save(OUT / name, quality=85)


# ---------------------------------------------------------------- the pictures

def page_histogram() -> None:
    """A textbook page on a desk; its second paragraph breaks "...the two extreme parts of the / histogram of
    grey values:" across lines (the page of issue 15)."""
    page = Image.new("RGB", (1500, 1900), (246, 243, 234))
    d = ImageDraw.Draw(page)
    ink = (30, 30, 32)
    lines(d, (110, 100), [("제3장 영상 분할", MYEONGJO, 40, ink)])
    lines(d, (110, 200), [("3.2  Choosing a global threshold", SANS_BOLD, 46, ink)])
    body = ["A global threshold separates objects from the",
            "background when their brightness differs clearly.",
            "In a well-lit scan the two groups form two peaks",
            "that lie at the two extreme parts of the",
            "histogram of grey values: dark ink on the left",
            "and bright paper on the right. The threshold is",
            "placed in the valley between the peaks, where",
            "few pixels fall, and every pixel above it is",
            "counted as background."]
    lines(d, (110, 320), [(t, SERIF, 44, ink) for t in body], gap=1.55)
    lines(d, (110, 1080), [("임계값은 두 봉우리 사이의 골짜기에 둔다.", MYEONGJO, 42, ink)])
    lines(d, (730, 1780), [("- 57 -", SERIF, 34, ink)])
    scene = photograph(page, desk((1600, 1200), 7), [(170, 40), (1460, 90), (1420, 1190), (120, 1160)], 7,
                       light=(1.08, 0.72), blur=1.1, noise=5.0)
    save(scene, "page_histogram.jpg")


def library_notice() -> None:
    """A printed Korean notice taped to a wall."""
    card = Image.new("RGB", (1200, 1500), (250, 250, 247))
    d = ImageDraw.Draw(card)
    d.rectangle((0, 0, 1200, 190), fill=(22, 70, 140))
    lines(d, (230, 40), [("도서관 이용 안내", GOTHIC_BOLD, 92, "white")])
    ink = (25, 25, 25)
    lines(d, (110, 300), [("운영 시간: 평일 09:00 ~ 18:00", GOTHIC, 60, ink),
                          ("대출 기간: 14일", GOTHIC, 60, ink),
                          ("대출 권수: 1인 5권", GOTHIC, 60, ink),
                          ("휴관일: 매주 월요일", GOTHIC, 60, ink),
                          ("열람실에서는 정숙해 주세요.", GOTHIC, 60, ink)], gap=1.8)
    lines(d, (110, 1300), [("LIBRARY NOTICE", SANS_BOLD, 64, (22, 70, 140))])
    wall = Image.new("RGB", (1400, 1100), (200, 196, 186))
    scene = photograph(card, wall, [(330, 60), (1110, 90), (1090, 1060), (300, 1040)], 11, light=(0.95, 1.05))
    save(scene, "library_notice.jpg")


def shop_sign() -> None:
    """A shop front sign: a big Hangul name, an English line and a phone number."""
    card = Image.new("RGB", (1800, 560), (196, 32, 38))
    d = ImageDraw.Draw(card)
    lines(d, (150, 60), [("행복분식", GOTHIC_BOLD, 230, (255, 244, 214))])
    lines(d, (1040, 120), [("HAPPY SNACK", SANS_BOLD, 80, "white"), ("02-738-5120", SANS_BOLD, 64, "white")],
          gap=1.6)
    wall = desk((1600, 900), 23, colour=(150, 150, 155))
    scene = photograph(card, wall, [(80, 210), (1530, 160), (1550, 600), (70, 640)], 23, light=(1.1, 0.8))
    save(scene, "shop_sign.jpg")


def milk_label() -> None:
    """A carton label on a kitchen table."""
    card = Image.new("RGB", (900, 1200), (240, 246, 252))
    d = ImageDraw.Draw(card)
    d.rectangle((0, 820, 900, 1200), fill=(30, 110, 60))
    lines(d, (120, 120), [("유기농 우유", GOTHIC_BOLD, 120, (20, 60, 130))])
    lines(d, (120, 330), [("ORGANIC MILK", SANS_BOLD, 80, (20, 60, 130))])
    lines(d, (120, 520), [("1등급 원유 100%", GOTHIC, 64, (40, 40, 40))])
    lines(d, (250, 900), [("1000mL", SANS_BOLD, 150, "white")])
    table = desk((1200, 1300), 31, colour=(180, 160, 130))
    scene = photograph(card, table, [(220, 130), (980, 90), (1010, 1150), (190, 1210)], 31, light=(0.8, 1.1),
                       blur=1.3)
    save(scene, "milk_label.jpg")


def bus_stop() -> None:
    """A bus stop sign: the stop's Korean and English names and two route numbers."""
    card = Image.new("RGB", (1000, 1300), (24, 92, 170))
    d = ImageDraw.Draw(card)
    d.rectangle((60, 60, 940, 520), fill="white")
    lines(d, (150, 110), [("시청 앞", GOTHIC_BOLD, 170, (24, 60, 120))])
    lines(d, (190, 340), [("City Hall", SANS_BOLD, 110, (24, 60, 120))])
    lines(d, (150, 650), [("버스 정류장", GOTHIC_BOLD, 120, "white")])
    lines(d, (150, 900), [("472   502", SANS_BOLD, 150, (255, 214, 0))])
    sky = Image.new("RGB", (1300, 1300), (168, 196, 220))
    scene = photograph(card, sky, [(300, 60), (1000, 110), (980, 1260), (280, 1230)], 47, light=(1.0, 0.85))
    save(scene, "bus_stop.jpg")


def tow_zone() -> None:
    """A white Korean sign added to the no-parking photo (``no_parking.jpg``, OpenCV's sample, Apache-2.0)."""
    card = Image.new("RGB", (900, 420), "white")
    d = ImageDraw.Draw(card)
    d.rectangle((10, 10, 890, 410), outline=(200, 20, 20), width=14)
    lines(d, (150, 60), [("견인 지역", GOTHIC_BOLD, 150, (200, 20, 20))])
    lines(d, (170, 280), [("TOW-AWAY ZONE", SANS_BOLD, 70, (40, 40, 40))])
    photo = Image.open(OUT / "no_parking.jpg").convert("RGB")
    scene = photograph(card, photo, [(40, 40), (470, 60), (465, 270), (35, 250)], 53, light=(1.0, 1.0),
                       blur=0.8, noise=3.0)
    save(scene, "tow_zone.jpg")


if __name__ == "__main__":
    for make in (page_histogram, library_notice, shop_sign, milk_label, bus_stop, tow_zone):
        make()
