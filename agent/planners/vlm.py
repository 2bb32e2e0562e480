"""The ``vlm`` planner: the model plans, calling the tools by tool calling, until it stops or ``max_steps`` turns.

Per question, a small LangGraph of its own: ``model`` (a chat model bound to the tools' schemas) -> ``tools`` (a
LangGraph ``ToolNode`` over the ``tools.langchain`` tools) -> ``model`` ... The photo's path is the graph state's
``image``, which the ``ToolNode`` injects into every call, and a call that gives no ``question`` gets the question
being answered: a model calls ``ocr`` with ``{}``. The tools run through the graph's services (the tool cache, the
pool and its timeouts, the question's artifacts folder), on the working image already loaded.

What could crash or loop is answered to the model as a tool error and recorded as ``ToolCall(ok=False)``: an
unknown tool (the ``ToolNode``'s reply), arguments its schema refuses, a call whose JSON does not parse (the chat
model's ``invalid_tool_calls``), the same call (tool and arguments) made again, a failed tool. Each model turn is a
step, recorded as an ``Answer.rounds`` entry (its calls with their arguments; ``why``: the model's text); the calls
of turn ``max_steps`` still run, and then the model gets no further turn. The graph's ``reason`` node then scores
the letter over the ``ToolResult``s gathered.

The model (``ToolCaller``, built by ``tool_caller`` from the settings): for ``--backend openai`` LangChain's
``ChatOpenAI`` on the server (the OpenAI ``tools``/``tool_calls`` protocol); in-process, ``QwenChatModel`` over
the ``qwen`` reasoner's weights (the chat template's ``tools`` and ``<tool_call>`` JSON). The evidence reasoner
has no model that can call tools.
"""

from __future__ import annotations

import json
import operator
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode

import prompts
from agent.core.errors import ConfigError, VqaError
from agent.core.schema import Question, Round, ToolCall, ToolResult
from tools import REGISTRY, tool_names
from tools.base import NoArgs, Tool
from tools.langchain import as_langchain_tool

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.core.images import LoadedImage
    from agent.services import Services

PLAN_TOKENS = 256  # new tokens per model turn: room for a sentence and a few tool calls
REPEATED = ("repeated call: this tool was already called with these arguments and its output is above; call "
            "another tool, change the arguments, or answer with the letter")


@dataclass(frozen=True)
class ToolCaller:
    """The ``vlm`` planner's model: a LangChain chat model that supports ``bind_tools``, and the pixel budget of
    the photo it is sent (``None``: as loaded; the in-process model's processor applies its own)."""

    chat: Any  # langchain_core.language_models.BaseChatModel
    max_pixels: int | None = None


def tool_caller(settings: Settings, reasoner: Any) -> ToolCaller:
    """The model the ``vlm`` planner plans with (``--planner vlm``, or a ``planner:vlm`` ablation arm). A
    ``ConfigError`` when the reasoner has no model that can call tools, or (in-process) when the checkpoint's chat
    template cannot show tools."""
    if settings.reasoner == "evidence":
        raise ConfigError("--planner vlm needs a model that can call tools, and the evidence reasoner has none; "
                          "use --reasoner qwen (in-process) or --backend openai --base-url URL, or another --planner")
    if settings.reasoner == "openai":
        from langchain_openai import ChatOpenAI

        from agent.reasoners.retry import retrying_client

        key = settings.api_key.get_secret_value() if settings.api_key else "EMPTY"  # local servers take any key
        # the scorer's retry policy (agent.reasoners.retry), not the SDK's: the same server, the same rules
        chat = ChatOpenAI(model=settings.model, base_url=settings.base_url, api_key=key,
                          timeout=settings.request_timeout, max_retries=0, temperature=0,
                          http_client=retrying_client(settings.retries, settings.request_timeout),
                          max_completion_tokens=PLAN_TOKENS,
                          extra_body={"max_tokens": PLAN_TOKENS})  # llama-cpp-python ignores max_completion_tokens
        return ToolCaller(chat, settings.max_pixels)
    from agent.reasoners.qwen_chat import QwenChatModel

    chat = QwenChatModel(backend=reasoner, max_new_tokens=PLAN_TOKENS)
    chat.check_template()
    return ToolCaller(chat)


