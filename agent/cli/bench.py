"""``vqa bench NAME``: the benchmarks of ``eval/bench/``, one command each; each prints its numbers (JSON; ``mc`` and
``visdial`` a table without ``--json``). docs/benchmarks.md has what each number includes and the measurements.

The spelling before the benchmarks had names, ``vqa bench --model X [--task visdial] ...``, still runs ``vqa bench
mc`` (or ``visdial``) with the same options, and says the new spelling on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agent.cli.common import AsJson, Device, FlagGroup, Opt, err, fail, out

OLD_OPTIONS = ("--model", "--questions", "--batch-size", "--repeats", "--new-tokens", "--json", "--device", "--task",
               "--candidates")
OLD_TASKS = ("mc", "visdial")


def new_spelling(args: list[str]) -> list[str]:
    """``vqa bench``'s arguments in the new spelling: ``--model X --task visdial ...`` (options first, the old form)
    becomes ``visdial --model X ...`` (``--task`` left out: ``mc``); anything else is returned as it is."""
    if not args or args[0].split("=", 1)[0] not in OLD_OPTIONS:
        return args
    rest, task, i = [], "mc", 0
    while i < len(args):
        if args[i] == "--task" and i + 1 < len(args):
            task, i = args[i + 1], i + 2
        elif args[i].startswith("--task="):
            task, i = args[i].split("=", 1)[1], i + 1
        else:
            rest, i = rest + [args[i]], i + 1
    if task not in OLD_TASKS:
        fail(f"--task: expected mc or visdial, found {task!r}; the benchmarks are now commands: vqa bench NAME "
             "(vqa bench --help lists them)")
    return [task, *rest]


class BenchGroup(FlagGroup):
    """``vqa bench``: the old spelling (options, no benchmark name) runs as the new one, with a note."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        new = new_spelling(args)
        if new is not args:
            err.print(f"note: `vqa bench {' '.join(args)}` is now spelled `vqa bench {' '.join(new)}`",
                      highlight=False, markup=False)
        return super().parse_args(ctx, new)


bench_app = typer.Typer(cls=BenchGroup, no_args_is_help=True, add_completion=False,
                        help="Benchmarks that print numbers: mc, visdial, tools, kb, server, train, overhead.")

Model = Annotated[Path, Opt("--model", help="Local Qwen-VL checkpoint (e.g. from `vqa dev make-tiny`).")]
Repeats = Annotated[int, Opt("--repeats", min=1, help="Timed runs of each arm, taken in turns (median and minimum "
                             "reported).")]


