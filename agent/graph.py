"""The orchestration graph: load_image -> route -> run_tool (fan-out) -> reason -> finish; for the
``escalate`` planner (``Services.planner``) the cycle reason -> escalate -> run_tool (the added tools) ->
reason while the decision is unsure, and for the ``vlm`` planner route -> vlm_plan (the model calls the tools:
``agent.planners.vlm``) -> reason (``agent.planners``).

Run-time dependencies (reasoner, router, tools, settings) come through the
LangGraph runtime context (``Services``), never through the state. Every node
returns a ``NodeOutput`` (its state update and what its ``Step`` records: detail,
error, tool); a failing tool or reasoner never fails the question — ``finish``
always produces an ``Answer`` (a fallback when needed).
"""

from __future__ import annotations

import functools
import operator
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from PIL import Image

from agent.core.errors import ImageError, VqaError
from agent.core.images import LoadedImage, load_image, resolve_image_path
from agent.core.probs import chosen_letter, one_hot
from agent.core.schema import Answer, Decision, Question, Round, Route, Step, ToolResult
from agent.data import fallback_letter
from agent.planners.escalate import ADD_PER_ROUND, candidates, record_round, unsure
from agent.reasoners.base import ReasonRequest
from agent.services import Services
from tools import tool_names


class VQAState(TypedDict, total=False):
    question: Question
    forced_tools: list[str] | None
    history: list[tuple[str, str]]
    image: LoadedImage | None
    route: Route
    results: Annotated[list[ToolResult], operator.add]
    steps: Annotated[list[Step], operator.add]
    errors: Annotated[list[str], operator.add]
    decision: Decision | None
    answer: Answer
    rounds: Annotated[list[Round], operator.add]  # one per decision (agent.planners)
    round_tools: list[str]  # the tools the current round calls
    why: str  # why they were chosen: "router", "forced", "top 0.34 < 0.6" ...
    round_started: float  # wall clock: when the current round began


class ToolTask(TypedDict):
    """What ``route`` sends to one ``run_tool`` branch."""

    tool: str
    question: Question
    image: LoadedImage
    routed: list[str]  # every tool routed for the question: a tool may use a routed peer's output (som <- detect)


@dataclass
class NodeOutput:
    """What a node returns to ``timed``: its state update, and what its ``Step`` records."""

    update: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the node failed (the step is not ok); the question still goes on
    tool: str | None = None  # run_tool: which tool


def timed(node: str) -> Callable:
    """Run the node and add its ``Step`` (timing, outcome, detail) to its state update."""

    def wrap(fn: Callable[..., NodeOutput]) -> Callable:
        @functools.wraps(fn)
        def inner(state: dict, runtime: Runtime[Services]) -> dict:
            t0, wall = time.perf_counter(), time.time()
            out = fn(state, runtime)
            step = Step(node=node, tool=out.tool, ok=out.error is None, started=wall,
                        seconds=time.perf_counter() - t0, detail=out.detail, error=out.error)
            return {**out.update, "steps": [step]}

        return inner

    return wrap


@timed("load_image")
def load_image_node(state: VQAState, runtime: Runtime[Services]) -> NodeOutput:
    q, s = state["question"], runtime.context
    if q.image is None:
        return NodeOutput({"image": None}, detail={"image": None})
    try:
        path = q.image
        if s.images_root is not None:
            path = resolve_image_path(q.image.relative_to(s.images_root).as_posix(), s.images_root)
        img = load_image(path, max_pixels=s.max_pixels, hard_cap_pixels=s.hard_cap_pixels,
                         decode_budget=s.decode_budget)
    except ImageError as exc:
        return NodeOutput({"image": None, "errors": [f"image {exc.reason}: {exc}"]}, error=f"{exc.reason}: {exc}")
    return NodeOutput({"image": img}, detail={"original_size": list(img.original_size), "size": list(img.image.size),
                                             "sha256": img.sha256})


@timed("route")
def route_node(state: VQAState, runtime: Runtime[Services]) -> NodeOutput:
    q, s, started = state["question"], runtime.context, time.time()
    forced = state.get("forced_tools")
    chosen = (Route(tools=list(forced), method="forced") if forced is not None
              else s.router.route(q.text, list(q.options.values())))
    registered = set(tool_names())  # the registry as it is now (a config file may register plug-ins)
    skipped = {t: "not registered (a plug-in tool needs [tools.register] in the config file)"
               for t in chosen.tools if t not in registered}
    for t in chosen.tools:  # a tool whose load failed earlier in this process is not tried again
        if t not in skipped and (why := s.unavailable(t)):
            skipped[t] = f"unavailable: {why}"
    route = chosen.model_copy(update={"run": [t for t in chosen.tools if t not in skipped], "skipped": skipped})
    calls = route.run if state.get("image") is not None else []  # no image: no tool runs (fan_out)
    return NodeOutput({"route": route, "round_tools": calls, "why": "forced" if forced is not None else "router",
                       "round_started": started}, detail=route.model_dump())


