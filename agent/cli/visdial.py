"""Candidate ranking on the command line: ``vqa eval FILE --task visdial`` and ``vqa rank``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

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
from agent.config import Settings

RankScoreOpt = Annotated[str, Opt("--rank-score", help="Rank by the candidates' mean (length-normalised) or summed "
                                  "log-likelihood; the evidence reasoner's coverage is both.")]


def check_rank_score(rank_score: str) -> None:
    if rank_score not in ("mean", "sum"):
        fail(f"--rank-score must be 'mean' or 'sum', found {rank_score!r}")


def eval_visdial_cli(file: Path, images: Path, run_dir: Path, *, dense: Path | None, rank_score: str,
                     limit: int | None, quiet: bool, as_json: bool, settings: Settings) -> None:
    """``vqa eval FILE --task visdial``: rank every round, write ranks.json and metrics.json, print the metrics."""
    from agent.cli.progress import row_progress
    from agent.visdial.run import eval_visdial

    check_rank_score(rank_score)
    with orchestrator(settings) as vqa, row_progress("rounds", quiet=quiet, transient=True) as bar:
        metrics = eval_visdial(vqa, file, images, run_dir, dense=dense, rank_score=rank_score,  # type: ignore[arg-type]
                               limit=limit, on_start=bar.start, on_done=lambda _r, _rec: bar.done())
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    print_visdial(metrics)
    if not quiet:
        out.print(f"ranks: {run_dir / 'ranks.json'}   metrics: {run_dir / 'metrics.json'}   "
                  f"trace: vqa trace show {run_dir}")


def print_visdial(m: dict[str, Any]) -> None:
    t = Table(title=f"VisDial ({m['rounds']} rounds ranked, {m['failed']} failed; by {m['rank_score']} score)")
    for col in ("metric", "value", "95% CI"):
        t.add_column(col)
    for key in ("r@1", "r@5", "r@10", "mean", "mrr", "ndcg"):
        if key in m:
            ci = m.get("ci", {}).get(key)
            t.add_row(key, f"{m[key]:.4f}", f"{ci[0]:.4f}–{ci[1]:.4f}" if ci else "n/a")
    out.print(t)


def _read_candidates(path: Path | None, given: list[str] | None) -> list[str]:
    cands = list(given or [])
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--candidates {path}: cannot read it ({exc}); expected a text file, one candidate per line")
        cands += [line.strip() for line in text.splitlines() if line.strip()]
    if len(cands) < 2:
        fail(f"expected at least 2 candidates (--candidates FILE, one per line, or -c repeated), found {len(cands)}")
    return cands


def read_history(path: Path | None) -> list[tuple[str, str]]:
    """``--history FILE``: a JSON list of ``[question, answer]`` pairs or ``{"question", "answer"}`` objects."""
    if path is None:
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(d["question"], d["answer"]) if isinstance(d, dict) else (d[0], d[1]) for d in doc]
        if not all(isinstance(q, str) and isinstance(a, str) for q, a in pairs):
            raise TypeError("not strings")
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        fail(f"--history {path}: expected a JSON list of [question, answer] pairs or {{\"question\", \"answer\"}} "
             f"objects ({type(exc).__name__}: {exc})")
    return pairs


@settings_flags()
def rank_cmd(
    image: Annotated[Path, typer.Argument(help="The photo.")],
    question: Annotated[str, typer.Argument(help="The question.")],
    candidates: Annotated[Optional[Path], Opt("--candidates", help="A text file, one candidate answer per line.")] = None,
    candidate: Annotated[Optional[list[str]], Opt("--candidate", "-c", help="A candidate answer (may repeat).")] = None,
    history: Annotated[Optional[Path], Opt("--history", help="Earlier rounds: a JSON list of [question, answer].")] = None,
    caption: Annotated[str, Opt("--caption", help="The photo's caption (VisDial gives one).")] = "",
    rank_score: RankScoreOpt = "mean", top: Annotated[int, Opt("--top", min=1, help="Show the N best.")] = 10,
    tools: Tools = None, run_dir: RunDir = None, as_json: AsJson = False, *, opts: SettingsFlags,
) -> None:
    """Rank free-form candidate answers to a question about a photo (the tools run and their evidence is used)."""
    if not image.is_file():
        fail(f"image {image} does not exist or is not a file")
    check_rank_score(rank_score)
    cands = _read_candidates(candidates, candidate)
    past = read_history(history)
    settings = opts.settings()
    forced = parse_tools(tools)
    with orchestrator(settings, forced) as vqa:
        rec = vqa.rank(image, question, cands, history=past, caption=caption, rank_score=rank_score,
                       run_dir=run_dir)
    best = rec.top(rank_score, top)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps({"id": rec.id, "ranks": rec.ranks(rank_score), "top": best,  # type: ignore[arg-type]
                          "tools": rec.tools, "flags": rec.flags, "reasoner": rec.reasoner}, indent=2))
        return
    t = Table(title=f"{question}  (tools: {', '.join(rec.tools) or 'none'}; by {rank_score} score)")
    for col in ("rank", "candidate", "score"):
        t.add_column(col)
    for i, c in enumerate(best, 1):
        t.add_row(str(i), c["text"], f"{c['score']:.4g}")
    out.print(t)
    if rec.flags:
        out.print(f"flags: {', '.join(rec.flags)}")