def _report(res: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            out.print(f"{k:>26}: {v}", highlight=False)


def _json(res: Any) -> None:
    print(json.dumps(res, indent=2))


@bench_app.command("mc")
def mc_cmd(
    model: Model,
    questions: Annotated[int, Opt("--questions", help="How many questions to time.")] = 16,
    batch_size: Annotated[int, Opt("--batch-size")] = 8,
    repeats: Repeats = 5,
    new_tokens: Annotated[int, Opt("--new-tokens", min=1, help="Exact answer length of the generate arm, in "
                                   "tokens.")] = 8,
    as_json: AsJson = False, device: Device = None,
) -> None:
    """Multiple choice: letter scoring vs generation, and the graph's own overhead per question.

    Generation is held to a fixed answer length (--new-tokens); the arms take turns; each reports its median and
    minimum per question."""
    from eval.bench.mc import run_bench

    if questions < 1 or batch_size < 1:
        fail(f"--questions and --batch-size must be at least 1, found {questions} and {batch_size}")
    _report(run_bench(str(model), n=questions, batch_size=batch_size, device=device or "auto", repeats=repeats,
                      new_tokens=new_tokens), as_json)


@bench_app.command("visdial")
def visdial_cmd(
    model: Model,
    candidates: Annotated[int, Opt("--candidates", min=1, help="Candidates to rank.")] = 100,
    repeats: Repeats = 5, as_json: AsJson = False, device: Device = None,
) -> None:
    """Visual dialog: ranking candidates with a shared prefix vs one pass per candidate.

    Also the prefix alone, and how far the two rankings' scores differ (docs/visdial.md)."""
    from eval.bench.visdial import run_rank_bench

    _report(run_rank_bench(str(model), candidates=candidates, repeats=repeats, device=device or "auto"), as_json)


@bench_app.command("tools")
def tools_cmd(
    tiny: Annotated[Optional[Path], Opt("--tiny", help="Folder from `vqa dev make-tiny` (random weights; every SAM "
                                        "mask accepted).")] = None,
    detector: Annotated[Optional[str], Opt("--detector", help="Grounding DINO hub id or folder (default: "
                                           "TINY/detector-grounding-dino).")] = None,
    segmenter: Annotated[Optional[str], Opt("--segmenter", help="SAM hub id or folder (default: "
                                            "TINY/segmenter-sam).")] = None,
    images: Annotated[Optional[list[Path]], Opt("--images", help="A photo to time (repeat the flag; default: "
                                                "examples/images/*.jpg).")] = None,
    repeat: Annotated[int, Opt("--repeat", min=1, help="Timed passes over the images (median reported).")] = 1,
    device: Device = None,
) -> None:
    """Tools: seconds per image of detect (with and without tiling) and som.

    som with automatic and with detector-seeded regions; load times, and each tool's peak GPU memory on CUDA."""
    from eval.bench.tools import EXAMPLES, run_bench

    if not tiny and not (detector and segmenter):
        fail("give --tiny DIR, or both --detector and --segmenter")
    if tiny and not tiny.is_dir():
        fail(f"--tiny {tiny}: not a folder; write one with: vqa dev make-tiny {tiny}")
    missing = [str(p) for p in images or [] if not p.is_file()]
    if missing:
        fail(f"--images: no such file: {', '.join(missing)}")
    _json(run_bench(detector or str(tiny / "detector-grounding-dino"), segmenter or str(tiny / "segmenter-sam"),
                    images or sorted(EXAMPLES.glob("*.jpg")), repeat, device or "auto",
                    accept_all_masks=tiny is not None and segmenter is None))


@bench_app.command("kb")
def kb_cmd(
    sizes: Annotated[str, Opt("--sizes", help="Comma list of database sizes.")] = "10000,100000",
    dim: Annotated[int, Opt("--dim", min=1)] = 512,
    queries: Annotated[int, Opt("--queries", min=1, help="Queries per batch (recall is averaged over them).")] = 200,
    singles: Annotated[int, Opt("--singles", min=1, help="Queries timed one at a time.")] = 50,
    k: Annotated[int, Opt("-k", min=1, help="Neighbours per query (recall@k).")] = 10,
    seed: Annotated[int, Opt("--seed")] = 0,
) -> None:
    """Knowledge base: build time, query latency and recall of the index types.

    On synthetic vectors near a 64-dimensional subspace; flat, IVF and HNSW as the retrieve tool builds them."""
    from eval.bench.kb import run

    try:
        ns = [int(n) for n in sizes.split(",")]
    except ValueError:
        ns = []
    if not ns or min(ns) < 1:
        fail(f"--sizes: expected a comma list of positive whole numbers (10000,100000), found {sizes!r}")
    _json(run(ns, dim, queries, min(singles, queries), k, seed))


@bench_app.command("server")
def server_cmd(
    questions: Annotated[int, Opt("--questions")] = 96,
    latency: Annotated[float, Opt("--latency", help="Seconds the test server waits per request.")] = 0.05,
    concurrency: Annotated[Optional[list[int]], Opt("--concurrency", help="Requests in flight (repeat the flag; "
                                                    "default: 1, 4 and 16).")] = None,
    repeats: Annotated[int, Opt("--repeats", help="Interleaved rounds of every arm per concurrency.")] = 3,
    max_pixels: Annotated[int, Opt("--max-pixels")] = 1_003_520,
    ray_workers: Annotated[int, Opt("--ray-workers", help="Also run vqa batch on a local Ray cluster of this many "
                                    "workers (needs .[ray]); 0: not.")] = 0,
) -> None:
    """Server backend: how much of the openai backend's throughput vqa batch keeps.

    Against the local test double of a server with a fixed latency: this measures the client, not a model."""
    from eval.bench.server import bench

    levels = concurrency or [1, 4, 16]
    if questions < 1 or repeats < 1 or min(levels) < 1 or latency < 0 or ray_workers < 0:
        fail("expected --questions, --repeats and every --concurrency >= 1, --latency and --ray-workers >= 0")
    _json(bench(questions, latency, levels, max_pixels, repeats, ray_workers))


@bench_app.command("train")
def train_cmd(
    model: Annotated[Optional[str], Opt("--model", help="Checkpoint to train (default: a tiny random Qwen2.5-VL "
                                        "built here).")] = None,
    rows: Annotated[int, Opt("--rows", min=1)] = 16,
    steps: Annotated[int, Opt("--steps", min=1)] = 12,
    batch_size: Annotated[int, Opt("--batch-size", min=1)] = 2,
    max_pixels: Annotated[int, Opt("--max-pixels", min=1)] = 50_000,
    checkpointing: Annotated[str, Opt("--checkpointing", help="Gradient checkpointing: auto (vqa train's default, "
                                      "on with a GPU, off on CPU), on or off.")] = "auto",
    estimate: Annotated[bool, Opt("--estimate", help="Print the memory table of the real checkpoints instead.")] = False,
    rank: Annotated[int, Opt("--rank", min=1, help="LoRA rank (--estimate).")] = 16,
) -> None:
    """Training: seconds per optimizer step and peak memory of a short LoRA run.

    The run goes through vqa train's code, with no tools; --estimate prints instead the memory of the real
    checkpoints, computed from their parameter counts."""
    from eval.bench.train import ARCHITECTURES, estimate as estimated, run

    if estimate:
        _json([estimated(name, rank) for name in ARCHITECTURES])
        return
    choices = {"auto": None, "on": True, "off": False}
    if checkpointing not in choices:
        fail(f"--checkpointing: expected auto, on or off, found {checkpointing!r}")
    _json(run(model, rows, steps, batch_size, max_pixels, choices[checkpointing]))


@bench_app.command("overhead")
def overhead_cmd(
    questions: Annotated[int, Opt("--questions", min=1)] = 16,
    batch_size: Annotated[int, Opt("--batch-size", min=1)] = 8,
    repeats: Annotated[int, Opt("--repeats", min=1)] = 5,
    label: Annotated[str, Opt("--label", help="Names the run in the output (e.g. the checkout).")] = "",
) -> None:
    """The graph's own overhead: wall and CPU ms per question, to compare two checkouts.

    For the code on PYTHONPATH: alternate two trees (docs/benchmarks.md)."""
    from eval.bench.overhead import run

    print(json.dumps(run(questions, batch_size, repeats, label)))
