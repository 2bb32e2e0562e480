"""The ``vqa`` command line: ask, route, batch, bench, dev make-tiny."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agent.errors import VqaError
from agent.schema import LETTERS

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="Answer multiple-choice questions about images with tools and a local Qwen-VL.")
dev = typer.Typer(no_args_is_help=True, help="Developer utilities.")
app.add_typer(dev, name="dev")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # error messages stay on one line (paths, commands to copy)

Opt = typer.Option
Reasoner = Annotated[Optional[str], Opt("--reasoner", help="qwen (a Qwen-VL checkpoint) or evidence (model-free).")]
Model = Annotated[Optional[str], Opt("--model", help="Hub id or local path of a Qwen2.5-VL/Qwen3-VL checkpoint.")]
Quant = Annotated[Optional[str], Opt("--quant", help="none, 4bit (NF4) or 8bit; bitsandbytes, GPU only.")]
Dtype = Annotated[Optional[str], Opt("--dtype", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.")]
Adapter = Annotated[Optional[str], Opt("--adapter", help="Path of a PEFT LoRA adapter to apply.")]
MinPx = Annotated[Optional[int], Opt("--min-pixels", help="Smallest image the model sees, in pixels.")]
MaxPx = Annotated[Optional[int], Opt("--max-pixels", help="Pixel budget of the image the model sees.")]
Generate = Annotated[Optional[bool], Opt("--generate/--logits", help="Generate and parse the letter instead of "
                                         "scoring option letters from the next-token logits.")]
Device = Annotated[Optional[str], Opt("--device", help="auto, cpu, cuda, cuda:1 ...")]
Tools = Annotated[Optional[str], Opt("--tools", help="Override the router: comma list of som,detect,ocr,retrieve; "
                                     "'all' or 'none'.")]
OcrEngine = Annotated[Optional[str], Opt("--ocr-engine", help="auto, easyocr or tesseract.")]
ToolTimeout = Annotated[Optional[float], Opt("--tool-timeout", help="Seconds before a tool is given up on.")]
Detector = Annotated[Optional[str], Opt("--detector", help="Grounding DINO hub id or path (the detect tool).")]
Segmenter = Annotated[Optional[str], Opt("--segmenter", help="SAM hub id or path (the som tool).")]
Kb = Annotated[Optional[str], Opt("--kb", help="Knowledge-base folder for the retrieve tool (vqa kb build).")]
Backend = Annotated[Optional[str], Opt("--backend", help="Where qwen runs: transformers (in-process) or openai (an "
                                       "OpenAI-compatible server: vLLM, LMDeploy, llama.cpp, Ollama).")]
BaseUrl = Annotated[Optional[str], Opt("--base-url", help="The server's URL, e.g. http://127.0.0.1:8000/v1 "
                                       "(--backend openai; also VQA_BASE_URL).")]
ApiKey = Annotated[Optional[str], Opt("--api-key", help="The server's API key (also VQA_API_KEY or OPENAI_API_KEY).")]
RunDir = Annotated[Optional[Path], Opt("--run-dir", help="Keep every question's full record and images here.")]
Config = Annotated[Optional[Path], Opt("--config", help="TOML file with the same settings as the flags.")]
AsJson = Annotated[bool, Opt("--json", help="Print the machine-readable record.")]


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def _settings(config: Path | None, **flags: Any):
    from agent.config import load_settings

    ocr = {"engine": flags.pop("ocr_engine")} if flags.get("ocr_engine") else None
    flags.pop("ocr_engine", None)
    s = load_settings(config, flags)
    if ocr:
        s.ocr.update(ocr)
    return s


def _services(settings, run_dir: Path | None, images_root: Path | None = None):
    """Build the graph's services and load the reasoner now, so a bad model fails before any question runs."""
    from agent.graph import Services
    from agent.reasoners import load_reasoner

    reasoner = load_reasoner(settings.reasoner, **settings.reasoner_kwargs())
    if hasattr(reasoner, "load"):
        reasoner.load()
    return Services(reasoner=reasoner, tool_settings=settings.tool_settings(), max_pixels=settings.image_max_pixels,
                    hard_cap_pixels=settings.hard_cap_pixels, tool_timeout=settings.tool_timeout,
                    artifacts_dir=run_dir / "artifacts" if run_dir else None, images_root=images_root)


def _tools(spec: str | None) -> list[str] | None:
    from tools import parse_tool_list

    if spec is None:
        return None
    try:
        return parse_tool_list(spec)
    except ValueError as exc:
        _fail(f"--tools: {exc}")


