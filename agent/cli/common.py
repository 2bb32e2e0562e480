"""What every ``vqa`` command shares: the consoles, the option declarations, settings and services building, and
the single error exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

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


def fail(msg: str, code: int = 2) -> None:
    err.print("[bold red]error:[/]", escape(msg), highlight=False)  # the message is data, not markup
    raise typer.Exit(code)


def build_settings(config: Path | None, **flags: Any):
    from agent.config import load_settings

    ocr = {"engine": flags.pop("ocr_engine")} if flags.get("ocr_engine") else None
    flags.pop("ocr_engine", None)
    s = load_settings(config, flags)
    if ocr:
        s.ocr.update(ocr)
    return s


def build_services(settings, run_dir: Path | None, images_root: Path | None = None):
    """Build the graph's services and load the reasoner now, so a bad model fails before any question runs."""
    from agent.graph import Services
    from agent.reasoners import load_reasoner

    reasoner = load_reasoner(settings.reasoner, **settings.reasoner_kwargs())
    if hasattr(reasoner, "load"):
        reasoner.load()
    return Services(reasoner=reasoner, tool_settings=settings.tool_settings(), max_pixels=settings.image_max_pixels,
                    hard_cap_pixels=settings.hard_cap_pixels, decode_budget=settings.image_decode_budget,
                    tool_timeout=settings.tool_timeout,
                    artifacts_dir=run_dir / "artifacts" if run_dir else None, images_root=images_root)


def tools(spec: str | None) -> list[str] | None:
    from tools import parse_tool_list

    if spec is None:
        return None
    try:
        return parse_tool_list(spec)
    except ValueError as exc:
        fail(f"--tools: {exc}")
