"""The ``--ray`` flags of ``vqa batch`` and ``vqa eval``, and the services a command answers with: loaded in this
process, or the driver's side of a Ray run (``agent.distributed``), whose workers load the reasoner and tools."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from agent.cli.common import open_services
from agent.config import Settings
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.distributed import Cluster
    from agent.services import Services

RAY = "Ray (many processes or machines)"
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray", metavar="ADDRESS", rich_help_panel=RAY,
    help="Answer on Ray workers: local (start a cluster in this process), auto (join the one 'ray start' runs on "
         "this machine) or ray://HOST:PORT. Needs pip install -e '.\\[ray]'.")]
Workers = Annotated[int, typer.Option("--workers", min=1, rich_help_panel=RAY,
                                      help="Ray workers; each loads the reasoner and tools once.")]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", min=0, rich_help_panel=RAY,
                                              help="GPUs Ray reserves for each worker (1: one model per GPU).")]
CpusPerWorker = Annotated[float, typer.Option("--cpus-per-worker", min=0, rich_help_panel=RAY,
                                              help="CPUs Ray reserves for each worker.")]


def cluster(ray: str | None, workers: int, gpus_per_worker: float, cpus_per_worker: float) -> Cluster | None:
    """The ``--ray`` flags as a ``Cluster`` (``None`` without ``--ray``; the other flags then must stay unset)."""
    from agent.distributed import Cluster

    if ray is None:
        if (workers, gpus_per_worker, cpus_per_worker) != (1, 0.0, 1.0):
            raise ConfigError("--workers, --gpus-per-worker and --cpus-per-worker need --ray ADDRESS (e.g. --ray "
                              "local); without --ray, questions are answered in this process")
        return None
    return Cluster(address=ray, workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker)


@contextmanager
def run_services(settings: Settings, run_dir: Path, images: Path, on: Cluster | None = None) -> Iterator[Services]:
    """Without a cluster: ``open_services`` (everything loaded here). With one: Ray workers started and ready (a bad
    model fails before any question), and driver services that hand questions to them; the reasoner object here
    only names the run and is never loaded."""
    if on is None:
        if settings.base_url and "," in settings.base_url:
            raise ConfigError(f"--base-url {settings.base_url}: a comma list of servers needs --ray (each worker "
                              "takes one in turn); without Ray, give one URL")
        with open_services(settings, run_dir, images_root=images) as services:
            yield services
        return
    from agent.distributed import RayExecutor
    from agent.reasoners import load_reasoner
    from agent.services import Services

    reasoner = load_reasoner(settings.reasoner, **settings.reasoner_kwargs())  # not loaded: the workers do that
    with RayExecutor(on, settings, run_dir, images_root=images) as executor:
        yield Services(reasoner=reasoner, tool_settings=settings.tool_settings(), artifacts_dir=run_dir / "artifacts",
                       images_root=images, executor=executor)
