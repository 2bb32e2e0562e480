"""The CUDA paths on the tiny random-weight checkpoints: 4-bit and 8-bit loading (bitsandbytes), fp16 scoring, one
QLoRA optimizer step through ``vqa train``'s code, and ``vqa batch --ray local`` with one GPU per worker.

They run wherever torch sees a CUDA GPU (``pytest -m gpu`` runs only them) and are skipped elsewhere; the
quantised ones also need bitsandbytes (``pip install 'vqa-orchestrator[gpu]'``). Random weights: what is checked is
how the model is loaded and run, never the answers."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from agent.core.schema import Question
from agent.reasoners.base import ReasonRequest
from agent.reasoners.qwen import QwenBackend

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="needs bitsandbytes: pip install 'vqa-orchestrator[gpu]'")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
VLMS = ["vlm-qwen2.5-vl", "vlm-qwen3-vl"]
SMALL = 80_000  # pixel budget that keeps the tiny forward passes small
Q4 = Question(id="q4", text="What is in the cup?", options={"a": "coffee", "b": "tea", "c": "milk", "d": "water"})
Q3 = Question(id="q3", text="사진에 무엇이 있습니까?", options={"a": "카메라", "b": "사람", "c": "고양이"})


def requests() -> list[ReasonRequest]:
    photo = Image.open(EXAMPLES / "images" / "chelsea.jpg").convert("RGB")
    return [ReasonRequest(Q4, photo), ReasonRequest(Q3, photo.resize((160, 120))), ReasonRequest(Q3, None)]


def scored(b: QwenBackend) -> list[dict[str, float]]:
    """Each request's letter probabilities, checked to be a distribution over the question's letters."""
    out = []
    for req, d in zip(requests(), b.decide(requests()), strict=True):
        assert d.method == "logits" and list(d.probs) == req.question.letters
        assert sum(d.probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in d.probs.values()), d.probs
        out.append(d.probs)
    return out


@pytest.fixture(scope="module")
def reference(tiny_dir: Path) -> dict[str, list[dict[str, float]]]:
    """Each tiny VLM's scores in fp32 on the GPU (the precision the others are compared with)."""
    out = {}
    for role in VLMS:
        b = QwenBackend(str(tiny_dir / role), dtype="fp32", device="cuda", max_pixels=SMALL)
        out[role] = scored(b)
        b.close()
    return out


@needs_bnb
@pytest.mark.parametrize("role", VLMS)
@pytest.mark.parametrize("quant", ["4bit", "8bit"])
def test_quantised_loading_puts_bitsandbytes_layers_on_the_gpu(tiny_dir: Path, reference, role: str,
                                                             quant: str) -> None:
    import bitsandbytes as bnb

    b = QwenBackend(str(tiny_dir / role), quant=quant, device="cuda", max_pixels=SMALL)
    model, _ = b.loaded
    layer = bnb.nn.Linear4bit if quant == "4bit" else bnb.nn.Linear8bitLt
    quantised = [n for n, m in model.named_modules() if isinstance(m, layer)]
    assert any(n.endswith("q_proj") for n in quantised), quantised  # the language model's projections
    assert not any(n.endswith("lm_head") for n in quantised)  # the letter logits stay in full precision
    assert model.device.type == "cuda"
    full = QwenBackend(str(tiny_dir / role), dtype="fp32", device="cuda").fingerprint
    assert b.fingerprint != full  # quantisation is part of what the cache key hashes
    probs = scored(b)
    # random weights: only that quantisation perturbs, not replaces, the fp32 scores (one letter of three/four)
    for got, want in zip(probs, reference[role]):
        assert max(abs(got[k] - want[k]) for k in want) < 0.25, (got, want)
    b.close()


@pytest.mark.parametrize("role", VLMS)
def test_fp16_inference_matches_fp32_on_the_gpu(tiny_dir: Path, reference, role: str) -> None:
    b = QwenBackend(str(tiny_dir / role), dtype="fp16", device="cuda", max_pixels=SMALL)
    model, _ = b.loaded
    assert model.device.type == "cuda" and next(model.parameters()).dtype == torch.float16
    for got, want in zip(scored(b), reference[role]):
        assert got == pytest.approx(want, abs=1e-2)
    b.close()


