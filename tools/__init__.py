"""Tool registry: names map to lazy ``"module:Class"`` strings, so importing this never imports torch.

Three sources, in this order (also the canonical order of tool lists):

1. the built-in tools in ``BUILTIN`` (adding one: its module and one line here; its class declares its routing,
   settings model, flags and cost, which the router, the config, the planners and the CLI read from here);
2. installed distributions' entry points in the group ``vqa.tools`` (``mean_color = "pkg.mean_color:MeanColorTool"``),
   read on first use;
3. ``register(name, "module:Class")``: the config file's ``[tools.register]`` table (the module importable from
   ``PYTHONPATH``), imported at once so a wrong path fails before any question runs.

A plug-in class meets the contract of ``tools.base.Tool``; its evidence type registers itself by its ``tool``
name (``agent.core.evidence``), and its ``routing`` rules reach the router through ``tool_routing``.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any

from pydantic import ValidationError

from agent.core.errors import ConfigError
from tools.base import Routing, Tool

BUILTIN: dict[str, str] = {
    "som": "tools.som:SomTool",
    "detect": "tools.detect:DetectTool",
    "ocr": "tools.ocr:OcrTool",
    "retrieve": "tools.retrieve.tool:RetrieveTool",
    "anomaly": "tools.anomaly.tool:AnomalyTool",
    "caption": "tools.caption.tool:CaptionTool",
}
ENTRY_POINT_GROUP = "vqa.tools"
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def import_spec(spec: str) -> Any:
    """The object a ``"module:Attr"`` string names (``Attr`` may be dotted)."""
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _load(name: str, spec: str, origin: str) -> type[Tool]:
    """Import the class ``spec`` names and check it is a ``Tool`` named ``name``."""
    module = spec.partition(":")[0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{origin}: cannot import {module!r} ({exc}); is its folder on PYTHONPATH?") from None
    except Exception as exc:  # noqa: BLE001 - a broken plug-in module is a configuration problem, said in one line
        raise ConfigError(f"{origin}: importing {module!r} failed: {type(exc).__name__}: {exc}") from None
    try:
        cls = import_spec(spec)
    except AttributeError as exc:
        raise ConfigError(f"{origin}: {spec!r} names nothing ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Tool)):
        raise ConfigError(f"{origin}: {spec!r} is not a tools.base.Tool subclass")
    if cls.name != name:
        raise ConfigError(f"{origin}: the class is named {cls.name!r}; register it as {cls.name!r}")
    return cls


class Registry(Mapping[str, str]):
    """Tool name -> ``"module:Class"``, built-ins first; entry points are read once, on first access."""

    def __init__(self, builtin: Mapping[str, str]) -> None:
        self._specs = dict(builtin)
        self._builtin = frozenset(builtin)
        self._origin = {name: "built-in" for name in builtin}
        self._discovered = False
        self._lock = threading.RLock()

    def _discover(self) -> None:
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = getattr(ep.dist, "name", None) or "an installed distribution"
                self._add(ep.name, ep.value, f"entry point {ENTRY_POINT_GROUP} {ep.name!r} of {dist}")

    def _check(self, name: str, spec: str, origin: str) -> None:
        if not _NAME.fullmatch(name) or name in ("all", "none"):
            raise ConfigError(f"{origin}: a tool name is lower-case letters, digits and _ (not 'all' or 'none'), "
                              f"found {name!r}")
        if not _SPEC.fullmatch(spec):
            raise ConfigError(f"{origin}: expected 'module:Class' (e.g. 'mean_color:MeanColorTool'), found {spec!r}")
        if name in self._specs and self._specs[name] != spec:
            raise ConfigError(f"{origin}: tool {name!r} is already {self._specs[name]!r} ({self._origin[name]}); "
                              "choose another name")

    def _add(self, name: str, spec: str, origin: str) -> None:
        self._check(name, spec, origin)
        self._specs[name] = spec
        self._origin.setdefault(name, origin)

    def __getitem__(self, name: str) -> str:
        self._discover()
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return iter(list(self._specs))

    def __len__(self) -> int:
        self._discover()
        return len(self._specs)

    def is_builtin(self, name: str) -> bool:
        return name in self._builtin

    def register(self, name: str, spec: str, origin: str | None = None) -> type[Tool]:
        """Add a tool (the same spec twice is a no-op) once its class imports and meets the contract; else a
        ``ConfigError`` says what is wrong and nothing is added."""
        self._discover()
        origin = origin or f"[tools.register] {name} = {spec!r}"
        with self._lock:
            self._check(name, spec, origin)
            cls = _load(name, spec, origin)
            self._add(name, spec, origin)
        return cls

    def tool_class(self, name: str) -> type[Tool]:
        """Import the class registered as ``name`` and check it is a ``Tool`` named ``name``."""
        spec = self[name]
        return _load(name, spec, self._origin.get(name, spec))


REGISTRY = Registry(BUILTIN)


def tool_names() -> list[str]:
    """Every registered tool, built-ins first."""
    return list(REGISTRY)


def register(name: str, spec: str) -> type[Tool]:
    """Register a plug-in tool class by ``"module:Class"`` (what ``[tools.register]`` does)."""
    return REGISTRY.register(name, spec)


def parse_tool_list(spec: str) -> list[str]:
    """Parse ``--tools`` (``"ocr,detect"``, ``"none"``, ``"all"``) into tool names, in canonical order."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return []
    names = tool_names()
    if spec == "all":
        return names
    asked = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in asked if n not in names]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}: expected a comma list of {names}, 'all' or 'none' "
                         "(a plug-in tool is registered in the config file's [tools.register] table)")
    return [t for t in names if t in asked]


