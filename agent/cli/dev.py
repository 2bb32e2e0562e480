"""``vqa dev``: developer utilities (tiny random-weight checkpoints) and ``vqa bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.common import AsJson, Device, Opt, out

dev = typer.Typer(no_args_is_help=True, help="Developer utilities.")


def bench(
    model: Annotated[Path, Opt("--model", help="Local Qwen-VL checkpoint (e.g. from `vqa dev make-tiny`).")],
    questions: Annotated[int, Opt("--questions", help="How many questions to time.")] = 16,
    batch_size: Annotated[int, Opt("--batch-size")] = 8,
    as_json: AsJson = False, device: Device = None,
) -> None:
    """Time logit scoring vs generation, and the per-question overhead of the graph."""
    from agent.dev.bench import run_bench

    res = run_bench(str(model), n=questions, batch_size=batch_size, device=device or "auto")
    if as_json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            out.print(f"{k:>22}: {v}")


@dev.command("make-tiny")
def make_tiny_cmd(out_dir: Annotated[Path, typer.Argument(help="Folder to write the checkpoints into.")]) -> None:
    """Write tiny random-weight checkpoints for every model role (useless for answers; for tests and smoke runs)."""
    from agent.dev.tiny import make_tiny

    for role, path in make_tiny(out_dir).items():
        out.print(f"{role}: {path}")
