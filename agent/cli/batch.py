"""``vqa batch``: answer a competition CSV, resumably, into a submission."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agent.cli.common import (
    Adapter,
    ApiKey,
    Backend,
    BaseUrl,
    Config,
    Detector,
    Device,
    Dtype,
    Generate,
    Kb,
    MaxPx,
    MinPx,
    Model,
    OcrEngine,
    Opt,
    Quant,
    Reasoner,
    RunDir,
    Segmenter,
    Tools,
    ToolTimeout,
    build_services,
    build_settings,
    err,
    fail,
    out,
    tools as parse_tools,
)


def batch(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="Competition file: id,path,question,a,b,c,d[,answer]")],
    images: Annotated[Path, Opt("--images", help="Root folder the CSV's paths are relative to.")],
    out_path: Annotated[Path, Opt("--out", help="Submission to write (id,answer).")],
    run_dir: RunDir = None, tools: Tools = None, config: Config = None,
    batch_size: Annotated[Optional[int], Opt("--batch-size", help="Questions per model forward pass.")] = None,
    reasoner: Reasoner = None, model: Model = None, quant: Quant = None, dtype: Dtype = None,
    adapter: Adapter = None, min_pixels: MinPx = None, max_pixels: MaxPx = None, generate: Generate = None,
    device: Device = None, ocr_engine: OcrEngine = None, tool_timeout: ToolTimeout = None,
    detector: Detector = None, segmenter: Segmenter = None, kb: Kb = None,
    backend: Backend = None, base_url: BaseUrl = None, api_key: ApiKey = None,
    show: Annotated[bool, Opt("--show", help="Print a per-question table of tools and evidence.")] = False,
    debias: Annotated[Optional[bool], Opt("--debias/--no-debias", help="Average each option's probability over "
                                          "every rotation of the options (n times the reasoner).")] = None,
    temperature: Annotated[Optional[float], Opt("--temperature", help="Apply this temperature to the option "
                                                "probabilities (fit it with vqa eval).")] = None,
) -> None:
    """Answer a competition CSV; resumable through --run-dir; writes one submission row per input row."""
    from agent.data import read_questions
    from agent.runner import ResultsLog, run_batch
    from agent.schema import Question

    if not images.is_dir():
        fail(f"--images {images} is not a folder")
    rows = read_questions(csv_path, images)
    settings = build_settings(config, reasoner=reasoner, model=model, quant=quant, dtype=dtype, adapter=adapter,
                         min_pixels=min_pixels, max_pixels=max_pixels, generate=generate, device=device,
                         ocr_engine=ocr_engine, tool_timeout=tool_timeout, batch_size=batch_size,
                         detector=detector, segmenter=segmenter, kb=kb, backend=backend, base_url=base_url,
                         api_key=api_key, debias=debias, temperature=temperature)
    forced = parse_tools(tools)  # after the settings: the config file may register plug-in tools
    run_dir = run_dir or Path("runs") / f"batch-{csv_path.stem}"
    services = build_services(settings, run_dir, images_root=images)
    from agent.cache import open_cache

    services.cache = open_cache(settings.cache, run_dir)  # tool outputs survive reruns of the same run directory
    progress = Progress(TextColumn("[bold]answering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err, transient=False)
    with progress:
        task = progress.add_task("answering", total=len(rows))
        progress.update(task, completed=0)
        summary = run_batch(rows, services, run_dir, batch_size=settings.batch_size, forced_tools=forced,
                            out=out_path, on_done=lambda a: progress.advance(task), debias=settings.debias,
                            temperature=settings.temperature)
    if show:
        from agent.cli.display import print_batch_table

        done = ResultsLog(run_dir / "results.jsonl").load()
        print_batch_table(out, [done[r.id] for r in rows if isinstance(r, Question) and r.id in done])
    out.print(f"[bold]rows[/] {summary.rows}  [bold]answered[/] {summary.answered}  [bold]failed[/] {summary.failed}"
              f"  [bold]resumed[/] {summary.skipped}  [bold]s/question[/] {summary.seconds_per_question:.3f}"
              + (f"  [yellow]no evidence (uniform guess)[/] {summary.no_evidence}" if summary.no_evidence else ""))
    out.print(f"submission: {out_path}   run: {run_dir}" + (f"   failures: {run_dir / 'failed.csv'}"
                                                           if summary.failed else ""))
