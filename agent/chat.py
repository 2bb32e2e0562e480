"""Chat sessions about an image (``vqa chat``): a small conversation graph persisted by a SQLite checkpointer.

Every question runs the VQA graph (router, tools, reasoner) through ``agent.runner.ask`` with the dialogue
so far as ``history``. The conversation graph below only keeps the session — the image's path (never
pixels), the forced tool set, the flags the session was started with (never the API key) and the turns,
each with its full ``Answer`` record for ``/trace`` — in LangGraph's ``SqliteSaver``, one thread per session
name, so a session continues after the process ends. The turns are a ``DeltaChannel`` (each turn is stored once,
as the write that added it) and the pending question an ``UntrackedValue`` (never stored), so the file grows
linearly with the turns; it is read through ``agent.checkpoints`` (plain data only, a foreign schema refused).
The VQA graph itself has no checkpointer::

    START ─(a question)─► answer ─► END
      └──(only /image or /tools)──► END
"""

from __future__ import annotations

import contextvars
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.channels.delta import DeltaChannel
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agent.checkpoints import UnsafeCheckpoint, open_saver, refused
from agent.core.errors import DataError, brief
from agent.core.schema import Answer, Question
from agent.graph import build_graph
from agent.runner import ask
from agent.services import Services

HISTORY_TURNS = 8  # earlier turns about the same image given to the reasoner
TURNS_PER_SNAPSHOT = 1000  # turns are stored once each (a delta); a full copy of the list only this often


class Turn(TypedDict):
    image: str
    question: str
    options: dict[str, str]
    answer: str  # the chosen letter; "" for an open question
    text: str | None  # the free-text answer to an open question
    failed: bool  # a fallback answer: shown with its error, left out of later turns' history
    record: dict[str, Any]  # the whole Answer (JSON): route, evidence, steps, prompt


def add_turns(turns: list[Turn], writes: list[list[Turn]]) -> list[Turn]:
    """The turns channel's reducer: each write is the turns a step added (batching-invariant)."""
    return [*turns, *(t for added in writes for t in added)]


class ChatState(TypedDict, total=False):
    image: str
    tools: list[str] | None  # forced tool set; None = the router decides
    settings: dict[str, Any]  # the flags the session was started with (no API key), reused on resume
    request: Annotated[dict[str, Any] | None, UntrackedValue(dict)]  # the pending question (never stored)
    turns: Annotated[list[Turn], DeltaChannel(add_turns, snapshot_frequency=TURNS_PER_SNAPSHOT)]


@dataclass
class ChatRuntime:
    """Run-time dependencies of a turn (LangGraph context, never state)."""

    services: Services
    vqa_graph: Any = field(default_factory=build_graph)
    history_turns: int = HISTORY_TURNS
    candidates: tuple[str, ...] = ()  # ``vqa chat --candidates``: a question without options is ranked over these
    rank_score: str = "mean"


def parse_line(line: str) -> tuple[str, dict[str, str]]:
    """A chat line: ``"Q | x | y"`` -> ``("Q", {"a": "x", "b": "y"})``; ``"Q"`` -> ``("Q", {})``."""
    from agent.core.schema import LETTERS

    question, *options = [part.strip() for part in line.split("|")]
    return question, dict(zip(LETTERS, options))


def shown_answer(turn: Turn) -> str:
    """``"b. 검은색"`` for a multiple-choice turn, the text for an open one."""
    if turn["options"]:
        return f"{turn['answer']}. {turn['options'].get(turn['answer'], '')}"
    return turn["text"] or ""


def shown_question(turn: Turn) -> str:
    opts = " / ".join(f"{k}. {v}" for k, v in turn["options"].items())
    return f"{turn['question']} ({opts})" if opts else turn["question"]


def history(turns: list[Turn], image: str, limit: int = HISTORY_TURNS) -> list[tuple[str, str]]:
    """The last ``limit`` answered turns about ``image`` as (question, answer), oldest first."""
    usable = [t for t in turns if t["image"] == image and not t["failed"]]
    return [(shown_question(t), shown_answer(t)) for t in usable[-limit:]] if limit > 0 else []


def answer_node(state: ChatState, runtime: Runtime[ChatRuntime]) -> dict:
    ctx, req, turns = runtime.context, state["request"], state.get("turns", [])
    qid = re.sub(r"[^\w.-]", "_", f"turn-{len(turns) + 1}")
    if req.get("rank"):
        return {"turns": [rank_turn(ctx, state, req["text"], qid, turns)], "request": None}
    q = Question(id=qid, image=Path(state["image"]), text=req["text"], options=req.get("options") or {})
    # A fresh context: nested in this node, LangGraph would run the VQA graph as a checkpointed subgraph.
    a = contextvars.Context().run(ask, ctx.services, q, forced_tools=state.get("tools"), graph=ctx.vqa_graph,
                                  history=history(turns, state["image"], ctx.history_turns))
    turn = Turn(image=state["image"], question=q.text, options=q.options, answer=a.answer, text=a.text,
                failed=a.failed, record=a.model_dump(mode="json"))
    return {"turns": [turn], "request": None}


