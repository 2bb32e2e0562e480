"""Safe, economical image loading: every pixel the pipeline sees comes through ``load_image``.

- Paths: ``safe_relpath`` is the one lexical rule for CSV paths (no absolute paths, drives or ``..``);
  ``resolve_image_path`` applies it and then follows symlinks, so a link leaving the root is refused too.
- Size: the header size is checked against ``hard_cap_pixels`` before anything is decoded (our own check, per
  call). So that Pillow's own bomb check (warning above ``Image.MAX_IMAGE_PIXELS``, error above twice it) lets
  images up to the cap reach ours, ``Image.MAX_IMAGE_PIXELS`` is raised to the largest cap asked for; it is never
  lowered, and left alone when it is ``None`` (checks off).
- Files: opened without blocking and refused unless regular (a FIFO or device never hangs a run), capped in
  bytes; ``file_sha256`` hashes a file under the same rules without decoding it.
- Memory: a decode budget (bytes) is checked from the header before any pixel is decoded: the decoded image
  (Pillow's bytes per pixel for its mode: 1 for 1/L/P, 2 for I;16, 4 for multi-band 8-bit, I and F) plus the
  reduced working copy. Over the budget is ``too_large``. Decodes running at the same time share one budget
  (a process-wide weighted semaphore), so a batch's peak no longer grows with rows x pixels. Pillow's public
  ``PILLOW_BLOCK_SIZE`` (read when Pillow is imported) is set to 64 MiB by the ``vqa`` command before anything
  imports Pillow: above glibc's largest mmap threshold (32 MiB), each block is its own mapping and goes back to
  the system when the image is freed, instead of staying in the decoding thread's malloc arena.
- Economy: JPEG/MPO decode at 1/2, 1/4 or 1/8 scale through ``draft``; other formats are converted and reduced
  (integer ``reduce``, the ``reducing_gap`` of 3) in horizontal strips, so no full-size converted copy exists,
  then LANCZOS fits ``max_pixels`` exactly.
- Truncated files are ``corrupt``: ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off, because a half-grey photo
  answered confidently is worse than a fallback answer that says why.
- Orientation: the EXIF (or XMP) Orientation is read from the file and applied by ``ImageOps.exif_transpose`` to
  the downscaled image, so it is cheap and also works after ``draft``; ``original_size`` is the displayed size.
- Modes: everything becomes RGB; alpha is composited over white; 16/32-bit and float grey is stretched
  min..max to 8 bit (a constant image becomes black); animations and multi-page files give their first frame.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import ExifTags, Image, ImageMode, ImageOps, UnidentifiedImageError

from agent.core.errors import ImageError

# What Pillow raises on files it cannot decode (UnidentifiedImageError and truncation are OSErrors).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)
DEFAULT_DECODE_BUDGET = 1 << 30  # bytes of decoded pixels held at once, per image and for all concurrent decodes
DEFAULT_MAX_FILE_BYTES = 1 << 30
_REDUCING_GAP = 3.0  # as Image.resize's reducing_gap: integer reduce while >= 3x the target, then LANCZOS
_STRIP_BYTES = 8 << 20  # converted rows held at once while reducing


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
    path: Path, *, max_pixels: int = 4_000_000, hard_cap_pixels: int = 400_000_000,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, decode_budget: int = DEFAULT_DECODE_BUDGET,
) -> LoadedImage:
    """Decode ``path`` into an RGB image of at most ``max_pixels``; every failure is an ``ImageError``."""
    if max_pixels < 1 or decode_budget < 1:
        raise ValueError(f"max_pixels and decode_budget must be >= 1, got {max_pixels} and {decode_budget}")
    path = Path(path)
    data = read_file_bytes(path, max_file_bytes)
    try:
        allow_pixels(hard_cap_pixels)
        with Image.open(io.BytesIO(data)) as src:
            raw_w, raw_h = src.size
            if raw_w * raw_h > hard_cap_pixels:  # our check, from the header, before any pixel is decoded
                raise ImageError("too_large", f"expected at most {hard_cap_pixels:,} pixels in {path}, found "
                                 f"{raw_w}x{raw_h}; shrink the image or raise hard_cap_pixels.")
            target = fit_pixels((raw_w, raw_h), max_pixels)
            src.draft("RGB", target)  # JPEG only: no-op elsewhere; keeps the mode, shrinks the decode
            factor = _reduce_factor(src.size, target)
            work_mode = _work_mode(src)
            need = decoded_bytes(src.mode, src.size) + decoded_bytes(work_mode, _reduced(src.size, factor))
            if need > decode_budget:
                raise ImageError("too_large", f"expected an image that decodes within image_decode_budget "
                                 f"({decode_budget:,} bytes), found {path} ({raw_w}x{raw_h}, mode {src.mode}) that "
                                 f"needs {need:,}; shrink it, save it as JPEG (decoded reduced) or raise "
                                 "image_decode_budget.")
            with _GATE.hold(need, decode_budget):
                src.load()
                orientation = _orientation(src)
                image = _to_rgb(src, work_mode, factor, target)
                if image is not src:
                    src.close()  # frees the decoded pixels before the next decode is let in
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's check, over twice (once with
        limit = Image.MAX_IMAGE_PIXELS or 0                                  # warnings as errors) its limit
        raise ImageError("too_large", f"expected at most {hard_cap_pixels:,} pixels in {path}, found more than "
                         f"{limit:,} (Pillow's Image.MAX_IMAGE_PIXELS check); shrink the image.") from None
    except MemoryError:
        raise ImageError("too_large", f"ran out of memory decoding {path}; shrink the image.") from None
    except _DECODE_ERRORS as e:
        found = "no known image format" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
        raise ImageError("corrupt", f"expected a complete image in {path}, found {found}; "
                         "re-export or replace the file.") from e
    if orientation in (5, 6, 7, 8):
        raw_w, raw_h = raw_h, raw_w
    if orientation in range(2, 9):
        image.getexif()[ExifTags.Base.Orientation] = orientation  # the file's tag, on the downscaled copy
        ImageOps.exif_transpose(image, in_place=True)
    return LoadedImage(image, path, hashlib.sha256(data).hexdigest(), (raw_w, raw_h), image.width / raw_w)


def file_sha256(path: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str:
    """sha256 of an image file's bytes (``LoadedImage.sha256``) without decoding it, under ``load_image``'s file
    rules (a regular file, at most ``max_file_bytes``); failures are ``ImageError``."""
    digest = hashlib.sha256()
    with _open_regular(Path(path), max_file_bytes) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            if f.tell() > max_file_bytes:  # grew since the check
                raise ImageError("too_large", f"expected at most {max_file_bytes:,} bytes, {path} has more.")
    return digest.hexdigest()


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """The bytes Pillow holds for an image of ``mode`` and ``size``: multi-band 8-bit modes are stored 4 a pixel."""
    try:
        m = ImageMode.getmode(mode)
        item, bands = np.dtype(m.typestr).itemsize, len(m.bands)
    except (KeyError, TypeError):  # a mode Pillow cannot describe: assume the widest storage
        item, bands = 4, 1
    per_pixel = 4 if bands > 1 and item == 1 else bands * item
    return size[0] * size[1] * per_pixel


def _open_regular(path: Path, max_file_bytes: int) -> io.BufferedReader:
    """Open ``path`` for reading without blocking (a FIFO would block), refused unless a regular file under the cap."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError("missing", f"expected an image at {path}, found nothing; check the path.") from None
    except IsADirectoryError:
        raise ImageError("not_a_file", f"expected an image file at {path}, found a directory.") from None
    except OSError as e:
        raise ImageError("unreadable", f"cannot read {path}: {e}; check its permissions.") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not_a_file", f"expected an image file at {path}, found a directory or special file "
                             "(a FIFO, socket or device); point to a regular file.")
        if st.st_size > max_file_bytes:
            raise ImageError("too_large", f"expected at most {max_file_bytes:,} bytes, {path} has {st.st_size:,}.")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file_bytes(path: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """A file's bytes under ``load_image``'s file rules (regular, non-empty, at most ``max_file_bytes``, opened without
    blocking); failures are ``ImageError``."""
    try:
        with _open_regular(path, max_file_bytes) as f:
            data = f.read(max_file_bytes + 1)
    except OSError as e:
        raise ImageError("unreadable", f"cannot read {path}: {e}; check its permissions.") from e
    if not data:
        raise ImageError("empty", f"expected image bytes in {path}, found an empty file; re-copy it.")
    if len(data) > max_file_bytes:  # grew between stat and read
        raise ImageError("too_large", f"expected at most {max_file_bytes:,} bytes, {path} has more.")
    return data


def encode_jpeg(image: Image.Image, quality: int = 92) -> bytes:
    """``image`` as JPEG bytes. Pillow releases the GIL while it encodes only into a real file descriptor (not a
    ``BytesIO``), so on Linux the bytes go through an in-memory file (``memfd``): concurrent requests encode their
    images in parallel instead of one at a time. Elsewhere, a ``BytesIO``; the bytes are the same."""
    if not hasattr(os, "memfd_create"):
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
    with open(os.memfd_create("vqa-jpeg", os.MFD_CLOEXEC), "w+b", buffering=0) as f:
        image.save(f, format="JPEG", quality=quality)
        f.seek(0)
        return f.read()


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


def _reduce_factor(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """Image.resize's integer pre-reduction for ``reducing_gap``: whole pixels averaged while >= 3x the target."""
    return (max(1, int(size[0] / target[0] / _REDUCING_GAP)), max(1, int(size[1] / target[1] / _REDUCING_GAP)))


def _reduced(size: tuple[int, int], factor: tuple[int, int]) -> tuple[int, int]:
    return -(-size[0] // factor[0]), -(-size[1] // factor[1])


def _work_mode(im: Image.Image) -> str:
    """The mode pixels are reduced in: F keeps a high-bit range until the stretch, RGBA keeps alpha until it is
    composited, L stays one byte; everything else (1, P, CMYK (Adobe-inverted by the decoder), YCbCr...) is RGB."""
    if im.mode == "F" or im.mode.startswith("I"):  # I, I;16, I;16B, ...
        return "F"
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        return "RGBA"
    return "L" if im.mode in ("1", "L") else "RGB"


def _to_rgb(im: Image.Image, work_mode: str, factor: tuple[int, int], target: tuple[int, int]) -> Image.Image:
    if im.size == target:  # the decoded image itself (the caller then keeps it open: closing frees its pixels)
        work = im if im.mode == work_mode else im.convert(work_mode)
    else:
        work = _reduce_in_strips(im, work_mode, factor)
        if work.size != target:
            work = work.resize(target, Image.Resampling.LANCZOS)
    if work.mode == "F":
        return _stretch(work)
    if work.mode == "RGBA":
        background = Image.new("RGB", work.size, (255, 255, 255))
        background.paste(work, mask=work.getchannel("A"))
        return background
    return work if work.mode == "RGB" else work.convert("RGB")


def _reduce_in_strips(im: Image.Image, work_mode: str, factor: tuple[int, int]) -> Image.Image:
    """``im.convert(work_mode).reduce(factor)`` a band of rows at a time: no full-size converted copy is made."""
    fy = factor[1]
    w, h = im.size
    out = Image.new(work_mode, _reduced(im.size, factor))
    rows = max(fy, _STRIP_BYTES // max(1, decoded_bytes(work_mode, (w, 1))) // fy * fy)  # a multiple of fy
    for top in range(0, h, rows):
        strip = im.crop((0, top, w, min(h, top + rows)))
        strip = strip if strip.mode == work_mode else strip.convert(work_mode)
        out.paste(strip.reduce(factor) if factor != (1, 1) else strip, (0, top // fy))
    return out


def _stretch(im: Image.Image) -> Image.Image:
    """Map the finite min..max of a high-bit grey image onto 0..255 (no clipping of 16-bit data to white)."""
    a = np.asarray(im, dtype=np.float64)
    finite = np.isfinite(a)
    lo, hi = (a[finite].min(), a[finite].max()) if finite.any() else (0.0, 0.0)
    scaled = (np.where(finite, a, lo) - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8)).convert("RGB")


_cap_lock = threading.Lock()


def allow_pixels(pixels: int) -> None:
    """Let Pillow open images of up to ``pixels`` (``load_image`` checks its own cap itself): raise
    ``Image.MAX_IMAGE_PIXELS`` to ``pixels`` unless it is already higher or ``None``. Never lowers it."""
    with _cap_lock:
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < pixels:
            Image.MAX_IMAGE_PIXELS = pixels


class _DecodeGate:
    """A weighted semaphore over bytes: decodes run together while their sum fits the budget; one alone always runs."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.in_use = 0

    @contextmanager
    def hold(self, nbytes: int, budget: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.in_use == 0 or self.in_use + nbytes <= budget)
            self.in_use += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()


_GATE = _DecodeGate()