def load_tool(name: str, **settings: Any) -> Tool:
    """Instantiate a tool by name (no weights are loaded until its first run)."""
    tool_cls = REGISTRY.tool_class(name)
    settings = tool_config(name, settings)
    try:
        return tool_cls(**settings)
    except TypeError as exc:  # an unknown key in the tool's section of the config
        raise ConfigError(f"bad settings for tool {name!r} {sorted(settings)}: {exc}") from None


def tool_routing() -> dict[str, Routing]:
    """Every registered tool's ``Routing`` (keywords, examples, why), built-ins first: what the router reads."""
    return {name: REGISTRY.tool_class(name).routing for name in tool_names()}


def tool_config(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` checked by the tool's settings model (``Tool.Config``): the keys it sets, or a ``ConfigError``
    that names the tool, the bad key and what was expected."""
    model = REGISTRY.tool_class(name).Config
    try:
        return model.model_validate(dict(settings)).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad settings for tool {name!r}: {problems} (its keys: "
                          f"{', '.join(model.model_fields) or 'any'})") from None


def tool_flags() -> dict[str, tuple[str, str]]:
    """Top-level setting (a CLI flag) -> ``(tool, key)`` it fills, from every registered tool's ``flags``."""
    return {setting: (name, key) for name in tool_names() for setting, key in REGISTRY.tool_class(name).flags.items()}


def prior_seconds(name: str, default: float) -> float:
    """A tool's stated cost (rough CPU seconds per image), or ``default`` for a name that is not registered."""
    return float(REGISTRY.tool_class(name).cost) if name in REGISTRY else default


def tool_commands() -> dict[str, Any]:
    """Tool name -> its own CLI (a Typer app or a command function, ``Tool.commands``), for the tools that have one."""
    out = {}
    for name in tool_names():
        spec = REGISTRY.tool_class(name).commands
        if spec:
            out[name] = import_spec(spec)
    return out


def eval_tasks() -> dict[str, str]:
    """Tool name -> its ``vqa eval --task`` command (``Tool.eval_task``, ``"module:function"``), for those with one."""
    return {name: spec for name in tool_names() if (spec := REGISTRY.tool_class(name).eval_task)}


def langchain_tools(names: Sequence[str] | None = None, *, runner: Any = None,
                    **settings: Mapping[str, Any]) -> list:
    """One LangChain ``BaseTool`` per registered tool (or per name in ``names``), in registry order
    (``tools.langchain``, imported on first call so the registry stays light). ``settings``: each tool's
    constructor settings by tool name, as in the config file (``ocr={"engine": "tesseract"}``); ``runner``: how a
    call runs the tool (default: on the image file it names). No weights load until a tool first runs."""
    from tools.langchain import as_langchain_tool, run_file

    registered = tool_names()
    unknown = sorted(set(settings) - set(registered)) + [n for n in names or () if n not in registered]
    if unknown:
        raise ConfigError(f"unknown tool(s) {unknown}: expected names from {registered}")
    wanted = [n for n in registered if names is None or n in names]
    return [as_langchain_tool(load_tool(n, **dict(settings.get(n, {}))), runner or run_file) for n in wanted]
