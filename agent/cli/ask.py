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
from agent.schema import LETTERS


@settings_flags()
def ask(
    image: Annotated[Path, typer.Argument(help="The photo.")],
    question: Annotated[str, typer.Argument(help="The question, Korean or English.")],
    choice: Annotated[list[str], Opt("--choice", "-c", help="An option; repeat 2-5 times, in order a, b, c ...")],
    tools: Tools = None, run_dir: RunDir = None, as_json: AsJson = False, *, opts: SettingsFlags,
) -> None:
    """Answer one question about one image."""
    from agent.api import make_question
    from agent.errors import InputError

    if not image.is_file():
        fail(f"image {image} does not exist or is not a file")
    try:  # checked before any settings are read or model is loaded
        make_question(question, choice, image=image)
    except InputError as exc:
        fail(f"{exc} (give 2-{len(LETTERS)} options with -c)" if "option" in str(exc) else str(exc))
    settings = opts.settings()
    forced = parse_tools(tools)  # after the settings: the config file may register plug-in tools
    with orchestrator(settings, forced) as vqa:
        answer = vqa.ask(image, question, choice, run_dir=run_dir)
    if as_json:
        print(answer.model_dump_json(indent=2))
    else:
        from agent.cli.display import answer_panel

        out.print(answer_panel(answer))
    if answer.failed:
        raise typer.Exit(1)


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
