"""``retrieve``: the k nearest knowledge-base entries to the image and question, with their scores and ids.

For a competition train set these are the most similar solved questions (options and answer included), which
the prompt shows as few-shot examples and the evidence reasoner turns into a prior; for passages, the most
relevant passages. The KB (``vqa kb build``) decides the embedder: its manifest names the model, which is
loaded here and checked against the KB's fingerprint. The leakage guard keeps the question's own row out
(see ``agent.kb.Guard``): by id, and by image file hash (sha256 of the bytes, as ``agent.core.images`` computes it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image
from pydantic import Field

from agent.core.errors import ConfigError, ImageError
from agent.core.images import file_sha256 as safe_file_sha256
from agent.core.schema import Question, RetrievedEntry, RetrieveEvidence
from tools.base import NoArgs, Routing, Tool, ToolError
from tools.retrieve.kb import GUARDS, Guard, Hit, check_weight, question_text

NO_KB = "no knowledge base: pass --kb DIR (build one with vqa kb build)"


def file_sha256(path: Path | None) -> str | None:
    """sha256 of the file's bytes (``LoadedImage.sha256``); ``None`` when there is no readable file."""
    if path is None:
        return None
    try:
        return safe_file_sha256(Path(path))
    except ImageError:
        return None


def to_entry(hit: Hit) -> RetrievedEntry:
    e = hit.entry
    return RetrievedEntry(id=e.id, kind=e.kind, score=round(hit.score, 4),
                          image_score=None if hit.image_score is None else round(hit.image_score, 4),
                          text_score=None if hit.text_score is None else round(hit.text_score, 4),
                          same_image=hit.same_image, text=e.text, options=e.options, answer=e.answer,
                          answer_text=e.answer_text, image=e.image)


class RetrieveArgs(NoArgs):
    query: str | None = Field(None, description="The text to search the knowledge base with (default: the "
                              "question and its options)")


class RetrieveTool(Tool):
    name = "retrieve"
    routing = Routing(
        keywords=(  # searched in the lower-cased question; high precision
            r"전통|유래|문화재|역사|명절|궁궐|사찰|유적|기념일|무엇이라고\s*부르|뭐라고\s*부르|"
            r"(?:음식|요리|건물|건축물|악기|놀이|옷|의상|도구)의?\s*(?:이름|명칭)",
            r"\b(?:traditional|traditionally|history|historical|origin|festival|heritage|dynasty|landmark|"
            r"cuisine|used for|what is this (?:food|building|place|dish))\b",
        ),
        why="asks for knowledge beyond the picture")
    flags = {"kb": "kb"}  # top-level settings (CLI flags) -> constructor keys
    cost = 0.5  # rough CPU seconds per image: the planners' prior
    Args = RetrieveArgs
    evidence = RetrieveEvidence
    uses = ("caption",)  # a routed caption is searched with the question
    description = ("Finds the k entries of a knowledge base (vqa kb build) most similar to the image and the "
                   "question: solved questions with their options and answers, captioned images, or passages, "
                   "each with a similarity score and id.")
    limitations = ("Similar is not the same: a retrieved answer belongs to another question and may not hold for "
                   "this image. Scores are raw cosine similarities of the KB's embedder (e5 scores run high, about "
                   "0.7-1.0). Needs --kb and the KB's embedding model available locally; CLIP models read Korean "
                   "poorly unless multilingual or Korean-trained.")

    def __init__(self, *, kb: str | os.PathLike | None = None, k: int = 3, clip: str | None = None,
                 image_weight: float | None = None, leakage_guard: str = "row", exclude_ids: Sequence[str] = (),
                 device: str = "auto") -> None:
        """``clip`` overrides the embedder named in the KB (same weights, e.g. moved); ``image_weight`` the KB's
        image share of the score; ``leakage_guard``: row, image or off (``agent.kb.Guard``)."""
        if int(k) < 1:
            raise ConfigError(f"retrieve k must be at least 1, found {k}")
        if leakage_guard not in GUARDS:
            raise ConfigError(f"retrieve leakage_guard must be one of {list(GUARDS)}, found {leakage_guard!r}")
        if image_weight is not None:
            check_weight(image_weight)
        super().__init__(kb=str(kb) if kb else None, k=int(k), clip=clip, image_weight=image_weight,
                         leakage_guard=leakage_guard, exclude_ids=sorted(map(str, exclude_ids)), device=device)
        self._kb = None
        self._embedder = None

    def load(self) -> None:
        from tools.retrieve.kb import KnowledgeBase, embedder_for

        if not self.settings["kb"]:
            raise ToolError(NO_KB)
        kb = KnowledgeBase.open(self.settings["kb"])
        self._embedder = embedder_for(kb, self.settings["clip"], self.settings["device"])
        self._kb = kb

    def apply(self, image: Image.Image, question: Question, workdir: Path | None,
              peers: Mapping[str, Tool], query: str | None = None) -> tuple[RetrieveEvidence, dict[str, str]]:
        """``query``: the text searched instead of the question and its options (the leakage guard still reads
        the question)."""
        s = self.settings
        guard = Guard(mode=s["leakage_guard"], query_id=question.id, image_sha256=file_sha256(question.image),
                      text=question.text, exclude_ids=frozenset(s["exclude_ids"]))
        text = query or question_text(question.text, question.options)
        caption = peers["caption"].caption_text(image, question) if query is None and "caption" in peers else None
        if caption:  # a routed caption searches too: "caption → retrieval"
            text = f"{text}\n{caption}"
        hits, excluded = self._kb.search(self._embedder, image=image, text=text, k=s["k"],
                                         guard=guard, image_weight=s["image_weight"])
        return RetrieveEvidence(kb=str(self._kb.root), embedder=self._kb.embedder.name,
                                entries=[to_entry(h) for h in hits], excluded=[i for i, _ in excluded]), {}
