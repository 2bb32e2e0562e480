"""Settings for a run: defaults < config file (TOML) < command-line flags.

The config file uses the flag names with underscores, e.g.::

    reasoner = "qwen"
    model = "/models/Qwen3-VL-8B-Instruct"
    quant = "4bit"
    max_pixels = 1003520
    detector = "/models/grounding-dino-base"
    [ocr]
    engine = "tesseract"

A Qwen-VL served by vLLM, LMDeploy, llama.cpp or Ollama: ``backend = "openai"`` with ``base_url`` (and
``model`` = the served name); ``reasoner = "qwen"`` then resolves to the registered ``openai`` backend. The
environment fills what neither the file nor the flags say: ``VQA_BACKEND``, ``VQA_BASE_URL``, ``VQA_MODEL``,
``VQA_API_KEY`` (else ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from agent.errors import ConfigError

DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
ENVIRONMENT = {"VQA_BACKEND": "backend", "VQA_BASE_URL": "base_url", "VQA_MODEL": "model", "VQA_API_KEY": "api_key"}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reasoner: Literal["qwen", "evidence", "openai"] = "qwen"  # "openai": qwen on a server (backend "openai")
    backend: Literal["transformers", "openai"] = "transformers"  # where "qwen" runs: in-process or on a server
    base_url: str | None = None  # OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1
    api_key: SecretStr | None = None
    max_concurrency: int = Field(8, ge=1)  # requests in flight to the server
    request_timeout: float = Field(60.0, gt=0)  # seconds per server request
    retries: int = Field(3, ge=0)  # per server request, on connection errors, timeouts and 5xx
    constrain: Literal["auto", "choice", "guided_choice", "json_schema", "grammar", "none"] = "auto"
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
    image_decode_budget: int = Field(1 << 30, ge=1)  # bytes of decoded pixels at once, per image and all together
    detector: str | None = None  # Grounding DINO hub id or path (the detect tool)
    segmenter: str | None = None  # SAM hub id or path (the som tool)
    kb: str | None = None  # knowledge-base folder (the retrieve tool)
    debias: bool = False  # average option probabilities over every rotation of the options
    temperature: float | None = Field(None, gt=0)  # applied to option probabilities (fit it with vqa eval)
    cache: str = "auto"  # tool-output cache: "auto" (RUN/cache), "off", or a folder shared between runs
    ocr: dict[str, Any] = Field(default_factory=dict)
    detect: dict[str, Any] = Field(default_factory=dict)
    som: dict[str, Any] = Field(default_factory=dict)
    retrieve: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _resolve_backend(self) -> Settings:
        """``qwen`` on the ``openai`` backend is the registered ``openai`` reasoner (and vice versa)."""
        if self.reasoner == "qwen" and self.backend == "openai":
            self.reasoner = "openai"
        elif self.reasoner == "openai":
            self.backend = "openai"
        return self

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
        if self.reasoner == "openai":
            return {"model": self.model, "base_url": self.base_url,
                    "api_key": self.api_key.get_secret_value() if self.api_key else None,
                    "max_concurrency": self.max_concurrency, "timeout": self.request_timeout, "retries": self.retries,
                    "max_pixels": self.max_pixels, "generate": self.generate, "max_new_tokens": self.max_new_tokens,
                    "constrain": self.constrain}
        return {"model": self.model, "quant": self.quant, "dtype": self.dtype, "adapter": self.adapter,
                "min_pixels": self.min_pixels, "max_pixels": self.max_pixels, "generate": self.generate,
                "max_new_tokens": self.max_new_tokens, "device": self.device}


def load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Merge the environment, the config file and the flags that were given (``None`` means not given)."""
    data: dict[str, Any] = {key: os.environ[var] for var, key in ENVIRONMENT.items() if os.environ.get(var)}
    if "api_key" not in data and os.environ.get("OPENAI_API_KEY"):
        data["api_key"] = os.environ["OPENAI_API_KEY"]
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file {config} does not exist")
        try:
            data.update(tomllib.loads(config.read_text(encoding="utf-8")))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config} is not valid TOML: {exc}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None
    if settings.reasoner == "openai" and not settings.base_url:
        raise ConfigError("the openai backend needs the server's URL: pass --base-url http://127.0.0.1:8000/v1, "
                          "or set base_url in the config file or VQA_BASE_URL")
    return settings
