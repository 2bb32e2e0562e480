"""``caption``: one sentence describing the photo, in the question's language (Korean or English).

The captioner is the reasoner's own Qwen-VL checkpoint by default (``--model`` / ``model = ...`` fills this
tool's ``model`` key, ``Tool.flags``; left alone, both are the project's default checkpoint): one greedy generation per image and language, which the tool cache keeps
(the cache key reads only the image and the language, not the question). ``captioner`` names a captioning
checkpoint instead (transformers' BLIP or BLIP-2 classes, a local folder or a hub id); BLIP writes English, so
its Korean request is answered in English and the evidence says so. A checkpoint that cannot load makes the
tool unavailable for the run, like every tool.

Evidence: the caption, its language and the model; it goes into the answer prompt like any tool's evidence.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from PIL import Image
from pydantic import BaseModel, ConfigDict

from agent.core.errors import ConfigError
from agent.core.evidence import Evidence, quote
from agent.core.schema import Question
from tools.base import Routing, Tool

DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"  # the reasoner's default checkpoint (agent.config.DEFAULT_MODEL)
PROMPTS = {"ko": "이 사진을 한 문장으로 설명하세요.", "en": "Describe this photo in one sentence."}
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def question_language(question: Question) -> Literal["ko", "en"]:
    """The question's language: its ``language`` field, else Korean when its text has Hangul."""
    return question.language or ("ko" if HANGUL.search(question.text) else "en")


