"""Safe, economical image loading: every pixel the pipeline sees comes through ``load_image``.

- Paths: ``safe_relpath`` is the one lexical rule for CSV paths (no absolute paths, drives or ``..``);
  ``resolve_image_path`` applies it and then follows symlinks, so a link leaving the root is refused too.
- Size: the header size is checked against ``hard_cap_pixels`` before anything is decoded. The cap is set
  per call and per thread: Pillow's bomb check is wrapped once so that only the thread inside
  ``load_image`` sees our cap (and no ``DecompressionBombWarning``); every other thread and library keeps
  Pillow's global ``MAX_IMAGE_PIXELS`` behaviour, which is never changed.
- Economy: JPEG/MPO decode at 1/2, 1/4 or 1/8 scale through ``draft``; other formats are resized with a
  ``reducing_gap`` (integer ``reduce`` first), then LANCZOS to fit ``max_pixels`` exactly.
- Truncated files are ``corrupt``: ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off, because a half-grey photo
  answered confidently is worse than a fallback answer that says why.
- Orientation: the EXIF Orientation tag is applied (ImageOps.exif_transpose's table) after downscaling, so it is
  cheap and also works after ``draft``; ``original_size`` is the displayed (oriented) size.
- Modes: everything becomes RGB; alpha is composited over white; 16/32-bit and float grey is stretched
  min..max to 8 bit (a constant image becomes black); animations and multi-page files give their first frame.
"""

from __future__ import annotations

import hashlib
import io
import math
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from agent.errors import ImageError

_T = Image.Transpose  # ImageOps.exif_transpose's table: EXIF Orientation -> the transpose that displays it
_TRANSPOSE = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE, 6: _T.ROTATE_270,
              7: _T.TRANSVERSE, 8: _T.ROTATE_90}
# What Pillow raises on files it cannot decode (UnidentifiedImageError and truncation are OSErrors).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # RGB, width * height <= max_pixels, aspect kept
    path: Path
    sha256: str  # of the file bytes: the key for caches and leakage guards
    original_size: tuple[int, int]  # displayed (EXIF-oriented) width, height
    scale: float  # image.width / original width


def safe_relpath(rel: str) -> PurePosixPath:
    """The lexical path rule: relative, no drive, no ``..``; backslashes are read as separators."""
    if not rel or "\x00" in rel:
        raise ImageError("missing", f"expected an image path relative to the images root, found {rel!r}.")
    posix = rel.replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(rel).drive:
        raise ImageError("escapes_root", f"expected a path relative to the images root, found absolute {rel!r}; "
                         "write it relative to --images.")
    if ".." in PurePosixPath(posix).parts:
        raise ImageError("escapes_root", f"expected a path inside the images root, found {rel!r} with '..'; "
                         "write it relative to --images without '..'.")
    return PurePosixPath(posix)


def resolve_image_path(rel: str, root: Path) -> Path:
    """``root / rel`` with symlinks followed, refused if it ends outside ``root`` or does not exist."""
    base = Path(root).resolve()
    try:
        target = (base / safe_relpath(rel)).resolve()
    except (OSError, RuntimeError) as e:  # symlink loop
        raise ImageError("missing", f"cannot resolve image path {rel!r} under {base}: {e}.") from e
    if not target.is_relative_to(base):
        raise ImageError("escapes_root", f"expected {rel!r} to stay inside {base}, but it leads (through a symlink) "
                         f"to {target}; copy the file into the images root.")
    if not target.exists():
        raise ImageError("missing", f"expected an image at {target}, found nothing; check the path and --images.")
    return target