@timed("run_tool")
def run_tool_node(task: ToolTask, runtime: Runtime[Services]) -> NodeOutput:
    s = runtime.context
    try:
        tool = s.tool(task["tool"])
        peers = {n: s.tool(n) for n in tool.uses if n in task["routed"]}
    except VqaError as exc:  # a bad tool setting fails this tool for this question, like any tool failure
        result = ToolResult(tool=task["tool"], ok=False, error=f"{type(exc).__name__}: {exc}")
    else:
        result = s.call_tool(tool, task["image"], task["question"], peers)
    return NodeOutput({"results": [result]}, detail={"ok": result.ok, "seconds": round(result.seconds, 4)},
                      error=result.error, tool=task["tool"])


@timed("vlm_plan")
def vlm_plan_node(state: VQAState, runtime: Runtime[Services]) -> NodeOutput:
    from agent.planners.vlm import plan

    out = plan(state["question"], state["image"], runtime.context, state.get("forced_tools"))
    calls = [c for r in out.rounds for c in r.calls]
    # the reason node's round that follows records the decision over what the model gathered, not new calls
    return NodeOutput({"results": out.results, "rounds": out.rounds, "errors": out.errors, "round_tools": [],
                       "why": "decision after planning", "round_started": time.time()},
                      detail={"steps": len(out.rounds), "calls": len(calls), "failed": sum(not c.ok for c in calls)},
                      error="; ".join(out.errors) or None)


@timed("reason")
def reason_node(state: VQAState, runtime: Runtime[Services]) -> NodeOutput:
    q, s = state["question"], runtime.context
    img = state.get("image")
    images, problems = marked_images(state.get("results", []))
    req = ReasonRequest(question=q, image=img.image if img else None, results=state.get("results", []),
                        history=state.get("history", []), images=images)
    try:
        decision = s.reasoner.decide([req])[0]
    except Exception as exc:  # noqa: BLE001 - a reasoner failure becomes a recorded fallback, never a crash
        msg = f"reasoner {s.reasoner.name} failed: {type(exc).__name__}: {exc}"
        return NodeOutput({"decision": None, "errors": problems + [msg], "rounds": [this_round(state, s, None)]},
                          error=msg)
    rnd = this_round(state, s, decision)
    return NodeOutput({"decision": decision, "errors": problems, "rounds": [rnd]},
                      detail={"method": decision.method, "probs": decision.probs, "flags": decision.flags,
                              "round": rnd.index})


def this_round(state: VQAState, s: Services, d: Decision | None) -> Round:
    """The round that this decision closes: its tools, why, the decision and its seconds."""
    q = state["question"]
    probs = d.probs if d is not None and q.options else None
    return record_round(len(state.get("rounds", [])) + 1, s.planner.name, state.get("round_tools", []),
                        state.get("results", []), state.get("why", ""), probs,
                        chosen_letter(probs, q.letters) if probs else None,
                        time.time() - state.get("round_started", time.time()))


def next_tools(state: VQAState, s: Services) -> tuple[str | None, list[str]]:
    """``escalate``: why the last decision is unsure (``None``: it is sure, or no round is left) and the tools
    that may be added, in order."""
    d, q, p = state.get("decision"), state["question"], s.planner
    if (p.name != "escalate" or d is None or not q.options or state.get("image") is None
            or len(state.get("rounds", [])) >= p.max_rounds):
        return None, []
    why = unsure(d.probs, d.flags, p)
    if why is None:
        return None, []
    tried = [r.tool for r in state.get("results", [])]
    return why, candidates(state["route"], tried, tool_names(), s.costs, s.unavailable)


@timed("escalate")
def escalate_node(state: VQAState, runtime: Runtime[Services]) -> NodeOutput:
    s = runtime.context
    why, order = next_tools(state, s)
    add, cannot = [], {}
    for t in order:  # a tool that cannot run (no weights, no knowledge base, stuck) does not cost a round
        if len(add) >= ADD_PER_ROUND:
            break
        reason = s.cannot_run(t)
        if reason is None:
            add.append(t)
        else:
            cannot[t] = reason
    return NodeOutput({"round_tools": add, "why": why or "", "round_started": time.time()},
                      detail={"why": why, "add": add, "candidates": order, "cannot_run": cannot,
                              "cost_s": {t: round(s.costs.estimate(t), 4) for t in order}})


