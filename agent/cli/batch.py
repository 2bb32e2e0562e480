"""``vqa batch``: answer a competition CSV, resumably, into a submission."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agent.cli.cluster import CpusPerWorker, GpusPerWorker, RayAddress, Workers, cluster, run_services
from agent.cli.common import (
    RUN_FLAGS,
    Opt,
    RunDir,
    SettingsFlags,
    Tools,
    err,
    fail,
    out,
    settings_flags,
    tools as parse_tools,
    trace_writer,
)

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
    strict: Annotated[bool, Opt("--strict", help="Exit 1 when any tool failed on any question (for CI).")] = False,
    ray: RayAddress = None, workers: Workers = 1, gpus_per_worker: GpusPerWorker = 0.0,
    cpus_per_worker: CpusPerWorker = 1.0,
    *, opts: SettingsFlags,
) -> None:
    """Answer a competition CSV; resumable through --run-dir; writes one submission row per input row."""
    from agent.data import read_questions
    from agent.rundir import check_output, identity, locked, remember
    from agent.runner import ResultsLog
    from agent.schema import Question

    if not images.is_dir():
        fail(f"--images {images} is not a folder")
    run_dir = run_dir or Path("runs") / f"batch-{csv_path.stem}"
    on = cluster(ray, workers, gpus_per_worker, cpus_per_worker)
    check_output(out_path, inputs=[csv_path], run_dir=run_dir)
    rows = read_questions(csv_path, images)
    settings = opts.settings()
    forced = parse_tools(tools)  # after the settings: the config file may register plug-in tools
    with locked(run_dir, "vqa batch"):
        remember(run_dir, identity(settings, forced), force=force)
        summary = _answer(rows, settings, run_dir, images, forced, out_path, on)
    if show:
        from agent.cli.display import print_batch_table

        done = ResultsLog(run_dir / "results.jsonl").load()
        print_batch_table(out, [done[r.id] for r in rows if isinstance(r, Question) and r.id in done])
    out.print(f"[bold]rows[/] {summary.rows}  [bold]answered[/] {summary.answered}  [bold]failed[/] {summary.failed}"
              f"  [bold]resumed[/] {summary.skipped}  [bold]s/question[/] {summary.seconds_per_question:.3f}"
              + (f"  [yellow]no evidence (uniform guess)[/] {summary.no_evidence}" if summary.no_evidence else ""))
    if summary.damaged_lines:
        shown = ", ".join(map(str, summary.damaged_lines[:10]))
        out.print(f"[yellow]{run_dir / 'results.jsonl'}: skipped {len(summary.damaged_lines)} damaged record(s) "
                  f"({shown}); their rows were answered again[/]", soft_wrap=True)
    for tool, n in sorted(summary.tool_failures.items()):
        out.print(f"[yellow]tool {tool} failed on {n} of {summary.rows} questions[/] (answered without it): "
                  f"{escape(summary.tool_errors[tool])}", soft_wrap=True)
    out.print(f"submission: {out_path}   run: {run_dir}" + (f"   failures: {run_dir / 'failed.csv'}"
                                                           if summary.failed else "")
              + (f"   tool failures: {run_dir / 'tool_failures.csv'}" if summary.tool_failures else ""))
    if strict and summary.tool_failures:
        raise typer.Exit(1)


def _answer(rows: list, settings: Any, run_dir: Path, images: Path, forced: list[str] | None, out_path: Path,
            on: Cluster | None) -> Any:
    from agent.runner import run_batch

    trace = trace_writer(run_dir)
    progress = Progress(TextColumn("[bold]answering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err, transient=False)
    # tool outputs survive reruns of the same run directory (the cache); with --ray, Ray workers answer
    with run_services(settings, run_dir, images, on) as services, progress:
        task = progress.add_task("answering", total=len(rows))
        progress.update(task, completed=0)
        summary = run_batch(rows, services, run_dir, batch_size=settings.batch_size, forced_tools=forced,
                            out=out_path, on_done=lambda a: progress.advance(task), trace=trace,
                            debias=settings.debias, temperature=settings.temperature)
        if services.executor is not None:
            err.print(services.executor.describe(), highlight=False)
    return summary
