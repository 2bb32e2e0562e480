"""``ADAPTER_DIR/train_log.jsonl`` (one line per Trainer log: step, epoch, loss, learning rate, accuracy) and
``ADAPTER_DIR/train_plot.png`` (loss per step, accuracy per epoch). No torch import.

The log is rewritten from the Trainer's own history when training (re)starts, so a resumed run holds each step
once: the lines a killed run wrote after its last checkpoint are replaced by the resumed run's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

LOG = "train_log.jsonl"
PLOT = "train_plot.png"


def rewrite(path: Path, history: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(h, ensure_ascii=False) + "\n" for h in history), encoding="utf-8")
    os.replace(tmp, path)


def append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def losses(history: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    """``(step, training loss)`` of every logged step."""
    return [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]


def accuracies(history: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per split (``val`` or ``train``), ``(epoch, accuracy)`` of every evaluation."""
    out: dict[str, list[tuple[float, float]]] = {}
    for h in history:
        for split in ("val", "train"):
            if f"{split}_accuracy" in h:
                out.setdefault(split, []).append((h.get("epoch", 0.0), h[f"{split}_accuracy"]))
    return out


def plot(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss per step (left axis) and accuracy per epoch (right axis) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 4), dpi=100)
    steps = losses(history)
    if steps:
        left.plot([s for s, _ in steps], [v for _, v in steps], color="tab:blue", lw=1.2, label="training loss")
    left.set_xlabel("optimizer step")
    left.set_ylabel("loss (answer letter)", color="tab:blue")
    per_epoch = accuracies(history)
    if per_epoch:
        right = left.twinx()
        step_of = {h.get("epoch"): h.get("step") for h in history if "step" in h}
        for split, points in per_epoch.items():
            right.plot([step_of.get(e, e) for e, _ in points], [a for _, a in points], marker="o",
                       color="tab:orange" if split == "val" else "tab:green", label=f"{split} accuracy")
        right.set_ylim(0, 1.02)
        right.set_ylabel("accuracy (letter scoring)")
        right.legend(loc="lower right")
    left.set_title(title or "vqa train")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
