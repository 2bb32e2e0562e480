"""The graph's own overhead per question, for a before/after comparison: ``python eval/bench_overhead.py`` prints
JSON for the code on ``PYTHONPATH``, so two checkouts can be compared on one machine in one run by alternating::

    for i in 1 2 3; do for tree in /path/to/before /path/to/after; do
        PYTHONPATH=$tree python eval/bench_overhead.py --label $tree; done; done

It uses only what both sides have (``run_batch``, the evidence reasoner, ``Router``), as ``vqa bench``'s overhead
arms do: ``cached`` (question texts already embedded in the process) and ``fresh`` (new texts: routing's e5 embeds
them), taking turns over ``--repeats``; wall and process CPU milliseconds per question, median and minimum. CPU
time is the steadier number on a shared machine (waiting for a core is not in it).
"""

from __future__ import annotations

import argparse
import json
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

TEXTS = [("사진 속 하늘은 무슨 색인가요?", ["파란색", "빨간색", "초록색", "검은색"]),
         ("What is the mood of this photo?", ["calm", "busy", "scary"]),
         ("이 사진은 어떤 계절에 찍은 것 같나요?", ["봄", "여름", "가을", "겨울"]),
         ("Is this photo taken indoors or outdoors?", ["indoors", "outdoors"])]


class RouteOnly(Router):
    """Routes in full but runs no tool (tool time is the tools' own)."""

    def route(self, question: str, options: list[str] | None = None) -> Route:
        return super().route(question, options).model_copy(update={"tools": [], "reasons": {}})


def questions(folder: Path, n: int, tag: str) -> list[Question]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = folder / f"q{i}.jpg"
        if not path.exists():
            arr = (rng.random((42, 56, 3)) * 255).astype("uint8")
            Image.fromarray(arr).resize((448, 336), Image.BILINEAR).save(path, quality=90)
        text, opts = TEXTS[i % len(TEXTS)]
        out.append(Question(id=f"{tag}-{i}", image=path, text=f"{text} ({tag} {i})" if tag != "cached" else text,
                            options=dict(zip("abcde", opts))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    services = Services(reasoner=EvidenceReasoner(), router=RouteOnly())
    res: dict[str, dict[str, list[float]]] = {arm: {"wall": [], "cpu": []} for arm in ("cached", "fresh")}
    with tempfile.TemporaryDirectory(prefix="vqa-overhead-") as tmp:
        root = Path(tmp)
        run_batch(questions(root, a.questions, "cached"), services, root / "warm", batch_size=a.batch_size)
        for r in range(a.repeats):
            for arm in ("cached", "fresh") if r % 2 == 0 else ("fresh", "cached"):
                qs = questions(root, a.questions, "cached" if arm == "cached" else f"f{r}")
                w, c = time.perf_counter(), time.process_time()
                s = run_batch(qs, services, root / f"{arm}-{r}", batch_size=a.batch_size)
                if s.failed:
                    raise SystemExit(f"{s.failed} questions failed; see {root / f'{arm}-{r}' / 'failed.csv'}")
                res[arm]["wall"].append(1000 * (time.perf_counter() - w) / len(qs))
                res[arm]["cpu"].append(1000 * (time.process_time() - c) / len(qs))
    out: dict = {"label": a.label, "questions": a.questions, "batch_size": a.batch_size, "repeats": a.repeats}
    for arm, kinds in res.items():
        for kind, vals in kinds.items():
            out[f"{arm}_{kind}_ms_per_q"] = round(statistics.median(vals), 2)
            out[f"{arm}_{kind}_ms_per_q_min"] = round(min(vals), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