def test_auto_dtype_is_half_precision_on_the_gpu(tiny_dir: Path) -> None:
    b = QwenBackend(str(tiny_dir / "vlm-qwen2.5-vl"), max_pixels=SMALL)  # device and dtype "auto"
    model, _ = b.loaded
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert b.device.startswith("cuda") and next(model.parameters()).dtype == want
    assert sum(scored(b)[0].values()) == pytest.approx(1.0, abs=1e-5)
    b.close()


@needs_bnb
def test_one_qlora_step_trains_the_adapter_on_a_4bit_base(tiny_dir: Path, tmp_path: Path) -> None:
    """``vqa train --quant 4bit --max-steps 1`` through ``agent.train.run.train``: one optimizer step on the GPU,
    a finite loss, the adapter and its manifest written, and the adapter loads back onto the 4-bit base."""
    from agent.config import Settings
    from agent.data import read_questions
    from agent.train.manifest import MANIFEST
    from agent.train.options import TrainOptions
    from agent.train.run import train

    rows = [q for q in read_questions(EXAMPLES / "train.csv", EXAMPLES) if isinstance(q, Question)][:4]
    assert len(rows) == 4 and all(q.answer for q in rows)
    model = str(tiny_dir / "vlm-qwen2.5-vl")
    settings = Settings(model=model, quant="4bit", device="cuda", max_pixels=SMALL)
    out = tmp_path / "adapter"
    res = train(rows, settings, TrainOptions(max_steps=1, batch_size=2, rank=4, alpha=8), out, EXAMPLES,
                forced_tools=[])
    assert res.steps == 1 and res.first_loss is not None and torch.isfinite(torch.tensor(res.first_loss))
    assert res.memory_kind == "cuda max allocated" and res.peak_memory_bytes > 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["base_model"]["quant"] == "4bit" and manifest["training"]["max_steps"] == 1
    tuned = QwenBackend(model, quant="4bit", device="cuda", adapter=str(out), max_pixels=SMALL)
    assert sum(scored(tuned)[0].values()) == pytest.approx(1.0, abs=1e-5)
    tuned.close()


@pytest.mark.slow
def test_ray_workers_each_take_a_gpu_and_score_on_it(tiny_dir: Path, tmp_path: Path) -> None:
    """``vqa batch --ray local --workers N --gpus-per-worker 1``: every answer comes from a worker that loaded the
    model on CUDA (the reasoner's fingerprint hashes the dtype: half precision there, fp32 on a CPU)."""
    pytest.importorskip("ray", reason="needs Ray: pip install 'vqa-orchestrator[ray]'")
    from agent.config import Settings

    workers = min(2, torch.cuda.device_count())
    model = str(tiny_dir / "vlm-qwen2.5-vl")
    ray_dir = tempfile.mkdtemp(prefix="vqa-ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": ray_dir,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", "from agent.cli import main; main()", "batch", str(EXAMPLES / "test.csv"),
           "--images", str(EXAMPLES), "--out", str(tmp_path / "sub.csv"), "--run-dir", str(tmp_path / "run"),
           "--model", model, "--max-pixels", str(SMALL), "--tools", "none", "--ray", "local", "--workers",
           str(workers), "--gpus-per-worker", "1"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"ray: {workers} worker(s)" in p.stderr, p.stderr[-3000:]
    answers = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    on_gpu = QwenBackend(**Settings(model=model, max_pixels=SMALL, device="cuda").reasoner_kwargs()).fingerprint
    on_cpu = QwenBackend(**Settings(model=model, max_pixels=SMALL, device="cpu").reasoner_kwargs()).fingerprint
    assert on_gpu != on_cpu and len(answers) == 12
    assert {a["reasoner"] for a in answers} == {on_gpu}