def rank_turn(ctx: ChatRuntime, state: ChatState, text: str, qid: str, turns: list[Turn]) -> Turn:
    """Rank ``ctx.candidates`` for ``text`` as ``vqa rank`` does (``agent.visdial.rank.Ranker``: the graph, the
    router's tools, the reasoner's candidate scorer), the session's earlier turns as the history. The turn's
    ``text`` is the best candidate (what later turns' history shows); ``record["ranking"]`` the ``RankRecord``."""
    from agent.visdial.rank import Ranker, RankFailure, RankTask

    task = RankTask(id=qid, image=Path(state["image"]), question=text, candidates=tuple(ctx.candidates),
                    history=tuple(history(turns, state["image"], ctx.history_turns)))
    ranker = Ranker(ctx.services, rank_score=ctx.rank_score, forced_tools=state.get("tools"))  # type: ignore[arg-type]
    try:
        rec = contextvars.Context().run(ranker.rank, task)
    except RankFailure as exc:
        return Turn(image=state["image"], question=text, options={}, answer="", text=None, failed=True,
                    record={"ranking": None, "rank_score": ctx.rank_score, "errors": [str(exc)], "tools": []})
    best = rec.top(ctx.rank_score, 1)[0]["text"]  # type: ignore[arg-type]
    return Turn(image=state["image"], question=text, options={}, answer="", text=best, failed=False,
                record={"ranking": rec.model_dump(mode="json"), "rank_score": ctx.rank_score, "errors": [],
                        "tools": rec.tools})


def has_question(state: ChatState) -> str:
    return "answer" if state.get("request") else END


def build_chat_graph(checkpointer: SqliteSaver):
    g = StateGraph(ChatState, context_schema=ChatRuntime)
    g.add_node("answer", answer_node)
    g.add_conditional_edges(START, has_question, ["answer", END])
    g.add_edge("answer", END)
    return g.compile(checkpointer=checkpointer)


def default_db(run_dir: Path | None = None) -> Path:
    """``RUN_DIR/chat.sqlite``, else in ``$VQA_DATA_DIR``, ``$XDG_DATA_HOME/vqa-orchestrator`` or
    ``~/.local/share/vqa-orchestrator``."""
    if run_dir is not None:
        return Path(run_dir) / "chat.sqlite"
    base = os.environ.get("VQA_DATA_DIR") or Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share",
                                                   "vqa-orchestrator")
    return Path(base) / "chat.sqlite"


class ChatStore:
    """The sessions of one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        try:  # a damaged or foreign file fails here, with one line, not at the first question
            if self._conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the integrity check failed")
            saver = open_saver(self.path, self._conn)  # reads plain data only (agent.checkpoints)
        except sqlite3.Error as exc:
            self._conn.close()
            raise DataError(f"expected a chat session store (SQLite) at {self.path}, found an unusable file "
                            f"({brief(exc)}); move it aside to start afresh, or pass another --run-dir") from None
        except DataError:
            self._conn.close()
            raise
        self.graph = build_chat_graph(saver)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A stored value that is not plain data, or SQLite's error, is one ``DataError`` line."""
        try:
            yield
        except (UnsafeCheckpoint, sqlite3.Error) as exc:
            raise refused(self.path, exc) from None

    @staticmethod
    def _config(name: str) -> dict:
        return {"configurable": {"thread_id": name}}

    def state(self, name: str) -> ChatState | None:
        with self._reading():
            values = self.graph.get_state(self._config(name)).values
        return values or None  # type: ignore[return-value]

    def sessions(self) -> list[str]:
        with self._reading():
            return sorted({c.config["configurable"]["thread_id"] for c in self.graph.checkpointer.list(None)})

    def run(self, name: str, values: dict[str, Any], runtime: ChatRuntime | None = None) -> ChatState:
        with self._reading():
            return self.graph.invoke(values, self._config(name), context=runtime)

    def close(self) -> None:
        self._conn.close()


class ChatSession:
    """One named session: ``start`` it (or reopen it), then ``ask``; every call is persisted when it returns."""

    def __init__(self, store: ChatStore, name: str, runtime: ChatRuntime | None = None) -> None:
        self.store, self.name, self.runtime = store, name, runtime

    @property
    def state(self) -> ChatState:
        return self.store.state(self.name) or {}

    @property
    def turns(self) -> list[Turn]:
        return list(self.state.get("turns", []))

    def start(self, image: Path, settings: dict[str, Any], tools: list[str] | None) -> None:
        self.store.run(self.name, {"image": str(image), "settings": settings, "tools": tools, "request": None})

    def update(self, **values: Any) -> None:
        """Change ``image``, ``tools`` or ``settings`` (no question is run)."""
        self.store.run(self.name, {**values, "request": None})

    def ask(self, text: str, options: dict[str, str] | None = None) -> Turn:
        Question(id="check", text=text, options=options or {})  # a bad question raises before anything is saved
        state = self.store.run(self.name, {"request": {"text": text, "options": options or {}}}, self.runtime)
        return state["turns"][-1]

    def rank(self, text: str) -> Turn:
        """Rank the runtime's candidates for ``text`` (``rank_turn``); persisted like ``ask``."""
        Question(id="check", text=text, options={})
        state = self.store.run(self.name, {"request": {"text": text, "rank": True}}, self.runtime)
        return state["turns"][-1]

    def last_answer(self) -> Answer | None:
        turns = self.turns
        if not turns or "ranking" in turns[-1]["record"]:  # a ranked turn keeps a RankRecord, not an Answer
            return None
        return Answer.model_validate(turns[-1]["record"])
