"""``vqa ask`` (one question about one image) and ``vqa route`` (which tools the router picks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.common import (
    Adapter,
    ApiKey,
    AsJson,
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
    fail,
    out,
    tools as parse_tools,
)
from agent.schema import LETTERS


def ask(
    image: Annotated[Path, typer.Argument(help="The photo.")],
    question: Annotated[str, typer.Argument(help="The question, Korean or English.")],
    choice: Annotated[list[str], Opt("--choice", "-c", help="An option; repeat 2-5 times, in order a, b, c ...")],
    tools: Tools = None, run_dir: RunDir = None, as_json: AsJson = False, config: Config = None,
    reasoner: Reasoner = None, model: Model = None, quant: Quant = None, dtype: Dtype = None,
    adapter: Adapter = None, min_pixels: MinPx = None, max_pixels: MaxPx = None, generate: Generate = None,
    device: Device = None, ocr_engine: OcrEngine = None, tool_timeout: ToolTimeout = None,
    detector: Detector = None, segmenter: Segmenter = None, kb: Kb = None,
    backend: Backend = None, base_url: BaseUrl = None, api_key: ApiKey = None,
) -> None:
    """Answer one question about one image."""
    from pydantic import ValidationError

    from agent.runner import ResultsLog, ask as run_ask
    from agent.schema import Question

    forced = parse_tools(tools)
    if not image.is_file():
        fail(f"image {image} does not exist or is not a file")
    try:
        q = Question(id="ask", image=image, text=question, options=dict(zip(LETTERS, choice)))
    except ValidationError as exc:
        fail("; ".join(e["msg"] for e in exc.errors()) + " (give 2-5 options with -c)")
    settings = build_settings(config, reasoner=reasoner, model=model, quant=quant, dtype=dtype, adapter=adapter,
                         min_pixels=min_pixels, max_pixels=max_pixels, generate=generate, device=device,
                         ocr_engine=ocr_engine, tool_timeout=tool_timeout, detector=detector, segmenter=segmenter,
                         kb=kb, backend=backend, base_url=base_url, api_key=api_key)
    services = build_services(settings, run_dir)
    trace = None
    if run_dir:
        from agent.cache import open_cache
        from agent.trace.events import TraceWriter

        services.cache = open_cache(settings.cache, run_dir)
        trace = TraceWriter(run_dir / "trace.jsonl")
    answer = run_ask(services, q, forced_tools=forced, trace=trace)
    if run_dir:
        ResultsLog(run_dir / "results.jsonl").append(answer)
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

    r = Router().route(question, choice or [])
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
