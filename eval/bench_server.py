"""Batch throughput of the ``openai`` backend at concurrency 1, 4 and 16, against the local test double of a server.

This measures the CLIENT, not a model: the server is ``tests/fake_openai_server.py`` (a scripted stand-in, run
in its own process on 127.0.0.1) answering every request after a fixed artificial latency (default 50 ms), so the
numbers show how well ``vqa batch`` keeps ``max_concurrency`` requests in flight, and what the graph, image
loading and JPEG/base64 encoding cost on this machine's CPUs. A real server's throughput depends on its model,
GPU and batching.

For each concurrency C: ``run_batch`` (the code behind ``vqa batch``) over the same questions with
``--batch-size C`` and ``max_concurrency=C``, no tools. ``ideal_q_per_s`` is C / latency. ``backend_q_per_s`` is
``OpenAIBackend.decide`` alone on prepared requests (no graph, no image loading).

    .venv/bin/python -m eval.bench_server [--questions 96] [--latency 0.05] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import closing, contextmanager
from pathlib import Path

import httpx

from agent.images import load_image
from agent.reasoners.base import ReasonRequest
from agent.reasoners.openai import OpenAIBackend
from agent.runner import run_batch
from agent.schema import Question
from agent.services import Services

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "examples" / "images").glob("*.jpg"))


@contextmanager
def test_server(latency: float):
    """The test double in a child process; yields its base URL."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai_server.py"), "--delay", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_stats(url: str, reset: bool = False) -> dict:
    root = url.removesuffix("/v1")
    return httpx.post(root + "/_stats/reset").json() if reset else httpx.get(root + "/_stats").json()


def questions(n: int) -> list[Question]:
    opts = dict(zip("abcd", ["white", "black", "red", "blue"]))
    return [Question(id=f"q{i:03d}", image=IMAGES[i % len(IMAGES)], text=f"Question {i}: what colour is it?",
                     options=opts) for i in range(n)]


def bench(n: int, latency: float, concurrency: list[int], max_pixels: int) -> dict:
    qs = questions(n)
    prepared = [ReasonRequest(q, load_image(q.image).image) for q in qs]
    out: dict = {"what": "client throughput against a local test double (fixed latency, no model)",
                 "questions": n, "latency_s": latency, "max_pixels": max_pixels, "cpus": os.cpu_count(), "runs": []}
    with test_server(latency) as url:
        for c in concurrency:
            backend = OpenAIBackend("fake-qwen", url, max_concurrency=c, max_pixels=max_pixels)
            with closing(backend):
                backend.load()
                t0 = time.perf_counter()
                for i in range(0, n, c):
                    backend.decide(prepared[i : i + c])
                backend_s = time.perf_counter() - t0
                server_stats(url, reset=True)
                with tempfile.TemporaryDirectory() as tmp:
                    summary = run_batch(list(qs), Services(reasoner=backend), Path(tmp) / "run", batch_size=c,
                                        forced_tools=[])
            assert summary.answered == n, f"expected {n} answers, found {summary.answered}"
            out["runs"].append({"concurrency": c, "batch_q_per_s": round(n / summary.seconds, 1),
                                "backend_q_per_s": round(n / backend_s, 1), "ideal_q_per_s": round(c / latency, 1),
                                "batch_seconds": round(summary.seconds, 3),
                                "max_in_flight": server_stats(url)["max_in_flight"],
                                "batch_sizes": sorted(set(summary.batch_sizes))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=96)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the test server waits per request")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-pixels", type=int, default=1_003_520)
    args = ap.parse_args()
    print(json.dumps(bench(args.questions, args.latency, args.concurrency, args.max_pixels), indent=2))


if __name__ == "__main__":
    main()