@app.command()
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

    from agent.runner import ResultsLog
    from agent.runner import ask as run_ask
    from agent.schema import Question

    forced = _tools(tools)
    if not image.is_file():
        _fail(f"image {image} does not exist or is not a file")
    try:
        q = Question(id="ask", image=image, text=question, options=dict(zip(LETTERS, choice)))
    except ValidationError as exc:
        _fail("; ".join(e["msg"] for e in exc.errors()) + " (give 2-5 options with -c)")
    settings = _settings(config, reasoner=reasoner, model=model, quant=quant, dtype=dtype, adapter=adapter,
                         min_pixels=min_pixels, max_pixels=max_pixels, generate=generate, device=device,
                         ocr_engine=ocr_engine, tool_timeout=tool_timeout, detector=detector, segmenter=segmenter,
                         kb=kb, backend=backend, base_url=base_url, api_key=api_key)
    services = _services(settings, run_dir)
    trace = None
    if run_dir:
        from agent.cache import open_cache
        from agent.trace import TraceWriter

        services.cache = open_cache(settings.cache, run_dir)
        trace = TraceWriter(run_dir / "trace.jsonl")
    answer = run_ask(services, q, forced_tools=forced, trace=trace)
    if run_dir:
        ResultsLog(run_dir / "results.jsonl").append(answer)
    if as_json:
        print(answer.model_dump_json(indent=2))
    else:
        from agent.display import answer_panel

        out.print(answer_panel(answer))
    if answer.failed:
        raise typer.Exit(1)


@app.command()
def route(
    question: Annotated[str, typer.Argument(help="The question, Korean or English.")],
    choice: Annotated[Optional[list[str]], Opt("--choice", "-c", help="An option (may repeat).")] = None,
    as_json: AsJson = False,
) -> None:
    """Show which tools the router picks for a question (no model is loaded)."""
    from agent.router import Router

    r = Router().route(question, choice or [])
    if as_json:
        print(json.dumps(r.as_dict(), ensure_ascii=False))
    else:
        out.print(f"tools: [bold]{', '.join(r.tools) or 'none'}[/] (by {r.method})")
        for t, why in r.reasons.items():
            out.print(f"  {t}: {why}")


@app.command()
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

    forced = _tools(tools)
    if not images.is_dir():
        _fail(f"--images {images} is not a folder")
    rows = read_questions(csv_path, images)
    settings = _settings(config, reasoner=reasoner, model=model, quant=quant, dtype=dtype, adapter=adapter,
                         min_pixels=min_pixels, max_pixels=max_pixels, generate=generate, device=device,
                         ocr_engine=ocr_engine, tool_timeout=tool_timeout, batch_size=batch_size,
                         detector=detector, segmenter=segmenter, kb=kb, backend=backend, base_url=base_url,
                         api_key=api_key, debias=debias, temperature=temperature)
    run_dir = run_dir or Path("runs") / f"batch-{csv_path.stem}"
    services = _services(settings, run_dir, images_root=images)
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
        from agent.display import print_batch_table

        done = ResultsLog(run_dir / "results.jsonl").load()
        print_batch_table(out, [done[r.id] for r in rows if isinstance(r, Question) and r.id in done])
    out.print(f"[bold]rows[/] {summary.rows}  [bold]answered[/] {summary.answered}  [bold]failed[/] {summary.failed}"
              f"  [bold]resumed[/] {summary.skipped}  [bold]s/question[/] {summary.seconds_per_question:.3f}"
              + (f"  [yellow]no evidence (uniform guess)[/] {summary.no_evidence}" if summary.no_evidence else ""))
    out.print(f"submission: {out_path}   run: {run_dir}" + (f"   failures: {run_dir / 'failed.csv'}"
                                                           if summary.failed else ""))


@app.command()
def bench(
    model: Annotated[Path, Opt("--model", help="Local Qwen-VL checkpoint (e.g. from `vqa dev make-tiny`).")],
    questions: Annotated[int, Opt("--questions", help="How many questions to time.")] = 16,
    batch_size: Annotated[int, Opt("--batch-size")] = 8,
    as_json: AsJson = False, device: Device = None,
) -> None:
    """Time logit scoring vs generation, and the per-question overhead of the graph."""
    from agent.bench import run_bench

    res = run_bench(str(model), n=questions, batch_size=batch_size, device=device or "auto")
    if as_json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            out.print(f"{k:>22}: {v}")


@dev.command("make-tiny")
def make_tiny_cmd(out_dir: Annotated[Path, typer.Argument(help="Folder to write the checkpoints into.")]) -> None:
    """Write tiny random-weight checkpoints for every model role (useless for answers; for tests and smoke runs)."""
    from agent.tiny import make_tiny

    for role, path in make_tiny(out_dir).items():
        out.print(f"{role}: {path}")


# Commands defined beside their own logic, registered here so `vqa --help` lists them all.
from agent.chat_cli import chat_cmd  # noqa: E402
from agent.eval_cli import eval_cmd, trace_app  # noqa: E402
from agent.kb_cli import kb_app  # noqa: E402

app.command("chat")(chat_cmd)
app.command("eval")(eval_cmd)
app.add_typer(trace_app, name="trace")
app.add_typer(kb_app, name="kb")


def main() -> None:
    try:
        app()
    except VqaError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished questions are kept in the run directory; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