@dataclass
class Planned:
    """What the planner gathered for one question."""

    results: list[ToolResult] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PlanState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    image: str  # the photo's path: injected into every tool call by the ToolNode (tools.langchain)
    turns: int
    started: Annotated[list[float], operator.add]  # when each model turn began (perf_counter)


def offered(services: Services, forced: list[str] | None) -> list[Tool]:
    """The tools the model may call: ``--tools`` when given, else every registered tool, less those that cannot
    run in this process."""
    out = []
    for name in forced if forced is not None else tool_names():
        if name in REGISTRY and not services.unavailable(name):
            try:
                out.append(services.tool(name))
            except VqaError:  # bad settings: the tool is left out, as the graph leaves out an unavailable one
                continue
    return out


def service_runner(services: Services, question: Question, image: LoadedImage) -> Callable[..., ToolResult]:
    """A ``tools.langchain.Runner`` that runs a call on the question's loaded image through the services (cache,
    pool, timeout, costs: ``Services.call_tool``); a call's own question replaces the text, the options stay."""

    def run(tool: Tool, path: str, asked: str | None, args: NoArgs) -> ToolResult:  # path: question.image's
        q = question
        if asked and asked.strip() and asked.strip() != question.text:
            q = question.model_copy(update={"text": asked.strip()})
        return services.call_tool(tool, image, q, None, args)

    return run


def tidy(error: str) -> str:
    """An error on one line, without LangChain's troubleshooting link."""
    return re.sub(r"\s+", " ", error.split("For troubleshooting")[0]).strip()


def signature(call: dict[str, Any]) -> tuple[str, str]:
    return call["name"], json.dumps(call["args"], sort_keys=True, ensure_ascii=False, default=str)


def made_before(messages: list[AnyMessage], call_id: str) -> list[dict[str, Any]]:
    """The calls made before ``call_id`` (a call of the last model turn)."""
    turns = [m for m in messages if isinstance(m, AIMessage)]
    earlier = [c for m in turns[:-1] for c in m.tool_calls]
    for c in turns[-1].tool_calls if turns else []:
        if c["id"] == call_id:
            break
        earlier.append(c)
    return earlier


def screen(request: Any, execute: Callable[[Any], Any]) -> Any:
    """The ``ToolNode``'s wrapper: an unknown tool or a repeated call is answered with an error instead of running;
    a failed tool's reply is marked ``status="error"``."""
    call = request.tool_call
    refused = None
    if request.tool is None:
        names = ", ".join(t.name for t in request.runtime.tools)
        refused = f"unknown tool {call['name']!r}: expected one of {names}"
    elif signature(call) in {signature(c) for c in made_before(request.state["messages"], call["id"])}:
        refused = REPEATED
    if refused is not None:
        return ToolMessage(f"error: {refused}", tool_call_id=call["id"], name=call["name"], status="error")
    reply = execute(request)
    if isinstance(reply, ToolMessage) and isinstance(reply.artifact, ToolResult) and not reply.artifact.ok:
        reply.status = "error"
    return reply


def build_plan_graph(model: Any, tools: list[Any], max_steps: int):
    """model -> tools -> model ... while the model calls tools and turns remain (``max_steps`` model turns)."""

    def think(state: PlanState) -> dict[str, Any]:
        t0 = time.perf_counter()
        reply = model.invoke(state["messages"])
        refused = [ToolMessage(f"error: {tidy(c.get('error') or 'the call could not be read')}", status="error",
                               tool_call_id=c.get("id") or "", name=c.get("name") or "unknown")
                   for c in reply.invalid_tool_calls]  # every call is answered, as the protocol requires
        return {"messages": [reply, *refused], "turns": state["turns"] + 1, "started": [t0]}

    def after_model(state: PlanState) -> str:
        last = next(m for m in reversed(state["messages"]) if isinstance(m, AIMessage))
        if last.tool_calls:
            return "tools"
        return "model" if last.invalid_tool_calls and state["turns"] < max_steps else END

    def after_tools(state: PlanState) -> str:
        return "model" if state["turns"] < max_steps else END

    g = StateGraph(PlanState)
    g.add_node("model", think)
    g.add_node("tools", ToolNode(tools, wrap_tool_call=screen))
    g.add_edge(START, "model")
    g.add_conditional_edges("model", after_model, ["tools", "model", END])
    g.add_conditional_edges("tools", after_tools, ["model", END])
    return g.compile()


