"""What every ``vqa`` command shares: the consoles, the option declarations (and help that shows on/off flags as
flags), settings, the ``agent.api.Orchestrator`` a command runs on, and the single error exit.

The settings flags are declared once, in ``FLAGS``: ``@settings_flags()`` adds ``--config`` and every model,
backend and tool flag (and optionally the ``RUN_FLAGS``) to a command, with the defaults of ``Settings`` shown in
``--help``, and hands the command one ``SettingsFlags`` (the flags given on the command line) as its ``opts``
parameter.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union, get_args, get_origin

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from agent.config import Settings, load_settings
from agent.core.textsafe import clean
from tools import BUILTIN

if TYPE_CHECKING:
    from agent.api import Orchestrator
    from agent.distributed import Cluster


def _stdout_console() -> Console:
    """Standard output. A terminal gets its own width (``COLUMNS`` wins); a pipe, a log file or a notebook's ``!vqa``
    cell gets wide lines, since Rich's default of 80 columns there folds every table cell into a narrow column."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200
    return console


out = _stdout_console()
err = Console(stderr=True, soft_wrap=True)  # error messages stay on one line (paths, commands to copy)

Opt = typer.Option


def _flags_as_flags(command: Any, ctx: Any) -> None:
    """Typer's help prints a value type after every option, ``<bool>`` after on/off flags too (``--show <bool>``)
    although they take no value: an empty metavar leaves the type column of flags blank."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class FlagCommand(TyperCommand):
    """A command whose help shows on/off flags as flags (``--show``, ``--debias/--no-debias``), not ``<bool>``."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _flags_as_flags(self, ctx)
        return super().format_help(ctx, formatter)


class FlagGroup(TyperGroup):
    """``FlagCommand``'s help for a group of commands (``vqa --help``, ``vqa kb --help`` ...)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _flags_as_flags(self, ctx)
        return super().format_help(ctx, formatter)


def flags_as_flags(app: typer.Typer) -> typer.Typer:
    """Give ``app``, its commands and its sub-apps ``FlagGroup``/``FlagCommand`` help (before it runs)."""
    if not isinstance(app.info.cls, type) or app.info.cls is TyperGroup:  # unset, or typer's own
        app.info.cls = FlagGroup
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = FlagCommand
    for group in app.registered_groups:
        flags_as_flags(group.typer_instance)
    return app


@dataclass(frozen=True)
class Flag:
    """A command-line flag for the setting of the same name; its type and default come from ``Settings``."""

    setting: str
    decl: str  # "--max-pixels", or "--generate/--logits" for a switch
    help: str
    panel: str

    @property
    def default(self) -> Any:
        return Settings.model_fields[self.setting].get_default(call_default_factory=True)

    def option(self) -> Any:
        """``Annotated[T, typer.Option(...)]`` for a parameter whose default is ``default`` (shown in ``--help``)."""
        kind = Settings.model_fields[self.setting].annotation
        if get_origin(kind) in (Union, types.UnionType):
            kind = next(a for a in get_args(kind) if a is not type(None))
        choices = get_args(kind) if get_origin(kind) is Literal else ()
        kind = kind if kind in (bool, int, float) else str
        metavar = "[" + "|".join(choices) + "]" if choices else None  # an enumerated setting lists its choices
        return Annotated[Optional[kind], Opt(self.decl, help=self.help, rich_help_panel=self.panel, metavar=metavar)]


MODEL, TOOLS, PLAN, RUN = "Model", "Tools", "Planner", "Run"
FLAGS: tuple[Flag, ...] = (
    Flag("reasoner", "--reasoner", "qwen (a Qwen-VL checkpoint), evidence (model-free, multiple choice only), or "
         "openai (qwen on an OpenAI-compatible server, as --backend openai).",
         MODEL),
    Flag("backend", "--backend", "Where qwen runs: transformers (in-process) or openai (an OpenAI-compatible server: "
         "vLLM, LMDeploy, llama.cpp, Ollama).", MODEL),
    Flag("base_url", "--base-url", "The server's URL, e.g. http://127.0.0.1:8000/v1 (--backend openai).", MODEL),
    Flag("api_key", "--api-key", "The server's API key (else VQA_API_KEY or OPENAI_API_KEY).", MODEL),
    Flag("model", "--model", "Hub id or local path of a Qwen2.5-VL/Qwen3-VL checkpoint; with --backend openai the "
         "served model name.", MODEL),
    Flag("quant", "--quant", "none, 4bit (NF4) or 8bit; bitsandbytes, GPU only.", MODEL),
    Flag("dtype", "--dtype", "auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.", MODEL),
    Flag("adapter", "--adapter", "Path of a PEFT LoRA adapter to apply.", MODEL),
    Flag("min_pixels", "--min-pixels", "Smallest image the model sees, in pixels (default: the checkpoint's).", MODEL),
    Flag("max_pixels", "--max-pixels", "Pixel budget of the image the model sees.", MODEL),
    Flag("generate", "--generate/--logits", "Generate and parse the letter instead of scoring option letters from "
         "the next-token logits.", MODEL),
    Flag("device", "--device", "auto, cpu, cuda, cuda:1 ...", MODEL),
    Flag("ocr_engine", "--ocr-engine", "auto, easyocr or tesseract (default: the ocr tool's, auto).", TOOLS),
    Flag("tool_timeout", "--tool-timeout", "Seconds a tool call may run (waiting for a free slot not counted).", TOOLS),
    Flag("tool_concurrency", "--tool-concurrency", "Calls of one tool at once; CPU tools also share this many "
         "(default: one per 4 cores, two per GPU).", TOOLS),
    Flag("detector", "--detector", "Grounding DINO hub id or path (the detect tool).", TOOLS),
    Flag("segmenter", "--segmenter", "SAM hub id or path (the som tool).", TOOLS),
    Flag("planner", "--planner", "Who picks the tools: rules (the router, one round), escalate (add tools while the "
         "answer is unsure) or vlm (the model calls tools itself).", PLAN),
    Flag("confidence", "--confidence", "escalate: add tools while the top probability is below this.", PLAN),
    Flag("margin", "--margin", "escalate: ... or while top minus second probability is below this.", PLAN),
    Flag("max_rounds", "--max-rounds", "escalate: rounds per question, the first included.", PLAN),
    Flag("max_steps", "--max-steps", "vlm: model turns per question.", PLAN),
    Flag("kb", "--kb", "Knowledge-base folder for the retrieve tool (vqa kb build).", TOOLS),
)
RUN_FLAGS: tuple[Flag, ...] = (  # for the commands that answer a whole CSV
    Flag("batch_size", "--batch-size", "Questions per model forward pass.", RUN),
    Flag("debias", "--debias/--no-debias", "Average each option's probability over every rotation of the options "
         "(n times the reasoner).", RUN),
    Flag("temperature", "--temperature", "Temperature for the option probabilities: vqa batch applies it, vqa eval "
         "also reports calibration at it (fit it with vqa eval).", RUN),
    Flag("cache", "--cache", "Tool-output cache: auto (RUN/cache), off, or a folder shared between runs.", RUN),
    Flag("seed", "--seed", "Seed random, numpy and torch (recorded in run.json and metrics.json with what else "
         "produced the run).", RUN),
)
BY_SETTING = {f.setting: f for f in FLAGS + RUN_FLAGS}

Config = Annotated[Optional[Path], Opt("--config", help="TOML file of settings keyed by the flag names (max-pixels or "
                                       "max_pixels); flags win over it, it wins over VQA_<NAME> variables.")]
Tools = Annotated[Optional[str], Opt("--tools", help=f"Override the router: comma list of {','.join(BUILTIN)} "
                                     "(and plug-in tools); 'all' or 'none'.")]
RunDir = Annotated[Optional[Path], Opt("--run-dir", help="Keep every question's full record and images here.")]
AsJson = Annotated[bool, Opt("--json", help="Print the machine-readable record.")]
Limit = Annotated[Optional[int], Opt("--limit", min=1, help="Answer only the first N rows of the CSV (a quick check; "
                                     "bad rows count).")]
Quiet = Annotated[bool, Opt("--quiet", "-q", help="No progress bar and no summary; warnings and errors still show.")]
Device = BY_SETTING["device"].option()


@dataclass(frozen=True)
class SettingsFlags:
    """The settings flags of one command line: the config file and the settings whose flags were given."""

    config: Path | None = None
    given: Mapping[str, Any] = field(default_factory=dict)

    def settings(self) -> Settings:
        """The run's settings; the config file's plug-in tools (``[tools.register]``) are registered here, so
        ``--tools`` (parsed after this) accepts them."""
        from tools import register

        settings = load_settings(self.config, self.given)
        for name, spec in settings.tools.classes.items():
            register(name, spec)  # a wrong path is a ConfigError: one line, exit 2
        return settings

    def kept(self) -> dict[str, Any]:
        """The flags a chat session keeps to answer again later: never the API key; the config file's absolute path."""
        flags = {k: v for k, v in self.given.items() if k != "api_key"}
        if self.config:
            flags["config"] = str(self.config.resolve())
        return flags


