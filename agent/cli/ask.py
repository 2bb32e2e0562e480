"""``vqa ask`` (one question about one image) and ``vqa route`` (which tools the router picks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.common import (
    AsJson,
    Opt,
    RunDir,
    SettingsFlags,
    Tools,
    fail,
    orchestrator,
    out,
    settings_flags,
    tools as parse_tools,
)
from agent.core.schema import LETTERS


@settings_flags()
def ask(
    image: Annotated[Path, typer.Argument(help="The photo.")],
    question: Annotated[str, typer.Argument(help="The question, Korean or English.")],
    choice: Annotated[list[str], Opt("--choice", "-c", help="An option; repeat 2-5 times, in order a, b, c ...")],
    tools: Tools = None, run_dir: RunDir = None, as_json: AsJson = False, *, opts: SettingsFlags,
) -> None:
    """Answer one question about one image."""
    from agent.api import make_question
    from agent.core.errors import InputError

    if not image.is_file():
        fail(f"image {image} does not exist or is not a file")
    try:  # checked before any settings are read or model is loaded
        make_question(question, choice, image=image)
    except InputError as exc:
        fail(f"{exc} (give 2-{len(LETTERS)} options with -c)" if "option" in str(exc) else str(exc))
    settings = opts.settings()
    forced = parse_tools(tools)  # after the settings: the config file may register plug-in tools
    with orchestrator(settings, forced) as vqa:
        answer = vqa.ask(image, question, choice, run_dir=run_dir, on_step=None if as_json else step_line)
    if as_json:
        print(answer.model_dump_json(indent=2))
    else:
        from agent.cli.display import answer_panel

        out.print(answer_panel(answer))
    if answer.failed:
        raise typer.Exit(1)


def step_line(node: str, update: dict) -> None:
    """One status line on stderr as each step of the graph finishes (tools may take a minute on a CPU)."""
    from rich.markup import escape

    from agent.cli.common import err

    if node == "route" and update.get("route") is not None:
        r = update["route"]
        line = f"route ({update.get('why', 'router')}): {', '.join(r.run) or 'no tools'}"
        line += "".join(f"; {t} skipped ({why.split(':')[0]})" for t, why in r.skipped.items())
    elif node == "run_tool":
        line = "; ".join(f"{r.tool}: " + (f"done in {r.seconds:.1f}s" + (" (cached)" if r.cached else "")
                                           if r.ok else f"failed ({(r.error or '').splitlines()[0][:80]})")
                         for r in update.get("results", []))
    elif node == "reason":
        rounds = update.get("rounds") or []
        rnd = rounds[-1] if rounds else None
        line = f"reasoned (round {rnd.index}, {rnd.planner})" + (f": {rnd.answer}" if rnd.answer else "") \
            if rnd is not None else "reasoned"
    elif node == "escalate":
        line = f"escalate: adding {', '.join(update.get('round_tools') or []) or 'nothing'}"
    elif node == "vlm_plan":
        line = f"vlm planner: {len(update.get('rounds') or [])} step(s), {len(update.get('results') or [])} tool call(s)"
    elif node == "load_image":
        line = "image loaded"
    else:
        return
    err.print(f"[dim]… {escape(line)}[/]", highlight=False)


def route(
    question: Annotated[str, typer.Argument(help="The question, Korean or English.")],
    choice: Annotated[Optional[list[str]], Opt("--choice", "-c", help="An option (may repeat).")] = None,
    as_json: AsJson = False,
) -> None:
    """Show which tools the router picks for a question, each tool's score and why (no VLM or tool is loaded)."""
    from agent.router import Router

    r = Router().route(question, choice or [])  # every registered tool's rules and examples, plug-ins' included
    if as_json:
        print(json.dumps(r.as_dict(), ensure_ascii=False))
    else:
        out.print(f"tools: [bold]{', '.join(r.tools) or 'none'}[/] (by {r.method})")
        for t, why in r.reasons.items():
            out.print(f"  {t}: {why}")
        if r.scores:
            out.print("scores: " + ", ".join(f"{t} {p:.2f}/{r.thresholds[t]:.2f}" for t, p in r.scores.items()),
                      highlight=False)
            for n in r.nearest:
                out.print(f"  like {n['question']!r} ({', '.join(n['tools']) or 'none'}; cos {n['cos']:.2f})",
                          highlight=False)
