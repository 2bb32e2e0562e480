"""``vqa trace show``: a run's trace as a terminal tree or a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.common import Opt, fail, out

trace_app = typer.Typer(no_args_is_help=True, help="Read a run's trace (RUN/trace.jsonl).")


@trace_app.command("show")
def show(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder (or its trace.jsonl).")],
    qid: Annotated[Optional[str], Opt("--id", help="Only this question.")] = None,
    arm: Annotated[Optional[str], Opt("--arm", help="Only this ablation arm (e.g. router, only:ocr).")] = None,
    all_runs: Annotated[bool, Opt("--all-runs", help="Every attempt, not only each question's latest.")] = False,
    html: Annotated[Optional[Path], Opt("--html", help="Write a self-contained HTML page here instead.")] = None,
    limit: Annotated[int, Opt("--limit", help="At most this many questions.")] = 200,
) -> None:
    """Show each question as a tree (route → tools → reasoner → answer, with timings), or as an HTML page."""
    from agent.trace.read import questions, read_trace, trace_path
    from agent.trace.render import render_question

    path = trace_path(run)
    views = questions(read_trace(path), qid=qid, tags={"arm": arm} if arm else None, all_runs=all_runs)
    if not views:
        fail(f"no events in {path} match" + (f" --id {qid}" if qid else "") + (f" --arm {arm}" if arm else ""))
    total = len(views)
    views = views[:limit]
    if html is not None:
        from agent.trace.html import write_html

        write_html(views, path.parent, html, title=str(run), truncated=total if total > len(views) else None)
        out.print(f"wrote {html} ({len(views)} question(s))")
        return
    for v in views:
        out.print(render_question(v))
    if total > len(views):
        out.print(f"[dim]… {total - len(views)} more (raise --limit, or pick one with --id)[/]")


@trace_app.command("html")
def html_cmd(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder (or its trace.jsonl).")],
    out_path: Annotated[Optional[Path], Opt("--out", help="The page to write (default: RUN/trace.html).")] = None,
    qid: Annotated[Optional[str], Opt("--id", help="Only this question.")] = None,
    arm: Annotated[Optional[str], Opt("--arm", help="Only this ablation arm (e.g. router, only:ocr).")] = None,
    all_runs: Annotated[bool, Opt("--all-runs", help="Every attempt, not only each question's latest.")] = False,
    limit: Annotated[int, Opt("--limit", help="At most this many questions.")] = 200,
) -> None:
    """Write the trace as a self-contained HTML page (``vqa trace show --html PAGE`` does the same)."""
    from agent.trace.read import trace_path

    page = out_path or trace_path(run).parent / "trace.html"
    show(run, qid=qid, arm=arm, all_runs=all_runs, html=page, limit=limit)
