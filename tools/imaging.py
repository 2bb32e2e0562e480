"""Image geometry shared by the tools (no model imports)."""

from __future__ import annotations

from PIL import Image


def fit_within(image: Image.Image, max_side: int | None) -> tuple[Image.Image, float]:
    """Downscale so the longest side is at most ``max_side`` (LANCZOS, aspect kept, never upscaled); returns the
    image and the scale applied (1.0 when it already fits or ``max_side`` is falsy)."""
    longest = max(image.size)
    if not max_side or longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS), scale
