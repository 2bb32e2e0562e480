"""Benchmark ``vqa train``: ``vqa bench train`` prints JSON.

Run (default): a short LoRA training of a tiny random-weight Qwen-VL (``agent.dev.tiny``; or ``--model``) on
labelled rows made from ``examples/`` through ``agent.train.run.train`` — the code ``vqa train`` runs — with no
tools (this measures training, not the tools), and reports the seconds per optimizer step (median over the steps
after the first, which includes warm-up) and the peak memory: CUDA's max
allocated on a GPU, the process's peak RSS on CPU (which includes Python, torch and the data).

``--estimate``: the memory of QLoRA / LoRA training of the real checkpoints, computed from their parameter
counts (the architectures instantiated on the ``meta`` device from their published configuration values, so
nothing is downloaded), for the table in docs/training.md. Activations are not included: they depend on the sequence
length and were not measured here (no GPU).
"""

from __future__ import annotations

import csv
import re
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# Published configuration values (config.json of each Instruct checkpoint); the totals they give match the
# parameter counts on the model cards (8.29B, 4.44B, 8.77B, 33.4B).
ARCHITECTURES = {
    "Qwen2.5-VL-7B": ("qwen2_5_vl", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                        num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
                      dict(depth=32, hidden_size=1280, intermediate_size=3420, out_hidden_size=3584,
                           fullatt_block_indexes=[7, 15, 23, 31]), False),
    "Qwen3-VL-4B": ("qwen3_vl", dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936),
                    dict(depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2560,
                         deepstack_visual_indexes=[5, 11, 17]), True),
    "Qwen3-VL-8B": ("qwen3_vl", dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936),
                    dict(depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=4096,
                         deepstack_visual_indexes=[8, 16, 24]), False),
    "Qwen3-VL-32B": ("qwen3_vl", dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
                                      num_attention_heads=64, num_key_value_heads=8, head_dim=128, vocab_size=151936),
                     dict(depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=5120,
                          deepstack_visual_indexes=[8, 16, 24]), False),
}
NF4_BYTES = 0.5 + 0.127 / 8  # 4-bit weights + double-quantised absmax (fp8 per 64, fp32 per 256 blocks)
GIB = 1 << 30


def estimate(name: str, rank: int = 16) -> dict:
    """Parameter counts and weight/optimizer memory (GiB) of LoRA (bf16 base) and QLoRA (NF4 base) training with
    the default targets (the language model's attention and MLP projections) at ``rank``."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from agent.train.options import TrainOptions

    kind, text, vision, tie = ARCHITECTURES[name]
    config = AutoConfig.for_model(kind, text_config=text, vision_config=vision, tie_word_embeddings=tie)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    pattern = re.compile(TrainOptions(rank=rank).lora_targets())
    total = sum(p.numel() for p in model.parameters())
    vision_n = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    linear = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    quantised = sum(m.weight.numel() for n, m in linear.items() if "lm_head" not in n)  # bnb keeps lm_head
    lora = sum(rank * (m.in_features + m.out_features) for n, m in linear.items() if pattern.fullmatch(n))
    kept = total - quantised  # embeddings, lm_head, norms, biases: bf16
    adapter = lora * (4 + 4 + 8)  # fp32 weights, gradients, AdamW moments
    return {"model": name, "params_b": round(total / 1e9, 3), "vision_params_b": round(vision_n / 1e9, 3),
            "lora_rank": rank, "lora_params_m": round(lora / 1e6, 1),
            "qlora_weights_gib": round((quantised * NF4_BYTES + kept * 2) / GIB, 2),
            "lora_bf16_weights_gib": round(total * 2 / GIB, 2), "adapter_and_adam_gib": round(adapter / GIB, 2)}


def make_rows(folder: Path, n: int) -> Path:
    """``n`` labelled rows over the example photos: examples/train.csv's rows, repeated with new ids as needed."""
    with open(EXAMPLES / "train.csv", encoding="utf-8") as f:
        base = list(csv.DictReader(f))
    rows = [{**base[i % len(base)], "id": f"BENCH_{i:03d}"} for i in range(n)]
    path = folder / "bench.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(base[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def run(model: str | None, rows: int, steps: int, batch_size: int, max_pixels: int,
        checkpointing: bool | None) -> dict:
    """Train ``steps`` optimizer steps and time them (``checkpointing`` None: vqa train's default)."""
    from transformers import TrainerCallback

    from agent.config import load_settings
    from agent.data import read_questions
    from agent.train.options import TrainOptions
    from agent.train.run import train

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp_path = Path(tmp)
        label = model
        if model is None:
            from agent.dev.tiny import make_tiny

            model = str(make_tiny(tmp_path / "tiny", roles=["vlm-qwen2.5-vl"])["vlm-qwen2.5-vl"])
            label = "tiny vlm-qwen2.5-vl (random weights)"
        questions = read_questions(make_rows(tmp_path, rows), EXAMPLES)
        settings = load_settings(None, {"model": model, "max_pixels": max_pixels, "cache": "off"})
        options = TrainOptions(max_steps=steps, batch_size=batch_size, grad_accum=1,
                               gradient_checkpointing=checkpointing)
        spans: list[float] = []

        class Clock(TrainerCallback):
            t = 0.0

            def on_step_begin(self, args, state, control, **kwargs):
                self.t = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                spans.append(time.perf_counter() - self.t)

        result = train(questions, settings, options, tmp_path / "adapter", EXAMPLES, forced_tools=[],
                       callbacks=[Clock()])
    later = spans[1:] or spans
    device = "cuda" if result.memory_kind.startswith("cuda") else "cpu"
    return {"model": label, "device": device, "rows": rows, "batch_size": batch_size, "max_pixels": max_pixels,
            "gradient_checkpointing": device == "cuda" if checkpointing is None else checkpointing,
            "steps": result.steps,
            "step_s_median": round(statistics.median(later), 4), "step_s_first": round(spans[0], 4),
            "rows_per_s": round(batch_size / statistics.median(later), 2),
            "train_s": round(result.seconds, 2), "first_loss": result.first_loss, "last_loss": result.last_loss,
            "peak_memory_mib": round(result.peak_memory_bytes / (1 << 20), 1), "memory_kind": result.memory_kind}
