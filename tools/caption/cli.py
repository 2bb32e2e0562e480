"""``vqa caption IMAGES...`` (captions as JSONL) and ``vqa eval --task caption REFS`` (COCO-style references).

Mounted by the CLI from ``CaptionTool.commands`` / ``CaptionTool.eval_task``. Bad input raises a ``VqaError``
(one line, exit 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.errors import ConfigError

Model = Annotated[Optional[str], typer.Option("--model", help="The Qwen-VL checkpoint (default: the reasoner's).")]
Captioner = Annotated[Optional[str], typer.Option("--captioner", help="A BLIP / BLIP-2 checkpoint instead "
                                                  "(folder or hub id).")]
Lang = Annotated[str, typer.Option("--lang", help="ko or en.")]


def _tool(model: str | None, captioner: str | None):
    from tools import load_tool

    tool = load_tool("caption", **{k: v for k, v in (("model", model), ("captioner", captioner)) if v})
    tool.setup()  # a checkpoint that cannot load is one clear line, before any image
    return tool


def _check_lang(lang: str) -> str:
    if lang not in ("ko", "en"):
        raise ConfigError(f"--lang must be ko or en, found {lang!r}")
    return lang


def _caption(tool, path: Path, lang: str) -> dict:
    from agent.images import load_image
    from agent.schema import Question

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
        from agent.fileio import atomic_write

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
    from agent.fileio import atomic_write
    from agent.images import resolve_image_path
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
