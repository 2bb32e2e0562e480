"""How much of the ``openai`` backend's throughput ``vqa batch`` keeps, against the local test double of a server.

This measures the CLIENT, not a model: the server is ``tests/fake_openai_server.py`` (a scripted stand-in, run
in its own process on 127.0.0.1) answering every request after a fixed artificial latency (default 50 ms), so the
numbers show how well ``vqa batch`` keeps ``max_concurrency`` requests in flight, and what the graph, image
loading and JPEG/base64 encoding cost on this machine's CPUs. A real server's throughput depends on its model,
GPU and batching.

For each concurrency C, ``--repeats`` times, interleaved so that both arms see the same machine load:

- ``backend``: ``OpenAIBackend.decide`` alone on prepared requests (images loaded beforehand; no graph), in
  batches of C: the backend's own throughput;
- ``backend_loading``: the same, but each batch's images are read and decoded (``load_image``, C threads) inside
  the timed region, as ``vqa batch`` must: the backend's throughput with the image loading it is otherwise
  handed for free;
- ``batch``: ``run_batch`` (the code behind ``vqa batch``) over the same questions with ``--batch-size C`` and
  ``max_concurrency=C``, no tools;
- ``batch_ray`` (with ``--ray-workers N``, for C >= N; needs ``.[ray]``): the same on a local Ray cluster of N
  workers (``vqa batch --ray local --workers N``), each a client with ``max_concurrency`` C // N and chunks of
  that size, so the server sees the same C in flight. The cluster starts once per C, outside the timing.

Reported per C: medians of q/s, ``batch_vs_backend_pct`` (the median over repeats of batch / backend, each pair
run back to back; the headline), ``batch_vs_backend_loading_pct`` (the same against ``backend_loading``: what the
graph, trace, batching and results log cost beyond loading the images), ``batch_ray_vs_backend_pct``, the most
requests the server saw in flight per arm, and this process's CPU milliseconds per question in each arm, which
is where the gap comes from on a machine whose CPUs, not the server, set the pace (for ``batch_ray`` only the
driver's: the workers are other processes). ``ideal_q_per_s`` is C / latency.

    vqa bench server [--questions 96] [--latency 0.05] [--concurrency 1 --concurrency 4 ...] [--repeats 3]
                     [--ray-workers 2]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any, Callable

import httpx

from agent.core.images import load_image
from agent.core.schema import Question
from agent.reasoners.base import ReasonRequest
from agent.reasoners.openai import OpenAIBackend
from agent.runner import BatchSummary, run_batch
from agent.services import Services

ROOT = Path(__file__).resolve().parents[2]
IMAGES = sorted((ROOT / "examples" / "images").glob("*.jpg"))


@contextmanager
def test_server(latency: float, gather: int = 0):
    """The test double in a child process (``gather``: it holds each request until that many are in flight, so
    a test sees concurrency without timing it); yields its base URL."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai_server.py"), "--delay", str(latency),
                             "--gather", str(gather)], stdout=subprocess.PIPE, text=True)
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


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _timed(fn):
    """``fn()``'s result, its wall seconds and this process's CPU seconds."""
    c0, t0 = _cpu(), time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - t0, _cpu() - c0)


