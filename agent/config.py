"""Settings for a run: defaults < config file (TOML) < command-line flags.

The config file uses the flag names with underscores, e.g.::

    reasoner = "qwen"
    model = "/models/Qwen3-VL-8B-Instruct"
    quant = "4bit"
    max_pixels = 1003520
    detector = "/models/grounding-dino-base"
    [ocr]
    engine = "tesseract"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ConfigError

DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reasoner: Literal["qwen", "evidence"] = "qwen"
    model: str = DEFAULT_MODEL
    quant: Literal["none", "4bit", "8bit"] = "none"
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    adapter: str | None = None
    min_pixels: int | None = None
    max_pixels: int = 1_003_520  # the reasoner's pixel budget (Qwen: ~1280 patches of 28x28)
    generate: bool = False
    max_new_tokens: int = 16
    device: str = "auto"
    batch_size: int = 8
    tool_timeout: float = 120.0
    image_max_pixels: int = 4_000_000  # the working copy every tool sees
    hard_cap_pixels: int = 400_000_000  # images larger than this are refused, not decoded
    detector: str | None = None  # Grounding DINO hub id or path (the detect tool)
    segmenter: str | None = None  # SAM hub id or path (the som tool)
    kb: str | None = None  # knowledge-base folder (the retrieve tool)
    ocr: dict[str, Any] = Field(default_factory=dict)
    detect: dict[str, Any] = Field(default_factory=dict)
    som: dict[str, Any] = Field(default_factory=dict)
    retrieve: dict[str, Any] = Field(default_factory=dict)

    def tool_settings(self) -> dict[str, dict[str, Any]]:
        """Per-tool constructor settings; the short flags fill the tools' main keys."""
        out = {"ocr": dict(self.ocr), "detect": dict(self.detect), "som": dict(self.som),
               "retrieve": dict(self.retrieve)}
        for tool, key, value in (("detect", "model", self.detector), ("som", "model", self.segmenter),
                                 ("retrieve", "kb", self.kb)):
            if value is not None:
                out[tool][key] = value
        return {k: v for k, v in out.items() if v}

    def reasoner_kwargs(self) -> dict[str, Any]:
        if self.reasoner == "evidence":
            return {}
        return {"model": self.model, "quant": self.quant, "dtype": self.dtype, "adapter": self.adapter,
                "min_pixels": self.min_pixels, "max_pixels": self.max_pixels, "generate": self.generate,
                "max_new_tokens": self.max_new_tokens, "device": self.device}


def load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Merge the config file and the flags that were given (``None`` means not given)."""
    data: dict[str, Any] = {}
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file {config} does not exist")
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config} is not valid TOML: {exc}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None
