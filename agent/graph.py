"""The orchestration graph: load_image -> route -> run_tool (fan-out) -> reason -> finish.

Run-time dependencies (reasoner, router, tools, settings) come through the
LangGraph runtime context (``Services``), never through the state. Every node
records a ``Step`` (timing, outcome); a failing tool or reasoner never fails the
question — ``finish`` always produces an ``Answer`` (a fallback when needed).
"""

from __future__ import annotations

import functools
import operator
import re
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from PIL import Image

from agent.cache import ToolCache
from agent.data import fallback_letter
from agent.errors import ImageError, VqaError
from agent.images import LoadedImage, load_image, resolve_image_path
from agent.probs import chosen_letter, one_hot
from agent.reasoners.base import Reasoner, ReasonRequest
from agent.router import Route, Router
from agent.schema import Answer, Decision, Question, Step, ToolResult
from tools import REGISTRY as TOOL_REGISTRY, load_tool
from tools.base import Tool


class VQAState(TypedDict, total=False):
    question: Question
    forced_tools: list[str] | None
    history: list[tuple[str, str]]
    image: LoadedImage | None
    route: dict[str, Any]
    results: Annotated[list[ToolResult], operator.add]
    steps: Annotated[list[Step], operator.add]
    errors: Annotated[list[str], operator.add]
    decision: Decision | None
    answer: Answer


class ToolTask(TypedDict):
    """What ``route`` sends to one ``run_tool`` branch."""

    tool: str
    question: Question
    image: LoadedImage
    routed: list[str]  # every tool routed for the question: a tool may use a routed peer's output (som <- detect)


@dataclass
class Services:
    """Everything the nodes use that is not per-question data."""

    reasoner: Reasoner
    router: Router = field(default_factory=Router)
    tool_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_pixels: int = 4_000_000
    hard_cap_pixels: int = 400_000_000
    tool_timeout: float = 120.0
    artifacts_dir: Path | None = None
    images_root: Path | None = None  # when set, image paths must stay inside it (symlinks included)
    cache: ToolCache | None = None  # tool outputs computed once per image, tool, settings and question inputs
    _tools: dict[str, Tool] = field(default_factory=dict)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="tool"))

    def tool(self, name: str) -> Tool:
        if name not in self._tools:
            self._tools.setdefault(name, load_tool(name, **self.tool_settings.get(name, {})))
        return self._tools[name]

    def run_tool(self, tool: Tool, image: LoadedImage, question: Question,
                 peers: dict[str, Tool] | None = None) -> ToolResult:
        """``tool.run`` on the working image, through the tool cache when there is one."""
        workdir, kwargs = self.workdir(question.id), ({"peers": peers} if peers else {})
        if self.cache is None:
            return tool.run(image.image, question, workdir, **kwargs)
        return self.cache.run(tool, image, question, workdir, **kwargs)

    def workdir(self, qid: str) -> Path | None:
        if self.artifacts_dir is None:
            return None
        d = self.artifacts_dir / re.sub(r"[^\w.-]", "_", qid)
        d.mkdir(parents=True, exist_ok=True)
        return d