def first_message(question: Question, image: LoadedImage, caller: ToolCaller) -> HumanMessage:
    """The photo (a data URL, within the model's pixel budget) and the planning prompt."""
    from agent.reasoners.openai import data_url

    text, _ = prompts.render_plan(question)
    return HumanMessage(content=[{"type": "image_url", "image_url": {"url": data_url(image.image, caller.max_pixels)}},
                                 {"type": "text", "text": text}])


def plan(question: Question, image: LoadedImage, services: Services, forced: list[str] | None = None) -> Planned:
    """Let the model call tools for ``question`` (see the module docstring). Never raises: a failing model ends the
    planning with an error line, and what was gathered until then is kept."""
    caller: ToolCaller | None = getattr(services, "vlm", None)
    if caller is None:
        return Planned(errors=["vlm planner: no tool-calling model in the services (agent.planners.vlm.tool_caller)"])
    tools = [as_langchain_tool(t, service_runner(services, question, image)) for t in offered(services, forced)]
    if not tools:  # --tools none: nothing to plan; else every tool failed to load earlier in this process
        return Planned(errors=[] if forced == [] else ["vlm planner: no tool can run here (all unavailable)"])
    max_steps = services.planner.max_steps
    graph = build_plan_graph(caller.chat.bind_tools(tools), tools, max_steps)
    state: dict[str, Any] = {"messages": [first_message(question, image, caller)], "image": str(question.image),
                             "turns": 0, "started": []}
    errors: list[str] = []
    try:
        for state in graph.stream(state, {"recursion_limit": 2 * max_steps + 4}, stream_mode="values"):
            pass
    except Exception as exc:  # noqa: BLE001 - a model failure ends the planning; the question is still answered
        errors.append(f"vlm planner stopped: {type(exc).__name__}: {exc}")
    rounds, results = record(state["messages"], state["started"], time.perf_counter())
    return Planned(results=results, rounds=rounds, errors=errors)


def record(messages: list[AnyMessage], started: list[float], ended: float) -> tuple[list[Round], list[ToolResult]]:
    """One ``Round`` per model turn (its calls, how each went, the model's text) and every tool's ``ToolResult``."""
    replies = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    turns = [m for m in messages if isinstance(m, AIMessage)]
    bounds = [*started, ended]
    rounds, results = [], []
    for i, turn in enumerate(turns):
        calls = []
        for c in turn.tool_calls:
            reply = replies.get(c["id"])
            result = reply.artifact if reply is not None and isinstance(reply.artifact, ToolResult) else None
            if result is not None:
                results.append(result)
                calls.append(ToolCall(tool=c["name"], args=c["args"], ok=result.ok, error=result.error,
                                      cached=result.cached))
            else:  # refused before running (unknown tool, bad arguments, repeated), or never answered
                why = tidy(reply.text).removeprefix("error: ") if reply is not None else "not run: the planner stopped"
                calls.append(ToolCall(tool=c["name"], args=c["args"], ok=False, error=why))
        for c in turn.invalid_tool_calls:
            raw = c.get("args") or ""
            error = tidy(c.get("error") or "the call could not be read")
            calls.append(ToolCall(tool=c.get("name") or "?", ok=False,
                                  error=error if raw in error else f"{error} (sent: {raw[:200]})"))
        seconds = bounds[i + 1] - bounds[i] if i + 1 < len(bounds) else 0.0
        rounds.append(Round(index=i + 1, planner="vlm", calls=calls, why=turn.text.strip(), seconds=round(seconds, 4)))
    return rounds, results
