"""``agent.core.images``: every pixel mode, orientation, size budget, failure reason and path escape."""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from agent.core import images
from agent.core.errors import ImageError
from agent.core.images import _DecodeGate, allow_pixels, decoded_bytes, file_sha256, load_image, resolve_image_path

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def near(pixel, expected, tol=40) -> bool:
    return all(abs(int(p) - e) <= tol for p, e in zip(pixel, expected, strict=True))


def png_header(width: int, height: int, *, color_type: int = 0, with_data: bool = False, depth: int = 8) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height``; without ``with_data`` it cannot be decoded at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) if with_data else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


# --- modes ----------------------------------------------------------------------------------------------------


def _transparent_palette(path: Path) -> None:
    im = Image.new("P", (16, 16), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (8, 0, 16, 16))
    im.save(path, transparency=0)


def _rgba(path: Path) -> None:
    im = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (8, 0, 16, 16))
    im.save(path)


def _la(path: Path) -> None:
    im = Image.new("LA", (16, 16), (0, 0))
    im.paste((0, 255), (8, 0, 16, 16))
    im.save(path)


# builder, file name, mode Pillow opens it in, pixel in the left half, pixel in the right half
MODE_CASES = {
    "cmyk_jpeg_adobe": (lambda p: Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95), "x.jpg", "CMYK",
                        RED, RED),
    "cmyk_tiff": (lambda p: Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p), "x.tif", "CMYK", RED, RED),
    "palette_transparency_png": (_transparent_palette, "x.png", "P", WHITE, RED),
    "palette_transparency_gif": (_transparent_palette, "x.gif", "P", WHITE, RED),
    "rgba_png": (_rgba, "x.png", "RGBA", WHITE, RED),
    "la_png": (_la, "x.png", "LA", WHITE, (0, 0, 0)),
    "mode_1_png": (lambda p: Image.new("1", (16, 16), 1).save(p), "x.png", "1", WHITE, WHITE),
    "mode_l_png": (lambda p: Image.new("L", (16, 16), 128).save(p), "x.png", "L", (128,) * 3, (128,) * 3),
    # Pillow >= 12 reads YCbCr TIFFs as RGB (and fails on its own uncompressed ones, so deflate); the YCbCr
    # conversion itself is checked on an in-memory image below
    "ycbcr_tiff": (lambda p: Image.new("YCbCr", (16, 16), (41, 240, 110)).save(p, compression="tiff_deflate"),
                   "x.tif", ("YCbCr", "RGB"), BLUE, BLUE),
    "rgb_webp": (lambda p: Image.new("RGB", (16, 16), GREEN).save(p, lossless=True), "x.webp", "RGB", GREEN, GREEN),
}


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_every_mode_becomes_rgb_with_alpha_over_white(tmp_path: Path, case: str) -> None:
    build, name, mode, left, right = MODE_CASES[case]
    build(tmp_path / name)
    with Image.open(tmp_path / name) as raw:
        assert raw.mode in (mode if isinstance(mode, tuple) else (mode,))
    loaded = load_image(tmp_path / name)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == loaded.original_size == (16, 16)
    assert near(loaded.image.getpixel((2, 8)), left), loaded.image.getpixel((2, 8))
    assert near(loaded.image.getpixel((13, 8)), right), loaded.image.getpixel((13, 8))


def test_a_ycbcr_image_is_converted_to_rgb() -> None:
    """What ``load_image`` does with a decoded YCbCr image (JPEG drafts, TIFFs in older Pillow versions)."""
    from agent.core.images import _to_rgb, _work_mode

    ycbcr = Image.new("YCbCr", (16, 16), (41, 240, 110))
    assert _work_mode(ycbcr) == "RGB"
    rgb = _to_rgb(ycbcr, "RGB", (1, 1), (16, 16))
    assert rgb.mode == "RGB" and near(rgb.getpixel((8, 8)), BLUE), rgb.getpixel((8, 8))