def bench(n: int, latency: float, concurrency: list[int], max_pixels: int, repeats: int,
          ray_workers: int = 0, gather: int = 0) -> dict:
    qs = questions(n)
    prepared = [ReasonRequest(q, load_image(q.image).image) for q in qs]
    out: dict = {"what": "client throughput against a local test double (fixed latency, no model)",
                 "questions": n, "latency_s": latency, "max_pixels": max_pixels, "repeats": repeats,
                 "cpus": os.cpu_count(), "ray_workers": ray_workers, "runs": []}
    with test_server(latency, gather) as url, tempfile.TemporaryDirectory() as tmp:
        for c in concurrency:
            runs: dict[str, Runs] = {}
            in_flight: dict[str, list[int]] = {}
            sizes: set[int] = set()
            backend = OpenAIBackend("fake-qwen", url, max_concurrency=c, max_pixels=max_pixels)
            with closing(backend), ThreadPoolExecutor(c) as loaders, ExitStack() as stack:
                backend.load()
                backend.decide(prepared[:c])  # warm: connections open, first-call imports done

                def loaded(batch: list[Question]) -> list[ReasonRequest]:
                    return list(loaders.map(lambda q: ReasonRequest(q, load_image(q.image).image), batch))

                def batch(executor: Any = None, size: int = c) -> BatchSummary:
                    with tempfile.TemporaryDirectory() as run:
                        summary = run_batch(list(qs), Services(reasoner=backend, executor=executor), Path(run),
                                            batch_size=size, forced_tools=[])
                    assert summary.answered == n, f"expected {n} answers, found {summary.answered}"
                    sizes.update(summary.batch_sizes)
                    return summary

                arms: dict[str, Callable[[], Any]] = {
                    "backend": lambda: [backend.decide(prepared[i : i + c]) for i in range(0, n, c)],
                    "backend_loading": lambda: [backend.decide(loaded(qs[i : i + c])) for i in range(0, n, c)],
                    "batch": batch}
                if ray_workers and c >= ray_workers:
                    ray = stack.enter_context(ray_executor(url, c, ray_workers, max_pixels, Path(tmp) / "ray"))
                    share = max(1, c // ray_workers)  # chunks of each worker's share of the concurrency
                    batch(ray, share)  # warm: every worker's client connected
                    arms["batch_ray"] = lambda: batch(ray, share)
                for _ in range(repeats):
                    for arm, fn in arms.items():
                        server_stats(url, reset=True)
                        runs.setdefault(arm, []).append(_timed(fn)[1])
                        in_flight.setdefault(arm, []).append(server_stats(url)["max_in_flight"])
            out["runs"].append(_summary(c, n, latency, runs, {a: max(v) for a, v in in_flight.items()},
                                        sorted(sizes)))
    return out


def ray_executor(url: str, concurrency: int, workers: int, max_pixels: int, run_dir: Path):
    """``vqa batch --ray local --workers N`` against the test double: each worker a client with its share of the
    concurrency (``concurrency // workers`` requests in flight), so the server sees the same total."""
    from agent.config import Settings
    from agent.distributed import Cluster

    settings = Settings(backend="openai", base_url=url, model="fake-qwen", max_pixels=max_pixels,
                        max_concurrency=max(1, concurrency // workers))
    return Cluster("local", workers=workers).executor(settings, run_dir)


Runs = list[tuple[float, float]]  # (wall seconds, CPU seconds of this process) per repeat


def _summary(c: int, n: int, latency: float, runs: dict[str, Runs], max_in_flight: dict[str, int],
             batch_sizes: list[int]) -> dict:
    med = statistics.median

    def pct(arm: str, ref: str) -> float:  # the median over repeats of each back-to-back pair's ratio
        return round(100 * med(ref_s / s for (s, _), (ref_s, _) in zip(runs[arm], runs[ref])), 1)

    out: dict[str, Any] = {"concurrency": c, "batch_vs_backend_pct": pct("batch", "backend"),
                           "batch_vs_backend_loading_pct": pct("batch", "backend_loading")}
    if "batch_ray" in runs:
        out["batch_ray_vs_backend_pct"] = pct("batch_ray", "backend")
    out |= {f"{arm}_q_per_s": round(med(n / s for s, _ in r), 1) for arm, r in runs.items()}
    out["ideal_q_per_s"] = round(c / latency, 1)
    out |= {f"{arm}_cpu_ms_per_q": round(med(1000 * cpu / n for _, cpu in r), 2) for arm, r in runs.items()}
    out |= {f"{arm}_q_per_s_runs": [round(n / s, 1) for s, _ in r] for arm, r in runs.items()}
    return out | {"max_in_flight": max_in_flight, "batch_sizes": batch_sizes}
