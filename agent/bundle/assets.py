"""What a bundle holds besides wheels: the model snapshots of the configured tools and reasoner (from the local
hub cache, else the hub), EasyOCR's Korean weights, Tesseract's traineddata and a Hangul font (when found here).

Each asset is planned first (``Asset``: what, from where, how many bytes, whether the bundle already has it), so
the sizes are printed before anything is fetched, and fetched second.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError

MODELS, EASYOCR, TESSDATA, FONTS = "models", "easyocr", "tessdata", "fonts"
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata")
TESS_LANGS = ("kor", "eng", "osd")


@dataclass
class Asset:
    """One thing to put in the bundle: ``dest`` is its path in the bundle (a folder for a model)."""

    kind: str  # model, easyocr, tessdata, font
    name: str  # what the user reads: a hub id, a file name
    dest: str
    source: str  # hub:ID, or the local path it is copied from
    size: int | None = None  # bytes; None when unknown
    files: list[Path] = field(default_factory=list)  # local files to copy (empty: download from the hub)
    origin: Path | None = None  # the folder ``files`` are relative to (a model's)
    setting: tuple[str, str] | None = None  # the vqa.toml key that points at it: ("", "model"), ("detect", "model")


def model_folder(model_id: str) -> str:
    """The bundle folder of a hub id: ``models/ORG--NAME``."""
    return f"{MODELS}/" + model_id.replace("/", "--")


def configured_models(settings: Any) -> list[tuple[str, str, tuple[str, str]]]:
    """``(what, hub id or path, vqa.toml key)`` for the reasoner (in-process Qwen only) and each model tool."""
    from tools.detect import DEFAULT_DETECTOR
    from tools.som import DEFAULT_SEGMENTER

    tools = settings.tool_settings()
    out = []
    if settings.reasoner == "qwen":
        out.append(("reasoner", settings.model, ("", "model")))
    out.append(("detect", tools.get("detect", {}).get("model", DEFAULT_DETECTOR), ("", "detector")))
    out.append(("som", tools.get("som", {}).get("model", DEFAULT_SEGMENTER), ("", "segmenter")))
    if clip := tools.get("retrieve", {}).get("clip"):
        out.append(("retrieve", clip, ("retrieve", "clip")))
    return out


def plan_model(what: str, model: str, setting: tuple[str, str], hub_ok: bool) -> Asset:
    """A model from a local folder, the local hub cache, or (when ``hub_ok``) the hub. Raises ``ConfigError`` when
    it is in none of them."""
    from agent.core.hub import is_local

    if is_local(model):
        root = Path(model).expanduser()
        if not root.is_dir():
            raise ConfigError(f"the {what} model {model!r} is not a folder; pass a hub id or a checkpoint folder, or "
                              "--no-models")
        files = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
        return Asset("model", model, f"{MODELS}/{root.name}", str(root.resolve()), sum(f.stat().st_size for f in files),
                     files, root, setting)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        root = Path(snapshot_download(model, local_files_only=True))
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return Asset("model", model, model_folder(model), f"hub:{model} (cache {root})",
                     sum(f.stat().st_size for f in files), files, root, setting)
    except LocalEntryNotFoundError:
        pass
    if not hub_ok:
        raise ConfigError(f"the {what} model {model!r} is not in the local hub cache and the hub is unreachable; "
                          "download it on a machine with network, or pass --no-models")
    from huggingface_hub import HfApi

    info = HfApi().model_info(model, files_metadata=True, timeout=30)
    size = sum(s.size or 0 for s in info.siblings or [])
    return Asset("model", model, model_folder(model), f"hub:{model}@{info.sha}", size, setting=setting)


def easyocr_dir() -> Path:
    from tools.ocr import default_easyocr_dir

    return default_easyocr_dir()


def plan_easyocr() -> list[Asset]:
    """EasyOCR's Korean recogniser and its text detector, from EasyOCR's model folder, when found there."""
    from tools.ocr import DETECTOR_WEIGHTS, KOREAN_WEIGHTS

    out = []
    for name in (KOREAN_WEIGHTS, DETECTOR_WEIGHTS):
        path = easyocr_dir() / name
        if path.is_file():
            out.append(Asset("easyocr", name, f"{EASYOCR}/{name}", str(path), path.stat().st_size, [path]))
    return out


def tessdata_dir() -> Path | None:
    """Tesseract's traineddata folder: ``$TESSDATA_PREFIX``, what ``tesseract --list-langs`` names, or a usual one."""
    if prefix := os.environ.get("TESSDATA_PREFIX"):
        return Path(prefix)
    if shutil.which("tesseract"):
        proc = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True)
        if m := re.search(r'"([^"]+)"', proc.stdout + proc.stderr):
            return Path(m.group(1))
    return next((Path(d) for d in TESSDATA_DIRS if Path(d).is_dir()), None)


def plan_tessdata() -> list[Asset]:
    folder = tessdata_dir()
    out = []
    for lang in TESS_LANGS:
        path = folder / f"{lang}.traineddata" if folder else None
        if path is not None and path.is_file():
            out.append(Asset("tessdata", path.name, f"{TESSDATA}/{path.name}", str(path), path.stat().st_size, [path]))
    return out


def plan_font() -> list[Asset]:
    from tools.ocr import HANGUL_FONTS

    path = next((Path(f) for f in HANGUL_FONTS if Path(f).is_file()), None)
    return [Asset("font", path.name, f"{FONTS}/{path.name}", str(path), path.stat().st_size, [path])] if path else []


def fetch(asset: Asset, root: Path) -> list[Path]:
    """Put ``asset`` under ``root``; the files written (for the manifest)."""
    dest = root / asset.dest
    if asset.kind != "model":
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(asset.files[0], dest)
        return [dest]
    if asset.files:
        written = []
        for f in asset.files:
            out = dest / f.relative_to(asset.origin)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out)  # follows the hub cache's symlinks to the blobs
            written.append(out)
        return written
    from huggingface_hub import snapshot_download

    snapshot_download(asset.name, local_dir=dest)
    return sorted(p for p in dest.rglob("*") if p.is_file() and ".cache" not in p.relative_to(dest).parts)