def clean_caption(text: str) -> str:
    """The first line of the generated text, without surrounding quotes or whitespace."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0].strip("\"'“”") if lines else ""


class CaptionEvidence(Evidence):
    tool: Literal["caption"] = "caption"
    caption: str
    language: Literal["ko", "en"]
    model: str

    def prompt_lines(self) -> list[str]:
        return [f"caption={quote(self.caption)} (language {self.language}, by {quote(self.model)})"]

    def summary(self, limit: int = 6) -> str:
        text = self.caption if len(self.caption) <= 40 * limit else self.caption[: 40 * limit - 3] + "..."
        return f"{text!r} ({self.language})"


class CaptionConfig(BaseModel):
    """``[caption]`` settings."""

    model_config = ConfigDict(extra="forbid")
    model: str = DEFAULT_MODEL  # the reasoner's Qwen-VL (the top-level model setting fills it when given)
    captioner: str | None = None  # a BLIP / BLIP-2 checkpoint instead (folder or hub id)
    max_new_tokens: int = 40
    max_side: int = 768  # the photo is shrunk to this longest side first (a caption needs no more)
    device: str = "auto"


class CaptionTool(Tool):
    name = "caption"
    evidence = CaptionEvidence
    Config = CaptionConfig
    flags = {"model": "model"}  # the reasoner's checkpoint is the default captioner
    cost = 6.0  # one VLM generation on CPU; cached per image afterwards
    commands = "tools.caption.tool:caption_cmd"
    eval_task = "tools.caption.tool:eval_cmd"
    routing = Routing(
        keywords=(r"무슨\s*장면|어떤\s*장면|무엇을\s*하는\s*(?:장면|사진)|사진을\s*(?:설명|묘사)|상황을\s*설명|"
                  r"무슨\s*일이\s*(?:일어나|벌어지)",
                  r"\b(?:describe (?:the|this) (?:photo|picture|image|scene)|what is happening|what's happening|"
                  r"what (?:is|are) (?:the people|they) doing|which (?:sentence|caption) (?:best )?describes)\b"),
        examples=("이 사진은 어떤 장면인가요?", "사진 속에서 무슨 일이 일어나고 있나요?", "What is happening in this photo?",
                  "Which sentence best describes the picture?"),
        why="asks what the photo shows as a whole")
    description = ("Describes the photo in one sentence in the question's language (Korean or English), with the "
                   "reasoner's Qwen-VL or a BLIP/BLIP-2 captioner.")
    limitations = ("A caption is a summary: it omits small objects, text and counts, and can name things wrongly; "
                   "BLIP captioners write English only.")

    def __init__(self, *, model: str = DEFAULT_MODEL, captioner: str | None = None, max_new_tokens: int = 40,
                 max_side: int = 768, device: str = "auto") -> None:
        super().__init__(model=model, captioner=captioner, max_new_tokens=int(max_new_tokens), max_side=int(max_side),
                         device=device)
        self._backend: Any = None
        self._memo: dict[tuple, tuple[str, str]] = {}  # (image digest, language) -> caption: one generation each
        self._memo_lock = threading.Lock()

    @property
    def checkpoint(self) -> str:
        return self.settings["captioner"] or self.settings["model"]

    def cache_inputs(self, question: Question) -> dict[str, Any]:
        """One caption per image and language: the question's text and options do not change it."""
        return {"language": question_language(question)}

    def load(self) -> None:
        import torch
        from transformers import AutoConfig, AutoProcessor

        from agent.core.hub import locate

        folder = locate(self.checkpoint, flag="--captioner" if self.settings["captioner"] else "--model",
                        what="captioning")
        kind = AutoConfig.from_pretrained(folder).model_type
        if kind == "blip":
            from transformers import BlipForConditionalGeneration as Model
        elif kind == "blip-2":
            from transformers import Blip2ForConditionalGeneration as Model
        else:
            from transformers import AutoModelForImageTextToText as Model
        device = self.settings["device"]
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self._backend = (kind, AutoProcessor.from_pretrained(folder), Model.from_pretrained(folder).eval().to(device),
                         device)

    def generate(self, image: Image.Image, language: str) -> tuple[str, str]:
        """``(caption, language it is in)`` for one image."""
        import torch

        kind, processor, model, device = self._backend
        image = image.convert("RGB")
        image.thumbnail((self.settings["max_side"], self.settings["max_side"]))
        if kind in ("blip", "blip-2"):
            inputs = processor(images=image, return_tensors="pt").to(device)
            said = "en"
        else:
            content = [{"type": "image"}, {"type": "text", "text": PROMPTS[language]}]
            text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                 add_generation_prompt=True)
            inputs = processor(text=[text], images=[image], return_tensors="pt").to(device)
            said = language
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=self.settings["max_new_tokens"], do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:] if kind not in ("blip", "blip-2") else out
        return clean_caption(processor.batch_decode(new, skip_special_tokens=True)[0]), said

    def describe(self, image: Image.Image, language: str) -> tuple[str, str]:
        """``generate``, once per image and language in this process (``retrieve`` reads it as a peer)."""
        key = (hashlib.sha1(image.tobytes()).hexdigest(), image.size, language)
        with self._memo_lock:
            hit = self._memo.get(key)
        if hit is None:
            self.setup()
            hit = self.generate(image, language)
            with self._memo_lock:
                if len(self._memo) >= 256:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[key] = hit
        return hit

    def caption_text(self, image: Image.Image, question: Question) -> str | None:
        """The caption to search a knowledge base with, or ``None`` when the captioner cannot run."""
        try:
            return self.describe(image, question_language(question))[0] or None
        except Exception:  # noqa: BLE001 - the caption's own node records why; the search goes on without it
            return None

    def apply(self, image: Image.Image, question: Question, workdir: Path | None,
              peers: Mapping[str, Tool]) -> tuple[CaptionEvidence, dict[str, str]]:
        caption, language = self.describe(image, question_language(question))
        return CaptionEvidence(caption=caption, language=language, model=Path(self.checkpoint).name), {}


# ---------------------------------------------------------------- vqa caption IMAGES..., vqa eval --task caption
# (commands and eval_task above; bad input raises a VqaError: one line, exit 2)

Model = Annotated[Optional[str], typer.Option("--model", help="The Qwen-VL checkpoint (default: the reasoner's).")]
Captioner = Annotated[Optional[str], typer.Option("--captioner", help="A BLIP / BLIP-2 checkpoint instead "
                                                  "(folder or hub id).")]
