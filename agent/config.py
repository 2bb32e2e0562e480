"""Settings for a run, from pydantic-settings: flags > config file (TOML) > ``VQA_*`` environment > defaults.

The config file uses the flag names as keys, with hyphens or underscores (``max-pixels`` or ``max_pixels``)::

    reasoner = "qwen"
    model = "/models/Qwen3-VL-8B-Instruct"
    quant = "4bit"
    max-pixels = 1003520
    detector = "/models/grounding-dino-base"
    [ocr]                      # a built-in tool's settings, keyed like its constructor (checked by its Config)
    engine = "tesseract"
    [tools.register]                     # plug-in tools: name = "module:Class" (module on PYTHONPATH)
    mean_color = "mean_color:MeanColorTool"
    [tools.settings.mean_color]          # a plug-in's constructor settings
    colors = 3

Every setting can also come from the environment as ``VQA_<NAME>`` (``VQA_BACKEND``, ``VQA_BASE_URL``,
``VQA_MODEL``, ``VQA_API_KEY`` ...); the API key falls back to ``OPENAI_API_KEY``. A Qwen-VL served by vLLM,
LMDeploy, llama.cpp or Ollama: ``backend = "openai"`` with ``base_url`` (and ``model`` = the served name);
``reasoner = "qwen"`` then resolves to the registered ``openai`` backend.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from agent.core.errors import ConfigError, brief
from agent.core.redact import redact, remember_settings

DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
CONFIG_LIMIT = 1 << 20  # bytes: a larger config file is refused before it is read


class ToolsTable(BaseModel):
    """``[tools]``: plug-in tools registered by ``"module:Class"`` (``[tools.register]``, read as ``classes``) and
    their settings (``[tools.settings.NAME]``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    classes: dict[str, str] = Field(default_factory=dict, alias="register")  # "register" is a BaseModel name
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="VQA_", env_ignore_empty=True)

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
    min_pixels: int | None = Field(None, ge=1)
    max_pixels: int = Field(1_003_520, ge=1)  # the reasoner's pixel budget (Qwen: ~1280 patches of 28x28)
    generate: bool = False
    max_new_tokens: int = 16
    device: str = "auto"
    batch_size: int = Field(8, ge=1)
    tool_timeout: float = Field(120.0, gt=0)
    tool_concurrency: int | None = Field(None, ge=1)  # calls of one tool at once (default: agent.toolpool, per cores/GPUs)
    image_max_pixels: int = Field(4_000_000, ge=1)  # the working copy every tool sees
    hard_cap_pixels: int = Field(400_000_000, ge=1)  # images larger than this are refused, not decoded
    ocr_engine: str | None = None  # the ocr tool's engine (its own default: auto)
    image_decode_budget: int = Field(1 << 30, ge=1)  # bytes of decoded pixels at once, per image and all together
    detector: str | None = None  # Grounding DINO hub id or path (the detect tool)
    segmenter: str | None = None  # SAM hub id or path (the som tool)
    kb: str | None = None  # knowledge-base folder (the retrieve tool)
    debias: bool = False  # average option probabilities over every rotation of the options
    temperature: float | None = Field(None, gt=0)  # applied to option probabilities (fit it with vqa eval)
    planner: Literal["rules", "escalate", "vlm"] = "rules"  # who picks the tools: agent.planners
    confidence: float = Field(0.6, gt=0, le=1)  # escalate: below this top probability, add tools and decide again
    margin: float = Field(0.1, ge=0, le=1)  # escalate: ... or when top minus second is below this
    max_rounds: int = Field(3, ge=1)  # escalate: rounds per question, the first included
    max_steps: int = Field(6, ge=1)  # vlm: model turns per question (each may call tools)
    seed: int | None = None  # seeds random, numpy and torch when set; recorded in run.json and metrics.json
    cache: str = "auto"  # tool-output cache: "auto" (RUN/cache), "off", or a folder shared between runs
    tool_tables: dict[str, dict[str, Any]] = Field(default_factory=dict)  # [ocr], [caption] ...: any registered tool
    tools: ToolsTable = Field(default_factory=ToolsTable)  # plug-in tools and their settings

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple:
        """Flags (the init arguments), then the TOML file, then ``VQA_*``, then ``OPENAI_API_KEY`` for the key."""
        key = os.environ.get("OPENAI_API_KEY")
        return (init_settings, TomlFile(settings_cls), env_settings,
                InitSettingsSource(settings_cls, {"api_key": key} if key else {}))

    @model_validator(mode="before")
    @classmethod
    def _tool_tables(cls, data: Any) -> Any:
        """A top-level table named like a registered tool (``[ocr]``) is that tool's settings (``tool_tables``)."""
        if not isinstance(data, dict):
            return data
        from tools import tool_names

        names = set(tool_names())
        tables = {k: data.pop(k) for k in [k for k, v in data.items() if k in names and isinstance(v, dict)]}
        tables = {**_env_tables(names), **tables}  # VQA_OCR='{"engine": "tesseract"}', under the file's [ocr]
        if tables:
            data["tool_tables"] = {**data.get("tool_tables", {}), **tables}
        return data

    @model_validator(mode="after")
    def _resolve_backend(self) -> Settings:
        """``qwen`` on the ``openai`` backend is the registered ``openai`` reasoner (and vice versa)."""
        if self.reasoner == "qwen" and self.backend == "openai":
            self.reasoner = "openai"
        elif self.reasoner == "openai":
            self.backend = "openai"
        return self

    def tool_settings(self) -> dict[str, dict[str, Any]]:
        """Per-tool constructor settings; the short flags fill the keys each tool declares (``Tool.flags``)."""
        from tools import tool_flags

        out = {name: dict(table) for name, table in self.tools.settings.items()}
        for name, table in self.tool_tables.items():
            out[name] = {**out.get(name, {}), **table}
        for setting, (tool, key) in tool_flags().items():  # a setting left at its default leaves the tool's own
            value = getattr(self, setting, None)
            field = type(self).model_fields.get(setting)
            if value is not None and (field is None or value != field.default):
                out.setdefault(tool, {})[key] = value
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