def marked_images(results: list[ToolResult]) -> tuple[list[Image.Image], list[str]]:
    """The images tools drew for the reasoner (artifact ``marked``, e.g. som's numbered regions), in tool order,
    and an error line for each that cannot be read."""
    images, problems = [], []
    for r in results:
        if r.ok and "marked" in r.artifacts:
            try:
                with Image.open(r.artifacts["marked"]) as im:
                    images.append(im.convert("RGB"))
            except OSError as exc:
                problems.append(f"{r.tool}: marked image {r.artifacts['marked']} unreadable: {exc}")
    return images, problems


@timed("finish")
def finish_node(state: VQAState, runtime: Runtime[Services]) -> NodeOutput:
    q, d = state["question"], state.get("decision")
    if not q.options:  # an open question (vqa chat): the answer is the reasoner's text
        letter, probs, method = "", {}, d.method if d is not None and d.text else "fallback"
    elif d is None:
        letter, method = fallback_letter(q.letters), "fallback"
        probs = one_hot(letter, q.letters)
    else:
        probs, method = d.probs, d.method
        letter = chosen_letter(probs, q.letters)
    steps = state.get("steps", [])
    answer = Answer(
        id=q.id, answer=letter, probs=probs, method=method,
        tools=[r.tool for r in state.get("results", [])], evidence=state.get("results", []),
        timings=step_timings(steps), errors=state.get("errors", []), flags=d.flags if d else [],
        prompt=d.prompt if d else None, raw=d.raw if d else None, question=q.text, options=q.options,
        route=state.get("route"), steps=steps, gold=q.answer, text=d.text if d else None,
        template=d.template if d else None, reasoner=d.reasoner if d else None, rounds=state.get("rounds", []),
    )
    return NodeOutput({"answer": answer}, detail={"answer": letter, "method": method})


def step_timings(steps: list[Step]) -> dict[str, float]:
    """Seconds per node (``run_tool:<name>`` per tool: ``Step.label``)."""
    out: dict[str, float] = {}
    for st in steps:
        out[st.label] = round(out.get(st.label, 0.0) + st.seconds, 6)
    return out


def final_answer(state: VQAState) -> Answer:
    """The ``Answer`` with every step, ``finish`` included (its own step lands after it builds the answer)."""
    steps = state["steps"]
    return state["answer"].model_copy(update={"steps": steps, "timings": step_timings(steps)})


def after_load(state: VQAState) -> str:
    return "finish" if state.get("errors") else "route"


def fan_out(state: VQAState, runtime: Runtime[Services]) -> list[Send] | str:
    if runtime.context.planner.name == "vlm" and state.get("image") is not None:
        return "vlm_plan"
    tools = state["route"].run
    if not tools or state.get("image") is None:
        return "reason"
    return [Send("run_tool", ToolTask(tool=t, question=state["question"], image=state["image"], routed=list(tools)))
            for t in tools]


RECURSION_LIMIT = 1000  # graph steps per question (LangGraph's default, 25, allows only 7 escalation rounds)


def after_reason(state: VQAState, runtime: Runtime[Services]) -> str:
    """Another round (``escalate``) while the decision is unsure, a round is left and a tool is left to add."""
    why, order = next_tools(state, runtime.context)
    return "escalate" if why is not None and order else "finish"


def fan_out_added(state: VQAState) -> list[Send] | str:
    """The tools ``escalate`` added, each to its own ``run_tool`` branch; earlier rounds' results stay in the
    state and are never computed again. None left (another question's run found them unavailable meanwhile):
    the last decision stands."""
    if not state["round_tools"]:
        return "finish"
    tried = [r.tool for r in state.get("results", [])]
    return [Send("run_tool", ToolTask(tool=t, question=state["question"], image=state["image"],
                                      routed=tried + list(state["round_tools"]))) for t in state["round_tools"]]


def build_graph():
    """The one graph: compiled, with the allowed targets of every branch listed so the drawing is exact."""
    g = StateGraph(VQAState, context_schema=Services)
    g.add_node("load_image", load_image_node)
    g.add_node("route", route_node)
    g.add_node("run_tool", run_tool_node)
    g.add_node("vlm_plan", vlm_plan_node)
    g.add_node("reason", reason_node)
    g.add_node("escalate", escalate_node)
    g.add_node("finish", finish_node)
    g.add_edge(START, "load_image")
    g.add_conditional_edges("load_image", after_load, ["route", "finish"])
    g.add_conditional_edges("route", fan_out, ["run_tool", "vlm_plan", "reason"])
    g.add_edge("run_tool", "reason")
    g.add_edge("vlm_plan", "reason")
    g.add_conditional_edges("reason", after_reason, ["escalate", "finish"])
    g.add_conditional_edges("escalate", fan_out_added, ["run_tool", "finish"])
    g.add_edge("finish", END)
    # each escalation round takes 3 steps (escalate, run_tool, reason); rounds are bounded by --max-rounds and by
    # the tools left to add, so the limit only needs room for them
    return g.compile().with_config(recursion_limit=RECURSION_LIMIT)