Lang = Annotated[str, typer.Option("--lang", help="ko or en.")]


def _tool(model: str | None, captioner: str | None):
    tool = CaptionTool(**{k: v for k, v in (("model", model), ("captioner", captioner)) if v})
    tool.setup()  # a checkpoint that cannot load is one clear line, before any image
    return tool


def _check_lang(lang: str) -> str:
    if lang not in ("ko", "en"):
        raise ConfigError(f"--lang must be ko or en, found {lang!r}")
    return lang


def _caption(tool, path: Path, lang: str) -> dict:
    from agent.core.images import load_image
    from agent.core.schema import Question

    q = Question(id=path.stem, text="caption", options={}, language=lang)
    result = tool.run(load_image(path).image, q)
    if not result.ok:
        raise ConfigError(f"{path}: {result.error}")
    ev = result.evidence
    return {"image": str(path), "caption": ev.caption, "language": ev.language, "model": ev.model}


def caption_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    lang: Lang = "ko",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the JSONL here (default: stdout).")] = None,
    model: Model = None,
    captioner: Captioner = None,
) -> None:
    """Describe each image in one sentence (Korean or English): one JSON line per image."""
    _check_lang(lang)
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise ConfigError(f"no such image file(s): {', '.join(missing[:5])}")
    tool = _tool(model, captioner)
    lines = [json.dumps(_caption(tool, p, lang), ensure_ascii=False) for p in images]
    if out is None:
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        from agent.core.fileio import atomic_write

        atomic_write(out, "\n".join(lines) + "\n")


def read_refs(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """COCO-style ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}`` -> (id -> file,
    id -> reference captions)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        files = {str(im["id"]): im["file_name"] for im in data["images"]}
        refs: dict[str, list[str]] = {k: [] for k in files}
        for a in data["annotations"]:
            refs[str(a["image_id"])].append(a["caption"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected COCO-style captions JSON ({{\"images\": [{{\"id\", \"file_name\"}}], "
                          f"\"annotations\": [{{\"image_id\", \"caption\"}}]}}): {type(exc).__name__}: {exc}") from None
    empty = [k for k, v in refs.items() if not v]
    if empty:
        raise ConfigError(f"{path}: images without reference captions: {empty[:5]}")
    return files, refs


def eval_cmd(
    refs_path: Annotated[Path, typer.Argument(metavar="REFS", help="COCO-style reference captions JSON.")],
    images: Annotated[Path, typer.Option("--images", help="Root folder of the images' file_name.")],
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Where metrics.json and captions.jsonl go.")],
    lang: Lang = "ko",
    model: Model = None,
    captioner: Captioner = None,
) -> None:
    """BLEU-4, METEOR, ROUGE-L and CIDEr (pycocoevalcap) of the captions against the references."""
    from agent.core.fileio import atomic_write
    from agent.core.images import resolve_image_path
    from tools.caption.metrics import score

    _check_lang(lang)
    files, refs = read_refs(refs_path)
    paths = {k: resolve_image_path(f, images) for k, f in files.items()}
    tool = _tool(model, captioner)
    rows = {k: _caption(tool, p, lang) for k, p in paths.items()}
    metrics = {"task": "caption", "model": tool.checkpoint,
               **score(refs, {k: r["caption"] for k, r in rows.items()}, lang)}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "captions.jsonl", "".join(json.dumps({"id": k, **r}, ensure_ascii=False) + "\n"
                                                     for k, r in rows.items()))
    atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False))
    meteor = f"{metrics['meteor']:.3f}" if metrics["meteor"] is not None else "n/a"
    print(f"BLEU-4 {metrics['bleu4']:.3f}  METEOR {meteor}  ROUGE-L {metrics['rougeL']:.3f}  CIDEr "
          f"{metrics['cider']:.3f}  (n={metrics['n']}, {lang}, tokens: {metrics['tokenizer']})\n"
          f"metrics: {run_dir / 'metrics.json'}")