def timed(node: str) -> Callable:
    """Record a ``Step`` for every run of the node (``detail`` comes from the update's ``_detail`` key)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(state: dict, runtime: Runtime[Services]) -> dict:
            t0, wall = time.perf_counter(), time.time()
            update = fn(state, runtime)
            detail = update.pop("_detail", {})
            err = update.pop("_error", None)
            name = f"{node}:{state['tool']}" if node == "run_tool" else node
            step = Step(node=name, ok=err is None, started=wall, seconds=time.perf_counter() - t0,
                        detail=detail, error=err)
            return {**update, "steps": [step]}

        return inner

    return wrap


@timed("load_image")
def load_image_node(state: VQAState, runtime: Runtime[Services]) -> dict:
    q, s = state["question"], runtime.context
    if q.image is None:
        return {"image": None, "_detail": {"image": None}}
    try:
        path = q.image
        if s.images_root is not None:
            path = resolve_image_path(q.image.relative_to(s.images_root).as_posix(), s.images_root)
        img = load_image(path, max_pixels=s.max_pixels, hard_cap_pixels=s.hard_cap_pixels)
    except ImageError as exc:
        return {"image": None, "errors": [f"image {exc.reason}: {exc}"], "_error": f"{exc.reason}: {exc}"}
    return {"image": img, "_detail": {"original_size": list(img.original_size), "size": list(img.image.size),
                                      "sha256": img.sha256}}


@timed("route")
def route_node(state: VQAState, runtime: Runtime[Services]) -> dict:
    q = state["question"]
    forced = state.get("forced_tools")
    route = (Route(tools=list(forced), method="forced") if forced is not None
             else runtime.context.router.route(q.text, list(q.options.values())))
    runnable = [t for t in route.tools if t in TOOL_REGISTRY]
    skipped = {t: "not available in this version" for t in route.tools if t not in TOOL_REGISTRY}
    info = {**route.as_dict(), "run": runnable, "skipped": skipped}
    return {"route": info, "_detail": info}


@timed("run_tool")
def run_tool_node(task: ToolTask, runtime: Runtime[Services]) -> dict:
    s = runtime.context
    try:
        tool = s.tool(task["tool"])
        peers = {n: s.tool(n) for n in getattr(tool, "uses", ()) if n in task["routed"]}
        fut = s._pool.submit(s.run_tool, tool, task["image"], task["question"], peers)
        result = fut.result(timeout=s.tool_timeout)
    except VqaError as exc:  # a bad tool setting fails this tool for this question, like any tool failure
        result = ToolResult(tool=task["tool"], ok=False, error=f"{type(exc).__name__}: {exc}")
    except FutureTimeout:
        result = ToolResult(tool=task["tool"], ok=False, seconds=s.tool_timeout,
                            error=f"timed out after {s.tool_timeout:.0f}s (raise --tool-timeout to wait longer)")
    return {"results": [result], "_error": result.error,
            "_detail": {"ok": result.ok, "seconds": round(result.seconds, 4)}}


@timed("reason")
def reason_node(state: VQAState, runtime: Runtime[Services]) -> dict:
    q, s = state["question"], runtime.context
    img = state.get("image")
    images, problems = marked_images(state.get("results", []))
    req = ReasonRequest(question=q, image=img.image if img else None, results=state.get("results", []),
                        history=state.get("history", []), images=images)
    try:
        decision = s.reasoner.decide([req])[0]
    except Exception as exc:  # noqa: BLE001 - a reasoner failure becomes a recorded fallback, never a crash
        msg = f"reasoner {s.reasoner.name} failed: {type(exc).__name__}: {exc}"
        return {"decision": None, "errors": problems + [msg], "_error": msg}
    return {"decision": decision, "errors": problems, "_detail": {"method": decision.method, "probs": decision.probs,
                                                                  "flags": decision.flags}}


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
def finish_node(state: VQAState, runtime: Runtime[Services]) -> dict:
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
        route=state.get("route", {}), steps=steps, gold=q.answer, text=d.text if d else None,
        template=d.template if d else None, reasoner=d.reasoner if d else None,
    )
    return {"answer": answer, "_detail": {"answer": letter, "method": method}}


def step_timings(steps: list[Step]) -> dict[str, float]:
    """Seconds per node (``run_tool:<name>`` per tool)."""
    out: dict[str, float] = {}
    for st in steps:
        out[st.node] = round(out.get(st.node, 0.0) + st.seconds, 6)
    return out


def final_answer(state: VQAState) -> Answer:
    """The ``Answer`` with every step, ``finish`` included (its own step lands after it builds the answer)."""
    steps = state["steps"]
    return state["answer"].model_copy(update={"steps": steps, "timings": step_timings(steps)})


def after_load(state: VQAState) -> str:
    return "finish" if state.get("errors") else "route"


def fan_out(state: VQAState) -> list[Send] | str:
    tools = state["route"]["run"]
    if not tools or state.get("image") is None:
        return "reason"
    return [Send("run_tool", ToolTask(tool=t, question=state["question"], image=state["image"], routed=list(tools)))
            for t in tools]


def build_graph():
    """The one graph: compiled, with the allowed targets of every branch listed so the drawing is exact."""
    g = StateGraph(VQAState, context_schema=Services)
    g.add_node("load_image", load_image_node)
    g.add_node("route", route_node)
    g.add_node("run_tool", run_tool_node)
    g.add_node("reason", reason_node)
    g.add_node("finish", finish_node)
    g.add_edge(START, "load_image")
    g.add_conditional_edges("load_image", after_load, ["route", "finish"])
    g.add_conditional_edges("route", fan_out, ["run_tool", "reason"])
    g.add_edge("run_tool", "reason")
    g.add_edge("reason", "finish")
    g.add_edge("finish", END)
    return g.compile()
