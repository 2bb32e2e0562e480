"""The graph's own overhead per question, for a before/after comparison: ``vqa bench overhead`` prints JSON for the
code on ``PYTHONPATH``, so two checkouts (both with this command) can be compared on one machine in one run by
alternating::

    for i in 1 2 3; do for tree in /path/to/before /path/to/after; do
        PYTHONPATH=$tree vqa bench overhead --label $tree; done; done

It uses only ``run_batch``, the evidence reasoner and ``Router``, as ``vqa bench mc``'s overhead arms do:
``cached`` (question texts already embedded in the process) and ``fresh`` (new texts: routing's e5 embeds them),
taking turns over ``repeats``; wall and process CPU milliseconds per question, median and minimum. CPU time is the
steadier number on a shared machine (waiting for a core is not in it).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from agent.core.schema import Question, Route
from agent.reasoners.evidence import EvidenceReasoner
from agent.router import Router
from agent.runner import run_batch
from agent.services import Services

TEXTS = [
    ("사진 속 하늘은 무슨 색인가요?", ["파란색", "빨간색", "초록색", "검은색"]),
    ("What is the mood of this photo?", ["calm", "busy", "scary"]),
    ("이 사진은 어떤 계절에 찍은 것 같나요?", ["봄", "여름", "가을", "겨울"]),
    ("Is this photo taken indoors or outdoors?", ["indoors", "outdoors"]),
]


class RouteOnly(Router):
    """Routes every question in full (rules, e5, the learned model) but hands the graph no tool to run (tool time
    is the tools' own)."""

    def route(self, question: str, options: list[str] | None = None) -> Route:
        return super().route(question, options).model_copy(update={"tools": [], "reasons": {}})


def make_questions(folder: Path, n: int, size: tuple[int, int] = (448, 336), tag: str = "") -> list[Question]:
    """``n`` questions, each on its own photo-sized JPEG; ``tag`` makes the texts new (and the ids unique)."""
    rng = np.random.default_rng(0)
    qs = []
    for i in range(n):
        path = folder / f"q{i}.jpg"
        if not path.exists():
            arr = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype("uint8")
            Image.fromarray(arr).resize(size, Image.BILINEAR).save(path, quality=90)
        text, opts = TEXTS[i % len(TEXTS)]
        text = f"{text} ({tag} {i})" if tag else text
        qs.append(Question(id=f"bench{tag}-{i}", image=path, text=text, options=dict(zip("abcde", opts))))
    return qs


def run(questions: int = 16, batch_size: int = 8, repeats: int = 5, label: str = "") -> dict:
    """Medians and minima of wall and CPU milliseconds per question of the ``cached`` and ``fresh`` arms."""
    services = Services(reasoner=EvidenceReasoner(), router=RouteOnly())
    res: dict[str, dict[str, list[float]]] = {arm: {"wall": [], "cpu": []} for arm in ("cached", "fresh")}
    with tempfile.TemporaryDirectory(prefix="vqa-overhead-") as tmp:
        root = Path(tmp)
        run_batch(make_questions(root, questions), services, root / "warm", batch_size=batch_size)
        for r in range(repeats):
            for arm in ("cached", "fresh") if r % 2 == 0 else ("fresh", "cached"):
                qs = make_questions(root, questions, tag="" if arm == "cached" else f"f{r}")
                w, c = time.perf_counter(), time.process_time()
                s = run_batch(qs, services, root / f"{arm}-{r}", batch_size=batch_size)
                if s.failed:
                    raise RuntimeError(f"{s.failed} benchmark questions failed; see {root / f'{arm}-{r}'}/failed.csv")
                res[arm]["wall"].append(1000 * (time.perf_counter() - w) / len(qs))
                res[arm]["cpu"].append(1000 * (time.process_time() - c) / len(qs))
    out: dict = {"label": label, "questions": questions, "batch_size": batch_size, "repeats": repeats}
    for arm, kinds in res.items():
        for kind, vals in kinds.items():
            out[f"{arm}_{kind}_ms_per_q"] = round(statistics.median(vals), 2)
            out[f"{arm}_{kind}_ms_per_q_min"] = round(min(vals), 2)
    return out
