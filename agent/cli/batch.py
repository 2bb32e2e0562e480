"""``vqa batch``: answer a competition CSV, resumably, into a submission."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agent.cli.cluster import CpusPerWorker, GpusPerWorker, Oversubscribe, RayAddress, Workers, cluster
from agent.cli.common import (
    RUN_FLAGS,
    Limit,
    Opt,
    Quiet,
    RunDir,
    SettingsFlags,
    Tools,
    err,
    fail,
    orchestrator,
    out,
    settings_flags,
    tools as parse_tools,
)
from agent.cli.interrupt import interrupted, resume_command, stopping
from agent.cli.progress import row_progress

if TYPE_CHECKING:
    from agent.distributed import Cluster


@settings_flags(*RUN_FLAGS)
def batch(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="Competition file: id,path,question,a,b,c,d[,answer]")],
    images: Annotated[Path, Opt("--images", help="Root folder the CSV's paths are relative to.")],
    out_path: Annotated[Path, Opt("--out", help="Submission to write (id,answer).")],
    run_dir: RunDir = None, tools: Tools = None,
    show: Annotated[bool, Opt("--show", help="Print a per-question table of tools and evidence.")] = False,
    force: Annotated[bool, Opt("--force", help="Answer again when the run directory holds answers made with other "
                                "settings (they are set aside, not deleted).")] = False,
    strict: Annotated[bool, Opt("--strict", help="Exit 1 when any row failed or any tool failed on any question "
                                "(for CI); without it, exit 1 only when no row could be answered.")] = False,
    ray: RayAddress = None, workers: Workers = 1, gpus_per_worker: GpusPerWorker = None,
    cpus_per_worker: CpusPerWorker = 1.0, oversubscribe: Oversubscribe = False,
    limit: Limit = None, quiet: Quiet = False,
    *, opts: SettingsFlags,
) -> None:
    """Answer a competition CSV; resumable through --run-dir; writes one submission row per input row."""
    if not images.is_dir():
        fail(f"--images {images} is not a folder")
    run_dir = run_dir or Path("runs") / f"batch-{csv_path.stem}"
    on = cluster(ray, workers, gpus_per_worker, cpus_per_worker, oversubscribe)
    settings = opts.settings()
    forced = parse_tools(tools)  # after the settings: the config file may register plug-in tools
    summary = _answer(csv_path, images, run_dir, out_path, settings, forced, force=force, limit=limit, quiet=quiet,
                      on=on)
    if summary.interrupted:
        _print_interrupted(summary.rows - summary.unanswered - summary.incomplete, summary.rows, summary.incomplete)
        raise typer.Exit(130)
    if show:
        from agent.cli.display import print_batch_table

        print_batch_table(out, [a for a in summary.answers if not a.failed])
    _print_summary(summary, run_dir, out_path, quiet=quiet)
    if interrupted():  # every row was done before the stop took effect: the submission is written
        raise typer.Exit(130)
    if summary.rows and not summary.answered:  # every row got a fallback: the submission is guesses
        err.print(f"error: none of the {summary.rows} rows could be answered (see {run_dir / 'failed.csv'}); "
                  "check --images and the CSV's paths", highlight=False)
        raise typer.Exit(1)
    if strict and (summary.tool_failures or summary.failed):
        raise typer.Exit(1)


def _print_interrupted(done: int, rows: int, cut: int = 0) -> None:
    """How far the run got and the command that resumes it (the same command line)."""
    err.print(f"interrupted: {done} of {rows} rows done (kept in the run directory)"
              + (f", {cut} cut short (answered again on resume)" if cut else "") + "; resume with:", highlight=False)
    err.print("  " + resume_command(), highlight=False, markup=False)


def _print_summary(summary: Any, run_dir: Path, out_path: Path, *, quiet: bool) -> None:
    """The counts and where things went (not with ``quiet``), and every warning."""
    if not quiet:
        out.print(f"[bold]rows[/] {summary.rows}  [bold]answered[/] {summary.answered}  [bold]failed[/] "
                  f"{summary.failed}  [bold]resumed[/] {summary.skipped}"
                  + (f"  [bold]answered again[/] {summary.retried}" if summary.retried else "")
                  + "  [bold]s/question[/] "
                  f"{summary.seconds_per_question:.3f}"
                  + (f"  [yellow]no evidence (uniform guess)[/] {summary.no_evidence}" if summary.no_evidence else ""))
    if summary.damaged_lines:
        shown = ", ".join(map(str, summary.damaged_lines[:10]))
        out.print(f"[yellow]{run_dir / 'results.jsonl'}: skipped {len(summary.damaged_lines)} damaged record(s) "
                  f"({shown}); their rows were answered again[/]", soft_wrap=True)
    if summary.incomplete:
        out.print(f"[yellow]{summary.incomplete} row(s) incomplete[/] (a tool timed out or the run was stopped): "
                  "rerun the same command to answer them again", soft_wrap=True)
    for tool, n in sorted(summary.tool_failures.items()):
        out.print(f"[yellow]tool {tool} failed on {n} of {summary.rows} questions[/] (answered without it): "
                  f"{escape(summary.tool_errors[tool])}", soft_wrap=True)
    if quiet:
        return
    out.print(f"submission: {out_path}   run: {run_dir}" + (f"   failures: {run_dir / 'failed.csv'}"
                                                           if summary.failed else "")
              + (f"   tool failures: {run_dir / 'tool_failures.csv'}" if summary.tool_failures else ""))


def _answer(csv_path: Path, images: Path, run_dir: Path, out_path: Path, settings: Any, forced: list[str] | None, *,
            force: bool, limit: int | None, quiet: bool, on: Cluster | None) -> Any:
    count = {"rows": 0, "done": 0}

    def start(rows: int) -> None:
        count["rows"] = rows
        bar.start(rows)

    def done(a: Any) -> None:
        count["done"] += not a.incomplete
        bar.done(a)

    def on_stop() -> None:
        err.print("\nstopping: no new rows; running ones are cut short (Ctrl-C again to quit at once)",
                  highlight=False)

    with orchestrator(settings, forced, cluster=on) as vqa, row_progress("answering", quiet=quiet) as bar, \
            stopping(on_stop, lambda: _print_interrupted(count["done"], count["rows"])) as stop:
        summary = vqa.batch(csv_path, images, run_dir, out_path, force=force, limit=limit, on_start=start,
                            on_done=done, stop=stop)
    if vqa.cluster_note:  # with --ray: the workers, and any restarts
        err.print(vqa.cluster_note, highlight=False)
    return summary
