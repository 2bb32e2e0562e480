"""``vqa chat``: ask follow-up questions about one image, in a terminal or one line per turn from a pipe.

A line is a question, optionally followed by its options after ``|``: ``컵은 무슨 색? | 흰색 | 검은색``.
Without options the reasoner answers in free text. Slash commands: ``/tools LIST|auto``, ``/trace``,
``/image PATH``, ``/help``, ``/quit``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.cli.common import SettingsFlags, Tools, fail, orchestrator, settings_flags, tools as parse_tools
from agent.core.textsafe import clean

Opt = typer.Option
HELP = ("Ask a question; add options after '|' (What colour is the cup? | white | black).\n"
        "  /tools LIST|auto   force tools (e.g. ocr,detect or none) or let the router choose\n"
        "  /trace             the last turn's route, tools, evidence, timings and prompt\n"
        "  /image PATH        talk about another image\n"
        "  /quit              leave (the session is saved; continue it with --resume)")


@settings_flags()
def chat_cmd(
    image: Annotated[Optional[Path], typer.Argument(help="The photo (not needed with --resume).")] = None,
    session: Annotated[Optional[str], Opt("--session", help="Name of a new session (default: chat-DATE-TIME).")] = None,
    resume: Annotated[Optional[str], Opt("--resume", help="Continue the session with this name.")] = None,
    tools: Tools = None,
    run_dir: Annotated[Optional[Path], Opt("--run-dir", help="Keep the session (chat.sqlite) and tool images here "
                                           "instead of the user data directory.")] = None,
    candidates: Annotated[Optional[Path], Opt("--candidates", help="A text file, one candidate answer per line: "
                                              "each question without options is ranked over them (as vqa rank, "
                                              "the earlier turns as its history).")] = None,
    rank_score: Annotated[str, Opt("--rank-score", help="With --candidates: rank by the mean (length-normalised) "
                                   "or summed log-likelihood.")] = "mean",
    top: Annotated[int, Opt("--top", min=1, help="With --candidates: show the N best of each turn.")] = 5,
    *, opts: SettingsFlags,
) -> None:
    """Chat about an image: follow-up questions with or without options; resumable sessions."""

    if image is not None and resume:
        fail("give IMAGE to start a session or --resume NAME to continue one, not both (switch images with /image)")
    if image is None and not resume:
        fail("give the photo to talk about: vqa chat IMAGE (or continue a session with --resume NAME)")
    if image is not None and not image.is_file():
        fail(f"image {image} does not exist or is not a file")
    ranked: list[str] = []
    if candidates is not None:
        from agent.cli.visdial import _read_candidates, check_rank_score

        check_rank_score(rank_score)
        ranked = _read_candidates(candidates, None)
    from agent.chat import ChatRuntime, ChatSession, ChatStore, default_db  # langgraph: after the cheap checks
    from agent.core.errors import DataError

    interactive = sys.stdin.isatty()
    out = Console(highlight=False, emoji=False)
    info = out if interactive else Console(stderr=True, highlight=False, emoji=False)  # a pipe's stdout: answers only
    flags = opts.kept()
    try:
        store = ChatStore(default_db(run_dir))
    except DataError as exc:
        fail(str(exc))
    try:
        if resume:
            state = store.state(resume)
            if state is None:
                fail(f"no chat session {resume!r} in {store.path}; sessions there: {store.sessions() or 'none'} (a "
                     "session started with --run-dir lives in that folder: pass the same --run-dir)")
            name, flags = resume, {**state.get("settings", {}), **flags}
        else:
            name = session or time.strftime("chat-%Y%m%d-%H%M%S")
            if store.state(name) is not None:
                fail(f"session {name!r} already exists in {store.path}; continue it with `vqa chat --resume {name}` "
                     "or pick another --session")
        given = {k: v for k, v in flags.items() if k != "config"}
        key = {"api_key": opts.given["api_key"]} if "api_key" in opts.given else {}
        settings = SettingsFlags(Path(flags["config"]) if flags.get("config") else None, {**given, **key}).settings()
        forced = parse_tools(tools)  # after the settings: the config file may register plug-in tools
        with orchestrator(settings, forced) as vqa:
            services = vqa.services(run_dir, cache=False)
            if ranked:
                from agent.core.errors import ConfigError
                from agent.visdial.registry import scorer_for

                try:  # a reasoner that cannot rank stops here, before the first turn
                    scorer_for(services.reasoner)
                except ConfigError as exc:
                    fail(str(exc))
            chat = ChatSession(store, name, ChatRuntime(services, candidates=tuple(ranked), rank_score=rank_score))
            if resume:
                chat.update(settings=flags, **({"tools": forced} if tools is not None else {}))
                info.print(f"[bold]resuming {escape(name)}[/] ({len(chat.turns)} earlier turns, image "
                           f"{escape(chat.state['image'])})")
                for turn in chat.turns:
                    info.print(Text("you> ", style="bold cyan") + Text(clean(_question(turn))))
                    if "ranking" in turn["record"]:
                        _show_ranking(info, turn, True, top)
                    else:
                        _show(info, turn, interactive=True)
            else:
                chat.start(image.resolve(), flags, forced)
                info.print(f"[bold]session {escape(name)}[/] about {escape(str(image))} (saved in "
                           f"{escape(str(store.path))})\n{HELP}", soft_wrap=True)
            try:
                _loop(chat, out, info, interactive, settings.reasoner, top)
            finally:
                again = f"vqa chat --resume {name}" + (f" --run-dir {run_dir}" if run_dir else "")
                info.print(Text(f"session {name} saved; continue it with: {again}"), soft_wrap=True)
    finally:
        store.close()


def _loop(chat: Any, out: Console, info: Console, interactive: bool, reasoner: str, top: int = 5) -> None:
    from pydantic import ValidationError

    from agent.chat import parse_line

    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass

    while True:
        try:
            line = out.input("[bold cyan]you>[/] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):  # Ctrl-D / Ctrl-C at the prompt
            out.print()
            return
        if not interactive and not line:  # end of the pipe
            return
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if _command(chat, line, info) == "quit":
                return
            continue
        text, options = parse_line(line)
        if not options and chat.runtime.candidates:
            try:
                turn = chat.rank(text)
            except ValidationError as exc:
                info.print(Text("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()), style="red"))
                continue
            except KeyboardInterrupt:
                if _turn_interrupted(info, interactive):
                    return
                continue
            _show_ranking(out, turn, interactive, top)
            continue
        if not options and reasoner == "evidence":
            info.print("[yellow]the evidence reasoner answers multiple-choice questions only: add options after "
                       "'|', or use a model (--reasoner qwen, or --backend openai)[/]")
            continue
        try:
            turn = chat.ask(text, options)
        except ValidationError as exc:
            why = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            info.print(Text(why, style="red") + Text(" (a question, then 2-5 options after '|')"))
            continue
        except KeyboardInterrupt:
            if _turn_interrupted(info, interactive):
                return
            continue
        _show(out, turn, interactive)


def _command(chat: Any, line: str, info: Console) -> str | None:
    cmd, _, arg = line.partition(" ")
    arg = arg.strip()
    if cmd in ("/quit", "/exit", "/q"):
        return "quit"
    if cmd == "/help":
        info.print(HELP)
    elif cmd == "/tools":
        if arg:
            try:
                chat.update(tools=None if arg == "auto" else _parse_tools(arg))
            except ValueError as exc:
                info.print(Text(f"/tools: {exc}", style="red"))
                return None
        tools = chat.state.get("tools")
        info.print("tools: chosen by the router" if tools is None else f"tools: {', '.join(tools) or 'none'} (forced)",
                   markup=False)
    elif cmd == "/trace":
        answer = chat.last_answer()
        turns = chat.turns if answer is None else []
        if turns:  # a ranked turn: its tools and every candidate's score
            _show_ranking(info, turns[-1], True, len(chat.runtime.candidates) or 100)
        else:
            info.print(_trace(answer) if answer else "no turn yet")
    elif cmd == "/image":
        path = Path(arg).expanduser()
        if not arg or not path.is_file():
            info.print(Text(f"/image: expected the path of an image file, found {arg!r}", style="red"))
            return None
        chat.update(image=str(path.resolve()))
        info.print(Text(f"image: {path}"))
    else:
        info.print(Text(f"unknown command {cmd}", style="red"))
        info.print(HELP)
    return None


def _parse_tools(spec: str) -> list[str]:
    from tools import parse_tool_list

    return parse_tool_list(spec)


def _question(turn: dict) -> str:
    from agent.chat import shown_question

    return shown_question(turn)


def _show(console: Console, turn: dict, interactive: bool) -> None:
    from agent.chat import shown_answer

    rec = turn["record"]
    line = Text("vqa> ", style="bold green") if interactive else Text()
    if turn["failed"]:
        line += Text(clean(f"no answer: {'; '.join(rec['errors']) or 'the reasoner gave none'}"), style="red")
    elif turn["options"]:
        line += Text(clean(f"{shown_answer(turn)}  ({rec['probs'].get(turn['answer'], 0.0):.0%})"))
    else:
        line += Text(clean(shown_answer(turn)))  # data: no terminal escapes (agent.core.textsafe)
    console.print(line, soft_wrap=not interactive)  # a pipe gets one line per answer, unwrapped
    if interactive:
        tools = ", ".join(rec["tools"]) or "none"
        steps = rec["steps"]  # wall clock: tools run in parallel
        seconds = max(s["started"] + s["seconds"] for s in steps) - min(s["started"] for s in steps) if steps else 0.0
        meta = f"     tools: {tools} · {rec['method']} · {seconds:.2f}s (/trace for details)"
        console.print(Text(meta, style="dim"))


def _show_ranking(console: Console, turn: dict, interactive: bool, top: int) -> None:
    """A ranked turn: the ``top`` best candidates with their scores, one per line (``rank. text  score``)."""
    rec = turn["record"]
    if turn["failed"]:
        line = Text("vqa> ", style="bold green") if interactive else Text()
        console.print(line + Text(clean(f"no ranking: {'; '.join(rec['errors'])}"), style="red"), soft_wrap=True)
        return
    from agent.visdial.rank import RankRecord

    ranking = RankRecord.model_validate(rec["ranking"])
    for i, c in enumerate(ranking.top(rec["rank_score"], top), 1):
        console.print(Text(clean(f"{i}. {c['text']}  {c['score']:.4g}")), soft_wrap=not interactive)
    if interactive:
        meta = f"     tools: {', '.join(ranking.tools) or 'none'} · {ranking.method} · by {rec['rank_score']} score"
        console.print(Text(meta + (f" · flags: {', '.join(ranking.flags)}" if ranking.flags else ""), style="dim"))


def _trace(a: Any) -> Table:
    route = a.route
    rows = [("route", f"{route.method}: {', '.join(route.run) or 'no tools'}" if route else "not routed")]
    why = {**route.reasons, **route.skipped} if route else {}
    rows += [("", f"{tool}: {reason}") for tool, reason in why.items()]
    rows += [(f"tool {r.tool}", f"{r.summary()} [{r.seconds:.2f}s]") for r in a.evidence]
    rows += [(f"step {s.label}", f"{'ok' if s.ok else 'FAILED'} {s.seconds:.3f}s" + (f" {s.error}" if s.error else ""))
             for s in a.steps]
    rows.append(("reasoner", f"{a.method}; flags: {', '.join(a.flags) or '-'}"))
    if a.probs:
        rows.append(("probs", "  ".join(f"{k} {p:.1%}" for k, p in a.probs.items())))
    rows += [("raw", a.raw)] if a.raw is not None else []
    rows += [("error", e) for e in a.errors]
    rows += [("prompt", a.prompt)] if a.prompt else []
    t = Table(title=Text(f"trace of {a.id}"), show_header=False, expand=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for name, value in rows:  # Text: tool output and prompts are data, never Rich markup
        t.add_row(Text(clean(name)), Text(clean(value)))  # and no terminal escapes (agent.core.textsafe)
    return t


def _turn_interrupted(info: Console, interactive: bool) -> bool:
    """Ctrl-C during a turn: nothing of it is saved; a piped session ends (``True``), a terminal one goes on."""
    info.print("[yellow]interrupted: this turn was not saved[/]")
    return not interactive
