"""``vqa train --task visdial`` on the tiny random-weight Qwen2.5-VL: training on a round's ground-truth answer in
the ranking prompt raises that answer's score when the same round is ranked with the adapter (train = infer).
The scores of a random-weight model mean nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

VQA = str(Path(sys.executable).parent / "vqa")
SMALL = 64 * 28 * 28
OPTIONS = ["no parking", "bus stop", "a red sign on a wall", "yes", "two"]


def dialog_file(tmp: Path) -> tuple[Path, Path]:
    """One photo, one round: 'what does it say?' -> 'no parking' (option 0 of 100; the rest padding answers)."""
    answers = OPTIONS + [f"answer {i}" for i in range(100)]
    dialogs = [{"image_id": 3, "caption": "a sign", "dialog": [
        {"question": 0, "answer": 0, "answer_options": list(range(100)), "gt_index": 0}]}]
    path = tmp / "visdial.json"
    path.write_text(json.dumps({"data": {"questions": ["what does it say?"], "answers": answers,
                                         "dialogs": dialogs}}))
    folder = tmp / "images"
    folder.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "3.png")
    return path, folder


def gt_score(model: str, photo: Path, adapter: Path | None = None) -> tuple[float, list[float]]:
    from agent.api import Orchestrator

    extra = {"adapter": str(adapter)} if adapter is not None else {}
    with Orchestrator(model=model, reasoner="qwen", tools="none", device="cpu", max_pixels=SMALL, **extra) as vqa:
        rec = vqa.rank(photo, "what does it say?", OPTIONS, caption="a sign", rank_score="sum")
    return rec.sums[0], rec.sums


@pytest.mark.slow
def test_training_raises_the_ground_truth_score_on_its_round(tiny_dir: Path, tmp_path: Path) -> None:
    model = str(tiny_dir / "vlm-qwen2.5-vl")
    path, images = dialog_file(tmp_path)
    before, others_before = gt_score(model, images / "3.png")
    out = tmp_path / "adapter"
    p = subprocess.run([VQA, "train", path, "--task", "visdial", "--images", images, "--out", out, "--model", model,
                        "--device", "cpu", "--max-pixels", str(SMALL), "--tools", "none", "--max-steps", "6",
                        "--batch-size", "1", "--lr", "5e-3", "--warmup", "0"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert (out / "adapter_config.json").is_file() and json.loads((out / "vqa_adapter.json").read_text())[
        "task"] == "visdial"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and log[-1]["loss"] < log[0]["loss"]
    # train = infer: the first step's loss (LoRA B starts at zero) is the ranker's summed score of the ground truth
    # over its number of reply tokens, on the same token ids
    tokens = -before / log[0]["loss"]
    assert tokens == pytest.approx(round(tokens), abs=1e-3) and round(tokens) >= 2
    after, others_after = gt_score(model, images / "3.png", out)
    assert after > before + 1.0  # the ground truth's log-likelihood, as the ranker computes it, went up
    assert others_after != others_before


def test_a_bad_task_is_one_line(tmp_path: Path) -> None:
    path, images = dialog_file(tmp_path)
    p = subprocess.run([VQA, "train", path, "--task", "nope", "--images", images, "--out", tmp_path / "a"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--task" in p.stderr and "Traceback" not in p.stderr
