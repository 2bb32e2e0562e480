"""Training settings (``vqa train`` flags) with their defaults and checks; no torch import.

The model, quantisation, dtype, pixel budget and tool settings are the shared ``agent.config.Settings``; these are
the settings only training has.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.core.errors import ConfigError

# The language model's attention and MLP projections (Qwen2.5-VL and Qwen3-VL name them alike).
LANGUAGE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The vision tower's linear layers (Qwen2.5-VL: qkv, proj, gate/up/down_proj; Qwen3-VL: qkv, proj, linear_fc1/2).
VISION_TARGETS = ("qkv", "proj", "gate_proj", "up_proj", "down_proj", "linear_fc1", "linear_fc2")


class TrainOptions(BaseModel):
    """What ``vqa train`` adds to the shared settings. Defaults are the documented ones (docs/training.md)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(16, ge=1, le=1024)  # LoRA rank r
    alpha: float = Field(32, gt=0)  # LoRA alpha (the update is scaled by alpha / r)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LANGUAGE_TARGETS))
    train_vision: bool = False  # also put LoRA on the vision tower's blocks (frozen otherwise)
    lr: float = Field(5e-4, gt=0, le=1)
    warmup: float = Field(0.05, ge=0, lt=1)  # share of the optimizer steps with a linear warm-up, then cosine decay
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # optimizer steps; overrides epochs
    batch_size: int = Field(2, ge=1)  # rows per forward pass (per GPU)
    grad_accum: int = Field(1, ge=1)  # forward passes per optimizer step
    gradient_checkpointing: bool | None = None  # None: on when training on a GPU, off on CPU
    seed: int = 0
    val_frac: float = Field(0.0, ge=0, lt=1)  # rows held out for validation when no --val file is given
    save_steps: int | None = Field(None, ge=1)  # optimizer steps between checkpoints; None: every epoch
    eval_batch_size: int = Field(8, ge=1)  # rows per scoring pass in the per-epoch accuracy

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not re.fullmatch(r"[A-Za-z_][\w.]*", n)]
        if not v or bad:
            raise ValueError(f"expected module names such as q_proj,v_proj, found {bad or 'none'}")
        return v

    def lora_targets(self) -> str:
        """PEFT ``target_modules`` as one regex over full module names: the chosen projections of the language model
        (never ``lm_head``), plus the vision blocks' linear layers with ``train_vision``."""
        names = "|".join(map(re.escape, self.target_modules))
        pattern = rf"(?!.*\bvisual\b).*\.(?:{names})"
        if self.train_vision:
            vision = "|".join(map(re.escape, VISION_TARGETS))
            pattern += rf"|.*\bvisual\.blocks\.\d+\..*\.(?:{vision})"
        return pattern


def train_options(**flags: Any) -> TrainOptions:
    """Options from the flags that were given (``None`` = not given); a bad value is a ``ConfigError``."""
    try:
        return TrainOptions(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid training settings: {problems}") from None