def load_image(
    path: Path, *, max_pixels: int = 4_000_000, hard_cap_pixels: int = 400_000_000, max_file_bytes: int = 1 << 30
) -> LoadedImage:
    """Decode ``path`` into an RGB image of at most ``max_pixels``; every failure is an ``ImageError``."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    path = Path(path)
    data = _read_bytes(path, max_file_bytes)
    try:
        with _pixel_cap(hard_cap_pixels), Image.open(io.BytesIO(data)) as src:
            raw_w, raw_h = src.size
            if raw_w * raw_h > hard_cap_pixels:
                raise Image.DecompressionBombError(f"{raw_w}x{raw_h}")
            target = fit_pixels((raw_w, raw_h), max_pixels)
            src.draft("RGB", target)  # JPEG only: no-op elsewhere; keeps the mode, shrinks the decode
            src.load()
            orientation = _orientation(src)
            image = _to_rgb(src, target)
    except Image.DecompressionBombError as e:
        raise ImageError("too_large", f"expected at most {hard_cap_pixels:,} pixels in {path}, found {e}; "
                         "shrink the image or raise hard_cap_pixels.") from None
    except MemoryError:
        raise ImageError("too_large", f"ran out of memory decoding {path}; shrink the image.") from None
    except _DECODE_ERRORS as e:
        found = "no known image format" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
        raise ImageError("corrupt", f"expected a complete image in {path}, found {found}; "
                         "re-export or replace the file.") from e
    if orientation in (5, 6, 7, 8):
        raw_w, raw_h = raw_h, raw_w
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    return LoadedImage(image, path, hashlib.sha256(data).hexdigest(), (raw_w, raw_h), image.width / raw_w)


def _read_bytes(path: Path, max_file_bytes: int) -> bytes:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not_a_file", f"expected an image file at {path}, found a directory or special file.")
        if st.st_size > max_file_bytes:
            raise ImageError("too_large", f"expected at most {max_file_bytes:,} bytes, {path} has {st.st_size:,}.")
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError("missing", f"expected an image at {path}, found nothing; check the path.") from None
    except OSError as e:
        raise ImageError("unreadable", f"cannot read {path}: {e}; check its permissions.") from e
    if not data:
        raise ImageError("empty", f"expected image bytes in {path}, found an empty file; re-copy it.")
    if len(data) > max_file_bytes:  # grew between stat and read
        raise ImageError("too_large", f"expected at most {max_file_bytes:,} bytes, {path} has {len(data):,}.")
    return data


def fit_pixels(size: tuple[int, int], max_pixels: int | None) -> tuple[int, int]:
    """The largest size with the same aspect (to a pixel) and at most ``max_pixels`` pixels (``None``: no limit);
    never upscales."""
    w, h = size
    if max_pixels is None or w * h <= max_pixels:
        return w, h
    s = math.sqrt(max_pixels / (w * h))
    tw, th = max(1, math.floor(w * s)), max(1, math.floor(h * s))
    if tw * th > max_pixels:  # one side was clamped to 1 (extreme aspect) or float rounding
        if tw >= th:
            tw = max(1, max_pixels // th)
        else:
            th = max(1, max_pixels // tw)
    return tw, th


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:  # broken EXIF does not make the pixels unusable
        return 1
    return value if isinstance(value, int) else 1


def _to_rgb(im: Image.Image, target: tuple[int, int]) -> Image.Image:
    if im.mode == "F" or im.mode.startswith("I"):  # I, I;16, I;16B, ...: keep the range until the end
        work = im.convert("F")
    elif im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        work = im.convert("RGBA")
    else:  # 1, L, P, CMYK (Adobe-inverted handled by the decoder), YCbCr, ...; RGB is not copied
        work = im if im.mode == "RGB" else im.convert("RGB")
    if work.size != target:
        work = work.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    elif work is im:  # detach from the file, which is closed on return
        work = im.copy()
    if work.mode == "F":
        return _stretch(work)
    if work.mode == "RGBA":
        background = Image.new("RGB", work.size, (255, 255, 255))
        background.paste(work, mask=work.getchannel("A"))
        return background
    return work


def _stretch(im: Image.Image) -> Image.Image:
    """Map the finite min..max of a high-bit grey image onto 0..255 (no clipping of 16-bit data to white)."""
    a = np.asarray(im, dtype=np.float64)
    finite = np.isfinite(a)
    lo, hi = (a[finite].min(), a[finite].max()) if finite.any() else (0.0, 0.0)
    scaled = (np.where(finite, a, lo) - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8)).convert("RGB")


class _ThreadCap:
    """Pillow's bomb check with a per-thread override; threads without one get Pillow's own check unchanged."""

    vqa_thread_cap = True

    def __init__(self, original: Callable[..., None]) -> None:
        self.original = original
        self.local = threading.local()

    def __call__(self, size: tuple[int, int], **kwargs: bool) -> None:
        cap = getattr(self.local, "pixels", None)
        if cap is None:
            return self.original(size, **kwargs)
        if max(1, size[0]) * max(1, size[1]) > cap:
            raise Image.DecompressionBombError(f"{size[0]}x{size[1]}")
        return None


_install_lock = threading.Lock()


@contextmanager
def _pixel_cap(pixels: int) -> Iterator[None]:
    """Within this block, in this thread only, Pillow refuses images over ``pixels`` and never warns."""
    with _install_lock:
        check = Image._decompression_bomb_check
        if not getattr(check, "vqa_thread_cap", False):
            check = _ThreadCap(check)
            Image._decompression_bomb_check = check
    previous = getattr(check.local, "pixels", None)
    check.local.pixels = pixels
    try:
        yield
    finally:
        check.local.pixels = previous
