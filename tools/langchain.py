"""The registered tools as LangChain tools, for a LangGraph ``ToolNode``, a tool-calling model or any LangChain agent.

``langchain_tools(**settings)`` gives one ``BaseTool`` per registered tool (plug-ins included), named as the tool,
described by its card (description and limitations), with a pydantic args schema:

- ``image``: the image file's path, ``InjectedState("image")``: the schema a model is shown (``tool_call_schema``)
  leaves it out, and inside a LangGraph ``ToolNode`` it comes from the graph state's ``image`` key (a value the
  model puts in its call is dropped), so a model never needs, or chooses, a file path. Called directly
  (``tool.invoke({"image": ...})``) it is an ordinary argument;
- ``question``: the question the tool should help answer (optional; ``detect`` reads what to count from it,
  ``ocr`` its script);
- the tool's own optional arguments, ``Tool.Args`` (``detect``: ``phrases``; ``ocr``: ``language``; ``retrieve``:
  ``query``).

Calling one runs the real tool (``Tool.run``: a failure is data, never an exception). The reply is text for a model
(the evidence's prompt lines, or ``error: ...``) and the ``ToolResult`` as the artifact
(``response_format="content_and_artifact"``). Who runs the tool is a ``Runner``: by default the image is read from
``image`` and the tool runs in this process; the ``vlm`` planner runs it through the graph's services instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from langchain_core.tools import BaseTool
from langgraph.prebuilt import InjectedState
from pydantic import BaseModel, Field, create_model

from agent.core.errors import ImageError
from agent.core.images import load_image
from agent.core.schema import Question, ToolResult
from tools.base import NoArgs, Tool

Runner = Callable[[Tool, str, "str | None", NoArgs], ToolResult]
"""``(tool, image path, question or None, tool arguments) -> ToolResult``; never raises."""

DEFAULT_QUESTION = "What does the image show?"  # when a call gives no question and the runner knows none
MAX_LINES = 40  # evidence lines shown to a model per call; the ToolResult artifact keeps them all


class ToolInput(BaseModel):
    """What every tool takes; ``Tool.Args`` adds the tool's own optional arguments."""

    image: Annotated[str, InjectedState("image")] = Field(description="Path of the image file (in a ToolNode: the "
                                                                     "state's image).")
    question: str | None = Field(None, description="The question to help answer (default: the question being "
                                                   "answered).")


@functools.cache
def input_schema(cls: type[Tool]) -> type[BaseModel]:
    """The args schema of ``cls``: ``ToolInput`` plus ``cls.Args`` (unknown arguments are refused)."""
    title = "".join(part.capitalize() for part in cls.name.split("_")) + "Input"
    return create_model(title, __base__=(ToolInput, cls.Args), __doc__=f"Arguments of the {cls.name} tool.")


def card(cls: type[Tool]) -> str:
    """The description a model reads: what the tool does, then its limitations."""
    return f"{cls.description} Limitations: {cls.limitations}"


def model_text(result: ToolResult, max_lines: int = MAX_LINES) -> str:
    """What a model reads of a result: the evidence's prompt lines (untrusted text quoted), or ``error: ...``."""
    if not result.ok or result.evidence is None:
        return f"error: {result.error}"
    lines = result.evidence.prompt_lines()
    more = [f"(+{len(lines) - max_lines} more lines)"] if len(lines) > max_lines else []
    return "\n".join(lines[:max_lines] + more)


def run_file(tool: Tool, image: str, question: str | None, args: NoArgs) -> ToolResult:
    """The default ``Runner``: read the image file and run the tool on it in this process (no options, no peers)."""
    path = Path(image).expanduser()
    try:
        loaded = load_image(path)
    except ImageError as exc:
        return ToolResult(tool=tool.name, ok=False, error=f"image {path}: {exc.reason}: {exc}")
    q = Question(id=path.stem or "image", image=path, text=(question or "").strip() or DEFAULT_QUESTION, options={})
    return tool.run(loaded.image, q, None, None, args)


class VqaTool(BaseTool):
    """One registered tool as a LangChain tool (see the module docstring)."""

    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    tool: Any  # tools.base.Tool (typed Any: pydantic does not validate it)
    runner: Any = run_file  # Runner

    def _run(self, image: str, question: str | None = None, run_manager: Any = None,
             **args: Any) -> tuple[str, ToolResult]:
        result = self.runner(self.tool, image, question, self.tool.Args(**args))
        return model_text(result), result


def as_langchain_tool(tool: Tool, runner: Runner = run_file) -> VqaTool:
    """``tool`` as a LangChain tool that runs through ``runner``."""
    cls = type(tool)
    return VqaTool(name=cls.name, description=card(cls), args_schema=input_schema(cls), tool=tool, runner=runner)