@pytest.mark.parametrize(
    ("dtype", "lo", "hi", "name"),
    [(np.uint16, 0, 65535, "x.png"), (np.int32, -70000, 900000, "x.tif"), (np.float32, -1.5, 2.5, "x.tif")],
)
def test_high_bit_grey_is_stretched_not_clipped(tmp_path: Path, dtype, lo, hi, name: str) -> None:
    ramp = np.linspace(lo, hi, 256).astype(dtype)
    Image.fromarray(np.tile(ramp, (8, 1))).save(tmp_path / name)
    with Image.open(tmp_path / name) as raw:
        assert raw.mode in ("I;16", "I", "F")
    grey = np.asarray(load_image(tmp_path / name).image)[..., 0].astype(int)
    assert grey.min() <= 2 and grey.max() >= 253  # uses the whole 8-bit range, not all 0 or all 255
    assert (np.diff(grey[4]) >= 0).all()  # still a ramp
    assert len(np.unique(grey)) > 200


def _frames(path: Path, **save) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE, GREEN)]
    frames[0].save(path, save_all=True, append_images=frames[1:], **save)


@pytest.mark.parametrize(
    ("name", "save"),
    [("x.gif", {"duration": 100, "loop": 0}), ("x.webp", {"duration": 100, "lossless": True}),
     ("x.png", {"duration": 100}), ("x.tif", {}), ("x.jpg", {"format": "MPO"})],
    ids=["animated_gif", "animated_webp", "apng", "multipage_tiff", "mpo_jpeg"],
)
def test_animations_and_multipage_give_the_first_frame(tmp_path: Path, name: str, save: dict) -> None:
    _frames(tmp_path / name, **save)
    with Image.open(tmp_path / name) as raw:
        assert getattr(raw, "n_frames", 1) == 3
    assert near(load_image(tmp_path / name).image.getpixel((8, 8)), RED)


# --- orientation and size -------------------------------------------------------------------------------------


def _oriented(path: Path, orientation: int, size=(400, 200)) -> None:
    """Stored landscape: red top-left quadrant, blue elsewhere."""
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, size[0] // 2, size[1] // 2))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, quality=95)


