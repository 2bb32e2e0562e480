"""The orchestrator's VisDial run (``vqa eval FILE --task visdial``): read the files, lock and record the run
directory like ``vqa eval``, rank, and return ``metrics.json``'s content."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agent.core.errors import DataError

if TYPE_CHECKING:
    from agent.api import Orchestrator
    from agent.visdial.data import DialogRound
    from agent.visdial.rank import RankRecord
    from agent.visdial.scorers import RankScore


def eval_visdial(vqa: Orchestrator, file: Path, images: Path, run_dir: Path, *, dense: Path | None = None,
                 rank_score: RankScore = "mean", limit: int | None = None,
                 on_start: Callable[[int], None] | None = None,
                 on_done: Callable[[DialogRound, RankRecord | None], None] | None = None) -> dict[str, Any]:
    """Rank the rounds of a VisDial v1.0 file resumably into ``run_dir`` (ranks.json, metrics.json)."""
    from agent.rundir import locked, record
    from agent.trace.events import TRACE_FILE, TraceWriter
    from agent.trace.export import sinks_from_env
    from agent.visdial.data import read_dense, read_dialogs
    from agent.visdial.rank import run_visdial

    if rank_score not in ("mean", "sum"):
        raise DataError(f"--rank-score must be 'mean' or 'sum', found {rank_score!r}")
    images, run = Path(images), Path(run_dir)
    if not images.is_dir():
        raise DataError(f"images folder {images} does not exist or is not a folder")
    rounds = read_dialogs(Path(file), images)  # a bad file fails before any model loads
    relevance = read_dense(Path(dense)) if dense is not None else None
    rounds = rounds[:limit] if limit is not None else rounds
    made = vqa.provenance(vqa.tools, limit=limit)
    with locked(run, "vqa eval --task visdial"):
        record(run, made["identity"], made["provenance"])
        services = vqa.services(run, images_root=images)
        if on_start:
            on_start(len(rounds))
        return run_visdial(rounds, services, run, dense=relevance, rank_score=rank_score,
                           forced_tools=vqa.tools, on_done=on_done,
                           trace=TraceWriter(run / TRACE_FILE, sinks=sinks_from_env()))
