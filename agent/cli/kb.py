"""``vqa kb``: build, extend, search and describe the knowledge base of the ``retrieve`` tool."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from agent.cli.common import AsJson, Opt, err, fail, out
from agent.core.errors import VqaError

kb_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                     help="The retrieve tool's knowledge base: build, add, search, info.")
Images = Annotated[Optional[Path], Opt("--images", help="Root folder the CSV's image paths are relative to "
                                       "(default: the CSV's folder).")]
Device = Annotated[str, Opt("--device", help="auto, cpu, cuda ... (CLIP models only).")]
SOURCE_HELP = ("A competition CSV with answers (id,path,question,a,b,c,d,answer), a JSONL of passages "
               '({"id": ..., "text": ...} a line), or a folder of images captioned by NAME.txt files or '
               "metadata.jsonl.")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


@contextmanager
def _progress(label: str) -> Iterator:
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    with bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _report(summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False))
        return
    indexes = ", ".join(f"{n} {i['type']} ({i['count']})" for n, i in summary.indexes.items())
    out.print(f"[bold]{summary.kb}[/]: {summary.total} entries, +{summary.added} from {summary.source} "
              f"({summary.source_kind}) in {summary.seconds:.1f}s", highlight=False)
    out.print(f"embedder: {summary.embedder}   indexes: {indexes}", highlight=False)
    if summary.skipped:
        out.print(f"[yellow]skipped {len(summary.skipped)}:[/]", highlight=False)
        for s in summary.skipped[:20]:
            out.print(f"  {s.where}: {s.reason}", highlight=False)
        if len(summary.skipped) > 20:
            out.print(f"  ... and {len(summary.skipped) - 20} more (--json lists all)")


@kb_app.command()
def build(
    source: Annotated[Path, typer.Argument(help=SOURCE_HELP)],
    out_dir: Annotated[Path, Opt("--out", help="Folder to write the knowledge base into (new or empty).")],
    images: Images = None,
    clip: Annotated[str, Opt("--clip", help="Embedder: a CLIP/SigLIP hub id or local folder (images and text), "
                             "or e5 (the shipped multilingual-e5-small; text only, offline).")] = "e5",
    index: Annotated[str, Opt("--index", help="auto (exact up to 50,000 vectors, IVF above), flat, ivf or hnsw.")]
    = "auto",
    image_weight: Annotated[float, Opt("--image-weight", help="Image share of the score when both sides have "
                                       "an image (text gets the rest).")] = 0.5,
    force: Annotated[bool, Opt("--force", help="Replace a knowledge base already in --out.")] = False,
    device: Device = "auto", as_json: AsJson = False,
) -> None:
    """Build a knowledge base from a labelled competition CSV, passages or captioned images."""
    from agent.kb.build import build_kb

    try:
        with _progress("embedding") as update:
            summary = build_kb(source, out_dir, clip=clip, images_root=images, index=index,
                               image_weight=image_weight, force=force, device=device, on_progress=update)
    except VqaError as exc:
        fail(str(exc))
    _report(summary, as_json)


@kb_app.command()
def add(
    kb: Annotated[Path, typer.Argument(help="The knowledge-base folder.")],
    source: Annotated[Path, typer.Argument(help=SOURCE_HELP)],
    images: Images = None,
    clip: Annotated[Optional[str], Opt("--clip", help="Where the KB's embedder is now, if it moved (same weights).")]
    = None,
    device: Device = "auto", as_json: AsJson = False,
) -> None:
    """Append a source to a knowledge base; ids already in it are skipped and listed."""
    from agent.kb.build import add_to_kb

    try:
        with _progress("embedding") as update:
            summary = add_to_kb(kb, source, images_root=images, clip=clip, device=device, on_progress=update)
    except VqaError as exc:
        fail(str(exc))
    _report(summary, as_json)


@kb_app.command()
def search(
    kb: Annotated[Path, typer.Argument(help="The knowledge-base folder.")],
    image: Annotated[Optional[Path], Opt("--image", help="Query image.")] = None,
    text: Annotated[Optional[str], Opt("--text", help="Query text (a question, with its options if you like).")]
    = None,
    k: Annotated[int, Opt("-k", "--k", help="How many entries to show.")] = 5,
    clip: Annotated[Optional[str], Opt("--clip", help="Where the KB's embedder is now, if it moved.")] = None,
    image_weight: Annotated[Optional[float], Opt("--image-weight", help="Override the KB's image share.")] = None,
    device: Device = "auto", as_json: AsJson = False,
) -> None:
    """Show the entries nearest to an image, a text or both, with their scores."""
    from agent.core.images import load_image
    from tools.retrieve.kb import Guard, KnowledgeBase, embedder_for

    if image is None and not text:
        fail("give --image, --text or both")
    try:
        base = KnowledgeBase.open(kb)
        loaded = load_image(image) if image is not None else None
        embedder = embedder_for(base, clip, device)
        hits, _ = base.search(embedder, image=loaded.image if loaded else None, text=text, k=k,
                              guard=Guard(mode="off", image_sha256=loaded.sha256 if loaded else None),
                              image_weight=image_weight)
    except VqaError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"hits": [h.as_dict() for h in hits]}, ensure_ascii=False))
        return
    t = Table(title=f"{kb} ({base.embedder.name})")
    for col in ("#", "id", "score", "image", "text", "kind", "entry"):
        t.add_column(col, overflow="fold")
    for i, h in enumerate(hits, 1):
        e = h.entry
        entry = e.text + (f"  → {e.answer}. {e.answer_text}" if e.answer_text else "")
        t.add_row(str(i), Text(e.id), f"{h.score:.3f}", _num(h.image_score) + (" =" if h.same_image else ""),
                  _num(h.text_score), e.kind, Text(entry))
    out.print(t)


@kb_app.command()
def info(
    kb: Annotated[Path, typer.Argument(help="The knowledge-base folder.")],
    as_json: AsJson = False,
) -> None:
    """Show a knowledge base's manifest: embedder, counts, index types, sources."""
    from tools.retrieve.kb import KnowledgeBase

    try:
        manifest = KnowledgeBase.open(kb).manifest
    except VqaError as exc:
        fail(str(exc))
    if as_json:
        print(manifest.model_dump_json())
        return
    e = manifest.embedder
    out.print(f"[bold]{kb}[/]: {manifest.count} entries {manifest.kinds}, format {manifest.version}", highlight=False)
    out.print(f"embedder: {e.name} ({e.backend}, dim {e.dim}, {'+'.join(e.modalities)}, fingerprint {e.fingerprint})",
              highlight=False)
    for name, i in manifest.indexes.items():
        out.print(f"index {name}: {i.type} ({i.count} vectors) {i.params}", highlight=False)
    for s in manifest.sources:
        out.print(f"source: {s.path} ({s.kind}): +{s.added}, {s.skipped} skipped, {s.at}", highlight=False)