@pytest.mark.parametrize("name", ["x.jpg", "x.png"])
@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    [(1, "top_left"), (3, "bottom_right"), (6, "top_right"), (8, "bottom_left")],
)
@pytest.mark.parametrize("max_pixels", [4_000_000, 5_000], ids=["full", "draft"])
def test_exif_orientation_is_applied(tmp_path: Path, name, orientation, red_corner, max_pixels) -> None:
    _oriented(tmp_path / name, orientation)
    loaded = load_image(tmp_path / name, max_pixels=max_pixels)
    swapped = orientation in (6, 8)
    assert loaded.original_size == ((200, 400) if swapped else (400, 200))
    w, h = loaded.image.size
    assert (h > w) == swapped and w * h <= max_pixels
    corners = {"top_left": (w // 8, h // 8), "top_right": (w - 1 - w // 8, h // 8),
               "bottom_left": (w // 8, h - 1 - h // 8), "bottom_right": (w - 1 - w // 8, h - 1 - h // 8)}
    for corner, xy in corners.items():
        assert near(loaded.image.getpixel(xy), RED if corner == red_corner else BLUE), (corner, xy)


@pytest.mark.parametrize("name", ["x.jpg", "x.png", "x.webp"])
def test_downscale_fits_the_budget_and_keeps_aspect(tmp_path: Path, name: str) -> None:
    Image.new("RGB", (3000, 1000), GREEN).save(tmp_path / name)
    loaded = load_image(tmp_path / name, max_pixels=300_000)
    w, h = loaded.image.size
    assert w * h <= 300_000 and w * h > 0.99 * 300_000
    assert abs(w / h - 3.0) < 0.01
    assert loaded.original_size == (3000, 1000)
    assert loaded.scale == pytest.approx(w / 3000)


def test_jpeg_is_decoded_at_reduced_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import JpegImagePlugin

    Image.new("RGB", (2000, 1600), GREEN).save(tmp_path / "x.jpg")
    decoded: list[tuple[int, int]] = []
    original_load = JpegImagePlugin.JpegImageFile.load

    def spy(self):  # the size libjpeg actually decodes to
        decoded.append(self.size)
        return original_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    loaded = load_image(tmp_path / "x.jpg", max_pixels=50_000)
    assert decoded[0] == (250, 200)  # 1/8 scale, still >= the 250 x 200 target
    assert loaded.image.size == (250, 200) and loaded.original_size == (2000, 1600)


def test_small_images_are_not_upscaled_and_hash_the_file(tmp_path: Path) -> None:
    Image.new("RGB", (30, 20), RED).save(tmp_path / "x.png")
    loaded = load_image(tmp_path / "x.png")
    assert loaded.image.size == (30, 20) and loaded.scale == 1.0
    assert loaded.sha256 == hashlib.sha256((tmp_path / "x.png").read_bytes()).hexdigest()
    assert loaded.path == tmp_path / "x.png"


def test_extreme_aspect_stays_within_budget(tmp_path: Path) -> None:
    Image.new("L", (5000, 2), 0).save(tmp_path / "x.png")
    w, h = load_image(tmp_path / "x.png", max_pixels=100).image.size
    assert 0 < w * h <= 100 and h == 1


# --- failures -------------------------------------------------------------------------------------------------


def _truncated_jpeg(path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


FAILURES = {
    "missing": (lambda p: None, "missing"),
    "directory": (lambda p: p.mkdir(), "not_a_file"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "text_named_jpg": (lambda p: p.write_text("id,answer\n1,a\n"), "corrupt"),
    "random_bytes": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)), "corrupt"),
    "truncated_jpeg": (_truncated_jpeg, "corrupt"),
    "header_only_png": (lambda p: p.write_bytes(png_header(64, 64)), "corrupt"),
    "fifo": (os.mkfifo, "not_a_file"),  # opening it for reading would block forever
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failures_have_reasons(tmp_path: Path, case: str) -> None:
    build, reason = FAILURES[case]
    path = tmp_path / "x.jpg"
    build(path)
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert err.value.reason == reason
    assert str(path) in str(err.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_huge_header_is_too_large_without_decoding(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    # 100000 x 100000 claimed, no pixel data: decoding it would say "corrupt", so "too_large" proves no decode.
    (tmp_path / "bomb.png").write_bytes(png_header(100_000, 100_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError) as err:
            load_image(tmp_path / "bomb.png")
    assert err.value.reason == "too_large" and "found more than 400,000,000" in str(err.value)  # Pillow's check
    (tmp_path / "big.png").write_bytes(png_header(25_000, 20_000))  # 500 MP: over our cap, under Pillow's error
    with pytest.raises(ImageError) as err, pytest.warns(Image.DecompressionBombWarning):  # Pillow's, over its limit
        load_image(tmp_path / "big.png", hard_cap_pixels=300_000_000)
    assert err.value.reason == "too_large" and "found 25000x20000" in str(err.value)  # ours, with the size


def test_real_image_over_a_small_cap_is_too_large(tmp_path: Path) -> None:
    Image.new("RGB", (200, 100), RED).save(tmp_path / "x.jpg")
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "x.jpg", hard_cap_pixels=19_999)
    assert err.value.reason == "too_large"


def test_file_over_byte_cap_is_too_large(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), RED).save(tmp_path / "x.png")
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "x.png", max_file_bytes=10)
    assert err.value.reason == "too_large"


def test_images_up_to_our_cap_reach_our_check_and_larger_ones_are_refused_before_decoding(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    # 15000 x 14000 = 210 MP: over Pillow's default error limit (2 * MAX_IMAGE_PIXELS = 179 MP), under our 400 MP.
    (tmp_path / "big.png").write_bytes(png_header(15_000, 14_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError) as err:
            load_image(tmp_path / "big.png")
    assert err.value.reason == "corrupt"  # got past the header to the (missing) pixel data
    assert Image.MAX_IMAGE_PIXELS == 400_000_000  # Pillow's public limit raised to the cap
    with pytest.raises(ImageError) as err:  # a lower cap on this call: refused from the header, nothing decoded
        load_image(tmp_path / "big.png", hard_cap_pixels=100_000_000)
    assert err.value.reason == "too_large" and "at most 100,000,000 pixels" in str(err.value)
    assert Image.MAX_IMAGE_PIXELS == 400_000_000  # never lowered


def test_allow_pixels_only_raises_pillows_limit_and_leaves_it_off_when_off(monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    allow_pixels(500)
    assert Image.MAX_IMAGE_PIXELS == 1000
    allow_pixels(5000)
    assert Image.MAX_IMAGE_PIXELS == 5000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    allow_pixels(5000)
    assert Image.MAX_IMAGE_PIXELS is None


def test_concurrent_loads_agree(tmp_path: Path) -> None:
    _oriented(tmp_path / "x.jpg", 6, size=(800, 400))
    results: list[tuple[int, int]] = []

    def work() -> None:
        for _ in range(5):
            results.append(load_image(tmp_path / "x.jpg", max_pixels=20_000).image.size)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and len(set(results)) == 1


# --- paths ----------------------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "images" / "sub").mkdir(parents=True)
    for p in ("outside.jpg", "images/a.jpg", "images/sub/b.jpg"):
        Image.new("RGB", (4, 4), RED).save(tmp_path / p)
    (tmp_path / "images" / "out_link.jpg").symlink_to(tmp_path / "outside.jpg")
    (tmp_path / "images" / "in_link.jpg").symlink_to(tmp_path / "images" / "sub" / "b.jpg")
    (tmp_path / "images" / "dir_link").symlink_to(tmp_path, target_is_directory=True)
    return tmp_path / "images"


@pytest.mark.parametrize(
    ("rel", "reason"),
    [("../outside.jpg", "escapes_root"), ("sub/../../outside.jpg", "escapes_root"), ("out_link.jpg", "escapes_root"),
     ("dir_link/outside.jpg", "escapes_root"), ("ABSOLUTE", "escapes_root"), ("C:\\images\\a.jpg", "escapes_root"),
     ("..\\outside.jpg", "escapes_root"), ("nope.jpg", "missing"), ("", "missing")],
)
def test_path_escapes_and_missing(root: Path, rel: str, reason: str) -> None:
    rel = str(root.parent / "outside.jpg") if rel == "ABSOLUTE" else rel
    with pytest.raises(ImageError) as err:
        resolve_image_path(rel, root)
    assert err.value.reason == reason


@pytest.mark.parametrize(("rel", "target"), [("a.jpg", "a.jpg"), ("sub/b.jpg", "sub/b.jpg"),
                                            ("sub\\b.jpg", "sub/b.jpg"), ("in_link.jpg", "sub/b.jpg")])
def test_paths_inside_root_resolve(root: Path, rel: str, target: str) -> None:
    assert resolve_image_path(rel, root) == (root / target).resolve()


# --- a real competition-sized photo ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_123mp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12800 x 9600 (122.9 MP) JPEG, built once per module from an upscaled gradient."""
    x = np.linspace(0, 255, 320, dtype=np.float32)
    small = np.stack([np.tile(x, (240, 1)), np.tile(x[:240, None], (1, 320)), np.full((240, 320), 96.0)], axis=-1)
    path = tmp_path_factory.mktemp("big") / "photo.jpg"
    Image.fromarray(small.astype(np.uint8)).resize((12800, 9600), Image.Resampling.BILINEAR).save(path, quality=50)
    return path


@pytest.mark.slow
def test_123_megapixel_jpeg_loads_through_draft(photo_123mp: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning although 123 MP > Pillow's 89 MP warning level
        loaded = load_image(photo_123mp)
    assert loaded.original_size == (12800, 9600)
    w, h = loaded.image.size
    assert w * h <= 4_000_000 and abs(w / h - 12800 / 9600) < 0.01
    assert loaded.scale == pytest.approx(w / 12800)
    assert capfd.readouterr() == ("", "")


# --- memory: decode budget, strip reduction, concurrent decodes -----------------------------------------------


@pytest.mark.parametrize(("mode", "per_pixel"), [("1", 1), ("L", 1), ("P", 1), ("I;16", 2), ("I;16B", 2),
                                                 ("I", 4), ("F", 4), ("LA", 4), ("RGB", 4), ("RGBA", 4),
                                                 ("CMYK", 4), ("YCbCr", 4)])
def test_decoded_bytes_follow_pillows_storage(mode: str, per_pixel: int) -> None:
    assert decoded_bytes(mode, (30, 20)) == 600 * per_pixel


@pytest.mark.parametrize(("depth", "color_type", "budget", "mode"),
                         [(16, 0, 800_000_000, "I;16"), (8, 2, 1 << 30, "RGB"), (16, 2, 1 << 30, "RGB")],
                         ids=["16bit_grey_small_budget", "rgb_default_budget", "rgb_48bit_default_budget"])
def test_over_the_decode_budget_is_too_large_without_decoding(tmp_path: Path, depth: int, color_type: int,
                                                               budget: int, mode: str) -> None:
    # 20000 x 20000 claimed, no pixel data: decoding would say "corrupt", so "too_large" proves no decode.
    (tmp_path / "big.png").write_bytes(png_header(20_000, 20_000, color_type=color_type, depth=depth))
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "big.png", decode_budget=budget)
    assert err.value.reason == "too_large"
    assert "image_decode_budget" in str(err.value) and f"mode {mode}" in str(err.value)


def test_a_16_bit_20000_square_header_fits_the_default_budget(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(png_header(20_000, 20_000, depth=16))
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "big.png")
    assert err.value.reason == "corrupt"  # got past the budget to the (missing) pixel data


def test_decode_budget_refuses_a_real_16_bit_png_and_admits_it_when_raised(tmp_path: Path) -> None:
    Image.fromarray(np.arange(600 * 400, dtype=np.uint16).reshape(400, 600)).save(tmp_path / "x.png")
    with pytest.raises(ImageError, match="image_decode_budget"):
        load_image(tmp_path / "x.png", decode_budget=400 * 600 * 2)  # the decoded pixels alone, no working copy
    loaded = load_image(tmp_path / "x.png", decode_budget=4 * 400 * 600 * 2)
    assert loaded.image.size == (600, 400)


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "L", "P", "RGB"])
def test_strip_reduction_equals_reducing_the_whole_image(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    rng = np.random.default_rng(3)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (77, 101), dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, (77, 101, 4), dtype=np.uint8), "RGBA").convert(mode)
    work = images._work_mode(im)
    monkeypatch.setattr(images, "_STRIP_BYTES", 101 * 4 * 5)  # a few rows a strip: many strips, a ragged last one
    strips = images._reduce_in_strips(im, work, (3, 2))
    whole = im.convert(work).reduce((3, 2))
    assert strips.mode == whole.mode and strips.size == whole.size == (34, 39)
    assert np.array_equal(np.asarray(strips), np.asarray(whole))


def test_large_images_are_never_converted_at_full_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ramp = np.tile(np.linspace(0, 65535, 1500).astype(np.uint16), (1000, 1))
    Image.fromarray(ramp).save(tmp_path / "x.png")
    monkeypatch.setattr(images, "_STRIP_BYTES", 1500 * 4 * 30)
    converted: list[tuple[int, int]] = []
    original = Image.Image.convert

    def spy(self, *args, **kwargs):
        converted.append(self.size)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", spy)
    loaded = load_image(tmp_path / "x.png", max_pixels=30_000)
    assert (1500, 30) in converted  # strips of rows, then only the small working copy; never 1500 x 1000
    assert all(h <= 30 or w * h <= 30_000 for w, h in converted), converted
    grey = np.asarray(loaded.image)[..., 0].astype(int)
    assert grey.min() <= 2 and grey.max() >= 253 and (np.diff(grey[5]) >= 0).all()


def test_decode_gate_admits_decodes_only_while_they_fit_the_budget() -> None:
    gate, budget = _DecodeGate(), 1000
    order: list[str] = []
    big_in = threading.Event()

    def big() -> None:
        with gate.hold(600, budget):
            order.append("second big in")
            big_in.set()

    with gate.hold(600, budget):
        with gate.hold(300, budget):  # fits beside the first: admitted at once
            order.append("small in")
        waiter = threading.Thread(target=big)
        waiter.start()
        assert not big_in.wait(0.2)  # 600 + 600 > 1000: waits (a slow machine only makes this wait longer)
        order.append("first big out")
    waiter.join(10)
    assert big_in.is_set() and order == ["small in", "first big out", "second big in"]
    assert gate.in_use == 0


def test_concurrent_loads_never_hold_more_than_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((400, 600), dtype=np.uint16)).save(tmp_path / "x.png")
    class Watched(_DecodeGate):  # records in_use after every admission
        def __init__(self) -> None:
            self.max_in_use = 0
            super().__init__()

        @property
        def in_use(self) -> int:
            return self._in_use

        @in_use.setter
        def in_use(self, value: int) -> None:
            self._in_use = value
            self.max_in_use = max(self.max_in_use, value)

    watched = Watched()
    monkeypatch.setattr(images, "_GATE", watched)
    need = decoded_bytes("I;16", (600, 400)) + decoded_bytes("F", (600, 400))
    threads = [threading.Thread(target=load_image, args=(tmp_path / "x.png",), kwargs={"decode_budget": need + 1})
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert watched.max_in_use == need and watched.in_use == 0  # one at a time: two would not fit


def test_file_sha256_hashes_without_decoding_and_follows_the_file_rules(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"not even an image")
    assert file_sha256(tmp_path / "x.jpg") == hashlib.sha256(b"not even an image").hexdigest()
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageError) as err:
        file_sha256(tmp_path / "pipe.jpg")
    assert err.value.reason == "not_a_file" and "FIFO" in str(err.value)
    with open(tmp_path / "sparse.jpg", "wb") as f:  # 2 GB claimed, nothing written: refused before reading
        f.truncate(2 << 30)
    with pytest.raises(ImageError) as err:
        file_sha256(tmp_path / "sparse.jpg")
    assert err.value.reason == "too_large"
    with pytest.raises(ImageError) as err:
        file_sha256(tmp_path / "nope.jpg")
    assert err.value.reason == "missing"


# --- encoding ---------------------------------------------------------------------------------------------------


def test_encode_jpeg_gives_pillows_bytes_with_or_without_memfd(monkeypatch):
    """The in-memory file (Linux) and the ``BytesIO`` fallback give the same JPEG as Pillow's plain save."""
    import io

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    expected = io.BytesIO()
    img.save(expected, format="JPEG", quality=85)
    native = images.encode_jpeg(img, quality=85)  # memfd where the platform has it
    monkeypatch.delattr(os, "memfd_create", raising=False)
    fallback = images.encode_jpeg(img, quality=85)
    assert native == fallback == expected.getvalue()
    with Image.open(io.BytesIO(native)) as back:
        assert back.format == "JPEG" and back.size == (128, 96)


@pytest.mark.parametrize(("given", "block"), [(None, "64m"), ("16m", "16m")])
def test_the_vqa_command_asks_pillow_for_64_mib_blocks_unless_told_otherwise(given: str | None, block: str) -> None:
    """Pillow reads its public PILLOW_BLOCK_SIZE when imported: the command sets it first, a user's value wins."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PILLOW_BLOCK_SIZE"} | ({"PILLOW_BLOCK_SIZE": given}
                                                                              if given else {})
    code = ("import os, sys; import agent.cli; from PIL import Image; "
            "print(os.environ['PILLOW_BLOCK_SIZE'], Image.core.get_block_size())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [block, str(int(block[:-1]) << 20)]
