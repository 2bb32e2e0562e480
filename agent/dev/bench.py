"""``vqa bench``: logit scoring vs generation, and the graph's own overhead, measured in one run.

All three numbers go through ``run_batch`` exactly as ``vqa batch`` does
(dynamic batching, results log, submission). Model timings force no tools;
the overhead arm uses the model-free reasoner with routing on questions that
need no tool, so it measures image loading + routing + graph + bookkeeping.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np
from PIL import Image

from agent.reasoners.evidence import EvidenceReasoner
from agent.reasoners.qwen import QwenBackend
from agent.runner import run_batch
from agent.schema import Question
from agent.services import Services

TEXTS = [
    ("사진 속 하늘은 무슨 색인가요?", ["파란색", "빨간색", "초록색", "검은색"]),
    ("What is the mood of this photo?", ["calm", "busy", "scary"]),
    ("이 사진은 어떤 계절에 찍은 것 같나요?", ["봄", "여름", "가을", "겨울"]),
    ("Is this photo taken indoors or outdoors?", ["indoors", "outdoors"]),
]


def make_questions(folder: Path, n: int, size: tuple[int, int] = (448, 336)) -> list[Question]:
    rng = np.random.default_rng(0)
    qs = []
    for i in range(n):
        path = folder / f"q{i}.jpg"
        arr = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype("uint8")
        Image.fromarray(arr).resize(size, Image.BILINEAR).save(path, quality=90)
        text, opts = TEXTS[i % len(TEXTS)]
        qs.append(Question(id=f"bench-{i}", image=path, text=text, options=dict(zip("abcde", opts))))
    return qs


def _time(services: Services, qs: list[Question], run_dir: Path, batch_size: int, tools: list[str] | None) -> float:
    t0 = time.perf_counter()
    s = run_batch(qs, services, run_dir, batch_size=batch_size, forced_tools=tools)
    if s.failed:
        raise RuntimeError(f"{s.failed} benchmark questions failed; see {run_dir / 'failed.csv'}")
    return (time.perf_counter() - t0) / len(qs)


def run_bench(model: str, n: int = 16, batch_size: int = 8, device: str = "auto") -> dict:
    with tempfile.TemporaryDirectory(prefix="vqa-bench-") as tmp:
        root = Path(tmp)
        qs = make_questions(root, n)
        out: dict = {"model": model, "questions": n, "batch_size": batch_size}
        for key, generate in (("logits_s_per_q", False), ("generate_s_per_q", True)):
            backend = QwenBackend(model, generate=generate, device=device)
            with closing(backend):
                backend.load()
                services = Services(reasoner=backend)
                _time(services, qs[:batch_size], root / f"warm-{key}", batch_size, [])  # warm-up, not counted
                out[key] = round(_time(services, qs, root / key, batch_size, []), 4)
        services = Services(reasoner=EvidenceReasoner())
        _time(services, qs, root / "warm-overhead", batch_size, None)
        out["overhead_ms_per_q"] = round(1000 * _time(services, qs, root / "overhead", batch_size, None), 3)
        out["device"] = str(backend.device) if hasattr(backend, "device") else device
        return out
