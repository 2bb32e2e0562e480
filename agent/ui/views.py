"""What the Ask and Chat tabs show of one ``Answer``: plain functions from the record to pictures, tables and text.

Each tool's part comes from its record and its evidence type's hooks (``overlay``, ``color``, ``summary``), never
from its name: the images a tool drew itself (its ``artifacts``: OCR spans and detection boxes drawn by
supervision, the Set-of-Mark image) are shown as they are; a tool that brought boxes but no picture (a cached
result, a plug-in) gets its ``overlay`` drawn here, with supervision and a Hangul font. Retrieved neighbours
whose image file is found become thumbnails captioned with their score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image

from agent.core.schema import Answer, RetrieveEvidence, ToolResult, brief_error
from tools.marks import text_color_for
from tools.ocr import hangul_font

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def draw_overlay(photo: Image.Image, result: ToolResult) -> Image.Image | None:
    """The tool's boxes and labels on a copy of ``photo`` (boxes scaled from the size they refer to), or ``None``
    when the tool has nothing to draw."""
    overlay = result.evidence.overlay() if result.ok and result.evidence is not None else None
    if overlay is None or not overlay.boxes:
        return None
    w, h = (overlay.size or photo.size)[:2]
    scale = np.array([photo.width / w, photo.height / h] * 2, dtype=float)
    det = sv.Detections(xyxy=np.array([b.xyxy for b in overlay.boxes], dtype=float) * scale)
    color = sv.Color.from_hex(result.evidence.color)
    thickness = max(2, round(min(photo.size) / 300))
    scene = sv.BoxAnnotator(color=color, thickness=thickness, color_lookup=sv.ColorLookup.INDEX).annotate(photo.convert("RGB").copy(), det)
    labels = [b.label for b in overlay.boxes]
    if not any(labels):
        return scene
    text_color = sv.Color(*text_color_for(color.as_rgb()))
    font = hangul_font()
    if font:  # PIL text: Hangul and every other script the font covers
        labeler = sv.RichLabelAnnotator(color=color, text_color=text_color, font_path=font,
                                        font_size=max(12, round(min(photo.size) / 45)), text_padding=4,
                                        color_lookup=sv.ColorLookup.INDEX)
    else:  # OpenCV's Hershey font draws ASCII only
        labels = [t if t.isascii() else str(i) for i, t in enumerate(labels, 1)]
        labeler = sv.LabelAnnotator(color=color, text_color=text_color, text_padding=4,
                                    color_lookup=sv.ColorLookup.INDEX)
    return labeler.annotate(scene, det, labels=labels)


def _read(path: str | Path, thumb: int | None = None) -> Image.Image:
    """The pixels (the page gets images, never paths into the run folder)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if thumb:
            im.thumbnail((thumb, thumb))
        return im


def evidence_images(answer: Answer, photo: Image.Image | None) -> list[tuple[Image.Image, str]]:
    """(image, caption) for the gallery: every picture a tool drew, else its boxes drawn on the photo."""
    out: list[tuple[Image.Image, str]] = []
    for r in answer.evidence:
        drawn = [(_read(p), f"{r.tool} · {name}") for name, p in r.artifacts.items()
                 if p.lower().endswith(IMAGE_SUFFIXES) and Path(p).is_file()]
        if not drawn and photo is not None and (img := draw_overlay(photo, r)) is not None:
            drawn = [(img, f"{r.tool} · {len(r.evidence.overlay().boxes)} boxes")]
        out += drawn
    return out


def neighbours(answer: Answer, roots: list[Path]) -> tuple[list[tuple[Image.Image, str]], list[list[str]]]:
    """Retrieved entries: thumbnails (path, caption) of those whose image is found under ``roots`` (absolute paths
    as they are), and one table row each (id, kind, score, text, answer)."""
    thumbs, rows = [], []
    for r in answer.evidence:
        if not (r.ok and isinstance(r.evidence, RetrieveEvidence)):
            continue
        for e in r.evidence.entries:
            rows.append([e.id, e.kind, f"{e.score:.3f}", e.text, e.answer_text or e.answer or ""])
            if e.image:
                p = Path(e.image)
                found = next((c for c in ([p] if p.is_absolute() else [root / p for root in roots]) if c.is_file()),
                             None)
                if found is not None:
                    thumbs.append((_read(found, 256), f"{e.id} · score {e.score:.2f}"
                                   + (f" · {e.answer_text}" if e.answer_text else "")))
    return thumbs, rows


def probabilities(answer: Answer) -> dict[str, float]:
    """``{"a. 행복분식": 0.97, ...}`` for a bar per option (gr.Label)."""
    return {f"{k}. {answer.options.get(k, '')}": float(p) for k, p in answer.probs.items()}


def verdict(answer: Answer) -> str:
    """The chosen answer as a Markdown heading, with flags and a failure's reason."""
    if answer.failed:
        return f"### No answer\n{'; '.join(answer.errors) or 'the reasoner gave none'} (fallback: `{answer.answer}`)"
    text = answer.options.get(answer.answer, answer.text or "")
    p = answer.probs.get(answer.answer, 0.0)
    flags = f"  \nflags: {', '.join(answer.flags)}" if answer.flags else ""
    return f"### {answer.answer}. {text}\nprobability {p:.1%} · method {answer.method}{flags}"


def route_text(answer: Answer) -> str:
    """Which tools ran and why, what was skipped, and every tool's one-line result or failure (Markdown)."""
    route = answer.route
    if route is None:
        return "**Route:** not routed (the image did not load)"
    lines = [f"**Route** ({route.method}): {', '.join(route.run) or 'no tools'}"]
    lines += [f"- `{t}`: {why}" for t, why in route.reasons.items()]
    lines += [f"- `{t}` skipped: {brief_error(why)}" for t, why in route.skipped.items()]
    lines += ["", "**Tools**"] if answer.evidence else []
    lines += [f"- `{r.tool}` {'✔' if r.ok else '✘'} {first_line(r.summary(4))} ({r.seconds:.2f}s)" for r in answer.evidence]
    return "\n".join(lines)


def tool_failures(answer: Answer) -> list[str]:
    """One line per tool that failed or could not run, and per error of the question."""
    lines = [f"{r.tool} failed: {brief_error(r.error)}" for r in answer.evidence if not r.ok]
    lines += [f"{t} skipped: {brief_error(why)}" for t, why in (answer.route.skipped.items() if answer.route else ())]
    return lines + [first_line(e) for e in answer.errors]


def timings(answer: Answer) -> list[list[str]]:
    """One row per graph step: step, start offset, seconds, status."""
    if not answer.steps:
        return []
    t0 = min(s.started for s in answer.steps)
    return [[s.label, f"+{s.started - t0:.2f}s", f"{s.seconds:.3f}", "ok" if s.ok else first_line(s.error or "failed")]
            for s in answer.steps]


def first_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= 300 else line[:297] + "..."