def settings_flags(*extra: Flag) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--config``, ``FLAGS`` and ``extra`` to a command whose ``opts`` parameter receives them as one
    ``SettingsFlags``."""
    flags = FLAGS + extra

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        if "opts" not in sig.parameters:
            raise TypeError(f"{fn.__name__} needs an 'opts' parameter to receive the settings flags")
        kw = inspect.Parameter.KEYWORD_ONLY
        params = [p for p in sig.parameters.values() if p.name != "opts"]
        params += [inspect.Parameter("config", kw, default=None, annotation=Config),
                   inspect.Parameter("settings_ctx", kw, annotation=typer.Context)]  # typer passes its context
        params += [inspect.Parameter(f.setting, kw, default=f.default, annotation=f.option()) for f in flags]

        @functools.wraps(fn)
        def command(*args: Any, settings_ctx: typer.Context, config: Path | None = None, **kwargs: Any) -> Any:
            values = {f.setting: kwargs.pop(f.setting) for f in flags}
            # only flags typed on the command line: a default left alone lets the config file and VQA_* speak
            given = {k: v for k, v in values.items() if v is not None and _typed(settings_ctx, k)}
            return fn(*args, opts=SettingsFlags(config, given), **kwargs)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _typed(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"  # click's ParameterSource (typer vendors click)


def fail(msg: str, code: int = 2) -> None:
    err.print("[bold red]error:[/]", escape(clean(msg)), highlight=False)  # the message is data, not markup
    raise typer.Exit(code)


def orchestrator(settings: Settings, forced: list[str] | None = None, cluster: Cluster | None = None) -> Orchestrator:
    """The ``agent.api.Orchestrator`` a command runs on (``cluster``: answering on Ray workers), recording this
    command line in its run directories."""
    from agent.api import Orchestrator
    from agent.rundir import command_line

    return Orchestrator(settings=settings, tools=forced, command=command_line(["vqa", *sys.argv[1:]]),
                        cluster=cluster)


def tools(spec: str | None) -> list[str] | None:
    from tools import parse_tool_list

    if spec is None:
        return None
    try:
        return parse_tool_list(spec)
    except ValueError as exc:
        fail(f"--tools: {exc}")
