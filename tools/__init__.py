"""Tool registry: names map to lazy ``"module:Class"`` strings, so importing this never imports torch."""

from __future__ import annotations

import importlib
from typing import Any

from agent.schema import TOOL_NAMES

REGISTRY: dict[str, str] = {
    "ocr": "tools.ocr:OcrTool",
    "detect": "tools.detect:DetectTool",
    "som": "tools.som:SomTool",
    "retrieve": "tools.retrieve.tool:RetrieveTool",
}


def parse_tool_list(spec: str) -> list[str]:
    """Parse ``--tools`` (``"ocr,detect"``, ``"none"``, ``"all"``) into tool names, in canonical order."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return []
    if spec == "all":
        return [t for t in TOOL_NAMES if t in REGISTRY]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in TOOL_NAMES]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}: expected a comma list of {list(TOOL_NAMES)}, 'all' or 'none'")
    return [t for t in TOOL_NAMES if t in names]


def load_tool(name: str, **settings: Any):
    """Instantiate a tool by name (no weights are loaded until its first run)."""
    module, _, cls = REGISTRY[name].partition(":")
    tool_cls = getattr(importlib.import_module(module), cls)
    try:
        return tool_cls(**settings)
    except TypeError as exc:  # an unknown key in the [tool] section of the config
        from agent.errors import ConfigError

        raise ConfigError(f"bad settings for tool {name!r} {sorted(settings)}: {exc}") from None