class TomlFile(TomlConfigSettingsSource):
    """The config file named by ``toml_file`` in the settings class's config, read by pydantic-settings; through
    the source's public call, top-level keys may use the flag spelling (``max-pixels``). Tables (``[ocr]``,
    ``[tools.register]`` ...) are passed on untouched."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        file_path = settings_cls.model_config.get("toml_file")
        size = Path(file_path).stat().st_size if file_path and Path(file_path).is_file() else 0
        if size > CONFIG_LIMIT:
            raise ConfigError(f"config file {file_path} is {size:,} bytes; expected a TOML file of at most "
                              f"{CONFIG_LIMIT:,} bytes: pass the settings file, not a data file")
        try:
            super().__init__(settings_cls)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file_path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {file_path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                              f"offset {exc.start}); TOML files are UTF-8: save it as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file_path}: {exc.strerror or exc}") from None

    def __call__(self) -> dict[str, Any]:
        spelled: dict[str, str] = {}
        for key in self.toml_data:  # in the file's order
            name = key.replace("-", "_")
            if name in spelled:
                raise ConfigError(f"config file {self.toml_file_path} sets {name} twice (as {spelled[name]} and "
                                  f"{key}); keep one")
            spelled[name] = key
        data = {key.replace("-", "_"): value for key, value in super().__call__().items()}
        if self.toml_file_path is None:
            return data
        return _relative_to(data, Path(self.toml_file_path).resolve().parent)


def _relative_to(data: Any, folder: Path) -> Any:
    """A config file's values starting with ``./`` or ``../`` are paths relative to the file's folder (so a bundle's
    ``vqa.toml`` works wherever the bundle is mounted); tables are walked, other values kept."""
    if isinstance(data, dict):
        return {k: _relative_to(v, folder) for k, v in data.items()}
    if isinstance(data, str) and data.startswith(("./", "../")):
        return str((folder / data).resolve())
    return data


def load_settings(config: Path | None, flags: Mapping[str, Any]) -> Settings:
    """The settings from the flags that were given (``None`` means not given), the config file (``--config``, else
    ``VQA_CONFIG``) and ``VQA_*``."""
    source: type[Settings] = Settings
    if config is None and os.environ.get("VQA_CONFIG"):
        config = Path(os.environ["VQA_CONFIG"])
    if config is not None:
        if not Path(config).is_file():
            via = " (from VQA_CONFIG)" if os.environ.get("VQA_CONFIG") == str(config) else ""
            raise ConfigError(f"config file {config}{via} does not exist")
        source = type("Settings", (Settings,), {"model_config": SettingsConfigDict(toml_file=Path(config)),
                                                "__module__": __name__})
    try:
        settings = source(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, config)) from None
    except SettingsError as exc:  # a VQA_* value that is not the JSON its setting needs
        raise ConfigError(_explain_source(exc, config)) from None
    remember_settings(settings)  # never written to a file or a log (agent.core.redact)
    if settings.reasoner == "openai" and not settings.base_url:
        raise ConfigError("the openai backend needs the server's URL: pass --base-url http://127.0.0.1:8000/v1, "
                          "or set base_url in the config file or VQA_BASE_URL")
    return settings


def _explain_source(exc: SettingsError, config: Path | None) -> str:
    """One line naming the environment variable (or the file) whose value could not be parsed."""
    m = re.search(r'field "(\w+)" from source "(\w+)"', str(exc))
    if m is None:
        return f"invalid settings: {brief(exc)}"
    name, source = m.groups()
    if source.startswith("Env"):
        var = f"VQA_{name.upper()}"
        found = redact(os.environ.get(var, ""))
        return (f"environment variable {var}: expected JSON for the {name} setting (a table such as "
                f"'{{\"key\": \"value\"}}'), found {found[:80]!r}; fix it, or unset it")
    return f"setting {name}{f' in {config}' if config else ''} could not be read: {brief(exc.__cause__ or exc)}"


def _env_tables(names: set[str]) -> dict[str, dict[str, Any]]:
    """``VQA_<TOOL>`` variables: a tool's settings as a JSON table; anything else is one line naming the variable."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        var = f"VQA_{name.upper()}"
        raw = os.environ.get(var)
        if not raw:
            continue
        try:
            table = json.loads(raw)
        except ValueError:
            table = None
        if not isinstance(table, dict):
            raise ConfigError(f"environment variable {var}: expected JSON for the {name} settings (a table such as "
                              f"'{{\"key\": \"value\"}}'), found {redact(raw)[:80]!r}; fix it, or unset it")
        out[name] = table
    return out


def _tool_names() -> list[str]:
    from tools import tool_names

    return tool_names()


def _explain(exc: ValidationError, config: Path | None) -> str:
    """One line: an unknown key is named with the valid ones; other problems as ``key: message``."""
    where = f" in {config}" if config is not None else ""
    for e in exc.errors():
        if e["type"] == "extra_forbidden":
            key = ".".join(map(str, e["loc"]))
            valid = ["tools.register", "tools.settings"] if len(e["loc"]) > 1 else sorted(
                set(Settings.model_fields) - {"tool_tables"}) + [f"[{t}]" for t in _tool_names()]
            return f"unknown setting {key!r}{where}: expected one of {', '.join(valid)}"
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return f"invalid settings: {problems}"
