"""The ``--ray`` flags of ``vqa batch`` and ``vqa eval``: a ``agent.distributed.Cluster`` for the ``Orchestrator``,
whose Ray workers load the reasoner and tools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from agent.core.errors import ConfigError

if TYPE_CHECKING:
    from agent.distributed import Cluster

RAY = "Ray (many processes or machines)"
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray", metavar="ADDRESS", rich_help_panel=RAY,
    help="Answer on Ray workers: local (start a cluster in this process), auto (join the one 'ray start' runs on "
         "this machine) or ray://HOST:PORT. Needs pip install -e '.\\[ray]'.")]
Workers = Annotated[int, typer.Option("--workers", min=1, rich_help_panel=RAY,
                                      help="Ray workers; each loads the reasoner and tools once.")]
GpusPerWorker = Annotated[Optional[float], typer.Option(
    "--gpus-per-worker", min=0, rich_help_panel=RAY,
    help="GPUs Ray reserves for each worker (default: one model per GPU, e.g. T4x2 with --workers 2; 0: none).")]
CpusPerWorker = Annotated[float, typer.Option("--cpus-per-worker", min=0, rich_help_panel=RAY,
                                              help="CPUs Ray reserves for each worker.")]

Oversubscribe = Annotated[bool, typer.Option("--oversubscribe", rich_help_panel=RAY,
                                             help="--ray local: allow more workers than this machine's CPUs (or "
                                             "GPUs, with --gpus-per-worker).")]


def cluster(ray: str | None, workers: int, gpus_per_worker: float | None, cpus_per_worker: float,
            oversubscribe: bool = False) -> Cluster | None:
    """The ``--ray`` flags as a ``Cluster`` (``None`` without ``--ray``; the other flags then must stay unset)."""
    from agent.distributed import Cluster

    if ray is None:
        if (workers, gpus_per_worker, cpus_per_worker, oversubscribe) != (1, None, 1.0, False):
            raise ConfigError("--workers, --gpus-per-worker, --cpus-per-worker and --oversubscribe need --ray ADDRESS "
                              "(e.g. --ray "
                              "local); without --ray, questions are answered in this process")
        return None
    return Cluster(address=ray, workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                   oversubscribe=oversubscribe)
